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
use axum::{Json, Router};
use icn_engine::{Engine, Keypair, Signer};
use icn_schemas::{Did, DocId, Scope, SignedDelegation};
use serde::Deserialize as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod auth;
mod coops;
mod devices;
mod docs;
mod entries;
pub mod error;
mod events;
mod gov;
pub mod idempotency;
mod index;
mod invites;
mod ledger;
mod memo;
pub mod metrics;
mod registry;
mod scoped;
#[cfg(test)]
mod testing;
mod views;
mod web;
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
    /// Challenges and verifies, per client IP: before a DID is proven.
    auth_limiter: RateLimiter<std::net::IpAddr>,
    index: Index,
    metrics: Arc<Metrics>,
    /// Delegations read from the store, by hash, each with whether it was
    /// logged out: what every request's token check reads, kept so that
    /// none of them reads sled (whose batches block its readers).
    delegations: Mutex<HashMap<[u8; 32], Known>>,
    /// The co-ops' event logs.
    events: events::EventsHandle,
    /// One idempotent request per key at a time.
    idempotency: idempotency::Locks,
    /// (member, key) → the member's status and whether the key is revoked,
    /// per co-op: what every token's check reads.
    standing: memo::Memo<(Did, Did), Standing>,
    /// Member → whether it may read the co-op.
    readers: memo::Memo<Did, bool>,
}

impl Gateway {
    /// A gateway serving `engine`.
    pub fn new(engine: Engine, config: Config) -> Gateway {
        let metrics = Arc::new(Metrics::default());
        metrics.follow(&engine);
        let gateway = Gateway {
            inner: Arc::new(Shared {
                authority: Authority::new(
                    config.jwt_secret.clone(),
                    config.node.did(),
                    config.token_seconds,
                ),
                limiter: RateLimiter::new(config.rate_burst, config.rate_per_second),
                auth_limiter: RateLimiter::new(config.rate_burst, config.rate_per_second),
                index: Index::new(engine.clone()),
                events: events::Events::start(engine.clone()),
                engine,
                metrics,
                config,
                delegations: Mutex::new(HashMap::new()),
                idempotency: idempotency::Locks::default(),
                standing: memo::Memo::default(),
                readers: memo::Memo::default(),
            }),
        };
        let before = auth::now_secs().saturating_sub(idempotency::KEPT_SECONDS);
        if let Err(e) = gateway.inner.engine.store().prune_idempotent(before) {
            tracing::warn!(error = %e, "pruning old idempotent answers");
        }
        gateway
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
        let (routes, _) = api();
        let api = routes
            // Only where a route takes the method: another method answers
            // 405 whatever Idempotency-Key it carries.
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                idempotency::layer,
            ))
            // Outside the idempotency layer: a replayed answer is counted.
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                metrics::layer,
            ))
            .merge(web::routes())
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
            .layer(axum::middleware::from_fn(error::json_errors))
            .with_state(self.clone());
        match cors(&self.inner.config.cors_origins) {
            Some(layer) => api.layer(layer),
            None => api,
        }
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ICN Gateway API",
        description = "The REST and WebSocket API of an ICN node: co-ops, governance, the mutual-credit ledger, the decision registry. Authenticate with your DID (POST /v1/auth/challenge, sign, POST /v1/auth/verify); send the token as `Authorization: Bearer`. Errors are `{error, message}`. Rate limit: 100 requests at once, then 10 per second, per DID (429 with Retry-After).",
        license(name = "MIT OR Apache-2.0")
    ),
    servers((url = "http://localhost:8080", description = "icnd on its defaults")),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every route, and the OpenAPI document they make.
fn api() -> (Router<Gateway>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    let (router, mut spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(openapi_yaml))
        .routes(routes!(auth_challenge))
        .routes(routes!(auth_verify))
        .routes(routes!(auth_logout))
        .routes(routes!(docs::get_doc))
        .routes(routes!(ws::connect))
        .merge(coops::routes())
        .merge(devices::routes())
        .merge(invites::routes())
        .merge(gov::routes())
        .merge(ledger::routes())
        .merge(entries::routes())
        .merge(registry::routes())
        .split_for_parts();
    add_common_errors(&mut spec);
    (router, spec)
}

/// Adds the errors every authenticated route can answer, and 400 where
/// there is a body, so the annotations name only each route's own.
fn add_common_errors(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    let idempotency = || {
        ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Retry-safe writes: a repeated request with the same key (per member, for a day) answers the first successful answer, with `Idempotent-Replayed: true`, and writes nothing again; a refused request leaves the key free; the same key with another request answers 422.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(255))
                    .pattern(Some("^[!-~]{1,255}$")),
            ))
            .build()
    };
    for (path, item) in spec.paths.paths.iter_mut() {
        let names_something = path.contains('{');
        for op in [&mut item.post, &mut item.put, &mut item.delete]
            .into_iter()
            .flatten()
        {
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                op.parameters
                    .get_or_insert_with(Vec::new)
                    .push(utoipa::openapi::RefOr::T(idempotency()));
                op.responses
                    .responses
                    .entry("422".to_owned())
                    .or_insert_with(|| {
                        error("The Idempotency-Key was used for another request").into()
                    });
            }
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, text: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error(text).into());
            };
            if op.request_body.is_some() {
                add("400", "Malformed JSON or invalid fields");
                add("413", "The body is larger than the limit");
            }
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if has_params || names_something {
                add("400", "A malformed path or query parameter");
            }
            let names_by_query = op.parameters.iter().flatten().any(|p| {
                matches!(p, utoipa::openapi::RefOr::T(p)
                        if p.parameter_in == ParameterIn::Query && p.name.ends_with("_id"))
            });
            if names_something || names_by_query {
                add("404", "Nothing with that id here");
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add("401", "Missing, invalid or expired token");
                add("403", "Missing scope, or not a member");
                add("429", "Rate limited; see Retry-After");
            }
        }
    }
}

/// The OpenAPI 3 document of every route (`GET /v1/openapi.json`, and
/// `docs/api/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
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
    serve_router(listener, gateway.router(), shutdown).await
}

/// [`serve`] for the gateway's router with routes of the caller's merged
/// in (icnd's `/health` and `/ready`, when they share the gateway's port).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document", body = serde_json::Value)),
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[utoipa::path(
    get,
    path = "/v1/openapi.yaml",
    tag = "health",
    responses((status = 200, description = "This document as YAML (what Swagger UI and Redoc mount; also `docs/api/openapi.yaml`)", content_type = "application/yaml", body = serde_json::Value)),
)]
async fn openapi_yaml() -> Result<impl axum::response::IntoResponse, AppError> {
    let yaml = openapi().to_yaml().map_err(AppError::internal)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/yaml"),
        )],
        yaml,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "health",
    responses((status = 200, description = "The gateway is up", body = Health)),
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The gateway's health.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`.
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// A challenge to sign.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ChallengeAnswer {
    /// Sign this exact string (a delegation statement) with the DID key, or
    /// the device's key when `device` was given.
    challenge: String,
    /// RFC 3339; 5 minutes from now.
    expires_at: String,
}

/// A token.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TokenAnswer {
    /// A JWT for `Authorization: Bearer`.
    token: String,
    /// RFC 3339.
    expires_at: String,
    did: Did,
    /// The device key it was signed with, when not the DID key.
    device: Option<Did>,
    /// What it may do: `coop:read`, `ledger:write`, …
    scopes: Vec<String>,
}

/// A logout.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct LogoutAnswer {
    logged_out: bool,
    /// The seals written, one per co-op, as entry ids.
    seals: Vec<String>,
}

/// A JSON body whose errors answer in the API's shape.
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state).await?;
        T::deserialize(integral(value))
            .map(Body)
            .map_err(|e| AppError::bad_request(format!("the body is not the JSON expected: {e}")))
    }
}

/// `value` with every number that is a whole number within 64 bits as an
/// integer: JSON does not tell `1` from `1.0`, and a client (or JSON
/// Schema) may write either; `1.5` stays a fraction and is refused where an
/// integer is wanted.
fn integral(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
                Value::from(f as i64)
            }
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(fields) => {
            Value::Object(fields.into_iter().map(|(k, v)| (k, integral(v))).collect())
        }
        other => other,
    }
}

/// A JSON body that may be empty or `null` (then the defaults).
pub(crate) fn optional_json<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the body is not JSON: {e}")))?;
    Option::<T>::deserialize(integral(value))
        .map(Option::unwrap_or_default)
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
    /// The stored delegation's hash (the token's `jti`).
    pub(crate) delegation_hash: [u8; 32],
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
    /// The member's key that signed the token's delegation: its DID key,
    /// or one of its devices.
    pub(crate) fn signing_key(&self) -> Result<Did, AppError> {
        self.delegation
            .statement
            .parse::<icn_schemas::Delegation>()
            .map(|d| d.signing_key())
            .map_err(AppError::internal)
    }

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
        let known = gw.delegation(&token.delegation)?.ok_or_else(|| {
            shared.metrics.auth_failed();
            AppError::unauthorized("the token's delegation is unknown here; authenticate again")
        })?;
        // Mostly answered from what is kept; reading a document (which may
        // wait for its lock) happens off the async threads.
        let alive = match gw.still_alive_kept(&known) {
            Some(alive) => alive,
            None => {
                let (gw, known) = (gw.clone(), known.clone());
                blocking(move || gw.still_alive(&known)).await
            }
        };
        if let Err(e) = alive {
            shared.metrics.auth_failed();
            return Err(e);
        }
        let delegation = known.signed;
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
            delegation_hash: token.delegation,
            node: shared.config.node.clone(),
        })
    }
}

impl Gateway {
    /// Whether `did` may read co-op `coop` (only a co-op: a domain's
    /// answer depends on its co-op's document too).
    pub(crate) fn may_read_coop(&self, coop: &DocId, did: &Did) -> bool {
        let engine = self.engine();
        self.inner
            .readers
            .get(engine, coop, *did, || engine.member_may_read(coop, did))
    }

    /// 401 unless the token's delegation still stands on this node: not
    /// logged out, its signing key not revoked in any co-op held here, and
    /// its member not removed from every co-op held here that lists it.
    pub(crate) fn still_alive(&self, known: &Known) -> Result<(), AppError> {
        let engine = self.engine();
        let coops = self.index().all(icn_schemas::DocKind::Coop);
        self.alive(known, coops, |id, key| {
            Some(self.inner.standing.get(engine, id, key, || {
                engine
                    .read(id, |r| {
                        let standing = icn_schemas::coop::Standing::read(r, &key.0)?;
                        let revoked = icn_schemas::coop::is_revoked_device(r, &key.0, &key.1);
                        Some((standing.status, revoked))
                    })
                    .flatten()
            }))
        })
        .unwrap_or_else(|| Err(AppError::internal("every standing was read")))
    }

    /// [`Gateway::still_alive`] from the answers kept since the co-op
    /// documents last moved; `None` when one of them has to be read.
    fn still_alive_kept(&self, known: &Known) -> Option<Result<(), AppError>> {
        let engine = self.engine();
        let coops = self.index().all_known(icn_schemas::DocKind::Coop)?;
        self.alive(known, coops, |id, key| {
            self.inner.standing.peek(engine, id, &key)
        })
    }

    /// Judges a delegation by its member's standing in each of `coops`
    /// (the node's co-ops), as `standing` answers it (`None`: not known
    /// without reading).
    fn alive(
        &self,
        known: &Known,
        coops: Vec<DocId>,
        mut standing: impl FnMut(&DocId, (Did, Did)) -> Option<Standing>,
    ) -> Option<Result<(), AppError>> {
        if known.logged_out {
            return Some(Err(AppError::unauthorized(
                "this token was logged out; authenticate again",
            )));
        }
        let delegation = match known.signed.statement.parse::<icn_schemas::Delegation>() {
            Ok(d) => d,
            Err(e) => return Some(Err(AppError::internal(e))),
        };
        let (member, key) = (delegation.member, delegation.signing_key());
        let mut listed = false;
        let mut removed_everywhere = true;
        for id in coops {
            let Some((status, revoked)) = standing(&id, (member, key))? else {
                continue;
            };
            if revoked {
                return Some(Err(AppError::unauthorized(format!(
                    "{key} was revoked; this token died with it"
                ))));
            }
            listed = true;
            removed_everywhere &= status == icn_schemas::coop::MemberStatus::Removed;
        }
        if listed && removed_everywhere {
            return Some(Err(AppError::unauthorized(format!(
                "{member} was removed from every co-op on this node; this token died with the membership"
            ))));
        }
        Some(Ok(()))
    }

    /// Refuses the tokens of the delegation stored under `hash` from now on,
    /// durably.
    fn log_out(&self, hash: &[u8; 32]) -> Result<(), AppError> {
        let store = self.engine().store();
        {
            // Under the cache's lock, so that no request reads the store
            // before the row is written and keeps what it read after.
            let mut cache = self
                .inner
                .delegations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            store.log_out(hash)?;
            if let Some(known) = cache.get_mut(hash) {
                known.logged_out = true;
            }
        }
        Ok(store.make_durable()?)
    }

    fn delegation(&self, hash: &[u8; 32]) -> Result<Option<Known>, AppError> {
        let mut cache = self
            .inner
            .delegations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(d) = cache.get(hash) {
            return Ok(Some(d.clone()));
        }
        let store = self.inner.engine.store();
        let Some(signed) = store.delegation(hash)? else {
            return Ok(None);
        };
        let known = Known {
            signed,
            logged_out: store.logged_out(hash)?,
        };
        // Bounded: a member who logs in again and again makes a new one
        // each time; the store keeps them all, the cache the recent ones.
        if cache.len() >= DELEGATION_CACHE {
            cache.clear();
        }
        cache.insert(*hash, known.clone());
        Ok(Some(known))
    }
}

/// A member's status in a co-op and whether a key of its is revoked there;
/// `None` when it is not a member.
type Standing = Option<(icn_schemas::coop::MemberStatus, bool)>;

/// A stored delegation, and whether it was logged out on this node.
#[derive(Clone)]
pub(crate) struct Known {
    pub(crate) signed: SignedDelegation,
    pub(crate) logged_out: bool,
}

/// Delegations kept in memory before the cache starts over.
const DELEGATION_CACHE: usize = 10_000;

/// Who asks: a member's DID, optionally the device that will sign (one of
/// the member's registered devices; without it, the DID key signs), and the
/// scopes wanted (default: all; a device's token has no `gov:write`).
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct ChallengeRequest {
    #[schema(value_type = icn_schemas::Did)]
    did: String,
    /// The device key that will sign, when not the DID key.
    #[schema(value_type = Option<icn_schemas::Did>)]
    device: Option<String>,
    /// The scopes to ask for (default: all).
    #[serde(default)]
    #[schema(value_type = Vec<ScopeName>)]
    scopes: Vec<String>,
}

/// A scope a token may carry.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // only its schema is used: requests parse scopes with `Scope`
enum ScopeName {
    #[schema(rename = "coop:read")]
    CoopRead,
    #[schema(rename = "coop:write")]
    CoopWrite,
    #[schema(rename = "coop:admin")]
    CoopAdmin,
    #[schema(rename = "gov:read")]
    GovRead,
    #[schema(rename = "gov:write")]
    GovWrite,
    #[schema(rename = "ledger:read")]
    LedgerRead,
    #[schema(rename = "ledger:write")]
    LedgerWrite,
}

/// The client's IP address, when the server knows it (`icnd` serves with
/// connection info; a router called directly, in tests, does not).
pub(crate) struct ClientIp(Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl Gateway {
    /// The per-IP limit of the routes before authentication.
    pub(crate) fn limit_ip(&self, ip: &ClientIp) -> Result<(), AppError> {
        match &ip.0 {
            Some(ip) => self.inner.auth_limiter.take(ip).map_err(|wait| {
                self.inner.metrics.rate_limited();
                AppError::too_many(wait)
            }),
            None => Ok(()),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/auth/challenge",
    tag = "auth",
    request_body = ChallengeRequest,
    responses((status = 200, description = "Sign the exact challenge string (a delegation statement) with your DID key within 5 minutes", body = ChallengeAnswer), (status = 400, description = "Not a DID, or an unknown scope", body = crate::ErrorBody), (status = 422, description = "`gov:write` asked for a device's token", body = crate::ErrorBody), (status = 429, description = "Too many from this address; see Retry-After", body = crate::ErrorBody)),
)]
async fn auth_challenge(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    ip: ClientIp,
    Body(req): Body<ChallengeRequest>,
) -> Result<Json<ChallengeAnswer>, AppError> {
    gw.limit_ip(&ip)?;
    let did = parse_did(&req.did)?;
    let device = req.device.as_deref().map(parse_did).transpose()?;
    let device = device.filter(|d| *d != did);
    let mut scopes = auth::parse_scopes(&req.scopes)?;
    // Domains list members, not devices: a device's delegation cannot be
    // checked there, so it writes no governance documents, unless it is the
    // key the member rotated its DID key's powers to.
    let votes = |device: Did| {
        let engine = gw.engine();
        gw.index().all(icn_schemas::DocKind::Coop).iter().any(|id| {
            engine
                .read(id, |r| icn_schemas::coop::key_of(r, &did) == Some(device))
                .unwrap_or(false)
        })
    };
    if let Some(device) = device
        && !votes(device)
    {
        if !req.scopes.is_empty() && scopes.contains(&Scope::GovWrite) {
            return Err(AppError::unprocessable(
                "a device's token has no gov:write: vote with the member's DID key, or the key it rotated to",
            ));
        }
        scopes.retain(|s| *s != Scope::GovWrite);
    }
    let now = auth::now_secs();
    let challenge = gw.inner.authority.challenge(did, device, scopes, now)?;
    Ok(Json(ChallengeAnswer {
        challenge,
        expires_at: auth::rfc3339(now + auth::CHALLENGE_SECONDS),
    }))
}

/// The challenge, and your signature of it: base64 (padded or not) or hex.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct VerifyRequest {
    #[schema(value_type = icn_schemas::Did)]
    did: String,
    #[schema(min_length = 1)]
    challenge: String,
    /// 64 bytes: base64 (padded or not, standard or URL-safe) or hex.
    #[schema(min_length = 1)]
    signature: String,
}

#[utoipa::path(
    post,
    path = "/v1/auth/verify",
    tag = "auth",
    request_body = VerifyRequest,
    responses((status = 200, description = "A JWT for `Authorization: Bearer`", body = TokenAnswer), (status = 400, description = "Malformed signature or challenge", body = crate::ErrorBody), (status = 401, description = "Wrong signature; a challenge expired, already used, or not issued here", body = crate::ErrorBody), (status = 429, description = "Too many from this address; see Retry-After", body = crate::ErrorBody)),
)]
async fn auth_verify(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    ip: ClientIp,
    Body(req): Body<VerifyRequest>,
) -> Result<Json<TokenAnswer>, AppError> {
    gw.limit_ip(&ip)?;
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
    let engine = gw.inner.engine.clone();
    let gw2 = gw.clone();
    let device = delegation.device;
    let fresh = blocking(move || {
        if let Some(device) = device {
            let live = gw2.index().all(icn_schemas::DocKind::Coop).iter().any(|id| {
                engine
                    .read(id, |r| icn_schemas::coop::is_live_device(r, &did, &device))
                    .unwrap_or(false)
            });
            if !live {
                return Err(AppError::unauthorized(format!(
                    "{device} is not a live device of {did} in any co-op on this node; register it first (POST /v1/devices/{did})"
                )));
            }
        }
        let store = engine.store();
        let fresh = store.put_delegation_once(&hash, &signed)?;
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
    Ok(Json(TokenAnswer {
        token,
        expires_at: auth::rfc3339(delegation.expires),
        did,
        device: delegation.device,
        scopes: delegation
            .scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "This token, and every token of its delegation, is refused from now on; with `ledger:write`, a seal of the delegation in each co-op's ledger (`seals`) makes whatever was written under it that this node had not seen count for nothing anywhere", body = LogoutAnswer)),
)]
async fn auth_logout(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    auth: Auth,
) -> Result<Json<LogoutAnswer>, AppError> {
    let hash = auth.delegation_hash;
    let did = auth.did;
    let seals = blocking(move || {
        let engine = gw.engine();
        // First the seals, written under the delegation itself, then the
        // tombstone that refuses its tokens here.
        let mut seals = Vec::new();
        if auth.scopes.contains(&Scope::LedgerWrite) {
            for id in gw.index().all(icn_schemas::DocKind::Coop) {
                let member = engine
                    .read(&id, |r| icn_schemas::coop::Standing::read(r, &auth.did))
                    .flatten()
                    .is_some_and(|s| s.is_active());
                if member {
                    let (seal, _) = engine.seal(
                        &id,
                        &auth.signer(),
                        &auth.did,
                        icn_schemas::ledger::Sealed::Delegation(hash),
                    )?;
                    seals.push(seal.to_string());
                }
            }
        }
        gw.log_out(&hash)?;
        Ok(seals)
    })
    .await?;
    tracing::info!(did = %did, "logged out");
    Ok(Json(LogoutAnswer {
        logged_out: true,
        seals,
    }))
}

/// A DID from a request, or 400.
pub(crate) fn parse_did(text: &str) -> Result<Did, AppError> {
    Did::parse_valid(text).map_err(|e| AppError::bad_request(format!("{text:?} is not a DID: {e}")))
}

/// 403 unless member `did` may read `doc` (the rule sync applies to peers,
/// by the member rather than one of its keys).
pub(crate) fn may_read(
    engine: &Engine,
    doc: &DocId,
    did: &Did,
    what: &str,
) -> Result<(), AppError> {
    if engine.member_may_read(doc, did) {
        Ok(())
    } else {
        Err(AppError::forbidden(format!(
            "{did} is not a member of {what}"
        )))
    }
}
