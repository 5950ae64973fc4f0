//! The engine handle: documents in memory, backed by the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use automerge::transaction::{CommitOptions, Transaction};
use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use icn_schemas::{Did, DocId, DocKind, Reader, SchemaError, coop, domain};

use crate::change::{SignedChange, signing_message};
use crate::identity::Signer;
use crate::storage::{StorageError, Store};
use crate::validate::{self, Refused};

/// Changes stored after the last snapshot before a new snapshot is written.
const SNAPSHOT_EVERY: u64 = 1024;

/// Why a local write failed. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// No such document.
    #[error("unknown document {0}")]
    UnknownDoc(DocId),
    /// The typed operation refused its input.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The change would be refused by every peer, so it was not written.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Storing failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<ApplyError> for WriteError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Refused(r) => WriteError::Refused(r),
            ApplyError::Storage(s) => WriteError::Storage(s),
            // Only sync messages fail these ways.
            e @ (ApplyError::BadSync(_)
            | ApplyError::NotWanted(_)
            | ApplyError::ModuleNeeded(_)) => {
                WriteError::Schema(SchemaError::Automerge(e.to_string()))
            }
        }
    }
}

/// Why a remote batch was not applied. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A change broke a rule; the whole batch is refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Storing failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A sync message that does not hold together: changes that do not
    /// load, or a change without its signature.
    #[error("bad sync message: {0}")]
    BadSync(String),
    /// A document this node does not hold, and does not want.
    #[error("document {0} is not wanted here")]
    NotWanted(DocId),
    /// A close needs the domain's WASM tally module (this blake3 hash),
    /// which this node does not hold; with it, the same changes pass.
    #[error("the tally module {} is needed", hex::encode(.0))]
    ModuleNeeded([u8; 32]),
}

/// Why the engine could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The WASM runtime does not start.
    #[error("the WASM runtime: {0}")]
    Wasm(String),
    /// A stored document does not load.
    #[error("stored document {doc} does not load: {reason}")]
    Load {
        /// Which.
        doc: DocId,
        /// Why.
        reason: String,
    },
}

/// What a batch changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Hashes of the changes that were new, in the order applied.
    pub new: Vec<ChangeHash>,
    /// The document's heads afterwards.
    pub heads: Vec<ChangeHash>,
    /// The proposals whose counted close changed (domain documents).
    pub(crate) closes: ClosesChanged,
}

/// Something this node committed durably, its own write or a peer's: what
/// sync pushes to peers and the gateway streams to clients.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Committed {
    /// New changes of a document.
    Doc {
        /// Which document.
        doc: DocId,
        /// Its heads afterwards.
        heads: Vec<ChangeHash>,
    },
    /// New ledger entries of a co-op, parents first.
    Entries {
        /// Which co-op.
        coop: DocId,
        /// Each entry's id and canonical encoding.
        entries: Vec<(icn_schemas::ledger::EntryId, Arc<[u8]>)>,
    },
    /// Entries held before whose status changed after the fact: a merge
    /// placed an entry before them (a settle answered `applied` is
    /// conflicted now, or the other way), or a close they execute changed.
    Statuses {
        /// Which co-op.
        coop: DocId,
        /// Each entry's id and its status now.
        changed: Vec<(icn_schemas::ledger::EntryId, crate::ledger::Status)>,
    },
}

type Listener = Arc<dyn Fn(&Committed) + Send + Sync>;

/// A commit listener, as [`Engine::on_commit`] registered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

pub(crate) struct DocState {
    pub(crate) doc: Automerge,
    since_snapshot: u64,
    /// Shared with the [`Held`] around it: counted up each time `doc` is
    /// replaced.
    version: Arc<AtomicU64>,
}

impl DocState {
    fn new(doc: Automerge, since_snapshot: u64) -> Self {
        DocState {
            doc,
            since_snapshot,
            version: Arc::default(),
        }
    }
}

/// A document held: its state behind its lock, and how many times it has
/// changed, which a reader learns without the lock (and so without waiting
/// for a writer that holds it).
pub(crate) struct Held {
    state: Mutex<DocState>,
    version: Arc<AtomicU64>,
}

impl Held {
    fn new(state: DocState) -> Arc<Self> {
        Arc::new(Held {
            version: state.version.clone(),
            state: Mutex::new(state),
        })
    }
}

impl std::ops::Deref for Held {
    type Target = Mutex<DocState>;

    fn deref(&self) -> &Mutex<DocState> {
        &self.state
    }
}

/// The engine: every document this node holds, validated on every write.
///
/// Cheap to clone; clones share state. All methods are blocking: call them
/// from a blocking thread in async code.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    docs: RwLock<HashMap<DocId, Arc<Held>>>,
    /// Serialises the creation of documents this node did not hold.
    creating: Mutex<()>,
    /// Each co-op's ledger, each behind its own lock. Lock order: a
    /// ledger, then a document.
    ledgers: crate::ledgers::Ledgers,
    /// Runs domains' WASM tally modules.
    policies: crate::policy::Policies,
    /// The key this node executes decisions and records due closes with,
    /// when it has one (`Engine::set_executor`).
    executor: Mutex<Option<Signer>>,
    /// Called after every durable commit ([`Engine::on_commit`]), by id.
    listeners: RwLock<Vec<(ListenerId, Listener)>>,
    /// The id the next listener gets.
    next_listener: std::sync::atomic::AtomicU64,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Engine {
    /// Opens the engine over a store, loading every stored document.
    pub fn open(store: Store) -> Result<Engine, OpenError> {
        let mut docs = HashMap::new();
        for id in store.doc_ids()? {
            let stored = store.load_doc(&id)?.unwrap_or_default();
            let load_err = |reason: String| OpenError::Load { doc: id, reason };
            let mut doc = match &stored.snapshot {
                Some(bytes) => Automerge::load(bytes).map_err(|e| load_err(e.to_string()))?,
                None => Automerge::new(),
            };
            let changes = stored
                .changes
                .iter()
                .map(|sc| Change::from_bytes(sc.change.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| load_err(e.to_string()))?;
            doc.apply_changes(changes)
                .map_err(|e| load_err(e.to_string()))?;
            docs.insert(
                id,
                Held::new(DocState::new(doc, stored.changes_since_snapshot)),
            );
        }
        let mut ledgers = Vec::new();
        for (id, state) in &docs {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            if DocKind::of(Reader::now(&state.doc)) == Some(DocKind::Coop) {
                let decisions = crate::ledger::decisions::DocDecisions::new(*id, |d| {
                    let handle = docs.get(d)?;
                    let doc = handle.lock().unwrap_or_else(|p| p.into_inner());
                    Some(crate::ledger::decisions::counted_decisions(
                        d,
                        Reader::now(&doc.doc),
                    ))
                });
                let mut ledger = crate::ledger::pipeline::Ledger::open(*id, &store);
                crate::ledger::migrate::fold_v1_entries(
                    &mut ledger,
                    &store,
                    &state.doc,
                    &decisions,
                )?;
                ledgers.push(ledger);
            }
        }
        store.finish_v1_migration()?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                docs: RwLock::new(docs),
                creating: Mutex::new(()),
                ledgers: crate::ledgers::Ledgers::new(ledgers),
                policies: crate::policy::Policies::new().map_err(OpenError::Wasm)?,
                executor: Mutex::new(None),
                listeners: RwLock::new(Vec::new()),
                next_listener: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    pub(crate) fn policies(&self) -> &crate::policy::Policies {
        &self.inner.policies
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Every document held.
    pub fn doc_ids(&self) -> Vec<DocId> {
        let mut ids: Vec<DocId> = self.docs_read().keys().copied().collect();
        ids.sort();
        ids
    }

    fn docs_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<DocId, Arc<Held>>> {
        self.inner.docs.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ledgers(&self) -> &crate::ledgers::Ledgers {
        &self.inner.ledgers
    }

    pub(crate) fn handle(&self, id: &DocId) -> Option<Arc<Held>> {
        self.docs_read().get(id).cloned()
    }

    /// Reads a document (as it stands) through `f`.
    pub fn read<T>(&self, id: &DocId, f: impl FnOnce(Reader<'_>) -> T) -> Option<T> {
        let handle = self.handle(id)?;
        let state = handle.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(Reader::now(&state.doc)))
    }

    /// The kind of a document.
    pub fn kind(&self, id: &DocId) -> Option<DocKind> {
        self.read(id, DocKind::of).flatten()
    }

    /// A co-op document as typed data.
    pub fn coop(&self, id: &DocId) -> Option<Result<coop::Coop, SchemaError>> {
        self.read(id, coop::Coop::read)
    }

    /// A domain document as typed data.
    pub fn domain(&self, id: &DocId) -> Option<Result<domain::Domain, SchemaError>> {
        self.read(id, domain::Domain::read)
    }

    /// A document's heads, sorted.
    pub fn heads(&self, id: &DocId) -> Option<Vec<ChangeHash>> {
        self.read(id, |r| r.doc().get_heads())
    }

    /// How many times this node's copy of a document has changed since the
    /// engine opened: read without the document's lock, to tell whether it
    /// moved since an answer was read from it. A count seen means the
    /// document it counts is the one a read started after will see (or a
    /// newer one).
    pub fn version(&self, id: &DocId) -> Option<u64> {
        self.docs_read()
            .get(id)
            .map(|held| held.version.load(Ordering::Acquire))
    }

    /// A document as `Automerge::save()` bytes, which stock Automerge loads.
    pub fn save(&self, id: &DocId) -> Option<Vec<u8>> {
        self.read(id, |r| r.doc().save())
    }

    /// A document as JSON.
    pub fn to_json(&self, id: &DocId) -> Option<serde_json::Value> {
        self.read(id, |r| {
            serde_json::to_value(automerge::AutoSerde::from(r.doc())).unwrap_or_default()
        })
    }

    /// The signed changes of a document that are not in the causal past of
    /// `have`, in causal order: what a peer at `have` is missing.
    pub fn changes_since(
        &self,
        id: &DocId,
        have: &[ChangeHash],
    ) -> Result<Vec<SignedChange>, StorageError> {
        let Some(hashes) = self.read(id, |r| {
            // Heads a peer names that we do not hold say nothing about what
            // it lacks; leave them out rather than trust Automerge with them.
            let have: Vec<ChangeHash> = have
                .iter()
                .filter(|h| r.doc().get_change_meta_by_hash(h).is_some())
                .copied()
                .collect();
            r.doc()
                .get_changes(&have)
                .iter()
                .map(|c| c.hash().0)
                .collect::<Vec<_>>()
        }) else {
            return Ok(Vec::new());
        };
        self.inner.store.signed_changes(id, &hashes)
    }

    /// Creates a co-op document; its genesis is signed by `signer`.
    pub fn create_coop(&self, signer: &Signer, new: &coop::NewCoop) -> Result<DocId, WriteError> {
        self.create(signer, |tx| coop::create(tx, new))
    }

    /// Creates a governance domain document; its genesis is signed by `signer`.
    pub fn create_domain(
        &self,
        signer: &Signer,
        new: &domain::NewDomain,
    ) -> Result<DocId, WriteError> {
        self.create(signer, |tx| domain::create(tx, new))
    }

    /// Adds (or reinstates) members of domain `domain`, each with a role and
    /// a weight, in one change. A member that rotated its key votes here
    /// with its DID key's successor only once it names it itself (not
    /// built: `docs/permissions.md`, "Key rotation").
    pub fn add_domain_members(
        &self,
        domain: &DocId,
        signer: &Signer,
        members: &[(Did, domain::DomainRole, i64)],
    ) -> Result<(), WriteError> {
        self.write(domain, signer, |tx| {
            for (did, role, weight) in members {
                domain::add_member(tx, did, *role, *weight)?;
            }
            Ok(())
        })
    }

    pub(crate) fn create(
        &self,
        signer: &Signer,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), SchemaError>,
    ) -> Result<DocId, WriteError> {
        let mut scratch = Automerge::new().with_actor(actor_of(signer));
        let signed = make_change(&mut scratch, signer, None, f)?
            .ok_or_else(|| SchemaError::Missing("genesis operations".into()))?;
        let hash = Change::from_bytes(signed.change.clone())
            .map_err(|e| SchemaError::Automerge(e.to_string()))?
            .hash();
        let id = DocId::from_genesis(hash);
        let accepted = validate::check_local(&id, &Automerge::new(), &scratch, signed, self)?;
        let _creating = self
            .inner
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.handle(&id).is_some() {
            return Ok(id); // The same genesis, already held.
        }
        let mut state = DocState::new(Automerge::new(), 0);
        self.store_and_swap(&id, &mut state, scratch, vec![accepted], true)?;
        self.inner
            .docs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Held::new(state));
        drop(_creating);
        self.notify_doc(&id);
        Ok(id)
    }

    /// Makes one change with `f`, validates it with the rules a remote peer
    /// applies, signs it, stores it durably, and only then makes it visible.
    /// Returns what `f` returned. A write that changes nothing stores nothing.
    pub fn write<O>(
        &self,
        id: &DocId,
        signer: &Signer,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<O, SchemaError>,
    ) -> Result<O, WriteError> {
        self.write_with(id, signer, |_, _, tx| f(tx))
    }

    /// Like [`Engine::write`], and `f` also reads the document as it stands,
    /// which is exactly the causal past of the change it writes, and gets the
    /// dependencies that change will have (sorted): the document's heads,
    /// plus the signer's own previous change when it is not one of them, as
    /// Automerge lists them.
    pub fn write_with<O>(
        &self,
        id: &DocId,
        signer: &Signer,
        f: impl FnOnce(Reader<'_>, &[ChangeHash], &mut Transaction<'_>) -> Result<O, SchemaError>,
    ) -> Result<O, WriteError> {
        let handle = self.handle(id).ok_or(WriteError::UnknownDoc(*id))?;
        let mut state = handle.lock().unwrap_or_else(|p| p.into_inner());
        let mut scratch = state.doc.fork().with_actor(actor_of(signer));
        let mut deps = scratch.get_heads();
        if let Some(own) = scratch.get_last_local_change().map(|c| c.hash())
            && !deps.contains(&own)
        {
            deps.push(own);
        }
        deps.sort_unstable();
        let mut output = None;
        let before = &state.doc;
        let signed = make_change(&mut scratch, signer, Some(id), |tx| {
            output = Some(f(Reader::now(before), &deps, tx)?);
            Ok(())
        })?;
        let output = output.ok_or_else(|| SchemaError::Missing("write output".into()))?;
        let Some(signed) = signed else {
            return Ok(output);
        };
        // The document as it stands is exactly the new change's causal past.
        let accepted = validate::check_local(id, &state.doc, &scratch, signed, self)?;
        let closes_before = closes(&state.doc);
        // Durable before visible (see `store_and_swap`): writers of this
        // document queue behind its sync; other documents' writers share it.
        self.store_and_swap(id, &mut state, scratch, vec![accepted], true)?;
        let changed = ClosesChanged::between(id, &closes_before, &closes(&state.doc));
        drop(state);
        self.notify_doc(id);
        if !changed.is_empty()
            && let Err(e) = self.refold_decisions(id, &changed.receipts)
        {
            // The write itself is durable; the ledgers refold on the next
            // close or restart of a fold.
            tracing::warn!(domain = %id, error = %e, "refolding ledgers after a close failed");
        }
        Ok(output)
    }

    /// Validates a batch of signed changes from a peer and, if every change
    /// passes, stores and merges them; otherwise refuses the whole batch and
    /// stores nothing. Changes already held are skipped.
    pub fn apply_remote(
        &self,
        id: &DocId,
        batch: Vec<SignedChange>,
    ) -> Result<Applied, ApplyError> {
        self.merge_remote(id, Incoming::Batch(batch))
    }

    /// [`Engine::apply_remote`] for a batch as bytes or as the sync
    /// protocol loaded it.
    pub(crate) fn merge_remote(
        &self,
        id: &DocId,
        incoming: Incoming,
    ) -> Result<Applied, ApplyError> {
        let applied = self.apply(id, incoming)?;
        if !applied.new.is_empty() && self.kind(id) == Some(DocKind::Coop) {
            // Ledger entries may have been waiting for these co-op heads.
            if let Err(e) = self.ingest_entries(id, Vec::new()) {
                tracing::warn!(coop = %id, error = %e, "retrying pending entries failed");
            }
        }
        if !applied.closes.is_empty() {
            // A close that counts now may allow, or stop, an entry executing it.
            if let Err(e) = self.refold_decisions(id, &applied.closes.receipts) {
                tracing::warn!(domain = %id, error = %e, "refolding ledgers after a close failed");
            }
            // A peer's close is carried out here only by
            // `Engine::execute_pending`, once the closer's node has had time
            // to do it: every member's node executing every close it hears of
            // would write one (conflicted) execution each.
        }
        Ok(applied)
    }

    /// Sets the key this node uses to execute accepted decisions it learns
    /// of from peers, and to record closes that fall due
    /// (`Engine::close_due`): the node's member key, normally.
    pub fn set_executor(&self, signer: Signer) {
        *self
            .inner
            .executor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(signer);
    }

    /// Calls `f` after every commit, once it is durable, from the thread
    /// that committed: `f` must return quickly (send to a channel, say).
    /// Returns an id that [`Engine::remove_listener`] takes; a listener that
    /// is never removed lives as long as the engine.
    pub fn on_commit(&self, f: impl Fn(&Committed) + Send + Sync + 'static) -> ListenerId {
        let id = ListenerId(
            self.inner
                .next_listener
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, Arc::new(f)));
        id
    }

    /// Stops calling the listener `id`. A commit notifying listeners as
    /// this returns may still call it once.
    pub fn remove_listener(&self, id: ListenerId) {
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, _)| *l != id);
    }

    fn notify_doc(&self, id: &DocId) {
        if let Some(heads) = self.heads(id) {
            self.notify(Committed::Doc { doc: *id, heads });
        }
    }

    pub(crate) fn notify(&self, event: Committed) {
        let listeners = self
            .inner
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (_, f) in listeners {
            f(&event);
        }
    }

    pub(crate) fn executor(&self) -> Option<Signer> {
        self.inner
            .executor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn apply(&self, id: &DocId, batch: Incoming) -> Result<Applied, ApplyError> {
        let applied = self.apply_staged(id, batch)?;
        if !applied.new.is_empty() {
            self.inner.store.make_durable()?;
            self.notify(Committed::Doc {
                doc: *id,
                heads: applied.heads.clone(),
            });
        }
        Ok(applied)
    }

    /// Validates and stages a batch under the document's lock; the caller
    /// makes it durable after the lock is released.
    fn apply_staged(&self, id: &DocId, batch: Incoming) -> Result<Applied, ApplyError> {
        if let Some(handle) = self.handle(id) {
            let mut state = handle.lock().unwrap_or_else(|p| p.into_inner());
            return self.commit(id, &mut state, batch);
        }
        // A document new to this node: validate against an empty document
        // under the creation lock, so two batches cannot both create it.
        let _creating = self
            .inner
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = self.handle(id) {
            let mut state = handle.lock().unwrap_or_else(|p| p.into_inner());
            return self.commit(id, &mut state, batch);
        }
        let mut state = DocState::new(Automerge::new(), 0);
        let applied = self.commit(id, &mut state, batch)?;
        if !applied.new.is_empty() {
            self.inner
                .docs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(*id, Held::new(state));
        }
        Ok(applied)
    }

    /// Validates a batch on a fork and, if it passes, stores it and swaps the
    /// fork in.
    fn commit(
        &self,
        id: &DocId,
        state: &mut DocState,
        batch: Incoming,
    ) -> Result<Applied, ApplyError> {
        let checked = match batch {
            Incoming::Batch(batch) => validate::check_batch(id, &state.doc, batch, self)?,
            // The fork was made from the document as it stands: judge what
            // it loaded without loading it again.
            Incoming::Loaded(l) if l.base == state.doc.get_heads() => {
                validate::check_loaded(id, &state.doc, l.fork, l.changes, self)?
            }
            Incoming::Loaded(l) => validate::check_batch(id, &state.doc, l.into_batch(), self)?,
        };
        let Some(checked) = checked else {
            return Ok(Applied {
                new: Vec::new(),
                heads: state.doc.get_heads(),
                closes: ClosesChanged::default(),
            });
        };
        let new = checked.accepted.iter().map(|(h, _)| *h).collect();
        let closes_before = closes(&state.doc);
        self.store_and_swap(id, state, checked.fork, checked.accepted, false)?;
        Ok(Applied {
            new,
            heads: state.doc.get_heads(),
            closes: ClosesChanged::between(id, &closes_before, &closes(&state.doc)),
        })
    }

    /// The one path by which validated changes reach disk and memory: stage
    /// them in the store, then make the document that holds them the current
    /// one.
    ///
    /// With `durable_first` (this node's own changes), they are durable
    /// before anyone can read them: a change of ours that a peer received
    /// and this node then lost (a `kill -9` or a full disk before the sync)
    /// would have its sequence number reused by our next change, and
    /// Automerge refuses a second change with the same actor and sequence
    /// number, so the two replicas would never agree again. Otherwise (a
    /// peer's changes, which it still holds) the caller must call
    /// [`Store::make_durable`] after releasing the document's lock and
    /// before acknowledging anything.
    fn store_and_swap(
        &self,
        id: &DocId,
        state: &mut DocState,
        doc: Automerge,
        accepted: Vec<(ChangeHash, SignedChange)>,
        durable_first: bool,
    ) -> Result<(), StorageError> {
        let rows: Vec<([u8; 32], &SignedChange)> =
            accepted.iter().map(|(h, sc)| (h.0, sc)).collect();
        self.inner.store.stage_changes(id, &rows)?;
        if durable_first {
            self.inner.store.make_durable()?;
        }
        state.doc = doc;
        // After the swap: whoever sees the new count reads the new document.
        state.version.fetch_add(1, Ordering::Release);
        state.since_snapshot += accepted.len() as u64;
        if state.since_snapshot >= SNAPSHOT_EVERY {
            // The changes are already stored; a failed snapshot only means a
            // slower load, so it is logged, not returned.
            match self.inner.store.write_snapshot(id, &state.doc.save()) {
                Ok(()) => state.since_snapshot = 0,
                Err(e) => tracing::warn!(doc = %id, error = %e, "snapshot failed"),
            }
        }
        Ok(())
    }
}

fn actor_of(signer: &Signer) -> ActorId {
    ActorId::from(signer.key().did().as_bytes().as_slice())
}

/// Runs `f` in a transaction on `scratch` and signs the resulting change.
/// `None` when `f` wrote nothing. For a genesis (`doc` is `None`) the doc id
/// is the change's own hash.
fn make_change(
    scratch: &mut Automerge,
    signer: &Signer,
    doc: Option<&DocId>,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<(), SchemaError>,
) -> Result<Option<SignedChange>, SchemaError> {
    let time = now_secs();
    let hash = scratch
        .transact_with(|_| CommitOptions::default().with_time(time), f)
        .map_err(|failure| failure.error)?
        .hash;
    let Some(hash) = hash else {
        return Ok(None);
    };
    let change = scratch
        .get_change_by_hash(&hash)
        .ok_or_else(|| SchemaError::Automerge("the committed change is missing".into()))?;
    let doc_id = doc.copied().unwrap_or(DocId::from_genesis(hash));
    Ok(Some(SignedChange {
        change: change.raw_bytes().to_vec(),
        signature: signer.key().sign(&signing_message(&doc_id, &hash)),
        delegation: signer.delegation().cloned(),
    }))
}

/// A peer's changes: as signed bytes, or as the sync protocol loaded them.
pub(crate) enum Incoming {
    Batch(Vec<SignedChange>),
    Loaded(Box<Loaded>),
}

/// Changes a sync message carried, loaded into a fork of the document.
pub(crate) struct Loaded {
    /// The document with the changes loaded; nothing may be queued in it
    /// (a change whose dependencies did not come), or the queue would be
    /// applied later, unjudged.
    pub(crate) fork: Automerge,
    /// The heads of the document the fork was made from.
    pub(crate) base: Vec<ChangeHash>,
    /// The fork's changes beyond `base`, in its order, with their
    /// signatures.
    pub(crate) changes: Vec<(Change, SignedChange)>,
}

impl Loaded {
    fn into_batch(self) -> Vec<SignedChange> {
        self.changes.into_iter().map(|(_, s)| s).collect()
    }
}

/// What a merge into a domain document changed in its counted closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClosesChanged {
    /// The proposals whose counted close is new or another.
    pub(crate) proposals: Vec<String>,
    /// The receipts of those closes, before and after: the ledger entries
    /// citing them are the ones whose standing may change.
    pub(crate) receipts: Vec<[u8; 32]>,
}

impl ClosesChanged {
    fn between(
        domain: &DocId,
        before: &BTreeMap<String, icn_schemas::tally::Close>,
        after: &BTreeMap<String, icn_schemas::tally::Close>,
    ) -> ClosesChanged {
        let receipt =
            |id: &str, close| icn_schemas::tally::DecisionReceipt::new(*domain, id, close).hash();
        let mut changed = ClosesChanged::default();
        for (id, close) in after {
            let old = before.get(id);
            if old == Some(close) {
                continue;
            }
            changed.proposals.push(id.clone());
            changed.receipts.push(receipt(id, close));
            changed.receipts.extend(old.map(|c| receipt(id, c)));
        }
        // A close that stopped counting (its closer was sealed unseen).
        for (id, close) in before {
            if !after.contains_key(id) {
                changed.proposals.push(id.clone());
                changed.receipts.push(receipt(id, close));
            }
        }
        changed
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.proposals.is_empty()
    }
}

/// The counted close of every proposal of a domain document, by proposal:
/// what ledger entries executing decisions depend on. Empty for a co-op.
fn closes(doc: &Automerge) -> BTreeMap<String, icn_schemas::tally::Close> {
    let r = Reader::now(doc);
    if DocKind::of(r) != Some(DocKind::Domain) {
        return BTreeMap::new();
    }
    icn_schemas::domain::proposal_ids(r)
        .into_iter()
        .filter_map(|id| Some((id.clone(), icn_schemas::domain::Proposal::close(r, &id)?)))
        .collect()
}
