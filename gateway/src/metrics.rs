//! The gateway's metrics: counters of what it did, and every request by
//! route and status with its latency. `icnd` registers them in its
//! Prometheus registry ([`Metrics::register`]) with the sync and ledger
//! ones and serves them on its metrics port (`docs/operations.md`,
//! Monitoring).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use icn_engine::{Committed, Engine};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument as _;

use crate::Gateway;

macro_rules! counters {
    ($($field:ident, $name:literal, $help:literal;)*) => {
        /// Counters since the node started, and the requests served.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
            /// WebSocket clients connected now.
            pub ws_clients: AtomicU64,
            /// Requests by route, method and status, and their latency.
            pub http: Http,
        }

        /// The counters, read at each scrape.
        #[derive(Debug)]
        struct Counters(Arc<Metrics>);

        impl Collector for Counters {
            fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                let m = &self.0;
                $(
                    let counter = ConstCounter::new(m.$field.load(Ordering::Relaxed));
                    counter.encode(encoder.encode_descriptor($name, $help, None, counter.metric_type())?)?;
                )*
                let gauge = ConstGauge::new(m.ws_clients.load(Ordering::Relaxed) as i64);
                gauge.encode(encoder.encode_descriptor(
                    "gateway_ws_clients",
                    "WebSocket clients connected now.",
                    None,
                    gauge.metric_type(),
                )?)?;
                Ok(())
            }
        }
    };
}

// Counter names without `_total`: the exposition adds it.
counters! {
    proposals_created, "gateway_governance_proposals_created", "Proposals created through the gateway.";
    proposals_opened, "gateway_governance_proposals_opened", "Proposals opened for voting through the gateway.";
    proposals_closed, "gateway_governance_proposals_closed", "Proposals closed through the gateway.";
    votes_cast, "gateway_governance_votes_cast", "Votes cast through the gateway.";
    domains_created, "gateway_governance_domains_created", "Governance domains created through the gateway.";
    coops_created, "gateway_coops_created", "Co-ops created through the gateway.";
    settlements, "gateway_ledger_settlements", "Settlements and conversions recorded through the gateway.";
    tokens_issued, "gateway_auth_tokens_issued", "Tokens issued.";
    auth_failures, "gateway_auth_failures", "Requests refused for a missing, invalid or expired token or signature.";
    rate_limited, "gateway_rate_limited", "Requests refused with 429.";
    ws_events, "gateway_ws_events_sent", "Events sent to WebSocket clients.";
    ledger_entries, "icn_ledger_entries_committed", "Ledger entries committed durably (local and from peers).";
    doc_commits, "icn_documents_commits", "Document commits made durable (local and from peers).";
}

/// A request's route (the pattern, `/v1/ledger/{coop}/settle`), method and
/// status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern.
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// The answer's status code.
    pub status: u16,
}

/// A route's pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's pattern.
    pub route: String,
}

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Requests served, by route and status, and how long they took, by route.
#[derive(Debug, Clone)]
pub struct Http {
    requests: Family<RequestLabels, Counter>,
    seconds: Durations,
    /// Live push to WebSocket clients: from the engine reporting a commit
    /// to its event sent to a subscribed client.
    pub(crate) ws_push: Histogram,
}

/// Latency buckets: 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Http {
    fn default() -> Http {
        Http {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            // 50 µs to about 1.6 s, doubling.
            ws_push: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

impl Http {
    fn observe(&self, route: String, method: String, status: u16, seconds: f64) {
        self.seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }
}

impl Metrics {
    /// Registers every gateway metric in `registry`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        // `register` ends the help with a period itself.
        registry.register(
            "icn_gateway_requests",
            "Requests answered, by route pattern, method and status (routes that exist only)",
            self.http.requests.clone(),
        );
        registry.register(
            "icn_gateway_request_duration_seconds",
            "Time to answer a request, by route pattern (a WebSocket: until the upgrade)",
            self.http.seconds.clone(),
        );
        registry.register(
            "icn_gateway_ws_push_duration_seconds",
            "Live push: from the engine reporting a commit to its event sent to each subscribed WebSocket client",
            self.http.ws_push.clone(),
        );
        registry.register_collector(Box::new(Counters(self.clone())));
    }

    /// Counts the engine's commits.
    pub fn follow(self: &Arc<Self>, engine: &Engine) {
        let me = Arc::downgrade(self);
        engine.on_commit(move |c| {
            let Some(m) = me.upgrade() else { return };
            match c {
                Committed::Doc { .. } => m.doc_commits.fetch_add(1, Ordering::Relaxed),
                Committed::Entries { entries, .. } => m
                    .ledger_entries
                    .fetch_add(entries.len() as u64, Ordering::Relaxed),
                _ => 0,
            };
        });
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn auth_failed(&self) {
        Self::add(&self.auth_failures);
    }

    pub(crate) fn rate_limited(&self) {
        Self::add(&self.rate_limited);
    }

    pub(crate) fn token_issued(&self) {
        Self::add(&self.tokens_issued);
    }
}

/// Counts a request that matched a route, with its status and latency.
pub(crate) async fn layer(State(gw): State<Gateway>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    // One span per request: what an OTLP exporter, when icnd has one,
    // sends as the request's trace.
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    gw.metrics().http.observe(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// A router serving `GET /metrics`: `registry` in the OpenMetrics text
/// format, which Prometheus reads.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        axum::http::StatusCode::OK,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(e) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; charset=utf-8",
                        )],
                        format!("encoding the metrics failed: {e}"),
                    ),
                }
            }
        }),
    )
}
