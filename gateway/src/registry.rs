//! The decision registry: closed proposals of each co-op's domains (its
//! treasury domain, whose decisions execute, and the advisory domains
//! attached to it), with their receipts, and the trace receipt → execution → ledger entries.

use axum::Json;
use axum::extract::{Path, Query, State};
use icn_engine::RegistryEntry;
use icn_schemas::domain::Payload;
use icn_schemas::tally::{DecisionReceipt, Outcome};
use icn_schemas::{DocId, DocKind, Scope};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::ledger::{coop_for, parse_hash};
use crate::views::{EntryView, Page, PageQuery};
use crate::{Auth, Gateway, blocking};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(decision))
        .routes(routes!(trace))
}

/// `coop_id`: only this co-op (default: every co-op you belong to).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CoopQuery {
    coop_id: Option<String>,
}

/// A decision: a closed proposal of one of a co-op's domains, with its receipt.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct DecisionView {
    /// The receipt's hash, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    decision_receipt_id: String,
    /// The co-op's id.
    coop_id: Option<String>,
    coop_doc_id: DocId,
    domain_doc_id: DocId,
    proposal_id: String,
    outcome: Outcome,
    /// Unix seconds.
    closed_at: i64,
    /// What the proposal decided.
    payload: Option<Payload>,
    /// `true` for a domain other than the co-op's treasury domain: its
    /// decisions are advice and do not execute.
    advisory: bool,
    receipt: DecisionReceipt,
}

/// Where a decision stands in the ledger.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TraceView {
    decision: DecisionView,
    /// Whether an entry executing it counts.
    executed: bool,
    /// Why not, when it does not.
    reason: Option<String>,
    /// Every entry citing the receipt, in fold order, with its status.
    entries: Vec<EntryView>,
}

fn view(gw: &Gateway, coop: &DocId, d: &RegistryEntry) -> DecisionView {
    DecisionView {
        decision_receipt_id: d.hash.clone(),
        coop_id: gw.index().name(coop),
        coop_doc_id: *coop,
        domain_doc_id: d.receipt.domain,
        proposal_id: d.receipt.proposal.clone(),
        outcome: d.receipt.outcome,
        closed_at: d.receipt.closed_at,
        payload: d.payload.clone(),
        advisory: d.advisory,
        receipt: d.receipt.clone(),
    }
}

/// The co-ops to search: the one named, or every one `auth` may read.
fn coops(gw: &Gateway, auth: &Auth, key: Option<&str>) -> Result<Vec<DocId>, AppError> {
    Ok(match key {
        Some(key) => vec![coop_for(gw, auth, key)?],
        None => gw
            .index()
            .all(DocKind::Coop)
            .into_iter()
            .filter(|id| gw.engine().member_may_read(id, &auth.did))
            .collect(),
    })
}

#[utoipa::path(
    get,
    path = "/v1/registry/decisions",
    operation_id = "list_decisions",
    tag = "registry",
    security(("bearer" = ["gov:read"])),
    params(CoopQuery, PageQuery),
    responses((status = 200, description = "Decisions (closed proposals of every domain of the co-op; `advisory: true` for a domain other than the treasury domain, whose decisions do not execute) with their receipts, newest first in each co-op; each has decision_receipt_id", body = Page<DecisionView>)),
)]
async fn list(
    State(gw): State<Gateway>,
    auth: Auth,
    Query(q): Query<CoopQuery>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<DecisionView>>, AppError> {
    auth.require(Scope::GovRead)?;
    blocking(move || {
        let mut out = Vec::new();
        for coop in coops(&gw, &auth, q.coop_id.as_deref())? {
            for d in gw.engine().registry(&coop)? {
                out.push(view(&gw, &coop, &d));
            }
        }
        Ok(Json(page.page(out, decision_key)?))
    })
    .await
}

/// A decision's place in the list: by co-op, then newest close first.
fn decision_key(d: &DecisionView) -> String {
    let age = i64::MAX.saturating_sub(d.closed_at.max(0));
    format!("{}/{age:020}/{}", d.coop_doc_id, d.decision_receipt_id)
}

/// The co-op whose registry holds decision `hash`.
fn find(
    gw: &Gateway,
    auth: &Auth,
    key: Option<&str>,
    hash: &str,
) -> Result<(DocId, RegistryEntry), AppError> {
    let wanted = hex::encode(parse_hash(hash)?);
    for coop in coops(gw, auth, key)? {
        if let Some(d) = gw
            .engine()
            .registry(&coop)?
            .into_iter()
            .find(|d| d.hash == wanted)
        {
            return Ok((coop, d));
        }
    }
    Err(AppError::not_found(format!(
        "no decision {wanted} in the co-ops you belong to"
    )))
}

#[utoipa::path(
    get,
    path = "/v1/registry/decisions/{hash}",
    tag = "registry",
    security(("bearer" = ["gov:read"])),
    params(("hash" = String, Path, pattern = "^[0-9a-f]{64}$", description = "The decision receipt's hash, 64 hex digits"), CoopQuery),
    responses((status = 200, description = "The decision and its receipt", body = DecisionView), (status = 404, description = "Not in the co-ops you belong to", body = crate::ErrorBody)),
)]
async fn decision(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(hash): Path<String>,
    Query(q): Query<CoopQuery>,
) -> Result<Json<DecisionView>, AppError> {
    auth.require(Scope::GovRead)?;
    blocking(move || {
        let (coop, d) = find(&gw, &auth, q.coop_id.as_deref(), &hash)?;
        Ok(Json(view(&gw, &coop, &d)))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/registry/decisions/{hash}/trace",
    tag = "registry",
    security(("bearer" = ["gov:read"])),
    params(("hash" = String, Path, pattern = "^[0-9a-f]{64}$", description = "The decision receipt's hash, 64 hex digits"), CoopQuery),
    responses((status = 200, description = "DecisionReceipt → execution → ledger entries", body = TraceView), (status = 404, description = "Not in the co-ops you belong to", body = crate::ErrorBody)),
)]
async fn trace(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(hash): Path<String>,
    Query(q): Query<CoopQuery>,
) -> Result<Json<TraceView>, AppError> {
    auth.require(Scope::GovRead)?;
    blocking(move || {
        // `Engine::trace` finds the decision in the registry itself.
        let wanted = parse_hash(&hash)?;
        let mut found = None;
        for coop in coops(&gw, &auth, q.coop_id.as_deref())? {
            if let Some(t) = gw.engine().trace(&coop, &wanted)? {
                found = Some((coop, t));
                break;
            }
        }
        let (coop, trace) = found.ok_or_else(|| {
            AppError::not_found(format!(
                "no decision {} in the co-ops you belong to",
                hex::encode(wanted)
            ))
        })?;
        Ok(Json(TraceView {
            decision: view(&gw, &coop, &trace.decision),
            executed: trace.executed,
            reason: trace.reason,
            entries: EntryView::all(trace.entries)?,
        }))
    })
    .await
}
