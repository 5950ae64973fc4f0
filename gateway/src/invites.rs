//! Onboarding (seed 002, "New Member Onboarding"): an admin (or a member,
//! when the policy lets members invite) creates a one-time invite code with
//! an expiry, a role and an initial credit limit; a person with a fresh DID
//! logs in (any DID may), applies with the code, and watches the
//! application. The co-op's policy says who approves it: an admin
//! (`…/approve`), or an accepted membership proposal of the treasury domain
//! (`…/propose`, then the usual open, vote and close). The applicant then
//! becomes a member with its DID key as its first device.
//!
//! Invites and applications are this node's records (the `gateway` tree):
//! the code is stored only as its hash, and is used once, atomically.
//! Approve on the node the application was made on. An application's state
//! is read from the co-op as it stands: `approved` once the applicant is an
//! active member, however it became one; `rejected` when an admin rejected
//! it or its admission proposal closed without being accepted.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use icn_schemas::coop::{self, Role};
use icn_schemas::domain::{self, Payload};
use icn_schemas::settings::{Approval, Onboarding};
use icn_schemas::tally::Outcome;
use icn_schemas::{Did, DocId, DocKind, Scope};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{now_secs, rfc3339};
use crate::error::AppError;
use crate::scoped::{CoopAdmin, CoopWrite, InCoop};
use crate::views::{Page, PageQuery};
use crate::{Auth, Body, Gateway, blocking, parse_did};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(create_invite))
        .routes(routes!(apply, list_applications))
        .routes(routes!(application))
        .routes(routes!(approve))
        .routes(routes!(propose))
        .routes(routes!(reject))
}

/// Longest an invite lives: 30 days.
const MAX_INVITE_SECONDS: u64 = 30 * 24 * 3600;

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Invite {
    coop: [u8; 32],
    role: String,
    credit_limit: Option<i64>,
    expires_at: u64,
    created_by: String,
    used_by: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Application {
    did: String,
    state: String,
    role: String,
    credit_limit: Option<i64>,
    applied_at: u64,
    decided_by: Option<String>,
}

/// Whether `did` is an active admin of `coop` as this node holds it.
fn is_admin(gw: &Gateway, coop: &DocId, did: &Did) -> bool {
    gw.engine()
        .read(coop, |r| coop::Standing::read(r, did))
        .flatten()
        .is_some_and(|s| s.is_admin())
}

fn code_hash(code: &str) -> [u8; 32] {
    blake3::hash(code.trim().as_bytes()).into()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, AppError> {
    postcard::to_stdvec(value).map_err(AppError::internal)
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AppError> {
    postcard::from_bytes(bytes).map_err(AppError::internal)
}

/// The proposal that admits `did` to `coop` when applications are approved
/// by proposal: one id per applicant, so proposing twice finds the first.
fn admission_id(coop: &DocId, did: &Did) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"icn/admission/v1");
    h.update(&coop.0);
    h.update(did.as_bytes());
    format!("admit-{}", &h.finalize().to_hex()[..16])
}

/// The application's state as the co-op stands, and its admission
/// proposal (`(domain, id)`) when one exists.
fn standing_of(gw: &Gateway, coop: &DocId, a: &Application) -> (String, Option<(DocId, String)>) {
    let engine = gw.engine();
    let Ok(did) = a.did.parse::<Did>() else {
        return (a.state.clone(), None);
    };
    let treasury = engine.read(coop, coop::treasury_domain).flatten();
    let id = admission_id(coop, &did);
    let proposal = treasury.and_then(|domain| {
        engine
            .read(&domain, |r| domain::Proposal::read(r, &id))
            .flatten()
            .map(|p| (domain, p))
    });
    let member = engine
        .read(coop, |r| coop::Standing::read(r, &did))
        .flatten()
        .is_some_and(|s| s.is_active());
    let state = if a.state != "pending" {
        a.state.clone()
    } else if member {
        "approved".into()
    } else if proposal
        .as_ref()
        .and_then(|(_, p)| p.close.as_ref())
        .is_some_and(|c| c.outcome != Outcome::Accepted)
    {
        "rejected".into()
    } else {
        "pending".into()
    };
    (state, proposal.map(|(domain, _)| (domain, id)))
}

/// An application to join, and where it stands.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ApplicationView {
    /// The co-op, as the path named it.
    coop_id: String,
    /// The applicant.
    #[schema(value_type = Did)]
    did: String,
    /// `pending`, `approved` or `rejected`.
    #[schema(pattern = "^(pending|approved|rejected)$")]
    state: String,
    /// The role it gets: `member`, `admin` or `observer`.
    role: String,
    credit_limit: Option<i64>,
    /// RFC 3339.
    applied_at: String,
    #[schema(value_type = Option<Did>)]
    decided_by: Option<String>,
    /// Its admission proposal, when the co-op admits by proposal.
    proposal_id: Option<String>,
    /// That proposal's domain (document id).
    proposal_domain_id: Option<DocId>,
}

fn application_view(gw: &Gateway, coop: &DocId, key: &str, a: &Application) -> ApplicationView {
    let (state, proposal) = standing_of(gw, coop, a);
    let (proposal_domain_id, proposal_id) = proposal.unzip();
    ApplicationView {
        coop_id: key.to_owned(),
        did: a.did.clone(),
        state,
        role: a.role.clone(),
        credit_limit: a.credit_limit,
        applied_at: rfc3339(a.applied_at),
        decided_by: a.decided_by.clone(),
        proposal_id,
        proposal_domain_id,
    }
}

/// A one-time invite code.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct InviteAnswer {
    /// The co-op, as the path named it.
    coop_id: String,
    /// Give it to the person joining: it works once, until it expires.
    code: String,
    /// RFC 3339.
    expires_at: String,
    /// The role it gives.
    role: String,
    credit_limit: Option<i64>,
}

fn onboarding(gw: &Gateway, coop: &DocId) -> Onboarding {
    gw.engine().read(coop, Onboarding::read).unwrap_or_default()
}

/// An invite: the role the applicant gets (`member` by default), its
/// credit limit (the policy's default when absent), and how long the code
/// lives (7 days by default, at most 30).
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    /// `member` (default), `admin` or `observer`.
    #[schema(value_type = Option<Role>)]
    role: Option<String>,
    #[schema(minimum = 0)]
    credit_limit: Option<i64>,
    #[schema(minimum = 1, maximum = 2592000)]
    expires_in_seconds: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/invites",
    tag = "onboarding",
    security(("bearer" = ["coop:write"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = Option<InviteRequest>,
    responses(
        (status = 201, description = "`{code, expires_at, role, credit_limit}`: give the code to the person joining; it works once, until it expires. Admins (with `coop:admin`) invite; members too when the policy's `onboarding.member_invites` is on, for the roles member and observer, without a credit limit of their choosing", body = InviteAnswer),
        (status = 403, description = "You may not invite, or not for that role", body = crate::ErrorBody),
    ),
)]
async fn create_invite(
    State(gw): State<Gateway>,
    c: InCoop<CoopWrite>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<InviteAnswer>), AppError> {
    let InCoop { auth, id, key, .. } = c;
    let req: InviteRequest = crate::optional_json(&body)?;
    let role = req.role.clone().unwrap_or_else(|| "member".into());
    if Role::parse(&role).is_none() {
        return Err(AppError::bad_request(format!(
            "{role:?} is not a role: member, admin or observer"
        )));
    }
    if req.credit_limit.is_some_and(|l| l < 0) {
        return Err(AppError::bad_request("credit_limit: not negative"));
    }
    let lives = req.expires_in_seconds.unwrap_or(7 * 24 * 3600);
    if !(1..=MAX_INVITE_SECONDS).contains(&lives) {
        return Err(AppError::bad_request(
            "expires_in_seconds: from 1 to 2592000 (30 days)",
        ));
    }
    blocking(move || {
        // An admin invites, as it adds members; a member only when the
        // policy says so, and never an admin or a credit limit.
        let admin = is_admin(&gw, &id, &auth.did) && auth.require(Scope::CoopAdmin).is_ok();
        if !admin {
            let member = gw
                .engine()
                .read(&id, |r| coop::Standing::read(r, &auth.did))
                .flatten()
                .is_some_and(|s| s.is_active() && s.role == Role::Member);
            if !(member && onboarding(&gw, &id).member_invites) {
                return Err(AppError::forbidden(format!(
                    "{} may not invite: admins (with coop:admin) invite, and members when the co-op's onboarding policy has member_invites",
                    auth.did
                )));
            }
            if role == "admin" || req.credit_limit.is_some() {
                return Err(AppError::forbidden(
                    "a member invites members and observers at the default credit limit; an admin invites admins or sets a limit",
                ));
            }
        }
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(AppError::internal)?;
        let code = format!("icn-inv-{}", hex::encode(random));
        let expires_at = now_secs() + lives;
        let invite = Invite {
            coop: id.0,
            role: role.clone(),
            credit_limit: req.credit_limit,
            expires_at,
            created_by: auth.did.to_string(),
            used_by: None,
        };
        gw.engine()
            .store()
            .put_invite(&code_hash(&code), &encode(&invite)?)?;
        Ok((
            StatusCode::CREATED,
            Json(InviteAnswer {
                coop_id: key,
                code,
                expires_at: rfc3339(expires_at),
                role,
                credit_limit: req.credit_limit,
            }),
        ))
    })
    .await
}

/// An application: the invite code.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    code: String,
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/applications",
    tag = "onboarding",
    security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = ApplyRequest,
    responses(
        (status = 201, description = "Your application, pending until an admin approves it; you need not be a member (any DID's token applies)", body = ApplicationView),
        (status = 403, description = "Not an invite code of this co-op", body = crate::ErrorBody),
        (status = 409, description = "The code was used already, or you are a member", body = crate::ErrorBody),
        (status = 410, description = "The code expired", body = crate::ErrorBody),
    ),
)]
async fn apply(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(key): Path<String>,
    Body(req): Body<ApplyRequest>,
) -> Result<(StatusCode, Json<ApplicationView>), AppError> {
    blocking(move || {
        // The applicant is no member yet: the co-op is named by its code's
        // holder, not read.
        let id = gw.index().resolve(DocKind::Coop, &key)?;
        let store = gw.engine().store();
        let hash = code_hash(&req.code);
        let forged = || AppError::forbidden("not an invite code of this co-op");
        let old = store.invite(&hash)?.ok_or_else(forged)?;
        let mut invite: Invite = decode(&old)?;
        if invite.coop != id.0 {
            return Err(forged());
        }
        let me = auth.did.to_string();
        match &invite.used_by {
            // The same applicant again (its answer was lost, or the node
            // stopped between using the code and keeping the application):
            // its application, made once.
            Some(by) if *by == me => {
                if let Some(bytes) = store.application(&id, auth.did.as_bytes())? {
                    let a: Application = decode(&bytes)?;
                    return Ok((
                        StatusCode::CREATED,
                        Json(application_view(&gw, &id, &key, &a)),
                    ));
                }
            }
            Some(_) => return Err(AppError::conflict("this invite code was used already")),
            None => {}
        }
        if invite.used_by.is_none() && now_secs() >= invite.expires_at {
            return Err(AppError::new(
                StatusCode::GONE,
                "this invite code expired; ask for a new one",
            ));
        }
        let member = gw
            .engine()
            .read(&id, |r| coop::Standing::read(r, &auth.did))
            .flatten();
        if member.is_some_and(|m| m.is_active()) {
            return Err(AppError::conflict(format!(
                "{} is a member already",
                auth.did
            )));
        }
        if invite.used_by.is_none() {
            invite.used_by = Some(me);
            if !store.swap_invite(&hash, &old, &encode(&invite)?)? {
                return Err(AppError::conflict("this invite code was used already"));
            }
        }
        let application = Application {
            did: auth.did.to_string(),
            state: "pending".into(),
            role: invite.role,
            credit_limit: invite.credit_limit,
            applied_at: now_secs(),
            decided_by: None,
        };
        store.put_application(&id, auth.did.as_bytes(), &encode(&application)?)?;
        Ok((
            StatusCode::CREATED,
            Json(application_view(&gw, &id, &key, &application)),
        ))
    })
    .await
}

fn read_application(gw: &Gateway, coop: &DocId, did: &Did) -> Result<Application, AppError> {
    let bytes = gw
        .engine()
        .store()
        .application(coop, did.as_bytes())?
        .ok_or_else(|| AppError::not_found(format!("no application of {did} here")))?;
    decode(&bytes)
}

/// Decides `did`'s pending application as `state`, by `admin`, once `act`
/// (the membership, for an approval) is done.
fn decide(
    gw: &Gateway,
    coop: &DocId,
    did: &Did,
    admin: &Did,
    state: &str,
    act: impl FnOnce(&Application) -> Result<(), AppError>,
) -> Result<Application, AppError> {
    let mut a = read_application(gw, coop, did)?;
    let (now, _) = standing_of(gw, coop, &a);
    if now != "pending" {
        return Err(AppError::conflict(format!("the application is {now}")));
    }
    act(&a)?;
    a.state = state.into();
    a.decided_by = Some(admin.to_string());
    gw.engine()
        .store()
        .put_application(coop, did.as_bytes(), &encode(&a)?)?;
    Ok(a)
}

#[utoipa::path(
    get,
    path = "/v1/coops/{id}/applications/{did}",
    tag = "onboarding",
    security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The applicant's DID")),
    responses((status = 200, description = "The application and its state: pending, approved or rejected (the applicant, or an admin)", body = ApplicationView), (status = 404, description = "No application of this DID here", body = crate::ErrorBody)),
)]
async fn application(
    State(gw): State<Gateway>,
    auth: Auth,
    Path((key, did)): Path<(String, String)>,
) -> Result<Json<ApplicationView>, AppError> {
    let did = parse_did(&did)?;
    blocking(move || {
        let id = gw.index().resolve(DocKind::Coop, &key)?;
        let admin = is_admin(&gw, &id, &auth.did);
        if did != auth.did && !admin {
            return Err(AppError::forbidden(
                "an application is read by its applicant and the co-op's admins",
            ));
        }
        Ok(Json(application_view(
            &gw,
            &id,
            &key,
            &read_application(&gw, &id, &did)?,
        )))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/coops/{id}/applications",
    tag = "onboarding",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), PageQuery),
    responses((status = 200, description = "Every application made on this node, with its state (admins), by DID", body = Page<ApplicationView>)),
)]
async fn list_applications(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ApplicationView>>, AppError> {
    blocking(move || {
        let admin = is_admin(&gw, &c.id, &c.auth.did);
        if !admin {
            return Err(AppError::forbidden("only admins list applications"));
        }
        let mut out = Vec::new();
        for bytes in gw.engine().store().applications(&c.id)? {
            out.push(application_view(&gw, &c.id, &c.key, &decode(&bytes)?));
        }
        Ok(Json(q.page(out, |a| a.did.clone())?))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/applications/{did}/approve",
    tag = "onboarding",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The applicant's DID")),
    responses((status = 200, description = "The applicant is a member now, with the invite's role and credit limit, and its DID key as its first device (admins)", body = ApplicationView), (status = 409, description = "Not pending, or the co-op admits members by proposal", body = crate::ErrorBody)),
)]
async fn approve(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<ApplicationView>, AppError> {
    let InCoop { auth, id, key, .. } = c;
    let did = parse_did(&did)?;
    blocking(move || {
        if onboarding(&gw, &id).approval == Approval::Proposal {
            return Err(AppError::conflict(
                "this co-op admits members by proposal: POST /v1/coops/{id}/applications/{did}/propose, then open, vote and close it",
            ));
        }
        let a = decide(&gw, &id, &did, &auth.did, "approved", |a| {
            let role = Role::parse(&a.role).unwrap_or(Role::Member);
            gw.engine().write(&id, &auth.signer(), |tx| {
                coop::add_member(tx, &did, role, now_secs() as i64)?;
                if let Some(limit) = a.credit_limit {
                    coop::set_credit_limit(tx, &did, limit)?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
        Ok(Json(application_view(&gw, &id, &key, &a)))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/applications/{did}/propose",
    tag = "onboarding",
    security(("bearer" = ["gov:write"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The applicant's DID")),
    responses(
        (status = 201, description = "The admission proposal, a draft in the co-op's treasury domain, authored by you: open it, vote and close it (`/v1/gov/proposals/{id}/…`); accepted, an admin's node admits the applicant", body = crate::gov::ProposalView),
        (status = 200, description = "The admission proposal made before", body = crate::gov::ProposalView),
        (status = 409, description = "Not pending, the co-op admits members by an admin, or it names no treasury domain", body = crate::ErrorBody),
    ),
)]
async fn propose(
    State(gw): State<Gateway>,
    c: InCoop<crate::scoped::GovWrite>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<(StatusCode, Json<crate::gov::ProposalView>), AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&did)?;
    blocking(move || {
        if onboarding(&gw, &id).approval != Approval::Proposal {
            return Err(AppError::conflict(
                "this co-op's admins approve applications: POST /v1/coops/{id}/applications/{did}/approve",
            ));
        }
        let a = read_application(&gw, &id, &did)?;
        let (state, existing) = standing_of(&gw, &id, &a);
        if let Some((domain, pid)) = existing {
            return Ok((
                StatusCode::OK,
                Json(crate::gov::proposal_json(gw.engine(), &domain, &pid)?),
            ));
        }
        if state != "pending" {
            return Err(AppError::conflict(format!("the application is {state}")));
        }
        let domain = gw
            .engine()
            .read(&id, coop::treasury_domain)
            .flatten()
            .ok_or_else(|| {
                AppError::conflict(
                    "the co-op names no treasury domain to decide in: an admin sets one (PUT /v1/coops/{id} {\"treasury_domain\"})",
                )
            })?;
        let pid = admission_id(&id, &did);
        let new = domain::NewProposal {
            id: pid.clone(),
            title: format!("Admit {did}"),
            description: format!(
                "Application made with an invite on {}, for the role {}",
                rfc3339(a.applied_at),
                a.role
            ),
            author: auth.did,
            created_at: now_secs() as i64,
            payload: Payload::Membership {
                action: "add".into(),
                did,
                role: Some(a.role.clone()),
            },
        };
        gw.engine().create_proposal(&domain, &auth.signer(), &new)?;
        Ok((
            StatusCode::CREATED,
            Json(crate::gov::proposal_json(gw.engine(), &domain, &pid)?),
        ))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/applications/{did}/reject",
    tag = "onboarding",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The applicant's DID")),
    responses((status = 200, description = "The application, rejected (admins)", body = ApplicationView), (status = 409, description = "Not pending", body = crate::ErrorBody)),
)]
async fn reject(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<ApplicationView>, AppError> {
    let InCoop { auth, id, key, .. } = c;
    let did = parse_did(&did)?;
    blocking(move || {
        if !is_admin(&gw, &id, &auth.did) {
            return Err(AppError::forbidden("only admins decide applications"));
        }
        let a = decide(&gw, &id, &did, &auth.did, "rejected", |_| Ok(()))?;
        Ok(Json(application_view(&gw, &id, &key, &a)))
    })
    .await
}
