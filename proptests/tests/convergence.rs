//! Convergence and refusal of forgeries, over 2–5 replicas of one co-op.
//!
//! Random members write random operations on random replicas; changes travel
//! between replicas in random batches, in random order, some twice. Honest
//! changes are only ever refused for a missing dependency (a batch that
//! arrived before its past), and after a final exchange every replica has
//! identical heads and identical JSON.
//!
//! Set `PROPTEST_CASES` to run more cases.

use automerge::{Change, ChangeHash};
use icn_engine::test_utils::{TestNode, forge, keypair, replica_device, replicated_coop};
use icn_engine::{ApplyError, Engine, Rule, SignedChange, Signer};
use icn_schemas::DocId;
use icn_schemas::coop::{self, MemberStatus, Role};
use proptest::prelude::*;

const MEMBERS: u64 = 5; // seed 1 is the admin, seeds 2..=5 members

#[derive(Debug, Clone)]
enum Op {
    DisplayName { target: u64, n: u8 },
    AddDevice { device: u64 },
    CreditLimit { target: u64, limit: u16 },
    Role { target: u64, admin: bool },
    Unit { n: u8 },
    Suspend { target: u64, suspended: bool },
}

#[derive(Debug, Clone)]
enum Step {
    Write {
        replica: usize,
        author: u64,
        op: Op,
    },
    Sync {
        from: usize,
        to: usize,
        batch: usize,
        seed: u64,
        duplicate: bool,
    },
}

fn member() -> impl Strategy<Value = u64> {
    1..=MEMBERS
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (member(), any::<u8>()).prop_map(|(target, n)| Op::DisplayName { target, n }),
        (10u64..20).prop_map(|device| Op::AddDevice { device }),
        (member(), any::<u16>()).prop_map(|(target, limit)| Op::CreditLimit { target, limit }),
        // The founding admin (seed 1) is never demoted, so an admin always exists.
        (2..=MEMBERS, any::<bool>()).prop_map(|(target, admin)| Op::Role { target, admin }),
        (0u8..4).prop_map(|n| Op::Unit { n }),
        (2..=MEMBERS, any::<bool>())
            .prop_map(|(target, suspended)| Op::Suspend { target, suspended }),
    ]
}

fn steps(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    let write = (0..replicas, member(), op()).prop_map(|(replica, author, op)| Step::Write {
        replica,
        author,
        op,
    });
    let sync = (
        0..replicas,
        0..replicas,
        1usize..6,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(from, to, batch, seed, duplicate)| Step::Sync {
            from,
            to,
            batch,
            seed,
            duplicate,
        });
    prop::collection::vec(prop_oneof![3 => write, 2 => sync], 1..40)
}

fn setup(replicas: usize) -> (Vec<TestNode>, DocId) {
    replicated_coop(replicas, MEMBERS)
}

fn write(engine: &Engine, replica: usize, id: &DocId, author: u64, op: &Op) {
    let me = keypair(author).did();
    let did = |seed| keypair(seed).did();
    let signer = Signer::Device(replica_device(author, replica));
    // Honest nodes refuse what they may not write; that is fine here. What
    // matters is that what they do write, every peer accepts.
    let _ = engine.write(id, &signer, |tx| match op {
        Op::DisplayName { target, n } => {
            coop::set_display_name(tx, &did(*target), &format!("name {n}"))
        }
        Op::AddDevice { device } => {
            let proof = keypair(*device).device_proof(&me);
            coop::add_device(tx, &me, &did(*device), Some(&proof), None, 1)
        }
        Op::CreditLimit { target, limit } => {
            coop::set_credit_limit(tx, &did(*target), i64::from(*limit))
        }
        Op::Role { target, admin } => coop::set_role(
            tx,
            &did(*target),
            if *admin { Role::Admin } else { Role::Member },
        ),
        Op::Unit { n } => coop::put_unit(tx, &format!("unit{n}"), None, i64::from(*n)),
        Op::Suspend { target, suspended } => coop::set_status(
            tx,
            &did(*target),
            if *suspended {
                MemberStatus::Suspended
            } else {
                MemberStatus::Active
            },
        ),
    });
}

fn hash(sc: &SignedChange) -> ChangeHash {
    Change::from_bytes(sc.change.clone())
        .expect("stored changes decode")
        .hash()
}

/// What `from` has that `to` lacks, in causal order.
fn missing(from: &Engine, to: &Engine, id: &DocId) -> Vec<SignedChange> {
    from.changes_since(id, &[])
        .expect("changes")
        .into_iter()
        .filter(|sc| {
            let h = hash(sc);
            !to.read(id, |r| r.doc().get_change_meta_by_hash(&h).is_some())
                .unwrap_or(false)
        })
        .collect()
}

/// Delivers `changes` in batches of `batch`, shuffled by `seed`, some twice.
fn deliver(
    to: &Engine,
    id: &DocId,
    changes: Vec<SignedChange>,
    batch: usize,
    seed: u64,
    duplicate: bool,
) {
    let mut batches: Vec<Vec<SignedChange>> = changes.chunks(batch).map(<[_]>::to_vec).collect();
    if duplicate && let Some(first) = batches.first().cloned() {
        batches.push(first);
    }
    // A small deterministic shuffle (xorshift), so the case replays.
    let mut state = seed | 1;
    for i in (1..batches.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        batches.swap(i, (state % (i as u64 + 1)) as usize);
    }
    for b in batches {
        match to.apply_remote(id, b) {
            Ok(_) => {}
            // Arrived before its past: the next exchange brings it again.
            Err(ApplyError::Refused(r)) if matches!(r.rule, Rule::MissingDependency(_)) => {}
            Err(e) => panic!("an honest change was refused: {e}"),
        }
    }
}

fn converge(nodes: &[TestNode], id: &DocId) {
    // Two all-pairs rounds in causal order always suffice.
    for _ in 0..2 {
        for a in nodes {
            for b in nodes {
                let changes = missing(&a.engine, &b.engine, id);
                if !changes.is_empty() {
                    b.engine
                        .apply_remote(id, changes)
                        .expect("a causal batch of honest changes");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        .. ProptestConfig::default()
    })]

    #[test]
    fn replicas_converge((replicas, steps) in (2usize..=5).prop_flat_map(|n| (Just(n), steps(n)))) {
        let (nodes, id) = setup(replicas);
        for step in &steps {
            match step {
                Step::Write { replica, author, op } => {
                    write(&nodes[*replica].engine, *replica, &id, *author, op);
                }
                Step::Sync { from, to, batch, seed, duplicate } => {
                    let (from, to) = (&nodes[*from].engine, &nodes[*to].engine);
                    let changes = missing(from, to, &id);
                    deliver(to, &id, changes, *batch, *seed, *duplicate);
                }
            }
        }
        converge(&nodes, &id);
        let heads = nodes[0].engine.heads(&id);
        let json = nodes[0].engine.to_json(&id);
        let view = nodes[0].engine.coop(&id).map(|c| c.map_err(|e| e.to_string()));
        for n in &nodes[1..] {
            prop_assert_eq!(&n.engine.heads(&id), &heads);
            prop_assert_eq!(&n.engine.to_json(&id), &json);
            prop_assert_eq!(&n.engine.coop(&id).map(|c| c.map_err(|e| e.to_string())), &view);
        }
        // What converged is itself valid: a fresh peer accepts all of it.
        let fresh = TestNode::new();
        fresh.engine.apply_remote(&id, nodes[0].engine.changes_since(&id, &[]).expect("history"))
            .expect("the converged history validates");
        prop_assert_eq!(fresh.engine.heads(&id), heads);
    }
}

#[derive(Debug, Clone)]
enum Forgery {
    WrongKey,
    FlipByte(usize),
    Unauthorised,
    RemovedMemberWrites,
    DeviceOfAnother,
}

fn forgery() -> impl Strategy<Value = Forgery> {
    prop_oneof![
        Just(Forgery::WrongKey),
        any::<usize>().prop_map(Forgery::FlipByte),
        Just(Forgery::Unauthorised),
        Just(Forgery::RemovedMemberWrites),
        Just(Forgery::DeviceOfAnother),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        .. ProptestConfig::default()
    })]

    #[test]
    fn forgeries_are_refused_and_change_nothing(
        warmup in prop::collection::vec((member(), op()), 0..8),
        forgery in forgery(),
        member in 2..=MEMBERS,
    ) {
        let (nodes, id) = setup(2);
        let (origin, victim) = (&nodes[0].engine, &nodes[1].engine);
        for (author, op) in &warmup {
            write(origin, 0, &id, *author, op);
        }
        // The admin may have demoted or suspended; the forger is a plain member.
        let admin_signer = Signer::Device(keypair(1));
        let forger = keypair(member);
        let _ = origin.write(&id, &admin_signer, |tx| {
            coop::set_role(tx, &forger.did(), Role::Member)?;
            coop::set_status(tx, &forger.did(), MemberStatus::Active)
        });
        converge(&nodes, &id);
        let forger_did = forger.did();
        let name = move |tx: &mut automerge::transaction::Transaction<'_>| {
            coop::set_display_name(tx, &forger_did, "forged")
        };
        let bad = match &forgery {
            Forgery::WrongKey => forge(origin, &id, &forger, &keypair(1), None, name),
            Forgery::FlipByte(at) => {
                let mut sc = forge(origin, &id, &forger, &forger, None, name);
                let i = at % sc.change.len();
                sc.change[i] ^= 0x5a;
                sc
            }
            Forgery::Unauthorised => forge(origin, &id, &forger, &forger, None, |tx| {
                coop::set_role(tx, &forger.did(), Role::Admin)
            }),
            Forgery::RemovedMemberWrites => {
                origin
                    .write(&id, &admin_signer, |tx| coop::set_status(tx, &forger.did(), MemberStatus::Removed))
                    .expect("admin removes");
                converge(&nodes, &id);
                forge(origin, &id, &forger, &forger, None, name)
            }
            Forgery::DeviceOfAnother => {
                // A device key the forger made up, claiming to be a member's.
                let device = keypair(77);
                forge(origin, &id, &device, &device, None, name)
            }
        };
        let before = (victim.heads(&id), victim.save(&id), victim.changes_since(&id, &[]).expect("changes"));
        let result = victim.apply_remote(&id, vec![bad]);
        prop_assert!(matches!(result, Err(ApplyError::Refused(_))), "accepted a forgery: {:?}", result);
        let after = (victim.heads(&id), victim.save(&id), victim.changes_since(&id, &[]).expect("changes"));
        prop_assert!(before == after, "a refused forgery changed the replica");
    }
}
