//! Membership and config-change decisions: applied to the co-op document
//! once on every replica, and listed in the registry with every domain of
//! the co-op.

use icn_schemas::coop::{self, MemberStatus, Role};
use icn_schemas::domain::Payload;
use icn_schemas::settings;

use super::{TestNode, dev, governed, hours, keypair};
use crate::test_utils::new_domain;

fn membership(action: &str, did: icn_schemas::Did, role: Option<&str>) -> Payload {
    Payload::Membership {
        action: action.into(),
        did,
        role: role.map(Into::into),
    }
}

fn config(key: &str, value: &str) -> Payload {
    Payload::ConfigChange {
        key: key.into(),
        value: value.into(),
    }
}

fn standing(
    node: &TestNode,
    coop: &icn_schemas::DocId,
    did: &icn_schemas::Did,
) -> Option<coop::Standing> {
    node.engine
        .read(coop, |r| coop::Standing::read(r, did))
        .flatten()
}

#[test]
fn an_admitted_member_removed_later_is_not_readmitted_by_the_decision() {
    let carol = keypair(4);
    let (node, coop, domain, admin, _alice, _bob) =
        governed(membership("add", carol.did(), Some("member")));
    node.engine
        .close_proposal(&domain, &dev(&admin), "p", 5)
        .expect("close: the admin's node applies it");
    assert!(standing(&node, &coop, &carol.did()).is_some_and(|s| s.is_active()));
    node.engine
        .set_member_status(&coop, &dev(&admin), &carol.did(), MemberStatus::Removed)
        .expect("removed by an admin");
    // Another admin node, or a sweep, seeing the close again applies nothing.
    assert!(
        !node
            .engine
            .apply_decision(&coop, &dev(&admin), &domain, "p")
            .expect("a no-op")
    );
    node.engine.set_executor(dev(&admin));
    assert_eq!(node.engine.execute_pending(1_000), 0);
    assert_eq!(
        standing(&node, &coop, &carol.did()).map(|s| s.status),
        Some(MemberStatus::Removed)
    );
}

#[test]
fn a_decision_missed_by_every_admin_is_applied_by_the_next_sweep() {
    let carol = keypair(4);
    let (node, coop, domain, admin, alice, _bob) = governed(membership("add", carol.did(), None));
    // Alice closes; her key cannot write the co-op document.
    node.engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close");
    assert!(standing(&node, &coop, &carol.did()).is_none());
    // A member's node sweeps and leaves it for an admin.
    node.engine.set_executor(dev(&alice));
    assert_eq!(node.engine.execute_pending(1_000), 0);
    node.engine.set_executor(dev(&admin));
    assert_eq!(node.engine.execute_pending(1_000), 1);
    assert_eq!(node.engine.execute_pending(1_000), 0, "once");
    assert_eq!(
        standing(&node, &coop, &carol.did()).map(|s| s.role),
        Some(Role::Member)
    );
    let receipt = node.engine.receipt(&domain, "p").expect("closed");
    assert!(
        node.engine
            .read(&coop, |r| settings::decision_applied(r, &receipt.hash()))
            .expect("co-op")
    );
}

#[test]
fn two_admin_nodes_applying_one_decision_converge() {
    let carol = keypair(4);
    let (node, coop, domain, admin, alice, _bob) =
        governed(membership("add", carol.did(), Some("observer")));
    node.engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close");
    let other = super::replica(&node.engine, &coop);
    other
        .engine
        .apply_remote(
            &domain,
            node.engine.changes_since(&domain, &[]).expect("domain"),
        )
        .expect("domain");
    let admin2 = keypair(9);
    node.engine
        .write(&coop, &dev(&admin), |tx| {
            coop::add_member(tx, &admin2.did(), Role::Admin, 3)
        })
        .expect("a second admin");
    other
        .engine
        .apply_remote(&coop, node.engine.changes_since(&coop, &[]).expect("co-op"))
        .expect("co-op");
    // Each admin's node applies it before hearing of the other.
    assert!(
        node.engine
            .apply_decision(&coop, &dev(&admin), &domain, "p")
            .expect("one")
    );
    assert!(
        other
            .engine
            .apply_decision(&coop, &dev(&admin2), &domain, "p")
            .expect("two")
    );
    for (from, to) in [(&node, &other), (&other, &node)] {
        to.engine
            .apply_remote(&coop, from.engine.changes_since(&coop, &[]).expect("co-op"))
            .expect("merge");
    }
    let view = |n: &TestNode| {
        n.engine
            .read(&coop, |r| coop::Coop::read(r).expect("co-op"))
            .expect("held")
    };
    assert_eq!(view(&node), view(&other));
    assert_eq!(
        standing(&node, &coop, &carol.did()).map(|s| (s.role, s.status)),
        Some((Role::Observer, MemberStatus::Active))
    );
}

#[test]
fn a_role_change_and_a_removal_execute() {
    let (node, coop, domain, admin, alice, _bob) =
        governed(membership("role", keypair(2).did(), Some("admin")));
    node.engine
        .close_proposal(&domain, &dev(&admin), "p", 5)
        .expect("close");
    assert_eq!(
        standing(&node, &coop, &alice.did()).map(|s| s.role),
        Some(Role::Admin)
    );
    let (node, coop, domain, admin, alice, _bob) =
        governed(membership("remove", keypair(2).did(), None));
    node.engine
        .close_proposal(&domain, &dev(&admin), "p", 5)
        .expect("close");
    assert_eq!(
        standing(&node, &coop, &alice.did()).map(|s| s.status),
        Some(MemberStatus::Removed)
    );
}

#[test]
fn config_changes_set_units_rates_and_credit_limits() {
    let (node, coop, domain, admin, _alice, bob) =
        governed(config(&format!("credit_limit/{}", keypair(3).did()), "40"));
    node.engine
        .close_proposal(&domain, &dev(&admin), "p", 5)
        .expect("close");
    assert_eq!(hours(&node.engine, &coop, &bob).credit_limit, 40);

    let (node, coop, domain, admin, ..) = governed(config("units/kwh", "3"));
    node.engine
        .close_proposal(&domain, &dev(&admin), "p", 5)
        .expect("close");
    let units = node
        .engine
        .read(&coop, |r| coop::Coop::read(r).expect("co-op").policy.units)
        .expect("held");
    assert_eq!(units.get("kwh").map(|u| u.scale), Some(3));

    // A key no decision sets, or a rate from a unit to itself, is refused
    // when proposed, not when it would execute.
    for (i, (key, value)) in [("default_credit_limt", "10"), ("rates/hours/hours", "1/2")]
        .into_iter()
        .enumerate()
    {
        let refused = node.engine.write(&domain, &dev(&keypair(2)), |tx| {
            icn_schemas::domain::create_proposal(
                tx,
                &icn_schemas::domain::NewProposal {
                    id: format!("q{i}"),
                    title: "A typo".into(),
                    description: String::new(),
                    author: keypair(2).did(),
                    created_at: 1,
                    payload: config(key, value),
                },
            )
        });
        assert!(refused.is_err(), "{key}={value} is refused");
    }
}

#[test]
fn the_registry_lists_every_domain_of_the_co_op() {
    let (node, coop, domain, admin, alice, _bob) = governed(config("default_credit_limit", "120"));
    node.engine
        .close_proposal(&domain, &dev(&admin), "p", 5)
        .expect("close");
    // A second domain, attached to the co-op, decides something too.
    let advice = node
        .engine
        .create_domain(
            &dev(&admin),
            &icn_schemas::domain::NewDomain {
                id: "garden".into(),
                coop_id: Some(coop.to_string()),
                ..new_domain(&admin)
            },
        )
        .expect("domain");
    node.engine
        .write(&advice, &dev(&admin), |tx| {
            icn_schemas::domain::create_proposal(
                tx,
                &icn_schemas::domain::NewProposal {
                    id: "raise".into(),
                    title: "Raise the limit to 500".into(),
                    description: String::new(),
                    author: admin.did(),
                    created_at: 1,
                    payload: config("default_credit_limit", "500"),
                },
            )
        })
        .expect("proposal");
    node.engine
        .write(&advice, &dev(&admin), |tx| {
            icn_schemas::domain::open_proposal(tx, "raise", 1, 100)
        })
        .expect("open");
    node.engine
        .cast_vote(
            &advice,
            &dev(&admin),
            "raise",
            &admin.did(),
            icn_schemas::domain::Choice::For,
            None,
            2,
        )
        .expect("vote");
    let _ = alice;
    node.engine
        .close_proposal(&advice, &dev(&admin), "raise", 6)
        .expect("close");
    let registry = node.engine.registry(&coop).expect("registry");
    assert_eq!(registry.len(), 2);
    let advisory: Vec<_> = registry
        .iter()
        .map(|d| (d.receipt.domain, d.advisory))
        .collect();
    assert!(advisory.contains(&(domain, false)));
    assert!(advisory.contains(&(advice, true)));
    // Only the treasury domain's decision took effect.
    let limit = node
        .engine
        .read(&coop, |r| {
            coop::Coop::read(r)
                .expect("co-op")
                .policy
                .default_credit_limit
        })
        .expect("held");
    assert_eq!(limit, 120);
    let hash = registry
        .iter()
        .find(|d| d.advisory)
        .expect("advice")
        .receipt
        .hash();
    let trace = node
        .engine
        .trace(&coop, &hash)
        .expect("trace")
        .expect("known");
    assert!(!trace.executed);
    assert!(trace.reason.expect("why").contains("advice"));
}

#[test]
fn an_execution_of_a_close_the_sealer_had_not_seen_stops_counting() {
    use crate::test_utils::exchange_entries;
    let (node, coop, domain, admin, alice, bob) = governed(super::budget(&keypair(2), 20));
    let sync = |from: &TestNode, to: &TestNode| {
        for doc in [&coop, &domain] {
            let changes = from.engine.changes_since(doc, &[]).expect("changes");
            to.engine.apply_remote(doc, changes).expect("merge");
        }
        exchange_entries(&from.engine, &to.engine, &coop, 8, 1, false);
    };
    let (thief, honest) = (TestNode::new(), TestNode::new());
    sync(&node, &thief);
    sync(&node, &honest);
    // Bob's DID key is stolen; the admin revokes it (sealing bob in the
    // ledger and the treasury domain) before the thief's close reaches it.
    let revocation = coop::Revocation {
        reason: "stolen".into(),
        at: 50,
        by: admin.did(),
    };
    node.engine
        .revoke_all_devices(&coop, &dev(&admin), &bob.did(), &revocation)
        .expect("emergency revoke");
    thief
        .engine
        .close_proposal(&domain, &dev(&bob), "p", 100)
        .expect("the thief closes where no seal is known");
    // Alice's node hears of the close first and carries it out.
    let close = thief.engine.changes_since(&domain, &[]).expect("close");
    honest.engine.apply_remote(&domain, close).expect("close");
    honest.engine.set_executor(dev(&alice));
    assert_eq!(
        honest
            .engine
            .execute_pending(100 + crate::EXECUTION_GRACE_SECONDS),
        1
    );
    assert_eq!(super::balance(&honest.engine, &coop, &alice), 20);
    // Then the domain's seal arrives: the close was not seen by its sealer,
    // so it decides nothing, and its execution stops counting.
    let sealed = node.engine.changes_since(&domain, &[]).expect("seal");
    honest.engine.apply_remote(&domain, sealed).expect("seal");
    let state = honest
        .engine
        .read(&domain, |r| icn_schemas::domain::Proposal::state(r, "p"))
        .flatten();
    assert_eq!(state, Some(icn_schemas::domain::ProposalState::Open));
    assert_eq!(super::balance(&honest.engine, &coop, &alice), 0);
    // The co-op's revocation and ledger seals change nothing more.
    sync(&node, &honest);
    assert_eq!(super::balance(&honest.engine, &coop, &alice), 0);
}
