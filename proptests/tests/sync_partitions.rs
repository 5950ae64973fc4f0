//! Partition and heal, through real sync sessions (in memory, through the
//! frames' encoding): three nodes, one co-op. Proptest picks a schedule of
//! writes on every side (settlements, document changes) and of sessions
//! between pairs, some cut off after a few frames. After a final round of
//! complete sessions, every node holds the same document heads, the same
//! entries, the same conflicted set and the same balances, and no honest
//! session ever counted a fault.
//!
//! Set `PROPTEST_CASES` to run more cases.

use std::sync::mpsc;

use icn_engine::ledger::Settle;
use icn_engine::test_utils::{TestNode, keypair, new_coop};
use icn_engine::{Committed, Engine, Keypair, Signer};
use icn_schemas::DocId;
use icn_schemas::coop;
use icn_sync::Session;
use icn_sync::wire::Frame;
use proptest::prelude::*;

const NODES: usize = 3;

struct Node {
    test: TestNode,
    key: Keypair,
    events: mpsc::Receiver<Committed>,
}

impl Node {
    fn engine(&self) -> &Engine {
        &self.test.engine
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Node `node` pays `amount` to node `to`, if it holds the co-op and its
    /// credit allows.
    Settle { node: usize, to: usize, amount: i64 },
    /// Node `node` renames its member.
    Rename { node: usize, n: u8 },
    /// A session between `a` and `b`, cut after `frames` frames if given.
    Sync {
        a: usize,
        b: usize,
        frames: Option<usize>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..NODES, 0..NODES, 1i64..40).prop_map(|(node, to, amount)| Step::Settle { node, to, amount }),
        1 => (0..NODES, any::<u8>()).prop_map(|(node, n)| Step::Rename { node, n }),
        3 => (0..NODES, 0..NODES, proptest::option::of(0usize..12))
            .prop_map(|(a, b, frames)| Step::Sync { a, b, frames }),
    ]
}

/// Node 0 holds a co-op with every node's key as a member; the others hold
/// nothing yet.
fn nodes() -> (Vec<Node>, DocId) {
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let test = TestNode::new();
            let (tx, events) = mpsc::channel();
            test.engine.on_commit(move |e| {
                let _ = tx.send(e.clone());
            });
            Node {
                test,
                key: keypair(1 + i as u64),
                events,
            }
        })
        .collect();
    let admin = Signer::Device(nodes[0].key.clone());
    let id = nodes[0]
        .engine()
        .create_coop(&admin, &new_coop(&nodes[0].key))
        .expect("create");
    nodes[0]
        .engine()
        .write(&id, &admin, |tx| {
            for n in &nodes[1..] {
                coop::add_member(tx, &n.key.did(), coop::Role::Member, 1)?;
            }
            Ok(())
        })
        .expect("members");
    (nodes, id)
}

/// Runs a session between `a` and `b`, delivering at most `limit` frames.
fn session(a: &Node, b: &Node, limit: Option<usize>) -> Result<(), TestCaseError> {
    while a.events.try_recv().is_ok() {}
    while b.events.try_recv().is_ok() {}
    let mut sa = Session::new(a.engine().clone(), a.key.did(), b.key.did());
    let mut sb = Session::new(b.engine().clone(), b.key.did(), a.key.did());
    let mut left = limit.unwrap_or(usize::MAX);
    let mut delivered = 0usize;
    loop {
        // Honest sessions go quiet; one that never does is a livelock.
        delivered += 1;
        prop_assert!(delivered < 100_000, "the session never went quiet");
        let mut moved = false;
        for forward in [true, false] {
            let (node, from, to) = if forward {
                (a, &mut sa, &mut sb)
            } else {
                (b, &mut sb, &mut sa)
            };
            while let Ok(event) = node.events.try_recv() {
                from.committed(&event).map_err(fail)?;
            }
            if left == 0 {
                return Ok(()); // The connection drops here.
            }
            if let Some(frame) = from.next_frame().map_err(fail)? {
                let frame = Frame::decode(&frame.encode()).map_err(fail)?;
                to.receive(frame).map_err(fail)?;
                left -= 1;
                moved = true;
            }
        }
        if !moved {
            prop_assert_eq!(
                sa.stats().faults + sb.stats().faults,
                0,
                "an honest peer faulted"
            );
            return Ok(());
        }
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// One schedule, then the heal, then the check.
fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let (nodes, coop) = nodes();
    for s in steps {
        match s {
            Step::Settle { node, to, amount } => {
                let (n, t) = (&nodes[node], &nodes[to]);
                if node == to || n.engine().kind(&coop).is_none() {
                    continue;
                }
                // Refused locally when over the limit: that is fine.
                let _ = n.engine().settle(
                    &coop,
                    &Signer::Device(n.key.clone()),
                    &Settle {
                        to: t.key.did(),
                        amount,
                        unit: "hours".into(),
                        memo: String::new(),
                    },
                );
            }
            Step::Rename { node, n } => {
                let me = &nodes[node];
                if me.engine().kind(&coop).is_none() {
                    continue;
                }
                me.engine()
                    .write(&coop, &Signer::Device(me.key.clone()), |tx| {
                        coop::set_display_name(tx, &me.key.did(), &format!("name {n}"))
                    })
                    .map_err(fail)?;
            }
            Step::Sync { a, b, frames } => {
                if a != b {
                    session(&nodes[a], &nodes[b], frames)?;
                }
            }
        }
    }
    // Heal: complete sessions along a chain, twice, reach everyone.
    for _ in 0..2 {
        for a in 0..NODES {
            for b in a + 1..NODES {
                session(&nodes[a], &nodes[b], None)?;
            }
        }
    }
    let state = |n: &Node| {
        let e = n.engine();
        let mut ids = e.entry_ids(&coop).unwrap_or_default();
        ids.sort();
        let conflicted: Vec<_> = ids
            .iter()
            .filter(|id| {
                e.entry(&coop, id)
                    .ok()
                    .flatten()
                    .is_some_and(|(_, status)| status != icn_engine::ledger::Status::Applied)
            })
            .copied()
            .collect();
        (
            e.heads(&coop),
            ids,
            conflicted,
            e.trial_balance(&coop).ok(),
            e.to_json(&coop),
        )
    };
    let first = state(&nodes[0]);
    if std::env::var_os("DIAG").is_some() {
        for (i, n) in nodes.iter().enumerate() {
            let e = n.engine();
            eprintln!(
                "node {i}: entries {} heads {:?} missing parents {:?}",
                e.entry_ids(&coop).map(|v| v.len()).unwrap_or(0),
                e.ledger_heads(&coop).unwrap_or_default(),
                e.missing_parents(&coop).unwrap_or_default()
            );
            for m in e.missing_parents(&coop).unwrap_or_default() {
                for (j, o) in nodes.iter().enumerate() {
                    eprintln!("  node {j} has {m}: {:?}", o.engine().has_entry(&coop, &m));
                }
            }
        }
    }
    for n in &nodes[1..] {
        prop_assert_eq!(&state(n), &first);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn partitions_heal_to_one_state(steps in proptest::collection::vec(step(), 1..40)) {
        run(steps)?;
    }
}

/// A schedule CI found failing once: after the heal, one node still
/// lacked an entry the other two held, the missing parent of entries it
/// held as pending. The peer's heads were among those pending entries, and
/// pending entries count as held, so the node sent no filter, got no
/// `LedgerDone`, and never asked for the parent. Entry ids depend on the
/// clock, so it failed in about one replay in ten to forty (and did so at
/// 51d3acf too). `DIAG=1` prints each node's entries, heads and missing
/// parents; `REPLAYS` sets the count.
#[test]
fn replay_ci_failure() {
    let steps = vec![
        Step::Rename { node: 2, n: 147 },
        Step::Rename { node: 2, n: 25 },
        Step::Sync {
            a: 1,
            b: 0,
            frames: None,
        },
        Step::Settle {
            node: 1,
            to: 0,
            amount: 27,
        },
        Step::Sync {
            a: 2,
            b: 0,
            frames: Some(6),
        },
        Step::Settle {
            node: 1,
            to: 1,
            amount: 36,
        },
        Step::Settle {
            node: 0,
            to: 2,
            amount: 38,
        },
        Step::Settle {
            node: 0,
            to: 1,
            amount: 31,
        },
        Step::Rename { node: 0, n: 83 },
        Step::Sync {
            a: 2,
            b: 0,
            frames: None,
        },
        Step::Settle {
            node: 1,
            to: 1,
            amount: 4,
        },
        Step::Settle {
            node: 2,
            to: 0,
            amount: 11,
        },
        Step::Settle {
            node: 0,
            to: 0,
            amount: 23,
        },
        Step::Settle {
            node: 0,
            to: 1,
            amount: 28,
        },
        Step::Settle {
            node: 2,
            to: 2,
            amount: 8,
        },
        Step::Sync {
            a: 0,
            b: 2,
            frames: None,
        },
        Step::Rename { node: 0, n: 219 },
        Step::Settle {
            node: 1,
            to: 1,
            amount: 30,
        },
        Step::Settle {
            node: 2,
            to: 1,
            amount: 32,
        },
        Step::Sync {
            a: 0,
            b: 2,
            frames: Some(2),
        },
        Step::Settle {
            node: 2,
            to: 2,
            amount: 34,
        },
        Step::Sync {
            a: 1,
            b: 0,
            frames: None,
        },
        Step::Sync {
            a: 2,
            b: 2,
            frames: Some(4),
        },
        Step::Rename { node: 0, n: 147 },
        Step::Settle {
            node: 2,
            to: 1,
            amount: 12,
        },
        Step::Settle {
            node: 1,
            to: 1,
            amount: 4,
        },
        Step::Sync {
            a: 1,
            b: 2,
            frames: Some(10),
        },
        Step::Sync {
            a: 1,
            b: 0,
            frames: None,
        },
        Step::Rename { node: 1, n: 186 },
        Step::Settle {
            node: 2,
            to: 0,
            amount: 5,
        },
        Step::Settle {
            node: 1,
            to: 0,
            amount: 14,
        },
        Step::Settle {
            node: 0,
            to: 2,
            amount: 12,
        },
        Step::Sync {
            a: 1,
            b: 2,
            frames: Some(7),
        },
        Step::Settle {
            node: 1,
            to: 0,
            amount: 14,
        },
        Step::Settle {
            node: 2,
            to: 1,
            amount: 17,
        },
        Step::Sync {
            a: 1,
            b: 2,
            frames: Some(10),
        },
    ];
    let runs: usize = std::env::var("REPLAYS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    for i in 0..runs {
        if let Err(e) = run(steps.clone()) {
            panic!("replay {i}: {e}");
        }
    }
}
