//! The rules an entry must pass, as pure functions of the entry, the co-op
//! document at the entry's cited heads, and nothing else: so every replica
//! judges an entry alike, wherever and whenever it arrives. The pipeline
//! ([`super::pipeline`]) runs them, once each, for local writes and for
//! entries from peers alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use automerge::{Automerge, ChangeHash};
use foldhash::HashMap;
use icn_schemas::coop::{self, Role};
use icn_schemas::ledger::{Account, Body, Entry, SignedEntry};
use icn_schemas::{Did, DocId, ReadCache, Reader, Scope};

use super::api::EntryRefusal;
use super::fold::Judged;
use crate::authority::Denied;
use crate::identity;

pub(super) fn heads_of(entry: &Entry) -> Vec<ChangeHash> {
    entry.coop_heads.iter().map(|h| ChangeHash(*h)).collect()
}

/// The co-op document as of `heads` (sorted). Most entries cite the
/// document's current heads, and reading "now" skips computing a clock for
/// every read.
pub(super) fn reader_at<'a>(doc: &'a Automerge, heads: &'a [ChangeHash]) -> Reader<'a> {
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
pub(super) fn check_signed(
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

/// Answers read from the co-op document at some heads. Every answer is
/// keyed by the heads it was read at, and a document at given heads never
/// changes, so the answers stay true: each co-op's ledger keeps them across
/// calls (`Ledger::lookups`), since entries mostly cite the same heads,
/// authors and units (every settle on a co-op whose document is quiet cites
/// the same heads), and each read of the document costs microseconds.
#[derive(Default)]
pub(super) struct Lookups {
    /// cited heads → the answers read there.
    at: HashMap<Vec<[u8; 32]>, Answers>,
    /// cited heads → the maps of the document there read whole: a batch by
    /// many members asks each member's record a few questions, and the
    /// member list many.
    reads: HashMap<Vec<[u8; 32]>, Arc<ReadCache>>,
}

/// What [`Lookups`] keeps for one set of cited heads.
#[derive(Default)]
struct Answers {
    /// (author, device) → may the author write through it.
    standing: HashMap<(Did, Did), Result<(), EntryRefusal>>,
    /// (author, unit) → the author's credit limit in it.
    limit: HashMap<(Did, String), i64>,
    /// account → is it a member's (not removed).
    member: HashMap<Did, bool>,
    unit: HashMap<String, bool>,
    /// author → the key holding its DID key powers.
    holder: HashMap<Did, Option<Did>>,
}

impl Answers {
    fn len(&self) -> usize {
        self.standing.len()
            + self.limit.len()
            + self.member.len()
            + self.unit.len()
            + self.holder.len()
    }
}

impl Lookups {
    /// Answers kept at most, summed over the maps; past it they are
    /// forgotten together (a co-op with this many authors and units at one
    /// set of heads reads them again, which is all a forgotten answer costs).
    const MAX: usize = 4096;

    /// States of the document whose maps are kept read ([`ReadCache`]); past
    /// it they are forgotten together. Entries mostly cite the current heads.
    const MAX_READS: usize = 2;

    /// The maps of the co-op document at `heads` read so far.
    fn reads(&mut self, heads: &[[u8; 32]]) -> Arc<ReadCache> {
        if !self.reads.contains_key(heads) && self.reads.len() >= Self::MAX_READS {
            self.reads.clear();
        }
        self.reads.entry(heads.to_vec()).or_default().clone()
    }

    /// The answers kept for `heads` (its key is copied only the first time).
    fn answers(&mut self, heads: &[[u8; 32]]) -> &mut Answers {
        if !self.at.contains_key(heads) {
            self.at.insert(heads.to_vec(), Answers::default());
        }
        self.at.get_mut(heads).expect("inserted above")
    }

    /// Forgets every answer once there are more than [`Lookups::MAX`].
    pub(super) fn bound(&mut self) {
        let held: usize = self.at.len() + self.at.values().map(Answers::len).sum::<usize>();
        if held > Self::MAX {
            *self = Lookups::default();
        }
    }

    /// The key holding `author`'s DID key powers in `doc` as it stands.
    pub(super) fn holder_now(&mut self, doc: &Automerge, author: &Did) -> Option<Did> {
        let heads: Vec<[u8; 32]> = doc.get_heads().iter().map(|h| h.0).collect();
        *self
            .answers(&heads)
            .holder
            .entry(*author)
            .or_insert_with(|| coop::key_of(Reader::now(doc), author))
    }
}

/// Judges an entry by the co-op document at its cited heads, when they are
/// all here (`None` when not: it waits). Only entries valid at their heads
/// may then wait for their parents, so a stranger cannot fill the pending
/// set.
pub(super) fn check_state(
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
pub(super) fn check_at_heads(
    doc: &Automerge,
    heads: &[ChangeHash],
    e: &SignedEntry,
    lookups: &mut Lookups,
) -> Result<Judged, EntryRefusal> {
    let (limits, owner) = check_body(doc, heads, e, lookups)?;
    let treasury = match e.entry.decision {
        None => None,
        Some(_) => Some(coop::treasury_domain(reader_at(doc, heads)).ok_or(
            EntryRefusal::BadDecision(
                "the co-op's policy names no treasury domain whose decisions entries execute",
            ),
        )?),
    };
    Ok(Judged {
        limits,
        treasury,
        owner,
    })
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

/// Who may seal what ("Seals" in `docs/ledger.md`). A seal of a key or a
/// member is signed with the author's DID key (or the key it rotated to,
/// `holder`), directly or through its delegation, never by another device:
/// a stolen phone seals nothing. The member seals its own devices; admins
/// and trusted contacts seal any member's keys; admins seal a whole member,
/// and a member seals itself when it leaves. A delegation is sealed by its
/// member's DID key, or by the node writing under it (a logout: it only
/// ever limits itself).
fn check_seal(
    r: icn_schemas::Reader<'_>,
    entry: &icn_schemas::ledger::Entry,
    holder: Option<Did>,
    member: &Did,
    of: &icn_schemas::ledger::Sealed,
) -> Result<(), EntryRefusal> {
    use icn_schemas::ledger::Sealed;
    let forbidden = |reason| {
        Err(EntryRefusal::Denied(Denied::Forbidden {
            member: entry.author,
            path: "the ledger's seals".into(),
            reason,
        }))
    };
    let delegation = entry
        .delegation
        .as_ref()
        .map(|d| d.statement.parse::<icn_schemas::Delegation>())
        .transpose()
        .map_err(EntryRefusal::BadDelegation)?;
    let by_did_key = holder
        == Some(
            delegation
                .as_ref()
                .map_or(entry.signer, |d| d.signing_key()),
        );
    if let Sealed::Delegation(hash) = of {
        let under_it = entry.delegation.as_ref().is_some_and(|d| d.hash() == *hash);
        if *member != entry.author || !(by_did_key || under_it) {
            return forbidden(
                "a delegation is sealed by its member's DID key, or by the node writing under it",
            );
        }
        return Ok(());
    }
    if !by_did_key {
        return forbidden("a seal is signed with the author's DID key, or a delegation of it");
    }
    let admin = coop::Standing::read(r, &entry.author).is_some_and(|s| s.is_admin());
    let trusted = coop::is_trusted_contact(r, &entry.author);
    match of {
        Sealed::Key(k) => {
            if !coop::has_device(r, member, k) {
                return forbidden("a sealed key is one of the member's listed devices");
            }
            // The holder seals itself only: its retirement in a rotation.
            let signing = delegation
                .as_ref()
                .map_or(entry.signer, |d| d.signing_key());
            let own_device = *member == entry.author && (Some(*k) != holder || *k == signing);
            if !(own_device || admin || trusted) {
                return forbidden(
                    "a member seals its own devices; admins and trusted contacts seal anyone's",
                );
            }
        }
        Sealed::Member => {
            if coop::Standing::read(r, member).is_none() {
                return forbidden("only a member is sealed");
            }
            if !(admin || *member == entry.author) {
                return forbidden("admins seal a member; a member seals itself when it leaves");
            }
        }
        Sealed::Delegation(_) => {}
    }
    Ok(())
}

/// Credit limits (member, limit) an entry is judged by.
type Limits = Vec<([u8; 32], i64)>;

/// The body's rules; returns the credit limits of the accounts it debits,
/// and whether it is signed by the key holding the author's DID key powers
/// (the "owner": the DID key, or the key it rotated to).
fn check_body(
    doc: &Automerge,
    heads: &[ChangeHash],
    e: &SignedEntry,
    lookups: &mut Lookups,
) -> Result<(Limits, bool), EntryRefusal> {
    let entry = &e.entry;
    let reads = lookups.reads(&entry.coop_heads);
    let r = reader_at(doc, heads).cached(&reads);
    let answers = lookups.answers(&entry.coop_heads);
    // The key whose standing counts: the signer, or for a node writing under
    // a delegation, the key that signed the delegation (the member's DID
    // key, or one of its devices). `check_signed` verified it.
    let device = match &entry.delegation {
        Some(d) => d
            .statement
            .parse::<icn_schemas::Delegation>()
            .map_err(EntryRefusal::BadDelegation)?
            .signing_key(),
        None => entry.signer,
    };
    answers
        .standing
        .entry((entry.author, device))
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
    let unit_known = |answers: &mut Answers, unit: &str| {
        let known = *answers
            .unit
            .entry(unit.to_owned())
            .or_insert_with(|| coop::has_unit(r, unit));
        if known {
            Ok(())
        } else {
            Err(EntryRefusal::UnknownUnit(unit.to_owned()))
        }
    };
    let author_limit = |answers: &mut Answers, unit: &str| {
        *answers
            .limit
            .entry((entry.author, unit.to_owned()))
            .or_insert_with(|| coop::credit_limit_in(r, &entry.author, unit))
    };
    let holder = *answers
        .holder
        .entry(entry.author)
        .or_insert_with(|| coop::key_of(r, &entry.author));
    let owner = entry.delegation.is_none() && holder == Some(entry.signer);
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
            if Some(*device) == holder {
                return Err(EntryRefusal::BadAllowance(
                    "an allowance is for a key other than the member's DID key",
                ));
            }
            unit_known(answers, unit)?;
            let limit = author_limit(answers, unit);
            return Ok((vec![(*entry.author.as_bytes(), limit)], owner));
        }
        Body::Release { unit, .. } => {
            if owner {
                return Err(EntryRefusal::BadAllowance(
                    "a release is signed by the key whose allowance it gives back",
                ));
            }
            unit_known(answers, unit)?;
            return Ok((Vec::new(), owner));
        }
        Body::Seal { member, of } => {
            check_seal(r, entry, holder, member, of)?;
            return Ok((Vec::new(), owner));
        }
        // Under a decision, any active member records the freeze; whether
        // the decision counts is the fold's to judge.
        Body::Freeze { .. } if decided => return Ok((Vec::new(), owner)),
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
            return Ok((Vec::new(), owner));
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
        if let Account::Member(did) = p.account {
            let member = *answers.member.entry(did).or_insert_with(|| {
                coop::Standing::read(r, &did)
                    .is_some_and(|s| s.status != coop::MemberStatus::Removed)
            });
            if !member {
                return Err(EntryRefusal::NotAMember(did));
            }
        }
        if p.amount < 0 {
            match p.account {
                Account::Member(did) if did == entry.author => {
                    // One limit judges the entry: the author's in the unit
                    // it debits, or, for the rare entry that debits the
                    // author in several units, the smallest of theirs.
                    let limit = author_limit(answers, &p.unit);
                    match limits.first_mut() {
                        None => limits.push((*did.as_bytes(), limit)),
                        Some((_, l)) => *l = (*l).min(limit),
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
        unit_known(answers, unit)?;
    }
    Ok((limits, owner))
}
