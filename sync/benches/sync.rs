//! Sync between two nodes over iroh on loopback, each on a real sled store
//! in a temporary directory: catch-up time and bytes on the wire, and live
//! push latency. The scenarios follow `../shared/anchors` (samod,
//! automerge-repo) so the figures can sit beside theirs.
//!
//! `cargo bench -p icn-sync --bench sync` prints `name value unit` lines.
//! `BENCH_SCENARIOS=lbdal` picks scenarios (default all), `BENCH_ENTRIES`,
//! `BENCH_CHANGES`, `BENCH_LATENCY_ITERS` change their sizes.
//!
//! - `l`: B holds the co-op; A holds it and 10,000 ledger entries. Time from
//!   dial until B holds every entry.
//! - `b`: A holds one co-op document with 1,000 changes (and 10,000, as the
//!   anchors' scenario b); B starts empty. Time until B has A's heads.
//! - `d`: A holds 100 co-op documents of 11 changes each (the anchors'
//!   scenario a); B starts empty. Time until B holds all 100 at A's heads.
//! - `a`: connected and synced; A commits one document change; time until B
//!   has merged it (B's commit event). 200 iterations, 5 ms apart.
//! - `e`: as `a`, with a ledger settlement.
//!
//! Bytes are what both endpoints' sessions wrote: frames and their 4-byte
//! length prefixes (not QUIC, UDP or IP headers).

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use icn_engine::ledger::Settle;
use icn_engine::test_utils::{TestNode, keypair};
use icn_engine::{Committed, Engine, Keypair, Signer};
use icn_schemas::DocId;
use icn_schemas::coop;
use icn_sync::{NodeConfig, SyncNode};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Node {
    test: TestNode,
    key: Keypair,
}

impl Node {
    fn new(seed: u64) -> Node {
        Node {
            test: TestNode::new(),
            key: keypair(seed),
        }
    }

    fn engine(&self) -> &Engine {
        &self.test.engine
    }

    fn signer(&self) -> Signer {
        Signer::Device(self.key.clone())
    }
}

/// A co-op on `a` with `b` as a member and room for long runs of payments.
fn coop(a: &Node, b: &Node, n: u32) -> DocId {
    let mut new = icn_engine::test_utils::new_coop(&a.key);
    new.id = format!("coop-{n}");
    let id = a.engine().create_coop(&a.signer(), &new).expect("create");
    a.engine()
        .write(&id, &a.signer(), |tx| {
            coop::add_member(tx, &b.key.did(), coop::Role::Member, 1)?;
            coop::set_default_credit_limit(tx, i64::MAX / 4)
        })
        .expect("member");
    id
}

async fn spawn(node: &Node) -> SyncNode {
    SyncNode::spawn(
        node.engine().clone(),
        &node.key,
        NodeConfig::direct("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("bind")
}

/// Dials B from A and waits for `done`; returns the time and the bytes both
/// sides wrote.
async fn catch_up(a: &Node, b: &Node, mut done: impl FnMut() -> bool) -> (Duration, u64, u64) {
    let (sa, sb) = (spawn(a).await, spawn(b).await);
    let started = Instant::now();
    sa.dial(b.key.did(), sb.local_addrs()[0]).expect("dial");
    let deadline = started + Duration::from_secs(600);
    while !done() {
        assert!(Instant::now() < deadline, "no convergence");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    let bytes = (
        sa.metrics().bytes_out.load(Ordering::Relaxed),
        sb.metrics().bytes_out.load(Ordering::Relaxed),
    );
    sa.shutdown().await;
    sb.shutdown().await;
    (elapsed, bytes.0, bytes.1)
}

fn report(name: &str, (elapsed, a_to_b, b_to_a): (Duration, u64, u64)) {
    println!("{name}_ms {:.1} ms", elapsed.as_secs_f64() * 1e3);
    println!("{name}_bytes_a_to_b {a_to_b} B");
    println!("{name}_bytes_b_to_a {b_to_a} B");
}

async fn ledger_catch_up(entries: usize) {
    let (a, b) = (Node::new(1), Node::new(2));
    let id = coop(&a, &b, 0);
    // B already holds the co-op document: only the ledger differs.
    let history = a.engine().changes_since(&id, &[]).expect("history");
    b.engine().apply_remote(&id, history).expect("doc");
    let settle = Settle {
        to: b.key.did(),
        amount: 1,
        unit: "hours".into(),
        memo: String::new(),
    };
    let setup = Instant::now();
    for _ in 0..entries {
        a.engine()
            .settle(&id, &a.signer(), &settle)
            .expect("settle");
    }
    eprintln!("setup: {entries} settlements in {:?}", setup.elapsed());
    let cpu = cpu_time();
    let result = catch_up(&a, &b, || {
        b.engine().entry_ids(&id).map(|i| i.len()).unwrap_or(0) == entries
    })
    .await;
    report(&format!("ledger_{entries}_entries"), result);
    println!(
        "ledger_{entries}_entries_per_s {:.0} entries/s",
        entries as f64 / result.0.as_secs_f64()
    );
    println!(
        "ledger_{entries}_cpu_ms {:.0} ms",
        (cpu_time() - cpu).as_secs_f64() * 1e3
    );
    assert_eq!(
        a.engine().trial_balance(&id).expect("tb"),
        b.engine().trial_balance(&id).expect("tb")
    );
}

async fn doc_catch_up(changes: usize) {
    let (a, b) = (Node::new(1), Node::new(2));
    let id = coop(&a, &b, 0);
    for i in 0..changes.saturating_sub(2) {
        a.engine()
            .write(&id, &a.signer(), |tx| {
                coop::set_display_name(tx, &b.key.did(), &format!("name {i}"))
            })
            .expect("write");
    }
    let heads = a.engine().heads(&id);
    let cpu = cpu_time();
    let result = catch_up(&a, &b, || b.engine().heads(&id) == heads).await;
    report(&format!("doc_{changes}_changes"), result);
    println!(
        "doc_{changes}_changes_cpu_ms {:.0} ms",
        (cpu_time() - cpu).as_secs_f64() * 1e3
    );
}

async fn docs_catch_up(docs: u32) {
    let (a, b) = (Node::new(1), Node::new(2));
    let ids: Vec<DocId> = (0..docs)
        .map(|n| {
            let id = coop(&a, &b, n);
            for i in 0..9 {
                a.engine()
                    .write(&id, &a.signer(), |tx| {
                        coop::set_display_name(tx, &b.key.did(), &format!("name {i}"))
                    })
                    .expect("write");
            }
            id
        })
        .collect();
    let heads: Vec<_> = ids.iter().map(|id| a.engine().heads(id)).collect();
    let cpu = cpu_time();
    let result = catch_up(&a, &b, || {
        ids.iter()
            .zip(&heads)
            .all(|(id, h)| b.engine().heads(id) == *h)
    })
    .await;
    report(&format!("docs_{docs}x11"), result);
    println!(
        "docs_{docs}x11_cpu_ms {:.0} ms",
        (cpu_time() - cpu).as_secs_f64() * 1e3
    );
}

/// Commits on A, one at a time `gap` apart, and times each until B's
/// engine reports it merged.
async fn live(iterations: usize, gap: Duration, ledger: bool) {
    let (a, b) = (Node::new(1), Node::new(2));
    let id = coop(&a, &b, 0);
    let (tx, merged) = mpsc::channel::<(Instant, Committed)>();
    b.engine().on_commit(move |e| {
        let _ = tx.send((Instant::now(), e.clone()));
    });
    let (sa, sb) = (spawn(&a).await, spawn(&b).await);
    sa.dial(b.key.did(), sb.local_addrs()[0]).expect("dial");
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.engine().heads(&id) != a.engine().heads(&id) {
        assert!(Instant::now() < deadline, "no first sync");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut latencies = Vec::with_capacity(iterations);
    let bytes_before = sa.metrics().bytes_out.load(Ordering::Relaxed);
    for i in 0..iterations {
        tokio::time::sleep(gap).await;
        while merged.try_recv().is_ok() {}
        let engine = a.engine().clone();
        let (signer, to) = (a.signer(), b.key.did());
        // Timed from the moment the commit is durable on A.
        let (committed_at, target) = tokio::task::spawn_blocking(move || {
            if ledger {
                let settle = Settle {
                    to,
                    amount: 1,
                    unit: "hours".into(),
                    memo: String::new(),
                };
                let (entry, _) = engine.settle(&id, &signer, &settle).expect("settle");
                (Instant::now(), Err(entry))
            } else {
                engine
                    .write(&id, &signer, |tx| {
                        coop::set_display_name(tx, &to, &format!("live {i}"))
                    })
                    .expect("write");
                (Instant::now(), Ok(engine.heads(&id).expect("heads")))
            }
        })
        .await
        .expect("task");
        let merged_at = loop {
            let (at, event) = merged
                .recv_timeout(Duration::from_secs(30))
                .expect("merged on B");
            let hit = match (&event, &target) {
                (Committed::Doc { heads, .. }, Ok(target)) => heads == target,
                (Committed::Entries { entries, .. }, Err(entry)) => {
                    entries.iter().any(|(e, _)| e == entry)
                }
                _ => false,
            };
            if hit {
                break at;
            }
        };
        latencies.push(merged_at.saturating_duration_since(committed_at));
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let name = if ledger { "live_entry" } else { "live_change" };
    println!("{name}_p50 {:.3} ms", pct(0.5).as_secs_f64() * 1e3);
    println!("{name}_p99 {:.3} ms", pct(0.99).as_secs_f64() * 1e3);
    println!("{name}_max {:.3} ms", pct(1.0).as_secs_f64() * 1e3);
    println!(
        "{name}_bytes_a_to_b_per_commit {} B",
        (sa.metrics().bytes_out.load(Ordering::Relaxed) - bytes_before) / iterations as u64
    );
    sa.shutdown().await;
    sb.shutdown().await;
}

/// This process's CPU time (user + system, all threads).
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10) // 100 ticks per second on Linux
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let scenarios = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| "lbdae".into());
    let iterations = env_or("BENCH_LATENCY_ITERS", 200);
    if scenarios.contains('l') {
        ledger_catch_up(env_or("BENCH_ENTRIES", 10_000)).await;
    }
    if scenarios.contains('b') {
        doc_catch_up(env_or("BENCH_CHANGES", 1_000)).await;
        doc_catch_up(10_000).await;
    }
    if scenarios.contains('d') {
        docs_catch_up(100).await;
    }
    if scenarios.contains('a') {
        live(iterations, Duration::from_millis(5), false).await;
    }
    if scenarios.contains('e') {
        live(iterations, Duration::from_millis(5), true).await;
    }
}
