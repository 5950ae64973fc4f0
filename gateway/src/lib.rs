//! The ICN gateway: the HTTP + WebSocket API that apps use.
//!
//! For now it serves `GET /v1/health`; every other path answers 404 with the
//! API's JSON error shape `{error, message}`. The routes of the API directory
//! arrive with the gateway issue.
//!
//! ```no_run
//! # async fn run(engine: icn_engine::Engine) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! icn_gateway::serve(listener, engine, std::future::pending()).await
//! # }
//! ```

#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::future::Future;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use icn_engine::Engine;

/// The API's error body: `{"error": "Not Found", "message": "…"}`.
#[derive(Debug, serde::Serialize)]
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
}

impl AppError {
    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

#[derive(Clone)]
struct AppState {
    // Held for the routes to come; the health route does not need it.
    _engine: Engine,
}

/// The gateway's routes over `engine`.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .fallback(|| async { AppError::not_found("no such route; see /v1/health") })
        .with_state(AppState { _engine: engine })
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Serves the gateway on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(path: &str) -> (StatusCode, serde_json::Value) {
        let node = icn_engine::test_utils::TestNode::new();
        let response = router(node.engine.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn health_is_ok() {
        let (status, body) = call("/v1/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"status": "ok"}));
    }

    #[tokio::test]
    async fn unknown_routes_answer_json_404() {
        let (status, body) = call("/v1/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "Not Found");
    }
}
