//! `Idempotency-Key`: a retried write answers what the first one did and
//! writes nothing twice. A phone that lost the answer to a settlement (the
//! connection dropped) retries with the same key and gets the first entry
//! back, instead of paying twice.
//!
//! The answer is kept per member (the token's DID, so a retry after logging
//! in again is still recognised) and key, with a fingerprint of the request
//! (method, path and query, body): the same key with another request is
//! refused (422). Only answers that wrote something (2xx) are kept: a
//! refused request writes nothing, so its retry is refused again, and a
//! caller who may not write cannot fill the store. Answers are kept durably
//! for [`KEPT_SECONDS`], pruned when the gateway starts and every
//! [`PRUNE_EVERY`] answers after. Requests with the same key run one at a
//! time.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::now_secs;
use crate::error::AppError;
use crate::{Gateway, blocking};

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// The header a replayed answer carries.
pub const REPLAYED: &str = "idempotent-replayed";

/// How long an answer is kept: a day.
pub const KEPT_SECONDS: u64 = 24 * 3600;

/// How many answers are kept between two prunings.
pub const PRUNE_EVERY: u64 = 4096;

/// Locks striped by slot, so requests with the same key run one at a time;
/// and the answers kept since the last pruning.
pub(crate) struct Locks(Vec<tokio::sync::Mutex<()>>, std::sync::atomic::AtomicU64);

impl Default for Locks {
    fn default() -> Self {
        Locks(
            (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            std::sync::atomic::AtomicU64::new(0),
        )
    }
}

/// What is kept of an answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    fingerprint: [u8; 32],
    status: u16,
    body: Vec<u8>,
}

fn valid(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The middleware: passes requests without the header (and reads) through.
pub(crate) async fn layer(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        // Reads, and methods no route takes (which answer 405).
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k) if valid(k) => k.to_owned(),
        _ => {
            return AppError::bad_request(
                "Idempotency-Key: 1 to 255 visible ASCII characters (a UUID is a good one)",
            )
            .into_response();
        }
    };
    // Who asks: an invalid token is the route's to refuse.
    let who = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| gw.inner.authority.check_token(t.trim(), now_secs()).ok())
        .map(|t| t.did);
    let Some(who) = who else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, gw.inner.config.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
            .into_response();
        }
    };
    let mut fingerprint = blake3::Hasher::new();
    fingerprint.update(parts.method.as_str().as_bytes());
    fingerprint.update(b"\n");
    fingerprint.update(
        parts
            .uri
            .path_and_query()
            .map_or("", |p| p.as_str())
            .as_bytes(),
    );
    fingerprint.update(b"\n");
    fingerprint.update(&bytes);
    let fingerprint: [u8; 32] = fingerprint.finalize().into();
    let mut slot = blake3::Hasher::new();
    slot.update(b"icn-idempotency/v1\n");
    slot.update(who.to_string().as_bytes());
    slot.update(b"\n");
    slot.update(key.as_bytes());
    let slot: [u8; 32] = slot.finalize().into();

    let locks = &gw.inner.idempotency.0;
    let _turn = locks[usize::from(slot[0]) % locks.len()].lock().await;
    let engine = gw.engine().clone();
    let since = now_secs().saturating_sub(KEPT_SECONDS);
    let held = blocking(move || Ok(engine.store().idempotent(&slot, since)?)).await;
    match held {
        Err(e) => return e.into_response(),
        Ok(Some(record)) => return replay(&record, &fingerprint, &key),
        Ok(None) => {}
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return AppError::internal("reading the answer").into_response();
    };
    let kept = Kept {
        fingerprint,
        status: parts.status.as_u16(),
        body: body.to_vec(),
    };
    let record = match postcard::to_stdvec(&kept) {
        Ok(r) => r,
        Err(e) => return AppError::internal(e).into_response(),
    };
    let engine = gw.engine().clone();
    let stored =
        blocking(move || Ok(engine.store().put_idempotent(&slot, now_secs(), &record)?)).await;
    let kept = gw
        .inner
        .idempotency
        .1
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if kept % PRUNE_EVERY == PRUNE_EVERY - 1 {
        let engine = gw.engine().clone();
        let before = now_secs().saturating_sub(KEPT_SECONDS);
        if let Err(e) = blocking(move || Ok(engine.store().prune_idempotent(before)?)).await {
            tracing::warn!(error = %e.message(), "pruning old idempotent answers");
        }
    }
    if let Err(e) = stored {
        // The write happened; say so rather than invite a retry that
        // would repeat it.
        tracing::warn!(error = %e.message(), "keeping an idempotent answer failed");
    }
    parts
        .headers
        .insert(REPLAYED, HeaderValue::from_static("false"));
    Response::from_parts(parts, Body::from(body))
}

/// The kept answer, or 422 when the key was used for another request.
fn replay(record: &[u8], fingerprint: &[u8; 32], key: &str) -> Response {
    let Ok(kept) = postcard::from_bytes::<Kept>(record) else {
        return AppError::internal("a kept answer does not decode").into_response();
    };
    if kept.fingerprint != *fingerprint {
        return AppError::unprocessable(format!(
            "Idempotency-Key {key:?} was used for a different request; use a new key for a new request"
        ))
        .into_response();
    }
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut response = (status, kept.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
