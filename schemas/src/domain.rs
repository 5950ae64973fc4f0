//! The governance domain document: rules, members with weights, proposals,
//! votes.
//!
//! Layout (all maps unless noted):
//!
//! ```text
//! type="domain" schema=1 id creator created_at coop_id   written by the genesis only
//! name profile                                              strings
//! rules/{quorum_percent, approval_percent, voting_period_seconds, allow_veto}
//! rules/method/{kind, threshold, max_blocks, module}
//! members/<did>/{role, weight, status, sealed, key}
//! members/<did>/keys/<key>/{proof, retired}                 a rotation
//! proposals/<id>/{title, description, author, created_at, payload/…}   set once, at creation
//! proposals/<id>/{state, opened_at, closes_at}
//! proposals/<id>/votes/<voter did>/{choice, comment, at, key}
//! proposals/<id>/close/{outcome, counted_heads, closed_at, closed_by,
//!                       closed_by_key, eligible, for, against, abstain,
//!                       block, blockers}
//! ```
//!
//! A close is written in one change with the proposal's `state`; when
//! several nodes close at once, Automerge's conflict rule picks one `close`
//! object everywhere, and that one is the proposal's outcome
//! ([`crate::tally`]).
//!
//! A **seal** (`members/<did>/sealed`: the heads its writer held, written
//! by an admin when the co-op revokes the member's key, removes or suspends
//! it) makes the member's governance what the sealer had seen: its votes
//! count as they stood at those heads, and a close it recorded counts only
//! if the sealer had seen it, whatever heads the thief's changes cite
//! (`docs/governance.md`, "Seals"). Re-adding the member ends the seal.
//!
//! A **rotation** moves a member's voting key: the member names its new key
//! in `members/<did>/key` (the key's `proof` under `keys/<key>`, as in the
//! co-op), and retires the key it replaces with `keys/<old>/retired`, the
//! heads it held. A vote or close records the key that wrote it when that
//! is not the DID key (`key`, `closed_by_key`); one by a retired key counts
//! only if its retirement had seen it ([`key_counts`]).

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ObjId, ReadDoc};

use crate::did::Did;
use crate::document::{
    DocKind, GenesisField, Reader, SchemaError, Shape, check_ident, ensure_map, existing_map,
    parse_did_key, write_genesis,
};
pub use crate::governance::{
    Choice, DomainMember, DomainRole, MAX_VOTING_PERIOD_SECONDS, Method, ProposalState, Rules, Vote,
};

/// The ids of the proposals a domain document holds.
pub fn proposal_ids(r: Reader<'_>) -> Vec<String> {
    r.map_path(&["proposals"])
        .map(|p| r.keys(&p))
        .unwrap_or_default()
}

/// The state proposal `id` holds as written, whatever it is (a close writes
/// its outcome there); `None` without a proposal or a state.
pub fn written_state(r: Reader<'_>, id: &str) -> Option<String> {
    let p = r.map_path(&["proposals", id])?;
    r.str(&p, "state")
}

/// The co-op a domain document says it belongs to (`coop_id`), if any and
/// if it is a document id.
pub fn coop_of(r: Reader<'_>) -> Option<crate::DocId> {
    r.str(&ObjId::Root, "coop_id")
        .and_then(|id| id.parse::<crate::DocId>().ok())
}

/// Every field of the domain schema, as found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainField {
    /// A genesis field at the root (including `coop_id`).
    Genesis(GenesisField),
    /// `coop_id`: the co-op the domain belongs to, if any.
    CoopId,
    /// `name` or `profile`.
    Profile,
    /// `rules` and everything below it.
    Rules,
    /// `members`.
    Members,
    /// `members/<did>` and its fields but `sealed`.
    Member(Did),
    /// `members/<did>/sealed`: the heads its writer held when it sealed the
    /// member, as [`crate::tally::heads_text`] writes them.
    MemberSeal(Did),
    /// `members/<did>/key`: the key holding the member's vote since a
    /// rotation ([`key_of`]).
    MemberKey(Did),
    /// `members/<did>/keys` and `members/<did>/keys/<key>`.
    MemberKeys(Did),
    /// `members/<did>/keys/<key>/proof`: the key's signature of
    /// [`crate::coop::device_proof_message`].
    KeyProof {
        /// The member.
        member: Did,
        /// The key.
        key: Did,
    },
    /// `members/<did>/keys/<key>/retired`: the heads the member held when it
    /// rotated away from `key`.
    KeyRetired {
        /// The member.
        member: Did,
        /// The key.
        key: Did,
    },
    /// `proposals`.
    Proposals,
    /// `proposals/<id>` itself, and the fields set once when it is created:
    /// title, description, author, created_at, payload.
    ProposalContent(String),
    /// `proposals/<id>/author`.
    ProposalAuthor(String),
    /// `proposals/<id>/state`.
    ProposalState(String),
    /// `proposals/<id>/{opened_at, closes_at}`.
    ProposalSchedule(String),
    /// `proposals/<id>/votes`.
    Votes(String),
    /// `proposals/<id>/votes/<voter>` and its fields.
    Vote(String, Did),
    /// `proposals/<id>/close` and its fields.
    Close(String),
}

const PAYLOAD_TYPES: &[&str] = &[
    "text",
    "budget",
    "membership",
    "config_change",
    "freeze",
    "unfreeze",
];

/// Maps a path to its field and the shape it must hold.
pub fn classify(path: &[&str]) -> Result<(DomainField, Shape), SchemaError> {
    use DomainField as F;
    let unknown = || SchemaError::UnknownPath(path.join("/"));
    let pct = Shape::NonNegative;
    Ok(match path {
        [key] => match *key {
            "coop_id" => (F::CoopId, Shape::Str(64)),
            "name" => (F::Profile, Shape::Str(200)),
            "profile" => (F::Profile, Shape::Str(64)),
            "rules" => (F::Rules, Shape::Map),
            "members" => (F::Members, Shape::Map),
            "proposals" => (F::Proposals, Shape::Map),
            other => match GenesisField::classify(other) {
                Some((field, shape)) => (F::Genesis(field), shape),
                None => return Err(unknown()),
            },
        },
        ["rules", rest @ ..] => {
            let shape = match rest {
                ["quorum_percent"] | ["approval_percent"] => pct,
                ["voting_period_seconds"] => Shape::Range(1, MAX_VOTING_PERIOD_SECONDS),
                ["allow_veto"] => Shape::Bool,
                ["method"] => Shape::Map,
                ["method", "kind"] => Shape::OneOf(Method::KINDS),
                ["method", "threshold"] | ["method", "max_blocks"] => Shape::NonNegative,
                ["method", "module"] => Shape::Str(64),
                _ => return Err(unknown()),
            };
            (F::Rules, shape)
        }
        ["members", member, rest @ ..] => {
            let did = parse_did_key("member DID", member)?;
            match rest {
                ["sealed"] => return Ok((F::MemberSeal(did), Shape::Str(64 * 65))),
                ["key"] => return Ok((F::MemberKey(did), Shape::Did)),
                ["keys"] => return Ok((F::MemberKeys(did), Shape::Map)),
                ["keys", key, rest @ ..] => {
                    let key = crate::document::parse_device_key(key)?;
                    return Ok(match rest {
                        [] => (F::MemberKeys(did), Shape::Map),
                        ["proof"] => (F::KeyProof { member: did, key }, Shape::Str(128)),
                        ["retired"] => (F::KeyRetired { member: did, key }, Shape::Str(64 * 65)),
                        _ => return Err(unknown()),
                    });
                }
                _ => {}
            }
            let shape = match rest {
                [] => Shape::Map,
                ["role"] => Shape::OneOf(DomainRole::NAMES),
                ["weight"] => Shape::NonNegative,
                ["status"] => Shape::OneOf(&["active", "removed"]),
                _ => return Err(unknown()),
            };
            (F::Member(did), shape)
        }
        ["proposals", id, rest @ ..] => {
            check_ident("proposal id", id)?;
            let id = (*id).to_owned();
            match rest {
                [] => (F::ProposalContent(id), Shape::Map),
                ["title"] => (F::ProposalContent(id), Shape::Text(200)),
                ["description"] => (F::ProposalContent(id), Shape::Str(8000)),
                ["created_at"] => (F::ProposalContent(id), Shape::NonNegative),
                ["author"] => (F::ProposalAuthor(id), Shape::Did),
                ["payload"] => (F::ProposalContent(id), Shape::Map),
                ["payload", field] => {
                    let shape = match *field {
                        "type" => Shape::OneOf(PAYLOAD_TYPES),
                        "body" | "purpose" => Shape::Str(8000),
                        "amount" => Shape::Range(1, i64::MAX),
                        "recipient" | "did" => Shape::Did,
                        "unit" | "role" | "key" => Shape::Str(128),
                        "value" => Shape::Str(4000),
                        "action" => Shape::OneOf(&["add", "role", "remove"]),
                        _ => return Err(unknown()),
                    };
                    (F::ProposalContent(id), shape)
                }
                ["state"] => (F::ProposalState(id), Shape::OneOf(ProposalState::NAMES)),
                ["opened_at"] | ["closes_at"] => (F::ProposalSchedule(id), Shape::NonNegative),
                ["votes"] => (F::Votes(id), Shape::Map),
                ["close"] => (F::Close(id), Shape::Map),
                ["close", field] => {
                    let shape = match *field {
                        "outcome" => Shape::OneOf(crate::tally::Outcome::NAMES),
                        "counted_heads" => Shape::Str(64 * 65),
                        "closed_by" | "closed_by_key" => Shape::Did,
                        "closed_at" | "eligible" | "for" | "against" | "abstain" | "block"
                        | "blockers" => Shape::NonNegative,
                        _ => return Err(unknown()),
                    };
                    (F::Close(id), shape)
                }
                ["votes", voter, rest @ ..] => {
                    let voter = parse_did_key("voter DID", voter)?;
                    let shape = match rest {
                        [] => Shape::Map,
                        ["choice"] => Shape::OneOf(Choice::NAMES),
                        ["comment"] => Shape::Str(2000),
                        ["at"] => Shape::NonNegative,
                        ["key"] => Shape::Did,
                        _ => return Err(unknown()),
                    };
                    (F::Vote(id, voter), shape)
                }
                _ => return Err(unknown()),
            }
        }
        _ => return Err(unknown()),
    })
}

impl DomainMember {
    /// Reads one member; `None` when absent or malformed.
    pub fn read(r: Reader<'_>, did: &Did) -> Option<DomainMember> {
        let obj = r.map_path(&["members", &did.to_string()])?;
        Some(DomainMember {
            did: *did,
            role: DomainRole::parse(&r.str(&obj, "role")?)?,
            weight: r.int(&obj, "weight").unwrap_or(1),
            active: r.str(&obj, "status").as_deref() != Some("removed"),
        })
    }
}

/// The member whose voting key ([`key_of`]) is `key`: the member whose DID
/// it is, unless that member rotated away from it, else the one member that
/// named it. `None` when no member (or several) hold it.
pub fn member_by_key(r: Reader<'_>, key: &Did) -> Option<DomainMember> {
    if let Some(m) = DomainMember::read(r, key) {
        return (key_of(r, key) == Some(*key)).then_some(m);
    }
    let members = r.map_path(&["members"])?;
    let mut holders = r
        .did_keys(&members)
        .into_iter()
        .filter(|did| key_of(r, did) == Some(*key));
    let holder = holders.next()?;
    if holders.next().is_some() {
        return None;
    }
    DomainMember::read(r, &holder)
}

/// Whether some member is an active admin: the domain can still add members
/// and change its rules.
pub fn has_active_admin(r: Reader<'_>) -> bool {
    r.map_path(&["members"]).is_some_and(|members| {
        r.did_keys(&members).iter().any(|did| {
            DomainMember::read(r, did).is_some_and(|m| m.active && m.role == DomainRole::Admin)
        })
    })
}

/// What a proposal would do if accepted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    /// Text only.
    Text {
        /// Body.
        body: String,
    },
    /// Move `amount` of `unit` from the treasury to `recipient`.
    Budget {
        /// Amount in the unit's smallest step.
        amount: i64,
        /// Who receives it.
        recipient: Did,
        /// Unit id.
        unit: String,
        /// Why.
        purpose: String,
    },
    /// Add or remove a member.
    Membership {
        /// `add` or `remove`.
        action: String,
        /// Who.
        did: Did,
        /// Role when added.
        role: Option<String>,
    },
    /// Change a policy key.
    ConfigChange {
        /// Key.
        key: String,
        /// New value.
        value: String,
    },
    /// Freeze an account.
    Freeze {
        /// Whose.
        did: Did,
    },
    /// Unfreeze an account.
    Unfreeze {
        /// Whose.
        did: Did,
    },
}

/// A proposal.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Proposal {
    /// Id within the domain.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Who proposed it.
    pub author: Did,
    /// Unix seconds.
    pub created_at: i64,
    /// Lifecycle state.
    pub state: ProposalState,
    /// When it opened.
    pub opened_at: Option<i64>,
    /// When voting ends.
    pub closes_at: Option<i64>,
    /// What it does.
    pub payload: Option<Payload>,
    /// Votes by voter.
    pub votes: BTreeMap<Did, Vote>,
    /// The close that counts, once closed by a tally.
    pub close: Option<crate::tally::Close>,
}

impl Proposal {
    /// Reads one proposal; `None` when absent or malformed.
    pub fn read(r: Reader<'_>, id: &str) -> Option<Proposal> {
        let obj = r.map_path(&["proposals", id])?;
        let mut votes = BTreeMap::new();
        if let Some(vs) = r.map(&obj, "votes") {
            for voter in r.did_keys(&vs) {
                // A sealed member's vote is the one its sealer had seen.
                let vote = match seal_of(r, &voter) {
                    Some(seal) => read_vote(Reader::at(r.doc(), &seal), id, &voter),
                    None => read_vote(r, id, &voter),
                };
                if let Some(vote) = vote {
                    votes.insert(voter, vote);
                }
            }
        }
        let close = read_close(r, &obj, id);
        Some(Proposal {
            id: id.to_owned(),
            title: r.str(&obj, "title").unwrap_or_default(),
            description: r.str(&obj, "description").unwrap_or_default(),
            author: r.str(&obj, "author")?.parse().ok()?,
            created_at: r.int(&obj, "created_at").unwrap_or(0),
            state: state_of(r, &obj, close.as_ref())?,
            opened_at: r.int(&obj, "opened_at"),
            closes_at: r.int(&obj, "closes_at"),
            payload: r.map(&obj, "payload").and_then(|p| read_payload(r, &p)),
            votes,
            close,
        })
    }

    /// Reads only the state of a proposal, which authorisation needs often.
    pub fn state(r: Reader<'_>, id: &str) -> Option<ProposalState> {
        let obj = r.map_path(&["proposals", id])?;
        state_of(r, &obj, read_close(r, &obj, id).as_ref())
    }

    /// Reads only the close of a proposal.
    pub fn close(r: Reader<'_>, id: &str) -> Option<crate::tally::Close> {
        read_close(r, &r.map_path(&["proposals", id])?, id)
    }
}

/// A closed proposal's state is its close's outcome: when closes conflict,
/// the `state` and `close` keys could pick different winners, and the close
/// is the one that was tallied. A proposal whose closes are all sealed
/// (none counts) is still open: only an open proposal is closed.
fn state_of(
    r: Reader<'_>,
    obj: &ObjId,
    close: Option<&crate::tally::Close>,
) -> Option<ProposalState> {
    match close {
        Some(close) => Some(close.outcome.state()),
        None => {
            let written = ProposalState::parse(&r.str(obj, "state")?)?;
            let closed = crate::tally::Outcome::parse(written.as_str()).is_some();
            Some(if closed { ProposalState::Open } else { written })
        }
    }
}

/// The vote `voter` holds on proposal `id` as `r` reads it: of the votes
/// written (several when it voted from two places at once), the last in
/// Automerge's order whose key counts ([`key_counts`]). When only votes by
/// a retired key its retirement had not seen are left (a stale one
/// replaced the vote the key held), the vote is the one held where the key
/// was retired, if every retirement of it says the same.
fn read_vote(r: Reader<'_>, id: &str, voter: &Did) -> Option<Vote> {
    let votes = r.map_path(&["proposals", id, "votes"])?;
    let key = voter.to_string();
    let mut retired = Vec::new();
    for v in r.maps_all(&votes, &key).into_iter().rev() {
        let by = r
            .str(&v, "key")
            .and_then(|k| k.parse().ok())
            .unwrap_or(*voter);
        let counts = key_counts(r, voter, &by, |seen| {
            seen.map_path(&["proposals", id, "votes"])
                .is_some_and(|vs| seen.maps_all(&vs, &key).contains(&v))
        });
        if counts {
            return Some(Vote {
                choice: Choice::parse(&r.str(&v, "choice")?)?,
                comment: r.str(&v, "comment"),
                at: r.int(&v, "at"),
            });
        }
        if retired.is_empty() {
            retired = retirements(r, voter, &by);
        }
    }
    let mut held = retired
        .iter()
        .map(|heads| read_vote(Reader::at(r.doc(), heads), id, voter));
    let first = held.next()??;
    held.all(|v| v.as_ref() == Some(&first)).then_some(first)
}

/// Whether something `member` wrote with `key` counts as `r` reads it: the
/// key is the member's voting key ([`key_of`]) and not retired, or it is
/// retired and every retirement of it had seen the write (`seen` asks that
/// of the document at the retirement's heads). A key that is neither (one a
/// concurrent rotation named, which the member has not settled) counts for
/// nothing.
pub fn key_counts(
    r: Reader<'_>,
    member: &Did,
    key: &Did,
    seen: impl Fn(Reader<'_>) -> bool,
) -> bool {
    let retired = retirements(r, member, key);
    if retired.is_empty() {
        return key_of(r, member) == Some(*key);
    }
    retired.iter().all(|heads| seen(Reader::at(r.doc(), heads)))
}

/// The heads at which `member` retired `key`, one per conflicting write.
pub fn retirements(r: Reader<'_>, member: &Did, key: &Did) -> Vec<Vec<automerge::ChangeHash>> {
    let Some(k) = r.map_path(&["members", &member.to_string(), "keys", &key.key_string()]) else {
        return Vec::new();
    };
    r.strs_all(&k, "retired")
        .iter()
        .filter_map(|text| crate::tally::parse_heads(text))
        .map(|heads| heads.into_iter().map(automerge::ChangeHash).collect())
        .collect()
}

/// The key holding `member`'s vote: the one `members/<did>/key` names, when
/// that key has proven itself under `keys`, else the DID key. `None` while
/// concurrent rotations name different keys, or the named key has no proof:
/// the member then votes with neither until it names one again.
pub fn key_of(r: Reader<'_>, member: &Did) -> Option<Did> {
    let Some(m) = r.map_path(&["members", &member.to_string()]) else {
        return Some(*member);
    };
    let key = crate::coop::named_key(r.strs_all(&m, "key"), member)?;
    if key == *member {
        return Some(key);
    }
    r.map(&m, "keys")
        .and_then(|ks| r.map(&ks, &key.key_string()))
        .and_then(|k| r.str(&k, "proof"))
        .map(|_| key)
}

/// Whether `key` is retired by `member` as `r` reads it.
pub fn is_retired(r: Reader<'_>, member: &Did, key: &Did) -> bool {
    !retirements(r, member, key).is_empty()
}

/// The close that counts: of the closes written (several when nodes closed
/// at once), the last in Automerge's order whose closer is not sealed, or
/// whose sealer had seen it. A thief's close written after the seal, on
/// whatever old heads, counts nowhere.
fn read_close(r: Reader<'_>, proposal: &ObjId, id: &str) -> Option<crate::tally::Close> {
    r.maps_all(proposal, "close")
        .into_iter()
        .rev()
        .filter_map(|c| Some((read_close_at(r, &c)?, c)))
        .find(|(close, c)| {
            let seen = |seen: Reader<'_>| {
                seen.map_path(&["proposals", id])
                    .is_some_and(|p| seen.maps_all(&p, "close").contains(c))
            };
            let by = r
                .str(c, "closed_by_key")
                .and_then(|k| k.parse().ok())
                .unwrap_or(close.closed_by);
            key_counts(r, &close.closed_by, &by, seen)
                && seal_of(r, &close.closed_by).is_none_or(|seal| seen(Reader::at(r.doc(), &seal)))
        })
        .map(|(close, _)| close)
}

fn read_close_at(r: Reader<'_>, c: &ObjId) -> Option<crate::tally::Close> {
    use crate::tally::{Close, Outcome, Tally, parse_heads};
    let c = c.clone();
    let int = |key| r.int(&c, key);
    Some(Close {
        outcome: Outcome::parse(&r.str(&c, "outcome")?)?,
        tally: Tally {
            eligible: int("eligible")?,
            for_: int("for")?,
            against: int("against")?,
            abstain: int("abstain")?,
            block: int("block")?,
            blockers: int("blockers")?,
        },
        counted_heads: parse_heads(&r.str(&c, "counted_heads")?)?,
        closed_at: int("closed_at")?,
        closed_by: r.str(&c, "closed_by")?.parse().ok()?,
    })
}

impl Proposal {
    /// Reads only the author of a proposal.
    pub fn author(r: Reader<'_>, id: &str) -> Option<Did> {
        let obj = r.map_path(&["proposals", id])?;
        r.str(&obj, "author")?.parse().ok()
    }
}

fn read_payload(r: Reader<'_>, p: &ObjId) -> Option<Payload> {
    let did = |key| r.str(p, key).and_then(|s| s.parse::<Did>().ok());
    Some(match r.str(p, "type")?.as_str() {
        "text" => Payload::Text {
            body: r.str(p, "body").unwrap_or_default(),
        },
        "budget" => Payload::Budget {
            amount: r.int(p, "amount")?,
            recipient: did("recipient")?,
            unit: r.str(p, "unit")?,
            purpose: r.str(p, "purpose").unwrap_or_default(),
        },
        "membership" => Payload::Membership {
            action: r.str(p, "action")?,
            did: did("did")?,
            role: r.str(p, "role"),
        },
        "config_change" => Payload::ConfigChange {
            key: r.str(p, "key")?,
            value: r.str(p, "value")?,
        },
        "freeze" => Payload::Freeze { did: did("did")? },
        "unfreeze" => Payload::Unfreeze { did: did("did")? },
        _ => return None,
    })
}

/// Reads the rules of a domain.
pub fn read_rules(r: Reader<'_>) -> Rules {
    let mut rules = Rules::default();
    let Some(obj) = r.map_path(&["rules"]) else {
        return rules;
    };
    rules.quorum_percent = r
        .int(&obj, "quorum_percent")
        .unwrap_or(rules.quorum_percent);
    rules.approval_percent = r
        .int(&obj, "approval_percent")
        .unwrap_or(rules.approval_percent);
    rules.voting_period_seconds = r
        .int(&obj, "voting_period_seconds")
        .unwrap_or(rules.voting_period_seconds);
    rules.allow_veto = r.bool(&obj, "allow_veto").unwrap_or(false);
    if let Some(m) = r.map(&obj, "method") {
        let int = |k| r.int(&m, k).unwrap_or(0);
        rules.method = match r.str(&m, "kind").as_deref() {
            Some("supermajority") => Method::Supermajority {
                threshold: int("threshold"),
            },
            Some("consent") => Method::Consent {
                max_blocks: int("max_blocks"),
            },
            Some("unanimous") => Method::Unanimous,
            Some("wasm") => Method::Wasm {
                module: r.str(&m, "module").unwrap_or_default(),
            },
            _ => Method::SimpleMajority,
        };
    }
    rules
}

/// The whole domain, as typed data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Domain {
    /// Slug.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Profile preset name.
    pub profile: String,
    /// The co-op this domain belongs to, by slug.
    pub coop_id: Option<String>,
    /// Creator.
    pub creator: Did,
    /// Unix seconds.
    pub created_at: i64,
    /// Voting rules.
    pub rules: Rules,
    /// Members by DID (including removed ones, marked inactive).
    pub members: BTreeMap<Did, DomainMember>,
    /// Proposals by id.
    pub proposals: BTreeMap<String, Proposal>,
}

impl Domain {
    /// Reads the domain document.
    pub fn read(r: Reader<'_>) -> Result<Domain, SchemaError> {
        let genesis = crate::document::Genesis::read(r)
            .filter(|g| g.kind == DocKind::Domain)
            .ok_or_else(|| SchemaError::Missing("domain genesis".into()))?;
        let root = ObjId::Root;
        let mut members = BTreeMap::new();
        if let Some(m) = r.map(&root, "members") {
            for did in r.did_keys(&m) {
                if let Some(member) = DomainMember::read(r, &did) {
                    members.insert(did, member);
                }
            }
        }
        let mut proposals = BTreeMap::new();
        if let Some(ps) = r.map(&root, "proposals") {
            for id in r.keys(&ps) {
                if let Some(p) = Proposal::read(r, &id) {
                    proposals.insert(id, p);
                }
            }
        }
        Ok(Domain {
            id: genesis.slug,
            name: r.str(&root, "name").unwrap_or_default(),
            profile: r.str(&root, "profile").unwrap_or_default(),
            coop_id: r.str(&root, "coop_id"),
            creator: genesis.creator,
            created_at: genesis.created_at,
            rules: read_rules(r),
            members,
            proposals,
        })
    }
}

/// What a new domain starts with.
#[derive(Debug, Clone)]
pub struct NewDomain {
    /// Slug.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Profile preset name.
    pub profile: String,
    /// The document id of the co-op the domain belongs to, if any.
    pub coop_id: Option<String>,
    /// Creator, the first admin.
    pub creator: Did,
    /// Unix seconds.
    pub created_at: i64,
    /// Rules.
    pub rules: Rules,
}

/// Writes the genesis of a domain, with its creator as first admin.
pub fn create(tx: &mut impl Transactable, new: &NewDomain) -> Result<(), SchemaError> {
    write_genesis(tx, DocKind::Domain, &new.id, &new.creator, new.created_at)?;
    let root = ObjId::Root;
    tx.put(&root, "name", new.name.as_str())?;
    tx.put(&root, "profile", new.profile.as_str())?;
    if let Some(coop) = &new.coop_id {
        // The co-op's document id: what access rules resolve it by.
        coop.parse::<crate::DocId>()
            .map_err(|_| SchemaError::InvalidValue {
                field: "coop_id",
                reason: format!("{coop:?} is not a co-op document id (32 bytes in base58)"),
            })?;
        tx.put(&root, "coop_id", coop.as_str())?;
    }
    set_rules(tx, &new.rules)?;
    ensure_map(tx, &root, "members")?;
    ensure_map(tx, &root, "proposals")?;
    add_member(tx, &new.creator, DomainRole::Admin, 1)
}

fn percent(field: &'static str, v: i64) -> Result<i64, SchemaError> {
    if (0..=100).contains(&v) {
        Ok(v)
    } else {
        Err(SchemaError::InvalidValue {
            field,
            reason: "must be between 0 and 100".into(),
        })
    }
}

/// Renames the domain.
pub fn set_name(tx: &mut impl Transactable, name: &str) -> Result<(), SchemaError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(SchemaError::InvalidValue {
            field: "name",
            reason: "a name of 1 to 200 bytes".into(),
        });
    }
    tx.put(ObjId::Root, "name", name)?;
    Ok(())
}

/// Refuses a voting period that is not positive or is longer than
/// [`MAX_VOTING_PERIOD_SECONDS`].
pub fn check_voting_period(seconds: i64) -> Result<(), SchemaError> {
    if (1..=MAX_VOTING_PERIOD_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(SchemaError::InvalidValue {
            field: "voting_period_seconds",
            reason: format!(
                "must be from 1 to {MAX_VOTING_PERIOD_SECONDS} (a year), not {seconds}"
            ),
        })
    }
}

/// Replaces the voting rules.
pub fn set_rules(tx: &mut impl Transactable, rules: &Rules) -> Result<(), SchemaError> {
    let obj = ensure_map(tx, &ObjId::Root, "rules")?;
    tx.put(
        &obj,
        "quorum_percent",
        percent("quorum_percent", rules.quorum_percent)?,
    )?;
    tx.put(
        &obj,
        "approval_percent",
        percent("approval_percent", rules.approval_percent)?,
    )?;
    check_voting_period(rules.voting_period_seconds)?;
    tx.put(&obj, "voting_period_seconds", rules.voting_period_seconds)?;
    tx.put(&obj, "allow_veto", rules.allow_veto)?;
    let m = ensure_map(tx, &obj, "method")?;
    match &rules.method {
        Method::SimpleMajority => tx.put(&m, "kind", "simple_majority")?,
        Method::Supermajority { threshold } => {
            tx.put(&m, "kind", "supermajority")?;
            tx.put(&m, "threshold", percent("threshold", *threshold)?)?;
        }
        Method::Consent { max_blocks } => {
            tx.put(&m, "kind", "consent")?;
            tx.put(&m, "max_blocks", (*max_blocks).max(0))?;
        }
        Method::Unanimous => tx.put(&m, "kind", "unanimous")?,
        Method::Wasm { module } => {
            tx.put(&m, "kind", "wasm")?;
            tx.put(&m, "module", module.as_str())?;
        }
    }
    Ok(())
}

/// Adds (or reinstates) a member with a role and a weight.
pub fn add_member(
    tx: &mut impl Transactable,
    did: &Did,
    role: DomainRole,
    weight: i64,
) -> Result<(), SchemaError> {
    let members = existing_map(tx, &["members"], "members")?;
    let m = ensure_map(tx, &members, &did.to_string())?;
    tx.put(&m, "role", role.as_str())?;
    tx.put(&m, "weight", weight.max(0))?;
    tx.put(&m, "status", "active")?;
    if tx.get(&m, "sealed")?.is_some() {
        // Nothing is deleted in a document: an empty seal is none.
        tx.put(&m, "sealed", "")?;
    }
    Ok(())
}

/// Seals `did` at `heads` (the heads the writing change is made on): its
/// votes count as they stood there, its closes only if seen there. With
/// `remove`, the member is also removed.
pub fn seal_member(
    tx: &mut impl Transactable,
    did: &Did,
    heads: &[[u8; 32]],
    remove: bool,
) -> Result<(), SchemaError> {
    let m = existing_map(tx, &["members", &did.to_string()], "domain member")?;
    tx.put(&m, "sealed", crate::tally::heads_text(heads))?;
    if remove {
        tx.put(&m, "status", "removed")?;
    }
    Ok(())
}

/// Rotates `member`'s voting key from `old` to `new`: names `new` with its
/// `proof` (its signature of [`crate::coop::device_proof_message`]) and
/// retires `old` at `heads`, the heads the writing change is made on.
pub fn rotate_key(
    tx: &mut impl Transactable,
    member: &Did,
    old: &Did,
    new: &Did,
    proof: &[u8; 64],
    heads: &[[u8; 32]],
) -> Result<(), SchemaError> {
    let m = existing_map(tx, &["members", &member.to_string()], "domain member")?;
    let keys = ensure_map(tx, &m, "keys")?;
    let n = ensure_map(tx, &keys, &new.key_string())?;
    tx.put(&n, "proof", hex::encode(proof))?;
    let o = ensure_map(tx, &keys, &old.key_string())?;
    tx.put(&o, "retired", crate::tally::heads_text(heads))?;
    tx.put(&m, "key", new.to_string())?;
    Ok(())
}

/// The heads `did` was sealed at, if it is sealed.
pub fn seal_of(r: Reader<'_>, did: &Did) -> Option<Vec<automerge::ChangeHash>> {
    let m = r.map_path(&["members", &did.to_string()])?;
    let sealed = r.str(&m, "sealed").filter(|s| !s.is_empty())?;
    let heads = crate::tally::parse_heads(&sealed)?;
    Some(heads.into_iter().map(automerge::ChangeHash).collect())
}

/// Removes a member (kept, marked removed).
pub fn remove_member(tx: &mut impl Transactable, did: &Did) -> Result<(), SchemaError> {
    let m = existing_map(tx, &["members", &did.to_string()], "domain member")?;
    tx.put(&m, "status", "removed")?;
    Ok(())
}

/// What a new proposal says.
#[derive(Debug, Clone)]
pub struct NewProposal {
    /// Id within the domain.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Author.
    pub author: Did,
    /// Unix seconds.
    pub created_at: i64,
    /// What it does.
    pub payload: Payload,
}

/// Writes a new proposal in the `draft` state.
pub fn create_proposal(tx: &mut impl Transactable, new: &NewProposal) -> Result<(), SchemaError> {
    check_ident("proposal id", &new.id)?;
    if new.title.trim().is_empty() {
        return Err(SchemaError::InvalidValue {
            field: "title",
            reason: "a proposal needs a title".into(),
        });
    }
    if let Payload::Budget { amount, .. } = &new.payload
        && *amount <= 0
    {
        return Err(SchemaError::InvalidValue {
            field: "amount",
            reason: format!("a budget moves a positive amount, not {amount}"),
        });
    }
    match &new.payload {
        Payload::ConfigChange { key, value } => {
            crate::settings::Setting::parse(key, value)?;
        }
        Payload::Membership { action, role, .. } => {
            if let Some(role) = role
                && crate::coop::Role::parse(role).is_none()
            {
                return Err(SchemaError::InvalidValue {
                    field: "role",
                    reason: format!("{role} is not admin, member or observer"),
                });
            }
            if !["add", "role", "remove"].contains(&action.as_str())
                || (action == "role" && role.is_none())
            {
                return Err(SchemaError::InvalidValue {
                    field: "action",
                    reason: format!(
                        "a membership proposal adds (role optional), changes the role of (role needed) or removes a member, not {action:?}"
                    ),
                });
            }
        }
        _ => {}
    }
    let proposals = existing_map(tx, &["proposals"], "proposals")?;
    if tx.get(&proposals, new.id.as_str())?.is_some() {
        return Err(SchemaError::InvalidValue {
            field: "proposal id",
            reason: format!("{} already exists", new.id),
        });
    }
    let p = tx.put_object(&proposals, new.id.as_str(), automerge::ObjType::Map)?;
    tx.put(&p, "title", new.title.as_str())?;
    tx.put(&p, "description", new.description.as_str())?;
    tx.put(&p, "author", new.author.to_string())?;
    tx.put(&p, "created_at", new.created_at.max(0))?;
    tx.put(&p, "state", ProposalState::Draft.as_str())?;
    let pl = tx.put_object(&p, "payload", automerge::ObjType::Map)?;
    match &new.payload {
        Payload::Text { body } => {
            tx.put(&pl, "type", "text")?;
            tx.put(&pl, "body", body.as_str())?;
        }
        Payload::Budget {
            amount,
            recipient,
            unit,
            purpose,
        } => {
            tx.put(&pl, "type", "budget")?;
            tx.put(&pl, "amount", *amount)?;
            tx.put(&pl, "recipient", recipient.to_string())?;
            tx.put(&pl, "unit", unit.as_str())?;
            tx.put(&pl, "purpose", purpose.as_str())?;
        }
        Payload::Membership { action, did, role } => {
            tx.put(&pl, "type", "membership")?;
            tx.put(&pl, "action", action.as_str())?;
            tx.put(&pl, "did", did.to_string())?;
            if let Some(role) = role {
                tx.put(&pl, "role", role.as_str())?;
            }
        }
        Payload::ConfigChange { key, value } => {
            tx.put(&pl, "type", "config_change")?;
            tx.put(&pl, "key", key.as_str())?;
            tx.put(&pl, "value", value.as_str())?;
        }
        Payload::Freeze { did } => {
            tx.put(&pl, "type", "freeze")?;
            tx.put(&pl, "did", did.to_string())?;
        }
        Payload::Unfreeze { did } => {
            tx.put(&pl, "type", "unfreeze")?;
            tx.put(&pl, "did", did.to_string())?;
        }
    }
    tx.put_object(&p, "votes", automerge::ObjType::Map)?;
    Ok(())
}

fn proposal_obj(tx: &impl ReadDoc, id: &str) -> Result<ObjId, SchemaError> {
    existing_map(tx, &["proposals", id], &format!("proposal {id}"))
}

/// Opens a draft proposal for voting until `closes_at`.
pub fn open_proposal(
    tx: &mut impl Transactable,
    id: &str,
    opened_at: i64,
    closes_at: i64,
) -> Result<(), SchemaError> {
    let p = proposal_obj(tx, id)?;
    tx.put(&p, "state", ProposalState::Open.as_str())?;
    tx.put(&p, "opened_at", opened_at.max(0))?;
    tx.put(&p, "closes_at", closes_at.max(0))?;
    Ok(())
}

/// Moves a proposal to `state` (cancel, veto).
pub fn set_proposal_state(
    tx: &mut impl Transactable,
    id: &str,
    state: ProposalState,
) -> Result<(), SchemaError> {
    let p = proposal_obj(tx, id)?;
    tx.put(&p, "state", state.as_str())?;
    Ok(())
}

/// Closes an open proposal with a tally: `state` first, then the `close`
/// object, so that concurrent closes written by this function resolve both
/// keys by the same ops' order. `by_key` is the key the closer writes with,
/// recorded when it is not the closer's DID key (after a rotation).
pub fn close_proposal(
    tx: &mut impl Transactable,
    id: &str,
    close: &crate::tally::Close,
    by_key: Option<&Did>,
) -> Result<(), SchemaError> {
    let p = proposal_obj(tx, id)?;
    tx.put(&p, "state", close.outcome.as_str())?;
    let c = tx.put_object(&p, "close", automerge::ObjType::Map)?;
    tx.put(&c, "outcome", close.outcome.as_str())?;
    tx.put(
        &c,
        "counted_heads",
        crate::tally::heads_text(&close.counted_heads),
    )?;
    tx.put(&c, "closed_at", close.closed_at.max(0))?;
    tx.put(&c, "closed_by", close.closed_by.to_string())?;
    if let Some(key) = by_key.filter(|k| **k != close.closed_by) {
        tx.put(&c, "closed_by_key", key.to_string())?;
    }
    let t = &close.tally;
    for (key, value) in [
        ("eligible", t.eligible),
        ("for", t.for_),
        ("against", t.against),
        ("abstain", t.abstain),
        ("block", t.block),
        ("blockers", t.blockers),
    ] {
        tx.put(&c, key, value.max(0))?;
    }
    Ok(())
}

/// Casts (or changes) `voter`'s vote, signed with its DID key.
pub fn cast_vote(
    tx: &mut impl Transactable,
    id: &str,
    voter: &Did,
    choice: Choice,
    comment: Option<&str>,
    at: i64,
) -> Result<(), SchemaError> {
    cast_vote_by(tx, id, voter, voter, choice, comment, at)
}

/// Casts (or changes) `voter`'s vote, signed with `key` (recorded when it
/// is not the DID key). Each vote is a new object, so that two written at
/// once stay whole and the tally can tell which key wrote which.
pub fn cast_vote_by(
    tx: &mut impl Transactable,
    id: &str,
    voter: &Did,
    key: &Did,
    choice: Choice,
    comment: Option<&str>,
    at: i64,
) -> Result<(), SchemaError> {
    let p = proposal_obj(tx, id)?;
    let votes = ensure_map(tx, &p, "votes")?;
    let v = tx.put_object(&votes, voter.to_string(), automerge::ObjType::Map)?;
    if key != voter {
        tx.put(&v, "key", key.to_string())?;
    }
    tx.put(&v, "choice", choice.as_str())?;
    tx.put(&v, "at", at.max(0))?;
    if let Some(comment) = comment {
        tx.put(&v, "comment", comment)?;
    }
    Ok(())
}
