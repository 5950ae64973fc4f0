//! Onboarding (seed 002, "New Member Onboarding"): an admin creates a
//! one-time invite code with an expiry, a role and an initial credit limit;
//! a person with a fresh DID logs in (any DID may), applies with the code,
//! and watches the application; an admin approves it, and the applicant
//! becomes a member with its DID key as its first device.
//!
//! Invites and applications are this node's records (the `gateway` tree):
//! the code is stored only as its hash, and is used once, atomically.
//! Approve on the node the application was made on.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use icn_schemas::coop::{self, Role};
use icn_schemas::{Did, DocId, DocKind};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{now_secs, rfc3339};
use crate::error::AppError;
use crate::scoped::{CoopAdmin, InCoop};
use crate::{Auth, Body, Gateway, blocking, parse_did};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(create_invite))
        .routes(routes!(apply, list_applications))
        .routes(routes!(application))
        .routes(routes!(approve))
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

fn application_view(coop: &str, a: &Application) -> Value {
    json!({
        "coop_id": coop,
        "did": a.did,
        "state": a.state,
        "role": a.role,
        "credit_limit": a.credit_limit,
        "applied_at": rfc3339(a.applied_at),
        "decided_by": a.decided_by,
    })
}

/// An invite: the role the applicant gets (`member` by default), its
/// credit limit (the policy's default when absent), and how long the code
/// lives (7 days by default, at most 30).
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    /// `member` (default), `admin` or `observer`.
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
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, description = "The co-op's id, or its document id")),
    request_body = Option<InviteRequest>,
    responses((status = 201, description = "`{code, expires_at, role, credit_limit}`: give the code to the person joining; it works once, until it expires (admins only)", body = serde_json::Value)),
)]
async fn create_invite(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), AppError> {
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
        // Only an admin invites: the same rule as adding a member.
        let admin = is_admin(&gw, &id, &auth.did);
        if !admin {
            return Err(AppError::forbidden(format!(
                "{} is not an admin of this co-op: only admins invite",
                auth.did
            )));
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
            Json(json!({
                "coop_id": key,
                "code": code,
                "expires_at": rfc3339(expires_at),
                "role": role,
                "credit_limit": req.credit_limit,
            })),
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
    params(("id" = String, Path, description = "The co-op's id, or its document id")),
    request_body = ApplyRequest,
    responses(
        (status = 201, description = "Your application, pending until an admin approves it; you need not be a member (any DID's token applies)", body = serde_json::Value),
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
) -> Result<(StatusCode, Json<Value>), AppError> {
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
                    return Ok((StatusCode::CREATED, Json(application_view(&key, &a))));
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
            Json(application_view(&key, &application)),
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
    if a.state != "pending" {
        return Err(AppError::conflict(format!(
            "the application is {}",
            a.state
        )));
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
    params(("id" = String, Path, description = "The co-op's id, or its document id"), ("did" = String, Path, description = "The applicant's DID")),
    responses((status = 200, description = "The application and its state: pending, approved or rejected (the applicant, or an admin)", body = serde_json::Value), (status = 404, description = "No application of this DID here", body = crate::ErrorBody)),
)]
async fn application(
    State(gw): State<Gateway>,
    auth: Auth,
    Path((key, did)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
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
    params(("id" = String, Path, description = "The co-op's id, or its document id")),
    responses((status = 200, description = "Every application made on this node, with its state (admins)", body = serde_json::Value)),
)]
async fn list_applications(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
) -> Result<Json<Value>, AppError> {
    blocking(move || {
        let admin = is_admin(&gw, &c.id, &c.auth.did);
        if !admin {
            return Err(AppError::forbidden("only admins list applications"));
        }
        let mut out = Vec::new();
        for bytes in gw.engine().store().applications(&c.id)? {
            out.push(application_view(&c.key, &decode(&bytes)?));
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/applications/{did}/approve",
    tag = "onboarding",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, description = "The co-op's id, or its document id"), ("did" = String, Path, description = "The applicant's DID")),
    responses((status = 200, description = "The applicant is a member now, with the invite's role and credit limit, and its DID key as its first device (admins)", body = serde_json::Value), (status = 409, description = "Not pending", body = crate::ErrorBody)),
)]
async fn approve(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    let InCoop { auth, id, key, .. } = c;
    let did = parse_did(&did)?;
    blocking(move || {
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
        Ok(Json(application_view(&key, &a)))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/applications/{did}/reject",
    tag = "onboarding",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, description = "The co-op's id, or its document id"), ("did" = String, Path, description = "The applicant's DID")),
    responses((status = 200, description = "The application, rejected (admins)", body = serde_json::Value), (status = 409, description = "Not pending", body = crate::ErrorBody)),
)]
async fn reject(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    let InCoop { auth, id, key, .. } = c;
    let did = parse_did(&did)?;
    blocking(move || {
        if !is_admin(&gw, &id, &auth.did) {
            return Err(AppError::forbidden("only admins decide applications"));
        }
        let a = decide(&gw, &id, &did, &auth.did, "rejected", |_| Ok(()))?;
        Ok(Json(application_view(&key, &a)))
    })
    .await
}
