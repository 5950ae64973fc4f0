//! What a [`Session`](crate::Session) needs of the node it runs on, and
//! nothing more: a [`Replica`]. The engine is the replica every node runs;
//! tests may run sessions over any other.

use automerge::ChangeHash;
use automerge::sync::{Message, State};
use icn_engine::ledger::{EntryRefusal, Ingest, LedgerError};
use icn_engine::{ApplyError, ChangeSignature, Engine, StorageError};
use icn_schemas::ledger::EntryId;
use icn_schemas::{Did, DocId, DocKind};

/// What one peer's replica gives a sync session: its documents and their
/// Automerge sync, its ledgers' entries, what it last knew of each peer,
/// and the blobs (WASM tally modules) documents need.
pub trait Replica: Send + 'static {
    /// Every document held.
    fn doc_ids(&self) -> Vec<DocId>;
    /// A held document's kind.
    fn kind(&self, doc: &DocId) -> Option<DocKind>;
    /// Whether `peer` may receive `doc`.
    fn may_receive(&self, doc: &DocId, peer: &Did) -> bool;
    /// Whether `doc` holds change `hash`.
    fn has_change(&self, doc: &DocId, hash: &ChangeHash) -> bool;
    /// The next sync message for a peer described by `state`, asking too
    /// for `need`, with the signature of every change it carries.
    fn generate_sync(
        &self,
        doc: &DocId,
        state: &mut State,
        need: &[ChangeHash],
    ) -> Result<Option<(Message, Vec<ChangeSignature>)>, StorageError>;
    /// Takes a peer's sync message: validates and merges what it carries,
    /// taking a document not held only if it names `me` as a reader.
    /// Returns how many changes were new, and the dependencies that did not
    /// come.
    fn receive_sync(
        &self,
        doc: &DocId,
        state: &mut State,
        message: Message,
        signatures: &[ChangeSignature],
        me: &Did,
    ) -> Result<(u64, Vec<ChangeHash>), ApplyError>;
    /// A co-op's ledger heads.
    fn ledger_heads(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError>;
    /// Every entry id of a co-op's ledger, parents first.
    fn entry_ids(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError>;
    /// One entry's canonical encoding.
    fn entry_bytes(&self, coop: &DocId, id: &EntryId) -> Result<Option<Vec<u8>>, LedgerError>;
    /// Whether entry `id` is held, stored or waiting.
    fn has_entry(&self, coop: &DocId, id: &EntryId) -> Result<bool, LedgerError>;
    /// The parents waiting entries name and the replica does not hold.
    fn missing_parents(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError>;
    /// Validates and stores a peer's entries.
    fn ingest_entries(
        &self,
        coop: &DocId,
        entries: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Ingest, EntryRefusal>>, LedgerError>;
    /// What the replica last knew `peer` to hold of `doc`.
    fn peer_sync_state(&self, peer: &Did, doc: &DocId) -> Result<Option<Vec<u8>>, StorageError>;
    /// Records what `peer` holds of `doc`.
    fn put_peer_sync_state(
        &self,
        peer: &Did,
        doc: &DocId,
        state: &[u8],
    ) -> Result<(), StorageError>;
    /// A blob by its blake3 hash.
    fn blob(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores a WASM tally module a peer sent.
    fn put_module(&self, bytes: &[u8]) -> Result<[u8; 32], StorageError>;
}

impl Replica for Engine {
    fn doc_ids(&self) -> Vec<DocId> {
        Engine::doc_ids(self)
    }

    fn kind(&self, doc: &DocId) -> Option<DocKind> {
        Engine::kind(self, doc)
    }

    fn may_receive(&self, doc: &DocId, peer: &Did) -> bool {
        Engine::may_receive(self, doc, peer)
    }

    fn has_change(&self, doc: &DocId, hash: &ChangeHash) -> bool {
        self.read(doc, |r| r.doc().get_change_meta_by_hash(hash).is_some())
            .unwrap_or(false)
    }

    fn generate_sync(
        &self,
        doc: &DocId,
        state: &mut State,
        need: &[ChangeHash],
    ) -> Result<Option<(Message, Vec<ChangeSignature>)>, StorageError> {
        Engine::generate_sync(self, doc, state, need)
    }

    fn receive_sync(
        &self,
        doc: &DocId,
        state: &mut State,
        message: Message,
        signatures: &[ChangeSignature],
        me: &Did,
    ) -> Result<(u64, Vec<ChangeHash>), ApplyError> {
        let (applied, missing) =
            Engine::receive_sync(self, doc, state, message, signatures, |r| {
                self.may_read(doc, r, me)
            })?;
        Ok((applied.new.len() as u64, missing))
    }

    fn ledger_heads(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        Engine::ledger_heads(self, coop)
    }

    fn entry_ids(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        Engine::entry_ids(self, coop)
    }

    fn entry_bytes(&self, coop: &DocId, id: &EntryId) -> Result<Option<Vec<u8>>, LedgerError> {
        Engine::entry_bytes(self, coop, id)
    }

    fn has_entry(&self, coop: &DocId, id: &EntryId) -> Result<bool, LedgerError> {
        Engine::has_entry(self, coop, id)
    }

    fn missing_parents(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        Engine::missing_parents(self, coop)
    }

    fn ingest_entries(
        &self,
        coop: &DocId,
        entries: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Ingest, EntryRefusal>>, LedgerError> {
        Engine::ingest_entries(self, coop, entries)
    }

    fn peer_sync_state(&self, peer: &Did, doc: &DocId) -> Result<Option<Vec<u8>>, StorageError> {
        self.store().peer_sync_state(peer.as_bytes(), doc)
    }

    fn put_peer_sync_state(
        &self,
        peer: &Did,
        doc: &DocId,
        state: &[u8],
    ) -> Result<(), StorageError> {
        self.store()
            .put_peer_sync_state(peer.as_bytes(), doc, state)
    }

    fn blob(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        self.store().blob(hash)
    }

    fn put_module(&self, bytes: &[u8]) -> Result<[u8; 32], StorageError> {
        Engine::put_module(self, bytes)
    }
}
