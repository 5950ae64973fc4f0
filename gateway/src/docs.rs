//! The app developers' read API: a whole document, as JSON or as the
//! `Automerge::save()` bytes that stock Automerge libraries load.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use icn_schemas::{DocId, DocKind, Scope};

use crate::error::AppError;
use crate::{Auth, Gateway, blocking, may_read};

#[utoipa::path(
    get,
    path = "/v1/docs/{doc_id}",
    tag = "documents",
    security(("bearer" = ["coop:read"])),
    params(("doc_id" = icn_schemas::DocId, Path, description = "The document id (base58)")),
    responses((status = 200, description = "The document as JSON; with `Accept: application/octet-stream`, its `Automerge::save()` bytes, which stock Automerge libraries load. The ETag names its state and the representation (`Vary: Accept`).", content((serde_json::Value = "application/json"), (Vec<u8> = "application/octet-stream"))), (status = 304, description = "`If-None-Match` names the current ETag: nothing changed"), (status = 404, description = "Not held by this node", body = crate::ErrorBody)),
)]
/// `GET /v1/docs/{doc_id}`: JSON, or raw bytes for
/// `Accept: application/octet-stream`. The `ETag` is a hash of the
/// document's heads, per representation; `If-None-Match` with it answers
/// 304.
pub(crate) async fn get_doc(
    State(gw): State<Gateway>,
    auth: Auth,
    Path(doc_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id: DocId = doc_id
        .parse()
        .map_err(|_| AppError::bad_request(format!("{doc_id:?} is not a document id (base58)")))?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let raw = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/octet-stream"));
    blocking(move || {
        let engine = gw.engine();
        let kind = engine
            .kind(&id)
            .ok_or_else(|| AppError::not_found(format!("no document {id} on this node")))?;
        auth.require(match kind {
            DocKind::Coop => Scope::CoopRead,
            DocKind::Domain => Scope::GovRead,
        })?;
        may_read(engine, &id, &auth.did, &format!("document {id}"))?;
        let mut heads: Vec<String> = engine
            .heads(&id)
            .unwrap_or_default()
            .iter()
            .map(|h| h.to_string())
            .collect();
        heads.sort();
        // One tag per state and representation: the JSON and the bytes of
        // one state are different entities to a cache.
        let digest = blake3::hash(heads.join(",").as_bytes()).to_hex();
        let tag = format!(
            "\"{}-{}\"",
            if raw { "automerge" } else { "json" },
            &digest[..32]
        );
        let etag = HeaderValue::from_str(&tag).map_err(AppError::internal)?;
        let vary = HeaderValue::from_static("Accept");
        if if_none_match.as_deref().is_some_and(|m| {
            m.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag.as_str()))
        }) {
            return Ok((
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, etag), (header::VARY, vary)],
            )
                .into_response());
        }
        let mut response = if raw {
            let bytes = engine
                .save(&id)
                .ok_or_else(|| AppError::not_found(format!("no document {id}")))?;
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )],
                bytes,
            )
                .into_response()
        } else {
            let json = engine
                .to_json(&id)
                .ok_or_else(|| AppError::not_found(format!("no document {id}")))?;
            axum::Json(json).into_response()
        };
        response.headers_mut().insert(header::ETAG, etag);
        response.headers_mut().insert(header::VARY, vary);
        Ok(response)
    })
    .await
}
