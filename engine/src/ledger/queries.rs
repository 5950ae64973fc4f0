//! What a co-op's ledger answers: positions, entries, heads, histories,
//! trial balances. Every query reads the stored fold; none writes.
//!
//! Most read it as committed ([`Published`]), without the ledger's lock:
//! they wait for no write to be drafted, signed or judged, only for a
//! commit's batch to be applied, so that a query never sees half of one
//! (a trial balance always sums to zero).

use std::collections::HashSet;

use icn_schemas::ledger::{Account, EntryId, SignedEntry};
use icn_schemas::{Did, Reader, coop};

use super::api::{HistoryItem, HistoryPage, LedgerError, TrialBalance, UnitPosition};
use super::fold::{Fold, Outside, Status};
use super::pipeline::Ledger;
use crate::storage::{StorageError, Store};

/// Most entries on one page of a history.
pub const MAX_PAGE: usize = 500;

/// The units of the co-op's policy, each with `member`'s credit limit in
/// it, as the co-op document stands: what a position reads of the
/// document.
pub(crate) fn limits_of(r: Reader<'_>, member: &Did) -> Result<Vec<(String, i64)>, LedgerError> {
    let units = coop::Coop::read(r)?.policy.units;
    Ok(units
        .into_keys()
        .map(|unit| {
            let limit = coop::credit_limit_in(r, member, &unit);
            (unit, limit)
        })
        .collect())
}

/// A co-op's fold as committed, for queries: no write in progress shows.
/// The caller holds the co-op's published lock for reading while it reads
/// more than one row.
pub(crate) struct Published(Fold);

impl Published {
    /// The co-op's fold as stored.
    pub(crate) fn open(coop: icn_schemas::DocId, store: &Store) -> Self {
        Published(Fold::open(coop, store.ledger_tree().clone()))
    }

    fn fold(&self) -> &Fold {
        &self.0
    }

    /// A member's balance, credit limit and available amount in each of
    /// `limits`' units (from [`limits_of`]).
    pub(crate) fn position(
        &self,
        member: &Did,
        limits: Vec<(String, i64)>,
    ) -> Result<Vec<UnitPosition>, LedgerError> {
        let fold = self.fold();
        let mut positions = Vec::with_capacity(limits.len());
        for (unit, limit) in limits {
            let balance = fold.balance(Account::Member(*member), &unit)?;
            let reserved = fold.reserved(member, &unit)?;
            positions.push(UnitPosition {
                available: balance.saturating_add(limit).saturating_sub(reserved),
                allowances: fold.allowances(member, &unit)?,
                unit,
                balance,
                credit_limit: limit,
                reserved,
            });
        }
        Ok(positions)
    }

    /// An entry and its status.
    pub(crate) fn entry(&self, id: &EntryId) -> Result<Option<(SignedEntry, Status)>, LedgerError> {
        Ok(self.fold().entry_and_status(id)?)
    }

    /// The ledger's heads.
    pub(crate) fn heads(&self) -> Result<Vec<EntryId>, LedgerError> {
        Ok(self.fold().heads()?)
    }

    /// Every entry's id, in fold order (parents first).
    pub(crate) fn entry_ids(&self) -> Result<Vec<EntryId>, LedgerError> {
        Ok(self.fold().order().collect::<Result<Vec<_>, _>>()?)
    }

    /// One entry's canonical encoding.
    pub(crate) fn entry_bytes(&self, id: &EntryId) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self.fold().entry_bytes(id)?)
    }

    /// Every entry, encoded, in fold order (parents first).
    pub(crate) fn entries(&self) -> Result<Vec<Vec<u8>>, LedgerError> {
        Ok(self.fold().encodings().collect::<Result<Vec<_>, _>>()?)
    }

    /// A trial balance: every non-zero account balance, and the sum per
    /// unit (always zero).
    pub(crate) fn trial_balance(&self) -> Result<TrialBalance, LedgerError> {
        Ok(trial_balance_of(self.fold())?)
    }

    /// The entries that touch `account`, in fold order, `limit` at a time
    /// (1 to [`MAX_PAGE`]): the page after the entry `after`, and the
    /// cursor of the next page. Fold order is the same on every replica; an
    /// entry that arrives late with an earlier place shows up when paging
    /// again.
    pub(crate) fn history(
        &self,
        account: Account,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<HistoryPage, LedgerError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let fold = self.fold();
        if let Some(cursor) = &after
            && !fold.contains(cursor)?
        {
            return Err(LedgerError::UnknownCursor(*cursor));
        }
        let mut items = Vec::with_capacity(limit);
        let mut next_cursor = None;
        for id in fold.touching(&account, after.as_ref())? {
            let id = id?;
            if items.len() == limit {
                next_cursor = items.last().map(|i: &HistoryItem| i.id);
                break;
            }
            items.push(history_item(fold, &id)?);
        }
        Ok(HistoryPage { items, next_cursor })
    }

    /// The entries that cite decision receipt `decision`, in fold order.
    pub(crate) fn entries_by_decision(
        &self,
        decision: &[u8; 32],
    ) -> Result<Vec<HistoryItem>, LedgerError> {
        let fold = self.fold();
        fold.citing(decision)
            .map(|id| Ok(history_item(fold, &id?)?))
            .collect()
    }
}

impl Ledger {
    /// Whether this node holds `id`, stored or waiting.
    pub(crate) fn has_entry(&self, id: &EntryId) -> Result<bool, LedgerError> {
        Ok(self.pending().contains_key(id) || self.fold().contains(id)?)
    }

    /// The parents that waiting entries name and this node does not hold:
    /// what to ask peers for.
    pub(crate) fn missing_parents(&self) -> Result<Vec<EntryId>, LedgerError> {
        let mut missing = HashSet::new();
        for e in self.pending().values() {
            for p in &e.entry.parents {
                if !self.pending().contains_key(p) && !self.fold().contains(p)? {
                    missing.insert(*p);
                }
            }
        }
        Ok(missing.into_iter().collect())
    }

    /// The trial balance of the ledger as it stood at `heads`: the entries
    /// those heads name and their ancestors, folded alone.
    pub(crate) fn trial_balance_at(
        &self,
        heads: &[EntryId],
        outside: &dyn Outside,
    ) -> Result<TrialBalance, LedgerError> {
        for head in heads {
            if !self.fold().contains(head)? {
                return Err(LedgerError::UnknownHead(*head));
            }
        }
        let fold = self
            .fold()
            .at(heads, outside)?
            .ok_or_else(|| StorageError::Corrupt {
                tree: crate::storage::layout::LEDGER,
                reason: "an ancestor of a held entry is missing".into(),
            })?;
        Ok(trial_balance_of(&fold)?)
    }
}

fn history_item(fold: &Fold, id: &EntryId) -> Result<HistoryItem, StorageError> {
    let (entry, status) = fold
        .entry_and_status(id)?
        .ok_or_else(|| StorageError::Corrupt {
            tree: crate::storage::layout::LEDGER,
            reason: format!("indexed entry {id} is missing"),
        })?;
    Ok(HistoryItem {
        id: *id,
        entry: entry.entry,
        status,
    })
}

fn trial_balance_of(fold: &Fold) -> Result<TrialBalance, StorageError> {
    let accounts = fold
        .balances()?
        .into_iter()
        .map(|(account, unit, balance)| ((account.to_string(), unit), balance))
        .collect();
    Ok(TrialBalance {
        accounts,
        totals: fold.totals()?,
        entries: fold.len()? as usize,
        conflicted: fold.conflicted()?,
    })
}
