//! Concurrent votes and closes across replicas converge on one outcome and
//! one execution.
//!
//! A co-op whose treasury domain has an admin (seed 1) and members 2–5 of
//! random weights, and one open budget proposal by member 2 (the treasury
//! pays member 3). Each member votes (and changes its vote) on its own
//! replica; the admin and the proposer close on theirs, often concurrently
//! with votes and with each other, and a close that accepts executes the
//! budget in that replica's ledger. Documents and ledger entries travel
//! between replicas at random. After a final exchange, every replica shows
//! the same proposal, close, receipt and ledger; the close's tally is the
//! count of the votes at its counted heads; the state is the close's
//! outcome; and the budget counts exactly once if it was accepted, never
//! otherwise.
//!
//! Member 4's DID key is stolen: the thief votes and closes on member 4's
//! replica, before and after the admin's emergency revoke (a step that may
//! come at any time) reaches it. Replicas still converge, member 4's vote
//! counts as the admin saw it when sealing, and a close by member 4 counts
//! only if the admin had seen it.
//!
//! A second property: member 5 rotates its key while a stale delegation of
//! its old key votes on replicas that have not heard of it.
//!
//! Set `PROPTEST_CASES` to run more cases.

use automerge::ChangeHash;
use icn_engine::ledger::Status;
use icn_engine::test_utils::{TestNode, keypair, new_domain, replicated_coop};
use icn_engine::{Engine, Signer};
use icn_schemas::domain::{self, Choice, DomainRole, Payload};
use icn_schemas::{DocId, Reader, coop, tally};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Vote {
        voter: u64,
        choice: u8,
    },
    /// The admin (1), the proposer (2) or the thief (4) closes.
    Close {
        closer: u64,
        now: i64,
    },
    /// The admin revokes every key of member 4, sealing it.
    Revoke,
    /// A member records the execution of the decision its replica sees.
    Execute {
        member: u64,
    },
    Exchange {
        from: usize,
        to: usize,
    },
}

fn steps(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            4 => (1u64..=5, 0u8..4).prop_map(|(voter, choice)| Step::Vote { voter, choice }),
            1 => (prop::sample::select(vec![1u64, 2, 4]), 0i64..200)
                .prop_map(|(closer, now)| Step::Close { closer, now }),
            1 => Just(Step::Revoke),
            1 => prop::sample::select(vec![2u64, 3, 5]).prop_map(|member| Step::Execute { member }),
            3 => (0..replicas, 0..replicas).prop_map(|(from, to)| Step::Exchange { from, to }),
        ],
        1..40,
    )
}

/// Each key writes on one replica only: a key on two devices would
/// equivocate.
fn home(seed: u64, replicas: usize) -> usize {
    seed as usize % replicas
}

fn setup(replicas: usize, weights: &[i64]) -> (Vec<TestNode>, DocId, DocId) {
    let (nodes, coop_id) = replicated_coop(replicas, 5);
    let admin = keypair(1);
    let id = nodes[0]
        .engine
        .create_domain(&Signer::Device(admin.clone()), &new_domain(&admin))
        .expect("domain");
    nodes[0]
        .engine
        .write(&id, &Signer::Device(admin), |tx| {
            for (seed, weight) in (2u64..).zip(weights) {
                domain::add_member(tx, &keypair(seed).did(), DomainRole::Member, *weight)?;
            }
            Ok(())
        })
        .expect("members");
    let proposer = Signer::Device(keypair(2));
    nodes[0]
        .engine
        .write(&id, &proposer, |tx| {
            domain::create_proposal(
                tx,
                &domain::NewProposal {
                    id: "p".into(),
                    title: "Buy a van".into(),
                    description: String::new(),
                    author: keypair(2).did(),
                    created_at: 1,
                    payload: Payload::Budget {
                        amount: 10,
                        recipient: keypair(3).did(),
                        unit: "hours".into(),
                        purpose: "a van".into(),
                    },
                },
            )
        })
        .expect("propose");
    nodes[0]
        .engine
        .write(&id, &proposer, |tx| domain::open_proposal(tx, "p", 0, 100))
        .expect("open");
    nodes[0]
        .engine
        .write(&coop_id, &Signer::Device(keypair(1)), |tx| {
            coop::set_treasury_domain(tx, &id)
        })
        .expect("treasury domain");
    for n in &nodes[1..] {
        exchange(&nodes[0].engine, &n.engine, &id, &coop_id);
    }
    (nodes, id, coop_id)
}

/// Everything `from` holds, to `to`: the domain, the co-op, the ledger.
fn exchange(from: &Engine, to: &Engine, id: &DocId, coop_id: &DocId) {
    let changes = from.changes_since(id, &[]).expect("changes");
    to.apply_remote(id, changes).expect("honest changes merge");
    let changes = from.changes_since(coop_id, &[]).expect("changes");
    to.apply_remote(coop_id, changes)
        .expect("honest changes merge");
    let entries = from.entries(coop_id).expect("entries");
    for result in to.ingest_entries(coop_id, entries).expect("ingest") {
        result.expect("honest entries are stored");
    }
}

/// The state of `proposal` is its close's outcome, and the close's tally is
/// the count of the votes at its counted heads.
fn recounts(engine: &Engine, id: &DocId, proposal: &domain::Proposal) -> Result<(), TestCaseError> {
    let Some(close) = &proposal.close else {
        return Ok(());
    };
    prop_assert_eq!(proposal.state, close.outcome.state());
    let counted: Vec<ChangeHash> = close.counted_heads.iter().map(|h| ChangeHash(*h)).collect();
    let recount = engine
        .read(id, |r| {
            let at = Reader::at(r.doc(), &counted);
            let d = domain::Domain::read(at).expect("domain at the counted heads");
            let t = tally::count(d.members.values(), &d.proposals["p"].votes);
            (t, tally::decide(&d.rules, &t))
        })
        .expect("held");
    prop_assert_eq!(recount, (close.tally, Some(close.outcome)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn concurrent_votes_and_closes_converge(
        (replicas, weights, steps) in (2usize..=4).prop_flat_map(|n| {
            (Just(n), prop::collection::vec(1i64..=3, 4), steps(n))
        })
    ) {
        let (nodes, id, coop_id) = setup(replicas, &weights);
        for step in &steps {
            match step {
                Step::Vote { voter, choice } => {
                    let choice = [Choice::For, Choice::Against, Choice::Abstain, Choice::Block][*choice as usize];
                    let engine = &nodes[home(*voter, replicas)].engine;
                    // Refused once the proposal is closed on that replica.
                    let _ = engine.write(&id, &Signer::Device(keypair(*voter)), |tx| {
                        domain::cast_vote(tx, "p", &keypair(*voter).did(), choice, None, 5)
                    });
                }
                Step::Close { closer, now } => {
                    let engine = &nodes[home(*closer, replicas)].engine;
                    let _ = engine.close_proposal(&id, &Signer::Device(keypair(*closer)), "p", *now);
                }
                Step::Revoke => {
                    let revocation = coop::Revocation {
                        reason: "stolen".into(),
                        at: 50,
                        by: keypair(1).did(),
                    };
                    // Refused once done.
                    let _ = nodes[home(1, replicas)].engine.revoke_all_devices(
                        &coop_id,
                        &Signer::Device(keypair(1)),
                        &keypair(4).did(),
                        &revocation,
                    );
                }
                Step::Execute { member } => {
                    let engine = &nodes[home(*member, replicas)].engine;
                    // Refused when not closed, not accepted, or executed already here.
                    let _ = engine.execute_decision(&coop_id, &Signer::Device(keypair(*member)), &id, "p");
                }
                Step::Exchange { from, to } => exchange(&nodes[*from].engine, &nodes[*to].engine, &id, &coop_id),
            }
        }
        for a in &nodes {
            for b in &nodes {
                exchange(&a.engine, &b.engine, &id, &coop_id);
            }
        }
        let proposal = |n: &TestNode| {
            n.engine.domain(&id).expect("held").expect("valid").proposals["p"].clone()
        };
        let reference = proposal(&nodes[0]);
        let receipt = nodes[0].engine.receipt(&id, "p");
        let ledger = nodes[0].engine.trial_balance(&coop_id).expect("ledger");
        for n in &nodes[1..] {
            prop_assert_eq!(&proposal(n), &reference);
            prop_assert_eq!(&n.engine.receipt(&id, "p"), &receipt);
            prop_assert_eq!(&n.engine.trial_balance(&coop_id).expect("ledger"), &ledger);
        }
        // Executed exactly once if accepted, never otherwise.
        let counted = match &receipt {
            Some(r) => nodes[0]
                .engine
                .entries_by_decision(&coop_id, &r.hash())
                .expect("by decision")
                .iter()
                .filter(|e| e.status == Status::Applied)
                .count(),
            None => 0,
        };
        let accepted = receipt.as_ref().is_some_and(|r| r.outcome == tally::Outcome::Accepted);
        prop_assert_eq!(counted, usize::from(accepted));
        let recipient = (keypair(3).did().to_string(), "hours".to_owned());
        let paid = ledger.accounts.get(&recipient).copied().unwrap_or(0);
        prop_assert_eq!(paid, if accepted { 10 } else { 0 });
        recounts(&nodes[0].engine, &id, &reference)?;
        // Nothing the thief wrote after the seal counts.
        let sealed = nodes[0]
            .engine
            .read(&id, |r| {
                let seal = domain::seal_of(r, &keypair(4).did())?;
                let at = Reader::at(r.doc(), &seal);
                Some(domain::Proposal::read(at, "p").expect("proposal at the seal"))
            })
            .flatten();
        if let Some(seen) = sealed {
            prop_assert_eq!(
                reference.votes.get(&keypair(4).did()),
                seen.votes.get(&keypair(4).did())
            );
            if let Some(close) = reference.close.as_ref().filter(|c| c.closed_by == keypair(4).did()) {
                prop_assert_eq!(seen.close.as_ref(), Some(close));
            }
        }
    }
}

/// What happens in the rotation property: votes, closes, member 5's
/// rotation, and the old key's stale delegation voting.
#[derive(Debug, Clone)]
enum RotationStep {
    /// Members 2–5 vote (member 5 with whichever key holds its vote on its
    /// replica); never `block`, which only the stale delegation casts.
    Vote {
        voter: u64,
        choice: u8,
    },
    /// The admin (1) or the proposer (2) closes.
    Close {
        closer: u64,
        now: i64,
    },
    /// Member 5 rotates from its DID key to key 55, on its own replica.
    Rotate,
    /// A node holding a delegation member 5's DID key signed before the
    /// rotation votes `block` for member 5, on its own replica.
    Stale,
    Exchange {
        from: usize,
        to: usize,
    },
}

fn rotation_steps(replicas: usize) -> impl Strategy<Value = Vec<RotationStep>> {
    prop::collection::vec(
        prop_oneof![
            4 => (2u64..=5, 0u8..3).prop_map(|(voter, choice)| RotationStep::Vote { voter, choice }),
            1 => (prop::sample::select(vec![1u64, 2]), 0i64..200)
                .prop_map(|(closer, now)| RotationStep::Close { closer, now }),
            1 => Just(RotationStep::Rotate),
            2 => Just(RotationStep::Stale),
            3 => (0..replicas, 0..replicas).prop_map(|(from, to)| RotationStep::Exchange { from, to }),
        ],
        1..40,
    )
}

/// How member 5 writes on its replica: its DID key until it rotated there.
fn member5(engine: &Engine, coop_id: &DocId) -> Signer {
    let rotated = engine
        .read(coop_id, |r| coop::key_of(r, &keypair(5).did()))
        .flatten()
        == Some(keypair(55).did());
    if rotated {
        Signer::member_key(keypair(5).did(), keypair(55))
    } else {
        Signer::Device(keypair(5))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Member 5 rotates its key while it and a stale delegation of its old
    /// key vote on replicas that have and have not heard of it, in any
    /// order: every replica ends with the same proposal, close and ledger,
    /// each close's tally is the count at its heads, and member 5's vote,
    /// once the rotation is known, is never the stale delegation's unless
    /// the rotation had seen it.
    #[test]
    fn a_rotation_converges_and_the_old_keys_stale_votes_count_for_nothing_unseen(
        (replicas, weights, steps) in (2usize..=4).prop_flat_map(|n| {
            (Just(n), prop::collection::vec(1i64..=3, 4), rotation_steps(n))
        })
    ) {
        let (nodes, id, coop_id) = setup(replicas, &weights);
        let stale_node = keypair(60);
        let stale = Signer::Delegated {
            node: stale_node.clone(),
            delegation: icn_engine::test_utils::delegation(
                &keypair(5),
                &stale_node,
                &[icn_schemas::Scope::GovWrite],
                0,
                4_000_000_000,
            ),
        };
        for step in &steps {
            match step {
                RotationStep::Vote { voter, choice } => {
                    let choice = [Choice::For, Choice::Against, Choice::Abstain][*choice as usize];
                    let engine = &nodes[home(*voter, replicas)].engine;
                    let signer = if *voter == 5 {
                        member5(engine, &coop_id)
                    } else {
                        Signer::Device(keypair(*voter))
                    };
                    // Refused once the proposal is closed on that replica.
                    let _ = engine.cast_vote(&id, &signer, "p", &keypair(*voter).did(), choice, None, 5);
                }
                RotationStep::Close { closer, now } => {
                    let engine = &nodes[home(*closer, replicas)].engine;
                    let _ = engine.close_proposal(&id, &Signer::Device(keypair(*closer)), "p", *now);
                }
                RotationStep::Rotate => {
                    let new = keypair(55);
                    // Refused once done.
                    let _ = nodes[home(5, replicas)].engine.rotate_key(
                        &coop_id,
                        &Signer::Device(keypair(5)),
                        &new.did(),
                        &new.device_proof(&keypair(5).did()),
                        50,
                    );
                }
                RotationStep::Stale => {
                    let engine = &nodes[home(60, replicas)].engine;
                    // Refused where the rotation is known, or the proposal closed.
                    let _ = engine.cast_vote(&id, &stale, "p", &keypair(5).did(), Choice::Block, None, 6);
                }
                RotationStep::Exchange { from, to } => exchange(&nodes[*from].engine, &nodes[*to].engine, &id, &coop_id),
            }
        }
        for a in &nodes {
            for b in &nodes {
                exchange(&a.engine, &b.engine, &id, &coop_id);
            }
        }
        let proposal = |n: &TestNode| {
            n.engine.domain(&id).expect("held").expect("valid").proposals["p"].clone()
        };
        let reference = proposal(&nodes[0]);
        let ledger = nodes[0].engine.trial_balance(&coop_id).expect("ledger");
        for n in &nodes[1..] {
            prop_assert_eq!(&proposal(n), &reference);
            prop_assert_eq!(&n.engine.trial_balance(&coop_id).expect("ledger"), &ledger);
            prop_assert_eq!(n.engine.heads(&id), nodes[0].engine.heads(&id));
        }
        recounts(&nodes[0].engine, &id, &reference)?;
        // Once rotated, a `block` (only the stale delegation casts it)
        // counts only as the rotation saw it.
        let rotated = nodes[0]
            .engine
            .read(&id, |r| domain::key_of(r, &keypair(5).did()))
            .flatten()
            == Some(keypair(55).did());
        let vote = reference.votes.get(&keypair(5).did());
        if rotated && vote.is_some_and(|v| v.choice == Choice::Block) {
            let at_rotation = nodes[0]
                .engine
                .read(&id, |r| {
                    let heads = domain::retirements(r, &keypair(5).did(), &keypair(5).did())
                        .into_iter()
                        .next()?;
                    let at = Reader::at(r.doc(), &heads);
                    Some(domain::Proposal::read(at, "p")?.votes.get(&keypair(5).did()).cloned())
                })
                .flatten()
                .flatten();
            prop_assert_eq!(vote.cloned(), at_rotation, "a stale vote the rotation had not seen counts");
        }
    }
}
