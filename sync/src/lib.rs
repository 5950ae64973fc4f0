//! ICN sync: how replicas meet.
//!
//! - [`wire`]: the frames and their limits; the ALPN is [`wire::ALPN`].
//! - [`session`]: one session with one peer, free of IO: catch-up of
//!   documents (the Automerge sync protocol, with signatures) and ledgers
//!   (heads, bloom filter, wants), live push, faults.
//! - [`node`]: the iroh driver: an endpoint whose secret key is the node's
//!   identity key (so a peer's endpoint id is its DID), sessions over QUIC,
//!   dialing with backoff.

pub mod bloom;
pub mod node;
mod replica;
pub mod session;
pub mod wire;

pub use node::{NodeConfig, SyncNode};
pub use replica::Replica;
pub use session::{Session, SessionError, Stats};
pub use wire::{ALPN, Frame};
