//! A thief with a member's DID key, against domain seals: what the sealer
//! had seen counts, nothing the thief wrote after does, in any order.

use icn_schemas::DocId;
use icn_schemas::coop::{self, MemberStatus, Revocation, Role};
use icn_schemas::domain::{self, Choice, DomainRole, ProposalState};
use icn_schemas::tally::Outcome;

use crate::test_utils::{TestNode, keypair, new_coop, new_domain};
use crate::{Keypair, Signer};

fn dev(k: &Keypair) -> Signer {
    Signer::Device(k.clone())
}

/// A co-op of admin 1, alice 2 and bob 3, and a domain of the co-op where
/// all three vote (the admin administers it); proposal "p" by alice is
/// open until 20, and alice and bob voted for it.
struct Gov {
    node: TestNode,
    coop: DocId,
    domain: DocId,
    admin: Keypair,
    alice: Keypair,
    bob: Keypair,
}

fn gov() -> Gov {
    let node = TestNode::new();
    let (admin, alice, bob) = (keypair(1), keypair(2), keypair(3));
    let e = &node.engine;
    let coop = e
        .create_coop(&dev(&admin), &new_coop(&admin))
        .expect("co-op");
    for m in [&alice, &bob] {
        e.write(&coop, &dev(&admin), |tx| {
            coop::add_member(tx, &m.did(), Role::Member, 1)
        })
        .expect("member");
    }
    let domain = e
        .create_domain(
            &dev(&admin),
            &domain::NewDomain {
                coop_id: Some(coop.to_string()),
                ..new_domain(&admin)
            },
        )
        .expect("domain");
    e.write(&domain, &dev(&admin), |tx| {
        domain::add_member(tx, &alice.did(), DomainRole::Member, 1)?;
        domain::add_member(tx, &bob.did(), DomainRole::Member, 1)
    })
    .expect("domain members");
    e.write(&domain, &dev(&alice), |tx| {
        domain::create_proposal(
            tx,
            &domain::NewProposal {
                id: "p".into(),
                title: "Paint the hall".into(),
                description: String::new(),
                author: alice.did(),
                created_at: 1,
                payload: domain::Payload::Text {
                    body: "Green".into(),
                },
            },
        )
    })
    .expect("proposal");
    e.write(&domain, &dev(&alice), |tx| {
        domain::open_proposal(tx, "p", 1, 20)
    })
    .expect("open");
    for voter in [&alice, &bob] {
        e.write(&domain, &dev(voter), |tx| {
            domain::cast_vote(tx, "p", &voter.did(), Choice::For, None, 2)
        })
        .expect("vote");
    }
    Gov {
        node,
        coop,
        domain,
        admin,
        alice,
        bob,
    }
}

impl Gov {
    /// A node holding the domain as it stands now: where the thief writes.
    fn thief_replica(&self) -> TestNode {
        let other = TestNode::new();
        other
            .engine
            .apply_remote(&self.domain, self.changes())
            .expect("domain history");
        other
    }

    fn changes(&self) -> Vec<crate::SignedChange> {
        self.node
            .engine
            .changes_since(&self.domain, &[])
            .expect("changes")
    }

    fn bob_sealed(&self) -> bool {
        self.node
            .engine
            .read(&self.domain, |r| domain::seal_of(r, &self.bob.did()))
            .flatten()
            .is_some()
    }

    fn proposal(&self) -> domain::Proposal {
        proposal(&self.node, &self.domain)
    }
}

fn proposal(node: &TestNode, domain: &DocId) -> domain::Proposal {
    node.engine
        .domain(domain)
        .expect("held")
        .expect("valid")
        .proposals["p"]
        .clone()
}

/// On a replica that has not seen the seal, bob's stolen key turns his vote
/// against and closes the proposal once voting time is over (any member
/// may); then the thief's changes reach the sealer's node.
fn thief_writes(g: &Gov, replica: &TestNode) {
    replica
        .engine
        .write(&g.domain, &dev(&g.bob), |tx| {
            domain::cast_vote(tx, "p", &g.bob.did(), Choice::Against, None, 3)
        })
        .expect("the thief votes where no seal is known");
    let (close, _) = replica
        .engine
        .close_proposal(&g.domain, &dev(&g.bob), "p", 25)
        .expect("the thief closes where no seal is known");
    assert_eq!(close.outcome, Outcome::Rejected, "its own count");
    // They reach the sealer's node, which keeps them: valid at the heads
    // they cite.
    g.node
        .engine
        .apply_remote(
            &g.domain,
            replica.engine.changes_since(&g.domain, &[]).expect("thief"),
        )
        .expect("valid at the heads they cite, so kept");
}

#[test]
fn a_stolen_did_key_votes_and_closes_for_nothing_after_its_seal() {
    let g = gov();
    let replica = g.thief_replica();
    // The emergency revoke seals bob in the co-op's domain at once: the
    // admin administers it.
    let revocation = Revocation {
        reason: "stolen".into(),
        at: 10,
        by: g.admin.did(),
    };
    g.node
        .engine
        .revoke_all_devices(&g.coop, &dev(&g.admin), &g.bob.did(), &revocation)
        .expect("emergency revoke");
    assert!(g.bob_sealed(), "sealed in the domain");
    thief_writes(&g, &replica);
    let p = g.proposal();
    assert_eq!(
        p.state,
        ProposalState::Open,
        "the thief's close counts for nothing"
    );
    assert_eq!(p.close, None);
    assert_eq!(
        p.votes[&g.bob.did()].choice,
        Choice::For,
        "bob's vote is the one the admin had seen"
    );
    // An honest close counts bob's vote as seen, and stands.
    let (close, _) = g
        .node
        .engine
        .close_proposal(&g.domain, &dev(&g.alice), "p", 26)
        .expect("alice closes");
    assert_eq!(close.outcome, Outcome::Accepted);
    assert_eq!(close.tally.for_, 2);
    assert_eq!(g.proposal().close, Some(close));

    // A replica that got the thief's changes first and the seal after ends
    // the same.
    let late = TestNode::new();
    late.engine
        .apply_remote(
            &g.domain,
            replica.engine.changes_since(&g.domain, &[]).expect("thief"),
        )
        .expect("thief first");
    assert_eq!(
        proposal(&late, &g.domain).state,
        ProposalState::Rejected,
        "before the seal, the thief's close stands"
    );
    late.engine
        .apply_remote(&g.domain, g.changes())
        .expect("then the rest");
    assert_eq!(late.engine.heads(&g.domain), g.node.engine.heads(&g.domain));
    assert_eq!(proposal(&late, &g.domain), g.proposal());
}

#[test]
fn a_rotated_key_votes_and_closes_and_the_retired_key_counts_for_nothing_unseen() {
    let g = gov();
    let replica = g.thief_replica();
    let e = &g.node.engine;
    let new = keypair(40);
    let rotated = e
        .rotate_key(
            &g.coop,
            &dev(&g.bob),
            &new.did(),
            &new.device_proof(&g.bob.did()),
            10,
        )
        .expect("rotate");
    assert_eq!(rotated.domains, vec![g.domain]);
    assert!(!g.bob_sealed(), "a rotation seals no member: bob votes on");
    assert_eq!(
        e.read(&g.domain, |r| domain::key_of(r, &g.bob.did()))
            .flatten(),
        Some(new.did())
    );
    assert_eq!(
        g.proposal().votes[&g.bob.did()].choice,
        Choice::For,
        "what the old key voted before the rotation counts"
    );
    // A node holding a delegation the old key signed, on a replica that has
    // not heard of the rotation, votes against and closes: valid where it
    // writes, counted nowhere here. (The old key itself writing there would
    // fork its own Automerge history, which every replica refuses in
    // whichever order it comes: see docs/permissions.md.)
    let stale = Signer::Delegated {
        node: keypair(41),
        delegation: crate::test_utils::delegation(
            &g.bob,
            &keypair(41),
            &[icn_schemas::Scope::GovWrite],
            0,
            4_000_000_000,
        ),
    };
    replica
        .engine
        .cast_vote(
            &g.domain,
            &stale,
            "p",
            &g.bob.did(),
            Choice::Against,
            None,
            3,
        )
        .expect("an old delegation votes where no rotation is known");
    let (close, _) = replica
        .engine
        .close_proposal(&g.domain, &stale, "p", 25)
        .expect("and closes");
    assert_eq!(close.outcome, Outcome::Rejected, "its own count");
    e.apply_remote(
        &g.domain,
        replica.engine.changes_since(&g.domain, &[]).expect("stale"),
    )
    .expect("valid at the heads they cite, so kept");
    let p = g.proposal();
    assert_eq!(p.state, ProposalState::Open);
    assert_eq!(p.close, None);
    assert_eq!(p.votes[&g.bob.did()].choice, Choice::For);
    // Neither the old key nor its delegation writes on the heads after the
    // rotation.
    for old in [&dev(&g.bob), &stale] {
        assert!(
            e.cast_vote(&g.domain, old, "p", &g.bob.did(), Choice::Against, None, 26)
                .is_err()
        );
    }
    // A vote must record the key that signs it.
    assert!(
        e.write(&g.domain, &dev(&g.alice), |tx| {
            domain::cast_vote_by(tx, "p", &g.alice.did(), &new.did(), Choice::For, None, 26)
        })
        .is_err(),
        "alice cannot pass her vote off as another key's"
    );
    // The new key votes and closes.
    let as_new = Signer::member_key(g.bob.did(), new.clone());
    e.cast_vote(
        &g.domain,
        &as_new,
        "p",
        &g.bob.did(),
        Choice::Against,
        None,
        26,
    )
    .expect("the new key votes");
    assert_eq!(g.proposal().votes[&g.bob.did()].choice, Choice::Against);
    let (close, _) = e
        .close_proposal(&g.domain, &as_new, "p", 27)
        .expect("the new key closes once voting time is over");
    assert_eq!((close.tally.for_, close.tally.against), (1, 1));
    assert_eq!(g.proposal().close, Some(close));

    // A replica that got the stale delegation's changes first and the
    // rotation after ends the same.
    let late = TestNode::new();
    late.engine
        .apply_remote(
            &g.domain,
            replica.engine.changes_since(&g.domain, &[]).expect("stale"),
        )
        .expect("stale first");
    assert_eq!(proposal(&late, &g.domain).state, ProposalState::Rejected);
    late.engine
        .apply_remote(&g.domain, g.changes())
        .expect("then the rest");
    assert_eq!(late.engine.heads(&g.domain), e.heads(&g.domain));
    assert_eq!(proposal(&late, &g.domain), g.proposal());

    // A domain cannot see the co-op's word that a key is bob's: nobody but
    // bob, with his voting key there, names one. So an admin does not, and
    // in a domain bob joins after rotating his new key votes nothing (not
    // built: docs/permissions.md); nor does it create domains.
    let later = e
        .create_domain(
            &dev(&g.admin),
            &domain::NewDomain {
                id: "later".into(),
                coop_id: Some(g.coop.to_string()),
                ..new_domain(&g.admin)
            },
        )
        .expect("domain");
    e.add_domain_members(
        &later,
        &dev(&g.admin),
        &[(g.bob.did(), DomainRole::Member, 1)],
    )
    .expect("bob joins");
    let proof = new.device_proof(&g.bob.did());
    assert!(
        e.write_with(&later, &dev(&g.admin), |_, deps, tx| {
            let heads: Vec<[u8; 32]> = deps.iter().map(|h| h.0).collect();
            domain::rotate_key(tx, &g.bob.did(), &g.bob.did(), &new.did(), &proof, &heads)
        })
        .is_err(),
        "an admin names no member's key"
    );
    assert!(
        e.create_domain(&as_new, &new_domain(&g.bob)).is_err(),
        "a rotated key creates no domain"
    );
}

#[test]
fn a_removed_member_counts_nowhere_and_its_backdated_close_neither() {
    let g = gov();
    let replica = g.thief_replica();
    g.node
        .engine
        .set_member_status(&g.coop, &dev(&g.admin), &g.bob.did(), MemberStatus::Removed)
        .expect("remove bob");
    let bob = g
        .node
        .engine
        .read(&g.domain, |r| domain::DomainMember::read(r, &g.bob.did()))
        .flatten()
        .expect("listed");
    assert!(!bob.active, "removed from the domain too");
    thief_writes(&g, &replica);
    assert_eq!(g.proposal().state, ProposalState::Open);
    let (tally, _) = g.node.engine.tally(&g.domain, "p").expect("tally");
    assert_eq!((tally.eligible, tally.for_, tally.against), (2, 1, 0));
}

#[test]
fn a_revocation_made_elsewhere_is_sealed_by_a_domain_admin_node() {
    let g = gov();
    // A plain co-op write seals nothing by itself (a trusted contact's
    // node, or one holding no domain, writes only this).
    g.node
        .engine
        .write(&g.coop, &dev(&g.admin), |tx| {
            coop::set_status(tx, &g.bob.did(), MemberStatus::Suspended)
        })
        .expect("suspend");
    assert_eq!(g.node.engine.seal_pending(), 0, "no executor key, no seal");
    g.node.engine.set_executor(dev(&g.alice));
    assert_eq!(
        g.node.engine.seal_pending(),
        0,
        "alice administers no domain"
    );
    g.node.engine.set_executor(dev(&g.admin));
    assert_eq!(g.node.engine.seal_pending(), 1);
    assert_eq!(g.node.engine.seal_pending(), 0, "once");
    // Re-adding bob ends the seal; the co-op still suspends him, so the
    // sweep seals him again.
    g.node
        .engine
        .write(&g.domain, &dev(&g.admin), |tx| {
            domain::add_member(tx, &g.bob.did(), DomainRole::Member, 1)
        })
        .expect("re-add");
    assert!(!g.bob_sealed(), "re-adding ends the seal");
    assert_eq!(g.node.engine.seal_pending(), 1);
}

#[test]
fn only_an_admin_seals_and_only_at_the_heads_it_writes_on() {
    let g = gov();
    let denied = |who: &Keypair, heads: Option<Vec<[u8; 32]>>| {
        g.node
            .engine
            .write_with(&g.domain, &dev(who), |_, deps, tx| {
                let at = heads
                    .clone()
                    .unwrap_or_else(|| deps.iter().map(|h| h.0).collect());
                domain::seal_member(tx, &g.bob.did(), &at, false)
            })
            .is_err()
    };
    assert!(denied(&g.alice, None), "a member seals no one");
    let genesis = vec![g.domain.genesis().0];
    assert!(denied(&g.admin, Some(genesis)), "heads it did not write on");
    assert!(!denied(&g.admin, None), "an admin, at its heads");
}
