//! Entries a client signed itself: a wallet that holds its own key (a
//! member's DID key, or a device key spending its allowance) fetches the
//! heads to cite, builds the canonical entry of `docs/ledger.md`, signs it,
//! and submits the bytes. The node judges them exactly as it judges a
//! peer's entries and, as for its own writes, refuses one that would be
//! conflicted where it lands: nothing refused is stored. An entry's id is
//! its content, so a retry answers the same entry and stores nothing twice.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use icn_engine::ledger::{EntryRefusal, Ingest};
use icn_schemas::ledger::SignedEntry;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::scoped::{InCoop, LedgerRead, LedgerWrite};
use crate::views::{HeadsAnswer, StatusView, SubmitAnswer};
use crate::{Body, Gateway, blocking};

pub(crate) fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(routes!(heads))
        .routes(routes!(submit))
}

#[utoipa::path(
    get,
    path = "/v1/ledger/{coop}/heads",
    tag = "ledger",
    security(("bearer" = ["ledger:read"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    responses((status = 200, description = "What a new entry cites: `coop_heads` (the co-op document's heads) and `ledger_heads` (the ledger's, its parents), each a sorted list of 64-hex hashes", body = HeadsAnswer)),
)]
async fn heads(
    State(gw): State<Gateway>,
    c: InCoop<LedgerRead>,
) -> Result<Json<HeadsAnswer>, AppError> {
    blocking(move || {
        let engine = gw.engine();
        let mut coop_heads: Vec<String> = engine
            .heads(&c.id)
            .unwrap_or_default()
            .iter()
            .map(|h| hex::encode(h.0))
            .collect();
        coop_heads.sort();
        let mut ledger_heads: Vec<String> = engine
            .ledger_heads(&c.id)?
            .iter()
            .map(ToString::to_string)
            .collect();
        ledger_heads.sort();
        Ok(Json(HeadsAnswer {
            coop_doc_id: c.id.to_string(),
            coop_heads,
            ledger_heads,
        }))
    })
    .await
}

/// A signed entry: its canonical encoding (`docs/ledger.md`), hex.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    #[schema(pattern = "^([0-9a-fA-F]{2})+$")]
    bytes: String,
}

#[utoipa::path(
    post,
    path = "/v1/ledger/{coop}/entries",
    tag = "ledger",
    security(("bearer" = ["ledger:write"])),
    params(("coop" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    request_body = SubmitRequest,
    responses(
        (status = 201, description = "Stored and counted: `{entry_id, status}`", body = SubmitAnswer),
        (status = 200, description = "Held already (a retry): the same answer", body = SubmitAnswer),
        (status = 202, description = "Stored as waiting: it cites parents or co-op heads this node does not hold yet; `status` is pending", body = SubmitAnswer),
        (status = 400, description = "Not hex", body = crate::ErrorBody),
        (status = 403, description = "The entry's author is not you", body = crate::ErrorBody),
        (status = 422, description = "Refused by the rules (bad signature, encoding, unbalanced, …) or conflicted where it would land (over the credit limit, frozen, …); nothing stored", body = crate::ErrorBody),
    ),
)]
async fn submit(
    State(gw): State<Gateway>,
    c: InCoop<LedgerWrite>,
    Body(req): Body<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmitAnswer>), AppError> {
    let bytes = hex::decode(req.bytes.trim())
        .map_err(|e| AppError::bad_request(format!("bytes: not hex ({e})")))?;
    blocking(move || {
        // Your own entries only: the gateway is not an open door into the
        // ledger for entries its callers did not write.
        let (signed, _) = SignedEntry::decode(&bytes)
            .map_err(|e| AppError::unprocessable(EntryRefusal::Decode(e).to_string()))?;
        if signed.entry.author != c.auth.did {
            return Err(AppError::forbidden(format!(
                "the entry is by {}; submit your own entries ({})",
                signed.entry.author, c.auth.did
            )));
        }
        if signed.entry.coop != c.id {
            return Err(AppError::unprocessable(format!(
                "the entry is for co-op {}, not {}",
                signed.entry.coop, c.id
            )));
        }
        let engine = gw.engine();
        let (code, id) = match engine.submit_entry(&c.id, bytes)? {
            Ingest::Stored(id) => (StatusCode::CREATED, id),
            Ingest::Known(id) => (StatusCode::OK, id),
            Ingest::Pending(id) => (StatusCode::ACCEPTED, id),
        };
        let status = match engine.entry(&c.id, &id)? {
            Some((_, status)) => StatusView::of(&status)?,
            None => StatusView::pending(),
        };
        Ok((
            code,
            Json(SubmitAnswer {
                entry_id: id.to_string(),
                status,
            }),
        ))
    })
    .await
}
