//! What the ledger's commands take and answer, and why they fail.

use std::collections::BTreeMap;

use icn_schemas::ledger::{DecodeError, Entry, EntryId};
use icn_schemas::{DelegationError, Did, DocId, SchemaError};

use super::fold::{Conflict, Status};
use crate::authority::Denied;
use crate::storage::StorageError;

/// Most entries a co-op's pending set holds while they wait for parents or
/// co-op heads.
pub const MAX_PENDING: usize = 10_000;

/// Most of those one signer key may hold, so that no single device or node
/// can crowd out everyone else's waiting entries.
pub const MAX_PENDING_PER_SIGNER: usize = 1_000;

/// Why an entry was refused. A refused entry is never stored or forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryRefusal {
    /// Not a canonical entry.
    #[error("malformed entry: {0}")]
    Decode(#[from] DecodeError),
    /// For another co-op.
    #[error("the entry is for co-op {0}, not this one")]
    WrongCoop(DocId),
    /// The signature is not the signer's.
    #[error("the signature is not by the signer key {0}")]
    BadSignature(Did),
    /// The delegation does not verify.
    #[error("bad delegation: {0}")]
    BadDelegation(DelegationError),
    /// The delegation names another member or node.
    #[error("the delegation is not from the entry's author to its signer")]
    DelegationMismatch,
    /// The entry's time is outside the delegation's validity.
    #[error("the entry's time is outside the delegation's validity")]
    DelegationNotLive,
    /// The author may not write entries.
    #[error("not permitted: {0}")]
    Denied(Denied),
    /// Postings of a unit do not sum to zero.
    #[error("the postings in {0} do not sum to zero")]
    Unbalanced(String),
    /// The credits (or the debits) of a unit do not fit in 64 bits.
    #[error("the postings in {0} overflow 64 bits")]
    Overflow(String),
    /// A unit the co-op's policy does not define.
    #[error("unit {0} is not in the co-op's policy")]
    UnknownUnit(String),
    /// A debit of an account that is not the author's.
    #[error("{author} may not debit {account}")]
    NotTheirAccount {
        /// The author.
        author: Did,
        /// The account debited.
        account: String,
    },
    /// A posting for a member account of someone who is not a member (never
    /// was, or was removed) at the cited heads.
    #[error("{0} is not a member of the co-op")]
    NotAMember(Did),
    /// An allowance entry signed by the wrong key.
    #[error("{0}")]
    BadAllowance(&'static str),
    /// An entry citing a decision that no decision could allow.
    #[error("{0}")]
    BadDecision(&'static str),
    /// The pending set is full, or holds this signer's share.
    #[error("the pending set is full ({MAX_PENDING} entries, {MAX_PENDING_PER_SIGNER} per signer)")]
    PendingFull,
}

/// What became of one entry given to [`crate::Engine::ingest_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingest {
    /// Stored and folded.
    Stored(EntryId),
    /// Waiting for parents or co-op heads.
    Pending(EntryId),
    /// Already held.
    Known(EntryId),
}

/// Why a ledger command or query failed. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// No such co-op.
    #[error("unknown co-op {0}")]
    UnknownCoop(DocId),
    /// An amount that must be positive is not.
    #[error("the amount must be positive")]
    NotPositive,
    /// A settlement from a member to itself.
    #[error("a member cannot settle with itself")]
    SelfSettlement,
    /// The co-op's policy has no exchange rate between the units.
    #[error("the policy has no rate from {from} to {to}")]
    NoRate {
        /// The unit paid.
        from: String,
        /// The unit received.
        to: String,
    },
    /// At the policy's rate, the amount is not a whole amount of the unit
    /// received.
    #[error("{amount} {from} does not convert to a whole amount of {to} at the policy's rate")]
    InexactConversion {
        /// The amount paid.
        amount: i64,
        /// The unit paid.
        from: String,
        /// The unit received.
        to: String,
    },
    /// An amount, or its conversion, does not fit in 64 bits.
    #[error("the amount overflows 64 bits")]
    AmountOverflow,
    /// The proposal has no close (or does not exist).
    #[error("proposal {0} is not closed")]
    NotClosed(String),
    /// The proposal's close is not an accepted budget, freeze or unfreeze.
    #[error("proposal {0} is not an accepted budget, freeze or unfreeze")]
    NotExecutable(String),
    /// A history cursor that names no entry of this ledger.
    #[error("unknown cursor {0}")]
    UnknownCursor(EntryId),
    /// Ledger heads that name an entry this ledger does not hold.
    #[error("{0} is not a known entry")]
    UnknownHead(EntryId),
    /// The co-op document does not read as a co-op.
    #[error("the co-op document: {0}")]
    Document(#[from] SchemaError),
    /// The entry would be refused by every peer.
    #[error(transparent)]
    Refused(#[from] EntryRefusal),
    /// The entry would not count: it exceeds a credit limit.
    #[error("{0}")]
    Conflict(Conflict),
    /// Storing failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<DecodeError> for LedgerError {
    fn from(e: DecodeError) -> Self {
        LedgerError::Refused(EntryRefusal::Decode(e))
    }
}

/// A settlement: `amount` of `unit` from the author to `to`.
#[derive(Debug, Clone)]
pub struct Settle {
    /// Who receives it.
    pub to: Did,
    /// How much, in the unit's smallest step; positive.
    pub amount: i64,
    /// Unit id from the co-op's policy.
    pub unit: String,
    /// Free text.
    pub memo: String,
}

/// A cross-unit settlement: `amount` of `from_unit` paid by the author, and
/// its value at the policy's rate in `to_unit` received by `to`.
#[derive(Debug, Clone)]
pub struct Convert {
    /// Who receives the converted amount; `None` for the author itself.
    pub to: Option<Did>,
    /// How much of `from_unit`, positive.
    pub amount: i64,
    /// The unit paid.
    pub from_unit: String,
    /// The unit received.
    pub to_unit: String,
    /// Free text.
    pub memo: String,
}

/// A member's position in one unit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitPosition {
    /// Unit id.
    pub unit: String,
    /// Net balance.
    pub balance: i64,
    /// How far below zero the member may go.
    pub credit_limit: i64,
    /// Set aside in device allowances: `Σ allowances`.
    pub reserved: i64,
    /// `balance + credit_limit − reserved`: what the member's general credit
    /// can still spend.
    pub available: i64,
    /// Unspent allowance per device key.
    pub allowances: BTreeMap<Did, i64>,
}

/// One entry of a history, with its status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryItem {
    /// The entry's id.
    pub id: EntryId,
    /// The entry.
    pub entry: Entry,
    /// Applied or conflicted.
    pub status: Status,
}

/// A page of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryPage {
    /// The entries, in fold order.
    pub items: Vec<HistoryItem>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_cursor: Option<EntryId>,
}

/// Every balance, the sum per unit, and the conflicted entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialBalance {
    /// (account, unit) → balance, non-zero ones.
    pub accounts: BTreeMap<(String, String), i64>,
    /// Unit → sum of all balances (zero).
    pub totals: BTreeMap<String, i128>,
    /// Entries held.
    pub entries: usize,
    /// Conflicted entries, in fold order.
    pub conflicted: Vec<EntryId>,
}
