//! Balances as a deterministic fold over the entry DAG.
//!
//! Entries are folded in the order of `(depth, entry id)`, where an entry's
//! depth is one more than its deepest parent's (0 without parents). That is a
//! topological order, so parents always come first, and ties are broken by
//! id. Every replica holding the same entries therefore folds them in the same
//! order. Inserting an entry never reorders the others: it only finds its
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use icn_schemas::Did;
use icn_schemas::ledger::{Account, Body, EntryId, SignedEntry};

/// Why an entry does not count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Conflict {
    /// A debit would take the account below minus its credit limit.
    #[error("{account} would go to {would_be} {unit}, below its credit limit of {limit}")]
    CreditLimit {
        /// The account.
        account: Did,
        /// The unit.
        unit: String,
        /// Its balance after the debit.
        would_be: i64,
        /// Its credit limit.
        limit: i64,
        /// The part of the limit set aside for devices' allowances, which a
        /// general debit may not use.
        reserved: i64,
    },
    /// A device spent, or gave back, more than its unspent allowance.
    #[error("{device} has {remaining} {unit} of allowance left, not {wanted}")]
    AllowanceExceeded {
        /// The device (signer) key.
        device: Did,
        /// The unit.
        unit: String,
        /// Its unspent allowance at this place.
        remaining: i64,
        /// What the entry takes.
        wanted: i64,
    },
    /// A general debit signed by a key other than the member's DID key,
    /// concurrent with one of the member's allowance grants in the unit.
    #[error(
        "{account} has set {unit} aside in allowances; its devices and delegates spend {unit} from their allowances"
    )]
    AllowanceRequired {
        /// The member.
        account: Did,
        /// The unit.
        unit: String,
    },
    /// The entry touches a frozen account.
    #[error("the account of {account} is frozen")]
    Frozen {
        /// The account.
        account: Did,
    },
    /// A balance would overflow 64 bits.
    #[error("a balance of {account} in {unit} would overflow")]
    Overflow {
        /// The account.
        account: String,
        /// The unit.
        unit: String,
    },
}

/// Where an entry stands in the fold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// It counts.
    Applied,
    /// It is kept and forwarded but does not count.
    Conflicted {
        /// Why.
        #[serde(flatten)]
        conflict: Conflict,
    },
}

/// A balance, keyed by account and unit.
type BalanceKey = (Account, String);

/// An allowance, keyed by member, device and unit.
type AllowanceKey = (Did, Did, String);

/// What folding an entry changes: balances (new values) and allowances
/// (deltas, which also move the member's reserved amount).
#[derive(Default)]
struct Effects {
    balances: Vec<(BalanceKey, i64)>,
    allowances: Vec<(AllowanceKey, i64)>,
}

/// A grant, with the general debits by other keys of its member and unit
/// that are in its past.
#[derive(Debug)]
struct Grant {
    member: Did,
    unit: String,
    ancestors: HashSet<EntryId>,
}

/// Whether an entry is signed by its author's own DID key: the one key that
/// spends a member's general credit alongside allowances.
fn by_owner(entry: &icn_schemas::ledger::Entry) -> bool {
    entry.signer == entry.author && entry.delegation.is_none()
}

/// The allowance deltas of an entry: a grant adds to the device's unspent
/// allowance, a release and a spend from the allowance take from it.
fn allowance_deltas(entry: &icn_schemas::ledger::Entry) -> Vec<(AllowanceKey, i64)> {
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
/// key other than the author's DID key.
fn general_debits_by_others(entry: &icn_schemas::ledger::Entry) -> Vec<String> {
    match &entry.body {
        Body::Transfer {
            postings,
            from_allowance: false,
        } if !by_owner(entry) => postings
            .iter()
            .filter(|p| p.account == Account::Member(entry.author) && p.amount < 0)
            .map(|p| p.unit.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// An entry in the fold, with the credit limits of the accounts it debits,
/// read from the co-op document at the heads the entry cites.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) entry: SignedEntry,
    pub(crate) limits: HashMap<Did, i64>,
    depth: u64,
}

/// The fold of one co-op's entries.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    nodes: HashMap<EntryId, Node>,
    order: BTreeSet<(u64, EntryId)>,
    heads: BTreeSet<EntryId>,
    balances: HashMap<BalanceKey, i64>,
    status: HashMap<EntryId, Status>,
    frozen: HashSet<Did>,
    /// For each applied freeze entry, whether its account was frozen before,
    /// so unwinding restores it.
    frozen_before: HashMap<EntryId, bool>,
    /// Unspent allowance per (member, device, unit).
    allowances: HashMap<AllowanceKey, i64>,
    /// Sum of the unspent allowances per (member, unit).
    reserved: HashMap<(Did, String), i64>,
    /// General debits by keys other than the member's DID key, per (member,
    /// unit), by place.
    others_debits: HashMap<(Did, String), BTreeSet<(u64, EntryId)>>,
    /// Every grant held, applied or not.
    grants: HashMap<EntryId, Grant>,
    /// Grant ids per (member, unit).
    grants_by: HashMap<(Did, String), Vec<EntryId>>,
}

impl Fold {
    pub(crate) fn contains(&self, id: &EntryId) -> bool {
        self.nodes.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The entries nothing points to yet, sorted.
    pub(crate) fn heads(&self) -> Vec<EntryId> {
        self.heads.iter().copied().collect()
    }

    pub(crate) fn node(&self, id: &EntryId) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub(crate) fn status(&self, id: &EntryId) -> Option<&Status> {
        self.status.get(id)
    }

    pub(crate) fn balance(&self, account: Account, unit: &str) -> i64 {
        self.balances
            .get(&(account, unit.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The part of `member`'s credit in `unit` set aside in allowances.
    pub(crate) fn reserved(&self, member: &Did, unit: &str) -> i64 {
        self.reserved
            .get(&(*member, unit.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The unspent allowances of `member`'s devices in `unit`, by device.
    pub(crate) fn allowances(&self, member: &Did, unit: &str) -> BTreeMap<Did, i64> {
        self.allowances
            .iter()
            .filter(|((m, _, u), left)| m == member && u == unit && **left != 0)
            .map(|((_, device, _), left)| (*device, *left))
            .collect()
    }

    /// Whether `member` has granted any allowance in `unit`: then its keys
    /// other than the DID key spend `unit` only from allowances.
    pub(crate) fn has_grants(&self, member: &Did, unit: &str) -> bool {
        self.grants_by
            .get(&(*member, unit.to_owned()))
            .is_some_and(|g| !g.is_empty())
    }

    /// Every entry id in fold order.
    pub(crate) fn order(&self) -> impl Iterator<Item = &EntryId> {
        self.order.iter().map(|(_, id)| id)
    }

    /// Sum of all balances per unit; always zero for every unit.
    pub(crate) fn totals(&self) -> BTreeMap<String, i128> {
        let mut totals = BTreeMap::new();
        for ((_, unit), balance) in &self.balances {
            *totals.entry(unit.clone()).or_insert(0i128) += i128::from(*balance);
        }
        totals
    }

    /// The fold of only `heads` and their ancestors: the ledger as it stood
    /// at those heads. `None` when a head is unknown.
    pub(crate) fn at(&self, heads: &[EntryId]) -> Option<Fold> {
        let mut keep = HashSet::new();
        let mut stack: Vec<EntryId> = heads.to_vec();
        while let Some(id) = stack.pop() {
            let node = self.nodes.get(&id)?;
            if keep.insert(id) {
                stack.extend(node.entry.entry.parents.iter().copied());
            }
        }
        let mut fold = Fold::default();
        // In this fold's order, parents always come first.
        for id in self.order().filter(|id| keep.contains(id)) {
            let node = &self.nodes[id];
            fold.insert(*id, node.entry.clone(), node.limits.clone());
        }
        Some(fold)
    }

    /// Adds an entry whose parents are all in the fold.
    pub(crate) fn insert(&mut self, id: EntryId, entry: SignedEntry, limits: HashMap<Did, i64>) {
        if self.contains(&id) {
            return;
        }
        let depth = entry
            .entry
            .parents
            .iter()
            .filter_map(|p| self.nodes.get(p).map(|n| n.depth + 1))
            .max()
            .unwrap_or(0);
        for p in &entry.entry.parents {
            self.heads.remove(p);
        }
        self.heads.insert(id);
        let key = (depth, id);
        let mut start = key;
        for unit in general_debits_by_others(&entry.entry) {
            self.others_debits
                .entry((entry.entry.author, unit))
                .or_default()
                .insert(key);
        }
        if let Body::Grant { unit, .. } = &entry.entry.body {
            let member = entry.entry.author;
            let ancestors = self.grant_ancestry(&entry.entry.parents, &member, unit);
            // A debit this grant does not descend from may count no more.
            let first_concurrent = self
                .others_debits
                .get(&(member, unit.clone()))
                .and_then(|debits| debits.iter().find(|(_, e)| !ancestors.contains(e)));
            if let Some(first) = first_concurrent {
                start = start.min(*first);
            }
            self.grants.insert(
                id,
                Grant {
                    member,
                    unit: unit.clone(),
                    ancestors,
                },
            );
            self.grants_by
                .entry((member, unit.clone()))
                .or_default()
                .push(id);
        }
        let later: Vec<(u64, EntryId)> = self.order.range(start..).copied().collect();
        for (_, later_id) in later.iter().rev() {
            self.unapply(later_id);
        }
        self.nodes.insert(
            id,
            Node {
                entry,
                limits,
                depth,
            },
        );
        self.order.insert(key);
        let refold: Vec<EntryId> = self.order.range(start..).map(|(_, id)| *id).collect();
        for id in &refold {
            self.apply(id);
        }
    }

    /// The general debits by other keys of `member` in `unit` that are
    /// ancestors of an entry with these `parents`. The search stops below
    /// the shallowest such debit, and at earlier grants of the same member
    /// and unit, whose answer is already known.
    fn grant_ancestry(&self, parents: &[EntryId], member: &Did, unit: &str) -> HashSet<EntryId> {
        let mut found = HashSet::new();
        let Some(debits) = self.others_debits.get(&(*member, unit.to_owned())) else {
            return found;
        };
        let Some(&(shallowest, _)) = debits.first() else {
            return found;
        };
        let mut seen = HashSet::new();
        let mut stack = parents.to_vec();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            if node.depth < shallowest {
                continue;
            }
            if debits.contains(&(node.depth, id)) {
                found.insert(id);
            }
            if let Some(grant) = self.grants.get(&id)
                && grant.member == *member
                && grant.unit == unit
            {
                found.extend(grant.ancestors.iter().copied());
                continue;
            }
            stack.extend(node.entry.entry.parents.iter().copied());
        }
        found
    }

    /// Whether a general debit of `member`'s `unit` by another key, with id
    /// `id` (`None` for one not yet held), is concurrent with a grant: some
    /// grant of the member and unit does not descend from it.
    fn needs_allowance(&self, id: Option<&EntryId>, member: &Did, unit: &str) -> bool {
        self.grants_by
            .get(&(*member, unit.to_owned()))
            .is_some_and(|grants| {
                grants.iter().any(|g| {
                    self.grants
                        .get(g)
                        .is_none_or(|g| id.is_none_or(|id| !g.ancestors.contains(id)))
                })
            })
    }

    /// What an entry would do if it were folded at the end of the order now.
    pub(crate) fn check_at_end(
        &self,
        entry: &SignedEntry,
        limits: &HashMap<Did, i64>,
    ) -> Result<(), Conflict> {
        self.effects(None, entry, limits).map(|_| ())
    }

    fn effects(
        &self,
        id: Option<&EntryId>,
        signed: &SignedEntry,
        limits: &HashMap<Did, i64>,
    ) -> Result<Effects, Conflict> {
        let entry = &signed.entry;
        let author = entry.author;
        let touched = entry.postings().iter().filter_map(|p| match p.account {
            Account::Member(did) => Some(did),
            Account::Treasury => None,
        });
        let allowance_entry = matches!(entry.body, Body::Grant { .. } | Body::Release { .. });
        for did in touched.chain(allowance_entry.then_some(author)) {
            if self.frozen.contains(&did) {
                return Err(Conflict::Frozen { account: did });
            }
        }
        let mut effects = Effects {
            balances: Vec::with_capacity(entry.postings().len()),
            allowances: allowance_deltas(entry),
        };
        let limit = limits.get(&author).copied().unwrap_or(0);
        for ((member, device, unit), delta) in &effects.allowances {
            let key = (*member, *device, unit.clone());
            let remaining = self.allowances.get(&key).copied().unwrap_or(0);
            let overflow = || Conflict::Overflow {
                account: member.to_string(),
                unit: unit.clone(),
            };
            let after = remaining.checked_add(*delta).ok_or_else(overflow)?;
            if after < 0 {
                return Err(Conflict::AllowanceExceeded {
                    device: *device,
                    unit: unit.clone(),
                    remaining,
                    wanted: delta.saturating_neg(),
                });
            }
            let reserved = self.reserved(member, unit);
            let reserved_after = reserved.checked_add(*delta).ok_or_else(overflow)?;
            if *delta > 0 {
                // A grant needs room in the member's general credit.
                let balance = self.balance(Account::Member(*member), unit);
                if i128::from(balance) - i128::from(reserved_after) < -i128::from(limit) {
                    return Err(Conflict::CreditLimit {
                        account: *member,
                        unit: unit.clone(),
                        would_be: balance,
                        limit,
                        reserved: reserved_after,
                    });
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
            let balance = self.balances.get(&key).copied().unwrap_or(0);
            let after = balance
                .checked_add(p.amount)
                .ok_or_else(|| Conflict::Overflow {
                    account: p.account.to_string(),
                    unit: p.unit.clone(),
                })?;
            // A general debit (only the author's own account is ever
            // debited) leaves what allowances reserve untouched. A debit
            // from an allowance was reserved when the allowance was granted.
            if let (Account::Member(did), true, false) = (p.account, p.amount < 0, from_allowance) {
                if !by_owner(entry) && self.needs_allowance(id, &did, &p.unit) {
                    return Err(Conflict::AllowanceRequired {
                        account: did,
                        unit: p.unit.clone(),
                    });
                }
                let limit = limits.get(&did).copied().unwrap_or(0);
                let reserved = self.reserved(&did, &p.unit);
                if i128::from(after) - i128::from(reserved) < -i128::from(limit) {
                    return Err(Conflict::CreditLimit {
                        account: did,
                        unit: p.unit.clone(),
                        would_be: after,
                        limit,
                        reserved,
                    });
                }
            }
            effects.balances.push((key, after));
        }
        Ok(effects)
    }

    fn apply(&mut self, id: &EntryId) {
        let Some(node) = self.nodes.get(id) else {
            return;
        };
        if let Body::Freeze { account, frozen } = node.entry.entry.body {
            let before = if frozen {
                !self.frozen.insert(account)
            } else {
                self.frozen.remove(&account)
            };
            self.frozen_before.insert(*id, before);
            self.status.insert(*id, Status::Applied);
            return;
        }
        let status = match self.effects(Some(id), &node.entry, &node.limits) {
            Ok(effects) => {
                for (key, after) in effects.balances {
                    set_or_remove(&mut self.balances, key, after);
                }
                self.move_allowances(&effects.allowances, true);
                Status::Applied
            }
            Err(conflict) => Status::Conflicted { conflict },
        };
        self.status.insert(*id, status);
    }

    fn unapply(&mut self, id: &EntryId) {
        if self.status.remove(id) != Some(Status::Applied) {
            return;
        }
        if let Some(before) = self.frozen_before.remove(id) {
            if let Some(Body::Freeze { account, .. }) =
                self.nodes.get(id).map(|n| &n.entry.entry.body)
            {
                if before {
                    self.frozen.insert(*account);
                } else {
                    self.frozen.remove(account);
                }
            }
            return;
        }
        let Some(node) = self.nodes.get(id) else {
            return;
        };
        for p in node.entry.entry.postings() {
            let key = (p.account, p.unit.clone());
            // It was added when applied, so taking it away cannot overflow.
            let before = self.balances.get(&key).copied().unwrap_or(0) - p.amount;
            set_or_remove(&mut self.balances, key, before);
        }
        let deltas = allowance_deltas(&node.entry.entry);
        self.move_allowances(&deltas, false);
    }

    /// Adds (`forward`) or takes back allowance deltas, checked when they
    /// were applied, and moves the member's reserved amount with them.
    fn move_allowances(&mut self, deltas: &[(AllowanceKey, i64)], forward: bool) {
        for ((member, device, unit), delta) in deltas {
            let delta = if forward { *delta } else { -delta };
            let key = (*member, *device, unit.clone());
            let left = self.allowances.get(&key).copied().unwrap_or(0) + delta;
            set_or_remove(&mut self.allowances, key, left);
            let key = (*member, unit.clone());
            let reserved = self.reserved.get(&key).copied().unwrap_or(0) + delta;
            set_or_remove(&mut self.reserved, key, reserved);
        }
    }
}

/// Keeps only non-zero amounts, so that replicas that took different paths
/// to the same fold hold the same maps.
fn set_or_remove<K: std::hash::Hash + Eq>(map: &mut HashMap<K, i64>, key: K, value: i64) {
    if value == 0 {
        map.remove(&key);
    } else {
        map.insert(key, value);
    }
}
