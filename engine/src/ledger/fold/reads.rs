//! What the fold answers: entries and their places and statuses, heads,
//! balances, allowances, and the indexes by account and by decision.

use std::collections::{BTreeMap, HashSet};

use icn_schemas::ledger::{Account, EntryId, SignedEntry};
use icn_schemas::{Did, DocId};

use super::keys::{
    account_key, account_of, corrupt, i64_of, place, place_of, split_order_value, u64_of,
};
use super::{Conflict, Fold, Judged, Outside, Status};
use crate::ledger::rows::Rows;
use crate::storage::StorageError;
use crate::storage::layout::{OrderRow, ledger as tag};

impl Fold {
    pub(super) fn depth(&self, id: &EntryId) -> Result<Option<u64>, StorageError> {
        self.rows
            .get_head::<8>(&self.rows.key(tag::DEPTH, &[&id.0]))
            .map(|d| d.map(u64::from_be_bytes))
    }

    pub(crate) fn contains(&self, id: &EntryId) -> Result<bool, StorageError> {
        self.rows.contains(&self.rows.key(tag::DEPTH, &[&id.0]))
    }

    /// How many entries the fold holds.
    pub(crate) fn len(&self) -> Result<u64, StorageError> {
        self.rows
            .get(&self.rows.key(tag::COUNT, &[]))?
            .map_or(Ok(0), |v| u64_of(&v))
    }

    /// The entries nothing points to yet, sorted.
    pub(crate) fn heads(&self) -> Result<Vec<EntryId>, StorageError> {
        let prefix = self.rows.key(tag::HEAD, &[]);
        self.rows
            .scan(prefix.clone(), prefix)
            .map(|r| {
                let (k, _) = r?;
                <[u8; 32]>::try_from(&k[33..])
                    .map(EntryId)
                    .map_err(|_| corrupt("bad head key"))
            })
            .collect()
    }

    /// The `o` row of the entry at `depth`, and the entry's encoding.
    pub(super) fn order_value(
        &self,
        depth: u64,
        id: &EntryId,
    ) -> Result<Option<(OrderRow, Vec<u8>)>, StorageError> {
        let Some(value) = self
            .rows
            .get(&self.rows.key(tag::ORDER, &[&place(depth, id)]))?
        else {
            return Ok(None);
        };
        let (row, bytes) = split_order_value(&value)?;
        Ok(Some((row, bytes.to_vec())))
    }

    /// The `o` row and encoding of an entry that has a place.
    pub(super) fn placed(
        &self,
        depth: u64,
        id: &EntryId,
    ) -> Result<(OrderRow, Vec<u8>, SignedEntry), StorageError> {
        let (row, bytes) = self
            .order_value(depth, id)?
            .ok_or_else(|| corrupt("a placed entry is missing"))?;
        let (entry, _) = SignedEntry::decode(&bytes).map_err(corrupt)?;
        Ok((row, bytes, entry))
    }

    /// An entry's canonical encoding.
    pub(crate) fn entry_bytes(&self, id: &EntryId) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(depth) = self.depth(id)? else {
            return Ok(None);
        };
        let (_, bytes) = self
            .order_value(depth, id)?
            .ok_or_else(|| corrupt("an entry has a depth but no place"))?;
        Ok(Some(bytes))
    }

    pub(crate) fn entry(&self, id: &EntryId) -> Result<Option<SignedEntry>, StorageError> {
        self.entry_bytes(id)?
            .map(|b| SignedEntry::decode(&b).map(|(e, _)| e).map_err(corrupt))
            .transpose()
    }

    /// An entry and where it stands, if it is held.
    pub(crate) fn entry_and_status(
        &self,
        id: &EntryId,
    ) -> Result<Option<(SignedEntry, Status)>, StorageError> {
        let Some(depth) = self.depth(id)? else {
            return Ok(None);
        };
        let (row, _, entry) = self.placed(depth, id)?;
        Ok(Some((entry, status_of(&row)?)))
    }

    pub(super) fn amount(&self, key: Vec<u8>) -> Result<i64, StorageError> {
        self.rows.get(&key)?.map_or(Ok(0), |v| i64_of(&v))
    }

    pub(super) fn balance_key(&self, account: &Account, unit: &str) -> Vec<u8> {
        self.rows
            .key(tag::BALANCE, &[&account_key(account), unit.as_bytes()])
    }

    pub(crate) fn balance(&self, account: Account, unit: &str) -> Result<i64, StorageError> {
        self.amount(self.balance_key(&account, unit))
    }

    pub(super) fn reserved_key(&self, member: &Did, unit: &str) -> Vec<u8> {
        self.rows
            .key(tag::RESERVED, &[member.as_bytes(), unit.as_bytes()])
    }

    /// The part of `member`'s credit in `unit` set aside in allowances.
    pub(crate) fn reserved(&self, member: &Did, unit: &str) -> Result<i64, StorageError> {
        self.amount(self.reserved_key(member, unit))
    }

    /// The unspent allowances of `member`'s devices in `unit`, by device.
    pub(crate) fn allowances(
        &self,
        member: &Did,
        unit: &str,
    ) -> Result<BTreeMap<Did, i64>, StorageError> {
        let prefix = self.rows.key(tag::ALLOWANCE, &[member.as_bytes()]);
        let mut out = BTreeMap::new();
        for row in self.rows.scan(prefix.clone(), prefix) {
            let (k, v) = row?;
            if &k[97..] == unit.as_bytes() {
                let device = Did::from_bytes(&k[65..97]).map_err(|_| corrupt("bad device"))?;
                out.insert(device, i64_of(&v)?);
            }
        }
        Ok(out)
    }

    /// Ids after the rows of `prefix` from `from`, whose keys end in a place.
    fn ids_from(
        &self,
        prefix: Vec<u8>,
        from: Vec<u8>,
    ) -> impl Iterator<Item = Result<EntryId, StorageError>> + '_ {
        self.rows
            .scan(prefix, from)
            .map(|r| r.and_then(|(k, _)| place_of(&k).map(|(_, id)| id)))
    }

    /// Every entry id in fold order.
    pub(crate) fn order(&self) -> impl Iterator<Item = Result<EntryId, StorageError>> + '_ {
        let prefix = self.rows.key(tag::ORDER, &[]);
        self.ids_from(prefix.clone(), prefix)
    }

    /// Every entry's encoding in fold order.
    pub(crate) fn encodings(&self) -> impl Iterator<Item = Result<Vec<u8>, StorageError>> + '_ {
        let prefix = self.rows.key(tag::ORDER, &[]);
        self.rows.scan(prefix.clone(), prefix).map(|r| {
            let (_, v) = r?;
            Ok(split_order_value(&v)?.1.to_vec())
        })
    }

    /// The entries touching `account`, in fold order, after the entry
    /// `after` when given.
    pub(crate) fn touching(
        &self,
        account: &Account,
        after: Option<&EntryId>,
    ) -> Result<impl Iterator<Item = Result<EntryId, StorageError>> + '_, StorageError> {
        let prefix = self.rows.key(tag::BY_ACCOUNT, &[&account_key(account)]);
        let mut from = prefix.clone();
        if let Some(after) = after {
            let depth = self.depth(after)?.unwrap_or(0);
            from.extend_from_slice(&place(depth, after));
            from.push(0); // just past it
        }
        Ok(self.ids_from(prefix, from))
    }

    /// The entries citing decision receipt `decision`, in fold order.
    pub(crate) fn citing(
        &self,
        decision: &[u8; 32],
    ) -> impl Iterator<Item = Result<EntryId, StorageError>> + '_ {
        let prefix = self.rows.key(tag::BY_DECISION, &[decision]);
        self.ids_from(prefix.clone(), prefix)
    }

    /// The conflicted entries, in fold order.
    pub(crate) fn conflicted(&self) -> Result<Vec<EntryId>, StorageError> {
        let prefix = self.rows.key(tag::CONFLICTED, &[]);
        self.ids_from(prefix.clone(), prefix).collect()
    }

    /// Every non-zero balance: account, unit, amount.
    pub(crate) fn balances(&self) -> Result<Vec<(Account, String, i64)>, StorageError> {
        let prefix = self.rows.key(tag::BALANCE, &[]);
        self.rows
            .scan(prefix.clone(), prefix)
            .map(|r| {
                let (k, v) = r?;
                let account = account_of(&k[33..66])?;
                let unit = String::from_utf8(k[66..].to_vec()).map_err(corrupt)?;
                Ok((account, unit, i64_of(&v)?))
            })
            .collect()
    }

    /// Sum of all balances per unit; always zero for every unit.
    pub(crate) fn totals(&self) -> Result<BTreeMap<String, i128>, StorageError> {
        let mut totals = BTreeMap::new();
        for (_, unit, balance) in self.balances()? {
            *totals.entry(unit).or_insert(0i128) += i128::from(balance);
        }
        Ok(totals)
    }

    /// The fold of only `heads` and their ancestors, in memory: the ledger
    /// as it stood at those heads. `None` when a head is unknown.
    pub(crate) fn at(
        &self,
        heads: &[EntryId],
        outside: &dyn Outside,
    ) -> Result<Option<Fold>, StorageError> {
        let mut keep = HashSet::new();
        let mut stack: Vec<EntryId> = heads.to_vec();
        while let Some(id) = stack.pop() {
            let Some(entry) = self.entry(&id)? else {
                return Ok(None);
            };
            if keep.insert(id) {
                stack.extend(entry.entry.parents.iter().copied());
            }
        }
        let mut fold = Fold {
            rows: Rows::in_memory(self.rows.coop()),
            last: None,
            changed: Vec::new(),
            any_seals: Default::default(),
        };
        // In this fold's order, parents always come first.
        let prefix = self.rows.key(tag::ORDER, &[]);
        for row in self.rows.scan(prefix.clone(), prefix) {
            let (k, v) = row?;
            let (_, id) = place_of(&k)?;
            if !keep.contains(&id) {
                continue;
            }
            let (row, bytes) = split_order_value(&v)?;
            let (entry, _) = SignedEntry::decode(bytes).map_err(corrupt)?;
            let judged = Judged {
                owner: row.owner(&entry.entry),
                limits: row.limits,
                treasury: row.treasury.map(DocId),
            };
            fold.insert(id, &entry, bytes, judged, outside)?;
        }
        Ok(Some(fold))
    }
}

/// The status an `o` row records.
pub(super) fn status_of(row: &OrderRow) -> Result<Status, StorageError> {
    Ok(match &row.conflict {
        None => Status::Applied,
        Some(stored) => Status::Conflicted {
            conflict: Conflict::decode(stored)?,
        },
    })
}
