//! The ICN gateway: the HTTP + WebSocket API that apps use
//! (`docs/api.md`; the OpenAPI document is served at `/v1/openapi.json`).
//!
//! A client authenticates with its DID: the challenge it signs is a
//! delegation to this node ([`auth`]), and every write the gateway makes for
//! it is signed by the node and carries that delegation, so that every peer
//! can check it. Nothing the gateway answers lives only in memory: the
//! delegations behind tokens are stored, and everything else is read from
//! the engine.
//!
//! ```no_run
//! # async fn run(engine: icn_engine::Engine, node: icn_engine::Keypair) -> std::io::Result<()> {
//! let gateway = icn_gateway::Gateway::new(engine, icn_gateway::Config::new(node, b"secret".to_vec()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! icn_gateway::serve(listener, gateway, std::future::pending()).await
//! # }
//! ```

#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use icn_engine::{Engine, Keypair, Signer};
use icn_schemas::{Did, DocId, Scope, SignedDelegation};

pub mod auth;
mod coops;
mod docs;
pub mod error;
mod events;
mod gov;
mod index;
mod ledger;
pub mod metrics;
mod registry;
mod ws;

pub use error::{AppError, ErrorBody};
pub use metrics::Metrics;

use auth::{Authority, RateLimiter};
use index::Index;

/// How the gateway runs.
#[derive(Clone)]
pub struct Config {
    /// The node's key: it signs every write made for a client.
    pub node: Keypair,
    /// The HMAC key of tokens and challenges.
    pub jwt_secret: Vec<u8>,
    /// How long a token (and the delegation behind it) lasts.
    pub token_seconds: u64,
    /// Requests a DID may make at once.
    pub rate_burst: u32,
    /// Requests per second a DID may make after its burst.
    pub rate_per_second: u32,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Origins browsers may call from (`*` for any); none when empty.
    pub cors_origins: Vec<String>,
}

impl Config {
    /// The defaults: tokens for 24 hours, 100 requests at once then 10 per
    /// second per DID, bodies up to 1 MiB, no cross-origin calls.
    pub fn new(node: Keypair, jwt_secret: Vec<u8>) -> Self {
        Config {
            node,
            jwt_secret,
            token_seconds: 24 * 3600,
            rate_burst: 100,
            rate_per_second: 10,
            body_limit: 1024 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

/// The gateway over one engine. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    config: Config,
    authority: Authority,
    limiter: RateLimiter,
    index: Index,
    metrics: Arc<Metrics>,
    /// Delegations read from the store, by hash.
    delegations: Mutex<HashMap<[u8; 32], SignedDelegation>>,
    /// The co-ops' event logs.
    events: events::EventsHandle,
}

impl Gateway {
    /// A gateway serving `engine`.
    pub fn new(engine: Engine, config: Config) -> Gateway {
        let metrics = Arc::new(Metrics::default());
        metrics.follow(&engine);
        Gateway {
            inner: Arc::new(Shared {
                authority: Authority::new(
                    config.jwt_secret.clone(),
                    config.node.did(),
                    config.token_seconds,
                ),
                limiter: RateLimiter::new(config.rate_burst, config.rate_per_second),
                index: Index::new(engine.clone()),
                events: events::Events::start(engine.clone()),
                engine,
                metrics,
                config,
                delegations: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The gateway's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn index(&self) -> &Index {
        &self.inner.index
    }

    /// Every route, with the body limit and CORS.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/v1/health", get(health))
            .route("/v1/auth/challenge", post(auth_challenge))
            .route("/v1/auth/verify", post(auth_verify))
            .route("/v1/docs/{doc_id}", get(docs::get_doc))
            .route("/v1/ws/{coop_id}", get(ws::connect))
            .merge(coops::routes())
            .merge(gov::routes())
            .merge(ledger::routes())
            .merge(registry::routes())
            .fallback(|| async {
                AppError::not_found("no such route; the routes are listed at /v1/openapi.json")
            })
            .method_not_allowed_fallback(|| async {
                AppError::new(
                    axum::http::StatusCode::METHOD_NOT_ALLOWED,
                    "this route does not take that method; see /v1/openapi.json",
                )
            })
            .layer(axum::extract::DefaultBodyLimit::max(
                self.inner.config.body_limit,
            ))
            .with_state(self.clone());
        match cors(&self.inner.config.cors_origins) {
            Some(layer) => api.layer(layer),
            None => api,
        }
    }
}

fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]),
    )
}

/// Serves the gateway on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, gateway.router())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// A JSON body whose errors answer in the API's shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub(crate) struct Body<T>(pub(crate) T);

/// A JSON body that may be empty (then the defaults).
pub(crate) fn optional_json<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the body is not the JSON expected: {e}")))
}

/// Runs blocking engine work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(AppError::internal)?
}

/// The caller, from its bearer token: checked, rate-limited, with the
/// delegation its writes carry.
pub(crate) struct Auth {
    pub(crate) did: Did,
    scopes: Vec<Scope>,
    delegation: SignedDelegation,
    node: Keypair,
}

impl Auth {
    /// 403 unless the token grants `scope`.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), AppError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AppError::forbidden(format!(
                "Missing required scope: {scope}"
            )))
        }
    }

    /// Who signs writes for the caller: this node, under its delegation.
    pub(crate) fn signer(&self) -> Signer {
        Signer::Delegated {
            node: self.node.clone(),
            delegation: self.delegation.clone(),
        }
    }
}

impl FromRequestParts<Gateway> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, AppError> {
        let shared = &gw.inner;
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(bearer) = bearer else {
            shared.metrics.auth_failed();
            return Err(AppError::unauthorized(
                "missing bearer token: send Authorization: Bearer <token> (POST /v1/auth/challenge, then /v1/auth/verify)",
            ));
        };
        let token = match shared.authority.check_token(bearer, auth::now_secs()) {
            Ok(t) => t,
            Err(e) => {
                shared.metrics.auth_failed();
                return Err(e);
            }
        };
        if let Err(wait) = shared.limiter.take(&token.did) {
            shared.metrics.rate_limited();
            return Err(AppError::too_many(wait));
        }
        let delegation = gw.delegation(&token.delegation)?.ok_or_else(|| {
            shared.metrics.auth_failed();
            AppError::unauthorized("the token's delegation is unknown here; authenticate again")
        })?;
        let scopes = token
            .claims
            .scope
            .split(' ')
            .filter_map(|s| s.parse().ok())
            .collect();
        Ok(Auth {
            did: token.did,
            scopes,
            delegation,
            node: shared.config.node.clone(),
        })
    }
}

impl Gateway {
    fn delegation(&self, hash: &[u8; 32]) -> Result<Option<SignedDelegation>, AppError> {
        let mut cache = self
            .inner
            .delegations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(d) = cache.get(hash) {
            return Ok(Some(d.clone()));
        }
        let Some(bytes) = self
            .inner
            .engine
            .store()
            .gateway_record(&auth::delegation_key(hash))?
        else {
            return Ok(None);
        };
        let d: SignedDelegation = postcard_decode(&bytes)?;
        cache.insert(*hash, d.clone());
        Ok(Some(d))
    }
}

fn postcard_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    postcard::from_bytes(bytes).map_err(AppError::internal)
}

#[derive(serde::Deserialize)]
struct ChallengeRequest {
    did: String,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn auth_challenge(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    Body(req): Body<ChallengeRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let did = parse_did(&req.did)?;
    let scopes = auth::parse_scopes(&req.scopes)?;
    let now = auth::now_secs();
    let challenge = gw.inner.authority.challenge(did, scopes, now)?;
    Ok(Json(serde_json::json!({
        "challenge": challenge,
        "expires_at": auth::rfc3339(now + auth::CHALLENGE_SECONDS),
    })))
}

#[derive(serde::Deserialize)]
struct VerifyRequest {
    did: String,
    challenge: String,
    signature: String,
}

async fn auth_verify(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    Body(req): Body<VerifyRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let did = parse_did(&req.did)?;
    let now = auth::now_secs();
    let verified = gw
        .inner
        .authority
        .verify_challenge(&did, &req.challenge, &req.signature, now);
    let (delegation, signed) = match verified {
        Ok(v) => v,
        Err(e) => {
            gw.inner.metrics.auth_failed();
            return Err(e);
        }
    };
    let hash = auth::delegation_hash(&signed);
    let record = postcard::to_stdvec(&signed).map_err(AppError::internal)?;
    let engine = gw.inner.engine.clone();
    let fresh = blocking(move || {
        let store = engine.store();
        let fresh = store.put_gateway_record_once(&auth::delegation_key(&hash), &record)?;
        store.make_durable()?;
        Ok(fresh)
    })
    .await?;
    if !fresh {
        gw.inner.metrics.auth_failed();
        return Err(AppError::unauthorized(
            "this challenge was already used; request a new one",
        ));
    }
    let token = gw.inner.authority.token(&delegation, &hash, now);
    gw.inner.metrics.token_issued();
    tracing::info!(did = %did, "issued a token");
    Ok(Json(serde_json::json!({
        "token": token,
        "expires_at": auth::rfc3339(delegation.expires),
        "did": did.to_string(),
        "scopes": delegation.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    })))
}

/// A DID from a request, or 400.
pub(crate) fn parse_did(text: &str) -> Result<Did, AppError> {
    Did::parse_valid(text).map_err(|e| AppError::bad_request(format!("{text:?} is not a DID: {e}")))
}

/// 403 unless `did` may read `doc` (the rule sync applies to peers).
pub(crate) fn may_read(
    engine: &Engine,
    doc: &DocId,
    did: &Did,
    what: &str,
) -> Result<(), AppError> {
    if engine.may_receive(doc, did) {
        Ok(())
    } else {
        Err(AppError::forbidden(format!(
            "{did} is not a member of {what}"
        )))
    }
}
