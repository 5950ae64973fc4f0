//! The mutual-credit ledger: signed, content-addressed entries validated
//! before they are stored, and balances folded deterministically.
//!
//! An entry is checked before it is stored or forwarded:
//!
//! 1. it decodes canonically and is for this co-op;
//! 2. its signature is by its signer key, and a delegation (when a node signs
//!    for the author) is the author's, names the signer, covers the entry's
//!    time, and grants `ledger:write`;
//! 3. its cited co-op heads and its parents are known; otherwise it waits in
//!    a bounded pending set and is checked again when they arrive;
//! 4. at the cited co-op heads, the signer is a live device of the author (or
//!    the author's DID key, for a delegation), and the author is an active
//!    member or admin;
//! 5. its postings sum to zero per unit, in units the policy defines, and it
//!    debits only the author's own account (treasury debits need a decision
//!    receipt, which arrives with governance).
//!
//! Credit limits are read at the cited heads too, so where an entry lands in
//! the fold, and whether it counts, is the same on every replica ([`fold`]).

pub(crate) mod fold;
mod rows;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use automerge::{Automerge, ChangeHash};
use icn_schemas::coop::{self, Role};
use icn_schemas::domain::Payload;
use icn_schemas::ledger::{Account, Body, DecodeError, Entry, EntryId, Posting, SignedEntry};
use icn_schemas::tally::{DecisionReceipt, Outcome};
use icn_schemas::{DelegationError, Did, DocId, DocKind, Reader, Scope};

pub use fold::{Conflict, Status};

use crate::Engine;
use crate::authority::Denied;
use crate::engine::{Committed, Signer};
use crate::identity;
use crate::storage::StorageError;
pub(crate) use fold::Decision;
use fold::{Decisions, Fold, Judged};

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

/// What became of one entry given to [`Engine::ingest_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingest {
    /// Stored and folded.
    Stored(EntryId),
    /// Waiting for parents or co-op heads.
    Pending(EntryId),
    /// Already held.
    Known(EntryId),
}

/// Why a ledger operation failed. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// No such co-op.
    #[error("unknown co-op {0}")]
    UnknownCoop(DocId),
    /// The request itself is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
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

/// A co-op's ledger: the fold (stored) and the entries waiting (in memory).
pub(crate) struct LedgerState {
    fold: Fold,
    pending: HashMap<EntryId, SignedEntry>,
    /// How many of `pending` each signer key holds.
    pending_by_signer: HashMap<Did, usize>,
}

impl LedgerState {
    pub(crate) fn open(coop: DocId, store: &crate::Store) -> Self {
        LedgerState {
            fold: Fold::open(coop, store.ledger_tree().clone()),
            pending: HashMap::new(),
            pending_by_signer: HashMap::new(),
        }
    }

    /// Commits what the fold wrote since the last commit, atomically; on
    /// failure forgets it, so the fold stays what is stored.
    fn commit(&mut self, store: &crate::Store) -> Result<(), StorageError> {
        let Some(batch) = self.fold.take_batch() else {
            return Ok(());
        };
        store.commit_ledger(batch)
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
}

fn heads_of(entry: &Entry) -> Vec<ChangeHash> {
    entry.coop_heads.iter().map(|h| ChangeHash(*h)).collect()
}

/// The co-op document as of `heads` (sorted). Most entries cite the
/// document's current heads, and reading "now" skips computing a clock for
/// every read.
fn reader_at<'a>(doc: &'a Automerge, heads: &'a [ChangeHash]) -> Reader<'a> {
    if doc.get_heads() == heads {
        Reader::now(doc)
    } else {
        Reader::at(doc, heads)
    }
}

/// Whether an entry is exactly a conversion: the author pays `x` of one unit
/// to the treasury, and the treasury pays `y` of another unit to a member,
/// with `y / x` the policy's rate at the cited heads, exactly.
fn is_conversion(r: Reader<'_>, entry: &Entry) -> bool {
    let postings = entry.postings();
    if postings.len() != 4 {
        return false;
    }
    let find = |account: &dyn Fn(&Account) -> bool, positive: bool| {
        let mut found = postings
            .iter()
            .filter(|p| account(&p.account) && (p.amount > 0) == positive);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    };
    let author = entry.author;
    let (Some(paid), Some(taken), Some(given), Some(received)) = (
        find(&|a| *a == Account::Member(author), false),
        find(&|a| *a == Account::Treasury, true),
        find(&|a| *a == Account::Treasury, false),
        find(&|a| matches!(a, Account::Member(_)), true),
    ) else {
        return false;
    };
    let (x, y) = (taken.amount, received.amount);
    paid.unit == taken.unit
        && given.unit == received.unit
        && paid.unit != given.unit
        && paid.amount == -x
        && given.amount == -y
        && coop::rate(r, &paid.unit, &given.unit).is_some_and(|(num, den)| {
            i128::from(y) * i128::from(den) == i128::from(x) * i128::from(num)
        })
}

/// Checks what needs no state: co-op, signature, delegation.
/// `signature_checked` says the signature already passed in a batch.
fn check_signed(
    coop: &DocId,
    e: &SignedEntry,
    signature_checked: bool,
) -> Result<(), EntryRefusal> {
    let entry = &e.entry;
    if entry.coop != *coop {
        return Err(EntryRefusal::WrongCoop(entry.coop));
    }
    if !signature_checked {
        identity::verify(&entry.signer, &entry.signing_message()?, &e.signature)
            .map_err(|_| EntryRefusal::BadSignature(entry.signer))?;
    }
    if let Some(d) = &entry.delegation {
        let d = identity::verify_delegation(d).map_err(EntryRefusal::BadDelegation)?;
        if d.member != entry.author || d.node != entry.signer {
            return Err(EntryRefusal::DelegationMismatch);
        }
        if !d.is_live_at(entry.timestamp / 1000) {
            return Err(EntryRefusal::DelegationNotLive);
        }
        if !d.allows(Scope::LedgerWrite) {
            return Err(EntryRefusal::Denied(Denied::MissingScope(
                Scope::LedgerWrite,
            )));
        }
    }
    Ok(())
}

/// Checks an entry whose signature passed, against the co-op document and
/// what the ledger (or this batch) holds.
type StandingKey = (Vec<[u8; 32]>, Did, Did);

/// Answers read from the co-op document at some heads, remembered for one
/// call: the entries of a batch mostly cite the same heads, authors and units,
/// and each read of the document costs microseconds.
#[derive(Default)]
struct Lookups {
    /// (cited heads, author, device) → may the author write through it.
    standing: HashMap<StandingKey, Result<(), EntryRefusal>>,
    limit: HashMap<(Vec<[u8; 32]>, Did), i64>,
    unit: HashMap<(Vec<[u8; 32]>, String), bool>,
}

/// Judges an entry by the co-op document at its cited heads, when they are
/// all here (`None` when not: it waits). Only entries valid at their heads
/// may then wait for their parents, so a stranger cannot fill the pending
/// set.
fn check_state(
    doc: &Automerge,
    e: &SignedEntry,
    lookups: &mut Lookups,
) -> Result<Option<Judged>, EntryRefusal> {
    let heads = heads_of(&e.entry);
    if !heads
        .iter()
        .all(|h| doc.get_change_meta_by_hash(h).is_some())
    {
        return Ok(None);
    }
    check_at_heads(doc, &heads, e, lookups).map(Some)
}

/// Checks an entry against the co-op document at its cited `heads`, which
/// are all known; returns the credit limits of the accounts it debits and,
/// for an entry citing a decision, the co-op's treasury domain there.
fn check_at_heads(
    doc: &Automerge,
    heads: &[ChangeHash],
    e: &SignedEntry,
    lookups: &mut Lookups,
) -> Result<Judged, EntryRefusal> {
    let limits = check_body(doc, heads, e, lookups)?;
    let treasury = match e.entry.decision {
        None => None,
        Some(_) => Some(coop::treasury_domain(reader_at(doc, heads)).ok_or(
            EntryRefusal::BadDecision(
                "the co-op's policy names no treasury domain whose decisions entries execute",
            ),
        )?),
    };
    Ok(Judged { limits, treasury })
}

/// An entry citing a decision executes a budget (the treasury pays one
/// member in one unit) or a freeze; what the decision decided is checked in
/// the fold, where whether it counts is known.
fn check_decision_shape(entry: &Entry) -> Result<(), EntryRefusal> {
    match &entry.body {
        Body::Freeze { .. } => Ok(()),
        Body::Transfer {
            postings,
            from_allowance: false,
        } if postings.len() == 2
            && postings[0].unit == postings[1].unit
            && postings
                .iter()
                .any(|p| p.account == Account::Treasury && p.amount < 0)
            && postings
                .iter()
                .any(|p| matches!(p.account, Account::Member(_)) && p.amount > 0) =>
        {
            Ok(())
        }
        _ => Err(EntryRefusal::BadDecision(
            "an entry citing a decision is a budget allocation (treasury to one member) or a freeze",
        )),
    }
}

/// The body's rules; returns the credit limits of the accounts it debits.
fn check_body(
    doc: &Automerge,
    heads: &[ChangeHash],
    e: &SignedEntry,
    lookups: &mut Lookups,
) -> Result<Vec<([u8; 32], i64)>, EntryRefusal> {
    let entry = &e.entry;
    let r = reader_at(doc, heads);
    let device = if entry.delegation.is_some() {
        entry.author
    } else {
        entry.signer
    };
    lookups
        .standing
        .entry((entry.coop_heads.clone(), entry.author, device))
        .or_insert_with(|| {
            if !coop::is_live_device(r, &entry.author, &device) {
                return Err(EntryRefusal::Denied(Denied::NotALiveDevice {
                    actor: entry.signer,
                }));
            }
            match coop::Standing::read(r, &entry.author) {
                Some(s) if s.is_active() && s.role != Role::Observer => Ok(()),
                _ => Err(EntryRefusal::Denied(Denied::InactiveMember(entry.author))),
            }
        })
        .clone()?;
    let decided = entry.decision.is_some();
    if decided {
        check_decision_shape(entry)?;
    }
    let unit_known = |lookups: &mut Lookups, unit: &str| {
        let known = *lookups
            .unit
            .entry((entry.coop_heads.clone(), unit.to_owned()))
            .or_insert_with(|| coop::has_unit(r, unit));
        if known {
            Ok(())
        } else {
            Err(EntryRefusal::UnknownUnit(unit.to_owned()))
        }
    };
    let author_limit = |lookups: &mut Lookups| {
        *lookups
            .limit
            .entry((entry.coop_heads.clone(), entry.author))
            .or_insert_with(|| coop::credit_limit(r, &entry.author))
    };
    let owner = entry.signer == entry.author && entry.delegation.is_none();
    let postings = match &entry.body {
        Body::Transfer {
            postings,
            from_allowance,
        } => {
            if *from_allowance && owner {
                return Err(EntryRefusal::BadAllowance(
                    "a member's DID key spends its general credit; allowances are for its other keys",
                ));
            }
            postings
        }
        Body::Grant { device, unit, .. } => {
            if !owner {
                return Err(EntryRefusal::BadAllowance(
                    "only the member's DID key grants allowances",
                ));
            }
            if *device == entry.author {
                return Err(EntryRefusal::BadAllowance(
                    "an allowance is for a key other than the member's DID key",
                ));
            }
            unit_known(lookups, unit)?;
            let limit = author_limit(lookups);
            return Ok(vec![(*entry.author.as_bytes(), limit)]);
        }
        Body::Release { unit, .. } => {
            if owner {
                return Err(EntryRefusal::BadAllowance(
                    "a release is signed by the key whose allowance it gives back",
                ));
            }
            unit_known(lookups, unit)?;
            return Ok(Vec::new());
        }
        // Under a decision, any active member records the freeze; whether
        // the decision counts is the fold's to judge.
        Body::Freeze { .. } if decided => return Ok(Vec::new()),
        Body::Freeze { .. } => {
            let admin = coop::Standing::read(r, &entry.author).is_some_and(|s| s.is_admin());
            if !admin {
                return Err(EntryRefusal::Denied(Denied::Forbidden {
                    member: entry.author,
                    path: "the ledger's frozen accounts".into(),
                    reason: "only admins freeze and unfreeze accounts",
                }));
            }
            let delegated_without_admin = entry.delegation.as_ref().is_some_and(|d| {
                !d.statement
                    .parse::<icn_schemas::Delegation>()
                    .is_ok_and(|d| d.allows(Scope::CoopAdmin))
            });
            if delegated_without_admin {
                return Err(EntryRefusal::Denied(Denied::MissingScope(Scope::CoopAdmin)));
            }
            return Ok(Vec::new());
        }
    };
    // Per unit: credits and debits, each summed with checked arithmetic.
    let mut sums: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut limits = Vec::new();
    for p in postings {
        let (credits, debits) = sums.entry(p.unit.as_str()).or_insert((0, 0));
        let side = if p.amount > 0 { credits } else { debits };
        *side = side
            .checked_add(p.amount)
            .ok_or_else(|| EntryRefusal::Overflow(p.unit.clone()))?;
        if p.amount < 0 {
            match p.account {
                Account::Member(did) if did == entry.author => {
                    if limits.is_empty() {
                        limits.push((*did.as_bytes(), author_limit(lookups)));
                    }
                }
                // The treasury is debited only by a conversion at the
                // policy's rate, where it takes in what it pays out, or
                // under a decision.
                Account::Treasury if decided || is_conversion(r, entry) => {}
                other => {
                    return Err(EntryRefusal::NotTheirAccount {
                        author: entry.author,
                        account: other.to_string(),
                    });
                }
            }
        }
    }
    for (unit, (credits, debits)) in sums {
        // Both fit in i64 and have opposite signs, so this cannot overflow.
        if credits + debits != 0 {
            return Err(EntryRefusal::Unbalanced(unit.to_owned()));
        }
        unit_known(lookups, unit)?;
    }
    Ok(limits)
}

/// Opens a co-op's ledger. A store of layout version 1 kept only the
/// entries; they are folded into the new layout once, here, exactly as a
/// peer's entries are (stored entries were validated when they arrived; only
/// their credit limits are read again).
pub(crate) fn open(
    store: &crate::Store,
    coop: &DocId,
    doc: &Automerge,
    decisions: &dyn Decisions,
) -> Result<LedgerState, StorageError> {
    let mut state = LedgerState::open(*coop, store);
    for bytes in store.v1_entries(coop)? {
        let (e, id) = SignedEntry::decode(&bytes).map_err(|err| StorageError::Corrupt {
            tree: crate::storage::layout::V1_LEDGER_ENTRIES,
            reason: err.to_string(),
        })?;
        let heads = heads_of(&e.entry);
        let r = reader_at(doc, &heads);
        // The author is the only member an entry debits, and a grant is
        // judged by the author's limit too.
        let limited = matches!(e.entry.body, Body::Grant { .. })
            || e.entry
                .postings()
                .iter()
                .any(|p| p.amount < 0 && p.account == Account::Member(e.entry.author));
        let judged = Judged {
            limits: if limited {
                vec![(
                    *e.entry.author.as_bytes(),
                    coop::credit_limit(r, &e.entry.author),
                )]
            } else {
                Vec::new()
            },
            treasury: e.entry.decision.and_then(|_| coop::treasury_domain(r)),
        };
        state.fold.insert(id, &e, &bytes, judged, decisions)?;
    }
    state.commit(store)?;
    Ok(state)
}

/// The accepted decisions of a domain document that ledger entries may
/// execute, by receipt hash: each proposal's counted close, when accepted,
/// with a budget, freeze or unfreeze payload.
pub(crate) fn counted_decisions(domain_id: &DocId, r: Reader<'_>) -> HashMap<[u8; 32], Decision> {
    if DocKind::of(r) != Some(DocKind::Domain) {
        return HashMap::new();
    }
    let Ok(d) = icn_schemas::domain::Domain::read(r) else {
        return HashMap::new();
    };
    d.proposals
        .iter()
        .filter_map(|(id, p)| {
            let close = p.close.as_ref()?;
            let payload = p.payload.clone()?;
            let executable = matches!(
                payload,
                Payload::Budget { .. } | Payload::Freeze { .. } | Payload::Unfreeze { .. }
            );
            (close.outcome == Outcome::Accepted && executable).then(|| {
                let receipt = DecisionReceipt::new(*domain_id, id, close).hash();
                let decision = Decision {
                    domain: *domain_id,
                    proposal: id.clone(),
                    payload,
                };
                (receipt, decision)
            })
        })
        .collect()
}

/// Accepted decisions by receipt hash.
type DecisionsByReceipt = HashMap<[u8; 32], Decision>;

/// Reads a domain document's accepted decisions.
type ReadDecisions<'a> = Box<dyn Fn(&DocId) -> Option<DecisionsByReceipt> + 'a>;

/// Decisions read from domain documents, each domain once per use.
pub(crate) struct DocDecisions<'a> {
    /// The co-op whose ledger is being folded: its document is locked then,
    /// and is never a domain.
    coop: DocId,
    read: ReadDecisions<'a>,
    cache: std::cell::RefCell<HashMap<DocId, HashMap<[u8; 32], Decision>>>,
}

impl<'a> DocDecisions<'a> {
    pub(crate) fn new(
        coop: DocId,
        read: impl Fn(&DocId) -> Option<HashMap<[u8; 32], Decision>> + 'a,
    ) -> Self {
        DocDecisions {
            coop,
            read: Box::new(read),
            cache: Default::default(),
        }
    }
}

impl Decisions for DocDecisions<'_> {
    fn decision(&self, domain: &DocId, receipt: &[u8; 32]) -> Option<Decision> {
        if *domain == self.coop {
            return None;
        }
        let mut cache = self.cache.borrow_mut();
        if !cache.contains_key(domain) {
            let found = (self.read)(domain).unwrap_or_default();
            cache.insert(*domain, found);
        }
        cache.get(domain)?.get(receipt).cloned()
    }
}

impl Engine {
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
        let coops: Vec<DocId> = self.ledgers().keys().copied().collect();
        for coop in coops {
            if coop == *domain {
                continue;
            }
            self.with_ledger(&coop, |state, _| {
                let decisions = self.decisions(coop);
                let folded = state
                    .fold
                    .refold_decisions(receipts, &decisions)
                    .and_then(|()| state.commit(self.store()));
                if folded.is_err() {
                    state.fold.discard();
                }
                Ok(folded?)
            })?;
        }
        self.store().make_durable()?;
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
            .ok_or_else(|| LedgerError::Invalid(format!("proposal {proposal} is not closed")))?;
        let hash = receipt.hash();
        let decision = self
            .read(domain, |r| counted_decisions(domain, r))
            .and_then(|mut d| d.remove(&hash))
            .ok_or_else(|| {
                LedgerError::Invalid(format!(
                    "proposal {proposal} is not an accepted budget, freeze or unfreeze"
                ))
            })?;
        self.record_with_decision(coop, signer, "decision", Some(hash), |_| {
            Ok(match decision.payload {
                Payload::Budget {
                    amount,
                    recipient,
                    unit,
                    ..
                } => Body::Transfer {
                    postings: vec![
                        Posting {
                            account: Account::Member(recipient),
                            unit: unit.clone(),
                            amount,
                        },
                        Posting {
                            account: Account::Treasury,
                            unit,
                            amount: amount.checked_neg().ok_or_else(|| {
                                LedgerError::Invalid("the budget amount overflows".into())
                            })?,
                        },
                    ],
                    from_allowance: false,
                },
                Payload::Freeze { did } => Body::Freeze {
                    account: did,
                    frozen: true,
                },
                Payload::Unfreeze { did } => Body::Freeze {
                    account: did,
                    frozen: false,
                },
                _ => {
                    return Err(LedgerError::Invalid(
                        "only budgets, freezes and unfreezes execute in the ledger".into(),
                    ));
                }
            })
        })
    }

    fn with_ledger<T>(
        &self,
        coop: &DocId,
        f: impl FnOnce(&mut LedgerState, &Automerge) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let handle = self.handle(coop).ok_or(LedgerError::UnknownCoop(*coop))?;
        // Lock order: ledgers, then the document.
        let mut ledgers = self.ledgers();
        let doc = handle.lock().unwrap_or_else(|p| p.into_inner());
        if DocKind::of(Reader::now(&doc.doc)) != Some(DocKind::Coop) {
            return Err(LedgerError::UnknownCoop(*coop));
        }
        let state = ledgers
            .entry(*coop)
            .or_insert_with(|| LedgerState::open(*coop, self.store()));
        f(state, &doc.doc)
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
        let (results, stored) = self.ingest_staged(coop, encoded)?;
        // Entries released from the pending set count too.
        if !stored.is_empty() {
            self.store().make_durable()?;
            self.notify(Committed::Entries {
                coop: *coop,
                entries: stored,
            });
        }
        Ok(results)
    }

    /// Validates and stages entries under the ledger's lock; returns the
    /// outcome of each input and every entry stored, parents first.
    #[allow(clippy::type_complexity)]
    fn ingest_staged(
        &self,
        coop: &DocId,
        encoded: Vec<Vec<u8>>,
    ) -> Result<(Vec<Result<Ingest, EntryRefusal>>, Vec<(EntryId, Arc<[u8]>)>), LedgerError> {
        self.with_ledger(coop, |state, doc| {
            let mut results = Vec::with_capacity(encoded.len());
            let mut lookups = Lookups::default();
            let mut accepted_ids: HashSet<EntryId> = HashSet::new();
            // Every signature of the call in one batch check; if any fails,
            // each entry is checked on its own below to find which.
            let decoded: Vec<Result<(SignedEntry, EntryId), DecodeError>> =
                encoded.iter().map(|b| SignedEntry::decode(b)).collect();
            // Read from the bytes: a decoded entry is canonical, so its
            // unsigned encoding is its bytes less the signature.
            let messages: Vec<Option<[u8; 32]>> = decoded
                .iter()
                .zip(&encoded)
                .map(|(d, bytes)| {
                    d.as_ref()
                        .ok()
                        .and_then(|_| SignedEntry::signing_message_of(bytes))
                })
                .collect();
            let batch: Vec<identity::SignedMessage<'_>> = decoded
                .iter()
                .zip(&messages)
                .filter_map(|(d, m)| {
                    let (e, _) = d.as_ref().ok()?;
                    Some(identity::SignedMessage {
                        did: &e.entry.signer,
                        message: m.as_ref()?,
                        signature: &e.signature,
                    })
                })
                .collect();
            let batch_ok = !batch.is_empty() && identity::verify_batch(&batch);
            let decisions = self.decisions(*coop);
            drop(batch);
            let folded = (|| {
                let mut stored = Vec::new();
                for (bytes, decoded) in encoded.into_iter().zip(decoded) {
                    let outcome = match decoded {
                        Err(e) => Err(EntryRefusal::Decode(e)),
                        Ok((e, id)) => self.judge(
                            coop,
                            &decisions,
                            state,
                            doc,
                            &mut lookups,
                            e,
                            id,
                            bytes,
                            batch_ok,
                            &mut accepted_ids,
                            &mut stored,
                        )?,
                    };
                    results.push(outcome);
                }
                self.release_pending(
                    &decisions,
                    state,
                    doc,
                    &mut lookups,
                    &mut accepted_ids,
                    &mut stored,
                )?;
                state.commit(self.store())?;
                Ok::<_, LedgerError>(stored)
            })();
            match folded {
                Ok(stored) => Ok((results, stored)),
                Err(e) => {
                    // Nothing of this call is stored; the fold is as before.
                    state.fold.discard();
                    Err(e)
                }
            }
        })
    }

    /// Judges one decoded entry of a call and folds it when it is valid
    /// and complete, or parks it when it waits.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        coop: &DocId,
        decisions: &dyn Decisions,
        state: &mut LedgerState,
        doc: &Automerge,
        lookups: &mut Lookups,
        e: SignedEntry,
        id: EntryId,
        bytes: Vec<u8>,
        batch_ok: bool,
        accepted: &mut HashSet<EntryId>,
        stored: &mut Vec<(EntryId, Arc<[u8]>)>,
    ) -> Result<Result<Ingest, EntryRefusal>, LedgerError> {
        if accepted.contains(&id) || state.pending.contains_key(&id) || state.fold.contains(&id)? {
            return Ok(Ok(Ingest::Known(id)));
        }
        if let Err(refusal) = check_signed(coop, &e, batch_ok) {
            return Ok(Err(refusal));
        }
        let limits = match check_state(doc, &e, lookups) {
            Err(refusal) => return Ok(Err(refusal)),
            Ok(limits) => limits,
        };
        match limits {
            Some(limits) if state.parents_known(&e, accepted)? => {
                state.fold.insert(id, &e, &bytes, limits, decisions)?;
                accepted.insert(id);
                stored.push((id, bytes.into()));
                Ok(Ok(Ingest::Stored(id)))
            }
            _ => {
                let from_signer = state.pending_by_signer.entry(e.entry.signer).or_insert(0);
                if state.pending.len() >= MAX_PENDING || *from_signer >= MAX_PENDING_PER_SIGNER {
                    return Ok(Err(EntryRefusal::PendingFull));
                }
                *from_signer += 1;
                state.pending.insert(id, e);
                Ok(Ok(Ingest::Pending(id)))
            }
        }
    }

    /// Folds the waiting entries that are complete now, and then those that
    /// complete in turn, parents first; returns how many were folded. Each
    /// waiting entry is looked at once, and again only when one of its
    /// parents is folded, so a long chain that arrived children first costs
    /// linear time, not quadratic. Appends what it folds to `stored`.
    fn release_pending(
        &self,
        decisions: &dyn Decisions,
        state: &mut LedgerState,
        doc: &Automerge,
        lookups: &mut Lookups,
        accepted: &mut HashSet<EntryId>,
        stored: &mut Vec<(EntryId, Arc<[u8]>)>,
    ) -> Result<(), LedgerError> {
        let mut children: HashMap<EntryId, Vec<EntryId>> = HashMap::new();
        for (id, e) in &state.pending {
            for p in &e.entry.parents {
                children.entry(*p).or_default().push(*id);
            }
        }
        let mut queue: Vec<EntryId> = state.pending.keys().copied().collect();
        while let Some(id) = queue.pop() {
            let Some(e) = state.pending.get(&id) else {
                continue;
            };
            let heads_known = heads_of(&e.entry)
                .iter()
                .all(|h| doc.get_change_meta_by_hash(h).is_some());
            if !heads_known || !state.parents_known(e, accepted)? {
                continue;
            }
            let Some(e) = state.pending.remove(&id) else {
                continue;
            };
            if let Some(n) = state.pending_by_signer.get_mut(&e.entry.signer) {
                *n -= 1;
                if *n == 0 {
                    state.pending_by_signer.remove(&e.entry.signer);
                }
            }
            // Its signature passed when it arrived.
            if let Ok(Some(limits)) = check_state(doc, &e, lookups) {
                let bytes = e.encode()?;
                state.fold.insert(id, &e, &bytes, limits, decisions)?;
                accepted.insert(id);
                stored.push((id, bytes.into()));
                if let Some(kids) = children.get(&id) {
                    queue.extend(kids.iter().copied());
                }
            }
        }
        Ok(())
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
            return Err(LedgerError::Invalid("the amount must be positive".into()));
        }
        self.record(coop, signer, &settle.memo, |author| {
            if author == settle.to {
                return Err(LedgerError::Invalid(
                    "a member cannot settle with itself".into(),
                ));
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
        })
    }

    /// Writes an entry with the body `body(author)` gives for the signer's
    /// member: built on the current heads, signed, validated exactly
    /// as a peer would validate it, refused if it would not count at the end
    /// of the current order, then staged, folded and made durable.
    fn record(
        &self,
        coop: &DocId,
        signer: &Signer,
        memo: &str,
        body: impl FnOnce(Did) -> Result<Body, LedgerError>,
    ) -> Result<(EntryId, Status), LedgerError> {
        self.record_with_decision(coop, signer, memo, None, body)
    }

    /// [`Engine::record`], citing decision receipt `decision`.
    fn record_with_decision(
        &self,
        coop: &DocId,
        signer: &Signer,
        memo: &str,
        decision: Option<[u8; 32]>,
        body: impl FnOnce(Did) -> Result<Body, LedgerError>,
    ) -> Result<(EntryId, Status), LedgerError> {
        let key = signer.key();
        let delegation = signer.delegation().cloned();
        // Staged under the ledger's lock, made durable after it is released,
        // so concurrent writers share one sync.
        let recorded = self.with_ledger(coop, |state, doc| {
            let decisions = self.decisions(*coop);
            let r = Reader::now(doc);
            let author = match &delegation {
                Some(d) => {
                    identity::verify_delegation(d)
                        .map_err(EntryRefusal::BadDelegation)?
                        .member
                }
                None => {
                    coop::device_owner(r, &key.did())
                        .ok_or(EntryRefusal::Denied(Denied::NotALiveDevice {
                            actor: key.did(),
                        }))?
                        .did
                }
            };
            let mut body = body(author)?;
            let owner = key.did() == author && delegation.is_none();
            if let Body::Transfer {
                postings,
                from_allowance,
            } = &mut body
            {
                postings.sort_by(|a, b| (a.account, &a.unit).cmp(&(b.account, &b.unit)));
                // Once the member keeps allowances in a unit, its other keys
                // spend that unit from their own.
                let mut granted = false;
                for p in postings.iter() {
                    if p.account == Account::Member(author) && p.amount < 0 {
                        granted |= state.fold.has_grants(&author, &p.unit)?;
                    }
                }
                *from_allowance = !owner && granted;
            }
            let entry = Entry {
                coop: *coop,
                parents: state.fold.heads()?,
                author,
                signer: key.did(),
                timestamp: now_millis(),
                coop_heads: doc.get_heads().iter().map(|h| h.0).collect(),
                body,
                memo: memo.to_owned(),
                decision,
                delegation,
            };
            let signed = SignedEntry {
                signature: key.sign(&entry.signing_message()?),
                entry,
            };
            check_signed(coop, &signed, false)?;
            let limits = check_state(doc, &signed, &mut Lookups::default())?
                .ok_or_else(|| LedgerError::Invalid("the co-op's heads are not held".into()))?;
            state
                .fold
                .check_at_end(&signed, &limits, &decisions)?
                .map_err(LedgerError::Conflict)?;
            let bytes = signed.encode()?;
            let id = EntryId(*blake3::hash(&bytes).as_bytes());
            let folded = state
                .fold
                .insert(id, &signed, &bytes, limits, &decisions)
                .and_then(|()| state.fold.status(&id))
                .and_then(|status| state.commit(self.store()).map(|()| status));
            match folded {
                Ok(status) => Ok((id, status.unwrap_or(Status::Applied), bytes)),
                Err(e) => {
                    state.fold.discard();
                    Err(e.into())
                }
            }
        })?;
        self.store().make_durable()?;
        let (id, status, bytes) = recorded;
        self.notify(Committed::Entries {
            coop: *coop,
            entries: vec![(id, bytes.into())],
        });
        Ok((id, status))
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
        let rate = self
            .read(coop, |r| {
                coop::rate(r, &convert.from_unit, &convert.to_unit)
            })
            .ok_or(LedgerError::UnknownCoop(*coop))?
            .ok_or_else(|| {
                LedgerError::Invalid(format!(
                    "the policy has no rate from {} to {}",
                    convert.from_unit, convert.to_unit
                ))
            })?;
        let (num, den) = (i128::from(rate.0), i128::from(rate.1));
        let value = i128::from(convert.amount) * num;
        if convert.amount <= 0 || value % den != 0 {
            return Err(LedgerError::Invalid(
                "the amount must be positive and convert to a whole amount".into(),
            ));
        }
        let received = i64::try_from(value / den)
            .map_err(|_| LedgerError::Invalid("the converted amount overflows".into()))?;
        self.record(coop, signer, &convert.memo, |author| {
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
        self.record(coop, signer, memo, |_| {
            Ok(Body::Freeze {
                account: *account,
                frozen,
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
            return Err(LedgerError::Invalid("the amount must be positive".into()));
        }
        self.record(coop, signer, "allowance", |_| {
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
            return Err(LedgerError::Invalid("the amount must be positive".into()));
        }
        self.record(coop, signer, "release", |_| {
            Ok(Body::Release {
                unit: unit.to_owned(),
                amount,
            })
        })
    }

    /// A member's balance, credit limit and available amount in every unit
    /// of the co-op's policy.
    pub fn position(&self, coop: &DocId, member: &Did) -> Result<Vec<UnitPosition>, LedgerError> {
        self.with_ledger(coop, |state, doc| {
            let r = Reader::now(doc);
            let limit = coop::credit_limit(r, member);
            let units = coop::Coop::read(r)
                .map_err(|e| LedgerError::Invalid(e.to_string()))?
                .policy
                .units;
            let mut positions = Vec::with_capacity(units.len());
            for unit in units.into_keys() {
                let balance = state.fold.balance(Account::Member(*member), &unit)?;
                let reserved = state.fold.reserved(member, &unit)?;
                positions.push(UnitPosition {
                    available: balance.saturating_add(limit).saturating_sub(reserved),
                    allowances: state.fold.allowances(member, &unit)?,
                    unit,
                    balance,
                    credit_limit: limit,
                    reserved,
                });
            }
            Ok(positions)
        })
    }

    /// An entry and its status.
    pub fn entry(
        &self,
        coop: &DocId,
        id: &EntryId,
    ) -> Result<Option<(SignedEntry, Status)>, LedgerError> {
        self.with_ledger(coop, |state, _| {
            let Some(entry) = state.fold.entry(id)? else {
                return Ok(None);
            };
            let status = state.fold.status(id)?.unwrap_or(Status::Applied);
            Ok(Some((entry, status)))
        })
    }

    /// The co-op's ledger heads.
    pub fn ledger_heads(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        self.with_ledger(coop, |state, _| Ok(state.fold.heads()?))
    }

    /// Every entry's id, in fold order (parents first).
    pub fn entry_ids(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        self.with_ledger(coop, |state, _| {
            Ok(state.fold.order().collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// One entry's canonical encoding.
    pub fn entry_bytes(&self, coop: &DocId, id: &EntryId) -> Result<Option<Vec<u8>>, LedgerError> {
        self.with_ledger(coop, |state, _| Ok(state.fold.entry_bytes(id)?))
    }

    /// Whether this node holds `id`, stored or waiting.
    pub fn has_entry(&self, coop: &DocId, id: &EntryId) -> Result<bool, LedgerError> {
        self.with_ledger(coop, |state, _| {
            Ok(state.pending.contains_key(id) || state.fold.contains(id)?)
        })
    }

    /// The parents that waiting entries name and this node does not hold:
    /// what to ask peers for.
    pub fn missing_parents(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        self.with_ledger(coop, |state, _| {
            let mut missing = HashSet::new();
            for e in state.pending.values() {
                for p in &e.entry.parents {
                    if !state.pending.contains_key(p) && !state.fold.contains(p)? {
                        missing.insert(*p);
                    }
                }
            }
            Ok(missing.into_iter().collect())
        })
    }

    /// Every entry, encoded, in fold order (parents first).
    pub fn entries(&self, coop: &DocId) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.with_ledger(coop, |state, _| {
            let mut out = Vec::new();
            for id in state.fold.order() {
                let id = id?;
                if let Some(bytes) = state.fold.entry_bytes(&id)? {
                    out.push(bytes);
                }
            }
            Ok(out)
        })
    }

    /// A trial balance: every non-zero account balance, and the sum per unit
    /// (always zero).
    pub fn trial_balance(&self, coop: &DocId) -> Result<TrialBalance, LedgerError> {
        self.with_ledger(coop, |state, _| Ok(trial_balance_of(&state.fold)?))
    }

    /// The trial balance of the ledger as it stood at `heads`: the entries
    /// those heads name and their ancestors, folded alone.
    pub fn trial_balance_at(
        &self,
        coop: &DocId,
        heads: &[EntryId],
    ) -> Result<TrialBalance, LedgerError> {
        self.with_ledger(coop, |state, _| {
            let fold = state
                .fold
                .at(heads, &self.decisions(*coop))?
                .ok_or_else(|| LedgerError::Invalid("a head is not a known entry".into()))?;
            Ok(trial_balance_of(&fold)?)
        })
    }

    /// The entries that touch `account`, in fold order, `limit` at a time
    /// (1 to 500): the page after the entry `after`, and the cursor of the
    /// next page. Fold order is the same on every replica; an entry that
    /// arrives late with an earlier place shows up when paging again.
    pub fn history(
        &self,
        coop: &DocId,
        account: Account,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<HistoryPage, LedgerError> {
        let limit = limit.clamp(1, 500);
        self.with_ledger(coop, |state, _| {
            if let Some(cursor) = &after
                && !state.fold.contains(cursor)?
            {
                return Err(LedgerError::Invalid(format!("unknown cursor {cursor}")));
            }
            let mut items = Vec::with_capacity(limit);
            let mut next_cursor = None;
            for id in state.fold.touching(&account, after.as_ref())? {
                let id = id?;
                if items.len() == limit {
                    next_cursor = items.last().map(|i: &HistoryItem| i.id);
                    break;
                }
                items.push(history_item(&state.fold, &id)?);
            }
            Ok(HistoryPage { items, next_cursor })
        })
    }

    /// The entries that cite decision receipt `decision`, in fold order.
    pub fn entries_by_decision(
        &self,
        coop: &DocId,
        decision: &[u8; 32],
    ) -> Result<Vec<HistoryItem>, LedgerError> {
        self.with_ledger(coop, |state, _| {
            state
                .fold
                .citing(decision)
                .map(|id| Ok(history_item(&state.fold, &id?)?))
                .collect()
        })
    }
}

fn history_item(fold: &Fold, id: &EntryId) -> Result<HistoryItem, StorageError> {
    let entry = fold.entry(id)?.ok_or_else(|| StorageError::Corrupt {
        tree: crate::storage::layout::LEDGER,
        reason: format!("indexed entry {id} is missing"),
    })?;
    Ok(HistoryItem {
        id: *id,
        entry: entry.entry,
        status: fold.status(id)?.unwrap_or(Status::Applied),
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

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
