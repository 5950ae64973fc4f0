//! One co-op's ledger, and the one pipeline every entry takes into it.
//!
//! An entry is *judged* once ([`Ledger::judge`]), by the rules of
//! [`super::rules`], whether this node wrote it or a peer sent it. What the
//! judgement leads to differs only where it must: a peer's entry whose
//! parents or co-op heads are not all here waits in the pending set, and a
//! local entry that would not count at the end of the order is not written
//! at all (a member is told at once, rather than finding it conflicted).
//!
//! A [`Ledger`] holds no lock of its own; the engine keeps one per co-op
//! (`crate::ledgers`), so co-ops never wait for each other.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use automerge::Automerge;
use icn_schemas::ledger::{Body, DecodeError, Entry, EntryId, SignedEntry};
use icn_schemas::{Did, DocId, SignedDelegation};

use super::api::{EntryRefusal, Ingest, LedgerError, MAX_PENDING, MAX_PENDING_PER_SIGNER};
use super::fold::{Beside, Decisions, Fold, Judged, Outside, Status};
use super::rules::{Lookups, check_at_heads, check_signed, check_state, heads_of};
use crate::identity::{self, Keypair};
use crate::storage::{StorageError, Store};

/// What became of a local write: its entry's id and bytes, or why it was
/// refused.
pub(crate) type Recorded = Result<(EntryId, Vec<u8>), LedgerError>;

/// Entries stored by one call, parents first, with their encodings.
pub(crate) type Stored = Vec<(EntryId, Arc<[u8]>)>;

/// What the ledger reads besides its own rows: the co-op document as it
/// stands, and the decisions domain documents hold.
pub(crate) struct View<'a> {
    /// The co-op document.
    pub(crate) doc: &'a Automerge,
    /// Accepted decisions, by domain and receipt.
    pub(crate) decisions: &'a dyn Decisions,
}

impl View<'_> {
    /// What the fold reads of the same.
    pub(crate) fn beside(&self) -> Beside<'_> {
        Beside {
            doc: self.doc,
            decisions: self.decisions,
        }
    }
}

/// The co-op document, locked only while `f` reads it.
pub(crate) trait CoopDoc {
    /// Runs `f` on the document as it stands.
    fn read<T>(&self, f: impl FnOnce(&Automerge) -> T) -> T;
}

/// Where an entry came from, which is all that changes how it is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// From a peer; `signature_checked` when a batch check passed already.
    Peer { signature_checked: bool },
    /// Signed by this node just now, on heads it holds.
    Local,
}

/// What became of an entry a client submitted.
pub(crate) enum Submitted {
    /// Held already.
    Known(EntryId),
    /// Stored and counted: its id and bytes.
    Stored(EntryId, Vec<u8>),
    /// Its parents or cited heads are not all here: for the ingest path to
    /// keep waiting.
    Waits,
}

/// The judgement of an entry that broke no rule.
enum Verdict {
    /// Held already, stored or waiting.
    Known,
    /// Its cited co-op heads are not all here yet.
    Waits,
    /// Valid at its cited heads, judged by these limits.
    Ready(Judged),
}

/// One co-op's ledger: the fold (stored) and the entries waiting (in memory).
pub(crate) struct Ledger {
    coop: DocId,
    store: Store,
    fold: Fold,
    pending: HashMap<EntryId, SignedEntry>,
    /// How many of `pending` each signer key holds.
    pending_by_signer: HashMap<Did, usize>,
    /// Answers read from the co-op document, by the heads they were read at.
    lookups: Lookups,
    /// Held for writing while a commit's batch is applied, and by queries
    /// for reading ([`super::queries::Published`]), so none sees half of one.
    published: Arc<RwLock<()>>,
}

impl Ledger {
    /// The co-op's stored ledger.
    pub(crate) fn open(coop: DocId, store: &Store) -> Self {
        Ledger {
            coop,
            store: store.clone(),
            fold: Fold::open(coop, store.ledger_tree().clone()),
            pending: HashMap::new(),
            pending_by_signer: HashMap::new(),
            lookups: Lookups::default(),
            published: Arc::default(),
        }
    }

    /// The lock queries of this ledger's committed rows read under.
    pub(crate) fn published(&self) -> Arc<RwLock<()>> {
        self.published.clone()
    }

    pub(crate) fn coop(&self) -> DocId {
        self.coop
    }

    pub(super) fn fold(&self) -> &Fold {
        &self.fold
    }

    pub(super) fn fold_mut(&mut self) -> &mut Fold {
        &mut self.fold
    }

    /// The entries held before whose status changed in what was committed
    /// since the last call.
    pub(crate) fn take_changed(&mut self) -> Vec<(EntryId, Status)> {
        self.fold.take_changed()
    }

    pub(crate) fn pending(&self) -> &HashMap<EntryId, SignedEntry> {
        &self.pending
    }

    /// Commits what the fold wrote since the last commit, atomically; on
    /// failure forgets it, so the fold stays what is stored.
    pub(super) fn commit(&mut self) -> Result<(), StorageError> {
        let Some(batch) = self.fold.take_batch() else {
            return Ok(());
        };
        let committed = {
            let _applying = self.published.write().unwrap_or_else(|p| p.into_inner());
            self.store.commit_ledger(batch)
        };
        if committed.is_err() {
            self.fold.discard();
        }
        committed
    }

    /// Runs `f` on the fold and commits what it wrote, or, if it fails,
    /// forgets all of it.
    fn atomically<T, E: From<StorageError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        let done = f(self).and_then(|t| Ok(self.commit().map(|()| t)?));
        if done.is_err() {
            self.fold.discard();
        }
        done
    }

    /// Whether every parent of `e` is folded, or accepted in this call.
    fn parents_known(
        &self,
        e: &SignedEntry,
        accepted: &HashSet<EntryId>,
    ) -> Result<bool, StorageError> {
        for p in &e.entry.parents {
            if !accepted.contains(p) && !self.fold.contains(p)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Judges one entry: held already, broken, waiting for co-op heads, or
    /// valid at its cited heads. Every entry passes through here.
    fn judge(
        &self,
        view: &View<'_>,
        lookups: &mut Lookups,
        e: &SignedEntry,
        id: &EntryId,
        origin: Origin,
        accepted: &HashSet<EntryId>,
    ) -> Result<Result<Verdict, EntryRefusal>, StorageError> {
        if accepted.contains(id) || self.pending.contains_key(id) || self.fold.contains(id)? {
            return Ok(Ok(Verdict::Known));
        }
        let signature_checked = match origin {
            // This node made the signature; checking it again proves nothing.
            Origin::Local => true,
            Origin::Peer { signature_checked } => signature_checked,
        };
        if let Err(refusal) = check_signed(&self.coop, e, signature_checked) {
            return Ok(Err(refusal));
        }
        Ok(match check_state(view.doc, e, lookups) {
            Err(refusal) => Err(refusal),
            Ok(None) => Ok(Verdict::Waits),
            Ok(Some(judged)) => Ok(Verdict::Ready(judged)),
        })
    }

    /// Judges an entry this node signed on heads it holds.
    fn judge_local(
        &self,
        view: &View<'_>,
        lookups: &mut Lookups,
        signed: &SignedEntry,
        id: &EntryId,
    ) -> Result<Judged, LedgerError> {
        let origin = Origin::Local;
        Ok(
            match self.judge(view, lookups, signed, id, origin, &HashSet::new())? {
                Err(refusal) => return Err(refusal.into()),
                Ok(Verdict::Ready(judged)) => judged,
                // Drafted on heads this node holds, at a time that makes its
                // encoding unique: neither can happen, but if it did, the
                // heads are read where they stand.
                Ok(Verdict::Known | Verdict::Waits) => {
                    let heads = heads_of(&signed.entry);
                    check_at_heads(view.doc, &heads, signed, lookups)?
                }
            },
        )
    }

    /// The answers kept from earlier calls, for one more; the caller puts
    /// them back (`self.lookups = …`) when it is done.
    fn take_lookups(&mut self) -> Lookups {
        let mut lookups = std::mem::take(&mut self.lookups);
        lookups.bound();
        lookups
    }

    /// Validates entries from a peer, decoded and signature-checked
    /// ([`Batch::check`], [`Batch::verified`]), and stages and folds the valid ones, with any
    /// waiting entries they complete, in one atomic commit; returns the
    /// outcome of each input and every entry stored, parents first. The
    /// caller makes them durable.
    pub(crate) fn ingest(
        &mut self,
        view: &View<'_>,
        batch: Batch,
    ) -> Result<(Vec<Result<Ingest, EntryRefusal>>, Stored), LedgerError> {
        match self.ingest_gated(view, batch, || true) {
            Ok(done) => Ok(done),
            Err(Gated::Ledger(e)) => Err(e),
            Err(Gated::Unverified) => unreachable!("this gate always opens"),
        }
    }

    /// [`Ledger::ingest`] of a batch whose signatures another thread is
    /// checking ([`Batch::decode`], [`Batch::signatures`]): judged as if
    /// they verified, and committed only if `verified()` (which waits for
    /// that thread) says they did. If not, nothing it judged stays (the
    /// fold's rows and the waiting entries are as before) and the batch is
    /// judged again with each signature checked on its own, as
    /// [`Ledger::ingest`] does after a failed batch check.
    pub(crate) fn ingest_verifying(
        &mut self,
        view: &View<'_>,
        batch: Batch,
        verified: impl FnOnce() -> bool,
    ) -> Result<(Vec<Result<Ingest, EntryRefusal>>, Stored), LedgerError> {
        // Putting the waiting entries back costs a copy of them: with many
        // waiting, wait for the signatures first instead.
        if self.pending.len() > COPY_WAITING_MAX {
            let ok = verified();
            return self.ingest(view, batch.verified(ok));
        }
        let waiting = (self.pending.clone(), self.pending_by_signer.clone());
        let again = batch.encoded.clone();
        let optimistic = Batch {
            signatures_ok: true,
            ..batch
        };
        match self.ingest_gated(view, optimistic, verified) {
            Ok(done) => Ok(done),
            Err(Gated::Ledger(e)) => Err(e),
            Err(Gated::Unverified) => {
                (self.pending, self.pending_by_signer) = waiting;
                self.ingest(view, Batch::decode(again))
            }
        }
    }

    /// The ingest, committed only if `gate()` (asked once, before the
    /// commit) says so.
    fn ingest_gated(
        &mut self,
        view: &View<'_>,
        batch: Batch,
        gate: impl FnOnce() -> bool,
    ) -> Result<(Vec<Result<Ingest, EntryRefusal>>, Stored), Gated> {
        let Batch {
            encoded,
            decoded,
            signatures_ok,
        } = batch;
        let mut lookups = self.take_lookups();
        let done = self.atomically(|ledger| {
            let mut accepted = HashSet::new();
            let mut stored = Vec::new();
            let mut results = Vec::with_capacity(encoded.len());
            for (bytes, decoded) in encoded.into_iter().zip(decoded) {
                let outcome = match decoded {
                    Err(e) => Err(EntryRefusal::Decode(e)),
                    Ok((e, id)) => ledger.take(
                        view,
                        &mut lookups,
                        e,
                        id,
                        bytes,
                        signatures_ok,
                        &mut accepted,
                        &mut stored,
                    )?,
                };
                results.push(outcome);
            }
            ledger.release_pending(view, &mut lookups, &mut accepted, &mut stored)?;
            if !gate() {
                return Err(Gated::Unverified);
            }
            Ok((results, stored))
        });
        self.lookups = lookups;
        done
    }

    /// Judges one entry of a peer's call, and folds it when it is valid and
    /// complete, or parks it when it waits.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        view: &View<'_>,
        lookups: &mut Lookups,
        e: SignedEntry,
        id: EntryId,
        bytes: Vec<u8>,
        batch_ok: bool,
        accepted: &mut HashSet<EntryId>,
        stored: &mut Stored,
    ) -> Result<Result<Ingest, EntryRefusal>, LedgerError> {
        let origin = Origin::Peer {
            signature_checked: batch_ok,
        };
        let judged = match self.judge(view, lookups, &e, &id, origin, accepted)? {
            Err(refusal) => return Ok(Err(refusal)),
            Ok(Verdict::Known) => return Ok(Ok(Ingest::Known(id))),
            Ok(Verdict::Waits) => None,
            Ok(Verdict::Ready(judged)) => Some(judged),
        };
        match judged {
            Some(judged) if self.parents_known(&e, accepted)? => {
                self.fold.insert(id, &e, &bytes, judged, &view.beside())?;
                accepted.insert(id);
                stored.push((id, bytes.into()));
                Ok(Ok(Ingest::Stored(id)))
            }
            // Only entries valid at their heads, or waiting for them, get
            // here, so a stranger cannot fill the pending set.
            _ => {
                let from_signer = self.pending_by_signer.entry(e.entry.signer).or_insert(0);
                if self.pending.len() >= MAX_PENDING || *from_signer >= MAX_PENDING_PER_SIGNER {
                    return Ok(Err(EntryRefusal::PendingFull));
                }
                *from_signer += 1;
                self.pending.insert(id, e);
                Ok(Ok(Ingest::Pending(id)))
            }
        }
    }

    /// Folds the waiting entries that are complete now, and then those that
    /// complete in turn, parents first. Each waiting entry is looked at once,
    /// and again only when one of its parents is folded, so a long chain
    /// that arrived children first costs linear time, not quadratic. Appends
    /// what it folds to `stored`.
    fn release_pending(
        &mut self,
        view: &View<'_>,
        lookups: &mut Lookups,
        accepted: &mut HashSet<EntryId>,
        stored: &mut Stored,
    ) -> Result<(), LedgerError> {
        let mut children: HashMap<EntryId, Vec<EntryId>> = HashMap::new();
        for (id, e) in &self.pending {
            for p in &e.entry.parents {
                children.entry(*p).or_default().push(*id);
            }
        }
        let mut queue: Vec<EntryId> = self.pending.keys().copied().collect();
        while let Some(id) = queue.pop() {
            let Some(e) = self.pending.get(&id) else {
                continue;
            };
            let heads_known = heads_of(&e.entry)
                .iter()
                .all(|h| view.doc.get_change_meta_by_hash(h).is_some());
            if !heads_known || !self.parents_known(e, accepted)? {
                continue;
            }
            let Some(e) = self.pending.remove(&id) else {
                continue;
            };
            if let Some(n) = self.pending_by_signer.get_mut(&e.entry.signer) {
                *n -= 1;
                if *n == 0 {
                    self.pending_by_signer.remove(&e.entry.signer);
                }
            }
            // Its signature passed when it arrived.
            if let Ok(Some(judged)) = check_state(view.doc, &e, lookups) {
                let bytes = e.encode()?;
                self.fold.insert(id, &e, &bytes, judged, &view.beside())?;
                accepted.insert(id);
                stored.push((id, bytes.into()));
                if let Some(kids) = children.get(&id) {
                    queue.extend(kids.iter().copied());
                }
            }
        }
        Ok(())
    }

    /// An unsigned entry by `author` through key `signer`, with `body`, on
    /// the ledger heads and co-op heads as they stand: it lands at the end
    /// of the order. A transfer's postings are put in order, and from the
    /// member's first grant in a unit on, its keys other than the DID key
    /// (or the key it rotated to) spend that unit from their allowances.
    fn draft(
        &self,
        view: &View<'_>,
        lookups: &mut Lookups,
        draft: &Draft,
    ) -> Result<Entry, LedgerError> {
        let mut body = draft.body.clone();
        let owner = draft.delegation.is_none()
            && lookups.holder_now(view.doc, &draft.author) == Some(draft.signer);
        if let Body::Transfer {
            postings,
            from_allowance,
        } = &mut body
        {
            icn_schemas::ledger::sort_postings(postings);
            let mut granted = false;
            for p in postings.iter() {
                if p.account == icn_schemas::ledger::Account::Member(draft.author) && p.amount < 0 {
                    granted |= self.fold.has_grants(&draft.author, &p.unit)?;
                }
            }
            *from_allowance = !owner && granted;
        }
        Ok(Entry {
            coop: self.coop,
            parents: self.fold.heads()?,
            author: draft.author,
            signer: draft.signer,
            timestamp: draft.timestamp,
            coop_heads: view.doc.get_heads().iter().map(|h| h.0).collect(),
            body,
            memo: draft.memo.clone(),
            decision: draft.decision,
            delegation: draft.delegation.clone(),
        })
    }

    /// Records local writes in turn, each drafted on the heads the one
    /// before it left (so each lands at the end of the order), signed with
    /// its key, judged as a peer's entry would be, and folded. A write that
    /// breaks a rule, or would not count where it lands, is refused and
    /// leaves nothing behind; the others are committed together, in one
    /// batch. The co-op document is locked to draft and to judge, not to
    /// sign. The caller makes the writes durable.
    pub(crate) fn record(
        &mut self,
        doc: &impl CoopDoc,
        decisions: &dyn Decisions,
        writes: &[(&Draft, &Keypair)],
    ) -> Vec<Recorded> {
        let mut lookups = self.take_lookups();
        let mut results = Vec::with_capacity(writes.len());
        for (draft, key) in writes {
            let mark = self.fold.mark();
            let recorded = self.record_one(doc, decisions, &mut lookups, draft, key);
            if recorded.is_err() {
                self.fold.rollback(mark);
            }
            results.push(recorded);
        }
        self.lookups = lookups;
        if let Err(e) = self.commit() {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone().into());
            }
        }
        results
    }

    fn record_one(
        &mut self,
        doc: &impl CoopDoc,
        decisions: &dyn Decisions,
        lookups: &mut Lookups,
        draft: &Draft,
        key: &Keypair,
    ) -> Recorded {
        let entry = doc.read(|doc| self.draft(&View { doc, decisions }, lookups, draft))?;
        let signature = key.sign(&entry.signing_message()?);
        doc.read(|doc| {
            let view = View { doc, decisions };
            let heads = doc.get_heads();
            let current = entry.coop_heads.len() == heads.len()
                && entry.coop_heads.iter().zip(&heads).all(|(a, b)| *a == b.0);
            let signed = if current {
                SignedEntry { entry, signature }
            } else {
                // The co-op document moved while it was signed: drafted
                // again and signed here, so the entry is judged by the
                // document as it stands. (The ledger's heads cannot move:
                // its lock is held.)
                let entry = self.draft(&view, lookups, draft)?;
                SignedEntry {
                    signature: key.sign(&entry.signing_message()?),
                    entry,
                }
            };
            let bytes = signed.encode()?;
            let id = EntryId(*blake3::hash(&bytes).as_bytes());
            let judged = self.judge_local(&view, lookups, &signed, &id)?;
            match self
                .fold
                .insert(id, &signed, &bytes, judged, &view.beside())?
            {
                Status::Applied => Ok((id, bytes)),
                // It lands at the end, so this is what it would be.
                Status::Conflicted { conflict } => Err(LedgerError::Conflict(conflict)),
            }
        })
    }

    /// Takes one entry a client signed and submitted: judged as a peer's
    /// would be, then, when its parents and cited heads are all here,
    /// folded and refused (nothing stored) if it comes out conflicted, as a
    /// local write is. The caller makes it durable.
    pub(crate) fn submit(
        &mut self,
        view: &View<'_>,
        batch: Batch,
    ) -> Result<Submitted, LedgerError> {
        let Batch {
            mut encoded,
            mut decoded,
            signatures_ok,
        } = batch;
        let (Some(bytes), Some(decoded)) = (encoded.pop(), decoded.pop()) else {
            return Err(LedgerError::Refused(EntryRefusal::Decode(
                DecodeError::Truncated,
            )));
        };
        let (e, id) = decoded.map_err(|d| LedgerError::Refused(EntryRefusal::Decode(d)))?;
        let mut lookups = self.take_lookups();
        let origin = Origin::Peer {
            signature_checked: signatures_ok,
        };
        let judged = self.judge(view, &mut lookups, &e, &id, origin, &HashSet::new());
        self.lookups = lookups;
        let judged = match judged? {
            Err(refusal) => return Err(refusal.into()),
            Ok(Verdict::Known) => return Ok(Submitted::Known(id)),
            Ok(Verdict::Waits) => return Ok(Submitted::Waits),
            Ok(Verdict::Ready(judged)) => judged,
        };
        if !self.parents_known(&e, &HashSet::new())? {
            return Ok(Submitted::Waits);
        }
        self.atomically(|ledger| {
            match ledger.fold.insert(id, &e, &bytes, judged, &view.beside())? {
                Status::Applied => Ok(()),
                Status::Conflicted { conflict } => Err(LedgerError::Conflict(conflict)),
            }
        })?;
        Ok(Submitted::Stored(id, bytes))
    }

    /// Folds again from the first entry citing one of `receipts`, whose
    /// closes changed, and commits it.
    pub(crate) fn refold_decisions(
        &mut self,
        receipts: &[[u8; 32]],
        outside: &dyn Outside,
    ) -> Result<(), LedgerError> {
        self.atomically(|ledger| Ok(ledger.fold.refold_decisions(receipts, outside)?))
    }
}

/// What a local entry is made of, besides the heads it is drafted on.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    /// The member.
    pub(crate) author: Did,
    /// The key that signs: the member's device, or a node it delegated to.
    pub(crate) signer: Did,
    /// The member's delegation to `signer`, when it is a node.
    pub(crate) delegation: Option<SignedDelegation>,
    /// What the entry does.
    pub(crate) body: Body,
    /// Free text.
    pub(crate) memo: String,
    /// The decision receipt it executes.
    pub(crate) decision: Option<[u8; 32]>,
    /// Milliseconds since the epoch.
    pub(crate) timestamp: u64,
}

/// Entries from a peer, decoded, with their signatures checked in one batch
/// check: what needs neither the ledger nor the co-op document, done before
/// either is locked ([`Batch::check`]), or, for a large batch, on another
/// thread while the ledger judges it ([`Ledger::ingest_verifying`]).
pub(crate) struct Batch {
    encoded: Vec<Vec<u8>>,
    decoded: Vec<Result<(SignedEntry, EntryId), DecodeError>>,
    /// Whether every signature (of the entries that decode) verified; if
    /// not, each entry is checked on its own to find which.
    signatures_ok: bool,
}

impl Batch {
    /// Decodes `encoded` and checks their signatures together.
    pub(crate) fn check(encoded: Vec<Vec<u8>>) -> Batch {
        let mut batch = Batch::decode(encoded);
        batch.signatures_ok = verify(&batch.signatures());
        batch
    }

    /// Decodes `encoded`; its signatures are not checked
    /// (`signatures_ok` false, so each is checked when judged, unless
    /// [`Ledger::ingest_verifying`] is told they verified).
    pub(crate) fn decode(encoded: Vec<Vec<u8>>) -> Batch {
        let decoded = encoded.iter().map(|b| SignedEntry::decode(b)).collect();
        Batch {
            encoded,
            decoded,
            signatures_ok: false,
        }
    }

    /// This batch, its signatures checked together (`ok`: whether they
    /// all verified).
    pub(crate) fn verified(self, ok: bool) -> Batch {
        Batch {
            signatures_ok: ok,
            ..self
        }
    }

    /// The signer, signed message and signature of each entry that
    /// decodes, owned, so another thread can check them while the batch is
    /// judged. Read from the bytes: a decoded entry is canonical, so its
    /// unsigned encoding is its bytes less the signature.
    pub(crate) fn signatures(&self) -> Signatures {
        self.decoded
            .iter()
            .zip(&self.encoded)
            .filter_map(|(d, bytes)| {
                let (e, _) = d.as_ref().ok()?;
                Some((
                    e.entry.signer,
                    SignedEntry::signing_message_of(bytes)?,
                    e.signature,
                ))
            })
            .collect()
    }
}

/// Signatures of a [`Batch`] to check: signer, message, signature.
pub(crate) type Signatures = Vec<(Did, [u8; 32], [u8; 64])>;

/// Whether every one of `signatures` verifies (and there is one).
pub(crate) fn verify(signatures: &Signatures) -> bool {
    let signed: Vec<identity::SignedMessage<'_>> = signatures
        .iter()
        .map(|(did, message, signature)| identity::SignedMessage {
            did,
            message,
            signature,
        })
        .collect();
    !signed.is_empty() && identity::verify_batch(&signed)
}

/// Most waiting entries [`Ledger::ingest_verifying`] copies to put back if
/// a batch's signatures fail; with more it checks them before judging.
const COPY_WAITING_MAX: usize = 1024;

/// Why a gated ingest ([`Ledger::ingest_verifying`]) did not commit.
enum Gated {
    Ledger(LedgerError),
    /// The batch's signatures did not all verify.
    Unverified,
}

impl From<LedgerError> for Gated {
    fn from(e: LedgerError) -> Self {
        Gated::Ledger(e)
    }
}

impl From<StorageError> for Gated {
    fn from(e: StorageError) -> Self {
        Gated::Ledger(e.into())
    }
}
