//! Durable settles under load, with what they cost: `BENCH_WRITERS` threads
//! (default 8) settle on one co-op for `BENCH_SECONDS` (default 5) and the
//! bench prints settles per second, the process's CPU time per settle, and
//! how many settles each sync to disk covered (group commit) and how long
//! the syncs took. Steadier than the criterion figure on a noisy host: the
//! CPU per settle does not move with the disk's latency.
//!
//! `cargo bench -p icn-engine --bench settle_load`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use icn_engine::Signer;
use icn_engine::ledger::Settle;
use icn_engine::test_utils::{TestNode, bench_coop, keypair};

fn main() {
    let setting = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let node = TestNode::new();
    let id = bench_coop(&node, "settle-load");
    let syncs = Arc::new(AtomicU64::new(0));
    let sync_ns = Arc::new(AtomicU64::new(0));
    {
        let (s, n) = (syncs.clone(), sync_ns.clone());
        node.engine.store().observe_syncs(move |d: Duration| {
            s.fetch_add(1, Ordering::Relaxed);
            n.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        });
    }
    let writers: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let secs = Duration::from_secs(setting("BENCH_SECONDS", 5));
    std::thread::scope(|s| {
        for w in 0..writers {
            let (engine, done) = (&node.engine, &done);
            s.spawn(move || {
                let from = 2 + w % 4;
                let settle = Settle {
                    to: keypair(2 + (w + 1) % 4).did(),
                    amount: 1,
                    unit: "hours".into(),
                    memo: String::new(),
                };
                while start.elapsed() < secs {
                    engine
                        .settle(&id, &Signer::Device(keypair(from)), &settle)
                        .expect("settle");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let el = start.elapsed().as_secs_f64();
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    let cpu = (f[11].parse::<f64>().expect("u") + f[12].parse::<f64>().expect("s")) / 100.0;
    let n = done.load(Ordering::Relaxed);
    let sy = syncs.load(Ordering::Relaxed);
    println!(
        "{writers} writers, one co-op: {:.0} settles/s, {:.0} µs CPU per settle, {sy} syncs ({:.1} settles each), mean sync {:.2} ms, syncing {:.0}% of the time",
        n as f64 / el,
        cpu * 1e6 / n as f64,
        n as f64 / sy as f64,
        sync_ns.load(Ordering::Relaxed) as f64 / sy as f64 / 1e6,
        sync_ns.load(Ordering::Relaxed) as f64 / 1e9 / el * 100.0
    );
}
