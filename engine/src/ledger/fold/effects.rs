//! What an entry does to balances and allowances at its place, and whether
//! it may: credit limits, frozen accounts, overflow, allowances and the
//! grants that bind a member's other keys to them.

use std::collections::HashSet;

use icn_schemas::Did;
use icn_schemas::ledger::{Account, Body, Entry, EntryId, SignedEntry};

use super::keys::{corrupt, place, place_of, unit_part};
use super::{Conflict, Fold};
use crate::storage::StorageError;
use crate::storage::layout::{GrantRow, OrderRow, ledger as tag};

/// A balance, keyed by account and unit.
pub(super) type BalanceKey = (Account, String);

/// An allowance, keyed by member, device and unit.
pub(super) type AllowanceKey = (Did, Did, String);

/// What folding an entry changes: balances (new values) and allowances
/// (deltas, which also move the member's reserved amount).
#[derive(Default)]
pub(super) struct Effects {
    pub(super) balances: Vec<(BalanceKey, i64)>,
    pub(super) allowances: Vec<(AllowanceKey, i64)>,
}

/// The allowance deltas of an entry: a grant adds to the device's unspent
/// allowance, a release and a spend from the allowance take from it.
pub(super) fn allowance_deltas(entry: &Entry) -> Vec<(AllowanceKey, i64)> {
    match &entry.body {
        Body::Grant {
            device,
            unit,
            amount,
        } => vec![((entry.author, *device, unit.clone()), *amount)],
        Body::Release { unit, amount } => {
            vec![((entry.author, entry.signer, unit.clone()), -amount)]
        }
        Body::Transfer {
            postings,
            from_allowance: true,
        } => postings
            .iter()
            .filter(|p| p.account == Account::Member(entry.author) && p.amount < 0)
            .map(|p| ((entry.author, entry.signer, p.unit.clone()), p.amount))
            .collect(),
        _ => Vec::new(),
    }
}

/// The units in which an entry debits its author's general credit through a
/// key other than the one holding the author's DID key powers (`owner`).
pub(super) fn general_debits_by_others(entry: &Entry, owner: bool) -> Vec<String> {
    match &entry.body {
        Body::Transfer {
            postings,
            from_allowance: false,
        } if !owner => postings
            .iter()
            .filter(|p| p.account == Account::Member(entry.author) && p.amount < 0)
            .map(|p| p.unit.clone())
            .collect(),
        _ => Vec::new(),
    }
}

fn limit_in(limits: &[([u8; 32], i64)], did: &Did) -> i64 {
    limits
        .iter()
        .find(|(d, _)| d == did.as_bytes())
        .map_or(0, |(_, l)| *l)
}

impl Fold {
    /// Writes an amount, deleting the row at zero, so that replicas that
    /// took different paths to the same fold hold the same rows.
    pub(super) fn set_amount(&mut self, key: Vec<u8>, value: i64) -> Result<(), StorageError> {
        if value == 0 {
            self.rows.delete(key)?;
        } else {
            self.rows.put(key, value.to_be_bytes().to_vec());
        }
        Ok(())
    }

    fn allowance_key(&self, (member, device, unit): &AllowanceKey) -> Vec<u8> {
        self.rows.key(
            tag::ALLOWANCE,
            &[member.as_bytes(), device.as_bytes(), unit.as_bytes()],
        )
    }

    pub(super) fn grants_prefix(&self, member: &Did, unit: &str) -> Vec<u8> {
        self.rows
            .key(tag::GRANTS_BY, &[member.as_bytes(), &unit_part(unit)])
    }

    /// The grants held of `member` in `unit`, applied or not.
    fn grants(&self, member: &Did, unit: &str) -> Result<Vec<GrantRow>, StorageError> {
        let prefix = self.grants_prefix(member, unit);
        let ids: Vec<Vec<u8>> = self
            .rows
            .scan(prefix.clone(), prefix.clone())
            .map(|r| r.map(|(k, _)| k[prefix.len()..].to_vec()))
            .collect::<Result<_, _>>()?;
        ids.iter()
            .map(|id| {
                let row = self
                    .rows
                    .get(&self.rows.key(tag::GRANT, &[id]))?
                    .ok_or_else(|| corrupt("an indexed grant has no row"))?;
                postcard::from_bytes(&row).map_err(corrupt)
            })
            .collect()
    }

    /// Whether `member` has granted any allowance in `unit`: then its keys
    /// other than the DID key spend `unit` only from allowances.
    pub(crate) fn has_grants(&self, member: &Did, unit: &str) -> Result<bool, StorageError> {
        let prefix = self.grants_prefix(member, unit);
        Ok(self
            .rows
            .scan(prefix.clone(), prefix)
            .next()
            .transpose()?
            .is_some())
    }

    /// The general debits by other keys of `member` in `unit` that are
    /// ancestors of an entry with these `parents`. The search stops below
    /// the shallowest such debit, and at earlier grants of the same member
    /// and unit, whose answer is already known.
    pub(super) fn grant_ancestry(
        &self,
        parents: &[EntryId],
        member: &Did,
        unit: &str,
    ) -> Result<HashSet<EntryId>, StorageError> {
        let mut found = HashSet::new();
        let prefix = self
            .rows
            .key(tag::OTHERS_DEBIT, &[member.as_bytes(), &unit_part(unit)]);
        let Some(first) = self.rows.scan(prefix.clone(), prefix.clone()).next() else {
            return Ok(found);
        };
        let (shallowest, _) = place_of(&first?.0)?;
        let mut seen = HashSet::new();
        let mut stack = parents.to_vec();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Some(depth) = self.depth(&id)? else {
                continue;
            };
            if depth < shallowest {
                continue;
            }
            let mut debit = prefix.clone();
            debit.extend_from_slice(&place(depth, &id));
            if self.rows.get(&debit)?.is_some() {
                found.insert(id);
            }
            if let Some(row) = self.rows.get(&self.rows.key(tag::GRANT, &[&id.0]))? {
                let grant: GrantRow = postcard::from_bytes(&row).map_err(corrupt)?;
                if grant.member == *member.as_bytes() && grant.unit == unit {
                    found.extend(grant.ancestors.into_iter().map(EntryId));
                    continue;
                }
            }
            if let Some(entry) = self.entry(&id)? {
                stack.extend(entry.entry.parents.iter().copied());
            }
        }
        Ok(found)
    }

    /// Whether a general debit of `member`'s `unit` by another key, with id
    /// `id`, is concurrent with a grant: some grant of the member and unit
    /// does not descend from it.
    fn needs_allowance(
        &self,
        id: &EntryId,
        member: &Did,
        unit: &str,
    ) -> Result<bool, StorageError> {
        Ok(self
            .grants(member, unit)?
            .iter()
            .any(|g| g.ancestors.binary_search(&id.0).is_err()))
    }

    /// What entry `id` does at its place, or why it does not count there.
    pub(super) fn effects(
        &self,
        id: &EntryId,
        signed: &SignedEntry,
        row: &OrderRow,
    ) -> Result<Result<Effects, Conflict>, StorageError> {
        let limits = &row.limits[..];
        let owner = row.owner(&signed.entry);
        let entry = &signed.entry;
        let author = entry.author;
        let touched = entry.postings().iter().filter_map(|p| match p.account {
            Account::Member(did) => Some(did),
            Account::Treasury => None,
        });
        let allowance_entry = matches!(entry.body, Body::Grant { .. } | Body::Release { .. });
        for did in touched.chain(allowance_entry.then_some(author)) {
            if self
                .rows
                .contains(&self.rows.key(tag::FROZEN, &[did.as_bytes()]))?
            {
                return Ok(Err(Conflict::Frozen { account: did }));
            }
        }
        let mut effects = Effects {
            balances: Vec::with_capacity(entry.postings().len()),
            allowances: allowance_deltas(entry),
        };
        let limit = limit_in(limits, &author);
        for (key, delta) in &effects.allowances {
            let (member, device, unit) = key;
            let remaining = self.amount(self.allowance_key(key))?;
            let overflow = || Conflict::Overflow {
                account: member.to_string(),
                unit: unit.clone(),
            };
            let Some(after) = remaining.checked_add(*delta) else {
                return Ok(Err(overflow()));
            };
            if after < 0 {
                return Ok(Err(Conflict::AllowanceExceeded {
                    device: *device,
                    unit: unit.clone(),
                    remaining,
                    wanted: delta.saturating_neg(),
                }));
            }
            let reserved = self.reserved(member, unit)?;
            let Some(reserved_after) = reserved.checked_add(*delta) else {
                return Ok(Err(overflow()));
            };
            if *delta > 0 {
                // A grant needs room in the member's general credit.
                let balance = self.balance(Account::Member(*member), unit)?;
                if i128::from(balance) - i128::from(reserved_after) < -i128::from(limit) {
                    return Ok(Err(Conflict::CreditLimit {
                        account: *member,
                        unit: unit.clone(),
                        would_be: balance,
                        limit,
                        reserved: reserved_after,
                    }));
                }
            }
        }
        let from_allowance = matches!(
            entry.body,
            Body::Transfer {
                from_allowance: true,
                ..
            }
        );
        for p in entry.postings() {
            let key = (p.account, p.unit.clone());
            let balance = self.balance(p.account, &p.unit)?;
            let Some(after) = balance.checked_add(p.amount) else {
                return Ok(Err(Conflict::Overflow {
                    account: p.account.to_string(),
                    unit: p.unit.clone(),
                }));
            };
            // A general debit (only the author's own account is ever
            // debited) leaves what allowances reserve untouched. A debit
            // from an allowance was reserved when the allowance was granted.
            if let (Account::Member(did), true, false) = (p.account, p.amount < 0, from_allowance) {
                if !owner && self.needs_allowance(id, &did, &p.unit)? {
                    return Ok(Err(Conflict::AllowanceRequired {
                        account: did,
                        unit: p.unit.clone(),
                    }));
                }
                let limit = limit_in(limits, &did);
                let reserved = self.reserved(&did, &p.unit)?;
                if i128::from(after) - i128::from(reserved) < -i128::from(limit) {
                    return Ok(Err(Conflict::CreditLimit {
                        account: did,
                        unit: p.unit.clone(),
                        would_be: after,
                        limit,
                        reserved,
                    }));
                }
            }
            effects.balances.push((key, after));
        }
        Ok(Ok(effects))
    }

    /// Adds (`forward`) or takes back allowance deltas, checked when they
    /// were applied, and moves the member's reserved amount with them.
    pub(super) fn move_allowances(
        &mut self,
        deltas: &[(AllowanceKey, i64)],
        forward: bool,
    ) -> Result<(), StorageError> {
        for (key, delta) in deltas {
            let delta = if forward { *delta } else { -delta };
            let allowance = self.allowance_key(key);
            let left = self.amount(allowance.clone())? + delta;
            self.set_amount(allowance, left)?;
            let reserved = self.reserved_key(&key.0, &key.2);
            let total = self.amount(reserved.clone())? + delta;
            self.set_amount(reserved, total)?;
        }
        Ok(())
    }
}
