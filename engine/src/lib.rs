//! The ICN engine: identity, keystore, storage, and signed Automerge
//! documents validated before they merge.
//!
//! ```
//! use icn_engine::{Engine, Keypair, Signer, Store};
//! use icn_schemas::coop;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(Store::open(dir.path())?)?;
//! let alice = Keypair::generate()?;
//! let signer = Signer::Device(alice.clone());
//! let id = engine.create_coop(&signer, &coop::NewCoop {
//!     id: "food-coop".into(),
//!     name: "Downtown Food Cooperative".into(),
//!     description: String::new(),
//!     creator: alice.did(),
//!     device: alice.did(),
//!     created_at: 1_700_000_000,
//!     default_credit_limit: 100,
//!     units: vec![("hours".into(), 0)],
//! })?;
//! let bob = Keypair::generate()?;
//! engine.write(&id, &signer, |tx| coop::add_member(tx, &bob.did(), coop::Role::Member, 1_700_000_100))?;
//!
//! // Bob is a member, not an admin: his attempt to promote himself is refused
//! // before anything is stored, exactly as every peer would refuse it.
//! let refused = engine.write(&id, &Signer::Device(bob.clone()), |tx| {
//!     coop::set_role(tx, &bob.did(), coop::Role::Admin)
//! });
//! assert!(refused.is_err());
//! # Ok(()) }
//! ```
//!
//! # How a change flows
//!
//! A local write ([`Engine::write`]) runs a typed operation from
//! [`icn_schemas`] on a fork of the document, signs the resulting change with
//! the device key, and hands it to the same function that handles a batch
//! from a peer ([`Engine::apply_remote`]): the batch is checked on a fork
//! (signature, dependencies, authority at the change's causal past, schema),
//! written durably to the [`Store`], and only then swapped in.

#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod access;
mod authority;
pub mod backup;
pub mod change;
mod devices;
mod docsync;
mod engine;
mod gov_seals;
mod governance;
pub mod identity;
pub mod keystore;
pub mod ledger;
mod ledgers;
pub mod policy;
pub mod storage;
mod validate;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use authority::Denied;
pub use change::{ChangeSignature, SignedChange, decode_batch, encode_batch};
pub use devices::{RevokeError, Revoked, Rotated};
pub use engine::{Applied, ApplyError, Committed, Engine, ListenerId, OpenError, WriteError};
pub use governance::{EXECUTION_GRACE_SECONDS, RegistryEntry, Trace};
pub use identity::{Keypair, Signer};
pub use keystore::{Keystore, KeystoreError, Passphrase};
pub use storage::{StorageError, Store};
pub use validate::{Refused, Rule};
