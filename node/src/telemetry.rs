//! What `icnd` serves on its metrics port: one Prometheus registry
//! (`prometheus-client`) with the gateway's metrics, the sync counters under
//! their own names and the names of the deployment guide (seed 001), the
//! ledger's gauges, and the latency of commits. `docs/operations.md`
//! ("Monitoring") says what each means.

use std::sync::atomic::{AtomicU64, Ordering};

use icn_engine::Engine;
use icn_schemas::DocKind;
use icn_sync::SyncNode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The registry of a node: `gateway`'s metrics, `sync`'s, and `engine`'s.
/// Also starts timing `engine`'s commits.
pub fn registry(gateway: &icn_gateway::Gateway, sync: &SyncNode, engine: &Engine) -> Registry {
    let mut registry = Registry::default();
    // `register` ends each help with a period itself; collectors do not.
    gateway.metrics().register(&mut registry);
    registry.register(
        "icn_sync_session_duration_seconds",
        "How long sync sessions lasted, from the connection to its end",
        sync.metrics().session_seconds.clone(),
    );
    registry.register(
        "icn_sync_live_push_duration_seconds",
        "Live push: from a local commit to its frames queued on a peer's connection, per session",
        sync.metrics().push_seconds.clone(),
    );
    registry.register_collector(Box::new(SyncCounters(sync.clone())));
    // 50 µs to about 1.6 s, doubling.
    let commits = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
    let observed = commits.clone();
    engine
        .store()
        .observe_syncs(move |took| observed.observe(took.as_secs_f64()));
    registry.register(
        "icn_storage_commit_duration_seconds",
        "Time of each durable commit (sled flush and fdatasync, shared by the writers waiting on it)",
        commits,
    );
    registry.register_collector(Box::new(LedgerGauges(engine.clone())));
    registry
}

/// Sync's counters, under their names and the deployment guide's.
struct SyncCounters(SyncNode);

impl std::fmt::Debug for SyncCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncCounters")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: &AtomicU64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value.load(Ordering::Relaxed));
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for SyncCounters {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = self.0.metrics();
        // Counter names without `_total`: the exposition adds it.
        for (name, help, value) in [
            ("icn_sync_sessions", "Sync sessions started.", &m.sessions),
            (
                "icn_sync_faults",
                "Faults by peers (bad signatures, forged authority, malformed frames).",
                &m.faults,
            ),
            (
                "icn_sync_peers_disconnected",
                "Sessions ended for faults or limits.",
                &m.peers_disconnected,
            ),
            (
                "icn_sync_changes_in",
                "Document changes received and applied.",
                &m.changes_in,
            ),
            (
                "icn_sync_entries_in",
                "Ledger entries received and stored.",
                &m.entries_in,
            ),
            (
                "icn_sync_entries_out",
                "Ledger entries sent.",
                &m.entries_out,
            ),
            ("icn_sync_bytes_in", "Frame bytes received.", &m.bytes_in),
            ("icn_sync_bytes_out", "Frame bytes sent.", &m.bytes_out),
            // The deployment guide's names (seed 001), for our sync.
            (
                "icn_network_connections",
                "Sync sessions (QUIC connections to peers) started.",
                &m.sessions,
            ),
            (
                "icn_network_messages_received",
                "Frames received from peers.",
                &m.frames_in,
            ),
            (
                "icn_network_messages_rate_limited",
                "Frames a peer sent past its rate, held back before they were read.",
                &m.frames_rate_limited,
            ),
            (
                "icn_gossip_announces_received",
                "What peers announced they hold: Hello and LedgerHeads frames.",
                &m.announces_in,
            ),
            (
                "icn_gossip_requests_received",
                "What peers asked for: LedgerHave, LedgerWant and BlobWant frames.",
                &m.requests_in,
            ),
            (
                "icn_gossip_messages",
                "Frames received from peers (seed 002's name for icn_network_messages_received).",
                &m.frames_in,
            ),
            (
                "icn_gossip_entries",
                "Ledger entries received from peers and stored.",
                &m.entries_in,
            ),
            (
                "icn_gossip_subscriptions",
                "Documents peers announced in their Hello, to keep in sync for the session.",
                &m.subscriptions,
            ),
            (
                "icn_trust_violations",
                "Faults by peers: forged signatures, writes the rules refuse, malformed or oversized frames.",
                &m.faults,
            ),
        ] {
            counter(&mut e, name, help, value)?;
        }
        gauge(
            &mut e,
            "icn_network_connections_active",
            "Peers with a sync session now.",
            self.0.peers().len() as i64,
        )
    }
}

/// The ledgers' gauges, read at each scrape.
struct LedgerGauges(Engine);

impl std::fmt::Debug for LedgerGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerGauges")
    }
}

impl Collector for LedgerGauges {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let engine = &self.0;
        let coops: Vec<_> = engine
            .doc_ids()
            .into_iter()
            .filter(|d| engine.kind(d) == Some(DocKind::Coop))
            .collect();
        let (mut entries, mut accounts, mut units, mut conflicted) = (0u64, 0i64, 0i64, 0i64);
        let mut pending = 0i64;
        for coop in &coops {
            if let Ok(t) = engine.trial_balance(coop) {
                entries += t.entries as u64;
                let mut held: Vec<&String> = t.accounts.keys().map(|(a, _)| a).collect();
                held.dedup();
                accounts += held.len() as i64;
                conflicted += t.conflicted.len() as i64;
            }
            pending += engine.pending_entries(coop).unwrap_or(0) as i64;
            units += engine
                .read(coop, |r| {
                    icn_schemas::coop::Coop::read(r).map_or(0, |c| c.policy.units.len())
                })
                .unwrap_or(0) as i64;
        }
        let transactions = AtomicU64::new(entries);
        counter(
            &mut e,
            "icn_ledger_transactions",
            "Ledger entries held, in every co-op (applied and conflicted).",
            &transactions,
        )?;
        // Gauges under the deployment guide's names, `_total` included.
        gauge(
            &mut e,
            "icn_ledger_accounts_total",
            "Accounts with a balance other than zero, in every co-op.",
            accounts,
        )?;
        gauge(
            &mut e,
            "icn_ledger_currencies_total",
            "Units of account, summed over the co-ops' policies.",
            units,
        )?;
        gauge(
            &mut e,
            "icn_ledger_conflicted_entries",
            "Entries held that count for nothing (over a limit, sealed, frozen).",
            conflicted,
        )?;
        gauge(
            &mut e,
            "icn_ledger_pending_entries",
            "Entries from peers waiting for co-op heads or parents not held yet.",
            pending,
        )?;
        gauge(
            &mut e,
            "icn_coops",
            "Co-ops this node holds.",
            coops.len() as i64,
        )?;
        gauge(
            &mut e,
            "icn_store_size_bytes",
            "Bytes of the store on disk (sled's files).",
            engine.store().size_on_disk().unwrap_or(0) as i64,
        )
    }
}
