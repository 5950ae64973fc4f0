//! Ledger convergence and refusals, over 2–6 replicas of one co-op.
//!
//! Members settle on random replicas (many of them overspend concurrently:
//! the credit limit is 100 and amounts are 20 to 90); entries travel in random
//! batches, in random order, some twice. Honest entries are never refused
//! (at most they wait for their parents), and after a final exchange every
//! replica has the same balances, the same conflicted entries, and a zero sum
//! per unit.
//!
//! Set `PROPTEST_CASES` to run more cases.

use icn_engine::ledger::{EntryRefusal, Settle};
use icn_engine::test_utils::{
    TestNode, exchange_entries as exchange, keypair, replica_device, replicated_coop, sign_entry,
};
use icn_engine::{Keypair, Signer};
use icn_schemas::DocId;
use icn_schemas::coop::{self, MemberStatus};
use icn_schemas::ledger::{Account, Body, Entry, Posting, SignedEntry};
use proptest::prelude::*;

const MEMBERS: u64 = 5; // seed 1 is the admin, 2..=5 members; all may settle

#[derive(Debug, Clone)]
enum Step {
    Settle {
        replica: usize,
        from: u64,
        to: u64,
        amount: i64,
        euros: bool,
    },
    Exchange {
        from: usize,
        to: usize,
        batch: usize,
        seed: u64,
        duplicate: bool,
    },
}

fn steps(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    let settle = (
        0..replicas,
        1..=MEMBERS,
        1..=MEMBERS,
        20i64..=90,
        any::<bool>(),
    )
        .prop_map(|(replica, from, to, amount, euros)| Step::Settle {
            replica,
            from,
            to,
            amount,
            euros,
        });
    let exchange = (
        0..replicas,
        0..replicas,
        1usize..5,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(from, to, batch, seed, duplicate)| Step::Exchange {
            from,
            to,
            batch,
            seed,
            duplicate,
        });
    prop::collection::vec(prop_oneof![3 => settle, 2 => exchange], 1..50)
}

fn setup(replicas: usize) -> (Vec<TestNode>, DocId) {
    replicated_coop(replicas, MEMBERS)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn replicas_agree_on_balances_and_conflicts(
        (replicas, steps) in (2usize..=6).prop_flat_map(|n| (Just(n), steps(n)))
    ) {
        let (nodes, id) = setup(replicas);
        for step in &steps {
            match step {
                Step::Settle { replica, from, to, amount, euros } => {
                    if from == to {
                        continue;
                    }
                    let settle = Settle {
                        to: keypair(*to).did(),
                        amount: *amount,
                        unit: if *euros { "eur" } else { "hours" }.into(),
                        memo: String::new(),
                    };
                    // Refused locally when over the limit as this replica sees it.
                    let _ = nodes[*replica].engine.settle(&id, &Signer::Device(replica_device(*from, *replica)), &settle);
                }
                Step::Exchange { from, to, batch, seed, duplicate } => {
                    exchange(&nodes[*from].engine, &nodes[*to].engine, &id, *batch, *seed, *duplicate);
                }
            }
        }
        for a in &nodes {
            for b in &nodes {
                exchange(&a.engine, &b.engine, &id, usize::MAX, 1, false);
            }
        }
        let reference = nodes[0].engine.trial_balance(&id).expect("trial balance");
        prop_assert!(reference.totals.values().all(|t| *t == 0), "a unit does not sum to zero");
        for n in &nodes[1..] {
            prop_assert_eq!(&n.engine.trial_balance(&id).expect("trial balance"), &reference);
            prop_assert_eq!(n.engine.ledger_heads(&id).expect("heads"), nodes[0].engine.ledger_heads(&id).expect("heads"));
        }
        // The fold is stored as it is folded: a restart reads the same.
        let mut nodes = nodes;
        let restarted = nodes.pop().expect("a replica").reopen();
        prop_assert_eq!(&restarted.engine.trial_balance(&id).expect("trial balance"), &reference);
        // Conflicted entries are exactly the ones over the limit: no member
        // is below its limit.
        for (( _account, _unit), balance) in &reference.accounts {
            prop_assert!(*balance >= -100, "an account went past its credit limit");
        }
    }
}

#[derive(Debug, Clone)]
enum Forgery {
    WrongKey,
    FlipByte(usize),
    Unbalanced(i64),
    Overflowing,
    DebitsAnother,
    Stranger,
    RemovedMember,
}

fn forgery() -> impl Strategy<Value = Forgery> {
    prop_oneof![
        Just(Forgery::WrongKey),
        any::<usize>().prop_map(Forgery::FlipByte),
        (1i64..1000).prop_map(Forgery::Unbalanced),
        Just(Forgery::Overflowing),
        Just(Forgery::DebitsAnother),
        Just(Forgery::Stranger),
        Just(Forgery::RemovedMember),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn bad_entries_are_refused_and_never_stored(
        warmup in prop::collection::vec((2..=MEMBERS, 2..=MEMBERS, 1i64..40), 0..6),
        forgery in forgery(),
        amount in 1i64..50,
    ) {
        let (nodes, id) = setup(1);
        let engine = &nodes[0].engine;
        for (from, to, amount) in &warmup {
            if from != to {
                let settle = Settle { to: keypair(*to).did(), amount: *amount, unit: "hours".into(), memo: String::new() };
                let _ = engine.settle(&id, &Signer::Device(keypair(*from)), &settle);
            }
        }
        let (alice, bob) = (keypair(2), keypair(3));
        if let Forgery::RemovedMember = forgery {
            engine
                .write(&id, &Signer::Device(keypair(1)), |tx| coop::set_status(tx, &alice.did(), MemberStatus::Removed))
                .expect("remove");
        }
        let posting = |who: &Keypair, amount| Posting { account: Account::Member(who.did()), unit: "hours".into(), amount };
        let mut postings = vec![posting(&alice, -amount), posting(&bob, amount)];
        icn_schemas::ledger::sort_postings(&mut postings);
        let mut entry = Entry {
            coop: id,
            parents: engine.ledger_heads(&id).expect("heads"),
            author: alice.did(),
            signer: alice.did(),
            timestamp: 1_700_000_000_000,
            coop_heads: engine.heads(&id).expect("doc").iter().map(|h| h.0).collect(),
            body: Body::Transfer { postings, from_allowance: false },
            memo: String::new(),
            decision: None,
            delegation: None,
        };
        let Body::Transfer { postings, .. } = &mut entry.body else { unreachable!("a transfer") };
        let mut signer = alice.clone();
        match &forgery {
            Forgery::WrongKey => signer = bob.clone(),
            Forgery::Unbalanced(extra) => postings.iter_mut().for_each(|p| if p.amount > 0 { p.amount += extra }),
            Forgery::Overflowing => {
                // Two credits of i64::MAX cannot be summed in 64 bits.
                let carol = keypair(4);
                *postings = vec![posting(&alice, -1), posting(&bob, i64::MAX), posting(&carol, i64::MAX)];
                icn_schemas::ledger::sort_postings(postings);
            }
            Forgery::DebitsAnother => postings.iter_mut().for_each(|p| p.amount = -p.amount),
            Forgery::Stranger => {
                let stranger = keypair(99);
                entry.author = stranger.did();
                entry.signer = stranger.did();
                signer = stranger.clone();
                let Body::Transfer { postings, .. } = &mut entry.body else { unreachable!("a transfer") };
                *postings = vec![posting(&stranger, -amount), posting(&bob, amount)];
                icn_schemas::ledger::sort_postings(postings);
            }
            Forgery::FlipByte(_) | Forgery::RemovedMember => {}
        }
        let mut bytes = sign_entry(&signer, entry);
        if let Forgery::FlipByte(at) = forgery {
            let i = at % bytes.len();
            bytes[i] ^= 0x21;
        }
        let before = (engine.trial_balance(&id).expect("tb"), engine.entries(&id).expect("entries"));
        let result = engine.ingest_entries(&id, vec![bytes.clone()]).expect("ingest").remove(0);
        // A flipped byte may land in the parents or co-op heads and make
        // the entry wait rather than fail; it is then never stored either.
        let refused_or_waiting = match &result {
            Err(_) => true,
            Ok(icn_engine::ledger::Ingest::Pending(_)) => matches!(forgery, Forgery::FlipByte(_)),
            Ok(_) => false,
        };
        prop_assert!(refused_or_waiting, "accepted a bad entry ({:?}): {:?}", forgery, result);
        let after = (engine.trial_balance(&id).expect("tb"), engine.entries(&id).expect("entries"));
        prop_assert!(before == after, "a refused entry changed the ledger");
        if let (Forgery::Overflowing, Err(e)) = (&forgery, &result) {
            prop_assert!(matches!(e, EntryRefusal::Overflow(_)), "{:?}", e);
        }
        let _ = SignedEntry::decode(&bytes);
    }
}
