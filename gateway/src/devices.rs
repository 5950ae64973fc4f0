//! A member's devices (seed 002, "Identity Lifecycle"): list them, register
//! a new one, revoke a lost or stolen one, and the emergency revoke a
//! trusted contact or an admin makes for a member whose unlocked phone was
//! stolen.
//!
//! Devices are listed per co-op, in each co-op's document. A member's
//! device routes act on every co-op this node holds that lists the member
//! and that the caller reads; the answer says what happened in each.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use icn_schemas::coop::{self, REVOKE_REASONS, Revocation};
use icn_schemas::ledger::EntryId;
use icn_schemas::{Did, DocId, DocKind, Scope};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::now_secs;
use crate::error::AppError;
use crate::views::{Page, PageQuery};
use crate::{Auth, Body, Gateway, blocking, parse_did};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .routes(routes!(revoke))
        .routes(routes!(emergency_revoke))
        .routes(routes!(rotate))
}

/// The co-ops on this node that list `member` and that `caller` reads; 404
/// when there are none.
fn coops_listing(gw: &Gateway, caller: &Did, member: &Did) -> Result<Vec<DocId>, AppError> {
    let coops = coops_listed(gw, caller, member);
    if coops.is_empty() {
        return Err(AppError::not_found(format!(
            "no co-op you read on this node lists {member}"
        )));
    }
    Ok(coops)
}

/// The co-ops on this node that list `member` and that `caller` reads.
fn coops_listed(gw: &Gateway, caller: &Did, member: &Did) -> Vec<DocId> {
    let engine = gw.engine();
    gw.index()
        .all(DocKind::Coop)
        .into_iter()
        .filter(|id| {
            engine.member_may_read(id, caller)
                && engine
                    .read(id, |r| coop::Standing::read(r, member))
                    .flatten()
                    .is_some()
        })
        .collect()
}

/// Where a device stands in one co-op.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum DeviceStatus {
    /// It acts for the member.
    Live,
    /// It never acts for the member again.
    Revoked,
    /// Listed without the device's consent (a proof), so it does not act.
    Unproven,
}

/// A device of a member, as one co-op lists it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct DeviceRow {
    /// The co-op's id.
    coop_id: String,
    coop_doc_id: DocId,
    /// The device's key, `did:icn:…`.
    device: String,
    label: Option<String>,
    /// Unix seconds.
    added_at: Option<i64>,
    /// Whether it is the member's DID key itself.
    is_did_key: bool,
    /// Whether the device consented (signed its proof).
    proven: bool,
    /// Whether it acts for the member now.
    live: bool,
    status: DeviceStatus,
    /// Unix seconds.
    revoked_at: Option<i64>,
    /// `lost`, `stolen`, `retired` or `emergency`.
    revoked_reason: Option<String>,
    revoked_by: Option<Did>,
}

/// What a write did in one co-op.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Outcome {
    /// The co-op's id.
    coop_id: String,
    /// Whether it was written there.
    done: bool,
    /// Why not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The keys a revocation revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<Vec<Did>>,
    /// The seals it wrote in the co-op's ledger, one per key (none when a
    /// device other than the DID key revoked).
    #[serde(skip_serializing_if = "Option::is_none")]
    seals: Option<Vec<EntryId>>,
    /// A rotation: the co-op's domains where the new key now votes.
    #[serde(skip_serializing_if = "Option::is_none")]
    domains: Option<Vec<DocId>>,
}

/// What a write did in one co-op, besides the write itself.
#[derive(Default)]
struct Written {
    revoked: Option<Vec<Did>>,
    seals: Option<Vec<EntryId>>,
    domains: Option<Vec<DocId>>,
}

impl From<icn_engine::Revoked> for Written {
    fn from(r: icn_engine::Revoked) -> Self {
        Written {
            revoked: Some(r.devices),
            seals: Some(r.seals),
            domains: None,
        }
    }
}

/// What a device write did: in each co-op, and the member's devices now.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct DevicesAnswer {
    /// The member.
    did: Did,
    /// The device written, when one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Did>,
    /// One per co-op that lists the member.
    outcomes: Vec<Outcome>,
    /// The member's devices now, in every co-op you share with it.
    devices: Vec<DeviceRow>,
}

/// One row per (co-op, device).
fn device_rows(gw: &Gateway, member: &Did, coops: &[DocId]) -> Vec<DeviceRow> {
    let mut rows = Vec::new();
    for id in coops {
        let Some((m, live)) = gw
            .engine()
            .read(id, |r| {
                let m = coop::Member::read(r, member)?;
                let live: Vec<bool> = m
                    .devices
                    .keys()
                    .map(|k| {
                        Did::from_key_string(k).is_ok_and(|d| coop::is_live_device(r, member, &d))
                    })
                    .collect();
                Some((m, live))
            })
            .flatten()
        else {
            continue;
        };
        let coop_name = gw.index().name(id).unwrap_or_else(|| id.to_string());
        for ((key, d), live) in m.devices.iter().zip(live) {
            rows.push(DeviceRow {
                coop_id: coop_name.clone(),
                coop_doc_id: *id,
                device: Did::from_key_string(key)
                    .map(|d| d.to_string())
                    .unwrap_or_else(|_| key.clone()),
                label: d.label.clone(),
                added_at: d.added_at,
                is_did_key: key == &member.key_string(),
                proven: d.proven,
                live,
                status: if d.revoked {
                    DeviceStatus::Revoked
                } else if live {
                    DeviceStatus::Live
                } else {
                    DeviceStatus::Unproven
                },
                revoked_at: d.revoked_at,
                revoked_reason: d.revoked_reason.clone(),
                revoked_by: d.revoked_by,
            });
        }
    }
    rows
}

/// Runs `write` in every co-op of `coops`; the per-co-op outcomes (with
/// what `write` answered, under `written`), or the first refusal when every
/// co-op refused.
fn in_each(
    gw: &Gateway,
    coops: &[DocId],
    mut write: impl FnMut(&DocId) -> Result<Written, AppError>,
) -> Result<Vec<Outcome>, AppError> {
    let mut outcomes = Vec::new();
    let mut first_refusal = None;
    let mut done = 0;
    for id in coops {
        let coop_name = gw.index().name(id).unwrap_or_else(|| id.to_string());
        match write(id) {
            Ok(written) => {
                done += 1;
                outcomes.push(Outcome {
                    coop_id: coop_name,
                    done: true,
                    error: None,
                    revoked: written.revoked,
                    seals: written.seals,
                    domains: written.domains,
                });
            }
            Err(e) => {
                outcomes.push(Outcome {
                    coop_id: coop_name,
                    done: false,
                    error: Some(e.message().to_owned()),
                    revoked: None,
                    seals: None,
                    domains: None,
                });
                first_refusal.get_or_insert(e);
            }
        }
    }
    match (done, first_refusal) {
        (0, Some(e)) => Err(e),
        _ => Ok(outcomes),
    }
}

#[utoipa::path(
    get,
    path = "/v1/devices/{did}",
    operation_id = "list_devices",
    tag = "devices",
    security(("bearer" = ["coop:read"])),
    params(("did" = Did, Path, description = "The member's DID"), PageQuery),
    responses(
        (status = 200, description = "The member's devices in every co-op you share with it on this node: one row per co-op and device, with `status` `live`, `revoked` (and why, when, by whom) or `unproven`", body = Page<DeviceRow>),
        (status = 400, description = "Not a DID", body = crate::ErrorBody),
        (status = 404, description = "No co-op you read lists this member", body = crate::ErrorBody),
    ),
)]
async fn list(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(did): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<DeviceRow>>, AppError> {
    auth.require(Scope::CoopRead)?;
    let member = parse_did(&did)?;
    blocking(move || {
        let coops = coops_listing(&gw, &auth.did, &member)?;
        let rows = device_rows(&gw, &member, &coops);
        Ok(Json(q.page(rows, |r| {
            format!("{}/{}", r.coop_doc_id, r.device)
        })?))
    })
    .await
}

/// A device to register: its key as a DID, a label, and its consent.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct RegisterRequest {
    /// The device's key, `did:icn:…`.
    #[schema(value_type = icn_schemas::Did)]
    device: String,
    /// A name for it ("Alice's phone").
    label: Option<String>,
    /// The device's Ed25519 signature of the UTF-8 text
    /// `icn-device/v1\n<member DID>`, hex or base64: its consent to act for
    /// the member (`icnctl device proof` prints it). Not needed for the
    /// member's own DID key.
    #[schema(
        pattern = "^([0-9a-fA-F]{128}|[A-Za-z0-9+/]{85}[AQgw](==)?|[A-Za-z0-9_-]{85}[AQgw](==)?)$"
    )]
    proof: Option<String>,
}

fn decode_signature(text: &str) -> Result<[u8; 64], AppError> {
    crate::auth::decode_signature(text)
        .map_err(|_| AppError::bad_request("proof: a 64-byte Ed25519 signature, hex or base64"))
}

#[utoipa::path(
    post,
    path = "/v1/devices/{did}",
    tag = "devices",
    security(("bearer" = ["coop:write"])),
    params(("did" = Did, Path, description = "The member's DID")),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered in each co-op that lists the member (`outcomes`), and the member's devices now", body = DevicesAnswer),
        (status = 400, description = "Not a DID, or a proof that is not a signature", body = crate::ErrorBody),
        (status = 422, description = "No proof for a key other than the member's DID key, or a proof that is not the device's signature", body = crate::ErrorBody),
        (status = 403, description = "Neither the member nor an admin", body = crate::ErrorBody),
        (status = 404, description = "No co-op you read lists this member", body = crate::ErrorBody),
        (status = 409, description = "The key was revoked: a revoked key is never added again", body = crate::ErrorBody),
    ),
)]
async fn register(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(did): Path<String>,
    Body(req): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<DevicesAnswer>), AppError> {
    let member = parse_did(&did)?;
    auth.require(if member == auth.did {
        Scope::CoopWrite
    } else {
        Scope::CoopAdmin
    })?;
    let device = parse_did(&req.device)?;
    let proof = match (&req.proof, device == member) {
        (Some(p), _) => Some(decode_signature(p)?),
        (None, true) => None,
        (None, false) => {
            return Err(AppError::unprocessable(
                "proof is required: the device's signature of \"icn-device/v1\\n<member DID>\"",
            ));
        }
    };
    if let Some(p) = &proof
        && icn_engine::identity::verify(&device, &coop::device_proof_message(&member), p).is_err()
    {
        return Err(AppError::unprocessable(format!(
            "proof is not {device}'s signature of \"icn-device/v1\\n{member}\""
        )));
    }
    blocking(move || {
        let coops = coops_listing(&gw, &auth.did, &member)?;
        let now = now_secs() as i64;
        let outcomes = in_each(&gw, &coops, |id| {
            gw.engine().write(id, &auth.signer(), |tx| {
                coop::add_device(
                    tx,
                    &member,
                    &device,
                    proof.as_ref(),
                    req.label.as_deref(),
                    now,
                )
            })?;
            Ok(Written::default())
        })?;
        Ok((
            StatusCode::CREATED,
            Json(DevicesAnswer {
                did: member,
                device: Some(device),
                outcomes,
                devices: device_rows(&gw, &member, &coops),
            }),
        ))
    })
    .await
}

/// Why a device is revoked.
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
struct RevokeRequest {
    /// `lost`, `stolen`, `retired` or `emergency`.
    #[schema(pattern = "^(lost|stolen|retired|emergency)$")]
    reason: Option<String>,
}

fn reason(given: Option<&str>, default: Option<&str>) -> Result<String, AppError> {
    let reason = given.or(default).ok_or_else(|| {
        AppError::bad_request(format!("reason is required: {}", REVOKE_REASONS.join(", ")))
    })?;
    if REVOKE_REASONS.contains(&reason) {
        Ok(reason.to_owned())
    } else {
        Err(AppError::bad_request(format!(
            "{reason:?} is not a reason: {}",
            REVOKE_REASONS.join(", ")
        )))
    }
}

#[utoipa::path(
    delete,
    path = "/v1/devices/{did}/{device}",
    tag = "devices",
    security(("bearer" = ["coop:write"])),
    params(
        ("did" = Did, Path, description = "The member's DID"),
        ("device" = Did, Path, description = "The device's key, `did:icn:…`"),
        ("reason" = String, Query, pattern = "^(lost|stolen|retired|emergency)$", description = "`lost`, `stolen`, `retired` or `emergency` (or in the body)"),
    ),
    request_body(content = Option<RevokeRequest>, description = "The reason, in the body instead of the query"),
    responses(
        (status = 200, description = "Revoked in each co-op that lists it (`outcomes`): it never acts for the member again", body = DevicesAnswer),
        (status = 400, description = "Not a DID, or no valid reason", body = crate::ErrorBody),
        (status = 403, description = "Neither the member, an admin nor a trusted contact", body = crate::ErrorBody),
        (status = 404, description = "No co-op you read lists this device for the member", body = crate::ErrorBody),
    ),
)]
async fn revoke(
    State(gw): State<Gateway>,
    auth: Auth,
    Path((did, device)): Path<(String, String)>,
    Query(query): Query<RevokeRequest>,
    body: axum::body::Bytes,
) -> Result<Json<DevicesAnswer>, AppError> {
    auth.require(Scope::CoopWrite)?;
    let member = parse_did(&did)?;
    let device = parse_did(&device)?;
    let body: RevokeRequest = crate::optional_json(&body)?;
    let reason = reason(query.reason.as_deref().or(body.reason.as_deref()), None)?;
    blocking(move || {
        let coops: Vec<DocId> = coops_listed(&gw, &auth.did, &member)
            .into_iter()
            .filter(|id| {
                gw.engine()
                    .read(id, |r| coop::has_device(r, &member, &device))
                    .unwrap_or(false)
            })
            .collect();
        if coops.is_empty() {
            return Err(AppError::not_found(format!(
                "no co-op you read on this node lists {device} as a device of {member}"
            )));
        }
        let revocation = Revocation {
            reason,
            at: now_secs() as i64,
            by: auth.did,
        };
        let outcomes = in_each(&gw, &coops, |id| {
            let revoked =
                gw.engine()
                    .revoke_device(id, &auth.signer(), &member, &device, &revocation)?;
            Ok(revoked.into())
        })?;
        Ok(Json(DevicesAnswer {
            did: member,
            device: Some(device),
            outcomes,
            devices: device_rows(&gw, &member, &coops),
        }))
    })
    .await
}

/// Seed 002's emergency revoke: every device of `target_did` at once.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct EmergencyRequest {
    /// The member whose devices are revoked.
    #[schema(value_type = icn_schemas::Did)]
    target_did: String,
    /// Who vouches: the caller's own DID, if given.
    #[schema(value_type = Option<icn_schemas::Did>)]
    voucher_did: Option<String>,
    /// `lost`, `stolen`, `retired` or `emergency` (the default).
    #[schema(pattern = "^(lost|stolen|retired|emergency)$")]
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/identity/emergency-revoke",
    tag = "devices",
    security(("bearer" = ["coop:write"])),
    request_body = EmergencyRequest,
    responses(
        (status = 200, description = "Every device of the member revoked, its DID key included, in each co-op where you are an admin or a trusted contact (`outcomes`): the member acts nowhere until an admin registers a new key for it", body = DevicesAnswer),
        (status = 400, description = "Not a DID, or a bad reason", body = crate::ErrorBody),
        (status = 403, description = "Neither an admin nor a trusted contact of any co-op listing the member, or a voucher that is not you", body = crate::ErrorBody),
        (status = 404, description = "No co-op you read lists the member", body = crate::ErrorBody),
    ),
)]
async fn emergency_revoke(
    State(gw): State<Gateway>,
    auth: Auth,
    Body(req): Body<EmergencyRequest>,
) -> Result<Json<DevicesAnswer>, AppError> {
    auth.require(Scope::CoopWrite)?;
    let member = parse_did(&req.target_did)?;
    if let Some(voucher) = &req.voucher_did
        && parse_did(voucher)? != auth.did
    {
        return Err(AppError::forbidden(
            "voucher_did is not the caller: log in as the trusted contact or admin who vouches",
        ));
    }
    let reason = reason(req.reason.as_deref(), Some("emergency"))?;
    blocking(move || {
        let coops = coops_listing(&gw, &auth.did, &member)?;
        let revocation = Revocation {
            reason,
            at: now_secs() as i64,
            by: auth.did,
        };
        let outcomes = in_each(&gw, &coops, |id| {
            let revoked =
                gw.engine()
                    .revoke_all_devices(id, &auth.signer(), &member, &revocation)?;
            Ok(revoked.into())
        })?;
        Ok(Json(DevicesAnswer {
            did: member,
            device: None,
            outcomes,
            devices: device_rows(&gw, &member, &coops),
        }))
    })
    .await
}

/// The key to rotate to, and its consent.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct RotateRequest {
    /// The new key, `did:icn:…`: it takes over the powers of the key that
    /// signed your token (voting, seals, granting allowances, spending
    /// general credit beside them).
    #[schema(value_type = icn_schemas::Did)]
    key: String,
    /// The new key's Ed25519 signature of the UTF-8 text
    /// `icn-device/v1\n<member DID>`, hex or base64 (`icnctl device proof`).
    #[schema(
        pattern = "^([0-9a-fA-F]{128}|[A-Za-z0-9+/]{85}[AQgw](==)?|[A-Za-z0-9_-]{85}[AQgw](==)?)$"
    )]
    proof: String,
}

/// What a rotation did: in each co-op, and the member's devices now.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct RotateAnswer {
    /// The member.
    did: Did,
    /// The key retired (revoked, reason `retired`).
    old_key: Did,
    /// The key that now holds the member's DID key powers.
    new_key: Did,
    /// One per co-op on this node where the old key held them: the old
    /// key `revoked`, its seal (`seals`), and the `domains` where the new
    /// key now votes.
    outcomes: Vec<Outcome>,
    /// The member's devices now.
    devices: Vec<DeviceRow>,
}

#[utoipa::path(
    post,
    path = "/v1/identity/rotate",
    tag = "devices",
    security(("bearer" = ["coop:write", "ledger:write", "gov:write"])),
    request_body = RotateRequest,
    responses(
        (status = 200, description = "In each co-op on this node where the key that signed your token holds your DID key's powers (`outcomes`): that key sealed itself in the ledger, the new key was listed as your device and named as your `key`, it took over your vote in the co-op's domains held here (`domains`), and the old key was revoked (`retired`). Log in with the new key from now on (POST /v1/auth/challenge with `device`)", body = RotateAnswer),
        (status = 400, description = "Not a DID, or a proof that is not a signature", body = crate::ErrorBody),
        (status = 403, description = "The token lacks coop:write, ledger:write or gov:write", body = crate::ErrorBody),
        (status = 404, description = "No co-op on this node where the token's key holds your DID key's powers", body = crate::ErrorBody),
        (status = 422, description = "A proof that is not the new key's signature, or the new key is the old one", body = crate::ErrorBody),
    ),
)]
async fn rotate(
    State(gw): State<Gateway>,
    auth: Auth,
    Body(req): Body<RotateRequest>,
) -> Result<Json<RotateAnswer>, AppError> {
    for scope in [Scope::CoopWrite, Scope::LedgerWrite, Scope::GovWrite] {
        auth.require(scope)?;
    }
    let new = parse_did(&req.key)?;
    let proof = decode_signature(&req.proof)?;
    let member = auth.did;
    if icn_engine::identity::verify(&new, &coop::device_proof_message(&member), &proof).is_err() {
        return Err(AppError::unprocessable(format!(
            "proof is not {new}'s signature of \"icn-device/v1\\n{member}\""
        )));
    }
    let old = auth.signing_key()?;
    if new == old {
        return Err(AppError::unprocessable(
            "the new key is the key that signed your token",
        ));
    }
    blocking(move || {
        let engine = gw.engine();
        let coops: Vec<DocId> = gw
            .index()
            .all(DocKind::Coop)
            .into_iter()
            .filter(|id| {
                engine
                    .read(id, |r| {
                        // Or to the new key already: a rotation to finish.
                        let holder = coop::key_of(r, &member);
                        holder == Some(old) || holder == Some(new)
                    })
                    .unwrap_or(false)
                    && engine
                        .read(id, |r| coop::is_live_device(r, &member, &old))
                        .unwrap_or(false)
            })
            .collect();
        if coops.is_empty() {
            return Err(AppError::not_found(format!(
                "no co-op on this node where {old} holds {member}'s DID key powers"
            )));
        }
        let now = now_secs() as i64;
        let outcomes = in_each(&gw, &coops, |id| {
            let r = engine.rotate_key(id, &auth.signer(), &new, &proof, now)?;
            Ok(Written {
                revoked: Some(vec![r.old]),
                seals: Some(r.seal.into_iter().collect()),
                domains: Some(r.domains),
            })
        })?;
        tracing::info!(%member, %old, %new, "rotated a member's key");
        Ok(Json(RotateAnswer {
            did: member,
            old_key: old,
            new_key: new,
            outcomes,
            devices: device_rows(&gw, &member, &coops),
        }))
    })
    .await
}
