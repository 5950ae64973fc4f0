//! Engine benchmarks: validate + merge throughput of remote signed changes,
//! durable local writes, ledger ingest and durable settlements, and the raw
//! ed25519 rates they are held against.
//!
//! `cargo bench -p icn-engine --bench engine`; figures go in
//! `docs/BENCHMARKS.md`.

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use icn_engine::ledger::{Ingest, Settle};
use icn_engine::test_utils::{TestNode, bench_coop, keypair, new_coop};
use icn_engine::{SignedChange, Signer};
use icn_schemas::DocId;
use icn_schemas::coop::{self, Role};

fn raw_ed25519(c: &mut Criterion) {
    let mut g = c.benchmark_group("ed25519");
    let key = SigningKey::from_bytes(&[7; 32]);
    let vk = key.verifying_key();
    let msg = [42u8; 32];
    let sig = key.sign(&msg);
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_strict", |b| {
        b.iter(|| vk.verify_strict(&msg, &sig).expect("valid"))
    });
    let keys: Vec<SigningKey> = (0..64u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let msgs: Vec<[u8; 32]> = (0..64u8).map(|i| [i; 32]).collect();
    let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let vks: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    g.throughput(Throughput::Elements(64));
    g.bench_function("verify_batch_64", |b| {
        b.iter(|| ed25519_dalek::verify_batch(&refs, &sigs, &vks).expect("valid"))
    });
    g.finish();
}

/// A node holding a co-op with members 2 and 3 (and their devices on two
/// replicas), and the base history every replica starts from.
fn base() -> (TestNode, DocId, Vec<SignedChange>) {
    let node = TestNode::new();
    let admin = keypair(1);
    let signer = Signer::Device(admin.clone());
    let id = node
        .engine
        .create_coop(&signer, &new_coop(&admin))
        .expect("create");
    for seed in [2, 3] {
        node.engine
            .write(&id, &signer, |tx| {
                coop::add_member(tx, &keypair(seed).did(), Role::Member, 1)
            })
            .expect("member");
    }
    let history = node.engine.changes_since(&id, &[]).expect("history");
    (node, id, history)
}

/// `n` small changes by member `seed`, written on a replica of the base.
fn member_changes(base: &[SignedChange], id: &DocId, seed: u64, n: usize) -> Vec<SignedChange> {
    let node = TestNode::new();
    node.engine.apply_remote(id, base.to_vec()).expect("base");
    let me = keypair(seed);
    let signer = Signer::Device(me.clone());
    for i in 0..n {
        node.engine
            .write(id, &signer, |tx| {
                coop::set_display_name(tx, &me.did(), &format!("n{i}"))
            })
            .expect("write");
    }
    let heads: Vec<_> = base
        .iter()
        .map(|sc| {
            automerge::Change::from_bytes(sc.change.clone())
                .expect("valid")
                .hash()
        })
        .collect();
    node.engine.changes_since(id, &heads).expect("changes")
}

fn apply_remote(c: &mut Criterion) {
    let (_origin, id, base) = base();
    let linear = member_changes(&base, &id, 2, 1000);
    let mut concurrent = member_changes(&base, &id, 2, 500);
    concurrent.extend(member_changes(&base, &id, 3, 500));
    // samod-bench's scenario b: 10,000 single-put changes into an empty peer.
    let catch_up = member_changes(&base, &id, 2, 10_000);

    let mut g = c.benchmark_group("apply_remote");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, batch) in [
        ("linear_1000", &linear),
        ("two_concurrent_500", &concurrent),
        ("linear_10000", &catch_up),
    ] {
        g.throughput(Throughput::Elements(batch.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let node = TestNode::new();
                    node.engine.apply_remote(&id, base.clone()).expect("base");
                    (node, batch.clone())
                },
                |(node, batch)| {
                    let n = batch.len();
                    let applied = node.engine.apply_remote(&id, batch).expect("valid");
                    assert_eq!(applied.new.len(), n);
                    node
                },
                BatchSize::PerIteration,
            )
        });
    }
    // Live-sync shape: many small batches of 10 on one node.
    g.throughput(Throughput::Elements(linear.len() as u64));
    g.bench_function("linear_1000_in_batches_of_10", |b| {
        b.iter_batched(
            || {
                let node = TestNode::new();
                node.engine.apply_remote(&id, base.clone()).expect("base");
                node
            },
            |node| {
                for chunk in linear.chunks(10) {
                    node.engine
                        .apply_remote(&id, chunk.to_vec())
                        .expect("valid");
                }
                node
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn local_writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_write");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let (node, id, _) = base();
    let me = keypair(2);
    let signer = Signer::Device(me.clone());
    let mut i = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("durable_one_writer", |b| {
        b.iter(|| {
            i += 1;
            node.engine
                .write(&id, &signer, |tx| {
                    coop::set_display_name(tx, &me.did(), &format!("n{i}"))
                })
                .expect("write")
        })
    });

    // Four writers on four co-ops of one node: their fsyncs group.
    let writers = 4u64;
    let coops: Vec<(DocId, icn_engine::Keypair)> = (0..writers)
        .map(|w| {
            let admin = keypair(10 + w);
            let mut new = new_coop(&admin);
            new.id = format!("bench-{w}");
            let id = node
                .engine
                .create_coop(&Signer::Device(admin.clone()), &new)
                .expect("create");
            (id, admin)
        })
        .collect();
    g.throughput(Throughput::Elements(writers));
    g.bench_function("durable_4_writers_group_commit", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for (id, admin) in &coops {
                    let engine = node.engine.clone();
                    s.spawn(move || {
                        let signer = Signer::Device(admin.clone());
                        for i in 0..iters {
                            engine
                                .write(id, &signer, |tx| {
                                    coop::set_display_name(tx, &admin.did(), &format!("n{i}"))
                                })
                                .expect("write");
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// A co-op with members 2..=5 whose limits are high enough for any bench,
/// `n` settlements among them written on one node, and the replica's base.
fn ledger_history(n: usize) -> (DocId, Vec<SignedChange>, Vec<Vec<u8>>) {
    let (node, id, _) = base();
    let admin = Signer::Device(keypair(1));
    for seed in 2..=5u64 {
        node.engine
            .write(&id, &admin, |tx| {
                if seed > 3 {
                    coop::add_member(tx, &keypair(seed).did(), Role::Member, 1)?;
                }
                coop::set_credit_limit(tx, &keypair(seed).did(), 1 << 40)
            })
            .expect("limits");
    }
    for i in 0..n {
        let from = 2 + (i % 4) as u64;
        let to = 2 + ((i + 1) % 4) as u64;
        let settle = Settle {
            to: keypair(to).did(),
            amount: 1 + (i % 7) as i64,
            unit: "hours".into(),
            memo: "bench".into(),
        };
        node.engine
            .settle(&id, &Signer::Device(keypair(from)), &settle)
            .expect("settle");
    }
    let doc = node.engine.changes_since(&id, &[]).expect("doc");
    let entries = node.engine.entries(&id).expect("entries");
    (id, doc, entries)
}

/// A co-op with `n` members, each of whom settles once with the next.
fn distinct_signers(n: u64) -> (DocId, Vec<SignedChange>, Vec<Vec<u8>>) {
    let (node, id, _) = base();
    let admin = Signer::Device(keypair(1));
    node.engine
        .write(&id, &admin, |tx| {
            for seed in 100..100 + n {
                coop::add_member(tx, &keypair(seed).did(), Role::Member, 1)?;
            }
            Ok(())
        })
        .expect("members");
    for seed in 100..100 + n {
        let settle = Settle {
            to: keypair(100 + (seed - 100 + 1) % n).did(),
            amount: 1,
            unit: "hours".into(),
            memo: String::new(),
        };
        node.engine
            .settle(&id, &Signer::Device(keypair(seed)), &settle)
            .expect("settle");
    }
    let doc = node.engine.changes_since(&id, &[]).expect("doc");
    let entries = node.engine.entries(&id).expect("entries");
    (id, doc, entries)
}

fn ledger(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let (id, doc, entries) = ledger_history(1000);
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("ingest_1000", |b| {
        b.iter_batched(
            || {
                let node = TestNode::new();
                node.engine.apply_remote(&id, doc.clone()).expect("co-op");
                (node, entries.clone())
            },
            |(node, entries)| {
                let results = node.engine.ingest_entries(&id, entries).expect("ingest");
                assert!(results.iter().all(|r| matches!(r, Ok(Ingest::Stored(_)))));
                node
            },
            BatchSize::PerIteration,
        )
    });

    // The same, but every entry by a different member: no two signatures
    // share a key, as in dalek's own batch benchmark.
    let (id_distinct, doc_distinct, entries_distinct) = distinct_signers(1000);
    g.throughput(Throughput::Elements(entries_distinct.len() as u64));
    g.bench_function("ingest_1000_distinct_signers", |b| {
        b.iter_batched(
            || {
                let node = TestNode::new();
                node.engine
                    .apply_remote(&id_distinct, doc_distinct.clone())
                    .expect("co-op");
                (node, entries_distinct.clone())
            },
            |(node, entries)| {
                let results = node
                    .engine
                    .ingest_entries(&id_distinct, entries)
                    .expect("ingest");
                assert!(results.iter().all(|r| matches!(r, Ok(Ingest::Stored(_)))));
                node
            },
            BatchSize::PerIteration,
        )
    });

    // Durable local settlements: one writer, then eight sharing group commits.
    let node = TestNode::new();
    node.engine.apply_remote(&id, doc.clone()).expect("co-op");
    let settle = |from: u64, to: u64| {
        let s = Settle {
            to: keypair(to).did(),
            amount: 1,
            unit: "hours".into(),
            memo: String::new(),
        };
        node.engine
            .settle(&id, &Signer::Device(keypair(from)), &s)
            .expect("settle");
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("settle_durable_one_writer", |b| b.iter(|| settle(2, 3)));
    let writers = 8u64;
    g.throughput(Throughput::Elements(writers));
    g.bench_function("settle_durable_8_writers_group_commit", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for w in 0..writers {
                    let settle = &settle;
                    s.spawn(move || {
                        let from = 2 + w % 4;
                        for _ in 0..iters {
                            settle(from, 2 + (w + 1) % 4);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });

    // Eight co-ops on one node, one writer each: no co-op waits for
    // another's ledger.
    let coops: Vec<DocId> = (0..writers)
        .map(|k| bench_coop(&node, &format!("bench-coop-{k}")))
        .collect();
    g.throughput(Throughput::Elements(writers));
    g.bench_function("settle_durable_8_coops_8_writers", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for (w, coop) in coops.iter().enumerate() {
                    let engine = &node.engine;
                    s.spawn(move || {
                        let (from, to) = (2 + w as u64 % 4, 2 + (w as u64 + 1) % 4);
                        let settle = Settle {
                            to: keypair(to).did(),
                            amount: 1,
                            unit: "hours".into(),
                            memo: String::new(),
                        };
                        for _ in 0..iters {
                            engine
                                .settle(coop, &Signer::Device(keypair(from)), &settle)
                                .expect("settle");
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

// criterion's macros generate undocumented public functions.
mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, raw_ed25519, apply_remote, local_writes, ledger);
}
criterion_main!(group::benches);
