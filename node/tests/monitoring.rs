//! The dashboard and the alert rules we ship (`docs/monitoring/`) query
//! only metrics a real `icnd` serves, and every name the seeds promise
//! operators is among them.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every metric name (ours: `icn_…`, `gateway_…`) in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let word_start =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if word_start && (text[at..].starts_with("icn_") || text[at..].starts_with("gateway_")) {
            let end = text[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| at + n);
            names.insert(text[at..end].to_owned());
            at = end;
        } else {
            at += 1;
        }
    }
    names
}

/// The queries of the dashboard's panels.
fn dashboard_queries() -> String {
    let text = std::fs::read_to_string(repo("docs/monitoring/grafana-dashboard.json"))
        .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut queries = String::new();
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push_str(target["expr"].as_str().expect("an expr"));
            queries.push('\n');
        }
    }
    queries
}

#[test]
fn the_dashboard_and_the_alerts_query_only_what_icnd_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (gateway, metrics) = (common::free_port(), common::free_port());
    let mut icnd = Command::new(env!("CARGO_BIN_EXE_icnd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--gateway-bind", &format!("127.0.0.1:{gateway}")])
        .args([
            "--listen-addr",
            &format!("127.0.0.1:{}", common::free_udp_port()),
        ])
        .args(["--metrics-port", &metrics.to_string()])
        .env("ICN_KEYSTORE_PASSPHRASE", "monitoring-test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("icnd starts");
    let base = format!("http://127.0.0.1:{gateway}");
    for _ in 0..300 {
        if curl(&[&format!("{base}/v1/health")]).contains("ok") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Requests, so that the per-route families have a series.
    curl(&[&format!("{base}/v1/health")]);
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{}",
        &format!("{base}/v1/auth/challenge"),
    ]);
    let exposition = curl(&[&format!("http://127.0.0.1:{metrics}/metrics")]);
    let _ = icnd.kill();
    let _ = icnd.wait();
    // The names of the samples served (not the HELP and TYPE lines).
    let served: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    assert!(
        exposition.contains(
            "icn_gateway_requests_total{route=\"/v1/health\",method=\"GET\",status=\"200\"}"
        ),
        "{exposition}"
    );

    let alerts =
        std::fs::read_to_string(repo("docs/monitoring/alerts.yml")).expect("the alert rules");
    for (what, text) in [("dashboard", dashboard_queries()), ("alert rules", alerts)] {
        let queried = names_in(&text);
        assert!(!queried.is_empty(), "the {what} query nothing of ours");
        let missing: Vec<&String> = queried.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "the {what} query {missing:?}, which icnd does not serve:\n{exposition}"
        );
    }

    // The names the seeds give operators (001: deployment guide; 002:
    // monitoring), served as they spell them.
    for name in [
        "icn_network_connections_total",
        "icn_network_connections_active",
        "icn_network_messages_received_total",
        "icn_network_messages_rate_limited_total",
        "icn_gossip_announces_received_total",
        "icn_gossip_requests_received_total",
        "icn_gossip_entries_total",
        "icn_gossip_subscriptions_total",
        "icn_gossip_messages_total",
        "icn_ledger_transactions_total",
        "icn_ledger_accounts_total",
        "icn_ledger_currencies_total",
        "icn_gateway_requests_total",
        "icn_trust_violations_total",
        "gateway_governance_proposals_created_total",
        "icn_storage_commit_duration_seconds_bucket",
        "icn_sync_session_duration_seconds_bucket",
        "icn_gateway_request_duration_seconds_bucket",
        "icn_sync_live_push_duration_seconds_bucket",
        "icn_gateway_ws_push_duration_seconds_bucket",
        "icn_ledger_pending_entries",
        "gateway_ws_clients",
    ] {
        assert!(served.contains(name), "{name} is not served:\n{exposition}");
    }
}
