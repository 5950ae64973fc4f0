//! The ledger: positions, settlements, history, entries by decision. The
//! legacy payment-rail routes answer 404 naming their canonical route.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use icn_engine::ledger::{Convert, Settle};
use std::collections::BTreeMap;

use icn_schemas::ledger::{Account, EntryId};
use icn_schemas::{Did, DocId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::scoped::{InCoop, LedgerRead, LedgerWrite};
use crate::views::{
    EntryView, Page, PageQuery, PositionAnswer, PositionView, SettleAnswer, StatusView,
};
use crate::{Auth, Body, Gateway, blocking, parse_did};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(position))
        .routes(routes!(settle))
        .routes(routes!(convert))
        .routes(routes!(freeze))
        .routes(routes!(entry))
        .routes(routes!(trial_balance))
        .routes(routes!(history))
        .routes(routes!(by_decision))
        .routes(routes!(legacy_balance))
        .routes(routes!(legacy_payment))
}

#[utoipa::path(
    get,
    path = "/v1/ledger/{coop}/balance/{did}",
    tag = "ledger (legacy, not served)",
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "A member's DID")),
    responses((status = 404, description = "Not served: use GET /v1/ledger/{coop}/position/{did}", body = crate::ErrorBody)),
)]
/// The payment-rail vocabulary is not served (API directory, ADR-0006).
async fn legacy_balance() -> AppError {
    AppError::not_found(
        "…/balance/{did} is not served: use GET /v1/ledger/{coop}/position/{did} (net position)",
    )
}

#[utoipa::path(
    post,
    path = "/v1/ledger/{coop}/payment",
    tag = "ledger (legacy, not served)",
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    responses((status = 404, description = "Not served: use POST /v1/ledger/{coop}/settle", body = crate::ErrorBody)),
)]
/// The payment-rail vocabulary is not served (API directory, ADR-0006).
async fn legacy_payment() -> AppError {
    AppError::not_found(
        "…/payment is not served: use POST /v1/ledger/{coop}/settle (settlement of obligations, with `unit`)",
    )
}

/// The co-op `key` names, readable by `auth`.
pub(crate) fn coop_for(gw: &Gateway, auth: &Auth, key: &str) -> Result<DocId, AppError> {
    crate::scoped::coop_id(gw, &auth.did, key)
}

#[utoipa::path(
    get,
    path = "/v1/ledger/{coop}/position/{did}",
    tag = "ledger",
    security(("bearer" = ["ledger:read"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("did" = icn_schemas::Did, Path, description = "A member's DID, or `treasury`")),
    responses((status = 200, description = "Net position in every unit: balance, credit limit, reserved, available (for `treasury`: its balance in every unit)", body = PositionAnswer), (status = 400, description = "Neither a DID nor `treasury`", body = crate::ErrorBody), (status = 404, description = "No such co-op", body = crate::ErrorBody)),
)]
async fn position(
    State(gw): State<Gateway>,
    c: InCoop<LedgerRead>,
    Path((_coop, did)): Path<(String, String)>,
) -> Result<Json<PositionAnswer>, AppError> {
    if did == "treasury" {
        return blocking(move || {
            let tb = gw.engine().trial_balance(&c.id)?;
            let units = gw
                .engine()
                .coop(&c.id)
                .and_then(Result::ok)
                .map(|coop| coop.policy.units.into_keys().collect::<Vec<_>>())
                .unwrap_or_default();
            let positions = units
                .iter()
                .map(|unit| PositionView {
                    unit: unit.clone(),
                    balance: tb
                        .accounts
                        .get(&(Account::Treasury.to_string(), unit.clone()))
                        .copied()
                        .unwrap_or(0),
                    credit_limit: None,
                    reserved: None,
                    available: None,
                    allowances: None,
                })
                .collect();
            Ok(Json(PositionAnswer {
                coop_id: c.key,
                did: "treasury".into(),
                positions,
            }))
        })
        .await;
    }
    let member = parse_did(&did)?;
    blocking(move || {
        let units = gw.engine().position(&c.id, &member)?;
        let positions = units
            .into_iter()
            .map(|p| PositionView {
                unit: p.unit,
                balance: p.balance,
                credit_limit: Some(p.credit_limit),
                reserved: Some(p.reserved),
                available: Some(p.available),
                allowances: Some(
                    p.allowances
                        .into_iter()
                        .map(|(d, a)| (d.to_string(), a))
                        .collect(),
                ),
            })
            .collect();
        Ok(Json(PositionAnswer {
            coop_id: c.key,
            did: member.to_string(),
            positions,
        }))
    })
    .await
}

/// An entry, where it stands, and its canonical bytes.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct EntryDetail {
    id: EntryId,
    entry: icn_schemas::ledger::Entry,
    status: StatusView,
    /// The signed entry's canonical encoding (docs/ledger.md), hex.
    #[schema(pattern = "^([0-9a-f]{2})*$")]
    bytes: String,
}

/// A co-op's trial balance.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TrialBalanceView {
    /// The co-op, as the path named it.
    coop_id: String,
    /// Every non-zero balance.
    accounts: Vec<BalanceRow>,
    /// Each unit's sum over every account, a decimal string: always `0`.
    totals: BTreeMap<String, String>,
    /// Entries held.
    entries: usize,
    /// The conflicted entries, in fold order.
    conflicted: Vec<EntryId>,
}

/// One account's balance in one unit.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct BalanceRow {
    /// A DID, or `treasury`.
    account: String,
    unit: String,
    balance: i64,
}

/// A freeze or unfreeze recorded.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct FreezeAnswer {
    entry_id: EntryId,
    status: StatusView,
    did: Did,
    frozen: bool,
}

/// A cross-unit settlement recorded.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ConvertAnswer {
    entry_id: EntryId,
    status: StatusView,
    from: Did,
    to: Did,
    amount: i64,
    from_unit: String,
    to_unit: String,
    memo: String,
}

#[utoipa::path(
    get,
    path = "/v1/ledger/{coop}/entries/{id}",
    tag = "ledger",
    security(("bearer" = ["ledger:read"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), ("id" = EntryId, Path, description = "The entry's id (hex)")),
    responses((status = 200, description = "The entry and its status (applied, or conflicted with the reason), and its canonical encoding in hex", body = EntryDetail), (status = 400, description = "Not an entry id", body = crate::ErrorBody), (status = 404, description = "Not held here", body = crate::ErrorBody)),
)]
async fn entry(
    State(gw): State<Gateway>,
    c: InCoop<LedgerRead>,
    Path((_coop, id)): Path<(String, String)>,
) -> Result<Json<EntryDetail>, AppError> {
    let entry_id = id
        .parse::<EntryId>()
        .map_err(|_| AppError::bad_request(format!("{id:?} is not an entry id (64 hex)")))?;
    blocking(move || {
        let engine = gw.engine();
        let (signed, status) = engine
            .entry(&c.id, &entry_id)?
            .ok_or_else(|| AppError::not_found(format!("no entry {id} in this ledger here")))?;
        let bytes = engine.entry_bytes(&c.id, &entry_id)?.unwrap_or_default();
        Ok(Json(EntryDetail {
            id: entry_id,
            entry: signed.entry,
            status: StatusView::of(&status)?,
            bytes: hex::encode(bytes),
        }))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/ledger/{coop}/trial-balance",
    tag = "ledger",
    security(("bearer" = ["ledger:read"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    responses((status = 200, description = "Every non-zero balance by account and unit, each unit's total (always 0), the number of entries, and the conflicted ones", body = TrialBalanceView)),
)]
async fn trial_balance(
    State(gw): State<Gateway>,
    c: InCoop<LedgerRead>,
) -> Result<Json<TrialBalanceView>, AppError> {
    blocking(move || {
        let tb = gw.engine().trial_balance(&c.id)?;
        let accounts = tb
            .accounts
            .into_iter()
            .map(|((account, unit), balance)| BalanceRow {
                account,
                unit,
                balance,
            })
            .collect();
        let totals = tb
            .totals
            .iter()
            .map(|(unit, total)| (unit.clone(), total.to_string()))
            .collect();
        Ok(Json(TrialBalanceView {
            coop_id: c.key,
            accounts,
            totals,
            entries: tb.entries,
            conflicted: tb.conflicted,
        }))
    })
    .await
}

/// A settlement: `amount` of `unit` from you (`from`, if given, must be your DID) to `to`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct SettleRequest {
    #[schema(value_type = Option<icn_schemas::Did>)]
    from: Option<String>,
    #[schema(value_type = icn_schemas::Did)]
    to: String,
    #[schema(minimum = 1)]
    amount: i64,
    #[schema(pattern = "^[a-z0-9][a-z0-9._:-]{0,31}$")]
    unit: String,
    #[serde(default)]
    memo: String,
}

fn own_account(auth: &Auth, from: Option<&str>) -> Result<(), AppError> {
    if let Some(from) = from
        && parse_did(from)? != auth.did
    {
        return Err(AppError::forbidden(format!(
            "a token for {} settles only from its own account, not {from}",
            auth.did
        )));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/ledger/{coop}/settle",
    tag = "ledger",
    security(("bearer" = ["ledger:write"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = SettleRequest,
    responses((status = 201, description = "The entry recorded, with its status", body = SettleAnswer), (status = 400, description = "Malformed: a DID that does not parse, a missing field", body = crate::ErrorBody), (status = 403, description = "Not your account, or not a member", body = crate::ErrorBody), (status = 422, description = "Beyond the credit limit, an unknown unit, a frozen account", body = crate::ErrorBody)),
)]
async fn settle(
    State(gw): State<Gateway>,
    c: InCoop<LedgerWrite>,
    Body(req): Body<SettleRequest>,
) -> Result<(StatusCode, Json<SettleAnswer>), AppError> {
    let InCoop { auth, id, .. } = c;
    own_account(&auth, req.from.as_deref())?;
    let to = parse_did(&req.to)?;
    let settle = Settle {
        to,
        amount: req.amount,
        unit: req.unit,
        memo: req.memo,
    };
    // Judged, signed and applied on a blocking thread; its sync awaited
    // here, so no thread sleeps through it. The engine reports the commit
    // once durable whether or not this request is still waiting.
    let (durable, done) = tokio::sync::oneshot::channel();
    let (signer, to_settle, counted) = (auth.signer(), settle.clone(), gw.clone());
    blocking(move || {
        let engine = counted.engine().clone();
        engine.settle_then(&id, &signer, &to_settle, move |r| {
            // Counted once durable, even if the client has gone.
            if r.is_ok() {
                Metrics::add(&counted.metrics().settlements);
            }
            let _ = durable.send(r);
        })?;
        Ok(())
    })
    .await?;
    let (entry, status) = done
        .await
        .map_err(|_| AppError::internal("the settlement's sync was lost"))??;
    let answer = SettleAnswer {
        entry_id: entry.to_string(),
        status: StatusView::of(&status)?,
        from: auth.did.to_string(),
        to: settle.to.to_string(),
        amount: settle.amount,
        unit: settle.unit,
        memo: settle.memo,
    };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// An account to freeze (`frozen: true`, the default) or unfreeze.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FreezeRequest {
    #[schema(value_type = icn_schemas::Did)]
    did: String,
    #[serde(default = "yes")]
    frozen: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/v1/ledger/{coop}/freeze",
    tag = "ledger",
    security(("bearer" = ["ledger:write", "coop:admin"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = FreezeRequest,
    responses((status = 201, description = "The freeze (or unfreeze) entry, with its status (admins only): from its place on, entries touching the account are conflicted, and debits it had not seen that sort before it are sealed", body = FreezeAnswer), (status = 404, description = "Not a member of the co-op", body = crate::ErrorBody)),
)]
async fn freeze(
    State(gw): State<Gateway>,
    c: InCoop<LedgerWrite>,
    Body(req): Body<FreezeRequest>,
) -> Result<(StatusCode, Json<FreezeAnswer>), AppError> {
    let InCoop { auth, id, .. } = c;
    auth.require(icn_schemas::Scope::CoopAdmin)?;
    let did = parse_did(&req.did)?;
    blocking(move || {
        let engine = gw.engine();
        let member = engine
            .read(&id, |r| icn_schemas::coop::Standing::read(r, &did))
            .flatten();
        if member.is_none() {
            return Err(AppError::not_found(format!(
                "{did} is not a member of this co-op"
            )));
        }
        let (entry, status) = engine.freeze(&id, &auth.signer(), &did, req.frozen)?;
        Ok((
            StatusCode::CREATED,
            Json(FreezeAnswer {
                entry_id: entry,
                status: StatusView::of(&status)?,
                did,
                frozen: req.frozen,
            }),
        ))
    })
    .await
}

/// A cross-unit settlement: `amount` of `from_unit` from you, its value in `to_unit` to `to` (yourself when absent).
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct ConvertRequest {
    #[schema(value_type = Option<icn_schemas::Did>)]
    from: Option<String>,
    #[schema(value_type = Option<icn_schemas::Did>)]
    to: Option<String>,
    #[schema(minimum = 1)]
    amount: i64,
    #[schema(pattern = "^[a-z0-9][a-z0-9._:-]{0,31}$")]
    from_unit: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._:-]{0,31}$")]
    to_unit: String,
    #[serde(default)]
    memo: String,
}

#[utoipa::path(
    post,
    path = "/v1/ledger/{coop}/settle/convert",
    tag = "ledger",
    security(("bearer" = ["ledger:write"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = ConvertRequest,
    responses((status = 201, description = "The entry recorded, at the policy's rate", body = ConvertAnswer), (status = 422, description = "No rate, a fractional result, beyond the credit limit", body = crate::ErrorBody)),
)]
async fn convert(
    State(gw): State<Gateway>,
    c: InCoop<LedgerWrite>,
    Body(req): Body<ConvertRequest>,
) -> Result<(StatusCode, Json<ConvertAnswer>), AppError> {
    let InCoop { auth, id, .. } = c;
    own_account(&auth, req.from.as_deref())?;
    let to = req.to.as_deref().map(parse_did).transpose()?;
    blocking(move || {
        let convert = Convert {
            to,
            amount: req.amount,
            from_unit: req.from_unit,
            to_unit: req.to_unit,
            memo: req.memo,
        };
        let (entry, status) = gw.engine().convert(&id, &auth.signer(), &convert)?;
        Metrics::add(&gw.metrics().settlements);
        let answer = ConvertAnswer {
            entry_id: entry,
            status: StatusView::of(&status)?,
            from: auth.did,
            to: convert.to.unwrap_or(auth.did),
            amount: convert.amount,
            from_unit: convert.from_unit,
            to_unit: convert.to_unit,
            memo: convert.memo,
        };
        Ok((StatusCode::CREATED, Json(answer)))
    })
    .await
}

/// Whose history.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// A DID or `treasury` (default: yours).
    #[param(value_type = Option<Account>)]
    account: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/ledger/{coop}/history",
    tag = "ledger",
    security(("bearer" = ["ledger:read"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), HistoryQuery, PageQuery),
    responses((status = 200, description = "A page of entries touching the account, in fold order (the cursor is an entry id)", body = Page<EntryView>)),
)]
async fn history(
    State(gw): State<Gateway>,
    c: InCoop<LedgerRead>,
    Query(q): Query<HistoryQuery>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<EntryView>>, AppError> {
    let account = match q.account.as_deref() {
        None => Account::Member(c.auth.did),
        Some("treasury") => Account::Treasury,
        Some(did) => Account::Member(parse_did(did)?),
    };
    let limit = page.limit()?;
    let cursor = page
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<EntryId>()
                .map_err(|_| AppError::bad_request(format!("{c:?} is not a cursor (an entry id)")))
        })
        .transpose()?;
    blocking(move || {
        let page = gw.engine().history(&c.id, account, cursor, limit)?;
        Ok(Json(Page {
            items: EntryView::all(page.items)?,
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        }))
    })
    .await
}

/// `decision_hash`: the decision receipt's hash, 64 hex digits.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DecisionQuery {
    #[param(pattern = "^[0-9a-f]{64}$")]
    decision_hash: String,
}

pub(crate) fn parse_hash(text: &str) -> Result<[u8; 32], AppError> {
    hex::decode(text)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| {
            AppError::bad_request(format!("{text:?} is not a decision hash (64 hex digits)"))
        })
}

#[utoipa::path(
    get,
    path = "/v1/ledger/{coop}/entries/by-decision",
    tag = "ledger",
    security(("bearer" = ["ledger:read"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id"), DecisionQuery, PageQuery),
    responses((status = 200, description = "Entries citing the decision receipt, in fold order (none for text proposals)", body = Page<EntryView>)),
)]
async fn by_decision(
    State(gw): State<Gateway>,
    c: InCoop<LedgerRead>,
    Query(q): Query<DecisionQuery>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<EntryView>>, AppError> {
    let hash = parse_hash(&q.decision_hash)?;
    blocking(move || {
        let items = gw.engine().entries_by_decision(&c.id, &hash)?;
        Ok(Json(
            page.page(EntryView::all(items)?, |e| e.id.to_string())?,
        ))
    })
    .await
}
