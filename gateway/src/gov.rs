//! Governance: domains, their members, proposals, votes, closes.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use icn_engine::Engine;
use icn_schemas::domain::{
    self, Choice, Domain, DomainRole, Method, NewDomain, NewProposal, Payload, Proposal,
    ProposalState, Rules,
};
use icn_schemas::tally::{Outcome, Tally};
use icn_schemas::{Did, DocId, DocKind, Scope};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::now_secs;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::scoped::{GovRead, GovWrite, InDomain};
use crate::views::{Page, PageQuery};
use crate::{Auth, Body, Gateway, blocking, optional_json, parse_did};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(list_domains, create_domain))
        .routes(routes!(get_domain, update_domain))
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member))
        .routes(routes!(cancel_proposal))
        .routes(routes!(upload_module))
        .routes(routes!(get_module))
        .routes(routes!(list_domain_proposals, create_domain_proposal))
        .routes(routes!(list_proposals, create_proposal))
        .routes(routes!(get_proposal))
        .routes(routes!(open_proposal))
        .routes(routes!(vote, tally))
        .routes(routes!(close_proposal))
}

/// A governance domain: its rules and members, and how many proposals it holds.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct DomainView {
    id: String,
    doc_id: DocId,
    name: String,
    /// `default`, `consent`, … : where its rules came from.
    profile: String,
    /// The co-op it is attached to (its id), if any.
    coop_id: Option<String>,
    /// The co-op's document id.
    coop_doc_id: Option<String>,
    creator: Did,
    /// Unix seconds.
    created_at: i64,
    rules: Rules,
    members: Vec<domain::DomainMember>,
    /// How many proposals it holds.
    proposals: usize,
}

fn domain_view(gw: &Gateway, doc: &DocId, d: &Domain) -> DomainView {
    let coop = d.coop_id.as_ref().map(|c| {
        c.parse::<DocId>()
            .ok()
            .and_then(|id| gw.index().name(&id))
            .unwrap_or_else(|| c.clone())
    });
    DomainView {
        id: d.id.clone(),
        doc_id: *doc,
        name: d.name.clone(),
        profile: d.profile.clone(),
        coop_id: coop,
        coop_doc_id: d.coop_id.clone(),
        creator: d.creator,
        created_at: d.created_at,
        rules: d.rules.clone(),
        members: d.members.values().cloned().collect(),
        proposals: d.proposals.len(),
    }
}

/// A member's vote on a proposal.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct VoteView {
    voter: Did,
    choice: Choice,
    comment: Option<String>,
    /// Unix seconds.
    at: Option<i64>,
}

/// A proposal, its votes, and once closed its outcome and receipt.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ProposalView {
    /// Unique within its domain.
    id: String,
    domain_id: String,
    domain_doc_id: DocId,
    title: String,
    description: String,
    author: Did,
    state: ProposalState,
    /// Unix seconds.
    created_at: i64,
    opened_at: Option<i64>,
    closes_at: Option<i64>,
    payload: Option<Payload>,
    votes: Vec<VoteView>,
    outcome: Option<Outcome>,
    tally: Option<Tally>,
    closed_at: Option<i64>,
    closed_by: Option<Did>,
    /// The decision receipt's hash, once closed.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    decision_receipt_id: Option<String>,
}

fn proposal_view(domain_doc: &DocId, d: &Domain, p: &Proposal) -> ProposalView {
    let votes = p
        .votes
        .iter()
        .map(|(voter, v)| VoteView {
            voter: *voter,
            choice: v.choice,
            comment: v.comment.clone(),
            at: v.at,
        })
        .collect();
    let receipt = p
        .close
        .as_ref()
        .map(|c| icn_schemas::tally::DecisionReceipt::new(*domain_doc, &p.id, c));
    ProposalView {
        id: p.id.clone(),
        domain_id: d.id.clone(),
        domain_doc_id: *domain_doc,
        title: p.title.clone(),
        description: p.description.clone(),
        author: p.author,
        state: p.state,
        created_at: p.created_at,
        opened_at: p.opened_at,
        closes_at: p.closes_at,
        payload: p.payload.clone(),
        votes,
        outcome: p.close.as_ref().map(|c| c.outcome),
        tally: p.close.as_ref().map(|c| c.tally),
        closed_at: p.close.as_ref().map(|c| c.closed_at),
        closed_by: p.close.as_ref().map(|c| c.closed_by),
        decision_receipt_id: receipt.map(|r| hex::encode(r.hash())),
    }
}

/// A vote recorded.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct VoteAnswer {
    proposal_id: String,
    voter: Did,
    choice: Choice,
    comment: Option<String>,
    /// Unix seconds.
    at: i64,
}

/// A proposal's tally now.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TallyAnswer {
    proposal_id: String,
    state: Option<ProposalState>,
    tally: Tally,
    /// What a close now would record (`null` when it cannot be closed).
    outcome_if_closed_now: Option<Outcome>,
}

/// A module stored.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ModuleAnswer {
    /// Its blake3 hash, hex: what a domain's rules name.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    hash: String,
    /// Its size.
    bytes: usize,
}

fn read_domain(engine: &Engine, id: &DocId) -> Result<Domain, AppError> {
    engine
        .domain(id)
        .ok_or_else(|| AppError::not_found(format!("no governance domain {id}")))?
        .map_err(AppError::internal)
}

/// The domain `key` names, readable by `auth`.
fn domain_for(gw: &Gateway, auth: &Auth, key: &str) -> Result<DocId, AppError> {
    crate::scoped::domain_id(gw, &auth.did, key)
}

/// Where a proposal route finds its proposal: `?domain_id=` says which
/// domain, when the caller belongs to several that hold the id.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ProposalIn {
    /// The domain's id or document id. Needed only when the proposal id is
    /// used in more than one domain you belong to (proposal ids are unique
    /// within a domain, not across domains).
    domain_id: Option<String>,
}

/// The domain of proposal `id` that `auth` means. Proposal ids are chosen by
/// their authors and are unique only within a domain, so a member of another
/// domain can reuse one; only domains the caller reads are candidates, and
/// `?domain_id=` settles the rest.
fn proposal_domain(
    gw: &Gateway,
    auth: &Auth,
    id: &str,
    within: &ProposalIn,
) -> Result<DocId, AppError> {
    let holding = gw.index().proposal_domains(id);
    if let Some(key) = &within.domain_id {
        let domain = domain_for(gw, auth, key)?;
        return if holding.contains(&domain) {
            Ok(domain)
        } else {
            Err(AppError::not_found(format!(
                "no proposal {id:?} in governance domain {key:?}"
            )))
        };
    }
    if holding.is_empty() {
        return Err(AppError::not_found(format!(
            "no proposal {id:?} on this node"
        )));
    }
    let readable: Vec<DocId> = holding
        .into_iter()
        .filter(|d| gw.engine().member_may_read(d, &auth.did))
        .collect();
    match readable.as_slice() {
        [] => Err(AppError::forbidden(format!(
            "{} is not a member of the domain of proposal {id:?}",
            auth.did
        ))),
        [one] => Ok(*one),
        several => {
            let names: Vec<String> = several
                .iter()
                .map(|d| gw.index().name(d).unwrap_or_else(|| d.to_string()))
                .collect();
            Err(AppError::conflict(format!(
                "proposal id {id:?} is used in {} domains you belong to ({}); add ?domain_id= to say which",
                several.len(),
                names.join(", ")
            )))
        }
    }
}

/// Overrides the rules a request names (a period in days, then one in
/// seconds, which wins).
fn override_rules(
    rules: &mut Rules,
    quorum_percent: Option<i64>,
    approval_percent: Option<i64>,
    voting_period_days: Option<i64>,
    voting_period_seconds: Option<i64>,
    method: Option<Method>,
    allow_veto: Option<bool>,
) {
    if let Some(q) = quorum_percent {
        rules.quorum_percent = q;
    }
    if let Some(a) = approval_percent {
        rules.approval_percent = a;
    }
    if let Some(days) = voting_period_days {
        rules.voting_period_seconds = days.saturating_mul(86_400);
    }
    if let Some(secs) = voting_period_seconds {
        rules.voting_period_seconds = secs;
    }
    if let Some(m) = method {
        rules.method = m;
    }
    if let Some(v) = allow_veto {
        rules.allow_veto = v;
    }
}

/// For a domain attached to a co-op, `did` must be one of the co-op's
/// members (not removed): nobody lists outsiders, or the co-op's members in
/// a domain the co-op's members did not make.
fn require_coop_member(
    engine: &Engine,
    coop: Option<&DocId>,
    did: &Did,
    what: &str,
) -> Result<(), AppError> {
    let Some(coop) = coop else { return Ok(()) };
    let standing = engine
        .read(coop, |r| icn_schemas::coop::Standing::read(r, did))
        .flatten();
    match standing {
        Some(s) if s.status != icn_schemas::coop::MemberStatus::Removed => Ok(()),
        _ => Err(AppError::forbidden(format!(
            "{did} is not a member of the co-op {what} belongs to"
        ))),
    }
}

pub(crate) fn proposal_json(
    engine: &Engine,
    domain: &DocId,
    id: &str,
) -> Result<ProposalView, AppError> {
    let d = read_domain(engine, domain)?;
    let p = d
        .proposals
        .get(id)
        .ok_or_else(|| AppError::not_found(format!("no proposal {id:?}")))?;
    Ok(proposal_view(domain, &d, p))
}

/// Filters of the domain list.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DomainFilter {
    /// Only the domains attached to this co-op (its id or document id).
    coop_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/gov/domains",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(DomainFilter, PageQuery),
    responses((status = 200, description = "The governance domains you belong to (attached to `coop_id`, when given), by document id", body = Page<DomainView>)),
)]
async fn list_domains(
    State(gw): State<Gateway>,
    auth: Auth,
    Query(filter): Query<DomainFilter>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<DomainView>>, AppError> {
    auth.require(Scope::GovRead)?;
    blocking(move || {
        let coop = filter
            .coop_id
            .as_deref()
            .map(|c| crate::scoped::coop_id(&gw, &auth.did, c))
            .transpose()?;
        let engine = gw.engine();
        let mut out = Vec::new();
        for id in gw.index().all(DocKind::Domain) {
            if engine.member_may_read(&id, &auth.did)
                && let Some(Ok(d)) = engine.domain(&id)
                && coop.is_none_or(|c| d.coop_id.as_deref() == Some(c.to_string().as_str()))
            {
                out.push(domain_view(&gw, &id, &d));
            }
        }
        Ok(Json(q.page(out, |d| d.doc_id.to_string())?))
    })
    .await
}

/// The rules to change (admins). A field this route does not know is
/// refused (400).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateDomainRequest {
    name: Option<String>,
    #[schema(minimum = 0, maximum = 100)]
    quorum_percent: Option<i64>,
    #[schema(minimum = 0, maximum = 100)]
    approval_percent: Option<i64>,
    #[schema(minimum = 1, maximum = 366)]
    voting_period_days: Option<i64>,
    #[schema(minimum = 1, maximum = 31622400)]
    voting_period_seconds: Option<i64>,
    /// `{"kind": "simple_majority" | "supermajority" (threshold) | "consent" (max_blocks) | "unanimous" | "wasm" (module)}`.
    method: Option<Method>,
    allow_veto: Option<bool>,
}

#[utoipa::path(
    put,
    path = "/v1/gov/domains/{id}",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The domain's id, or its document id")),
    request_body = UpdateDomainRequest,
    responses((status = 200, description = "The domain with its rules changed (admins only); proposals open now keep the schedule they opened with", body = DomainView), (status = 422, description = "A value out of range", body = crate::ErrorBody)),
)]
async fn update_domain(
    State(gw): State<Gateway>,
    d: InDomain<GovWrite>,
    Body(req): Body<UpdateDomainRequest>,
) -> Result<Json<DomainView>, AppError> {
    let InDomain { auth, id, .. } = d;
    blocking(move || {
        let engine = gw.engine();
        engine.write_with(&id, &auth.signer(), |r, _, tx| {
            let mut rules = domain::read_rules(r);
            override_rules(
                &mut rules,
                req.quorum_percent,
                req.approval_percent,
                req.voting_period_days,
                req.voting_period_seconds,
                req.method.clone(),
                req.allow_veto,
            );
            domain::set_rules(tx, &rules)?;
            if let Some(name) = &req.name {
                domain::set_name(tx, name)?;
            }
            Ok(())
        })?;
        let d = read_domain(engine, &id)?;
        Ok(Json(domain_view(&gw, &id, &d)))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/gov/domains/{id}/members/{did}",
    operation_id = "remove_domain_member",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The domain's id, or its document id"), ("did" = Did, Path, description = "The member's DID")),
    responses((status = 200, description = "The member, removed (admins; a member may remove itself: leave). The last active admin stays.", body = domain::DomainMember), (status = 404, description = "Not a member of the domain", body = crate::ErrorBody)),
)]
async fn remove_member(
    State(gw): State<Gateway>,
    d: InDomain<GovWrite>,
    Path((_domain, did)): Path<(String, String)>,
) -> Result<Json<domain::DomainMember>, AppError> {
    let InDomain { auth, id, .. } = d;
    let did = parse_did(&did)?;
    blocking(move || {
        let engine = gw.engine();
        engine.write(&id, &auth.signer(), |tx| domain::remove_member(tx, &did))?;
        let member = engine
            .read(&id, |r| domain::DomainMember::read(r, &did))
            .flatten()
            .ok_or_else(|| AppError::not_found(format!("{did} is not a member")))?;
        Ok(Json(member))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/gov/proposals/{id}/cancel",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$", description = "The proposal's id"), ProposalIn),
    responses((status = 200, description = "The proposal, cancelled (its author only, while a draft or open)", body = ProposalView), (status = 422, description = "Neither a draft nor open", body = crate::ErrorBody)),
)]
async fn cancel_proposal(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(id): Path<String>,
    Query(within): Query<ProposalIn>,
) -> Result<Json<ProposalView>, AppError> {
    auth.require(Scope::GovWrite)?;
    blocking(move || {
        let domain = proposal_domain(&gw, &auth, &id, &within)?;
        let engine = gw.engine();
        engine.cancel_proposal(&domain, &auth.signer(), &id)?;
        Ok(Json(proposal_json(engine, &domain, &id)?))
    })
    .await
}

/// A member: its DID, or `{did, role, weight}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum MemberRequest {
    #[schema(value_type = Did)]
    Did(String),
    Full {
        #[schema(value_type = Did)]
        did: String,
        /// `admin` or `member` (default).
        #[schema(value_type = Option<DomainRole>)]
        role: Option<DomainRole>,
        /// Vote weight (default 1).
        #[schema(minimum = 0)]
        weight: Option<i64>,
    },
}

impl MemberRequest {
    fn parse(&self) -> Result<(Did, DomainRole, i64), AppError> {
        Ok(match self {
            MemberRequest::Did(did) => (parse_did(did)?, DomainRole::Member, 1),
            MemberRequest::Full { did, role, weight } => (
                parse_did(did)?,
                role.unwrap_or(DomainRole::Member),
                weight.unwrap_or(1),
            ),
        })
    }
}

/// A new governance domain: a profile's rules, with overrides.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct NewDomainRequest {
    #[schema(pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$")]
    id: String,
    name: Option<String>,
    /// The rules to start from (docs/governance.md).
    #[schema(pattern = "^(cooperative_default|working_group|supermajority|consensus|unanimous)$")]
    profile: Option<String>,
    /// The co-op to attach it to (its id or document id).
    #[schema(pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$")]
    coop_id: Option<String>,
    #[schema(minimum = 0, maximum = 100)]
    quorum_percent: Option<i64>,
    #[schema(minimum = 0, maximum = 100)]
    approval_percent: Option<i64>,
    #[schema(minimum = 1, maximum = 366)]
    voting_period_days: Option<i64>,
    #[schema(minimum = 1, maximum = 31622400)]
    voting_period_seconds: Option<i64>,
    /// `{"kind": "simple_majority" | "supermajority" (threshold) | "consent" (max_blocks) | "unanimous" | "wasm" (module)}`.
    method: Option<Method>,
    allow_veto: Option<bool>,
    #[serde(default)]
    members: Vec<MemberRequest>,
}

#[utoipa::path(
    post,
    path = "/v1/gov/domains",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    request_body = NewDomainRequest,
    responses((status = 201, description = "The domain; you are its first admin", body = DomainView), (status = 404, description = "No such co-op (`coop_id`)", body = crate::ErrorBody), (status = 409, description = "A domain with this id exists", body = crate::ErrorBody)),
)]
async fn create_domain(
    State(gw): State<Gateway>,
    auth: Auth,
    Body(req): Body<NewDomainRequest>,
) -> Result<(StatusCode, Json<DomainView>), AppError> {
    auth.require(Scope::GovWrite)?;
    let profile = req
        .profile
        .clone()
        .unwrap_or_else(|| "cooperative_default".into());
    let mut rules = Rules::profile(&profile).ok_or_else(|| {
        AppError::bad_request(format!(
            "unknown profile {profile:?}; one of {}",
            Rules::PROFILES.join(", ")
        ))
    })?;
    override_rules(
        &mut rules,
        req.quorum_percent,
        req.approval_percent,
        req.voting_period_days,
        req.voting_period_seconds,
        req.method.clone(),
        req.allow_veto,
    );
    let members = req
        .members
        .iter()
        .map(MemberRequest::parse)
        .collect::<Result<Vec<_>, _>>()?;
    blocking(move || {
        if gw.index().name_taken(DocKind::Domain, &req.id) {
            return Err(AppError::conflict(format!(
                "a governance domain {:?} already exists",
                req.id
            )));
        }
        // A domain attached to a co-op is made by one of its active members,
        // for its members: resolving it by name also checks the caller reads it.
        let coop = match &req.coop_id {
            None => None,
            Some(c) => {
                let id = crate::scoped::coop_id(&gw, &auth.did, c)?;
                let active = gw
                    .engine()
                    .read(&id, |r| icn_schemas::coop::Standing::read(r, &auth.did))
                    .flatten()
                    .is_some_and(|s| s.is_active());
                if !active {
                    return Err(AppError::forbidden(format!(
                        "only the co-op's active members attach domains to it; {} is not one",
                        auth.did
                    )));
                }
                for (did, ..) in &members {
                    require_coop_member(gw.engine(), Some(&id), did, "the domain")?;
                }
                Some(id)
            }
        };
        let coop_id = coop.map(|id| id.to_string());
        let signer = auth.signer();
        let engine = gw.engine();
        let new = NewDomain {
            name: req.name.clone().unwrap_or_else(|| req.id.clone()),
            id: req.id,
            profile,
            coop_id,
            creator: auth.did,
            created_at: now_secs() as i64,
            rules,
        };
        let id = engine.create_domain(&signer, &new)?;
        let others: Vec<_> = members
            .into_iter()
            .filter(|(d, ..)| *d != auth.did)
            .collect();
        if !others.is_empty() {
            engine.add_domain_members(&id, &signer, &others)?;
        }
        Metrics::add(&gw.metrics().domains_created);
        let d = read_domain(engine, &id)?;
        Ok((StatusCode::CREATED, Json(domain_view(&gw, &id, &d))))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/gov/domains/{id}",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The domain's id, or its document id")),
    responses((status = 200, description = "The domain", body = DomainView), (status = 404, description = "No such domain", body = crate::ErrorBody)),
)]
async fn get_domain(
    State(gw): State<Gateway>,
    d: InDomain<GovRead>,
) -> Result<Json<DomainView>, AppError> {
    blocking(move || {
        let id = d.id;
        let d = read_domain(gw.engine(), &id)?;
        Ok(Json(domain_view(&gw, &id, &d)))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/gov/domains/{id}/members",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The domain's id, or its document id"), PageQuery),
    responses((status = 200, description = "Its members, with roles and weights, by DID", body = Page<domain::DomainMember>)),
)]
async fn list_members(
    State(gw): State<Gateway>,
    d: InDomain<GovRead>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<domain::DomainMember>>, AppError> {
    blocking(move || {
        let d = read_domain(gw.engine(), &d.id)?;
        let members = d.members.into_values().collect();
        Ok(Json(q.page(members, |m| m.did.to_string())?))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/gov/domains/{id}/members",
    operation_id = "add_domain_member",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The domain's id, or its document id")),
    request_body = MemberRequest,
    responses((status = 201, description = "The member added (admins only)", body = domain::DomainMember)),
)]
async fn add_member(
    State(gw): State<Gateway>,
    d: InDomain<GovWrite>,
    Body(req): Body<MemberRequest>,
) -> Result<(StatusCode, Json<domain::DomainMember>), AppError> {
    let InDomain { auth, id, .. } = d;
    let (did, role, weight) = req.parse()?;
    blocking(move || {
        let coop = gw
            .engine()
            .read(&id, icn_schemas::domain::coop_of)
            .flatten();
        require_coop_member(gw.engine(), coop.as_ref(), &did, "the domain")?;
        gw.engine()
            .add_domain_members(&id, &auth.signer(), &[(did, role, weight)])?;
        let member = domain::DomainMember {
            did,
            role,
            weight,
            active: true,
        };
        Ok((StatusCode::CREATED, Json(member)))
    })
    .await
}

/// Filters of a proposal list.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ProposalFilter {
    /// Only this domain's (its id or document id).
    domain_id: Option<String>,
    /// Only proposals in this state.
    #[param(value_type = Option<ProposalState>)]
    state: Option<String>,
}

/// The proposals of `domains` in `state`.
fn proposals_of(
    gw: &Gateway,
    domains: &[DocId],
    state: Option<ProposalState>,
) -> Vec<ProposalView> {
    let mut out = Vec::new();
    for id in domains {
        if let Some(Ok(d)) = gw.engine().domain(id) {
            for p in d.proposals.values() {
                if state.is_none_or(|s| s == p.state) {
                    out.push(proposal_view(id, &d, p));
                }
            }
        }
    }
    out
}

/// A proposal's place in a list: proposal ids are unique within a domain.
fn proposal_key(p: &ProposalView) -> String {
    format!("{}/{}", p.domain_doc_id, p.id)
}

fn parse_state(state: Option<&str>) -> Result<Option<ProposalState>, AppError> {
    state
        .map(|s| {
            ProposalState::parse(s)
                .ok_or_else(|| AppError::bad_request(format!("unknown proposal state {s:?}")))
        })
        .transpose()
}

#[utoipa::path(
    get,
    path = "/v1/gov/proposals",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(ProposalFilter, PageQuery),
    responses((status = 200, description = "Proposals of the domains you belong to", body = Page<ProposalView>)),
)]
async fn list_proposals(
    State(gw): State<Gateway>,
    auth: Auth,
    Query(filter): Query<ProposalFilter>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ProposalView>>, AppError> {
    auth.require(Scope::GovRead)?;
    let state = parse_state(filter.state.as_deref())?;
    blocking(move || {
        let domains = match &filter.domain_id {
            Some(key) => vec![domain_for(&gw, &auth, key)?],
            None => gw
                .index()
                .all(DocKind::Domain)
                .into_iter()
                .filter(|id| gw.engine().member_may_read(id, &auth.did))
                .collect(),
        };
        Ok(Json(
            q.page(proposals_of(&gw, &domains, state), proposal_key)?,
        ))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/gov/domains/{id}/proposals",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The domain's id, or its document id"), ProposalFilter, PageQuery),
    responses((status = 200, description = "The domain's proposals", body = Page<ProposalView>)),
)]
async fn list_domain_proposals(
    State(gw): State<Gateway>,
    d: InDomain<GovRead>,
    Query(filter): Query<ProposalFilter>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ProposalView>>, AppError> {
    let state = parse_state(filter.state.as_deref())?;
    blocking(move || {
        Ok(Json(
            q.page(proposals_of(&gw, &[d.id], state), proposal_key)?,
        ))
    })
    .await
}

/// A new proposal: a `payload` (`{"type": "text", "body"}`, `budget`, `membership`, `config_change`, `freeze`, `unfreeze`), or `kind: "text"` with the description as its body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct NewProposalRequest {
    /// Unique within the domain (the gateway picks `prop-…` when absent).
    #[schema(pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$")]
    id: Option<String>,
    title: String,
    #[serde(default)]
    description: String,
    payload: Option<Payload>,
    /// `text`: a text proposal whose body is the description (the default
    /// without a payload).
    #[schema(pattern = "^text$")]
    kind: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/gov/proposals",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    request_body = NewProposalInDomain,
    responses((status = 201, description = "The proposal, a draft", body = ProposalView), (status = 404, description = "No such domain (`domain_id`)", body = crate::ErrorBody)),
)]
async fn create_proposal(
    State(gw): State<Gateway>,
    auth: Auth,
    Body(req): Body<NewProposalInDomain>,
) -> Result<(StatusCode, Json<ProposalView>), AppError> {
    new_proposal(gw, auth, req.domain_id, req.proposal).await
}

#[utoipa::path(
    post,
    path = "/v1/gov/domains/{id}/proposals",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The domain's id, or its document id")),
    request_body = NewProposalRequest,
    responses((status = 201, description = "The proposal, a draft", body = ProposalView)),
)]
async fn create_domain_proposal(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(key): Path<String>,
    Body(req): Body<NewProposalRequest>,
) -> Result<(StatusCode, Json<ProposalView>), AppError> {
    new_proposal(gw, auth, key, req).await
}

/// A new proposal, in the domain it names.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct NewProposalInDomain {
    /// The domain's id or document id.
    #[schema(pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$")]
    domain_id: String,
    #[serde(flatten)]
    proposal: NewProposalRequest,
}

async fn new_proposal(
    gw: Gateway,
    auth: Auth,
    domain_key: String,
    req: NewProposalRequest,
) -> Result<(StatusCode, Json<ProposalView>), AppError> {
    auth.require(Scope::GovWrite)?;
    let payload = match (req.payload, req.kind.as_deref()) {
        (Some(p), _) => p,
        (None, None | Some("text")) => Payload::Text {
            body: req.description.clone(),
        },
        (None, Some(kind)) => {
            return Err(AppError::bad_request(format!(
                "a {kind} proposal needs its payload: {{\"payload\": {{\"type\": \"{kind}\", …}}}}"
            )));
        }
    };
    let chosen = req.id.is_some();
    let id = match req.id {
        Some(id) => id,
        None => {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(AppError::internal)?;
            format!("prop-{}", hex::encode(random))
        }
    };
    blocking(move || {
        let domain = domain_for(&gw, &auth, &domain_key)?;
        if chosen && !gw.index().proposal_domains(&id).is_empty() {
            return Err(AppError::conflict(format!(
                "proposal id {id:?} is in use on this node; an id names one proposal across domains here (omit id for a random one)"
            )));
        }
        let engine = gw.engine();
        let new = NewProposal {
            id: id.clone(),
            title: req.title,
            description: req.description,
            author: auth.did,
            created_at: now_secs() as i64,
            payload,
        };
        engine.create_proposal(&domain, &auth.signer(), &new)?;
        Metrics::add(&gw.metrics().proposals_created);
        Ok((
            StatusCode::CREATED,
            Json(proposal_json(engine, &domain, &id)?),
        ))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/gov/proposals/{id}",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$", description = "The proposal's id"), ProposalIn),
    responses((status = 200, description = "The proposal, its votes and outcome", body = ProposalView), (status = 404, description = "No such proposal", body = crate::ErrorBody)),
)]
async fn get_proposal(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(id): Path<String>,
    Query(within): Query<ProposalIn>,
) -> Result<Json<ProposalView>, AppError> {
    auth.require(Scope::GovRead)?;
    blocking(move || {
        let domain = proposal_domain(&gw, &auth, &id, &within)?;
        Ok(Json(proposal_json(gw.engine(), &domain, &id)?))
    })
    .await
}

/// How long voting lasts; the domain's voting period when absent. The body may be empty.
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
struct OpenRequest {
    #[schema(minimum = 1, maximum = 31622400)]
    voting_period_seconds: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/v1/gov/proposals/{id}/open",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$", description = "The proposal's id"), ProposalIn),
    request_body = Option<OpenRequest>,
    responses((status = 200, description = "The proposal, open (its author only)", body = ProposalView), (status = 422, description = "Not a draft", body = crate::ErrorBody)),
)]
async fn open_proposal(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(id): Path<String>,
    Query(within): Query<ProposalIn>,
    body: axum::body::Bytes,
) -> Result<Json<ProposalView>, AppError> {
    auth.require(Scope::GovWrite)?;
    let req: OpenRequest = optional_json(&body)?;
    blocking(move || {
        let domain = proposal_domain(&gw, &auth, &id, &within)?;
        let engine = gw.engine();
        engine.open_proposal(
            &domain,
            &auth.signer(),
            &id,
            now_secs() as i64,
            req.voting_period_seconds,
        )?;
        Metrics::add(&gw.metrics().proposals_opened);
        Ok(Json(proposal_json(engine, &domain, &id)?))
    })
    .await
}

/// A vote: `for`, `against`, `abstain` or `block`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct VoteRequest {
    #[schema(value_type = Choice)]
    choice: String,
    comment: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/gov/proposals/{id}/vote",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$", description = "The proposal's id"), ProposalIn),
    request_body = VoteRequest,
    responses((status = 200, description = "The vote recorded (it may be changed while open)", body = VoteAnswer), (status = 422, description = "Not open", body = crate::ErrorBody)),
)]
async fn vote(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(id): Path<String>,
    Query(within): Query<ProposalIn>,
    Body(req): Body<VoteRequest>,
) -> Result<Json<VoteAnswer>, AppError> {
    auth.require(Scope::GovWrite)?;
    let choice = Choice::parse(&req.choice).ok_or_else(|| {
        AppError::bad_request(format!(
            "{:?} is not a choice: for, against, abstain or block",
            req.choice
        ))
    })?;
    blocking(move || {
        let domain = proposal_domain(&gw, &auth, &id, &within)?;
        let at = now_secs() as i64;
        gw.engine().cast_vote(
            &domain,
            &auth.signer(),
            &id,
            &auth.did,
            choice,
            req.comment.as_deref(),
            at,
        )?;
        Metrics::add(&gw.metrics().votes_cast);
        Ok(Json(VoteAnswer {
            proposal_id: id,
            voter: auth.did,
            choice,
            comment: req.comment,
            at,
        }))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/gov/proposals/{id}/vote",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$", description = "The proposal's id"), ProposalIn),
    responses((status = 200, description = "The tally now, and the outcome a close now would record", body = TallyAnswer)),
)]
async fn tally(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(id): Path<String>,
    Query(within): Query<ProposalIn>,
) -> Result<Json<TallyAnswer>, AppError> {
    auth.require(Scope::GovRead)?;
    blocking(move || {
        let domain = proposal_domain(&gw, &auth, &id, &within)?;
        let (tally, outcome) = gw.engine().tally(&domain, &id)?;
        let state = gw
            .engine()
            .read(&domain, |r| Proposal::read(r, &id).map(|p| p.state))
            .flatten();
        Ok(Json(TallyAnswer {
            proposal_id: id,
            state,
            tally,
            outcome_if_closed_now: outcome,
        }))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/gov/proposals/{id}/close",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$", description = "The proposal's id"), ProposalIn),
    responses((status = 200, description = "The proposal closed: state, outcome, tally, decision_receipt_id", body = ProposalView), (status = 422, description = "Not open", body = crate::ErrorBody)),
)]
async fn close_proposal(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(id): Path<String>,
    Query(within): Query<ProposalIn>,
) -> Result<Json<ProposalView>, AppError> {
    auth.require(Scope::GovWrite)?;
    blocking(move || {
        let domain = proposal_domain(&gw, &auth, &id, &within)?;
        let engine = gw.engine();
        let (_, receipt) =
            engine.close_proposal(&domain, &auth.signer(), &id, now_secs() as i64)?;
        Metrics::add(&gw.metrics().proposals_closed);
        let mut view = proposal_json(engine, &domain, &id)?;
        view.decision_receipt_id = Some(hex::encode(receipt.hash()));
        Ok(Json(view))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/modules",
    tag = "governance",
    security(("bearer" = ["gov:write"])),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "A WebAssembly tally module (at most 1 MiB): it exports `memory`, `alloc(len) -> ptr` and `tally(ptr, len) -> outcome` (docs/governance.md)"),
    responses(
        (status = 201, description = "`{hash}`: the module's blake3 hash, hex. A domain names it in its rules: `{\"method\": {\"kind\": \"wasm\", \"module\": \"<hash>\"}}`; peers fetch it by hash", body = ModuleAnswer),
        (status = 422, description = "Not a valid WebAssembly module, or too large", body = crate::ErrorBody),
    ),
)]
async fn upload_module(
    State(gw): State<Gateway>,
    auth: Auth,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<ModuleAnswer>), AppError> {
    auth.require(Scope::GovWrite)?;
    blocking(move || match gw.engine().upload_module(&body)? {
        Ok(hash) => Ok((
            StatusCode::CREATED,
            Json(ModuleAnswer {
                hash: hex::encode(hash),
                bytes: body.len(),
            }),
        )),
        Err(why) => Err(AppError::unprocessable(why)),
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/modules/{hash}",
    tag = "governance",
    security(("bearer" = ["gov:read"])),
    params(("hash" = String, Path, pattern = "^[0-9a-f]{64}$", description = "The module's blake3 hash, hex")),
    responses((status = 200, description = "The module's bytes (application/wasm)", content_type = "application/wasm", body = Vec<u8>), (status = 400, description = "Not a hash", body = crate::ErrorBody), (status = 404, description = "Not held here", body = crate::ErrorBody)),
)]
async fn get_module(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(hash): Path<String>,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    auth.require(Scope::GovRead)?;
    let key = hex::decode(&hash)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| AppError::bad_request(format!("{hash:?} is not a blake3 hash (64 hex)")))?;
    blocking(move || {
        let bytes = gw
            .engine()
            .store()
            .blob(&key)?
            .ok_or_else(|| AppError::not_found(format!("no module {hash} here")))?;
        Ok((
            [(axum::http::header::CONTENT_TYPE, "application/wasm")],
            bytes,
        )
            .into_response())
    })
    .await
}
