//! Co-ops and their members.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use icn_engine::Engine;
use icn_schemas::coop::{self, Coop, MemberStatus, NewCoop, Role};
use std::collections::BTreeMap;

use icn_schemas::{Did, DocId, DocKind, Scope, settings};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::now_secs;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::scoped::{CoopAdmin, CoopRead, CoopWrite, Decided, InCoop};
use crate::views::{Page, PageQuery, whole};
use crate::{Auth, Body, Gateway, blocking, parse_did};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_coop, update, delete))
        .routes(routes!(members, add_member))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(trusted_contacts, add_trusted_contact))
        .routes(routes!(remove_trusted_contact))
        .routes(routes!(put_unit))
        .routes(routes!(put_rate))
        .routes(routes!(relays, add_relay))
        .routes(routes!(remove_relay))
}

/// A co-op: its profile, policy and relays, and how many members it has.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CoopView {
    /// Its slug, e.g. `food-coop`.
    id: String,
    /// Its document id.
    doc_id: DocId,
    name: String,
    description: String,
    creator: Did,
    /// Unix seconds.
    created_at: i64,
    policy: coop::Policy,
    /// How many members it lists (removed ones included).
    members: usize,
    /// Its relays, by node DID.
    relays: BTreeMap<Did, coop::Relay>,
    /// Its exchange rates.
    rates: Vec<RateView>,
    /// The governance domain whose accepted decisions execute, once set.
    treasury_domain: Option<DocId>,
}

/// An exchange rate: `num/den` of `to` for one of `from`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RateView {
    from: String,
    to: String,
    num: i64,
    den: i64,
}

fn view(engine: &Engine, id: &DocId, c: &Coop) -> CoopView {
    let (rates, treasury_domain) = engine
        .read(id, |r| {
            let rates = coop::rates(r)
                .into_iter()
                .map(|(from, to, num, den)| RateView { from, to, num, den })
                .collect();
            (rates, coop::treasury_domain(r))
        })
        .unwrap_or_default();
    CoopView {
        rates,
        treasury_domain,
        id: c.id.clone(),
        doc_id: *id,
        name: c.name.clone(),
        description: c.description.clone(),
        creator: c.creator,
        created_at: c.created_at,
        policy: c.policy.clone(),
        members: c.members.len(),
        relays: c.relays.clone(),
    }
}

fn read(engine: &Engine, id: &DocId) -> Result<Coop, AppError> {
    engine
        .coop(id)
        .ok_or_else(|| AppError::not_found(format!("no co-op {id}")))?
        .map_err(AppError::internal)
}

#[utoipa::path(
    get,
    path = "/v1/coops",
    operation_id = "list_coops",
    tag = "coops",
    security(("bearer" = ["coop:read"])),
    params(PageQuery),
    responses((status = 200, description = "The co-ops you belong to (or relay), by document id", body = Page<CoopView>)),
)]
async fn list(
    State(gw): State<Gateway>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<CoopView>>, AppError> {
    auth.require(Scope::CoopRead)?;
    blocking(move || {
        let mut out = Vec::new();
        for id in gw.index().all(DocKind::Coop) {
            if gw.engine().member_may_read(&id, &auth.did)
                && let Some(Ok(c)) = gw.engine().coop(&id)
            {
                out.push(view(gw.engine(), &id, &c));
            }
        }
        Ok(Json(q.page(out, |c| c.doc_id.to_string())?))
    })
    .await
}

/// A unit: its id, or `{id, scale}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum UnitRequest {
    Name(String),
    Full { id: String, scale: Option<i64> },
}

/// A new co-op: id, name, description, the default credit limit (0) and units (`["hours"]`).
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct NewCoopRequest {
    #[schema(pattern = "^[a-z0-9][a-z0-9._:-]{0,63}$")]
    id: String,
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[schema(minimum = 0)]
    default_credit_limit: Option<i64>,
    units: Option<Vec<UnitRequest>>,
}

#[utoipa::path(
    post,
    path = "/v1/coops",
    tag = "coops",
    security(("bearer" = ["coop:write"])),
    request_body = NewCoopRequest,
    responses((status = 201, description = "The co-op; you are its first admin", body = CoopView), (status = 409, description = "A co-op with this id exists", body = crate::ErrorBody)),
)]
async fn create(
    State(gw): State<Gateway>,
    auth: Auth,
    Body(req): Body<NewCoopRequest>,
) -> Result<(StatusCode, Json<CoopView>), AppError> {
    auth.require(Scope::CoopWrite)?;
    let units = match req.units {
        None => vec![("hours".to_owned(), 0)],
        Some(units) => units
            .into_iter()
            .map(|u| match u {
                UnitRequest::Name(id) => (id, 0),
                UnitRequest::Full { id, scale } => (id, scale.unwrap_or(0)),
            })
            .collect(),
    };
    blocking(move || {
        if gw.index().name_taken(DocKind::Coop, &req.id) {
            return Err(AppError::conflict(format!(
                "a co-op {:?} already exists",
                req.id
            )));
        }
        let new = NewCoop {
            name: req.name.unwrap_or_else(|| req.id.clone()),
            id: req.id,
            description: req.description,
            creator: auth.did,
            device: auth.did,
            created_at: now_secs() as i64,
            default_credit_limit: req.default_credit_limit.unwrap_or(0),
            units,
        };
        let id = gw.engine().create_coop(&auth.signer(), &new)?;
        Metrics::add(&gw.metrics().coops_created);
        Ok((
            StatusCode::CREATED,
            Json(view(gw.engine(), &id, &read(gw.engine(), &id)?)),
        ))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/coops/{id}",
    tag = "coops",
    security(("bearer" = ["coop:read"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    responses((status = 200, description = "The co-op", body = CoopView), (status = 404, description = "No such co-op", body = crate::ErrorBody)),
)]
async fn get_coop(
    State(gw): State<Gateway>,
    c: InCoop<CoopRead>,
) -> Result<Json<CoopView>, AppError> {
    blocking(move || Ok(Json(view(gw.engine(), &c.id, &read(gw.engine(), &c.id)?)))).await
}

/// The settings to change (admins only). A field this route does not know
/// is refused (400), never dropped.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    name: Option<String>,
    description: Option<String>,
    #[schema(minimum = 0)]
    default_credit_limit: Option<i64>,
    /// The governance domain (its id or document id) whose accepted
    /// decisions execute (budgets, freezes and unfreezes in the ledger,
    /// membership and config changes in the co-op): one attached to this
    /// co-op.
    treasury_domain: Option<String>,
    /// Who approves applications to join (`admin`, the default, or
    /// `proposal`: an accepted membership proposal of the treasury domain)
    /// and whether members who are not admins create invites.
    onboarding: Option<OnboardingBody>,
}

/// The onboarding policy; a field left out keeps its value.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OnboardingBody {
    /// `admin` or `proposal`.
    #[schema(value_type = Option<String>, pattern = "^(admin|proposal)$")]
    approval: Option<settings::Approval>,
    member_invites: Option<bool>,
}

#[utoipa::path(
    put,
    path = "/v1/coops/{id}",
    tag = "coops",
    security(("bearer" = ["coop:write"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = UpdateRequest,
    responses((status = 200, description = "The co-op updated (admins only)", body = CoopView)),
)]
async fn update(
    State(gw): State<Gateway>,
    c: InCoop<CoopWrite>,
    Body(req): Body<UpdateRequest>,
) -> Result<Json<CoopView>, AppError> {
    let InCoop { auth, id, .. } = c;
    blocking(move || {
        let treasury = match &req.treasury_domain {
            None => None,
            Some(key) => {
                let domain = crate::scoped::domain_id(&gw, &auth.did, key)?;
                let attached = gw
                    .engine()
                    .read(&domain, icn_schemas::domain::coop_of)
                    .flatten();
                if attached != Some(id) {
                    return Err(AppError::unprocessable(format!(
                        "the treasury domain must be attached to this co-op (create it with \"coop_id\"); {key:?} is not"
                    )));
                }
                Some(domain)
            }
        };
        gw.engine().write_with(&id, &auth.signer(), |r, _, tx| {
            coop::set_profile(tx, req.name.as_deref(), req.description.as_deref())?;
            if let Some(limit) = req.default_credit_limit {
                coop::set_default_credit_limit(tx, limit)?;
            }
            if let Some(domain) = &treasury {
                coop::set_treasury_domain(tx, domain)?;
            }
            if let Some(o) = &req.onboarding {
                let mut policy = settings::Onboarding::read(r);
                policy.approval = o.approval.unwrap_or(policy.approval);
                policy.member_invites = o.member_invites.unwrap_or(policy.member_invites);
                policy.write(tx)?;
            }
            Ok(())
        })?;
        Ok(Json(view(gw.engine(), &id, &read(gw.engine(), &id)?)))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/coops/{id}",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    responses((status = 422, description = "A co-op's replicated history cannot be deleted; remove its members", body = crate::ErrorBody)),
)]
async fn delete(_: InCoop<CoopAdmin>) -> Result<Json<CoopView>, AppError> {
    Err(AppError::unprocessable(
        "a co-op cannot be deleted: its signed history and books are replicated on every member's device; remove its members instead (DELETE /v1/coops/{id}/members/{did})",
    ))
}

#[utoipa::path(
    get,
    path = "/v1/coops/{id}/members",
    tag = "coops",
    security(("bearer" = ["coop:read"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), PageQuery),
    responses((status = 200, description = "Its members, removed ones included, by DID", body = Page<coop::Member>)),
)]
async fn members(
    State(gw): State<Gateway>,
    c: InCoop<CoopRead>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<coop::Member>>, AppError> {
    blocking(move || {
        let c = read(gw.engine(), &c.id)?;
        let members = c.members.into_values().collect();
        Ok(Json(q.page(members, |m| m.did.to_string())?))
    })
    .await
}

/// A member to add: DID and role (`member` by default, `admin` or `observer`).
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct MemberRequest {
    #[schema(value_type = Did)]
    did: String,
    #[schema(value_type = Option<Role>)]
    role: Option<Role>,
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/members",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = MemberRequest,
    responses((status = 201, description = "The member added", body = coop::Member), (status = 409, description = "Already a member", body = crate::ErrorBody)),
)]
async fn add_member(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Body(req): Body<MemberRequest>,
) -> Result<(StatusCode, Json<coop::Member>), AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&req.did)?;
    blocking(move || {
        let engine = gw.engine();
        if engine
            .read(&id, |r| {
                coop::Standing::read(r, &did).is_some_and(|s| s.is_active())
            })
            .unwrap_or(false)
        {
            return Err(AppError::conflict(format!("{did} is already a member")));
        }
        let role = req.role.unwrap_or(Role::Member);
        engine.write(&id, &auth.signer(), |tx| {
            coop::add_member(tx, &did, role, now_secs() as i64)
        })?;
        Ok((StatusCode::CREATED, Json(member_of(engine, &id, &did)?)))
    })
    .await
}

/// The fields to change: role, status (`active`, `suspended`, `removed`), credit_limit, credit_limits, display_name.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateMemberRequest {
    #[schema(value_type = Option<Role>)]
    role: Option<Role>,
    #[schema(value_type = Option<MemberStatus>)]
    status: Option<MemberStatus>,
    #[schema(minimum = 0)]
    credit_limit: Option<i64>,
    /// Limits in single units, over `credit_limit`: `{"eur": 5000}`.
    credit_limits: Option<std::collections::BTreeMap<String, i64>>,
    display_name: Option<String>,
}

fn member_of(engine: &Engine, id: &DocId, did: &Did) -> Result<coop::Member, AppError> {
    engine
        .read(id, |r| coop::Member::read(r, did))
        .flatten()
        .ok_or_else(|| AppError::not_found(format!("{did} is not a member")))
}

#[utoipa::path(
    put,
    path = "/v1/coops/{id}/members/{did}",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The member's DID")),
    request_body = UpdateMemberRequest,
    responses((status = 200, description = "The member updated (role, status, credit_limit: admins; display_name: the member too)", body = coop::Member)),
)]
async fn update_member(
    State(gw): State<Gateway>,
    c: InCoop<Decided>,
    Path((_coop, did)): Path<(String, String)>,
    Body(req): Body<UpdateMemberRequest>,
) -> Result<Json<coop::Member>, AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&did)?;
    let limits = req.credit_limit.is_some() || req.credit_limits.is_some();
    if did != auth.did || req.role.is_some() || limits {
        auth.require(Scope::CoopAdmin)?;
    } else {
        auth.require(Scope::CoopWrite)?;
    }
    blocking(move || {
        let engine = gw.engine();
        member_of(engine, &id, &did)?;
        let others = req.role.is_some() || limits || req.display_name.is_some();
        if let Some(unknown) = req.credit_limits.iter().flatten().find_map(|(unit, _)| {
            (!engine
                .read(&id, |r| coop::has_unit(r, unit))
                .unwrap_or(false))
            .then(|| unit.clone())
        }) {
            return Err(AppError::unprocessable(format!(
                "credit_limits: the policy has no unit {unknown:?}"
            )));
        }
        if others {
            engine.write(&id, &auth.signer(), |tx| {
                for (unit, limit) in req.credit_limits.iter().flatten() {
                    coop::set_credit_limit_in(tx, &did, unit, *limit)?;
                }
                if let Some(role) = req.role {
                    coop::set_role(tx, &did, role)?;
                }
                if let Some(limit) = req.credit_limit {
                    coop::set_credit_limit(tx, &did, limit)?;
                }
                if let Some(name) = &req.display_name {
                    coop::set_display_name(tx, &did, name)?;
                }
                Ok(())
            })?;
        }
        // A removal or suspension also seals the member in the ledger.
        if let Some(status) = req.status {
            engine.set_member_status(&id, &auth.signer(), &did, status)?;
        }
        Ok(Json(member_of(engine, &id, &did)?))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/coops/{id}/members/{did}",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The member's DID")),
    responses((status = 200, description = "The member, removed (a member may remove itself: leave)", body = coop::Member)),
)]
async fn remove_member(
    State(gw): State<Gateway>,
    c: InCoop<Decided>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<coop::Member>, AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&did)?;
    auth.require(if did == auth.did {
        Scope::CoopWrite
    } else {
        Scope::CoopAdmin
    })?;
    blocking(move || {
        let engine = gw.engine();
        member_of(engine, &id, &did)?;
        // The removal also seals the member in the ledger: nothing it wrote
        // that this node had not seen counts, whatever it cites.
        engine.set_member_status(&id, &auth.signer(), &did, MemberStatus::Removed)?;
        Ok(Json(member_of(engine, &id, &did)?))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/coops/{id}/trusted-contacts",
    tag = "coops",
    security(("bearer" = ["coop:read"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), PageQuery),
    responses((status = 200, description = "The members who may revoke any member's devices in an emergency (`POST /v1/identity/emergency-revoke`)", body = Page<Did>)),
)]
async fn trusted_contacts(
    State(gw): State<Gateway>,
    c: InCoop<CoopRead>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Did>>, AppError> {
    blocking(move || {
        let coop = read(gw.engine(), &c.id)?;
        Ok(Json(q.page(coop.policy.trusted_contacts, Did::to_string)?))
    })
    .await
}

/// A member to name a trusted contact.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TrustedContactRequest {
    /// The member's DID.
    #[schema(value_type = icn_schemas::Did)]
    did: String,
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/trusted-contacts",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = TrustedContactRequest,
    responses(
        (status = 201, description = "The trusted contacts now, all in one page (admins only)", body = Page<Did>),
        (status = 404, description = "Not a member of the co-op", body = crate::ErrorBody),
    ),
)]
async fn add_trusted_contact(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Body(req): Body<TrustedContactRequest>,
) -> Result<(StatusCode, Json<Page<Did>>), AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&req.did)?;
    blocking(move || {
        let engine = gw.engine();
        member_of(engine, &id, &did)?;
        engine.write(&id, &auth.signer(), |tx| {
            coop::add_trusted_contact(tx, &did, now_secs() as i64)
        })?;
        let coop = read(engine, &id)?;
        Ok((
            StatusCode::CREATED,
            Json(whole(coop.policy.trusted_contacts)),
        ))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/coops/{id}/trusted-contacts/{did}",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The trusted contact's DID")),
    responses(
        (status = 200, description = "The trusted contacts now, all in one page (admins only)", body = Page<Did>),
        (status = 404, description = "Not a trusted contact", body = crate::ErrorBody),
    ),
)]
async fn remove_trusted_contact(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<Page<Did>>, AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&did)?;
    blocking(move || {
        let engine = gw.engine();
        engine.write(&id, &auth.signer(), |tx| {
            coop::remove_trusted_contact(tx, &did)
        })?;
        let coop = read(engine, &id)?;
        Ok(Json(whole(coop.policy.trusted_contacts)))
    })
    .await
}

/// A unit of account: a display name, and its scale (decimal places of the
/// smallest step: 2 for cents).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UnitBody {
    name: Option<String>,
    #[schema(minimum = 0, maximum = 18)]
    #[serde(default)]
    scale: i64,
    /// Members' credit limit in this unit, over the policy's default (a
    /// member's own limit still wins).
    #[schema(minimum = 0)]
    credit_limit: Option<i64>,
}

#[utoipa::path(
    put,
    path = "/v1/coops/{id}/units/{unit}",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("unit" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,31}$", description = "The unit's id: a-z, 0-9, '-', '_', '.', ':'")),
    request_body = UnitBody,
    responses((status = 200, description = "The co-op, with the unit added or updated (admins only)", body = CoopView), (status = 422, description = "Not a unit id, or a scale out of range", body = crate::ErrorBody)),
)]
async fn put_unit(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, unit)): Path<(String, String)>,
    Body(req): Body<UnitBody>,
) -> Result<Json<CoopView>, AppError> {
    let InCoop { auth, id, .. } = c;
    if !(0..=18).contains(&req.scale) {
        return Err(AppError::bad_request("scale: 0 to 18 decimal places"));
    }
    blocking(move || {
        gw.engine().write(&id, &auth.signer(), |tx| {
            coop::put_unit(tx, &unit, req.name.as_deref(), req.scale)?;
            if let Some(limit) = req.credit_limit {
                coop::set_unit_credit_limit(tx, &unit, limit)?;
            }
            Ok(())
        })?;
        Ok(Json(view(gw.engine(), &id, &read(gw.engine(), &id)?)))
    })
    .await
}

/// An exchange rate: 1 `from` = `num`/`den` `to`, in the units' smallest
/// steps.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RateBody {
    #[schema(minimum = 1)]
    num: i64,
    #[schema(minimum = 1)]
    den: i64,
}

#[utoipa::path(
    put,
    path = "/v1/coops/{id}/rates/{from}/{to}",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("from" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,31}$", description = "The unit paid"), ("to" = String, Path, pattern = "^[a-z0-9][a-z0-9._:-]{0,31}$", description = "The unit received")),
    request_body = RateBody,
    responses((status = 200, description = "The co-op, with the rate set (admins only): `POST /v1/ledger/{coop}/settle/convert` converts at it", body = CoopView), (status = 422, description = "A unit the policy lacks, the same unit twice, or a rate that is not positive", body = crate::ErrorBody)),
)]
async fn put_rate(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, from, to)): Path<(String, String, String)>,
    Body(req): Body<RateBody>,
) -> Result<Json<CoopView>, AppError> {
    let InCoop { auth, id, .. } = c;
    blocking(move || {
        let engine = gw.engine();
        let known = engine
            .read(&id, |r| coop::has_unit(r, &from) && coop::has_unit(r, &to))
            .unwrap_or(false);
        if !known {
            return Err(AppError::unprocessable(format!(
                "both units must be in the policy first (PUT /v1/coops/{{id}}/units/{{unit}}): {from}, {to}"
            )));
        }
        engine.write(&id, &auth.signer(), |tx| {
            coop::set_rate(tx, &from, &to, req.num, req.den)
        })?;
        Ok(Json(view(engine, &id, &read(engine, &id)?)))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/coops/{id}/relays",
    tag = "coops",
    security(("bearer" = ["coop:read"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), PageQuery),
    responses((status = 200, description = "The co-op's registered relays, by DID. A relay holds the co-op's documents and ledger without being a member.", body = Page<RelayView>)),
)]
async fn relays(
    State(gw): State<Gateway>,
    c: InCoop<CoopRead>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<RelayView>>, AppError> {
    blocking(move || {
        let coop = read(gw.engine(), &c.id)?;
        Ok(Json(q.page(relay_list(&coop), |r| r.did.to_string())?))
    })
    .await
}

/// A relay of the co-op: its node's DID and where to dial it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RelayView {
    did: Did,
    addr: Option<String>,
}

fn relay_list(coop: &Coop) -> Vec<RelayView> {
    coop.relays
        .iter()
        .map(|(did, r)| RelayView {
            did: *did,
            addr: r.addr.clone(),
        })
        .collect()
}

/// A relay to register: the node's DID (`icnctl status` on it) and where
/// to dial it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RelayBody {
    #[schema(value_type = icn_schemas::Did)]
    did: String,
    /// `ip:port` or `host:port` of its sync listener.
    #[schema(pattern = "^\\S+:[0-9]{1,5}$", max_length = 200)]
    addr: String,
}

#[utoipa::path(
    post,
    path = "/v1/coops/{id}/relays",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = RelayBody,
    responses((status = 201, description = "The relays now (admins only); the node receives the co-op when it next syncs with a member; all in one page", body = Page<RelayView>), (status = 400, description = "Not a DID, or no address", body = crate::ErrorBody)),
)]
async fn add_relay(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Body(req): Body<RelayBody>,
) -> Result<(StatusCode, Json<Page<RelayView>>), AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&req.did)?;
    if req.addr.trim().is_empty() || req.addr.len() > 200 || !req.addr.contains(':') {
        return Err(AppError::bad_request(
            "addr: where to dial the relay, host:port (at most 200 bytes)",
        ));
    }
    blocking(move || {
        gw.engine().write(&id, &auth.signer(), |tx| {
            coop::add_relay(tx, &did, req.addr.trim(), now_secs() as i64)
        })?;
        Ok((
            StatusCode::CREATED,
            Json(whole(relay_list(&read(gw.engine(), &id)?))),
        ))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/coops/{id}/relays/{did}",
    tag = "coops",
    security(("bearer" = ["coop:admin"])),
    params(("id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "The relay's DID")),
    responses((status = 200, description = "The relays now, all in one page (admins only)", body = Page<RelayView>), (status = 404, description = "Not a relay of the co-op", body = crate::ErrorBody)),
)]
async fn remove_relay(
    State(gw): State<Gateway>,
    c: InCoop<CoopAdmin>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<Page<RelayView>>, AppError> {
    let InCoop { auth, id, .. } = c;
    let did = parse_did(&did)?;
    blocking(move || {
        let engine = gw.engine();
        if !engine
            .read(&id, |r| coop::is_relay(r, &did))
            .unwrap_or(false)
        {
            return Err(AppError::not_found(format!(
                "{did} is not a relay of this co-op"
            )));
        }
        engine.write(&id, &auth.signer(), |tx| coop::remove_relay(tx, &did))?;
        Ok(Json(whole(relay_list(&read(engine, &id)?))))
    })
    .await
}
