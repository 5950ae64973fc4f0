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

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    frozen: std::collections::HashSet<Did>,
    /// For each applied freeze entry, whether its account was frozen before,
    /// so unwinding restores it.
    frozen_before: HashMap<EntryId, bool>,
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
        let mut keep = std::collections::HashSet::new();
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
        let later: Vec<(u64, EntryId)> = self.order.range(key..).copied().collect();
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
        self.apply(&id);
        for (_, later_id) in &later {
            self.apply(later_id);
        }
    }

    /// What an entry would do if it were folded at the end of the order now.
    pub(crate) fn check_at_end(
        &self,
        entry: &SignedEntry,
        limits: &HashMap<Did, i64>,
    ) -> Result<(), Conflict> {
        self.effects(entry, limits).map(|_| ())
    }

    fn effects(
        &self,
        entry: &SignedEntry,
        limits: &HashMap<Did, i64>,
    ) -> Result<Vec<(BalanceKey, i64)>, Conflict> {
        let mut effects = Vec::with_capacity(entry.entry.postings().len());
        for p in entry.entry.postings() {
            if let Account::Member(did) = p.account
                && self.frozen.contains(&did)
            {
                return Err(Conflict::Frozen { account: did });
            }
            let key = (p.account, p.unit.clone());
            let balance = self.balances.get(&key).copied().unwrap_or(0);
            let after = balance
                .checked_add(p.amount)
                .ok_or_else(|| Conflict::Overflow {
                    account: p.account.to_string(),
                    unit: p.unit.clone(),
                })?;
            if let (Account::Member(did), true) = (p.account, p.amount < 0) {
                let limit = limits.get(&did).copied().unwrap_or(0);
                if after < -limit {
                    return Err(Conflict::CreditLimit {
                        account: did,
                        unit: p.unit.clone(),
                        would_be: after,
                        limit,
                    });
                }
            }
            effects.push((key, after));
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
        let status = match self.effects(&node.entry, &node.limits) {
            Ok(effects) => {
                for (key, after) in effects {
                    self.balances.insert(key, after);
                }
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
            if let Some(balance) = self.balances.get_mut(&(p.account, p.unit.clone())) {
                // It was added when applied, so taking it away cannot overflow.
                *balance -= p.amount;
            }
        }
    }
}
