//! Cold start with a large ledger: how long `Engine::open` takes on a data
//! directory holding `ICN_BENCH_ENTRIES` ledger entries (default 1,000,000),
//! and how much memory the open engine holds.
//!
//! `cargo bench -p icn-engine --bench cold_start`
//!
//! The data directory is built once, by ingesting signed entries from 64
//! members in batches of 1,000, and kept in `target/cold-start-<n>` for the
//! next run. Each measurement opens it in a fresh child process, so the
//! resident memory it reports is the engine's and nothing else's. Figures go
//! in `docs/BENCHMARKS.md`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use icn_engine::test_utils::{keypair, new_coop};
use icn_engine::{Engine, Signer, Store};
use icn_schemas::DocId;
use icn_schemas::coop::{self, Role};
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry};

const MEMBERS: u64 = 64;
const BATCH: usize = 1_000;

/// Resident and peak resident memory of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn build(dir: &Path, entries: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let engine = Engine::open(Store::open(dir).expect("store")).expect("engine");
    let admin = keypair(1);
    let signer = Signer::Device(admin.clone());
    let coop = engine
        .create_coop(&signer, &new_coop(&admin))
        .expect("create");
    engine
        .write(&coop, &signer, |tx| {
            for seed in 2..=MEMBERS {
                coop::add_member(tx, &keypair(seed).did(), Role::Member, 1)?;
            }
            Ok(())
        })
        .expect("members");
    let heads: Vec<[u8; 32]> = engine
        .heads(&coop)
        .expect("co-op")
        .iter()
        .map(|h| h.0)
        .collect();
    let keys: Vec<_> = (1..=MEMBERS).map(keypair).collect();
    let started = Instant::now();
    let mut parent: Option<EntryId> = None;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut done = 0;
    while done < entries {
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..BATCH.min(entries - done) {
            let from = &keys[(next() % MEMBERS) as usize];
            let to = &keys[(next() % MEMBERS) as usize];
            if from.did() == to.did() {
                continue;
            }
            let amount = (next() % 20 + 1) as i64;
            let mut postings = vec![
                Posting {
                    account: Account::Member(from.did()),
                    unit: "hours".into(),
                    amount: -amount,
                },
                Posting {
                    account: Account::Member(to.did()),
                    unit: "hours".into(),
                    amount,
                },
            ];
            icn_schemas::ledger::sort_postings(&mut postings);
            let entry = Entry {
                coop,
                parents: parent.into_iter().collect(),
                author: from.did(),
                signer: from.did(),
                timestamp: 1_700_000_000_000 + done as u64,
                coop_heads: heads.clone(),
                body: Body::Transfer {
                    postings,
                    from_allowance: false,
                },
                memo: String::new(),
                decision: None,
                delegation: None,
            };
            let signed = SignedEntry {
                signature: from.sign(&entry.signing_message().expect("encodes")),
                entry,
            };
            let bytes = signed.encode().expect("encodes");
            parent = Some(EntryId(*blake3::hash(&bytes).as_bytes()));
            batch.push(bytes);
            done += 1;
        }
        for r in engine.ingest_entries(&coop, batch).expect("ingest") {
            r.expect("a valid entry");
        }
    }
    println!(
        "built {entries} entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::write(dir.join("BENCH_COMPLETE"), coop.to_string()).expect("marker");
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// With `ICN_BENCH_BREAKDOWN=1`: the logical bytes (keys and values) of
/// each sled tree, and of each row tag of the `ledger` tree, beside the
/// bytes sled's files take, so the disk figure can be read as rows times
/// sled's own overhead.
fn breakdown(dir: &Path, entries: usize) {
    let db = sled::Config::new()
        .path(dir.join("store"))
        .open()
        .expect("sled");
    let mut logical = 0u64;
    for name in db.tree_names() {
        let tree = db.open_tree(&name).expect("tree");
        let mut by_tag = std::collections::BTreeMap::<u8, (u64, u64, u64)>::new();
        let (mut rows, mut bytes) = (0u64, 0u64);
        for kv in tree.iter() {
            let (k, v) = kv.expect("row");
            rows += 1;
            bytes += (k.len() + v.len()) as u64;
            if name.as_ref() == b"ledger" && k.len() > 32 {
                let tag = by_tag.entry(k[32]).or_default();
                tag.0 += 1;
                tag.1 += k.len() as u64;
                tag.2 += v.len() as u64;
            }
        }
        logical += bytes;
        println!(
            "tree {:<16} {rows:>9} rows {:>12} bytes",
            String::from_utf8_lossy(&name),
            bytes
        );
        for (tag, (rows, k, v)) in by_tag {
            println!(
                "  tag {} {rows:>9} rows, keys {k:>11} B, values {v:>11} B, {:.1} B/entry",
                tag as char,
                (k + v) as f64 / entries as f64
            );
        }
    }
    drop(db);
    let disk = disk_bytes(&dir.join("store"));
    println!(
        "logical {logical} B ({:.0} B/entry); on disk {disk} B ({:.0} B/entry, {:.2}x)",
        logical as f64 / entries as f64,
        disk as f64 / entries as f64,
        disk as f64 / logical.max(1) as f64
    );
}

/// Runs in the child: opens the engine and reports time and memory.
fn open(dir: &Path) {
    let (rss_before, _) = memory_kib();
    let started = Instant::now();
    let engine = Engine::open(Store::open(dir).expect("store")).expect("engine");
    let elapsed = started.elapsed();
    let coop: DocId = std::fs::read_to_string(dir.join("BENCH_COMPLETE"))
        .expect("marker")
        .parse()
        .expect("co-op id");
    let entries = engine.trial_balance(&coop).expect("ledger").entries;
    let (rss, peak) = memory_kib();
    let disk = disk_bytes(&dir.join("store"));
    println!(
        "open: {:.2} s for {entries} entries; resident {} MiB after open ({} MiB before), peak {} MiB; {disk} B on disk, {:.0} B/entry",
        elapsed.as_secs_f64(),
        rss / 1024,
        rss_before / 1024,
        peak / 1024,
        disk as f64 / entries.max(1) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--open-child") {
        open(Path::new(&args[i + 1]));
        return;
    }
    let entries: usize = std::env::var("ICN_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    let dir = PathBuf::from(target).join(format!("cold-start-{entries}"));
    if !dir.join("BENCH_COMPLETE").exists() {
        build(&dir, entries);
    }
    if std::env::var_os("ICN_BENCH_BREAKDOWN").is_some() {
        breakdown(&dir, entries);
    }
    let exe = std::env::current_exe().expect("own path");
    for _ in 0..3 {
        let status = Command::new(&exe)
            .arg("--open-child")
            .arg(&dir)
            .status()
            .expect("child");
        assert!(status.success(), "the child failed");
    }
}
