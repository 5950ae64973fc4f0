//! Balances as a deterministic fold over the entry DAG.
//!
//! Entries are folded in the order of `(depth, entry id)`, where an entry's
//! depth is one more than its deepest parent's (0 without parents). That is a
//! topological order, so parents always come first, and ties are broken by
//! id. Every replica holding the same entries therefore folds them in the same
//! order. The fold lives in the `ledger` tree next to the entries
//! ([`crate::storage::layout`]), so a node that starts reads none of it.
//! Inserting an entry never reorders the others: it only finds its
//! own place. An entry that extends the current heads lands at the end and
//! costs O(its postings). One that lands earlier unwinds the entries after its
//! place, then folds itself and them again.
//!
//! At its place in the order, an entry that would take a debited member
//! account below minus its credit limit, overflow any balance, or touch an
//! account frozen by an earlier freeze entry is kept and marked
//! *conflicted*: it does not count. Applied entries each sum to zero per
//! unit, so the balances of each unit always sum to zero.
//!
//! **Allowances** (bounded offline credit, `docs/ledger.md`). A member's DID
//! key may set part of its credit aside for a device; the device then
//! spends from it without looking at the member's balance, so nothing
//! another key of the member writes concurrently can conflict it. The fold
//! keeps each device's unspent allowance and their sum, the *reserved*
//! amount, and a general debit must leave the reserved amount untouched:
//! `balance − reserved ≥ −limit`. A grant needs the same room. From a
//! member's first grant in a unit on, a general debit of that unit signed by
//! any key but the DID key is conflicted unless every grant of the unit has
//! it in its past: only the DID key spends general credit concurrently with
//! a grant. Whether a grant has an entry in its past is fixed when the grant
//! arrives (its ancestors are all here by then), so a grant that arrives
//! late refolds from the first such debit it does not descend from.
//!
//! The fold is split by concern: [`keys`] (key parts and value codecs),
//! [`reads`] (what it answers), [`effects`] (what an entry does to balances
//! and allowances, and whether it may), [`decision`] (entries executing
//! decisions), [`seals`] (revocations, removals and freezes that backdating
//! cannot escape) and [`conflict`] (why an entry does not count, and how
//! that is stored). This file places entries in the order and folds them.

mod conflict;
mod decision;
mod effects;
mod keys;
mod reads;
mod seals;

use icn_schemas::DocId;
use icn_schemas::domain::Payload;
use icn_schemas::ledger::{Account, Body, EntryId, Sealed, SignedEntry};

pub use conflict::{Conflict, Status};
use effects::{allowance_deltas, general_debits_by_others};
use keys::{corrupt, order_value, place, place_of, unit_part};
use reads::status_of;

use super::rows::Rows;
use crate::storage::StorageError;
use crate::storage::layout::{GrantRow, OrderRow, ledger as tag};

/// Layout 3 indexes entries by author (`u` rows); a layout 2 `ledger` tree
/// gets them here, once, from its `o` rows. Writing a row twice is harmless,
/// so a migration cut short runs again whole.
pub(crate) fn index_authors(tree: &sled::Tree) -> Result<(), StorageError> {
    let mut batch = sled::Batch::default();
    for row in tree.iter() {
        let (k, v) = row?;
        if k.len() != 33 + 40 || k[32] != tag::ORDER {
            continue;
        }
        let (_, bytes) = keys::split_order_value(&v)?;
        let (signed, _) = SignedEntry::decode(bytes).map_err(corrupt)?;
        let mut key = Vec::with_capacity(33 + 32 + 40);
        key.extend_from_slice(&k[..32]);
        key.push(tag::BY_AUTHOR);
        key.extend_from_slice(signed.entry.author.as_bytes());
        key.extend_from_slice(&k[33..]);
        batch.insert(key, Vec::new());
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// What an accepted decision of a co-op's treasury domain decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The domain document.
    pub(crate) domain: DocId,
    /// The proposal within it.
    pub(crate) proposal: String,
    /// What it does.
    pub(crate) payload: Payload,
}

/// What the fold reads besides its own rows: the decisions entries cite
/// (domain documents) and the co-op document's history.
pub(crate) trait Outside {
    /// [`Decisions::decision`].
    fn decision(&self, domain: &DocId, receipt: &[u8; 32]) -> Option<Decision>;
    /// Whether co-op heads `later` have every change of `earlier` in their
    /// past (or among them). Both are held (entries are judged only once
    /// their cited heads are).
    fn descends(&self, later: &[[u8; 32]], earlier: &[[u8; 32]]) -> bool;
}

/// The co-op document's history, and the domain documents' decisions.
pub(crate) struct Beside<'a> {
    /// The co-op document.
    pub(crate) doc: &'a automerge::Automerge,
    /// Accepted decisions, by domain and receipt.
    pub(crate) decisions: &'a dyn Decisions,
}

impl Outside for Beside<'_> {
    fn decision(&self, domain: &DocId, receipt: &[u8; 32]) -> Option<Decision> {
        self.decisions.decision(domain, receipt)
    }

    fn descends(&self, later: &[[u8; 32]], earlier: &[[u8; 32]]) -> bool {
        if earlier.iter().all(|h| later.contains(h)) {
            return true;
        }
        let later: Vec<automerge::ChangeHash> =
            later.iter().map(|h| automerge::ChangeHash(*h)).collect();
        // The changes outside `later`'s past: few, for recent heads.
        let after: std::collections::HashSet<automerge::ChangeHash> = self
            .doc
            .get_changes_meta(&later)
            .iter()
            .map(|c| c.hash)
            .collect();
        earlier.iter().all(|h| {
            let h = automerge::ChangeHash(*h);
            !after.contains(&h) && self.doc.get_change_meta_by_hash(&h).is_some()
        })
    }
}

/// Where the fold finds the decisions entries cite: the domain documents.
pub(crate) trait Decisions {
    /// The decision whose receipt hash is `receipt`, when it is the counted,
    /// accepted close of a proposal in `domain`.
    fn decision(&self, domain: &DocId, receipt: &[u8; 32]) -> Option<Decision>;
}

/// What a judged entry carries into the fold besides itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Judged {
    /// Credit limits (member, limit) at its cited heads.
    pub(crate) limits: Vec<([u8; 32], i64)>,
    /// The co-op's treasury domain at its cited heads, for an entry citing
    /// a decision.
    pub(crate) treasury: Option<DocId>,
    /// Whether its signer held the author's DID key powers at its cited
    /// heads (the DID key, or the key it rotated to), writing directly.
    pub(crate) owner: bool,
}

/// What [`Fold::mark`] keeps besides the rows: how to come back to it.
pub(crate) struct Mark {
    last: Option<Option<(u64, EntryId)>>,
    changed: Vec<(EntryId, Status)>,
}

/// The fold of one co-op's entries, in the `ledger` tree: nothing of it is
/// rebuilt when a node starts. Writes go to an overlay until the ledger
/// commits them with the entries that caused them, in one atomic batch.
pub(crate) struct Fold {
    rows: Rows,
    /// The last place in the order, once read: most entries extend the
    /// heads and land after it, and then nothing needs unwinding.
    last: Option<Option<(u64, EntryId)>>,
    /// Entries held before whose status a refold changed, since the last
    /// [`Fold::take_changed`]: what apps are told happened after the fact.
    changed: Vec<(EntryId, Status)>,
    /// Whether the co-op may have seals (`S` rows), once looked up: most
    /// co-ops have none, and then no entry looks for the seals on its
    /// author and accounts (two scans each). Set when a seal is placed and
    /// never cleared, so a seal rolled back costs only the lookups.
    pub(super) any_seals: std::cell::Cell<Option<bool>>,
}

impl Fold {
    /// The co-op's stored fold.
    pub(crate) fn open(coop: DocId, tree: sled::Tree) -> Fold {
        Fold {
            rows: Rows::stored(coop, tree),
            last: None,
            changed: Vec::new(),
            any_seals: Default::default(),
        }
    }

    /// The rows written since the last commit, as one batch.
    pub(crate) fn take_batch(&mut self) -> Option<crate::storage::LedgerRows> {
        self.rows.take_batch()
    }

    /// A point to come back to: [`Fold::rollback`] forgets what was folded
    /// after it, and keeps what was folded before it for the next commit.
    pub(crate) fn mark(&mut self) -> Mark {
        self.rows.mark();
        Mark {
            last: self.last,
            changed: self.changed.clone(),
        }
    }

    /// Forgets what was folded since `mark`, the latest mark taken.
    pub(crate) fn rollback(&mut self, mark: Mark) {
        self.rows.rollback();
        self.last = mark.last;
        self.changed = mark.changed;
    }

    /// Forgets what was folded since the last commit.
    pub(crate) fn discard(&mut self) {
        self.rows.discard();
        self.last = None;
        self.changed.clear();
    }

    /// The entries held before whose status changed since the last call,
    /// each with its status now (committed: call it after a commit).
    pub(crate) fn take_changed(&mut self) -> Vec<(EntryId, Status)> {
        std::mem::take(&mut self.changed)
    }

    /// Folds again an entry held before, noting a change of its status.
    fn reapply(
        &mut self,
        depth: u64,
        id: &EntryId,
        outside: &dyn Outside,
    ) -> Result<(), StorageError> {
        let (row, bytes, stored) = self.placed(depth, id)?;
        let before = status_of(&row)?;
        let now = self.apply(depth, id, &stored, row, &bytes, outside)?;
        if now != before {
            self.changed.retain(|(e, _)| e != id);
            self.changed.push((*id, now));
        }
        Ok(())
    }

    fn last_place(&mut self) -> Result<Option<(u64, EntryId)>, StorageError> {
        if let Some(last) = self.last {
            return Ok(last);
        }
        let prefix = self.rows.key(tag::ORDER, &[]);
        let last = self
            .rows
            .last(prefix)?
            .map(|(k, _)| place_of(&k))
            .transpose()?;
        self.last = Some(last);
        Ok(last)
    }

    /// Adds an entry whose parents are all in the fold, with what it was
    /// judged by, and answers where it stands (applied, if it was held
    /// already).
    pub(crate) fn insert(
        &mut self,
        id: EntryId,
        signed: &SignedEntry,
        bytes: &[u8],
        judged: Judged,
        outside: &dyn Outside,
    ) -> Result<Status, StorageError> {
        let Judged {
            mut limits,
            treasury,
            owner,
        } = judged;
        if self.contains(&id)? {
            return Ok(Status::Applied);
        }
        let entry = &signed.entry;
        let mut depth = 0;
        for p in &entry.parents {
            if let Some(d) = self.depth(p)? {
                depth = depth.max(d + 1);
            }
            let head = self.rows.key(tag::HEAD, &[&p.0]);
            self.rows.delete(head)?;
        }
        let rows = &mut self.rows;
        rows.put(rows.key(tag::HEAD, &[&id.0]), Vec::new());
        rows.put(rows.key(tag::DEPTH, &[&id.0]), depth.to_be_bytes().to_vec());
        let count = self.len()? + 1;
        let rows = &mut self.rows;
        rows.put(rows.key(tag::COUNT, &[]), count.to_be_bytes().to_vec());
        let here = place(depth, &id);
        let mut accounts: Vec<[u8; 33]> = entry
            .postings()
            .iter()
            .map(|p| keys::account_key(&p.account))
            .collect();
        accounts.dedup();
        // An entry touching its author's account is found by author through
        // that account's `A` row: only the others get a `u` row (layout 3
        // wrote one for every entry; readers take both, `seals::covered`).
        let author_account = keys::account_key(&Account::Member(entry.author));
        if !accounts.contains(&author_account) {
            rows.put(
                rows.key(tag::BY_AUTHOR, &[entry.author.as_bytes(), &here]),
                Vec::new(),
            );
        }
        for account in accounts {
            rows.put(rows.key(tag::BY_ACCOUNT, &[&account, &here]), Vec::new());
        }
        if let Some(decision) = &entry.decision {
            rows.put(rows.key(tag::BY_DECISION, &[decision, &here]), Vec::new());
        }
        for unit in general_debits_by_others(entry, owner) {
            let key = rows.key(
                tag::OTHERS_DEBIT,
                &[entry.author.as_bytes(), &unit_part(&unit), &here],
            );
            rows.put(key, Vec::new());
        }
        let mut start = (depth, id);
        if let Body::Grant { unit, .. } = &entry.body {
            start = start.min(self.place_grant(id, &entry.parents, &entry.author, unit)?);
        }
        if let Some(subject) = seals::Subject::of(entry) {
            start = start.min(self.place_seal(id, depth, entry, subject, outside)?);
        }
        let last = self.last_place()?;
        let later = if last.is_none_or(|last| last < start) {
            Vec::new()
        } else {
            self.unwind_from(start)?
        };
        self.last = Some(Some(last.map_or((depth, id), |l| l.max((depth, id)))));
        limits.sort_unstable();
        let row = OrderRow {
            limits,
            treasury: treasury.map(|t| t.0),
            // Only an entry whose signer's powers its bytes do not tell
            // (since a rotation) records them.
            owner: (owner != OrderRow::signed_by_did_key(entry)).then_some(owner),
            ..OrderRow::default()
        };
        // Fold again from `start`: the entries after it, whose rows are
        // read once each, and the new one, whose row is written once.
        let mut status = Status::Applied;
        let mut refold = later;
        refold.push((depth, id));
        refold.sort_unstable();
        for (d, e) in refold {
            if e == id {
                status = self.apply(d, &e, signed, row.clone(), bytes, outside)?;
            } else {
                self.reapply(d, &e, outside)?;
            }
        }
        Ok(status)
    }

    /// Writes a grant's rows; returns the first place a general debit it
    /// does not descend from holds (from there the fold is redone, since
    /// such a debit may count no more), or the end.
    fn place_grant(
        &mut self,
        id: EntryId,
        parents: &[EntryId],
        member: &icn_schemas::Did,
        unit: &str,
    ) -> Result<(u64, EntryId), StorageError> {
        let mut start = (u64::MAX, id);
        let mut ancestors: Vec<[u8; 32]> = self
            .grant_ancestry(parents, member, unit)?
            .into_iter()
            .map(|e| e.0)
            .collect();
        ancestors.sort_unstable();
        let prefix = self
            .rows
            .key(tag::OTHERS_DEBIT, &[member.as_bytes(), &unit_part(unit)]);
        for row in self.rows.scan(prefix.clone(), prefix) {
            let (k, _) = row?;
            let (d, debit) = place_of(&k)?;
            if ancestors.binary_search(&debit.0).is_err() {
                start = (d, debit);
                break;
            }
        }
        let grant = GrantRow {
            member: *member.as_bytes(),
            unit: unit.to_owned(),
            ancestors,
        };
        let rows = &mut self.rows;
        rows.put(
            rows.key(tag::GRANT, &[&id.0]),
            postcard::to_stdvec(&grant).map_err(corrupt)?,
        );
        let by = rows.key(
            tag::GRANTS_BY,
            &[member.as_bytes(), &unit_part(unit), &id.0],
        );
        rows.put(by, Vec::new());
        Ok(start)
    }

    /// Unwinds every entry from `start` on, last first; returns their places.
    fn unwind_from(&mut self, start: (u64, EntryId)) -> Result<Vec<(u64, EntryId)>, StorageError> {
        let order = self.rows.key(tag::ORDER, &[]);
        let from = self.rows.key(tag::ORDER, &[&place(start.0, &start.1)]);
        let later: Vec<(u64, EntryId)> = self
            .rows
            .scan(order, from)
            .map(|r| r.and_then(|(k, _)| place_of(&k)))
            .collect::<Result<_, _>>()?;
        for (d, later_id) in later.iter().rev() {
            self.unapply(*d, later_id)?;
        }
        Ok(later)
    }

    /// Folds again from the first entry citing one of `receipts`, whose
    /// standing changed (a close was merged in a domain document). Entries
    /// before it are not touched.
    pub(crate) fn refold_decisions(
        &mut self,
        receipts: &[[u8; 32]],
        outside: &dyn Outside,
    ) -> Result<(), StorageError> {
        let mut start = None;
        for receipt in receipts {
            let prefix = self.rows.key(tag::BY_DECISION, &[receipt]);
            if let Some(first) = self.rows.scan(prefix.clone(), prefix).next() {
                let place = place_of(&first?.0)?;
                start = Some(start.map_or(place, |s: (u64, EntryId)| s.min(place)));
            }
        }
        let Some(start) = start else {
            return Ok(());
        };
        for (d, e) in self.unwind_from(start)? {
            self.reapply(d, &e, outside)?;
        }
        Ok(())
    }

    /// Folds the entry at `depth` (its `o` row `row`, its encoding `bytes`)
    /// at its place, writes its `o` row, and answers where it stands.
    fn apply(
        &mut self,
        depth: u64,
        id: &EntryId,
        signed: &SignedEntry,
        mut row: OrderRow,
        bytes: &[u8],
        outside: &dyn Outside,
    ) -> Result<Status, StorageError> {
        let conflicted_key = self.rows.key(tag::CONFLICTED, &[&place(depth, id)]);
        // The conflicted row exists exactly when the order row records a
        // conflict: only then is there one to delete. (A delete of a row
        // that is not there would still cost a write.)
        let was_conflicted = row.conflict.is_some();
        row.executed = None;
        let sealed = self.sealed_by(id, depth, &signed.entry, outside)?;
        let judged = match sealed {
            Some(seal) => Err(Conflict::Sealed {
                seal: hex::encode(seal.0),
            }),
            None => self.decision_check(signed, row.treasury, outside)?,
        };
        let outcome = match judged {
            Err(conflict) => Err(conflict),
            Ok(execution) => {
                if let Some(key) = &execution {
                    self.rows.put(key.clone(), id.0.to_vec());
                }
                row.executed = execution;
                self.fold_in(id, signed, &mut row)?
            }
        };
        match &outcome {
            Ok(()) => {
                row.conflict = None;
                if was_conflicted {
                    self.rows.delete(conflicted_key)?;
                }
            }
            Err(conflict) => {
                if let Some(key) = row.executed.take() {
                    self.rows.delete(key)?;
                }
                row.conflict = Some(conflict.encode());
                self.rows.put(conflicted_key, Vec::new());
            }
        }
        let key = self.rows.key(tag::ORDER, &[&place(depth, id)]);
        self.rows.put(key, order_value(&row, bytes)?);
        status_of(&row)
    }

    /// Applies what an entry does at its place, or answers why it may not.
    fn fold_in(
        &mut self,
        id: &EntryId,
        signed: &SignedEntry,
        row: &mut OrderRow,
    ) -> Result<Result<(), Conflict>, StorageError> {
        if let Body::Freeze { account, frozen } = signed.entry.body {
            let key = self.rows.key(tag::FROZEN, &[account.as_bytes()]);
            let before = self.rows.get(&key)?.is_some();
            if frozen {
                self.rows.put(key, Vec::new());
            } else {
                self.rows.delete(key)?;
            }
            row.frozen_before = Some(before);
            return Ok(Ok(()));
        }
        if let Body::Seal { member, of } = &signed.entry.body {
            if let Sealed::Key(key) = of {
                self.release_sealed(id, member, key)?;
            }
            return Ok(Ok(()));
        }
        match self.effects(id, signed, row)? {
            Ok(effects) => {
                for ((account, unit), after) in effects.balances {
                    let key = self.balance_key(&account, &unit);
                    self.set_amount(key, after)?;
                }
                self.move_allowances(&effects.allowances, true)?;
                Ok(Ok(()))
            }
            Err(conflict) => Ok(Err(conflict)),
        }
    }

    fn unapply(&mut self, depth: u64, id: &EntryId) -> Result<(), StorageError> {
        let (row, _, signed) = self.placed(depth, id)?;
        if row.conflict.is_some() {
            return Ok(());
        }
        if let Some(key) = &row.executed {
            self.rows.delete(key.clone())?;
        }
        if let Body::Seal { member, of } = &signed.entry.body {
            if let Sealed::Key(key) = of {
                self.restore(id, member, key)?;
            }
            return Ok(());
        }
        if let (Some(before), Body::Freeze { account, .. }) =
            (row.frozen_before, &signed.entry.body)
        {
            let key = self.rows.key(tag::FROZEN, &[account.as_bytes()]);
            if before {
                self.rows.put(key, Vec::new());
            } else {
                self.rows.delete(key)?;
            }
            return Ok(());
        }
        for p in signed.entry.postings() {
            let key = self.balance_key(&p.account, &p.unit);
            // It was added when applied, so taking it away cannot overflow.
            let before = self.amount(key.clone())? - p.amount;
            self.set_amount(key, before)?;
        }
        self.move_allowances(&allowance_deltas(&signed.entry), false)
    }
}
