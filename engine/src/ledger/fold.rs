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

use std::collections::{BTreeMap, HashSet};

use icn_schemas::domain::Payload;
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry};
use icn_schemas::{Did, DocId};

use super::rows::Rows;
use crate::storage::StorageError;
use crate::storage::layout::{GrantRow, OrderRow, ledger as tag};

/// Why an entry does not count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
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
    /// The decision the entry cites is not an accepted decision of the
    /// co-op's treasury domain, as that domain's counted closes stand here.
    #[error("decision {receipt} is not an accepted decision of the co-op's treasury domain")]
    DecisionNotCounted {
        /// The receipt hash, hex.
        receipt: String,
    },
    /// The entry does not do what the decision decided.
    #[error("the entry does not do what decision {receipt} decided")]
    DecisionMismatch {
        /// The receipt hash, hex.
        receipt: String,
    },
    /// Another entry earlier in the order executed the same decision.
    #[error("decision {receipt} was executed already, by entry {by}")]
    AlreadyExecuted {
        /// The receipt hash, hex.
        receipt: String,
        /// The entry that executed it.
        by: String,
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
}

/// An allowance, keyed by member, device and unit.
type AllowanceKey = (Did, Did, String);

/// What folding an entry changes: balances (new values) and allowances
/// (deltas, which also move the member's reserved amount).
#[derive(Default)]
struct Effects {
    balances: Vec<(BalanceKey, i64)>,
    allowances: Vec<(AllowanceKey, i64)>,
}

/// Whether an entry is signed by its author's own DID key: the one key that
/// spends a member's general credit alongside allowances.
fn by_owner(entry: &Entry) -> bool {
    entry.signer == entry.author && entry.delegation.is_none()
}

/// The allowance deltas of an entry: a grant adds to the device's unspent
/// allowance, a release and a spend from the allowance take from it.
fn allowance_deltas(entry: &Entry) -> Vec<(AllowanceKey, i64)> {
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
fn general_debits_by_others(entry: &Entry) -> Vec<String> {
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

/// Why reading a stored fold row failed.
fn corrupt(reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        tree: crate::storage::layout::LEDGER,
        reason: reason.to_string(),
    }
}

fn i64_of(bytes: &[u8]) -> Result<i64, StorageError> {
    <[u8; 8]>::try_from(bytes)
        .map(i64::from_be_bytes)
        .map_err(|_| corrupt("an amount is not 8 bytes"))
}

fn u64_of(bytes: &[u8]) -> Result<u64, StorageError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("a number is not 8 bytes"))
}

/// An account as 33 key bytes: `0 ‖ DID` or `1 ‖ 0…0` for the treasury.
fn account_key(account: &Account) -> [u8; 33] {
    let mut key = [0u8; 33];
    match account {
        Account::Member(did) => key[1..].copy_from_slice(did.as_bytes()),
        Account::Treasury => key[0] = 1,
    }
    key
}

fn account_of(key: &[u8]) -> Result<Account, StorageError> {
    match key.first() {
        Some(0) => Did::from_bytes(&key[1..33])
            .map(Account::Member)
            .map_err(|_| corrupt("an account key is not a DID")),
        Some(1) => Ok(Account::Treasury),
        _ => Err(corrupt("unknown account tag")),
    }
}

/// An `o` row's value: `len (u16 BE) ‖ OrderRow ‖ the entry's encoding`.
fn split_order_value(value: &[u8]) -> Result<(OrderRow, &[u8]), StorageError> {
    let len = value
        .get(..2)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        .ok_or_else(|| corrupt("an order row is too short"))?;
    let row = value
        .get(2..2 + len)
        .ok_or_else(|| corrupt("an order row is too short"))?;
    let row = postcard::from_bytes(row).map_err(corrupt)?;
    Ok((row, &value[2 + len..]))
}

/// `depth ‖ id`: a place in the fold order.
fn place(depth: u64, id: &EntryId) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&depth.to_be_bytes());
    key[8..].copy_from_slice(&id.0);
    key
}

fn place_of(bytes: &[u8]) -> Result<(u64, EntryId), StorageError> {
    let at = bytes
        .len()
        .checked_sub(40)
        .ok_or_else(|| corrupt("a key is too short for a place"))?;
    let depth = u64_of(&bytes[at..at + 8])?;
    let id = <[u8; 32]>::try_from(&bytes[at + 8..]).map_err(|_| corrupt("bad entry id"))?;
    Ok((depth, EntryId(id)))
}

/// A unit followed by more key parts: length-prefixed.
fn unit_part(unit: &str) -> Vec<u8> {
    let mut part = Vec::with_capacity(unit.len() + 1);
    part.push(unit.len() as u8);
    part.extend_from_slice(unit.as_bytes());
    part
}

fn limit_in(limits: &[([u8; 32], i64)], did: &Did) -> i64 {
    limits
        .iter()
        .find(|(d, _)| d == did.as_bytes())
        .map_or(0, |(_, l)| *l)
}

/// The fold of one co-op's entries, in the `ledger` tree: nothing of it is
/// rebuilt when a node starts. Writes go to an overlay until the ledger
/// commits them with the entries that caused them, in one atomic batch.
pub(crate) struct Fold {
    rows: Rows,
    /// The last place in the order, once read: most entries extend the
    /// heads and land after it, and then nothing needs unwinding.
    last: Option<Option<(u64, EntryId)>>,
}

impl Fold {
    /// The co-op's stored fold.
    pub(crate) fn open(coop: DocId, tree: sled::Tree) -> Fold {
        Fold {
            rows: Rows::stored(coop, tree),
            last: None,
        }
    }

    /// The rows written since the last commit, as one batch.
    pub(crate) fn take_batch(&mut self) -> Option<sled::Batch> {
        self.rows.take_batch()
    }

    /// Forgets what was folded since the last commit.
    pub(crate) fn discard(&mut self) {
        self.rows.discard();
        self.last = None;
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

    fn depth(&self, id: &EntryId) -> Result<Option<u64>, StorageError> {
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

    /// An entry's canonical encoding.
    pub(crate) fn entry_bytes(&self, id: &EntryId) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(depth) = self.depth(id)? else {
            return Ok(None);
        };
        let value = self
            .rows
            .get(&self.rows.key(tag::ORDER, &[&place(depth, id)]))?
            .ok_or_else(|| corrupt("an entry has a depth but no place"))?;
        Ok(Some(split_order_value(&value)?.1.to_vec()))
    }

    pub(crate) fn entry(&self, id: &EntryId) -> Result<Option<SignedEntry>, StorageError> {
        self.entry_bytes(id)?
            .map(|b| SignedEntry::decode(&b).map(|(e, _)| e).map_err(corrupt))
            .transpose()
    }

    fn order_row(&self, depth: u64, id: &EntryId) -> Result<Option<OrderRow>, StorageError> {
        self.rows
            .get(&self.rows.key(tag::ORDER, &[&place(depth, id)]))?
            .map(|v| split_order_value(&v).map(|(row, _)| row))
            .transpose()
    }

    /// Writes an entry's `o` row: `row`, then the entry's encoding (`bytes`,
    /// or what the row holds already).
    fn put_order_row(
        &mut self,
        depth: u64,
        id: &EntryId,
        row: &OrderRow,
        bytes: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        let key = self.rows.key(tag::ORDER, &[&place(depth, id)]);
        let stored;
        let bytes = match bytes {
            Some(b) => b,
            None => {
                stored = self
                    .rows
                    .get(&key)?
                    .ok_or_else(|| corrupt("an entry to fold has no place"))?;
                split_order_value(&stored)?.1
            }
        };
        let encoded = postcard::to_stdvec(row).map_err(corrupt)?;
        let len = u16::try_from(encoded.len()).map_err(|_| corrupt("an order row is too long"))?;
        let mut value = Vec::with_capacity(2 + encoded.len() + bytes.len());
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(&encoded);
        value.extend_from_slice(bytes);
        self.rows.put(key, value);
        Ok(())
    }

    /// Where an entry stands, if it is held.
    pub(crate) fn status(&self, id: &EntryId) -> Result<Option<Status>, StorageError> {
        let Some(depth) = self.depth(id)? else {
            return Ok(None);
        };
        let row = self
            .order_row(depth, id)?
            .ok_or_else(|| corrupt("an entry has a depth but no place"))?;
        Ok(Some(match row.conflict {
            None => Status::Applied,
            Some(json) => Status::Conflicted {
                conflict: serde_json::from_str(&json).map_err(corrupt)?,
            },
        }))
    }

    fn amount(&self, key: Vec<u8>) -> Result<i64, StorageError> {
        self.rows.get(&key)?.map_or(Ok(0), |v| i64_of(&v))
    }

    /// Writes an amount, deleting the row at zero, so that replicas that
    /// took different paths to the same fold hold the same rows.
    fn set_amount(&mut self, key: Vec<u8>, value: i64) -> Result<(), StorageError> {
        if value == 0 {
            self.rows.delete(key)?;
        } else {
            self.rows.put(key, value.to_be_bytes().to_vec());
        }
        Ok(())
    }

    fn balance_key(&self, account: &Account, unit: &str) -> Vec<u8> {
        self.rows
            .key(tag::BALANCE, &[&account_key(account), unit.as_bytes()])
    }

    pub(crate) fn balance(&self, account: Account, unit: &str) -> Result<i64, StorageError> {
        self.amount(self.balance_key(&account, unit))
    }

    fn reserved_key(&self, member: &Did, unit: &str) -> Vec<u8> {
        self.rows
            .key(tag::RESERVED, &[member.as_bytes(), unit.as_bytes()])
    }

    /// The part of `member`'s credit in `unit` set aside in allowances.
    pub(crate) fn reserved(&self, member: &Did, unit: &str) -> Result<i64, StorageError> {
        self.amount(self.reserved_key(member, unit))
    }

    fn allowance_key(&self, (member, device, unit): &AllowanceKey) -> Vec<u8> {
        self.rows.key(
            tag::ALLOWANCE,
            &[member.as_bytes(), device.as_bytes(), unit.as_bytes()],
        )
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

    fn grants_prefix(&self, member: &Did, unit: &str) -> Vec<u8> {
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
        decisions: &dyn Decisions,
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
                limits: row.limits,
                treasury: row.treasury.map(DocId),
            };
            fold.insert(id, &entry, bytes, judged, decisions)?;
        }
        Ok(Some(fold))
    }

    /// Adds an entry whose parents are all in the fold, with what it was
    /// judged by.
    pub(crate) fn insert(
        &mut self,
        id: EntryId,
        signed: &SignedEntry,
        bytes: &[u8],
        judged: Judged,
        decisions: &dyn Decisions,
    ) -> Result<(), StorageError> {
        let Judged {
            mut limits,
            treasury,
        } = judged;
        if self.contains(&id)? {
            return Ok(());
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
            .map(|p| account_key(&p.account))
            .collect();
        accounts.dedup();
        for account in accounts {
            rows.put(rows.key(tag::BY_ACCOUNT, &[&account, &here]), Vec::new());
        }
        if let Some(decision) = &entry.decision {
            rows.put(rows.key(tag::BY_DECISION, &[decision, &here]), Vec::new());
        }
        for unit in general_debits_by_others(entry) {
            let key = rows.key(
                tag::OTHERS_DEBIT,
                &[entry.author.as_bytes(), &unit_part(&unit), &here],
            );
            rows.put(key, Vec::new());
        }
        let mut start = (depth, id);
        if let Body::Grant { unit, .. } = &entry.body {
            let member = entry.author;
            let mut ancestors: Vec<[u8; 32]> = self
                .grant_ancestry(&entry.parents, &member, unit)?
                .into_iter()
                .map(|e| e.0)
                .collect();
            ancestors.sort_unstable();
            // A debit this grant does not descend from may count no more.
            let prefix = self
                .rows
                .key(tag::OTHERS_DEBIT, &[member.as_bytes(), &unit_part(unit)]);
            for row in self.rows.scan(prefix.clone(), prefix) {
                let (k, _) = row?;
                let (d, debit) = place_of(&k)?;
                if ancestors.binary_search(&debit.0).is_err() {
                    start = start.min((d, debit));
                    break;
                }
            }
            let grant = GrantRow {
                member: *member.as_bytes(),
                unit: unit.clone(),
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
        }
        let last = self.last_place()?;
        let later = if last.is_none_or(|last| last < start) {
            Vec::new()
        } else {
            self.unwind_from(start)?
        };
        self.last = Some(Some(last.map_or((depth, id), |l| l.max((depth, id)))));
        limits.sort_unstable();
        self.put_order_row(
            depth,
            &id,
            &OrderRow {
                limits,
                treasury: treasury.map(|t| t.0),
                ..OrderRow::default()
            },
            Some(bytes),
        )?;
        // Fold again from `start`; the new entry is decoded already.
        let mut refold = later;
        refold.push((depth, id));
        refold.sort_unstable();
        for (d, e) in refold {
            if e == id {
                self.apply(d, &e, signed, decisions)?;
            } else {
                let stored = self
                    .entry(&e)?
                    .ok_or_else(|| corrupt("a placed entry is missing"))?;
                self.apply(d, &e, &stored, decisions)?;
            }
        }
        Ok(())
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
        decisions: &dyn Decisions,
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
            let stored = self
                .entry(&e)?
                .ok_or_else(|| corrupt("a placed entry is missing"))?;
            self.apply(d, &e, &stored, decisions)?;
        }
        Ok(())
    }

    /// Judges an entry's decision, if it cites one: it must be an accepted
    /// decision of the treasury domain, the entry must do exactly what it
    /// decided, and no entry earlier in the order executed it. Returns the
    /// `X` row to write when the entry counts.
    fn decision_check(
        &self,
        signed: &SignedEntry,
        treasury: Option<[u8; 32]>,
        decisions: &dyn Decisions,
    ) -> Result<Result<Option<Vec<u8>>, Conflict>, StorageError> {
        let entry = &signed.entry;
        let Some(receipt) = &entry.decision else {
            return Ok(Ok(None));
        };
        let hex = hex::encode(receipt);
        let decision = treasury.and_then(|t| decisions.decision(&DocId(t), receipt));
        let Some(decision) = decision else {
            return Ok(Err(Conflict::DecisionNotCounted { receipt: hex }));
        };
        let matches = match (&decision.payload, &entry.body) {
            (
                Payload::Budget {
                    amount,
                    recipient,
                    unit,
                    ..
                },
                Body::Transfer {
                    postings,
                    from_allowance: false,
                },
            ) => {
                let mut expected = vec![
                    Posting {
                        account: Account::Member(*recipient),
                        unit: unit.clone(),
                        amount: *amount,
                    },
                    Posting {
                        account: Account::Treasury,
                        unit: unit.clone(),
                        amount: amount.checked_neg().unwrap_or(0),
                    },
                ];
                expected.sort_by(|a, b| (a.account, &a.unit).cmp(&(b.account, &b.unit)));
                *postings == expected
            }
            (Payload::Freeze { did }, Body::Freeze { account, frozen }) => {
                did == account && *frozen
            }
            (Payload::Unfreeze { did }, Body::Freeze { account, frozen }) => {
                did == account && !*frozen
            }
            _ => false,
        };
        if !matches {
            return Ok(Err(Conflict::DecisionMismatch { receipt: hex }));
        }
        let key = self.rows.key(
            tag::EXECUTED,
            &[&decision.domain.0, decision.proposal.as_bytes()],
        );
        if let Some(by) = self.rows.get(&key)? {
            return Ok(Err(Conflict::AlreadyExecuted {
                receipt: hex,
                by: hex::encode(by),
            }));
        }
        Ok(Ok(Some(key)))
    }

    /// The general debits by other keys of `member` in `unit` that are
    /// ancestors of an entry with these `parents`. The search stops below
    /// the shallowest such debit, and at earlier grants of the same member
    /// and unit, whose answer is already known.
    fn grant_ancestry(
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
    /// `id` (`None` for one not yet held), is concurrent with a grant: some
    /// grant of the member and unit does not descend from it.
    fn needs_allowance(
        &self,
        id: Option<&EntryId>,
        member: &Did,
        unit: &str,
    ) -> Result<bool, StorageError> {
        Ok(self
            .grants(member, unit)?
            .iter()
            .any(|g| id.is_none_or(|id| g.ancestors.binary_search(&id.0).is_err())))
    }

    /// What an entry would do if it were folded at the end of the order now.
    pub(crate) fn check_at_end(
        &self,
        entry: &SignedEntry,
        judged: &Judged,
        decisions: &dyn Decisions,
    ) -> Result<Result<(), Conflict>, StorageError> {
        if let Err(conflict) =
            self.decision_check(entry, judged.treasury.map(|t| t.0), decisions)?
        {
            return Ok(Err(conflict));
        }
        if matches!(entry.entry.body, Body::Freeze { .. }) {
            return Ok(Ok(()));
        }
        Ok(self.effects(None, entry, &judged.limits)?.map(|_| ()))
    }

    fn effects(
        &self,
        id: Option<&EntryId>,
        signed: &SignedEntry,
        limits: &[([u8; 32], i64)],
    ) -> Result<Result<Effects, Conflict>, StorageError> {
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
                if !by_owner(entry) && self.needs_allowance(id, &did, &p.unit)? {
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

    fn apply(
        &mut self,
        depth: u64,
        id: &EntryId,
        signed: &SignedEntry,
        decisions: &dyn Decisions,
    ) -> Result<(), StorageError> {
        let mut row = self
            .order_row(depth, id)?
            .ok_or_else(|| corrupt("an entry to fold has no place"))?;
        let conflicted_key = self.rows.key(tag::CONFLICTED, &[&place(depth, id)]);
        // The conflicted row exists exactly when the order row records a
        // conflict: only then is there one to delete. (A delete of a row
        // that is not there would still cost a write.)
        let was_conflicted = row.conflict.is_some();
        row.executed = None;
        let execution = match self.decision_check(signed, row.treasury, decisions)? {
            Ok(execution) => execution,
            Err(conflict) => {
                row.conflict = Some(serde_json::to_string(&conflict).map_err(corrupt)?);
                self.rows.put(conflicted_key, Vec::new());
                return self.put_order_row(depth, id, &row, None);
            }
        };
        if let Some(key) = &execution {
            self.rows.put(key.clone(), id.0.to_vec());
        }
        row.executed = execution;
        if let Body::Freeze { account, frozen } = signed.entry.body {
            let key = self.rows.key(tag::FROZEN, &[account.as_bytes()]);
            let before = self.rows.get(&key)?.is_some();
            if frozen {
                self.rows.put(key, Vec::new());
            } else {
                self.rows.delete(key)?;
            }
            row.frozen_before = Some(before);
            row.conflict = None;
            if was_conflicted {
                self.rows.delete(conflicted_key)?;
            }
            return self.put_order_row(depth, id, &row, None);
        }
        match self.effects(Some(id), signed, &row.limits)? {
            Ok(effects) => {
                for ((account, unit), after) in effects.balances {
                    let key = self.balance_key(&account, &unit);
                    self.set_amount(key, after)?;
                }
                self.move_allowances(&effects.allowances, true)?;
                row.conflict = None;
                if was_conflicted {
                    self.rows.delete(conflicted_key)?;
                }
            }
            Err(conflict) => {
                if let Some(key) = row.executed.take() {
                    self.rows.delete(key)?;
                }
                row.conflict = Some(serde_json::to_string(&conflict).map_err(corrupt)?);
                self.rows.put(conflicted_key, Vec::new());
            }
        }
        self.put_order_row(depth, id, &row, None)
    }

    fn unapply(&mut self, depth: u64, id: &EntryId) -> Result<(), StorageError> {
        let row = self
            .order_row(depth, id)?
            .ok_or_else(|| corrupt("an entry to unwind has no place"))?;
        if row.conflict.is_some() {
            return Ok(());
        }
        if let Some(key) = &row.executed {
            self.rows.delete(key.clone())?;
        }
        let signed = self
            .entry(id)?
            .ok_or_else(|| corrupt("a placed entry is missing"))?;
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

    /// Adds (`forward`) or takes back allowance deltas, checked when they
    /// were applied, and moves the member's reserved amount with them.
    fn move_allowances(
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
