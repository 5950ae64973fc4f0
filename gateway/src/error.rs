//! The API's errors: JSON `{error, message}` with the API directory's
//! statuses, and how the engine's errors map onto them.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use icn_engine::ledger::{EntryRefusal, LedgerError};
use icn_engine::{Rule, StorageError, WriteError};
use icn_schemas::SchemaError;

/// The API's error body: `{"error": "Forbidden", "message": "…"}`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The status's reason phrase.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// An error answered as JSON with its status.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl AppError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AppError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no token, or a token that does not hold.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: authenticated, not permitted.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: no such resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the resource exists already, or the name is ambiguous.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 422: well formed, refused by the rules (credit limit, lifecycle).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 429 with `Retry-After: seconds`, stating the limits this node
    /// enforces.
    pub fn too_many(limited: crate::auth::Limited) -> Self {
        let crate::auth::Limited {
            retry_after,
            burst,
            per_second,
        } = limited;
        AppError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limited: a burst of {burst} requests, then {per_second} per second; retry in {retry_after} s"
                ),
            )
        }
    }

    /// 500: this node failed; the message is logged, not sent.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the node failed to serve this request; see its log",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, bearer_challenge());
        }
        response
    }
}

/// What a 401 asks for: a bearer token from `POST /v1/auth/verify`.
fn bearer_challenge() -> HeaderValue {
    HeaderValue::from_static("Bearer realm=\"icn\"")
}

/// Answers every error as JSON `{error, message}`, whoever made it: the
/// rejections axum's extractors make on their own (a path that does not
/// decode, a query value out of range, a WebSocket route asked without an
/// upgrade) are plain text, and are rewritten here with the same status and
/// headers. A 401 always carries `WWW-Authenticate`.
pub(crate) async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut response = if json {
        response
    } else {
        let (mut parts, body) = response.into_parts();
        let text = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        let (json_parts, json_body) = AppError::new(status, message).into_response().into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        for (name, value) in &json_parts.headers {
            parts.headers.insert(name, value.clone());
        }
        Response::from_parts(parts, json_body)
    };
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .entry(header::WWW_AUTHENTICATE)
            .or_insert_with(bearer_challenge);
    }
    response
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            );
        }
        Self::bad_request(r.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<StorageError> for AppError {
    fn from(e: StorageError) -> Self {
        if !e.is_disk() {
            return Self::internal(e);
        }
        // The disk refused (full, read-only): the node says so, and a client
        // retries later or writes through another node.
        tracing::error!(error = %e, "the disk refused a write");
        let message = match e {
            StorageError::Unwritable { .. } => e.to_string(),
            e => format!(
                "this node's disk refused a write ({e}); it takes no writes until the disk takes them again"
            ),
        };
        AppError {
            retry_after: Some(DISK_RETRY_SECONDS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

/// `Retry-After` of a 503 for a disk that refuses writes: `icnd` checks the
/// disk every second and reopens its store once it takes writes.
const DISK_RETRY_SECONDS: u64 = 5;

impl From<SchemaError> for AppError {
    fn from(e: SchemaError) -> Self {
        match e {
            SchemaError::Missing(_) => Self::not_found(e.to_string()),
            SchemaError::Exists(_) => Self::conflict(e.to_string()),
            SchemaError::InvalidValue { .. } => Self::unprocessable(e.to_string()),
            _ => Self::bad_request(e.to_string()),
        }
    }
}

impl From<WriteError> for AppError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::UnknownDoc(id) => Self::not_found(format!("unknown document {id}")),
            WriteError::Schema(s) => s.into(),
            WriteError::Refused(r) => match r.rule {
                Rule::Denied(_)
                | Rule::BadDelegation(_)
                | Rule::DelegationNotForActor { .. }
                | Rule::DelegationNotLive { .. }
                | Rule::InvalidGenesis(_) => Self::forbidden(r.rule.to_string()),
                rule => Self::unprocessable(rule.to_string()),
            },
            WriteError::Storage(s) => s.into(),
            e => Self::internal(e),
        }
    }
}

impl From<icn_engine::RevokeError> for AppError {
    fn from(e: icn_engine::RevokeError) -> Self {
        match e {
            icn_engine::RevokeError::Write(w) => w.into(),
            icn_engine::RevokeError::Seal(l) => {
                let AppError {
                    status, message, ..
                } = l.into();
                AppError::new(
                    status,
                    format!("the device was revoked, but its seal was refused: {message}"),
                )
            }
        }
    }
}

impl From<LedgerError> for AppError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::UnknownCoop(id) => Self::not_found(format!("unknown co-op {id}")),
            // The request names something that is not there to page from.
            e @ (LedgerError::UnknownCursor(_) | LedgerError::UnknownHead(_)) => {
                Self::bad_request(e.to_string())
            }
            e @ (LedgerError::NotPositive
            | LedgerError::SelfSettlement
            | LedgerError::NoRate { .. }
            | LedgerError::InexactConversion { .. }
            | LedgerError::AmountOverflow
            | LedgerError::NotClosed(_)
            | LedgerError::NotExecutable(_)) => Self::unprocessable(e.to_string()),
            LedgerError::Document(e) => Self::unprocessable(e.to_string()),
            LedgerError::Refused(
                r @ (EntryRefusal::Denied(_)
                | EntryRefusal::NotTheirAccount { .. }
                | EntryRefusal::BadDelegation(_)
                | EntryRefusal::DelegationMismatch
                | EntryRefusal::DelegationNotLive),
            ) => Self::forbidden(r.to_string()),
            LedgerError::Refused(r) => Self::unprocessable(r.to_string()),
            LedgerError::Conflict(c) => Self::unprocessable(c.to_string()),
            LedgerError::Storage(s) => s.into(),
            e => Self::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk that refuses writes is the node's condition, not a bug: a 503
    /// that says so and when to try again, not a 500 that says "see the log".
    #[test]
    fn a_disk_that_refuses_writes_is_a_503_that_says_so() {
        let full = std::io::Error::from_raw_os_error(28);
        for e in [
            StorageError::Unwritable {
                reason: full.to_string(),
            },
            StorageError::Io {
                path: "store/db".into(),
                source: std::io::Error::from_raw_os_error(28),
            },
        ] {
            let answer = AppError::from(e);
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(answer.message().contains("disk"), "{}", answer.message());
            assert!(
                answer.message().contains("No space left on device"),
                "{}",
                answer.message()
            );
            let response = answer.into_response();
            assert_eq!(
                response.headers().get(header::RETRY_AFTER),
                Some(&HeaderValue::from(DISK_RETRY_SECONDS))
            );
        }
        let corrupt = AppError::from(StorageError::Corrupt {
            tree: "ledger",
            reason: "bad".into(),
        });
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
