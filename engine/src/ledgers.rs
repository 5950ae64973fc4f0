//! The engine's ledger commands and queries, over one [`Ledger`] per co-op.
//!
//! Each co-op's ledger has its own lock, so co-ops never wait for each
//! other. Lock order: a ledger, then its co-op document, then (to read
//! decisions) domain documents.
//!
//! **Local writes combine.** A writer resolves its member and builds its
//! entry's body under the co-op document's lock alone, then queues the
//! write and takes the ledger's lock. Whoever holds that lock and finds its
//! own write still queued records *every* queued write: each drafted on the
//! heads the one before it left, signed, judged and folded in turn, then
//! all committed in one sled batch; the writers behind it find theirs done
//! when the lock comes to them (flat combining). Under contention one lock
//! holder thus does the work of many, each entry is drafted and signed
//! once, and rows that several entries of the group rewrite (the heads, the
//! count, the balances) are written once. An entry this node writes still
//! always lands at the end of the order, so a member is told at once if it
//! would not count. The sync to disk happens after the lock is released,
//! shared by every writer that queued behind the last one (group commit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use automerge::{Automerge, ChangeHash};
use icn_schemas::coop;
use icn_schemas::ledger::{Account, Body, EntryId, Posting, Sealed, SignedEntry};
use icn_schemas::{Did, DocId, DocKind, Reader};

use crate::Engine;
use crate::authority::Denied;
use crate::engine::{Committed, DocState};
use crate::identity::{self, Keypair, Signer};
use crate::ledger::decisions::{DocDecisions, counted_decisions, execution_body};
use crate::ledger::fold::Beside;
use crate::ledger::pipeline::{self, Batch, CoopDoc, Draft, Ledger, Recorded, Submitted, View};
use crate::ledger::queries::{Published, limits_of};
use crate::ledger::{
    Convert, EntryRefusal, HistoryItem, HistoryPage, Ingest, LedgerError, Settle, Status,
    TrialBalance, UnitPosition,
};
use crate::storage::{StorageError, Store};

/// Batches of at least this many entries have their signatures checked on
/// a second thread while the ledger judges them (as documents' are,
/// `validate.rs`); smaller ones before the ledger is locked.
const VERIFY_ASIDE: usize = 64;

/// Every co-op's ledger, each behind its own lock.
#[derive(Default)]
pub(crate) struct Ledgers {
    by_coop: RwLock<HashMap<DocId, Arc<CoopLedger>>>,
}

/// One co-op's ledger, and the local writes waiting for it.
pub(crate) struct CoopLedger {
    ledger: Mutex<Ledger>,
    /// Local writes for the next holder of `ledger` to record, together.
    queue: Mutex<Vec<Arc<Write>>>,
    /// Whose device each key that wrote is, as the co-op document stands.
    owners: Mutex<Owners>,
    /// What queries of committed rows read under ([`Ledger::published`]).
    published: Arc<RwLock<()>>,
}

impl CoopLedger {
    fn new(ledger: Ledger) -> Arc<Self> {
        Arc::new(CoopLedger {
            published: ledger.published(),
            ledger: Mutex::new(ledger),
            queue: Mutex::new(Vec::new()),
            owners: Mutex::new(Owners::default()),
        })
    }
}

/// The members whose live devices keys are, read from the co-op document
/// at `heads` and kept until the document moves (at most
/// [`Owners::KEPT`]): a key writing again costs no read of the document.
#[derive(Default)]
struct Owners {
    heads: Vec<ChangeHash>,
    of: HashMap<Did, Option<Did>>,
}

impl Owners {
    const KEPT: usize = 4096;

    /// The member for whom `device` is a live device in `doc` as it stands.
    fn owner(&mut self, doc: &Automerge, device: &Did) -> Option<Did> {
        let heads = doc.get_heads();
        if heads != self.heads || self.of.len() >= Self::KEPT {
            self.heads = heads;
            self.of.clear();
        }
        *self
            .of
            .entry(*device)
            .or_insert_with(|| coop::device_owner(Reader::now(doc), device).map(|s| s.did))
    }
}

/// A local write waiting to be recorded, and then what became of it.
struct Write {
    draft: Draft,
    signer: Signer,
    done: Mutex<Option<Recorded>>,
}

impl Ledgers {
    /// The ledgers opened when the engine starts.
    pub(crate) fn new(opened: Vec<Ledger>) -> Self {
        let by_coop = opened
            .into_iter()
            .map(|l| (l.coop(), CoopLedger::new(l)))
            .collect();
        Ledgers {
            by_coop: RwLock::new(by_coop),
        }
    }

    fn get(&self, coop: &DocId) -> Option<Arc<CoopLedger>> {
        self.by_coop
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(coop)
            .cloned()
    }

    /// The ledger of `coop`, opened now if it is new here.
    fn get_or_open(&self, coop: &DocId, store: &Store) -> Arc<CoopLedger> {
        self.by_coop
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(*coop)
            .or_insert_with(|| CoopLedger::new(Ledger::open(*coop, store)))
            .clone()
    }

    fn coops(&self) -> Vec<DocId> {
        self.by_coop
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

/// A co-op document's state behind its lock.
struct Locked<'a>(&'a Mutex<DocState>);

impl CoopDoc for Locked<'_> {
    fn read<T>(&self, f: impl FnOnce(&Automerge) -> T) -> T {
        f(&lock(self.0).doc)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Engine {
    /// The ledger of co-op `coop`.
    fn ledger(&self, coop: &DocId) -> Result<Arc<CoopLedger>, LedgerError> {
        if let Some(ledger) = self.ledgers().get(coop) {
            return Ok(ledger);
        }
        if self.kind(coop) != Some(DocKind::Coop) {
            return Err(LedgerError::UnknownCoop(*coop));
        }
        Ok(self.ledgers().get_or_open(coop, self.store()))
    }

    /// Runs `f` on `coop`'s ledger and co-op document, both locked.
    fn with_ledger<T>(
        &self,
        coop: &DocId,
        f: impl FnOnce(&mut Ledger, &Automerge) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let ledger = self.ledger(coop)?;
        let handle = self.handle(coop).ok_or(LedgerError::UnknownCoop(*coop))?;
        let mut ledger = lock(&ledger.ledger);
        let doc = lock(&handle);
        f(&mut ledger, &doc.doc)
    }

    /// Tells listeners of the entries of `coop` whose status changed in
    /// what was just made durable.
    fn notify_statuses(&self, coop: &DocId) -> Result<(), LedgerError> {
        let ledger = self.ledger(coop)?;
        let changed = lock(&ledger.ledger).take_changed();
        if !changed.is_empty() {
            self.notify(Committed::Statuses {
                coop: *coop,
                changed,
            });
        }
        Ok(())
    }

    /// Runs `f` on `coop`'s ledger alone, locked.
    fn with_fold<T>(
        &self,
        coop: &DocId,
        f: impl FnOnce(&Ledger) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let ledger = self.ledger(coop)?;
        let ledger = lock(&ledger.ledger);
        f(&ledger)
    }

    /// Runs `f` on `coop`'s fold as committed, without the ledger's lock:
    /// it waits for no write but the application of a commit's batch.
    fn with_published<T>(
        &self,
        coop: &DocId,
        f: impl FnOnce(&Published) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let ledger = self.ledger(coop)?;
        let _published = ledger.published.read().unwrap_or_else(|p| p.into_inner());
        f(&Published::open(*coop, self.store()))
    }

    /// The decisions the fold of `coop`'s ledger reads, from the domain
    /// documents this node holds.
    fn decisions(&self, coop: DocId) -> DocDecisions<'_> {
        DocDecisions::new(coop, move |d| self.read(d, |r| counted_decisions(d, r)))
    }

    /// Folds again the ledgers whose decisions may have changed now that
    /// closes of `domain` changed: each co-op ledger refolds from its first
    /// entry citing one of `receipts` (those closes' receipts, before and
    /// after), if it has any.
    pub(crate) fn refold_decisions(
        &self,
        domain: &DocId,
        receipts: &[[u8; 32]],
    ) -> Result<(), LedgerError> {
        for coop in self.ledgers().coops() {
            if coop == *domain {
                continue;
            }
            let decisions = self.decisions(coop);
            self.with_ledger(&coop, |ledger, doc| {
                ledger.refold_decisions(
                    receipts,
                    &Beside {
                        doc,
                        decisions: &decisions,
                    },
                )
            })?;
        }
        self.store().make_durable()?;
        for coop in self.ledgers().coops() {
            self.notify_statuses(&coop)?;
        }
        Ok(())
    }

    /// Executes accepted decision `proposal` of `domain` in `coop`'s
    /// ledger: a budget as an allocation from the treasury to its recipient,
    /// a freeze or unfreeze as that entry, citing the decision's receipt.
    /// Any active member may record it; the fold counts one execution per
    /// decision, the first in its order.
    pub fn execute_decision(
        &self,
        coop: &DocId,
        signer: &Signer,
        domain: &DocId,
        proposal: &str,
    ) -> Result<(EntryId, Status), LedgerError> {
        let receipt = self
            .receipt(domain, proposal)
            .ok_or_else(|| LedgerError::NotClosed(proposal.to_owned()))?;
        let hash = receipt.hash();
        let body = self
            .read(domain, |r| counted_decisions(domain, r))
            .and_then(|mut d| d.remove(&hash))
            .and_then(|decision| execution_body(&decision.payload))
            .ok_or_else(|| LedgerError::NotExecutable(proposal.to_owned()))?;
        self.record(coop, signer, "decision", Some(hash), |_| Ok(body))
    }

    /// Validates entries from a peer (canonical encodings) and stores and
    /// folds the valid ones, durably, in one group. Entries whose parents or
    /// co-op heads are unknown wait; entries that break a rule are refused,
    /// each on its own, and never stored.
    pub fn ingest_entries(
        &self,
        coop: &DocId,
        encoded: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Ingest, EntryRefusal>>, LedgerError> {
        // A co-op not held here costs no signature checks.
        self.ledger(coop)?;
        // Decoding needs neither lock.
        let batch = Batch::decode(encoded);
        let signatures = batch.signatures();
        let decisions = self.decisions(*coop);
        let (results, stored) = if signatures.len() >= VERIFY_ASIDE {
            // A large batch's signatures are checked on another thread
            // while this one judges it; nothing is committed unless they
            // all verified.
            std::thread::scope(|s| {
                let aside = s.spawn(|| pipeline::verify(&signatures));
                self.with_ledger(coop, |ledger, doc| {
                    let view = View {
                        doc,
                        decisions: &decisions,
                    };
                    ledger.ingest_verifying(&view, batch, || aside.join().unwrap_or(false))
                })
            })?
        } else {
            // A few are checked before either lock is taken.
            let batch = batch.verified(pipeline::verify(&signatures));
            self.with_ledger(coop, |ledger, doc| {
                let view = View {
                    doc,
                    decisions: &decisions,
                };
                ledger.ingest(&view, batch)
            })?
        };
        // Entries released from the pending set count too.
        if !stored.is_empty() {
            self.store().make_durable()?;
            self.notify(Committed::Entries {
                coop: *coop,
                entries: stored,
            });
            self.notify_statuses(coop)?;
        }
        Ok(results)
    }

    /// Takes one entry a client signed itself (its canonical encoding):
    /// judged exactly as a peer's entry, and, like a local write, refused
    /// with nothing stored if it would be conflicted where it lands. An
    /// entry citing parents or co-op heads not held here waits, as a peer's
    /// does (`Ingest::Pending`).
    pub fn submit_entry(&self, coop: &DocId, encoded: Vec<u8>) -> Result<Ingest, LedgerError> {
        self.ledger(coop)?;
        let batch = Batch::check(vec![encoded.clone()]);
        let decisions = self.decisions(*coop);
        let taken = self.with_ledger(coop, |ledger, doc| {
            let view = View {
                doc,
                decisions: &decisions,
            };
            ledger.submit(&view, batch)
        })?;
        match taken {
            Submitted::Known(id) => Ok(Ingest::Known(id)),
            Submitted::Stored(id, bytes) => {
                self.store().make_durable()?;
                self.notify(Committed::Entries {
                    coop: *coop,
                    entries: vec![(id, bytes.into())],
                });
                self.notify_statuses(coop)?;
                // Entries waiting for this one may be complete now.
                self.ingest_entries(coop, Vec::new())?;
                Ok(Ingest::Stored(id))
            }
            Submitted::Waits => self
                .ingest_entries(coop, vec![encoded])?
                .pop()
                .ok_or(LedgerError::Refused(EntryRefusal::Decode(
                    icn_schemas::ledger::DecodeError::Truncated,
                )))?
                .map_err(LedgerError::Refused),
        }
    }

    /// Records a settlement by the signer's member: validated exactly as a
    /// peer would validate it, refused if it would exceed the member's credit
    /// limit now, then stored durably and folded.
    pub fn settle(
        &self,
        coop: &DocId,
        signer: &Signer,
        settle: &Settle,
    ) -> Result<(EntryId, Status), LedgerError> {
        if settle.amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        self.record(coop, signer, &settle.memo, None, |author| {
            settle_body(author, settle)
        })
    }

    /// [`Engine::settle`] without holding this thread through another
    /// thread's sync: judged, signed and applied before it returns (`Err`
    /// if it is refused, and then `then` is never called); `then` is told
    /// once the entry is durable (and its commit reported to listeners),
    /// possibly on another thread ([`Store::make_durable_then`]). For a
    /// caller that can wait without a thread: an async request handler.
    pub fn settle_then(
        &self,
        coop: &DocId,
        signer: &Signer,
        settle: &Settle,
        then: impl FnOnce(Result<(EntryId, Status), LedgerError>) + Send + 'static,
    ) -> Result<(), LedgerError> {
        if settle.amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        let (id, bytes, _) = self.record_staged(coop, signer, &settle.memo, None, |author| {
            settle_body(author, settle)
        })?;
        let (engine, coop) = (self.clone(), *coop);
        self.store().make_durable_then(move |durable| {
            then(durable.map_err(LedgerError::from).map(|()| {
                engine.notify(Committed::Entries {
                    coop,
                    entries: vec![(id, bytes.into())],
                });
                (id, Status::Applied)
            }))
        });
        Ok(())
    }

    /// Writes an entry with the body `body(author)` gives for the signer's
    /// member, citing decision receipt `decision` if any: drafted on the
    /// current heads, signed, judged exactly as a peer would judge it,
    /// refused if it would not count at the end of the order, then staged,
    /// folded and made durable, in a group with the local writes queued
    /// beside it.
    fn record(
        &self,
        coop: &DocId,
        signer: &Signer,
        memo: &str,
        decision: Option<[u8; 32]>,
        body: impl FnOnce(Did) -> Result<Body, LedgerError>,
    ) -> Result<(EntryId, Status), LedgerError> {
        let (id, bytes, moves_others) = self.record_staged(coop, signer, memo, decision, body)?;
        // Made durable after the ledger's lock is released, so concurrent
        // writers share one sync.
        self.store().make_durable()?;
        self.notify(Committed::Entries {
            coop: *coop,
            entries: vec![(id, bytes.into())],
        });
        if moves_others {
            self.notify_statuses(coop)?;
        }
        Ok((id, Status::Applied))
    }

    /// [`Engine::record`] up to the entry applied, not yet durable: its id,
    /// its encoding, and whether it may change other entries' statuses (a
    /// grant, a seal or a freeze placed among earlier entries; any other
    /// local write lands after every entry held).
    fn record_staged(
        &self,
        coop: &DocId,
        signer: &Signer,
        memo: &str,
        decision: Option<[u8; 32]>,
        body: impl FnOnce(Did) -> Result<Body, LedgerError>,
    ) -> Result<(EntryId, Vec<u8>, bool), LedgerError> {
        let shared = self.ledger(coop)?;
        let handle = self.handle(coop).ok_or(LedgerError::UnknownCoop(*coop))?;
        let key = signer.key();
        // The member a delegation names is known without the document.
        let delegated = signer
            .delegation()
            .map(|d| identity::verify_delegation(d).map_err(EntryRefusal::BadDelegation))
            .transpose()?;
        let author = match &delegated {
            Some(d) => d.member,
            None => {
                let doc = lock(&handle);
                lock(&shared.owners)
                    .owner(&doc.doc, &key.did())
                    .ok_or(EntryRefusal::Denied(Denied::NotALiveDevice {
                        actor: key.did(),
                    }))?
            }
        };
        let write = Arc::new(Write {
            draft: Draft {
                author,
                signer: key.did(),
                delegation: signer.delegation().cloned(),
                body: body(author)?,
                memo: memo.to_owned(),
                decision,
                timestamp: now_millis(),
            },
            signer: signer.clone(),
            done: Mutex::new(None),
        });
        lock(&shared.queue).push(write.clone());
        let decisions = self.decisions(*coop);
        let recorded = {
            let mut ledger = lock(&shared.ledger);
            if let Some(done) = lock(&write.done).take() {
                done
            } else {
                // Still queued: this holder of the lock records the queue,
                // this write among it.
                let writes = std::mem::take(&mut *lock(&shared.queue));
                let inputs: Vec<(&Draft, &Keypair)> =
                    writes.iter().map(|w| (&w.draft, w.signer.key())).collect();
                let results = ledger.record(&Locked(&handle), &decisions, &inputs);
                for (w, result) in writes.iter().zip(results) {
                    *lock(&w.done) = Some(result);
                }
                // Only a holder that panicked while recording it (and so
                // never answered) can have taken this write from the queue.
                lock(&write.done).take().unwrap_or_else(|| {
                    Err(StorageError::Corrupt {
                        tree: crate::storage::layout::LEDGER,
                        reason: "a local write was lost by a writer that failed mid-group".into(),
                    }
                    .into())
                })
            }
        };
        let (id, bytes) = recorded?;
        let moves_others = matches!(
            write.draft.body,
            Body::Grant { .. } | Body::Seal { .. } | Body::Freeze { .. }
        );
        Ok((id, bytes, moves_others))
    }

    /// Records a cross-unit settlement: `amount` of `from_unit` from the
    /// signer's member to the treasury, and its value at the policy's rate in
    /// `to_unit` from the treasury to `to` (the member itself, for a plain
    /// conversion). Refused unless the rate gives a whole amount.
    pub fn convert(
        &self,
        coop: &DocId,
        signer: &Signer,
        convert: &Convert,
    ) -> Result<(EntryId, Status), LedgerError> {
        if convert.amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        let (num, den) = self
            .read(coop, |r| {
                coop::rate(r, &convert.from_unit, &convert.to_unit)
            })
            .ok_or(LedgerError::UnknownCoop(*coop))?
            .ok_or_else(|| LedgerError::NoRate {
                from: convert.from_unit.clone(),
                to: convert.to_unit.clone(),
            })?;
        let value = i128::from(convert.amount) * i128::from(num);
        if value % i128::from(den) != 0 {
            return Err(LedgerError::InexactConversion {
                amount: convert.amount,
                from: convert.from_unit.clone(),
                to: convert.to_unit.clone(),
            });
        }
        let received =
            i64::try_from(value / i128::from(den)).map_err(|_| LedgerError::AmountOverflow)?;
        self.record(coop, signer, &convert.memo, None, |author| {
            Ok(Body::Transfer {
                from_allowance: false,
                postings: vec![
                    Posting {
                        account: Account::Member(author),
                        unit: convert.from_unit.clone(),
                        amount: -convert.amount,
                    },
                    Posting {
                        account: Account::Treasury,
                        unit: convert.from_unit.clone(),
                        amount: convert.amount,
                    },
                    Posting {
                        account: Account::Treasury,
                        unit: convert.to_unit.clone(),
                        amount: -received,
                    },
                    Posting {
                        account: Account::Member(convert.to.unwrap_or(author)),
                        unit: convert.to_unit.clone(),
                        amount: received,
                    },
                ],
            })
        })
    }

    /// Freezes (or unfreezes) `account`: from this entry's place in the fold
    /// on, entries that touch the account are conflicted. The signer's member
    /// must be an admin.
    pub fn freeze(
        &self,
        coop: &DocId,
        signer: &Signer,
        account: &Did,
        frozen: bool,
    ) -> Result<(EntryId, Status), LedgerError> {
        let memo = if frozen { "freeze" } else { "unfreeze" };
        self.record(coop, signer, memo, None, |_| {
            Ok(Body::Freeze {
                account: *account,
                frozen,
            })
        })
    }

    /// Seals what `of` covers of `member`'s entries: nothing of it that is
    /// not in this entry's past counts, whatever it cites ("Seals" in
    /// `docs/ledger.md`). A key's seal is written with its revocation, a
    /// delegation's with a logout.
    pub fn seal(
        &self,
        coop: &DocId,
        signer: &Signer,
        member: &Did,
        of: Sealed,
    ) -> Result<(EntryId, Status), LedgerError> {
        self.record(coop, signer, "seal", None, |_| {
            Ok(Body::Seal {
                member: *member,
                of,
            })
        })
    }

    /// Sets `amount` of the signer's member's credit in `unit` aside for
    /// `device`, which then spends it without being conflicted by anything
    /// the member's other keys do concurrently. The signer must be the
    /// member's DID key, and the member must have that much room.
    pub fn grant_allowance(
        &self,
        coop: &DocId,
        signer: &Signer,
        device: &Did,
        unit: &str,
        amount: i64,
    ) -> Result<(EntryId, Status), LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        self.record(coop, signer, "allowance", None, |_| {
            Ok(Body::Grant {
                device: *device,
                unit: unit.to_owned(),
                amount,
            })
        })
    }

    /// Gives `amount` of the signer's unspent allowance in `unit` back to
    /// its member's general credit.
    pub fn release_allowance(
        &self,
        coop: &DocId,
        signer: &Signer,
        unit: &str,
        amount: i64,
    ) -> Result<(EntryId, Status), LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::NotPositive);
        }
        self.record(coop, signer, "release", None, |_| {
            Ok(Body::Release {
                unit: unit.to_owned(),
                amount,
            })
        })
    }

    /// A member's balance, credit limit and available amount in every unit
    /// of the co-op's policy.
    pub fn position(&self, coop: &DocId, member: &Did) -> Result<Vec<UnitPosition>, LedgerError> {
        // The document first, and then the rows: a commit may hold a
        // document's lock while it waits to apply its batch.
        let limits = self
            .read(coop, |r| limits_of(r, member))
            .ok_or(LedgerError::UnknownCoop(*coop))??;
        self.with_published(coop, |c| c.position(member, limits))
    }

    /// An entry and its status.
    pub fn entry(
        &self,
        coop: &DocId,
        id: &EntryId,
    ) -> Result<Option<(SignedEntry, Status)>, LedgerError> {
        self.with_published(coop, |c| c.entry(id))
    }

    /// The co-op's ledger heads.
    pub fn ledger_heads(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        self.with_published(coop, Published::heads)
    }

    /// Every entry's id, in fold order (parents first).
    pub fn entry_ids(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        self.with_published(coop, Published::entry_ids)
    }

    /// One entry's canonical encoding.
    pub fn entry_bytes(&self, coop: &DocId, id: &EntryId) -> Result<Option<Vec<u8>>, LedgerError> {
        self.with_published(coop, |c| c.entry_bytes(id))
    }

    /// Whether this node holds `id`, stored or waiting.
    pub fn has_entry(&self, coop: &DocId, id: &EntryId) -> Result<bool, LedgerError> {
        self.with_fold(coop, |ledger| ledger.has_entry(id))
    }

    /// How many entries from peers wait here for co-op heads or parents
    /// this node does not hold yet (kept in memory, not stored).
    pub fn pending_entries(&self, coop: &DocId) -> Result<usize, LedgerError> {
        self.with_fold(coop, |ledger| Ok(ledger.pending().len()))
    }

    /// The parents that waiting entries name and this node does not hold:
    /// what to ask peers for.
    pub fn missing_parents(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        self.with_fold(coop, Ledger::missing_parents)
    }

    /// Every entry, encoded, in fold order (parents first).
    pub fn entries(&self, coop: &DocId) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.with_published(coop, Published::entries)
    }

    /// A trial balance: every non-zero account balance, and the sum per unit
    /// (always zero).
    pub fn trial_balance(&self, coop: &DocId) -> Result<TrialBalance, LedgerError> {
        self.with_published(coop, Published::trial_balance)
    }

    /// The trial balance of the ledger as it stood at `heads`: the entries
    /// those heads name and their ancestors, folded alone.
    pub fn trial_balance_at(
        &self,
        coop: &DocId,
        heads: &[EntryId],
    ) -> Result<TrialBalance, LedgerError> {
        let decisions = self.decisions(*coop);
        self.with_ledger(coop, |ledger, doc| {
            ledger.trial_balance_at(
                heads,
                &Beside {
                    doc,
                    decisions: &decisions,
                },
            )
        })
    }

    /// The entries that touch `account`, in fold order, `limit` at a time
    /// (1 to [`crate::ledger::MAX_PAGE`]): the page after the entry `after`,
    /// and the cursor of the next page. Fold order is the same on every
    /// replica; an entry that arrives late with an earlier place shows up
    /// when paging again.
    pub fn history(
        &self,
        coop: &DocId,
        account: Account,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<HistoryPage, LedgerError> {
        self.with_published(coop, |c| c.history(account, after, limit))
    }

    /// The entries that cite decision receipt `decision`, in fold order.
    pub fn entries_by_decision(
        &self,
        coop: &DocId,
        decision: &[u8; 32],
    ) -> Result<Vec<HistoryItem>, LedgerError> {
        self.with_published(coop, |c| c.entries_by_decision(decision))
    }
}

/// A settlement's body: `settle.amount` from `author` to `settle.to`.
fn settle_body(author: Did, settle: &Settle) -> Result<Body, LedgerError> {
    if author == settle.to {
        return Err(LedgerError::SelfSettlement);
    }
    Ok(Body::Transfer {
        postings: vec![
            Posting {
                account: Account::Member(author),
                unit: settle.unit.clone(),
                amount: -settle.amount,
            },
            Posting {
                account: Account::Member(settle.to),
                unit: settle.unit.clone(),
                amount: settle.amount,
            },
        ],
        from_allowance: false,
    })
}
