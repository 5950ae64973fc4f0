//! The on-disk layout: every sled tree and key format in one place.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `schema_version` | u32, big-endian |
//! | `doc_meta` | doc id (32) | [`DocMeta`], postcard |
//! | `doc_changes` | doc id (32) ‖ seq (u64 BE) | [`crate::SignedChange`], postcard |
//! | `doc_change_index` | doc id (32) ‖ change hash (32) | seq (u64 BE) |
//! | `doc_snapshots` | doc id (32) ‖ chunk (u32 BE) | ≤ 64 KiB of `Automerge::save()` |
//! | `ledger_meta` | co-op id (32) | next ledger seq (u64 BE) |
//! | `ledger_entries` | co-op id (32) ‖ seq (u64 BE) | canonical encoding of a signed entry |
//! | `ledger_index` | co-op id (32) ‖ entry id (32) | seq (u64 BE) |
//!
//! `seq` numbers a document's changes, or a co-op's ledger entries, in the
//! order this node stored them, which is always a causal order: a change or
//! entry is stored only once all its dependencies (parents) are.

use icn_schemas::DocId;

/// Version of this layout. Bump it, and write a migration, when any row above
/// changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

pub(crate) const META: &str = "meta";
pub(crate) const DOC_META: &str = "doc_meta";
pub(crate) const DOC_CHANGES: &str = "doc_changes";
pub(crate) const DOC_CHANGE_INDEX: &str = "doc_change_index";
pub(crate) const DOC_SNAPSHOTS: &str = "doc_snapshots";
pub(crate) const LEDGER_META: &str = "ledger_meta";
pub(crate) const LEDGER_ENTRIES: &str = "ledger_entries";
pub(crate) const LEDGER_INDEX: &str = "ledger_index";

pub(crate) const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

/// sled 0.34 writes values larger than a quarter segment (128 KiB) to
/// separate blob files; snapshots are cut in chunks well below that, so the
/// common write path touches only sled's main file.
pub(crate) const SNAPSHOT_CHUNK: usize = 64 * 1024;

/// Per-document bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DocMeta {
    /// Seq the next stored change gets.
    pub(crate) next_seq: u64,
    /// Changes with seq below this are in the snapshot.
    pub(crate) snapshot_seq: u64,
    /// Number of snapshot chunks.
    pub(crate) snapshot_chunks: u32,
}

pub(crate) fn id_seq_key(doc: &DocId, seq: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&doc.0);
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn id_hash_key(doc: &DocId, hash: &[u8; 32]) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&doc.0);
    key[32..].copy_from_slice(hash);
    key
}

pub(crate) fn snapshot_key(doc: &DocId, chunk: u32) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..32].copy_from_slice(&doc.0);
    key[32..].copy_from_slice(&chunk.to_be_bytes());
    key
}
