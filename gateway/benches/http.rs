//! The gateway's figures (issue 6; results in docs/BENCHMARKS.md):
//!
//! - durable settles over HTTP at a steady 1,000 requests per second
//!   (open loop: latency counts from when a request was due, so a stall
//!   is not hidden): p50 / p99;
//! - the most durable settles per second (64 clients, closed loop), on one
//!   co-op and spread over eight (8 clients each);
//! - WebSocket delivery: from the moment the engine reports a settlement
//!   durable to the moment a subscribed client has its event;
//! - the idle RSS of a real `icnd` (if `target/release/icnd` is built).
//!
//! Client and server share the machine's two cores, over loopback; every
//! settle is validated, signed by the node under the member's delegation,
//! folded and fsynced (group commit) before its 201. The per-DID rate limit
//! is raised for the benchmark: it measures the engine and HTTP, not the
//! limiter.
//!
//! `cargo bench -p icn-gateway --bench http` (`BENCH_SECONDS`, default 10;
//! `BENCH_ONLY_SPREAD=1` runs only the 8-co-op closed loop, to profile it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use icn_engine::{Committed, Engine, Keypair, Signer, Store};
use icn_gateway::{Config, Gateway};
use icn_schemas::coop;
use serde_json::{Value, json};

const MEMBERS: usize = 20;

/// Co-ops on the node: `bench`, then `bench-1` … `bench-7`, each with every
/// member.
const COOPS: usize = 8;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Setup {
    base: String,
    http: reqwest::Client,
    tokens: Vec<String>,
    dids: Vec<String>,
    coops: Vec<String>,
    engine: Engine,
    /// Syncs to disk so far, and the nanoseconds they took.
    syncs: Arc<(AtomicU64, AtomicU64)>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn syncs(&self) -> (u64, Duration) {
        (
            self.syncs.0.load(Ordering::Relaxed),
            Duration::from_nanos(self.syncs.1.load(Ordering::Relaxed)),
        )
    }
}

async fn login(http: &reqwest::Client, base: &str, key: &Keypair) -> String {
    let did = key.did().to_string();
    let c: Value = http
        .post(format!("{base}/v1/auth/challenge"))
        .json(&json!({"did": did}))
        .send()
        .await
        .expect("challenge")
        .json()
        .await
        .expect("json");
    let challenge = c["challenge"].as_str().expect("challenge");
    let sig =
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.sign(challenge.as_bytes()));
    let v: Value = http
        .post(format!("{base}/v1/auth/verify"))
        .json(&json!({"did": did, "challenge": challenge, "signature": sig}))
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("json");
    v["token"].as_str().expect("token").to_owned()
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(Store::open(dir.path()).expect("store")).expect("engine");
    let syncs: Arc<(AtomicU64, AtomicU64)> = Arc::default();
    let counted = syncs.clone();
    engine.store().observe_syncs(move |took| {
        counted.0.fetch_add(1, Ordering::Relaxed);
        counted
            .1
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    });
    let mut config = Config::new(Keypair::generate().expect("key"), b"bench secret".to_vec());
    config.rate_burst = u32::MAX;
    config.rate_per_second = u32::MAX;
    let gateway = Gateway::new(engine.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(icn_gateway::serve(
        listener,
        gateway,
        std::future::pending(),
    ));

    let keys: Vec<Keypair> = (0..MEMBERS)
        .map(|_| Keypair::generate().expect("key"))
        .collect();
    let admin = Signer::Device(keys[0].clone());
    let coops: Vec<String> = (0..COOPS)
        .map(|k| match k {
            0 => "bench".to_owned(),
            k => format!("bench-{k}"),
        })
        .collect();
    for slug in &coops {
        let coop_id = engine
            .create_coop(
                &admin,
                &coop::NewCoop {
                    id: slug.clone(),
                    name: "Bench".into(),
                    description: String::new(),
                    creator: keys[0].did(),
                    device: keys[0].did(),
                    created_at: 1_700_000_000,
                    default_credit_limit: 1_000_000_000_000,
                    units: vec![("hours".into(), 0)],
                },
            )
            .expect("coop");
        engine
            .write(&coop_id, &admin, |tx| {
                for k in &keys[1..] {
                    coop::add_member(tx, &k.did(), coop::Role::Member, 1_700_000_000)?;
                }
                Ok(())
            })
            .expect("members");
    }
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let mut tokens = Vec::new();
    for k in &keys {
        tokens.push(login(&http, &base, k).await);
    }
    Setup {
        base,
        http,
        tokens,
        dids: keys.iter().map(|k| k.did().to_string()).collect(),
        coops,
        engine,
        syncs,
        _dir: dir,
    }
}

/// One settle from member `i` to the next in co-op `coop`; its latency.
async fn settle(s: &Setup, i: usize, coop: &str) -> Duration {
    let started = Instant::now();
    let to = &s.dids[(i + 1) % MEMBERS];
    let response = s
        .http
        .post(format!("{}/v1/ledger/{coop}/settle", s.base))
        .bearer_auth(&s.tokens[i % MEMBERS])
        .json(&json!({"to": to, "amount": 1, "unit": "hours"}))
        .send()
        .await
        .expect("settle");
    assert_eq!(
        response.status().as_u16(),
        201,
        "{:?}",
        response.text().await
    );
    started.elapsed()
}

async fn open_loop(s: &Arc<Setup>, rate: u64, seconds: u64) -> (Vec<Duration>, f64) {
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let total = rate * seconds;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = start + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            settle(&s, n as usize, "bench").await;
            // From when it was due, not when it was sent.
            due.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await.expect("task"));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    (latencies, achieved)
}

/// Settles per second from `clients` clients, client `c` on co-op
/// `c % coops`; and the syncs to disk they shared (how many, and how
/// long one took on average).
async fn closed_loop(s: &Arc<Setup>, clients: usize, coops: usize, seconds: u64) -> (f64, String) {
    let (syncs_before, took_before) = s.syncs();
    let written_before = written_bytes();
    let cpu_before = cpu_time();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let coop = s.coops[c % coops].clone();
            while Instant::now() < end {
                settle(&s, c + done as usize, &coop).await;
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let (syncs, took) = s.syncs();
    let (syncs, took) = (syncs - syncs_before, took - took_before);
    let written = written_bytes().saturating_sub(written_before);
    let cpu = cpu_time().saturating_sub(cpu_before);
    let shared = format!(
        "{syncs} syncs, {:.1} settles per sync, {:.2} ms per sync, {:.0} bytes written per settle, {:.0} µs CPU per settle, client included",
        total as f64 / syncs.max(1) as f64,
        took.as_secs_f64() * 1000.0 / syncs.max(1) as f64,
        written as f64 / total.max(1) as f64,
        cpu.as_secs_f64() * 1e6 / total.max(1) as f64
    );
    (rate, shared)
}

/// CPU time this process has used, user and system (`/proc/self/stat`,
/// in clock ticks of 10 ms), or zero where that is not known.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which ends with the last ')':
            // utime and stime are the 12th and 13th of them.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Bytes this process has had written to disk (`/proc/self/io`), or 0
/// where that is not known.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn ws_latency(s: &Arc<Setup>, count: usize) -> Vec<Duration> {
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = committed.clone();
    s.engine.on_commit(move |c| {
        if let Committed::Entries { entries, .. } = c {
            let now = Instant::now();
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for (id, _) in entries {
                seen.insert(id.to_string(), now);
            }
        }
    });
    let url = format!("{}/v1/ws/bench", s.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let auth = json!({"type": "Auth", "token": s.tokens[0]}).to_string();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(auth.into()))
        .await
        .expect("send");
    let _ = ws.next().await;
    let receiver = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        while arrivals.len() < count {
            let Some(Ok(msg)) = ws.next().await else {
                break;
            };
            let received = Instant::now();
            if let Ok(text) = msg.into_text()
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["event"] == "SettlementCreated"
            {
                arrivals.push((
                    v["data"]["entry_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    received,
                ));
            }
        }
        arrivals
    });
    for i in 0..count {
        settle(s, i, "bench").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrivals = receiver.await.expect("receiver");
    let committed = committed.lock().unwrap_or_else(|p| p.into_inner());
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(id, at)| committed.get(id).map(|c| at.saturating_duration_since(*c)))
        .collect();
    latencies.sort();
    latencies
}

fn idle_rss() -> Option<(u64, std::path::PathBuf)> {
    let bin = std::env::var_os("ICND")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/icnd")
        });
    if !bin.exists() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut child = std::process::Command::new(&bin)
        .args(["--data-dir", dir.path().to_str()?])
        .args(["--gateway-bind", &format!("127.0.0.1:{port}")])
        .args(["--listen-addr", "127.0.0.1:0", "--metrics-port", "0"])
        .env("ICN_KEYSTORE_PASSPHRASE", "bench")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let _ = child.kill();
    let _ = child.wait();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kb, bin))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let s = Arc::new(setup().await);
    // Warm up: connections, caches.
    closed_loop(&s, 16, COOPS, 1).await;
    if std::env::var_os("BENCH_ONLY_SPREAD").is_some() {
        // Only the 8-co-op closed loop: to profile it (`perf record -p`).
        eprintln!("warmed up; measuring the {COOPS}-co-op closed loop");
        let (spread, shared) = closed_loop(&s, 64, COOPS, seconds).await;
        println!(
            "most durable settles over HTTP on {COOPS} co-ops: {spread:.0} per second ({shared})"
        );
        return;
    }

    let (lat, achieved) = open_loop(&s, 1000, seconds).await;
    println!(
        "settle over HTTP at 1,000 req/s for {seconds} s: achieved {achieved:.0} req/s, p50 {}, p99 {}, max {} ({} requests)",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        lat.len()
    );
    let (max, shared) = closed_loop(&s, 64, 1, seconds).await;
    println!(
        "most durable settles over HTTP: {max:.0} per second (64 clients, closed loop, {seconds} s; {shared})"
    );
    let (spread, shared) = closed_loop(&s, 64, COOPS, seconds).await;
    println!(
        "most durable settles over HTTP on {COOPS} co-ops: {spread:.0} per second (8 clients each, closed loop, {seconds} s; {shared})"
    );
    let ws = ws_latency(&s, 500).await;
    println!(
        "WebSocket delivery after commit: p50 {}, p99 {} ({} events)",
        ms(percentile(&ws, 0.5)),
        ms(percentile(&ws, 0.99)),
        ws.len()
    );
    match idle_rss() {
        Some((kb, bin)) => println!(
            "idle icnd RSS: {:.1} MiB ({})",
            kb as f64 / 1024.0,
            bin.display()
        ),
        None => {
            println!("idle icnd RSS: not measured (build it: cargo build --release -p icn-node)")
        }
    }
}
