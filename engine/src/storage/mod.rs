//! Durable storage in sled, under `<data-dir>/store`.
//!
//! [`layout`] owns every tree and key format. Every write acknowledged to a
//! caller is durable first: sled 0.34's `flush()` only issues
//! `sync_file_range`, which survives a killed process but not a power cut, so
//! each acknowledgement also waits for an `fdatasync` of sled's files. Group
//! commit ([`commit`]) shares one flush and one fdatasync among every writer
//! that queued behind the previous one.

mod commit;
mod gateway;
pub use gateway::StoredEvent;
pub mod layout;

use std::fs::File;
use std::path::{Path, PathBuf};

use icn_schemas::DocId;
use sled::Transactional;

use crate::change::SignedChange;
use commit::{Combiner, GroupCommit};
use layout::DocMeta;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("storage I/O at {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A stored value does not decode.
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The disk refused a write (full, read-only, failing): sled stops for
    /// good after an I/O error, so the store takes no more writes until the
    /// node opens it again (`icnd` does so once the disk takes writes).
    #[error(
        "this node's disk refuses writes ({reason}): it takes no writes until the disk takes them again and the node reopens its store"
    )]
    Unwritable {
        /// The disk's error.
        reason: String,
    },
    /// The store was written by a version of ICN with another layout.
    #[error("the store has layout version {found}, this build reads version {expected}")]
    UnsupportedVersion {
        /// On disk.
        found: u32,
        /// Supported.
        expected: u32,
    },
}

impl StorageError {
    /// Whether the disk refused: a write or sync that failed with an I/O
    /// error, or the store refusing writes since one did.
    pub fn is_disk(&self) -> bool {
        matches!(
            self,
            StorageError::Unwritable { .. }
                | StorageError::Io { .. }
                | StorageError::Sled(sled::Error::Io(_))
        )
    }
}

/// A copy for each of several callers one failure reached (the writers of
/// one group): an I/O error keeps its kind and message, as sled copies its
/// own.
impl Clone for StorageError {
    fn clone(&self) -> Self {
        match self {
            StorageError::Sled(e) => StorageError::Sled(e.clone()),
            StorageError::Io { path, source } => StorageError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StorageError::Corrupt { tree, reason } => StorageError::Corrupt {
                tree,
                reason: reason.clone(),
            },
            StorageError::Unwritable { reason } => StorageError::Unwritable {
                reason: reason.clone(),
            },
            StorageError::UnsupportedVersion { found, expected } => {
                StorageError::UnsupportedVersion {
                    found: *found,
                    expected: *expected,
                }
            }
        }
    }
}

impl From<sled::transaction::TransactionError<StorageError>> for StorageError {
    fn from(e: sled::transaction::TransactionError<StorageError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StorageError::Sled(e),
        }
    }
}

/// A document as stored: the latest snapshot, then the changes after it in
/// the order they were stored (a causal order).
#[derive(Debug, Default)]
pub struct StoredDoc {
    /// `Automerge::save()` bytes, if a snapshot was taken.
    pub snapshot: Option<Vec<u8>>,
    /// Changes stored after the snapshot.
    pub changes: Vec<SignedChange>,
    /// Number of changes stored after the snapshot.
    pub changes_since_snapshot: u64,
}

/// The store: a sled database and the group commit that makes writes durable.
///
/// Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: PathBuf,
    /// sled's main file, kept open for fdatasync.
    db_file: File,
    meta: sled::Tree,
    doc_meta: sled::Tree,
    doc_changes: sled::Tree,
    doc_snapshots: sled::Tree,
    ledger: sled::Tree,
    blobs: sled::Tree,
    peer_sync: sled::Tree,
    /// The gateway's records, read and written only by `gateway.rs`.
    gateway: sled::Tree,
    /// Opened from a version 1 store whose ledger trees are not migrated yet.
    v1_ledger: bool,
    commit: std::sync::Arc<GroupCommit>,
    /// Whether the sync thread ([`Store::make_durable_then`]) was started.
    sync_thread: std::sync::OnceLock<bool>,
    /// Ledger groups of co-ops committing at once, applied as one batch.
    ledger_batches: Combiner<LedgerRows, sled::Error>,
    /// Set by the first sync the disk refused: sled takes nothing more.
    failed: std::sync::OnceLock<String>,
    /// Told how long each sync took (`icnd`'s commit latency histogram).
    sync_observer: std::sync::OnceLock<Box<dyn Fn(std::time::Duration) + Send + Sync>>,
}

/// One co-op's ledger rows to write as a group: key and value, `None`
/// deleting.
pub(crate) type LedgerRows = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One sled batch of the groups' rows.
pub(crate) fn batch_of(groups: impl IntoIterator<Item = LedgerRows>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (k, v) in groups.into_iter().flatten() {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    batch
}

/// A gateway record as stored: its key and value (a backup copies them as
/// they are).
pub(crate) type Record = (Vec<u8>, Vec<u8>);

/// sled's page cache. Its default (1 GiB) is more than a member's phone can
/// spare; what the engine reads often (recent entries, balances) fits well
/// within this.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(tree: &'static str, reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        tree,
        reason: reason.to_string(),
    }
}

/// Opens sled in `dir`. sled releases its file lock only once its
/// background threads let go of the database, a moment after it is dropped,
/// so a store reopened at once (a restart, a test) waits for it, up to two
/// seconds.
fn open_sled(dir: &Path) -> Result<sled::Db, StorageError> {
    remove_unfinished_snapshots(dir)?;
    let mut attempts = 0;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                attempts += 1;
                if attempts >= 40 {
                    return Err(sled::Error::Io(e).into());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

/// Removes sled's unfinished snapshots (`snap.<lsn>.generating`). sled
/// writes a snapshot there, syncs it and renames it, and removes any other
/// snapshot file only after that; one cut short (a full disk, a `kill -9`)
/// stays behind, and sled 0.34 then reads it as the newest snapshot, finds
/// it corrupt, and refuses to open the store ("Read corrupted data"). Found
/// by the fault-injected cluster (`docs/reliability.md`): a node restarted on
/// a full disk never started again.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), StorageError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // a new store
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            tracing::warn!(file = %path.display(), "removing an unfinished sled snapshot");
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed = true;
        }
    }
    if removed {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// The layout version this code writes ([`Store::schema_version`] of a
/// store it opened).
pub fn layout_version() -> u32 {
    layout::SCHEMA_VERSION
}

impl Store {
    /// Opens (or creates) the store in `<data_dir>/store`.
    pub fn open(data_dir: &Path) -> Result<Store, StorageError> {
        let dir = data_dir.join("store");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let db = open_sled(&dir)?;
        let db_path = dir.join("db");
        let db_file = File::open(&db_path).map_err(io(&db_path))?;
        let meta = db.open_tree(layout::META)?;
        let mut v1_ledger = false;
        match meta.get(layout::SCHEMA_VERSION_KEY)? {
            None => {
                meta.insert(
                    layout::SCHEMA_VERSION_KEY,
                    &layout::SCHEMA_VERSION.to_be_bytes(),
                )?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt(layout::META, "schema version is not 4 bytes"))?;
                if found == 0 || found > layout::SCHEMA_VERSION {
                    return Err(StorageError::UnsupportedVersion {
                        found,
                        expected: layout::SCHEMA_VERSION,
                    });
                }
                if found < 4 {
                    migrate_doc_changes(&db)?;
                }
                if found < 5 {
                    move_event_log(&db)?;
                }
                // Version 1 differs otherwise only in its ledger trees, which
                // the engine folds into the new layout when it opens (and
                // then sets the version).
                if found == 1 {
                    v1_ledger = true;
                } else if found < layout::SCHEMA_VERSION {
                    if found == 2 {
                        // Layout 3 only adds rows: the author index, and
                        // seals (none of which a layout 2 store holds).
                        crate::ledger::fold::index_authors(&db.open_tree(layout::LEDGER)?)?;
                        db.flush()?;
                    }
                    meta.insert(
                        layout::SCHEMA_VERSION_KEY,
                        &layout::SCHEMA_VERSION.to_be_bytes(),
                    )?;
                }
            }
        }
        let store = Store {
            inner: std::sync::Arc::new(Inner {
                doc_meta: db.open_tree(layout::DOC_META)?,
                doc_changes: db.open_tree(layout::DOC_CHANGES)?,
                doc_snapshots: db.open_tree(layout::DOC_SNAPSHOTS)?,
                ledger: db.open_tree(layout::LEDGER)?,
                blobs: db.open_tree(layout::BLOBS)?,
                peer_sync: db.open_tree(layout::PEER_SYNC)?,
                gateway: db.open_tree(layout::GATEWAY)?,
                v1_ledger,
                meta,
                db,
                dir,
                db_file,
                commit: std::sync::Arc::default(),
                sync_thread: std::sync::OnceLock::new(),
                ledger_batches: Combiner::default(),
                failed: std::sync::OnceLock::new(),
                sync_observer: std::sync::OnceLock::new(),
            }),
        };
        store.make_durable()?;
        Ok(store)
    }

    /// The directory sled lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Returns once every write applied before the call is on stable storage.
    /// Once the disk has refused a sync, refuses at once
    /// ([`StorageError::Unwritable`]).
    pub fn make_durable(&self) -> Result<(), StorageError> {
        self.inner.refusal()?;
        self.inner.commit.wait_durable(|| self.inner.group_sync())
    }

    /// Calls `then` once every write applied before the call is on stable
    /// storage, or with why it is not; [`Store::make_durable`] without
    /// holding this thread through a sync another thread runs: when one
    /// is running, the write waits for the next, which the store's sync
    /// thread starts (or a writer, if one comes first), and `then` runs on
    /// the thread that ends it. With no sync running, this thread syncs and
    /// calls `then` before returning.
    pub fn make_durable_then(&self, then: impl FnOnce(Result<(), StorageError>) + Send + 'static) {
        if let Err(e) = self.inner.refusal() {
            return then(Err(e));
        }
        if !self.sync_thread() {
            return then(self.make_durable());
        }
        let inner = std::sync::Arc::downgrade(&self.inner);
        self.inner.commit.durable_then(
            || self.inner.group_sync(),
            Box::new(move |synced| {
                then(synced.map_err(|reason| {
                    // A refusing disk was recorded by the sync that failed.
                    match inner.upgrade().and_then(|i| i.failed.get().cloned()) {
                        Some(reason) => StorageError::Unwritable { reason },
                        None => StorageError::Io {
                            path: PathBuf::from("store"),
                            source: std::io::Error::other(reason),
                        },
                    }
                }))
            }),
        );
    }

    /// Starts the store's sync thread ([`commit::GroupCommit::serve`]) once;
    /// whether it runs. It holds the store only while it syncs, and ends
    /// when the store goes.
    fn sync_thread(&self) -> bool {
        *self.inner.sync_thread.get_or_init(|| {
            let commit = self.inner.commit.clone();
            let inner = std::sync::Arc::downgrade(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("icn-sync".into())
                .spawn(move || {
                    commit.serve(|| match inner.upgrade() {
                        Some(inner) => inner.group_sync(),
                        None => Err(StorageError::Unwritable {
                            reason: "the store was closed".into(),
                        }),
                    })
                });
            if let Err(e) = &spawned {
                tracing::warn!(error = %e, "cannot start the sync thread; writers wait for their syncs");
            }
            spawned.is_ok()
        })
    }

    /// Tells `observe` how long each sync (flush and fdatasync, shared by a
    /// group of writers) takes from now on. Only the first observer set is
    /// kept.
    pub fn observe_syncs(&self, observe: impl Fn(std::time::Duration) + Send + Sync + 'static) {
        let _ = self.inner.sync_observer.set(Box::new(observe));
    }

    /// Bytes of sled's files on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Why the store takes no more writes, if the disk refused one.
    pub fn failure(&self) -> Option<String> {
        self.inner.failed.get().cloned()
    }

    /// [`Store::failure`], after asking sled: a write that failed anywhere
    /// (not only in a sync) stops sled for good, and its flush then says so.
    /// Cheap when every write is already durable, as ours are.
    pub fn check_writable(&self) -> Option<String> {
        if let Some(reason) = self.failure() {
            return Some(reason);
        }
        match self.inner.db.flush() {
            Err(sled::Error::Io(e)) => {
                let reason = self.inner.failed.get_or_init(|| e.to_string()).clone();
                tracing::error!(%reason, "the disk refused a write: this store takes no more writes until it is opened again");
                Some(reason)
            }
            _ => None,
        }
    }

    /// Every stored document.
    pub fn doc_ids(&self) -> Result<Vec<DocId>, StorageError> {
        self.inner
            .doc_meta
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                <[u8; 32]>::try_from(k.as_ref())
                    .map(DocId)
                    .map_err(|_| corrupt(layout::DOC_META, "document key is not 32 bytes"))
            })
            .collect()
    }

    fn doc_meta(&self, doc: &DocId) -> Result<Option<DocMeta>, StorageError> {
        self.inner
            .doc_meta
            .get(doc.0)?
            .map(|v| postcard::from_bytes(&v).map_err(|e| corrupt(layout::DOC_META, e)))
            .transpose()
    }

    /// Loads a document's snapshot and the changes stored after it.
    pub fn load_doc(&self, doc: &DocId) -> Result<Option<StoredDoc>, StorageError> {
        let Some(meta) = self.doc_meta(doc)? else {
            return Ok(None);
        };
        let snapshot = if meta.snapshot_chunks == 0 {
            None
        } else {
            let mut bytes = Vec::new();
            for chunk in 0..meta.snapshot_chunks {
                let part = self
                    .inner
                    .doc_snapshots
                    .get(layout::snapshot_key(doc, chunk))?
                    .ok_or_else(|| corrupt(layout::DOC_SNAPSHOTS, "missing snapshot chunk"))?;
                bytes.extend_from_slice(&part);
            }
            Some(bytes)
        };
        let from = layout::id_seq_key(doc, meta.snapshot_seq);
        let to = layout::id_seq_key(doc, meta.next_seq);
        let mut changes = Vec::new();
        for row in self.inner.doc_changes.range(from..to).values() {
            changes.extend(decode_change_row(&row?)?.into_iter().map(|(_, sc)| sc));
        }
        Ok(Some(StoredDoc {
            snapshot,
            changes_since_snapshot: meta.next_seq - meta.snapshot_seq,
            changes,
        }))
    }

    /// The stored envelopes of the changes `hashes` names, in that order;
    /// each hash is named once, and a change the document holds but whose
    /// envelope is not stored is a corrupt store.
    ///
    /// Reads the document's rows from the newest back and stops once every
    /// change is found: what a peer lacks is almost always recent.
    pub fn signed_changes(
        &self,
        doc: &DocId,
        hashes: &[[u8; 32]],
    ) -> Result<Vec<SignedChange>, StorageError> {
        let mut found: std::collections::HashMap<[u8; 32], Option<SignedChange>> =
            hashes.iter().map(|h| (*h, None)).collect();
        let mut left = found.len();
        let rows = self.inner.doc_changes.scan_prefix(doc.0).values().rev();
        for row in rows {
            if left == 0 {
                break;
            }
            for (hash, sc) in decode_change_row(&row?)? {
                if let Some(slot @ None) = found.get_mut(&hash) {
                    *slot = Some(sc);
                    left -= 1;
                }
            }
        }
        hashes
            .iter()
            .map(|h| {
                found.remove(h).flatten().ok_or_else(|| {
                    corrupt(
                        layout::DOC_CHANGES,
                        format!(
                            "no signature stored for change {}",
                            automerge::ChangeHash(*h)
                        ),
                    )
                })
            })
            .collect()
    }

    /// Appends signed changes (in causal order, with their hashes) to a
    /// document, atomically, and returns once they are durable.
    pub fn append_changes(
        &self,
        doc: &DocId,
        changes: &[([u8; 32], &SignedChange)],
    ) -> Result<(), StorageError> {
        self.stage_changes(doc, changes)?;
        self.make_durable()
    }

    /// Like [`Store::append_changes`], but returns once the changes are in
    /// sled, before they are durable: the caller releases its locks, then
    /// calls [`Store::make_durable`] before acknowledging, so that concurrent
    /// writers share one sync. sled's log is ordered, so a sync covers every
    /// write staged before it.
    pub fn stage_changes(
        &self,
        doc: &DocId,
        changes: &[([u8; 32], &SignedChange)],
    ) -> Result<(), StorageError> {
        // Cut the changes into rows of at most about `CHANGE_ROW_BYTES`
        // (a single larger change has a row of its own), each keyed by the
        // seq of its first change.
        let mut rows: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut row = Vec::new();
        let mut start = 0;
        for (i, change) in changes.iter().enumerate() {
            let item = postcard::to_stdvec(change).map_err(|e| corrupt(layout::DOC_CHANGES, e))?;
            if !row.is_empty() && row.len() + item.len() > layout::CHANGE_ROW_BYTES {
                rows.push((start, change_row(i - start, &row)?));
                row.clear();
                start = i;
            }
            row.extend_from_slice(&item);
        }
        if !row.is_empty() {
            rows.push((start, change_row(changes.len() - start, &row)?));
        }
        let inner = &self.inner;
        (&inner.doc_meta, &inner.doc_changes).transaction(|(meta_t, changes_t)| {
            let mut meta = meta_in(meta_t, doc)?;
            for (first, row) in &rows {
                let seq = meta.next_seq + *first as u64;
                changes_t.insert(&layout::id_seq_key(doc, seq)[..], row.as_slice())?;
            }
            meta.next_seq += changes.len() as u64;
            meta_t.insert(&doc.0, postcard::to_stdvec(&meta).map_err(abort_meta)?)?;
            Ok(())
        })?;
        Ok(())
    }

    /// Replaces a document's snapshot with `bytes`, which must include every
    /// change stored so far; returns once durable. Changes stay stored (their
    /// signatures are forwarded to peers), but loading skips them.
    pub fn write_snapshot(&self, doc: &DocId, bytes: &[u8]) -> Result<(), StorageError> {
        let inner = &self.inner;
        let chunks: Vec<&[u8]> = bytes.chunks(layout::SNAPSHOT_CHUNK).collect();
        let chunk_count = u32::try_from(chunks.len())
            .map_err(|_| corrupt(layout::DOC_SNAPSHOTS, "snapshot too large"))?;
        (&inner.doc_meta, &inner.doc_snapshots).transaction(|(meta_t, snap_t)| {
            let mut meta = meta_in(meta_t, doc)?;
            for chunk in chunk_count..meta.snapshot_chunks {
                snap_t.remove(&layout::snapshot_key(doc, chunk)[..])?;
            }
            for (i, chunk) in chunks.iter().enumerate() {
                snap_t.insert(&layout::snapshot_key(doc, i as u32)[..], *chunk)?;
            }
            meta.snapshot_chunks = chunk_count;
            meta.snapshot_seq = meta.next_seq;
            meta_t.insert(&doc.0, postcard::to_stdvec(&meta).map_err(abort_meta)?)?;
            Ok(())
        })?;
        self.make_durable()
    }

    /// Stores `bytes` under their blake3 hash, durably; returns the hash.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<[u8; 32], StorageError> {
        let hash = *blake3::hash(bytes).as_bytes();
        if !self.inner.blobs.contains_key(hash)? {
            self.inner.blobs.insert(hash, bytes)?;
            self.make_durable()?;
        }
        Ok(hash)
    }

    /// The hashes of every stored blob.
    pub fn blob_hashes(&self) -> Result<Vec<[u8; 32]>, StorageError> {
        self.inner
            .blobs
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                <[u8; 32]>::try_from(k.as_ref())
                    .map_err(|_| corrupt(layout::BLOBS, "a blob key is not 32 bytes"))
            })
            .collect()
    }

    /// The bytes stored under `hash`.
    pub fn blob(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.inner.blobs.get(hash)?.map(|v| v.to_vec()))
    }

    /// What this node last knew `peer` to hold of `doc`: an encoded
    /// Automerge sync state, so a new session does not start from nothing.
    pub fn peer_sync_state(
        &self,
        peer: &[u8; 32],
        doc: &DocId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .inner
            .peer_sync
            .get(peer_doc_key(peer, doc))?
            .map(|v| v.to_vec()))
    }

    /// Records what `peer` holds of `doc`. Not made durable on its own:
    /// losing it costs a longer sync, never data.
    pub fn put_peer_sync_state(
        &self,
        peer: &[u8; 32],
        doc: &DocId,
        state: &[u8],
    ) -> Result<(), StorageError> {
        self.inner
            .peer_sync
            .insert(peer_doc_key(peer, doc), state)?;
        Ok(())
    }

    /// The tree holding every co-op's ledger ([`layout`]); the ledger's fold
    /// reads it and writes it through [`Store::commit_ledger`].
    pub(crate) fn ledger_tree(&self) -> &sled::Tree {
        &self.inner.ledger
    }

    /// Applies a group of one co-op's ledger rows atomically: all of them
    /// or, after a crash, none. Groups of several co-ops committed at once
    /// go to sled as one batch ([`commit::Combiner`]): each sled batch costs
    /// two writes to sled's log. Like [`Store::stage_changes`], returns
    /// before they are durable; [`Store::make_durable`] makes them so.
    pub(crate) fn commit_ledger(&self, rows: LedgerRows) -> Result<(), StorageError> {
        let ledger = &self.inner.ledger;
        self.inner
            .ledger_batches
            .apply(
                rows,
                |groups| ledger.apply_batch(batch_of(groups)),
                || {
                    sled::Error::ReportableBug(
                        "a ledger group was lost by a writer that failed while applying it".into(),
                    )
                },
            )
            .map_err(StorageError::Sled)
    }

    /// A version 1 store's ledger entries of one co-op, in the order they
    /// were stored (causal); empty once migrated, or for a newer store.
    pub(crate) fn v1_entries(&self, coop: &DocId) -> Result<Vec<Vec<u8>>, StorageError> {
        if !self.inner.v1_ledger {
            return Ok(Vec::new());
        }
        self.inner
            .db
            .open_tree(layout::V1_LEDGER_ENTRIES)?
            .scan_prefix(coop.0)
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    /// Ends the migration from version 1, once every co-op's entries are in
    /// the `ledger` tree: drops the old trees and records the new version,
    /// durably. A crash before this leaves version 1, and the migration runs
    /// again (folding an entry twice is a no-op).
    pub(crate) fn finish_v1_migration(&self) -> Result<(), StorageError> {
        if !self.inner.v1_ledger {
            return Ok(());
        }
        self.make_durable()?;
        for tree in layout::V1_LEDGER_TREES {
            self.inner.db.drop_tree(tree)?;
        }
        self.inner.meta.insert(
            layout::SCHEMA_VERSION_KEY,
            &layout::SCHEMA_VERSION.to_be_bytes(),
        )?;
        self.make_durable()
    }

    /// The layout version on disk.
    pub fn schema_version(&self) -> Result<u32, StorageError> {
        let v = self
            .inner
            .meta
            .get(layout::SCHEMA_VERSION_KEY)?
            .ok_or_else(|| corrupt(layout::META, "no schema version"))?;
        <[u8; 4]>::try_from(v.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| corrupt(layout::META, "schema version is not 4 bytes"))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the sync thread, if one was started.
        self.commit.stop();
    }
}

impl Inner {
    /// Flushes sled's buffers, then fdatasyncs its files.
    /// Why the store takes no writes, once the disk refused one.
    fn refusal(&self) -> Result<(), StorageError> {
        match self.failed.get() {
            Some(reason) => Err(StorageError::Unwritable {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A group's sync ([`GroupCommit`]), which covers the writers waiting on
    /// it: timed for the observer; a disk's refusal is kept, and every
    /// later sync refused at once ([`StorageError::Unwritable`]).
    fn group_sync(&self) -> Result<(), StorageError> {
        self.refusal()?;
        let _span = tracing::info_span!("storage.commit").entered();
        let started = std::time::Instant::now();
        let synced = self.sync();
        if let Some(observe) = self.sync_observer.get() {
            observe(started.elapsed());
        }
        synced.map_err(|e| {
            if !e.is_disk() {
                return e;
            }
            let reason = match e {
                StorageError::Sled(sled::Error::Io(io)) => io.to_string(),
                StorageError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            let reason = self.failed.get_or_init(|| reason).clone();
            tracing::error!(%reason, "the disk refused a write: this store takes no more writes until it is opened again");
            StorageError::Unwritable { reason }
        })
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        let db_path = self.dir.join("db");
        self.db_file.sync_data().map_err(io(&db_path))?;
        // Values over sled's blob threshold live in their own files, which
        // sled never syncs. We keep values small so this directory is almost
        // always empty, but sync what is there rather than trust that.
        let blobs = self.dir.join("blobs");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            let mut any = false;
            for entry in entries.flatten() {
                let path = entry.path();
                File::open(&path)
                    .and_then(|f| f.sync_data())
                    .map_err(io(&path))?;
                any = true;
            }
            if any {
                File::open(&blobs)
                    .and_then(|f| f.sync_all())
                    .map_err(io(&blobs))?;
            }
        }
        Ok(())
    }
}

type TxError = sled::transaction::ConflictableTransactionError<StorageError>;

/// A document's bookkeeping as a transaction sees it (default when new).
fn meta_in(meta_t: &sled::transaction::TransactionalTree, doc: &DocId) -> Result<DocMeta, TxError> {
    match meta_t.get(doc.0)? {
        Some(v) => postcard::from_bytes(&v).map_err(abort_meta),
        None => Ok(DocMeta::default()),
    }
}

fn abort_meta(e: postcard::Error) -> TxError {
    TxError::Abort(corrupt(layout::DOC_META, e))
}

/// One `doc_change_rows` value: changes with their hashes.
fn encode_change_row(changes: &[([u8; 32], &SignedChange)]) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(changes).map_err(|e| corrupt(layout::DOC_CHANGES, e))
}

/// The same from `count` changes already encoded one by one and joined:
/// postcard writes a sequence as its length (a varint) and then its items.
fn change_row(count: usize, items: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut row = postcard::to_stdvec(&count).map_err(|e| corrupt(layout::DOC_CHANGES, e))?;
    row.extend_from_slice(items);
    Ok(row)
}

fn decode_change_row(bytes: &[u8]) -> Result<Vec<([u8; 32], SignedChange)>, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(layout::DOC_CHANGES, e))
}

/// Moves a version 1–4 store's event logs (`gateway` tree: `e` and `h`
/// rows) into the `ledger` tree, where they are written in the ledger
/// groups' batches ([`layout::gateway::event_row_now`]). Each chunk is
/// copied, then removed from the old place: run again after a crash, it
/// copies the rows left (again, unchanged) and finds nothing once they are
/// gone.
fn move_event_log(db: &sled::Db) -> Result<(), StorageError> {
    const CHUNK: usize = 10_000;
    let gateway = db.open_tree(layout::GATEWAY)?;
    let ledger = db.open_tree(layout::LEDGER)?;
    for tag in [layout::gateway::V4_EVENT, layout::gateway::V4_HEADS] {
        loop {
            let mut copy = sled::Batch::default();
            let mut remove = sled::Batch::default();
            let mut moved = 0;
            for row in gateway.scan_prefix([tag]).take(CHUNK) {
                let (k, v) = row?;
                let now = layout::gateway::event_row_now(&k).ok_or_else(|| {
                    corrupt(layout::GATEWAY, "an event log row of no known shape")
                })?;
                copy.insert(now, v);
                remove.remove(k);
                moved += 1;
            }
            if moved == 0 {
                break;
            }
            ledger.apply_batch(copy)?;
            gateway.apply_batch(remove)?;
        }
    }
    db.flush()?;
    Ok(())
}

/// Moves a version 1–3 store's changes (one row each, and a row indexing
/// each by hash) into `doc_change_rows`, one change per row under the same
/// key, then drops the old trees. Run again after a crash, it starts over
/// while the old trees remain, and finds nothing to do once they are gone.
fn migrate_doc_changes(db: &sled::Db) -> Result<(), StorageError> {
    let old = db.open_tree(layout::V3_DOC_CHANGES)?;
    let index = db.open_tree(layout::V3_DOC_CHANGE_INDEX)?;
    if !old.is_empty() {
        let mut hash_of = std::collections::HashMap::new();
        for row in index.iter() {
            let (key, seq) = row?;
            let (Some(doc), Some(hash), Ok(seq)) = (
                key.get(..32),
                key.get(32..64).and_then(|h| <[u8; 32]>::try_from(h).ok()),
                <[u8; 8]>::try_from(seq.as_ref()),
            ) else {
                return Err(corrupt(layout::V3_DOC_CHANGE_INDEX, "malformed row"));
            };
            let mut seq_key = doc.to_vec();
            seq_key.extend_from_slice(&seq);
            hash_of.insert(seq_key, hash);
        }
        let new = db.open_tree(layout::DOC_CHANGES)?;
        new.clear()?;
        for row in old.iter() {
            let (key, value) = row?;
            let sc: SignedChange =
                postcard::from_bytes(&value).map_err(|e| corrupt(layout::V3_DOC_CHANGES, e))?;
            let hash = hash_of
                .get(key.as_ref())
                .ok_or_else(|| corrupt(layout::V3_DOC_CHANGE_INDEX, "a change has no hash"))?;
            new.insert(key, encode_change_row(&[(*hash, &sc)])?)?;
        }
        db.flush()?;
    }
    for tree in [layout::V3_DOC_CHANGES, layout::V3_DOC_CHANGE_INDEX] {
        db.drop_tree(tree)?;
    }
    db.flush()?;
    Ok(())
}

fn peer_doc_key(peer: &[u8; 32], doc: &DocId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(peer);
    key[32..].copy_from_slice(&doc.0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(n: u8) -> SignedChange {
        SignedChange {
            change: vec![n; 10],
            signature: [n; 64],
            delegation: None,
        }
    }

    #[test]
    fn changes_snapshots_and_chunks_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = DocId([1; 32]);
        {
            let store = Store::open(dir.path()).expect("open");
            assert!(store.load_doc(&doc).expect("load").is_none());
            store
                .append_changes(&doc, &[([1; 32], &sc(1)), ([2; 32], &sc(2))])
                .expect("append");
            // Three and a bit chunks.
            let snapshot: Vec<u8> = (0..(3 * layout::SNAPSHOT_CHUNK + 17))
                .map(|i| i as u8)
                .collect();
            store.write_snapshot(&doc, &snapshot).expect("snapshot");
            store
                .append_changes(&doc, &[([3; 32], &sc(3))])
                .expect("append");
            // A smaller snapshot drops the chunks it no longer needs.
            store
                .write_snapshot(&doc, &snapshot[..100])
                .expect("snapshot");
            store
                .append_changes(&doc, &[([4; 32], &sc(4))])
                .expect("append");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let loaded = store.load_doc(&doc).expect("load").expect("stored");
        assert_eq!(loaded.snapshot.as_deref().map(<[u8]>::len), Some(100));
        assert_eq!(loaded.changes, vec![sc(4)]);
        assert_eq!(loaded.changes_since_snapshot, 1);
        assert_eq!(
            store
                .signed_changes(&doc, &[[2; 32], [1; 32]])
                .expect("read"),
            vec![sc(2), sc(1)]
        );
        assert!(matches!(
            store.signed_changes(&doc, &[[9; 32]]),
            Err(StorageError::Corrupt { .. })
        ));
        assert_eq!(store.doc_ids().expect("ids"), vec![doc]);
    }

    /// What a snapshot cut short by a full disk or a `kill -9` leaves: an
    /// empty or a partial `.generating` file, newer than the real snapshot.
    #[test]
    fn an_unfinished_sled_snapshot_does_not_stop_the_store_opening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = DocId([1; 32]);
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .append_changes(&doc, &[([1; 32], &sc(1))])
                .expect("append");
        }
        let sled_dir = dir.path().join("store");
        std::fs::write(sled_dir.join("snap.FFFFFFFFFFFFFFF0.generating"), b"")
            .expect("an empty one");
        std::fs::write(sled_dir.join("snap.FFFFFFFFFFFFFFFF.generating"), [7u8; 40])
            .expect("a partial one");
        let store = Store::open(dir.path()).expect("the store opens");
        assert_eq!(
            store.signed_changes(&doc, &[[1; 32]]).expect("read"),
            vec![sc(1)]
        );
        let left: Vec<String> = std::fs::read_dir(&sled_dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".generating"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A version 4 store kept the event logs in the `gateway` tree; it
    /// opens with every event and covered heads where the gateway reads
    /// them, none left behind, other gateway rows untouched, and a backup
    /// names them by their old keys (so one restores on either side).
    #[test]
    fn a_version_4_store_keeps_its_event_logs() {
        use layout::gateway::{V4_EVENT, V4_HEADS};
        let dir = tempfile::tempdir().expect("tempdir");
        let (coop, domain, other) = (DocId([1; 32]), DocId([2; 32]), DocId([3; 32]));
        let v4_event =
            |doc: &DocId, seq: u64| [&[V4_EVENT][..], &doc.0, &seq.to_be_bytes()].concat();
        let v4_heads = |doc: &DocId| [&[V4_HEADS][..], &doc.0].concat();
        let mut old_rows = Vec::new();
        for seq in 1..=3u64 {
            old_rows.push((
                v4_event(&coop, seq),
                format!("{{\"seq\":{seq}}}").into_bytes(),
            ));
        }
        old_rows.push((v4_event(&other, 1), b"{}".to_vec()));
        old_rows.push((v4_heads(&coop), vec![7; 64]));
        old_rows.push((v4_heads(&domain), vec![8; 32]));
        let delegation = [&[b'd'][..], &[9; 32]].concat();
        {
            let db = open_sled(&dir.path().join("store")).expect("sled");
            let gateway = db.open_tree(layout::GATEWAY).expect("tree");
            for (k, v) in old_rows
                .iter()
                .chain([&(delegation.clone(), b"d".to_vec())])
            {
                gateway.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
            let doc_meta = db.open_tree(layout::DOC_META).expect("tree");
            for doc in [coop, domain, other] {
                doc_meta
                    .insert(
                        doc.0,
                        postcard::to_stdvec(&DocMeta::default()).expect("encode"),
                    )
                    .expect("insert");
            }
            db.open_tree(layout::META)
                .expect("meta")
                .insert(layout::SCHEMA_VERSION_KEY, &4u32.to_be_bytes())
                .expect("version");
            db.flush().expect("flush");
        }
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(store.schema_version().expect("version"), 5);
        let events = store.events_after(&coop, 1, 10).expect("events");
        assert_eq!(
            events,
            vec![(2, b"{\"seq\":2}".to_vec()), (3, b"{\"seq\":3}".to_vec())]
        );
        assert_eq!(store.last_event_seq(&coop).expect("last"), 3);
        assert_eq!(store.last_event_seq(&other).expect("last"), 1);
        assert_eq!(store.last_event_seq(&domain).expect("last"), 0);
        assert_eq!(
            store.event_heads(&coop).expect("heads"),
            Some(vec![[7; 32]; 2])
        );
        assert_eq!(
            store.event_heads(&domain).expect("heads"),
            Some(vec![[8; 32]])
        );
        assert_eq!(store.event_heads(&other).expect("heads"), None);
        let left: Vec<_> = store
            .inner
            .gateway
            .iter()
            .keys()
            .map(|k| k.expect("key").to_vec())
            .collect();
        assert_eq!(left, vec![delegation.clone()]);
        // New events go on after the moved ones.
        store
            .append_events(&[(coop, (4, b"{}".to_vec()))], &[(coop, vec![[6; 32]])])
            .expect("append");
        assert_eq!(store.last_event_seq(&coop).expect("last"), 4);
        assert_eq!(
            store.event_heads(&coop).expect("heads"),
            Some(vec![[6; 32]])
        );
        // A backup names every gateway row as version 4 did; restored into
        // a fresh store, they read the same.
        let mut records = store.gateway_records().expect("records");
        records.sort();
        let mut expected = old_rows.clone();
        expected.push((delegation, b"d".to_vec()));
        expected.push((v4_event(&coop, 4), b"{}".to_vec()));
        expected.retain(|(k, _)| *k != v4_heads(&coop));
        expected.push((v4_heads(&coop), vec![6; 32]));
        expected.sort();
        assert_eq!(records, expected);
        let fresh_dir = tempfile::tempdir().expect("tempdir");
        let fresh = Store::open(fresh_dir.path()).expect("open");
        for record in &records {
            fresh.put_gateway_record(record).expect("put");
        }
        assert_eq!(fresh.events_after(&coop, 0, 10).expect("events").len(), 4);
        assert_eq!(
            fresh.event_heads(&domain).expect("heads"),
            Some(vec![[8; 32]])
        );
    }

    /// A version 3 store kept one row per change and an index by hash; it
    /// opens with every change loadable and findable, and its old trees gone.
    #[test]
    fn a_version_3_store_keeps_its_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (DocId([1; 32]), DocId([2; 32]));
        {
            let db = open_sled(&dir.path().join("store")).expect("sled");
            let old = db.open_tree(layout::V3_DOC_CHANGES).expect("tree");
            let index = db.open_tree(layout::V3_DOC_CHANGE_INDEX).expect("tree");
            let doc_meta = db.open_tree(layout::DOC_META).expect("tree");
            for (doc, n) in [(a, 3u8), (b, 1)] {
                for seq in 0..n {
                    let change = sc(doc.0[0] * 10 + seq);
                    let key = layout::id_seq_key(&doc, u64::from(seq));
                    old.insert(key, postcard::to_stdvec(&change).expect("encode"))
                        .expect("insert");
                    let mut index_key = doc.0.to_vec();
                    index_key.extend_from_slice(&[change.change[0]; 32]);
                    index
                        .insert(index_key, &u64::from(seq).to_be_bytes())
                        .expect("insert");
                }
                let meta = DocMeta {
                    next_seq: u64::from(n),
                    ..DocMeta::default()
                };
                doc_meta
                    .insert(doc.0, postcard::to_stdvec(&meta).expect("encode"))
                    .expect("insert");
            }
            db.open_tree(layout::META)
                .expect("meta")
                .insert(layout::SCHEMA_VERSION_KEY, &3u32.to_be_bytes())
                .expect("version");
            db.flush().expect("flush");
        }
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(
            store.schema_version().expect("version"),
            layout::SCHEMA_VERSION
        );
        let loaded = store.load_doc(&a).expect("load").expect("stored");
        assert_eq!(loaded.changes, vec![sc(10), sc(11), sc(12)]);
        assert_eq!(
            store
                .signed_changes(&a, &[[12; 32], [10; 32]])
                .expect("read"),
            vec![sc(12), sc(10)]
        );
        assert_eq!(
            store.signed_changes(&b, &[[20; 32]]).expect("read"),
            vec![sc(20)]
        );
        // New changes go on after the migrated ones.
        store
            .append_changes(&b, &[([21; 32], &sc(21))])
            .expect("append");
        let names: Vec<_> = store.inner.db.tree_names();
        assert!(
            !names
                .iter()
                .any(|n| n.as_ref() == layout::V3_DOC_CHANGES.as_bytes())
        );
        assert!(
            !names
                .iter()
                .any(|n| n.as_ref() == layout::V3_DOC_CHANGE_INDEX.as_bytes())
        );
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let loaded = store.load_doc(&b).expect("load").expect("stored");
        assert_eq!(loaded.changes, vec![sc(20), sc(21)]);
    }

    /// Many changes stored together share rows, each is still found, and
    /// no leaf page of them grows past sled's blob threshold, in one large
    /// batch or many small ones.
    #[test]
    fn a_large_batch_is_stored_in_a_few_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = DocId([1; 32]);
        let store = Store::open(dir.path()).expect("open");
        let changes: Vec<([u8; 32], SignedChange)> = (0..5000u32)
            .map(|i| {
                let mut hash = [0; 32];
                hash[..4].copy_from_slice(&i.to_be_bytes());
                let change = SignedChange {
                    change: vec![i as u8; 100],
                    signature: [i as u8; 64],
                    delegation: None,
                };
                (hash, change)
            })
            .collect();
        let refs: Vec<([u8; 32], &SignedChange)> = changes.iter().map(|(h, c)| (*h, c)).collect();
        store.append_changes(&doc, &refs[..1]).expect("append");
        store.append_changes(&doc, &refs[1..2000]).expect("append");
        for batch in refs[2000..].chunks(100) {
            store.append_changes(&doc, batch).expect("append");
        }
        let rows = store.inner.doc_changes.scan_prefix(doc.0).count();
        assert!((10..=300).contains(&rows), "{rows} rows");
        // No page of them is large enough for sled to write it to a blob
        // file of its own (which every sync then fsyncs).
        store.make_durable().expect("sync");
        let blobs = std::fs::read_dir(store.dir().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "sled wrote blob files");
        let loaded = store.load_doc(&doc).expect("load").expect("stored");
        assert_eq!(loaded.changes.len(), 5000);
        assert!(
            loaded
                .changes
                .iter()
                .zip(&changes)
                .all(|(a, (_, b))| a == b)
        );
        let wanted: Vec<[u8; 32]> = [999usize, 0, 500].iter().map(|&i| changes[i].0).collect();
        let found = store.signed_changes(&doc, &wanted).expect("read");
        assert_eq!(
            found,
            vec![
                changes[999].1.clone(),
                changes[0].1.clone(),
                changes[500].1.clone()
            ]
        );
    }

    #[test]
    fn another_layout_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            assert_eq!(
                store.schema_version().expect("version"),
                layout::SCHEMA_VERSION
            );
            store
                .inner
                .meta
                .insert(layout::SCHEMA_VERSION_KEY, &99u32.to_be_bytes())
                .expect("insert");
            store.make_durable().expect("sync");
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(StorageError::UnsupportedVersion { found: 99, .. })
        ));
    }
}
