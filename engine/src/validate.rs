//! Validation before merge.
//!
//! [`check_batch`] takes a document and a batch of signed changes and either
//! returns a fork of the document with every new change applied, or refuses
//! the whole batch with the first change that breaks a rule. The document it
//! was given is never touched. Each change must:
//!
//! 1. decode, and carry a valid signature by its actor key (and, if a node
//!    wrote it for a member, a valid delegation naming that node, live at the
//!    change's time);
//! 2. have every dependency in the document or earlier in the batch; the only
//!    change without dependencies is the genesis, whose hash is the doc id;
//! 3. be authorised by the document **as it stood at its dependencies**: its
//!    author is a live device of an active member whose role permits every
//!    path the change writes ([`crate::authority`]);
//! 4. keep the schema: every operation writes a known path with a value of the
//!    right shape ([`icn_schemas::coop::classify`],
//!    [`icn_schemas::domain::classify`]).
//!
//! Changes are judged by their *operations*, not by the patches they produce:
//! a write that loses a conflict shows no patch, yet stays in the document.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::AssertUnwindSafe;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, Change, ChangeHash, ObjType, Prop, ReadDoc, ScalarValue};
use icn_schemas::{
    Delegation, DelegationError, Did, DocId, DocKind, Reader, SchemaError, coop, domain,
};

use crate::authority::{self, Author, Denied, Modules};
use crate::change::{MAX_CHANGE_BYTES, SignedChange, signing_message};
use crate::identity;

/// A refused batch: which change broke which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change #{index}{} refused: {rule}", .hash.map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct Refused {
    /// Position of the change in the batch.
    pub index: usize,
    /// Its hash, when it decoded.
    pub hash: Option<ChangeHash>,
    /// The rule it broke.
    pub rule: Rule,
}

impl Refused {
    /// Whether the batch was refused only because a close needs its
    /// domain's WASM tally module, which this node does not hold: fetch it
    /// and the same batch passes.
    pub fn module_not_held(&self) -> bool {
        matches!(
            &self.rule,
            Rule::Denied(crate::authority::Denied::Forbidden { reason, .. })
                if *reason == crate::authority::MODULE_NOT_HELD
        )
    }
}

/// The rules a change can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// Over [`MAX_CHANGE_BYTES`].
    #[error("a change has at most {MAX_CHANGE_BYTES} bytes, this one has {0}")]
    TooLarge(usize),
    /// Not an Automerge change, or one Automerge cannot apply.
    #[error("malformed change: {0}")]
    Malformed(String),
    /// The actor id is not an Ed25519 public key.
    #[error("the actor is not an ed25519 public key")]
    BadActor,
    /// The signature is not the actor's.
    #[error("the signature is not by the actor key {0}")]
    BadSignature(Did),
    /// The delegation does not verify.
    #[error("bad delegation: {0}")]
    BadDelegation(DelegationError),
    /// The delegation names another node.
    #[error("the delegation is for node {named}, but {actor} wrote the change")]
    DelegationNotForActor {
        /// Node in the delegation.
        named: Did,
        /// Actor of the change.
        actor: Did,
    },
    /// The change's time is outside the delegation's validity.
    #[error("the change time {time} is outside the delegation's validity")]
    DelegationNotLive {
        /// Change time, unix seconds.
        time: i64,
    },
    /// A dependency is neither in the document nor in the batch.
    #[error("dependency {0} is unknown")]
    MissingDependency(ChangeHash),
    /// A change without dependencies that is not this document's genesis.
    #[error("a change without dependencies that is not this document's genesis")]
    ForeignGenesis,
    /// A new document's batch does not start with its genesis.
    #[error("the document is unknown and the batch does not hold its genesis")]
    NoGenesis,
    /// The genesis does not establish a valid document.
    #[error("invalid genesis: {0}")]
    InvalidGenesis(String),
    /// An operation breaks the schema.
    #[error("schema: {0}")]
    Schema(#[from] SchemaError),
    /// The author may not write what the change writes.
    #[error("not permitted: {0}")]
    Denied(#[from] Denied),
}

/// The outcome of a batch that passed: a fork of the document with the new
/// changes applied, and the new changes in the order they were applied.
pub(crate) struct Checked {
    pub(crate) fork: Automerge,
    pub(crate) accepted: Vec<(ChangeHash, SignedChange)>,
}

/// A change decoded from a batch, its signature not checked yet.
struct Decoded {
    index: usize,
    change: Change,
    actor: Did,
    signed: SignedChange,
}

struct Parsed {
    index: usize,
    change: Change,
    actor: Did,
    delegation: Option<Delegation>,
    signed: SignedChange,
}

/// Checks a batch from a peer against `doc` (empty for a document this node
/// does not hold yet). Changes the document already has are skipped, so
/// replays and duplicates are harmless. `None` when nothing is new.
///
/// The new changes are applied to a fork in one `apply_changes` (Automerge
/// 0.12 walks the whole op set on every apply, so one apply per change would
/// cost O(document) each), then each is judged by the fork read as of its
/// own dependencies.
pub(crate) fn check_batch(
    doc_id: &DocId,
    doc: &Automerge,
    batch: Vec<SignedChange>,
    modules: &dyn Modules,
) -> Result<Option<Checked>, Refused> {
    let mut seen = HashSet::new();
    let decoded = batch
        .into_iter()
        .enumerate()
        .map(|(index, signed)| decode(doc, index, signed, &mut seen))
        .collect();
    authenticated(doc_id, decoded, |parsed| {
        if parsed.is_empty() {
            return Ok(None);
        }
        let ordered = topological(doc, parsed)?;
        refuse_foreign_geneses(doc_id, &ordered)?;
        let mut fork = doc.fork();
        fork.apply_changes(ordered.iter().map(|p| p.change.clone()).collect::<Vec<_>>())
            .map_err(|e| Refused {
                index: ordered[0].index,
                hash: Some(ordered[0].change.hash()),
                rule: Rule::Malformed(e.to_string()),
            })?;
        judge(Some(doc), &fork, &ordered, modules)?;
        Ok(Some(accept(fork, ordered)))
    })
}

/// Checks changes a peer sent that the sync protocol already loaded into
/// `fork`, a fork of `doc` made when `doc` stood as it stands now, with
/// nothing queued in it (every change's dependencies arrived). `changes`
/// are the fork's changes that `doc` lacks, in the fork's (causal) order,
/// each with the signature that came with it. The same rules as
/// [`check_batch`], without decoding or applying the changes a second time:
/// a 10,000-change catch-up into an empty replica loads the peer's
/// compressed document once and judges it.
pub(crate) fn check_loaded(
    doc_id: &DocId,
    doc: &Automerge,
    fork: Automerge,
    changes: Vec<(Change, SignedChange)>,
    modules: &dyn Modules,
) -> Result<Option<Checked>, Refused> {
    let decoded = changes
        .into_iter()
        .enumerate()
        .map(|(index, (change, signed))| {
            let hash = change.hash();
            let refuse = |rule| Refused {
                index,
                hash: Some(hash),
                rule,
            };
            if signed.change.len() > MAX_CHANGE_BYTES {
                return Err(refuse(Rule::TooLarge(signed.change.len())));
            }
            if signed.change.get(4..8) != Some(&hash.0[..4]) {
                return Err(refuse(not_canonical()));
            }
            let actor = Did::from_bytes(change.actor_id().to_bytes())
                .map_err(|_| refuse(Rule::BadActor))?;
            Ok(Some(Decoded {
                index,
                change,
                actor,
                signed,
            }))
        })
        .collect();
    authenticated(doc_id, decoded, |ordered| {
        if ordered.is_empty() {
            return Ok(None);
        }
        refuse_foreign_geneses(doc_id, &ordered)?;
        judge(Some(doc), &fork, &ordered, modules)?;
        Ok(Some(accept(fork, ordered)))
    })
}

/// Dependency-free changes are refused before Automerge sees them: a
/// second root would make a different document.
fn refuse_foreign_geneses(doc_id: &DocId, ordered: &[Parsed]) -> Result<(), Refused> {
    match ordered
        .iter()
        .find(|p| p.change.deps().is_empty() && p.change.hash() != doc_id.genesis())
    {
        Some(p) => Err(Refused {
            index: p.index,
            hash: Some(p.change.hash()),
            rule: Rule::ForeignGenesis,
        }),
        None => Ok(()),
    }
}

fn accept(fork: Automerge, ordered: Vec<Parsed>) -> Checked {
    let accepted = ordered
        .into_iter()
        .map(|p| (p.change.hash(), p.signed))
        .collect();
    Checked { fork, accepted }
}

/// Checks a change this node just made: `made` is a fork of `before` in which
/// a transaction committed it. The same rules as [`check_batch`], judged
/// against `before`, which is exactly the change's causal past.
pub(crate) fn check_local(
    doc_id: &DocId,
    before: &Automerge,
    made: &Automerge,
    signed: SignedChange,
    modules: &dyn Modules,
) -> Result<(ChangeHash, SignedChange), Refused> {
    let decoded = decode(before, 0, signed, &mut HashSet::new());
    authenticated(doc_id, vec![decoded], |mut parsed| {
        let Some(p) = parsed.pop() else {
            return Err(Refused {
                index: 0,
                hash: None,
                rule: Rule::Malformed("the document already holds this change".into()),
            });
        };
        let base = (!before.get_heads().is_empty()).then_some(before);
        let ordered = [p];
        judge(base, made, &ordered, modules)?;
        let [p] = ordered;
        Ok((p.change.hash(), p.signed))
    })
}

/// Judges changes (in causal order) held by `applied`. A change whose
/// dependencies are the heads of `base` (the document before the batch) is
/// read from `base` as it stands; any other is read from `applied` as of its
/// dependencies.
fn judge(
    base: Option<&Automerge>,
    applied: &Automerge,
    ordered: &[Parsed],
    modules: &dyn Modules,
) -> Result<(), Refused> {
    let base_heads = base.map(Automerge::get_heads).unwrap_or_default();
    let mut kind = base.and_then(|b| DocKind::of(Reader::now(b)));
    // The change judged last, the author it resolved to, and whether it
    // wrote under `members`: a change on it alone, by the same key and
    // delegation, resolves to the same author when it did not (the author
    // is read from `members` only), without a read as of past heads.
    let mut last: Option<(ChangeHash, &Parsed, Author, bool)> = None;
    for p in ordered {
        let hash = p.change.hash();
        let refuse = |rule: Rule| Refused {
            index: p.index,
            hash: Some(hash),
            rule,
        };
        if p.change.deps().is_empty() {
            kind = Some(check_genesis(applied, p).map_err(refuse)?);
            continue;
        }
        let Some(kind) = kind else {
            return Err(refuse(Rule::NoGenesis));
        };
        let mut deps = p.change.deps().to_vec();
        deps.sort_unstable();
        let r = match base {
            Some(base) if deps == base_heads => Reader::now(base),
            _ => Reader::at(applied, &deps),
        };
        let known = match last.take() {
            Some((h, q, author, false))
                if p.change.deps() == [h]
                    && q.actor == p.actor
                    && q.signed.delegation == p.signed.delegation =>
            {
                Some(author)
            }
            _ => None,
        };
        let (author, members_written) =
            check_change(applied, r, kind, p, modules, known).map_err(refuse)?;
        last = Some((hash, p, author, members_written));
    }
    Ok(())
}

/// Whether a write at `path` may change who a change's author is, or its
/// standing: anything under `members` but a member's display name.
fn writes_standing(kind: DocKind, path: &[String]) -> bool {
    match path {
        [first, ..] if first != "members" => false,
        [_, _, field] if kind == DocKind::Coop && field == "display_name" => false,
        _ => true,
    }
}

/// Batches of at least this many changes have their signatures checked on
/// a second thread while the rest of the batch is judged.
const VERIFY_ASIDE: usize = 64;

/// A change's signature to check: its place in the batch, hash, actor,
/// signing message and signature.
type ToVerify = (usize, ChangeHash, Did, [u8; 32], [u8; 64]);

/// Checks the signatures of decoded changes, together
/// ([`identity::verify_batch`], about twice the rate of one by one, with
/// exactly the same verdicts), and their delegations, then runs `rest` on
/// the changes. The verdict is what checking each change in batch order
/// would give (decoding, signature, delegation; then `rest`): the first
/// change that fails refuses the batch. A large batch's signatures are
/// checked on a second thread while the delegations and `rest` run here.
fn authenticated<T>(
    doc_id: &DocId,
    decoded: Vec<Result<Option<Decoded>, Refused>>,
    rest: impl FnOnce(Vec<Parsed>) -> Result<T, Refused>,
) -> Result<T, Refused> {
    let signed: Vec<ToVerify> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok().and_then(Option::as_ref))
        .map(|d| {
            let hash = d.change.hash();
            let message = signing_message(doc_id, &hash);
            (d.index, hash, d.actor, message, d.signed.signature)
        })
        .collect();
    let all_verified = || match signed.as_slice() {
        [] => true,
        [(_, _, did, message, signature)] => identity::verify(did, message, signature).is_ok(),
        _ => {
            let items: Vec<identity::SignedMessage<'_>> = signed
                .iter()
                .map(|(_, _, did, message, signature)| identity::SignedMessage {
                    did,
                    message,
                    signature,
                })
                .collect();
            identity::verify_batch(&items)
        }
    };
    let (verified, outcome) = if signed.len() >= VERIFY_ASIDE {
        std::thread::scope(|s| {
            let aside = s.spawn(all_verified);
            let outcome = delegations(decoded).map(rest);
            (aside.join().unwrap_or(false), outcome)
        })
    } else {
        let verified = all_verified();
        (verified, delegations(decoded).map(rest))
    };
    if !verified {
        // Some signature is bad: the first one refuses the batch, unless a
        // change before it failed first (or its own decoding did).
        let before = outcome.as_ref().err().map_or(usize::MAX, |r| r.index);
        let bad = signed
            .iter()
            .take_while(|(index, ..)| *index <= before)
            .find(|(_, _, did, message, signature)| {
                identity::verify(did, message, signature).is_err()
            });
        if let Some((index, hash, actor, ..)) = bad {
            return Err(Refused {
                index: *index,
                hash: Some(*hash),
                rule: Rule::BadSignature(*actor),
            });
        }
    }
    outcome?
}

/// Checks each decoded change's delegation, in batch order; the first
/// change that did not decode, or whose delegation fails, refuses the
/// batch.
fn delegations(decoded: Vec<Result<Option<Decoded>, Refused>>) -> Result<Vec<Parsed>, Refused> {
    let mut parsed = Vec::with_capacity(decoded.len());
    for d in decoded {
        let Some(d) = d? else {
            continue;
        };
        let refuse = |rule| Refused {
            index: d.index,
            hash: Some(d.change.hash()),
            rule,
        };
        let delegation = match &d.signed.delegation {
            None => None,
            Some(sd) => {
                let del =
                    identity::verify_delegation(sd).map_err(|e| refuse(Rule::BadDelegation(e)))?;
                if del.node != d.actor {
                    return Err(refuse(Rule::DelegationNotForActor {
                        named: del.node,
                        actor: d.actor,
                    }));
                }
                let time = d.change.timestamp();
                if !u64::try_from(time).is_ok_and(|t| del.is_live_at(t)) {
                    return Err(refuse(Rule::DelegationNotLive { time }));
                }
                Some(del)
            }
        };
        parsed.push(Parsed {
            index: d.index,
            change: d.change,
            actor: d.actor,
            delegation,
            signed: d.signed,
        });
    }
    Ok(parsed)
}

fn not_canonical() -> Rule {
    Rule::Malformed("the change bytes are not canonical (checksum or encoding)".into())
}

/// Decodes one change. `None` for a change the document (or this batch)
/// already holds.
fn decode(
    doc: &Automerge,
    index: usize,
    signed: SignedChange,
    seen: &mut HashSet<ChangeHash>,
) -> Result<Option<Decoded>, Refused> {
    let refuse = |hash, rule| Refused { index, hash, rule };
    if signed.change.len() > MAX_CHANGE_BYTES {
        return Err(refuse(None, Rule::TooLarge(signed.change.len())));
    }
    let change = Change::from_bytes(signed.change.clone())
        .map_err(|e| refuse(None, Rule::Malformed(e.to_string())))?;
    let hash = change.hash();
    // Automerge neither checks a change chunk's checksum nor covers it by the
    // hash, so other bytes could carry the same signed change. Only the
    // canonical bytes are accepted, so every node stores the same bytes.
    let canonical = change.raw_bytes() == signed.change.as_slice()
        && signed.change.get(4..8) == Some(&hash.0[..4]);
    if !canonical {
        return Err(refuse(Some(hash), not_canonical()));
    }
    if !seen.insert(hash) || doc.get_change_meta_by_hash(&hash).is_some() {
        return Ok(None);
    }
    let actor = Did::from_bytes(change.actor_id().to_bytes())
        .map_err(|_| refuse(Some(hash), Rule::BadActor))?;
    Ok(Some(Decoded {
        index,
        change,
        actor,
        signed,
    }))
}

/// Orders new changes so each comes after its dependencies (Kahn's algorithm,
/// ties by batch position so the order is deterministic), refusing a change
/// with a dependency that is nowhere.
fn topological(doc: &Automerge, parsed: Vec<Parsed>) -> Result<Vec<Parsed>, Refused> {
    let position: HashMap<ChangeHash, usize> = parsed
        .iter()
        .enumerate()
        .map(|(i, p)| (p.change.hash(), i))
        .collect();
    let mut waiting_on = vec![0usize; parsed.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); parsed.len()];
    for (i, p) in parsed.iter().enumerate() {
        for dep in p.change.deps() {
            if let Some(&j) = position.get(dep) {
                waiting_on[i] += 1;
                dependents[j].push(i);
            } else if doc.get_change_meta_by_hash(dep).is_none() {
                return Err(Refused {
                    index: p.index,
                    hash: Some(p.change.hash()),
                    rule: Rule::MissingDependency(*dep),
                });
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..parsed.len()).filter(|&i| waiting_on[i] == 0).collect();
    let mut order = Vec::with_capacity(parsed.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            waiting_on[j] -= 1;
            if waiting_on[j] == 0 {
                ready.insert(j);
            }
        }
    }
    // Hash-linked changes cannot form a cycle, so every change is ordered.
    let mut slots: Vec<Option<Parsed>> = parsed.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// Checks the genesis, held by `applied`: every path it writes is in the
/// schema, and the state it makes has a creator who is its author and admin.
fn check_genesis(applied: &Automerge, p: &Parsed) -> Result<DocKind, Rule> {
    let ops = decode_ops(&p.change)?;
    let kind = ops
        .iter()
        .find_map(|op| match (&op.obj, &op.key, &op.action) {
            (ObjectId::Root, Key::Map(k), OpType::Put(ScalarValue::Str(v)))
                if k == DocKind::ROOT_KEY =>
            {
                DocKind::parse(v)
            }
            _ => None,
        })
        .ok_or_else(|| {
            Rule::InvalidGenesis("the genesis must set type to coop or domain".into())
        })?;
    let paths = resolve_paths(applied, &p.change, &ops)?;
    for (op, path) in ops.iter().zip(&paths) {
        // A genesis is judged whole, not op by op: it names no member's
        // key, retirement or seal, which only later changes may write (a
        // creator naming another member's key would vote for it).
        if let Classified::Domain(
            domain::DomainField::MemberKey(_)
            | domain::DomainField::MemberKeys(_)
            | domain::DomainField::KeyProof { .. }
            | domain::DomainField::KeyRetired { .. }
            | domain::DomainField::MemberSeal(_),
            ..,
        ) = classify_op(kind, op, path)?
        {
            return Err(Rule::InvalidGenesis(
                "a genesis names no member's key, retirement or seal".into(),
            ));
        }
    }
    let at_genesis = [p.change.hash()];
    authority::check_genesis(
        Reader::at(applied, &at_genesis),
        p.actor,
        p.delegation.as_ref(),
    )
    .map_err(Rule::InvalidGenesis)?;
    Ok(kind)
}

/// Checks a change against `r`, the document as of its dependencies; paths
/// are resolved in `applied`, which holds every object the change touches.
fn check_change(
    applied: &Automerge,
    r: Reader<'_>,
    kind: DocKind,
    p: &Parsed,
    modules: &dyn Modules,
    known: Option<Author>,
) -> Result<(Author, bool), Rule> {
    let author = match known {
        Some(author) => author,
        None => authority::resolve_author(kind, r, p.actor, p.delegation.clone())?,
    };
    let ops = decode_ops(&p.change)?;
    let paths = resolve_paths(applied, &p.change, &ops)?;
    let members_written = paths.iter().any(|path| writes_standing(kind, path));
    let mut closing = BTreeSet::new();
    let mut sealing = Vec::new();
    let mut standing_changed = false;
    for (op, path) in ops.iter().zip(&paths) {
        let checked = classify_op(kind, op, path)?;
        check_permission(r, &author, &checked)?;
        standing_changed |= matches!(
            &checked,
            Classified::Coop(
                coop::CoopField::MemberRole(_)
                    | coop::CoopField::MemberStatus(_)
                    | coop::CoopField::Member(_),
                ..
            ) | Classified::Domain(domain::DomainField::Member(_), ..)
        );
        // A close is judged whole, once its ops are all allowed.
        if let Classified::Domain(field, _, value) = &checked {
            let closed_state = || {
                value
                    .and_then(|v| match v {
                        ScalarValue::Str(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .is_some_and(|s| icn_schemas::tally::Outcome::parse(&s).is_some())
            };
            match field {
                domain::DomainField::MemberSeal(did) => sealing.push((*did, *value, false)),
                // A retirement is a seal that is never empty.
                domain::DomainField::KeyRetired { member, .. } => {
                    sealing.push((*member, *value, true))
                }
                domain::DomainField::Close(id) => {
                    closing.insert(id.clone());
                }
                domain::DomainField::ProposalState(id) if closed_state() => {
                    closing.insert(id.clone());
                }
                _ => {}
            }
        }
    }
    if !sealing.is_empty() {
        // A seal records what its writer had seen: the heads it was written on.
        let deps: Vec<[u8; 32]> = p.change.deps().iter().map(|h| h.0).collect();
        let held = icn_schemas::tally::heads_text(&deps);
        // An empty seal (re-adding the member ends its seal) records nothing.
        let wrong = sealing.iter().find(|(_, v, retiring)| {
            !matches!(v, Some(ScalarValue::Str(s)) if (s.is_empty() && !retiring) || s.as_str() == held)
        });
        if let Some((did, _, _)) = wrong {
            return Err(Rule::Denied(authority::Denied::Forbidden {
                member: author.member,
                path: format!("members/{did}/sealed"),
                reason: "a seal records exactly the heads it was written on",
            }));
        }
    }
    let own = [p.change.hash()];
    if standing_changed {
        // The last active admin may not step down, remove or suspend itself
        // (or the others): nobody could add members or change the rules
        // again. Two admins demoting each other concurrently can still leave
        // none; docs/permissions.md says so.
        let after = Reader::at(applied, &own);
        let left = match kind {
            DocKind::Coop => coop::has_active_admin(after),
            DocKind::Domain => domain::has_active_admin(after),
        };
        if !left {
            return Err(Rule::Denied(authority::Denied::Forbidden {
                member: author.member,
                path: "members".into(),
                reason: "the last active admin stays: promote another member first",
            }));
        }
    }
    if !closing.is_empty() {
        let after = Reader::at(applied, &own);
        let deps: Vec<[u8; 32]> = p.change.deps().iter().map(|h| h.0).collect();
        for id in &closing {
            authority::check_close(r, after, &deps, &author, id, modules)?;
        }
    }
    Ok((author, members_written))
}

/// An operation matched against the schema.
enum Classified<'a> {
    Coop(coop::CoopField, String, Option<&'a ScalarValue>),
    Domain(domain::DomainField, String, Option<&'a ScalarValue>),
}

fn classify_op<'a>(
    kind: DocKind,
    op: &'a automerge::legacy::Op,
    path: &[String],
) -> Result<Classified<'a>, Rule> {
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let joined = segments.join("/");
    let unsupported = || Rule::Schema(SchemaError::UnsupportedOp(joined.clone()));
    if op.insert {
        return Err(unsupported());
    }
    // What the op writes: a map (None), a scalar (Some), or a deletion.
    let (value, deleting) = match &op.action {
        OpType::Make(ObjType::Map) => (None, false),
        OpType::Put(v) => (Some(v), false),
        OpType::Delete => (None, true),
        _ => return Err(unsupported()),
    };
    let check = |shape| -> Result<(), Rule> {
        if !deleting {
            icn_schemas::document::check_shape(&joined, shape, value)?;
        }
        Ok(())
    };
    match kind {
        DocKind::Coop => {
            let (field, shape) = coop::classify(&segments)?;
            if deleting && !coop::deletable(&field, &segments) {
                return Err(Rule::Schema(SchemaError::WrongShape {
                    path: joined,
                    expected: "a value that is never deleted".into(),
                }));
            }
            check(shape)?;
            Ok(Classified::Coop(field, joined, value))
        }
        DocKind::Domain => {
            let (field, shape) = domain::classify(&segments)?;
            if deleting {
                return Err(Rule::Schema(SchemaError::WrongShape {
                    path: joined,
                    expected: "a value that is never deleted".into(),
                }));
            }
            check(shape)?;
            Ok(Classified::Domain(field, joined, value))
        }
    }
}

fn check_permission(r: Reader<'_>, author: &Author, op: &Classified<'_>) -> Result<(), Rule> {
    match op {
        Classified::Coop(field, path, value) => {
            authority::check_coop(r, author, field, path, *value)?
        }
        Classified::Domain(field, path, value) => {
            authority::check_domain(r, author, field, path, *value)?
        }
    }
    Ok(())
}

/// Decodes a change's operations. Automerge's decoder panics on some inputs
/// it accepted at parse time (unknown action codes); a panic here is a
/// malformed change from a peer, not a bug of ours to crash on.
fn decode_ops(change: &Change) -> Result<Vec<automerge::legacy::Op>, Rule> {
    std::panic::catch_unwind(AssertUnwindSafe(|| change.decode().operations))
        .map_err(|_| Rule::Malformed("the change's operations do not decode".into()))
}

/// The map-key path of every operation (the object's path plus the key).
/// Objects created earlier in the same change are resolved from the change's
/// own operations; others from the document, where they already exist.
fn resolve_paths(
    doc: &Automerge,
    change: &Change,
    ops: &[automerge::legacy::Op],
) -> Result<Vec<Vec<String>>, Rule> {
    let actor = change.actor_id();
    let start = change.start_op().get();
    let mut created: HashMap<u64, Vec<String>> = HashMap::new();
    let mut known: HashMap<ObjectId, Vec<String>> = HashMap::new();
    let mut paths = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let key = match &op.key {
            Key::Map(k) => k.to_string(),
            Key::Seq(_) => {
                return Err(Rule::Schema(SchemaError::UnsupportedOp(
                    "an operation on a list or text object".into(),
                )));
            }
        };
        let mut path = match &op.obj {
            ObjectId::Root => Vec::new(),
            ObjectId::Id(id) if id.actor() == actor && id.counter() >= start => created
                .get(&id.counter())
                .cloned()
                .ok_or_else(|| Rule::Malformed("an operation on an object not yet made".into()))?,
            obj @ ObjectId::Id(id) => match known.get(obj) {
                Some(p) => p.clone(),
                None => {
                    let p = object_path(doc, id.counter(), id.actor())?;
                    known.insert(obj.clone(), p.clone());
                    p
                }
            },
        };
        path.push(key);
        if let OpType::Make(_) = op.action {
            created.insert(start + i as u64, path.clone());
        }
        paths.push(path);
    }
    Ok(paths)
}

fn object_path(
    doc: &Automerge,
    counter: u64,
    actor: &automerge::ActorId,
) -> Result<Vec<String>, Rule> {
    let unknown = || Rule::Malformed(format!("unknown object {counter}@{actor}"));
    let obj = doc
        .import_obj(&format!("{counter}@{}", actor.to_hex_string()))
        .map_err(|_| unknown())?;
    let parents = doc.parents(&obj).map_err(|_| unknown())?;
    parents
        .path()
        .into_iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => Ok(k),
            Prop::Seq(_) => Err(Rule::Schema(SchemaError::UnsupportedOp(
                "an object inside a list".into(),
            ))),
        })
        .collect::<Result<Vec<String>, Rule>>()
        .and_then(|mut path| {
            // parents() gives the chain of containers; the object's own key is
            // the last prop, already included.
            if path.is_empty() {
                Err(unknown())
            } else {
                path.shrink_to_fit();
                Ok(path)
            }
        })
}
