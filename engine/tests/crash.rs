//! Every write acknowledged before a `kill -9` is there after a restart.
//!
//! The test re-runs its own binary as a child (`crash_child`), which writes
//! to several co-ops from several threads and prints `ack <doc> <change>`
//! once each document write is acknowledged and `entry <coop> <id>` once each
//! settlement is. The parent kills the child with SIGKILL
//! mid-stream, reopens the store, and checks that every acknowledged change
//! is there and the store opens cleanly; three rounds on the same directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use icn_engine::ledger::Settle;
use icn_engine::test_utils::{keypair, new_coop};
use icn_engine::{Engine, Signer, Store};
use icn_schemas::ledger::EntryId;
use icn_schemas::{DocId, coop};

const CHILD_ENV: &str = "ICN_CRASH_CHILD_DIR";
const WRITERS: u64 = 4;

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only runs when the parent test starts it.
    };
    let engine = Engine::open(Store::open(dir.as_ref()).expect("open store")).expect("open engine");
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let admin = keypair(100 + w);
                let signer = Signer::Device(admin.clone());
                let mut new = new_coop(&admin);
                new.id = format!("crash-{w}");
                // Each writer owns one co-op (created on the first round), so
                // after a write the co-op's only head is that write.
                let id = engine
                    .doc_ids()
                    .into_iter()
                    .find(|id| {
                        engine
                            .coop(id)
                            .and_then(Result::ok)
                            .is_some_and(|c| c.id == new.id)
                    })
                    .unwrap_or_else(|| {
                        let id = engine.create_coop(&signer, &new).expect("create");
                        engine
                            .write(&id, &signer, |tx| {
                                coop::add_member(tx, &keypair(200).did(), coop::Role::Member, 1)?;
                                coop::set_credit_limit(tx, &admin.did(), 1 << 40)
                            })
                            .expect("member and limit");
                        id
                    });
                let settle = Settle {
                    to: keypair(200).did(),
                    amount: 1,
                    unit: "hours".into(),
                    memo: String::new(),
                };
                for i in 0u64.. {
                    engine
                        .write(&id, &signer, |tx| {
                            coop::set_display_name(tx, &admin.did(), &format!("write {i}"))
                        })
                        .expect("write");
                    let heads = engine.heads(&id).expect("doc exists");
                    println!("ack {id} {}", heads[0]);
                    let (entry, _) = engine.settle(&id, &signer, &settle).expect("settle");
                    println!("entry {id} {entry}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: Vec<(DocId, automerge::ChangeHash)> = Vec::new();
    let mut entries: Vec<(DocId, EntryId)> = Vec::new();
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let target = 150 + 100 * round;
        let mut this_round = 0;
        while this_round < target {
            let line = lines
                .next()
                .expect("the child writes until killed")
                .expect("utf-8 line");
            if let Some(rest) = line.strip_prefix("entry ") {
                let (doc, id) = rest.split_once(' ').expect("entry <doc> <id>");
                entries.push((doc.parse().expect("doc id"), id.parse().expect("entry id")));
            } else if let Some(rest) = line.strip_prefix("ack ") {
                let (doc, hash) = rest.split_once(' ').expect("ack <doc> <hash>");
                acked.push((
                    doc.parse().expect("doc id"),
                    hash.parse().expect("change hash"),
                ));
                this_round += 1;
            }
        }
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix.
        child.wait().expect("reap");

        let engine = Engine::open(Store::open(dir.path()).expect("the store reopens cleanly"))
            .expect("every document loads");
        for (doc, hash) in &acked {
            let present = engine
                .read(doc, |r| r.doc().get_change_meta_by_hash(hash).is_some())
                .unwrap_or(false);
            assert!(
                present,
                "round {round}: acknowledged change {hash} of {doc} was lost"
            );
        }
        for (coop, id) in &entries {
            let held = engine.entry(coop, id).expect("the ledger loads");
            assert!(
                held.is_some(),
                "round {round}: acknowledged entry {id} was lost"
            );
        }
        // The signatures came back too: a fresh peer accepts the history.
        let peer =
            Engine::open(Store::open(&dir.path().join("peer")).expect("store")).expect("engine");
        for doc in engine.doc_ids() {
            let history = engine.changes_since(&doc, &[]).expect("changes");
            peer.apply_remote(&doc, history)
                .expect("the stored history validates");
        }
    }
    assert!(acked.len() >= 750);
    assert!(entries.len() >= 700);
}
