//! Who may write what: the permission rules of co-op and domain documents.
//!
//! Every rule is a function of the author, the field written (from
//! [`icn_schemas`]'s path classification), the value written, and the document
//! as it stood at the change's dependencies. `docs/permissions.md` is the
//! same table in prose; each row has a test both ways in `tests.rs`.

use automerge::ScalarValue;
use icn_schemas::coop::{self, CoopField, MemberStatus};
use icn_schemas::domain::{self, DomainField, DomainRole, ProposalState};
use icn_schemas::tally;
use icn_schemas::{Delegation, Did, DocKind, Reader, Scope};

/// The member a change counts as, and how it was written.
#[derive(Debug, Clone)]
pub(crate) struct Author {
    /// The member the change counts as.
    pub(crate) member: Did,
    /// The delegation, when a node wrote for the member.
    pub(crate) delegation: Option<Delegation>,
    /// The member's key the change is signed with: the actor key, or the key
    /// that signed the delegation.
    pub(crate) key: Did,
    /// Whether the member is an admin of the document, read once per change
    /// rather than once per operation.
    pub(crate) admin: bool,
}

/// A refusal by the permission rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The actor key is not a live device of an active member.
    #[error("{actor} is not a live device of an active member")]
    NotALiveDevice {
        /// The signing key.
        actor: Did,
    },
    /// The member is not active (suspended or removed).
    #[error("{0} is not an active member")]
    InactiveMember(Did),
    /// A delegated write outside the delegation's scopes.
    #[error("the delegation does not grant {0}")]
    MissingScope(Scope),
    /// The member's role does not allow writing this path.
    #[error("{member} may not write {path}: {reason}")]
    Forbidden {
        /// The author.
        member: Did,
        /// The path.
        path: String,
        /// The rule.
        reason: &'static str,
    },
}

/// Finds the member a non-genesis change counts as, from the document at the
/// change's dependencies, and checks the member is active.
pub(crate) fn resolve_author(
    kind: DocKind,
    r: Reader<'_>,
    actor: Did,
    delegation: Option<Delegation>,
) -> Result<Author, Denied> {
    // A delegated write counts as the member who delegated, through the key
    // that signed the delegation (its DID key, or one of its devices);
    // without one, the actor key itself must be a member device.
    let signer = delegation.as_ref().map_or(actor, |d| d.signing_key());
    let (member, admin) = match kind {
        DocKind::Coop => {
            let m = match &delegation {
                Some(d) => coop::is_live_device(r, &d.member, &d.signing_key())
                    .then(|| coop::Standing::read(r, &d.member))
                    .flatten(),
                None => coop::device_owner(r, &actor),
            }
            .ok_or(Denied::NotALiveDevice { actor: signer })?;
            if m.status != MemberStatus::Active {
                return Err(Denied::InactiveMember(m.did));
            }
            (m.did, m.is_admin())
        }
        // A domain lists members by DID, each with one voting key (its DID
        // key, or the key it rotated to). Other devices cannot be checked
        // here (the domain does not list them), so they and their
        // delegations write no domain documents.
        DocKind::Domain => {
            let m = domain::member_by_key(r, &signer)
                .filter(|m| delegation.as_ref().is_none_or(|d| d.member == m.did));
            let m = match (m, &delegation) {
                (Some(m), _) => m,
                (None, Some(d)) if d.device.is_some() => {
                    return Err(Denied::Forbidden {
                        member: d.member,
                        path: "the domain".into(),
                        reason: "a device's delegation writes no governance documents: vote through the member's own key or a delegation it signed",
                    });
                }
                (None, _) => return Err(Denied::NotALiveDevice { actor: signer }),
            };
            if !m.active {
                return Err(Denied::InactiveMember(m.did));
            }
            (m.did, m.role == DomainRole::Admin)
        }
    };
    Ok(Author {
        member,
        delegation,
        key: signer,
        admin,
    })
}

fn require_scope(author: &Author, scope: Scope) -> Result<(), Denied> {
    match &author.delegation {
        Some(d) if !d.allows(scope) => Err(Denied::MissingScope(scope)),
        _ => Ok(()),
    }
}

fn str_value(value: Option<&ScalarValue>) -> Option<&str> {
    match value {
        Some(ScalarValue::Str(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Checks one write in a co-op document (not the genesis), against `r`, the
/// document at the change's dependencies.
pub(crate) fn check_coop(
    r: Reader<'_>,
    author: &Author,
    field: &CoopField,
    path: &str,
    value: Option<&ScalarValue>,
) -> Result<(), Denied> {
    use CoopField as F;
    let forbidden = |reason| Denied::Forbidden {
        member: author.member,
        path: path.to_owned(),
        reason,
    };
    let is_admin = || author.admin;
    // The role decides first; an admin writing through a delegation also
    // needs the delegation to carry coop:admin.
    let admin_only = |reason| {
        if !is_admin() {
            return Err(forbidden(reason));
        }
        require_scope(author, Scope::CoopAdmin)
    };
    match field {
        F::Genesis(_) => Err(forbidden("genesis fields are written once, by the genesis")),
        F::Name | F::Description => admin_only("only admins change the co-op profile"),
        F::Policy
        | F::DefaultCreditLimit
        | F::TreasuryDomain
        | F::Units
        | F::Unit(_)
        | F::Rates => admin_only("only admins change the policy"),
        F::Members | F::Member(_) | F::MemberRole(_) | F::MemberJoinedAt(_) => {
            admin_only("only admins add members and set roles")
        }
        F::MemberCreditLimit(_) => admin_only("only admins set credit limits"),
        F::Relays => admin_only("only admins register relays"),
        F::TrustedContacts => admin_only("only admins name trusted contacts"),
        F::Onboarding => admin_only("only admins set the onboarding policy"),
        F::Decisions => admin_only("only admins apply governance decisions"),
        F::DeviceRevocation {
            member: target,
            device,
        } => {
            let listed = coop::has_device(r, target, device);
            let unrevoking = matches!(value, Some(ScalarValue::Boolean(false)));
            if unrevoking {
                // `revoked: false` is how a device is first listed, and only then.
                if listed {
                    return Err(forbidden("a revoked device stays revoked; add a new key"));
                }
            } else if !listed {
                return Err(forbidden("only a listed device is revoked"));
            }
            if path.ends_with("/revoked_by")
                && str_value(value) != Some(author.member.to_string().as_str())
            {
                return Err(forbidden("revoked_by is the member who revokes"));
            }
            if *target == author.member {
                require_scope(author, Scope::CoopWrite)
            } else if is_admin() {
                require_scope(author, Scope::CoopAdmin)
            } else if !unrevoking && coop::is_trusted_contact(r, &author.member) {
                // A trusted contact revokes, in an emergency; it adds nothing.
                require_scope(author, Scope::CoopWrite)
            } else {
                Err(forbidden(
                    "only the member, an admin or a trusted contact revokes a device",
                ))
            }
        }
        F::MemberStatus(target) => {
            // A member may leave on its own; anything else is an admin's call.
            if *target == author.member && str_value(value) == Some(MemberStatus::Removed.as_str())
            {
                require_scope(author, Scope::CoopWrite)
            } else {
                admin_only("only admins suspend, remove or reinstate other members")
            }
        }
        F::DeviceProof {
            member: target,
            device,
        } => {
            let valid = str_value(value)
                .and_then(|h| <[u8; 64]>::try_from(hex::decode(h).ok()?).ok())
                .is_some_and(|sig| {
                    crate::identity::verify(device, &coop::device_proof_message(target), &sig)
                        .is_ok()
                });
            if !valid {
                return Err(forbidden("a device proof must be the device's signature"));
            }
            if *target == author.member {
                require_scope(author, Scope::CoopWrite)
            } else {
                admin_only("only the member or an admin changes its name and devices")
            }
        }
        // A rotation: the member names a live device of its own as the key
        // holding its DID key's powers, signed with the key that held them.
        F::MemberKey(target) => {
            if *target != author.member || coop::key_of(r, target) != Some(author.key) {
                return Err(forbidden(
                    "a member's key is named by the member, signed with the key it replaces",
                ));
            }
            let new = str_value(value).and_then(|v| v.parse::<Did>().ok());
            if !new.is_some_and(|k| k != author.key && coop::is_live_device(r, target, &k)) {
                return Err(forbidden(
                    "the new key is another live device of the member, listed and proven first",
                ));
            }
            require_scope(author, Scope::CoopWrite)
        }
        F::MemberDisplayName(target) | F::MemberDevices(target) => {
            if *target == author.member {
                require_scope(author, Scope::CoopWrite)
            } else {
                admin_only("only the member or an admin changes its name and devices")
            }
        }
        _ => Err(forbidden("no rule allows this field")),
    }
}

/// Checks one write in a domain document (not the genesis).
pub(crate) fn check_domain(
    r: Reader<'_>,
    author: &Author,
    field: &DomainField,
    path: &str,
    value: Option<&ScalarValue>,
) -> Result<(), Denied> {
    use DomainField as F;
    require_scope(author, Scope::GovWrite)?;
    let forbidden = |reason| Denied::Forbidden {
        member: author.member,
        path: path.to_owned(),
        reason,
    };
    let is_admin = || author.admin;
    let admin_only = |reason| {
        if is_admin() {
            Ok(())
        } else {
            Err(forbidden(reason))
        }
    };
    let state = |id: &str| domain::Proposal::state(r, id);
    let is_proposal_author = |id: &str| domain::Proposal::author(r, id) == Some(author.member);
    match field {
        F::Genesis(_) | F::CoopId => {
            Err(forbidden("genesis fields are written once, by the genesis"))
        }
        F::Profile | F::Rules | F::Members => admin_only("only admins change the domain's rules"),
        F::Member(target) => {
            let leaving = *target == author.member
                && path.ends_with("/status")
                && str_value(value) == Some("removed");
            if leaving {
                Ok(())
            } else {
                admin_only("only admins add and remove domain members")
            }
        }
        // That it records the heads it was written on is checked with the
        // whole change (`validate::check_change`).
        F::MemberSeal(_) => admin_only("only admins seal and unseal members"),
        // A rotation, written by the member with the key it replaces (the
        // author's key is its voting key, or it could not write here).
        // Nobody else names a member's key: a domain cannot see the co-op's
        // word that a key is the member's.
        F::MemberKeys(target) if *target == author.member => Ok(()),
        F::MemberKey(target) if *target == author.member => {
            let new = str_value(value).and_then(|v| v.parse::<Did>().ok());
            match new {
                Some(k) if k != author.key && !domain::is_retired(r, target, &k) => Ok(()),
                _ => Err(forbidden(
                    "a member's new key is neither its key now nor a retired one",
                )),
            }
        }
        F::KeyProof { member, key } if *member == author.member => {
            let valid = str_value(value)
                .and_then(|h| <[u8; 64]>::try_from(hex::decode(h).ok()?).ok())
                .is_some_and(|sig| {
                    crate::identity::verify(key, &coop::device_proof_message(member), &sig).is_ok()
                });
            if valid {
                Ok(())
            } else {
                Err(forbidden("a key's proof must be the key's signature"))
            }
        }
        // That it records the heads it was written on is checked with the
        // whole change, like a seal.
        F::KeyRetired { member, key } if *member == author.member && *key == author.key => Ok(()),
        F::MemberKey(_) | F::MemberKeys(_) | F::KeyProof { .. } | F::KeyRetired { .. } => Err(
            forbidden("a member rotates its own key, retiring the key it writes with"),
        ),
        F::Proposals => admin_only("only admins create the proposals map"),
        F::ProposalContent(id) => match state(id) {
            None => Ok(()),
            Some(_) => Err(forbidden(
                "a proposal's content is set once, when it is created",
            )),
        },
        F::ProposalAuthor(id) => {
            if state(id).is_some() {
                Err(forbidden(
                    "a proposal's content is set once, when it is created",
                ))
            } else if str_value(value) != Some(author.member.to_string().as_str()) {
                Err(forbidden(
                    "the author of a proposal is the member who writes it",
                ))
            } else {
                Ok(())
            }
        }
        F::ProposalState(id) => {
            let next = str_value(value).and_then(ProposalState::parse);
            match (state(id), next) {
                (None, Some(ProposalState::Draft)) => Ok(()),
                (Some(ProposalState::Draft), Some(ProposalState::Open))
                    if is_proposal_author(id) =>
                {
                    Ok(())
                }
                (
                    Some(ProposalState::Draft | ProposalState::Open),
                    Some(ProposalState::Cancelled),
                ) if is_proposal_author(id) => Ok(()),
                (Some(ProposalState::Open), Some(ProposalState::Vetoed))
                    if domain::read_rules(r).allow_veto =>
                {
                    admin_only("only admins veto")
                }
                (Some(ProposalState::Open), Some(ProposalState::Vetoed)) => {
                    Err(forbidden("this domain does not allow vetoes"))
                }
                // Closing: the change must also write the close record, whose
                // tally every peer checks ([`check_close`]).
                (
                    Some(ProposalState::Open),
                    Some(
                        ProposalState::Accepted
                        | ProposalState::Rejected
                        | ProposalState::NoQuorum
                        | ProposalState::PolicyError,
                    ),
                ) => Ok(()),
                _ => Err(forbidden(
                    "allowed moves: new → draft; draft → open and draft/open → cancelled by the author; open → vetoed by an admin; open → accepted, rejected or no_quorum by a close",
                )),
            }
        }
        F::ProposalSchedule(id) => {
            if state(id) == Some(ProposalState::Draft) && is_proposal_author(id) {
                Ok(())
            } else {
                Err(forbidden(
                    "the schedule is set by the author when opening a draft",
                ))
            }
        }
        F::Close(id) => match state(id) {
            Some(ProposalState::Open) if path.ends_with("/closed_by_key") => {
                written_key(author, value, forbidden)
            }
            Some(ProposalState::Open) => Ok(()),
            _ => Err(forbidden("only an open proposal is closed")),
        },
        F::Votes(id) => match state(id) {
            None | Some(ProposalState::Open) => Ok(()),
            Some(_) => Err(forbidden("votes are cast only while the proposal is open")),
        },
        F::Vote(id, voter) => {
            if *voter != author.member {
                Err(forbidden("only the voter writes its vote"))
            } else if state(id) != Some(ProposalState::Open) {
                Err(forbidden("votes are cast only while the proposal is open"))
            } else if path.ends_with("/key") {
                written_key(author, value, forbidden)
            } else {
                Ok(())
            }
        }
        _ => Err(forbidden("no rule allows this field")),
    }
}

/// A vote's `key` or a close's `closed_by_key` names the key that signs it.
fn written_key(
    author: &Author,
    value: Option<&ScalarValue>,
    forbidden: impl Fn(&'static str) -> Denied,
) -> Result<(), Denied> {
    if str_value(value).and_then(|v| v.parse::<Did>().ok()) == Some(author.key) {
        Ok(())
    } else {
        Err(forbidden(
            "the key recorded is the key that signs the change",
        ))
    }
}

/// Why a close is refused while its domain's tally module is not held: the
/// one refusal that holding more data can lift.
pub(crate) const MODULE_NOT_HELD: &str = "the domain's tally module is not held here";

/// Tallies under a domain's rules, running its WASM module when it has one.
pub(crate) trait Modules {
    /// The outcome of `tally` (with `members` and `votes`, which a module
    /// reads) under `rules`; `Err` when the rules name a module that is not
    /// held here, so the tally cannot be checked.
    fn decide(
        &self,
        rules: &domain::Rules,
        members: &std::collections::BTreeMap<Did, domain::DomainMember>,
        votes: &std::collections::BTreeMap<Did, domain::Vote>,
        tally: &tally::Tally,
    ) -> Result<tally::Outcome, &'static str>;
}

/// Checks a change that closes proposal `id`: `before` is the document at
/// the change's dependencies, `after` the document as of the change itself.
/// The close must be complete and match its state, count exactly the heads
/// the change was written on, be recorded by its author, who is the
/// proposer, an admin, or any member once voting time is over, and carry the
/// tally and outcome every peer computes from the votes at those heads.
pub(crate) fn check_close(
    before: Reader<'_>,
    after: Reader<'_>,
    deps: &[[u8; 32]],
    author: &Author,
    id: &str,
    modules: &dyn Modules,
) -> Result<(), Denied> {
    let forbidden = |reason| Denied::Forbidden {
        member: author.member,
        path: format!("proposals/{id}/close"),
        reason,
    };
    let proposal = domain::Proposal::read(before, id)
        .filter(|p| p.state == ProposalState::Open)
        .ok_or_else(|| forbidden("only an open proposal is closed"))?;
    let close = domain::Proposal::close(after, id).ok_or_else(|| {
        forbidden("a close writes its whole record: outcome, tally, counted heads, time and closer")
    })?;
    let written_state = domain::written_state(after, id);
    if written_state.as_deref() != Some(close.outcome.as_str()) {
        return Err(forbidden("the state a close writes is its outcome"));
    }
    let mut counted = deps.to_vec();
    counted.sort_unstable();
    if close.counted_heads != counted {
        return Err(forbidden(
            "a close counts exactly the heads it was written on",
        ));
    }
    if close.closed_by != author.member {
        return Err(forbidden("the closer is the member who writes the close"));
    }
    let period_over = proposal.closes_at.is_some_and(|end| close.closed_at >= end);
    if !(proposal.author == author.member || author.admin || period_over) {
        return Err(forbidden(
            "the proposer or an admin closes early; any member once voting time is over",
        ));
    }
    if proposal
        .opened_at
        .is_some_and(|opened| close.closed_at < opened)
    {
        return Err(forbidden("a proposal closes after it opened"));
    }
    let domain = domain::Domain::read(before).map_err(|_| forbidden("not a domain"))?;
    let tally = tally::count(domain.members.values(), &proposal.votes);
    let outcome = modules
        .decide(&domain.rules, &domain.members, &proposal.votes, &tally)
        .map_err(forbidden)?;
    if close.tally != tally || close.outcome != outcome {
        return Err(forbidden(
            "the recorded tally or outcome differs from the votes at the counted heads",
        ));
    }
    Ok(())
}

/// What the genesis of a document must establish, checked on the document
/// after the genesis is applied: the fields are all there, and the creator is
/// the author and the first admin, with the signing key as a live device.
pub(crate) fn check_genesis(
    r: Reader<'_>,
    actor: Did,
    delegation: Option<&Delegation>,
) -> Result<(), String> {
    let genesis = icn_schemas::document::Genesis::read(r)
        .ok_or("the genesis must write type, schema, id, creator and created_at")?;
    let member = delegation.map_or(actor, |d| d.member);
    if genesis.creator != member {
        return Err(format!(
            "the genesis names {} as creator but is written by {member}",
            genesis.creator
        ));
    }
    if let Some(d) = delegation {
        let scope = match genesis.kind {
            DocKind::Coop => Scope::CoopWrite,
            DocKind::Domain => Scope::GovWrite,
        };
        if !d.allows(scope) {
            return Err(format!("the delegation does not grant {scope}"));
        }
    }
    match genesis.kind {
        DocKind::Coop => {
            let m = coop::Standing::read(r, &member).ok_or("the creator must be a member")?;
            let device = delegation.map_or(actor, |d| d.signing_key());
            if !m.is_admin() || !coop::is_live_device(r, &member, &device) {
                return Err(
                    "the creator must be an active admin whose key is a live device".into(),
                );
            }
        }
        // The creator's DID key signs, directly or through a delegation it
        // signed: a domain cannot see the co-op's word that another key is
        // the member's, so a member that rotated creates no domain yet.
        DocKind::Domain => {
            let signer = delegation.map_or(actor, |d| d.signing_key());
            if signer != member {
                return Err(
                    "a domain is created with its creator's DID key (a device, or a key it rotated to, creates none yet)"
                        .into(),
                );
            }
            let m = domain::DomainMember::read(r, &member).ok_or("the creator must be a member")?;
            if m.role != DomainRole::Admin || !m.active {
                return Err("the creator must be an active admin".into());
            }
        }
    }
    Ok(())
}
