//! A thief among honest replicas: revocation that no backdating escapes.
//!
//! Alice's phone (`replica_device(2, 0)`) is stolen. The thief writes
//! payments to bob with it and hands them to any replica: citing that
//! replica's heads, or no parents at all, or the co-op heads from before
//! anything happened with an old timestamp. Honest members pay meanwhile.
//! At one step alice, on replica 0, revokes the phone: the co-op document
//! marks it revoked and a seal in the ledger covers it. Documents and
//! entries travel between replicas in random batches and orders.
//!
//! After a final exchange: every replica holds the same entries with the
//! same statuses and balances, each unit sums to zero; no thief entry
//! written after the revocation counts anywhere; a thief entry written
//! before it counts only if replica 0 held it when alice revoked (she had
//! seen it), and is sealed otherwise; no honest entry is sealed.
//!
//! Set `PROPTEST_CASES` to run more cases.

use icn_engine::ledger::{Conflict, Settle, Status};
use icn_engine::test_utils::{
    TestNode, exchange_entries, keypair, replica_device, replicated_coop, sign_entry,
};
use icn_engine::{Engine, Signer};
use icn_schemas::DocId;
use icn_schemas::coop::Revocation;
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry};
use proptest::prelude::*;

const ALICE: u64 = 2;
const BOB: u64 = 3;

/// How a thief entry cites the past.
#[derive(Debug, Clone, Copy)]
enum Backdate {
    /// The replica's current co-op heads and ledger heads.
    Current,
    /// The replica's co-op heads, no parents.
    NoParents,
    /// The co-op heads from before any step, no parents, an old time.
    Everything,
}

#[derive(Debug, Clone)]
enum Step {
    /// Bob's device on a replica pays alice.
    Honest { replica: usize, amount: i64 },
    /// The thief pays bob from alice's phone, handing it to a replica.
    Thief {
        replica: usize,
        amount: i64,
        backdate: Backdate,
    },
    /// Documents, then entries, from one replica to another.
    Exchange {
        from: usize,
        to: usize,
        batch: usize,
        seed: u64,
    },
}

fn steps(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    let backdate = prop_oneof![
        Just(Backdate::Current),
        Just(Backdate::NoParents),
        Just(Backdate::Everything)
    ];
    prop::collection::vec(
        prop_oneof![
            2 => (0..replicas, 1i64..=20).prop_map(|(replica, amount)| Step::Honest { replica, amount }),
            3 => (0..replicas, 1i64..=20, backdate)
                .prop_map(|(replica, amount, backdate)| Step::Thief { replica, amount, backdate }),
            3 => (0..replicas, 0..replicas, 1usize..5, any::<u64>())
                .prop_map(|(from, to, batch, seed)| Step::Exchange { from, to, batch, seed }),
        ],
        1..40,
    )
}

fn sync_docs(from: &Engine, to: &Engine, id: &DocId) {
    let changes = from.changes_since(id, &[]).expect("changes");
    to.apply_remote(id, changes).expect("honest changes");
}

fn heads(engine: &Engine, id: &DocId) -> Vec<[u8; 32]> {
    engine
        .heads(id)
        .expect("held")
        .iter()
        .map(|h| h.0)
        .collect()
}

/// A payment of `amount` from alice to bob, signed by the stolen phone.
fn thief_entry(
    engine: &Engine,
    id: &DocId,
    amount: i64,
    backdate: Backdate,
    old_heads: &[[u8; 32]],
    n: u64,
) -> Vec<u8> {
    let phone = replica_device(ALICE, 0);
    let mut postings = vec![
        Posting {
            account: Account::Member(keypair(ALICE).did()),
            unit: "hours".into(),
            amount: -amount,
        },
        Posting {
            account: Account::Member(keypair(BOB).did()),
            unit: "hours".into(),
            amount,
        },
    ];
    icn_schemas::ledger::sort_postings(&mut postings);
    let (parents, coop_heads, timestamp) = match backdate {
        Backdate::Current => (
            engine.ledger_heads(id).expect("heads"),
            heads(engine, id),
            1_900_000_000_000 + n,
        ),
        Backdate::NoParents => (Vec::new(), heads(engine, id), 1_900_000_000_000 + n),
        Backdate::Everything => (Vec::new(), old_heads.to_vec(), 1_000 + n),
    };
    sign_entry(
        &phone,
        Entry {
            coop: *id,
            parents,
            author: keypair(ALICE).did(),
            signer: phone.did(),
            timestamp,
            coop_heads,
            body: Body::Transfer {
                postings,
                from_allowance: false,
            },
            memo: format!("thief {n}"),
            decision: None,
            delegation: None,
        },
    )
}

fn status(engine: &Engine, id: &DocId, entry: &EntryId) -> Status {
    engine.entry(id, entry).expect("entry").expect("held").1
}

fn sealed(status: &Status) -> bool {
    matches!(
        status,
        Status::Conflicted {
            conflict: Conflict::Sealed { .. }
        }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn no_backdating_escapes_a_revocation(
        (replicas, steps, revoke_at) in (2usize..=4)
            .prop_flat_map(|n| (Just(n), steps(n)))
            .prop_flat_map(|(n, s)| { let len = s.len(); (Just(n), Just(s), 0..=len) })
    ) {
        let (nodes, id): (Vec<TestNode>, DocId) = replicated_coop(replicas, BOB);
        let old_heads = heads(&nodes[0].engine, &id);
        let alice = keypair(ALICE);
        let phone = replica_device(ALICE, 0).did();
        // Thief entries each replica took: (id, written after the revocation).
        let mut thefts: Vec<(EntryId, bool)> = Vec::new();
        let mut honest = Vec::new();
        let mut seen_by_revoker = Vec::new();
        let mut revoked = false;
        for (i, step) in steps.iter().enumerate() {
            if i == revoke_at {
                let r = nodes[0].engine.revoke_device(
                    &id,
                    &Signer::Device(alice.clone()),
                    &alice.did(),
                    &phone,
                    &Revocation { reason: "stolen".into(), at: 1, by: alice.did() },
                ).expect("alice revokes her phone");
                prop_assert_eq!(r.seals.len(), 1);
                seen_by_revoker = nodes[0].engine.entry_ids(&id).expect("ids");
                revoked = true;
            }
            match step {
                Step::Honest { replica, amount } => {
                    let bob = Signer::Device(replica_device(BOB, *replica));
                    let pay = Settle { to: alice.did(), amount: *amount, unit: "hours".into(), memo: String::new() };
                    if let Ok((entry, _)) = nodes[*replica].engine.settle(&id, &bob, &pay) {
                        honest.push(entry);
                    }
                }
                Step::Thief { replica, amount, backdate } => {
                    let engine = &nodes[*replica].engine;
                    let bytes = thief_entry(engine, &id, *amount, *backdate, &old_heads, i as u64);
                    let (_, entry) = SignedEntry::decode(&bytes).expect("decodes");
                    // Refused where the revocation is already held and the
                    // entry cites it: that is not counting either.
                    let taken = engine.ingest_entries(&id, vec![bytes]).expect("ingest").remove(0);
                    if taken.is_ok() {
                        thefts.push((entry, revoked));
                    }
                }
                Step::Exchange { from, to, batch, seed } => {
                    sync_docs(&nodes[*from].engine, &nodes[*to].engine, &id);
                    exchange_entries(&nodes[*from].engine, &nodes[*to].engine, &id, *batch, *seed, false);
                }
            }
        }
        // Everything everywhere: documents first, then entries, twice, so
        // that entries waiting for co-op heads are judged.
        for _ in 0..2 {
            for a in &nodes {
                for b in &nodes {
                    sync_docs(&a.engine, &b.engine, &id);
                }
            }
            for a in &nodes {
                for b in &nodes {
                    exchange_entries(&a.engine, &b.engine, &id, usize::MAX, 1, false);
                }
            }
        }
        let reference = nodes[0].engine.trial_balance(&id).expect("trial balance");
        prop_assert!(reference.totals.values().all(|t| *t == 0), "a unit does not sum to zero");
        for n in &nodes {
            prop_assert_eq!(&n.engine.trial_balance(&id).expect("trial balance"), &reference);
            for (entry, after) in &thefts {
                let s = status(&n.engine, &id, entry);
                if *after {
                    prop_assert!(s != Status::Applied, "a theft after the revocation counts: {:?}", s);
                } else if revoked && !seen_by_revoker.contains(entry) {
                    prop_assert!(sealed(&s), "a theft alice had not seen is not sealed: {:?}", s);
                } else {
                    prop_assert!(!sealed(&s), "a theft alice had seen is sealed");
                }
            }
            for entry in &honest {
                prop_assert!(!sealed(&status(&n.engine, &id, entry)), "an honest entry is sealed");
            }
        }
    }
}
