//! Typed views of ICN documents and the values inside them.
//!
//! ICN keeps a co-op's state in Automerge documents. This crate is the only
//! place that knows the paths inside them: it reads a document into typed
//! views ([`coop::Coop`], [`domain::Domain`], [`domain::Proposal`], …), writes
//! typed operations into a transaction, and classifies every path a change
//! writes into a field with a [`document::Shape`], which validation uses to
//! decide who may write it.
//!
//! ```
//! use automerge::{Automerge, ActorId};
//! use icn_schemas::{coop, Did, Reader};
//!
//! # let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
//! let creator = Did::from_key(key.verifying_key()).unwrap();
//! let mut doc = Automerge::new().with_actor(ActorId::from(creator.as_bytes().as_slice()));
//! doc.transact(|tx| {
//!     coop::create(tx, &coop::NewCoop {
//!         id: "food-coop".into(),
//!         name: "Downtown Food Cooperative".into(),
//!         description: String::new(),
//!         creator,
//!         device: creator,
//!         created_at: 1_700_000_000,
//!         default_credit_limit: 100,
//!         units: vec![("hours".into(), 0)],
//!     })
//! })
//! .unwrap();
//! let view = coop::Coop::read(Reader::now(&doc)).unwrap();
//! assert_eq!(view.members[&creator].role, coop::Role::Admin);
//! ```
//!
//! # Concepts
//!
//! - A [`DocId`] is the hash of a document's genesis change.
//! - A [`Did`] is `did:icn:<base58btc(ed25519 public key)>`.
//! - A [`delegation::Delegation`] is the statement a member signs to let a
//!   node write on its behalf.
//! - A [`Reader`] reads a document now or as it stood at given heads, which is
//!   how a change is judged by the state of its causal past.

#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod coop;
pub mod delegation;
mod did;
pub mod document;
pub mod domain;
mod governance;
pub mod ledger;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod settings;
pub mod tally;

pub use delegation::{Delegation, DelegationError, Scope, SignedDelegation};
pub use did::{DID_PREFIX, Did, DidError};
pub use document::{DocId, DocKind, ReadCache, Reader, SchemaError, Shape};
