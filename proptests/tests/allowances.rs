//! Bounded offline credit: a device that spends within its allowance is
//! never conflicted, whatever the member's other keys do concurrently.
//!
//! Member `keypair(2)` has a credit limit of 100 hours. Replica 0 holds its
//! DID key, which grants allowances and spends general credit. Every other
//! replica holds one device of the member and one delegate node, which spend
//! (from an allowance when the member has granted any, else general credit)
//! and give back unspent allowance. Amounts are large against the limit, so
//! general spends often overspend concurrently. Entries travel in random
//! batches and orders, some twice.
//!
//! After a final exchange: every spend that its device recorded from its
//! allowance counts on every replica; the replicas agree on balances,
//! allowances and conflicted entries; each unit sums to zero; and the member
//! never owes more than its limit, reserved allowances included.
//!
//! Nothing in the steps pays the member: a grant is judged against the
//! balance it was drawn from, and `docs/ledger.md` says what a payer's
//! conflicted credit can do to it.
//!
//! Set `PROPTEST_CASES` to run more cases.

use icn_engine::ledger::{Settle, Status};
use icn_engine::test_utils::{
    TestNode, delegation, exchange_entries as exchange, keypair, replica_device, replicated_coop,
};
use icn_engine::{Engine, Keypair, Signer};
use icn_schemas::ledger::{Body, EntryId};
use icn_schemas::{DocId, Scope};
use proptest::prelude::*;

const MEMBER: u64 = 2;
const PAYEE: u64 = 3;

#[derive(Debug, Clone)]
enum Step {
    /// The DID key grants `amount` to the device (or delegate) of a replica.
    Grant {
        replica: usize,
        delegate: bool,
        amount: i64,
    },
    /// The DID key spends general credit.
    OwnerSpend { amount: i64 },
    /// A device or delegate spends on its replica.
    Spend {
        replica: usize,
        delegate: bool,
        amount: i64,
    },
    /// A device or delegate gives back unspent allowance.
    Release {
        replica: usize,
        delegate: bool,
        amount: i64,
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
    let writer = (1..replicas, any::<bool>());
    prop::collection::vec(
        prop_oneof![
            2 => (writer.clone(), 10i64..=60).prop_map(|((replica, delegate), amount)| Step::Grant { replica, delegate, amount }),
            1 => (10i64..=60).prop_map(|amount| Step::OwnerSpend { amount }),
            4 => (writer.clone(), 5i64..=40).prop_map(|((replica, delegate), amount)| Step::Spend { replica, delegate, amount }),
            1 => (writer, 5i64..=30).prop_map(|((replica, delegate), amount)| Step::Release { replica, delegate, amount }),
            3 => (0..replicas, 0..replicas, 1usize..5, any::<u64>(), any::<bool>())
                .prop_map(|(from, to, batch, seed, duplicate)| Step::Exchange { from, to, batch, seed, duplicate }),
        ],
        1..60,
    )
}

fn delegate_key(replica: usize) -> Keypair {
    keypair(500 + replica as u64)
}

/// The device or the delegate of `replica`, writing for the member.
fn writer(replica: usize, delegate: bool) -> Signer {
    if delegate {
        let node = delegate_key(replica);
        Signer::Delegated {
            delegation: delegation(
                &keypair(MEMBER),
                &node,
                &[Scope::LedgerWrite],
                0,
                4_000_000_000,
            ),
            node,
        }
    } else {
        Signer::Device(replica_device(MEMBER, replica))
    }
}

fn writer_key(replica: usize, delegate: bool) -> Keypair {
    if delegate {
        delegate_key(replica)
    } else {
        replica_device(MEMBER, replica)
    }
}

fn pay(amount: i64) -> Settle {
    Settle {
        to: keypair(PAYEE).did(),
        amount,
        unit: "hours".into(),
        memo: String::new(),
    }
}

fn from_allowance(engine: &Engine, id: &DocId, entry: &EntryId) -> bool {
    let (e, _) = engine.entry(id, entry).expect("entry").expect("held");
    matches!(
        e.entry.body,
        Body::Transfer {
            from_allowance: true,
            ..
        }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    #[test]
    fn allowance_spends_are_never_conflicted(
        (replicas, steps) in (2usize..=5).prop_flat_map(|n| (Just(n), steps(n)))
    ) {
        let (nodes, id): (Vec<TestNode>, DocId) = replicated_coop(replicas, PAYEE);
        let owner = Signer::Device(keypair(MEMBER));
        let mut protected = Vec::new();
        for step in &steps {
            match step {
                Step::Grant { replica, delegate, amount } => {
                    let device = writer_key(*replica, *delegate).did();
                    let _ = nodes[0].engine.grant_allowance(&id, &owner, &device, "hours", *amount);
                }
                Step::OwnerSpend { amount } => {
                    let _ = nodes[0].engine.settle(&id, &owner, &pay(*amount));
                }
                Step::Spend { replica, delegate, amount } => {
                    let engine = &nodes[*replica].engine;
                    // Refused locally when over what this replica sees.
                    if let Ok((entry, status)) = engine.settle(&id, &writer(*replica, *delegate), &pay(*amount))
                        && from_allowance(engine, &id, &entry)
                    {
                        prop_assert_eq!(status, Status::Applied);
                        protected.push(entry);
                    }
                }
                Step::Release { replica, delegate, amount } => {
                    let _ = nodes[*replica].engine.release_allowance(&id, &writer(*replica, *delegate), "hours", *amount);
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
        let member = keypair(MEMBER).did();
        let reference = nodes[0].engine.trial_balance(&id).expect("trial balance");
        let position = nodes[0].engine.position(&id, &member).expect("position");
        prop_assert!(reference.totals.values().all(|t| *t == 0), "a unit does not sum to zero");
        for n in &nodes {
            prop_assert_eq!(&n.engine.trial_balance(&id).expect("trial balance"), &reference);
            prop_assert_eq!(&n.engine.position(&id, &member).expect("position"), &position);
            for entry in &protected {
                let (_, status) = n.engine.entry(&id, entry).expect("entry").expect("held");
                prop_assert_eq!(status, Status::Applied, "a spend within its allowance was conflicted");
            }
        }
        // The fold is stored as it is folded: a restart reads the same.
        let mut nodes = nodes;
        let restarted = nodes.pop().expect("a replica").reopen();
        prop_assert_eq!(&restarted.engine.trial_balance(&id).expect("trial balance"), &reference);
        prop_assert_eq!(&restarted.engine.position(&id, &member).expect("position"), &position);
        for p in &position {
            prop_assert!(p.balance >= -p.credit_limit, "the member owes more than its limit: {:?}", p);
            prop_assert!(p.available >= 0, "allowances reserve more than the member has: {:?}", p);
            prop_assert_eq!(p.reserved, p.allowances.values().sum::<i64>());
        }
    }
}
