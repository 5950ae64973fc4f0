//! The gateway's counters, in the Prometheus text format
//! (`icnd` serves them on its metrics port, with the sync counters).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use icn_engine::{Committed, Engine};

macro_rules! counters {
    ($($field:ident, $name:literal, $help:literal;)*) => {
        /// Counters since the node started.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
            /// WebSocket clients connected now.
            pub ws_clients: AtomicU64,
        }

        impl Metrics {
            /// Every counter, in the Prometheus text format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP {} {}", $name, $help);
                    let _ = writeln!(out, "# TYPE {} counter", $name);
                    let _ = writeln!(out, "{} {}", $name, self.$field.load(Ordering::Relaxed));
                )*
                let _ = writeln!(out, "# HELP gateway_ws_clients WebSocket clients connected now.");
                let _ = writeln!(out, "# TYPE gateway_ws_clients gauge");
                let _ = writeln!(out, "gateway_ws_clients {}", self.ws_clients.load(Ordering::Relaxed));
                out
            }
        }
    };
}

counters! {
    proposals_created, "gateway_governance_proposals_created_total", "Proposals created through the gateway.";
    proposals_opened, "gateway_governance_proposals_opened_total", "Proposals opened for voting through the gateway.";
    proposals_closed, "gateway_governance_proposals_closed_total", "Proposals closed through the gateway.";
    votes_cast, "gateway_governance_votes_cast_total", "Votes cast through the gateway.";
    domains_created, "gateway_governance_domains_created_total", "Governance domains created through the gateway.";
    coops_created, "gateway_coops_created_total", "Co-ops created through the gateway.";
    settlements, "gateway_ledger_settlements_total", "Settlements and conversions recorded through the gateway.";
    tokens_issued, "gateway_auth_tokens_issued_total", "Tokens issued.";
    auth_failures, "gateway_auth_failures_total", "Requests refused for a missing, invalid or expired token or signature.";
    rate_limited, "gateway_rate_limited_total", "Requests refused with 429.";
    ws_events, "gateway_ws_events_sent_total", "Events sent to WebSocket clients.";
    ledger_entries, "icn_ledger_entries_committed_total", "Ledger entries committed durably (local and from peers).";
    doc_commits, "icn_documents_commits_total", "Document commits made durable (local and from peers).";
}

impl Metrics {
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

/// A router serving `GET /metrics` with what `render` returns, in the
/// Prometheus text format.
pub fn router(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(),
                )
            }
        }),
    )
}
