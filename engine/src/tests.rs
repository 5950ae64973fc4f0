//! The permission table of `docs/permissions.md`, every rule both ways, and
//! the refusals of forged and malformed changes.

use automerge::transaction::Transactable;
use automerge::{ObjId, ReadDoc};
use icn_schemas::coop::{self, MemberStatus, Role};
use icn_schemas::domain::{self, Choice, DomainRole, Payload, ProposalState};
use icn_schemas::tally::{Close, DecisionReceipt, Outcome, Tally};
use icn_schemas::{Did, DocId, SchemaError, Scope};

use crate::authority::Denied;
use crate::test_utils::{
    Step, TestNode, delegation, forge, forge_chain, keypair, new_coop, new_domain,
};
use crate::{ApplyError, Engine, Keypair, Rule, SignedChange, Signer, WriteError};

fn dev(k: &Keypair) -> Signer {
    Signer::Device(k.clone())
}

fn rule_of(result: Result<impl std::fmt::Debug, WriteError>) -> Rule {
    match result {
        Err(WriteError::Refused(r)) => r.rule,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn denied(result: Result<impl std::fmt::Debug, WriteError>) -> Denied {
    match rule_of(result) {
        Rule::Denied(d) => d,
        other => panic!("expected a permission refusal, got {other:?}"),
    }
}

fn forbidden(result: Result<impl std::fmt::Debug, WriteError>) {
    assert!(
        matches!(denied(result), Denied::Forbidden { .. }),
        "expected Forbidden"
    );
}

fn remote_rule(result: Result<crate::Applied, ApplyError>) -> Rule {
    match result {
        Err(ApplyError::Refused(r)) => r.rule,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A document with an admin (seed 1) and two members, alice (seed 2) and
/// bob (seed 3).
struct Fixture {
    node: TestNode,
    id: DocId,
    admin: Keypair,
    alice: Keypair,
    bob: Keypair,
}

type Coop = Fixture;
type Dom = Fixture;

fn fixture(
    create: impl FnOnce(&Engine, &Keypair) -> DocId,
    add: impl Fn(&mut automerge::transaction::Transaction<'_>, &Keypair) -> Result<(), SchemaError>,
) -> Fixture {
    let node = TestNode::new();
    let (admin, alice, bob) = (keypair(1), keypair(2), keypair(3));
    let id = create(&node.engine, &admin);
    for m in [&alice, &bob] {
        node.engine
            .write(&id, &dev(&admin), |tx| add(tx, m))
            .expect("add member");
    }
    Fixture {
        node,
        id,
        admin,
        alice,
        bob,
    }
}

fn coop_fixture() -> Coop {
    fixture(
        |e, admin| {
            e.create_coop(&dev(admin), &new_coop(admin))
                .expect("create")
        },
        |tx, m| coop::add_member(tx, &m.did(), Role::Member, 1_700_000_100),
    )
}

impl Fixture {
    fn engine(&self) -> &Engine {
        &self.node.engine
    }

    fn member(&self, k: &Keypair) -> coop::Member {
        self.engine()
            .coop(&self.id)
            .expect("exists")
            .expect("valid")
            .members[&k.did()]
            .clone()
    }
}

#[test]
fn genesis_makes_the_creator_admin_and_survives_reopen() {
    let c = coop_fixture();
    let view = c.engine().coop(&c.id).expect("exists").expect("valid");
    assert_eq!(view.id, "test-coop");
    assert_eq!(view.members[&c.admin.did()].role, Role::Admin);
    assert_eq!(view.members.len(), 3);
    let heads = c.engine().heads(&c.id);
    let json = c.engine().to_json(&c.id);
    let Coop { node, id, .. } = c;
    let node = node.reopen();
    assert_eq!(node.engine.heads(&id), heads);
    assert_eq!(node.engine.to_json(&id), json);
}

#[test]
fn a_documents_version_counts_the_changes_that_reach_it_and_nothing_else() {
    let c = coop_fixture();
    let engine = c.engine();
    let before = engine.version(&c.id).expect("held");
    engine.coop(&c.id).expect("exists").expect("valid");
    assert_eq!(engine.version(&c.id), Some(before), "a read is no change");
    engine
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::add_member(tx, &keypair(9).did(), Role::Member, 1_700_000_200)
        })
        .expect("add");
    assert_eq!(engine.version(&c.id), Some(before + 1));
    let refused = engine.write(&c.id, &dev(&c.alice), |tx| {
        coop::add_member(tx, &keypair(10).did(), Role::Member, 1_700_000_200)
    });
    assert!(refused.is_err(), "a member may not add members");
    assert_eq!(engine.version(&c.id), Some(before + 1));

    // A peer's changes count too; changes already held do not.
    let other = TestNode::new();
    let history = engine.changes_since(&c.id, &[]).expect("history");
    other
        .engine
        .apply_remote(&c.id, history.clone())
        .expect("apply");
    let received = other.engine.version(&c.id).expect("held now");
    other.engine.apply_remote(&c.id, history).expect("again");
    assert_eq!(other.engine.version(&c.id), Some(received));
    assert_eq!(engine.version(&DocId([0; 32])), None);
}

#[test]
fn profile_and_policy_admin_only() {
    let c = coop_fixture();
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_profile(tx, Some("New"), Some("Desc"))
        })
        .expect("admin sets profile");
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_profile(tx, Some("Mine"), None)
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_default_credit_limit(tx, 500)
        })
        .expect("admin sets policy");
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_default_credit_limit(tx, 1_000_000)
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::put_unit(tx, "kwh", Some("kWh"), 3)
        })
        .expect("admin adds unit");
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::put_unit(tx, "gold", None, 0)
    }));
    let view = c.engine().coop(&c.id).expect("exists").expect("valid");
    assert_eq!(view.name, "New");
    assert_eq!(view.policy.default_credit_limit, 500);
    assert!(view.policy.units.contains_key("kwh"));
    assert!(!view.policy.units.contains_key("gold"));
}

#[test]
fn members_roles_and_limits_admin_only() {
    let c = coop_fixture();
    let carol = keypair(4);
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::add_member(tx, &carol.did(), Role::Member, 1)
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::add_member(tx, &carol.did(), Role::Member, 1)
        })
        .expect("admin adds");
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_role(tx, &c.alice.did(), Role::Admin)
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_role(tx, &c.alice.did(), Role::Admin)
        })
        .expect("admin promotes");
    assert_eq!(c.member(&c.alice).role, Role::Admin);
    forbidden(c.engine().write(&c.id, &dev(&c.bob), |tx| {
        coop::set_credit_limit(tx, &c.bob.did(), 10_000)
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_credit_limit(tx, &c.bob.did(), 250)
        })
        .expect("admin sets limit");
    assert_eq!(c.member(&c.bob).credit_limit, Some(250));
}

#[test]
fn status_admin_or_the_member_leaving() {
    let c = coop_fixture();
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_status(tx, &c.bob.did(), MemberStatus::Removed)
    }));
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_status(tx, &c.alice.did(), MemberStatus::Suspended)
    }));
    c.engine()
        .write(&c.id, &dev(&c.alice), |tx| {
            coop::set_status(tx, &c.alice.did(), MemberStatus::Removed)
        })
        .expect("a member may leave");
    assert_eq!(c.member(&c.alice).status, MemberStatus::Removed);
    // Having left, alice may not write anything, not even to come back.
    assert_eq!(
        denied(c.engine().write(&c.id, &dev(&c.alice), |tx| {
            coop::set_status(tx, &c.alice.did(), MemberStatus::Active)
        })),
        Denied::InactiveMember(c.alice.did())
    );
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_status(tx, &c.bob.did(), MemberStatus::Suspended)
        })
        .expect("admin suspends");
    assert_eq!(
        denied(c.engine().write(&c.id, &dev(&c.bob), |tx| {
            coop::set_display_name(tx, &c.bob.did(), "Bob")
        })),
        Denied::InactiveMember(c.bob.did())
    );
}

#[test]
fn the_last_active_admin_stays() {
    let c = coop_fixture();
    let admin = c.admin.did();
    for status in [MemberStatus::Removed, MemberStatus::Suspended] {
        forbidden(c.engine().write(&c.id, &dev(&c.admin), |tx| {
            coop::set_status(tx, &admin, status)
        }));
    }
    forbidden(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        coop::set_role(tx, &admin, Role::Member)
    }));
    // Handing over first, then leaving, is allowed; the new last admin stays.
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_role(tx, &c.alice.did(), Role::Admin)
        })
        .expect("promote");
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_status(tx, &admin, MemberStatus::Removed)
        })
        .expect("the former last admin leaves");
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_status(tx, &c.alice.did(), MemberStatus::Removed)
    }));

    let d = domain_fixture();
    forbidden(d.engine().write(&d.id, &dev(&d.admin), |tx| {
        domain::remove_member(tx, &d.admin.did())
    }));
    forbidden(d.engine().write(&d.id, &dev(&d.admin), |tx| {
        domain::add_member(tx, &d.admin.did(), DomainRole::Member, 1)
    }));
    d.engine()
        .write(&d.id, &dev(&d.admin), |tx| {
            domain::add_member(tx, &d.alice.did(), DomainRole::Admin, 1)
        })
        .expect("promote");
    d.engine()
        .write(&d.id, &dev(&d.admin), |tx| {
            domain::remove_member(tx, &d.admin.did())
        })
        .expect("the former last admin leaves");
}

/// What a peer refuses in governance values, whoever writes them: a voting
/// period that is not positive or longer than a year, a blank title, a
/// budget that moves nothing or less.
#[test]
fn governance_values_are_bounded() {
    let d = domain_fixture();
    let raw = |path: &'static [&'static str], value: automerge::ScalarValue| {
        rule_of(d.engine().write(&d.id, &dev(&d.admin), |tx| {
            let (key, parents) = path.split_last().expect("a path");
            let mut obj = ObjId::Root;
            for p in parents {
                obj = tx
                    .get(&obj, *p)?
                    .map(|(_, o)| o)
                    .ok_or_else(|| SchemaError::Missing((*p).into()))?;
            }
            tx.put(&obj, *key, value)?;
            Ok(())
        }))
    };
    for bad in [0, -1, domain::MAX_VOTING_PERIOD_SECONDS + 1] {
        let rule = raw(&["rules", "voting_period_seconds"], bad.into());
        assert!(
            matches!(rule, Rule::Schema(SchemaError::WrongShape { .. })),
            "{rule:?}"
        );
    }
    let rule = raw(&["proposals", "p1", "title"], " ".into());
    assert!(
        matches!(rule, Rule::Schema(SchemaError::WrongShape { .. })),
        "{rule:?}"
    );
    let rule = raw(&["proposals", "p1", "payload", "amount"], 0.into());
    assert!(
        matches!(rule, Rule::Schema(SchemaError::WrongShape { .. })),
        "{rule:?}"
    );
    d.engine()
        .write(&d.id, &dev(&d.admin), |tx| {
            let rules = domain::Rules {
                voting_period_seconds: domain::MAX_VOTING_PERIOD_SECONDS,
                ..domain::Rules::default()
            };
            domain::set_rules(tx, &rules)
        })
        .expect("a year is allowed");
}

#[test]
fn display_name_and_devices_by_the_member_or_admin() {
    let c = coop_fixture();
    c.engine()
        .write(&c.id, &dev(&c.alice), |tx| {
            coop::set_display_name(tx, &c.alice.did(), "Alice")
        })
        .expect("own name");
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_display_name(tx, &c.bob.did(), "Bobby")
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_display_name(tx, &c.bob.did(), "Bob")
        })
        .expect("admin names");

    let phone = keypair(20);
    let proof = phone.device_proof(&c.alice.did());
    forbidden(c.engine().write(&c.id, &dev(&c.bob), |tx| {
        coop::add_device(
            tx,
            &c.alice.did(),
            &phone.did(),
            Some(&proof),
            Some("not mine"),
            1,
        )
    }));
    // Bob cannot claim alice's phone: its proof names alice, not him.
    forbidden(c.engine().write(&c.id, &dev(&c.bob), |tx| {
        coop::add_device(tx, &c.bob.did(), &phone.did(), Some(&proof), None, 1)
    }));
    // A proof not signed by the device is refused.
    let not_the_phone = c.alice.sign(&coop::device_proof_message(&c.alice.did()));
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::add_device(
            tx,
            &c.alice.did(),
            &phone.did(),
            Some(&not_the_phone),
            None,
            1,
        )
    }));
    // Listed without a proof, a key does not act.
    let unproven = keypair(21);
    c.engine()
        .write(&c.id, &dev(&c.alice), |tx| {
            coop::add_device(tx, &c.alice.did(), &unproven.did(), None, None, 1)
        })
        .expect("listing is allowed");
    assert_eq!(
        denied(c.engine().write(&c.id, &dev(&unproven), |tx| {
            coop::set_display_name(tx, &c.alice.did(), "unproven")
        })),
        Denied::NotALiveDevice {
            actor: unproven.did()
        }
    );
    c.engine()
        .write(&c.id, &dev(&c.alice), |tx| {
            coop::add_device(
                tx,
                &c.alice.did(),
                &phone.did(),
                Some(&proof),
                Some("phone"),
                1,
            )
        })
        .expect("own device");
    // The new device now writes as alice.
    c.engine()
        .write(&c.id, &dev(&phone), |tx| {
            coop::set_display_name(tx, &c.alice.did(), "Alice (phone)")
        })
        .expect("a live device writes for its member");
    assert_eq!(
        c.member(&c.alice).display_name.as_deref(),
        Some("Alice (phone)")
    );
    // Revoked, it writes nothing more.
    c.engine()
        .write(&c.id, &dev(&c.alice), |tx| {
            coop::revoke_device(tx, &c.alice.did(), &phone.did())
        })
        .expect("revoke own device");
    assert_eq!(
        denied(c.engine().write(&c.id, &dev(&phone), |tx| {
            coop::set_display_name(tx, &c.alice.did(), "stolen phone")
        })),
        Denied::NotALiveDevice { actor: phone.did() }
    );
    // A key nobody registered writes nothing.
    let stranger = keypair(99);
    assert_eq!(
        denied(c.engine().write(&c.id, &dev(&stranger), |tx| {
            coop::set_display_name(tx, &c.alice.did(), "hi")
        })),
        Denied::NotALiveDevice {
            actor: stranger.did()
        }
    );
}

#[test]
fn devices_are_revoked_for_good_by_the_member_an_admin_or_a_trusted_contact() {
    let c = coop_fixture();
    let alice = c.alice.did();
    let add = |who: &Keypair, device: &Keypair| {
        let proof = device.device_proof(&alice);
        c.engine().write(&c.id, &dev(who), |tx| {
            coop::add_device(tx, &alice, &device.did(), Some(&proof), Some("phone"), 1)
        })
    };
    let revoke = |who: &Keypair, device: &Keypair, by: Did| {
        c.engine().write(&c.id, &dev(who), |tx| {
            coop::revoke_device_for(
                tx,
                &alice,
                &device.did(),
                &coop::Revocation {
                    reason: "stolen".into(),
                    at: 2,
                    by,
                },
            )
        })
    };
    let (phone, laptop, tablet) = (keypair(40), keypair(41), keypair(42));
    add(&c.alice, &phone).expect("alice adds her phone");
    add(&c.alice, &laptop).expect("alice adds her laptop");
    add(&c.admin, &tablet).expect("an admin adds a device for her");
    // Another member may not revoke alice's devices, until the co-op names
    // him a trusted contact; even then he adds none.
    forbidden(revoke(&c.bob, &phone, c.bob.did()));
    forbidden(c.engine().write(&c.id, &dev(&c.bob), |tx| {
        coop::add_trusted_contact(tx, &c.bob.did(), 1)
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::add_trusted_contact(tx, &c.bob.did(), 1)
        })
        .expect("admins name trusted contacts");
    forbidden(add(&c.bob, &keypair(43)));
    forbidden(revoke(&c.bob, &phone, alice));
    revoke(&c.bob, &phone, c.bob.did()).expect("a trusted contact revokes");
    let recorded = &c.member(&c.alice).devices[&phone.did().key_string()];
    assert!(recorded.revoked);
    assert_eq!(recorded.revoked_reason.as_deref(), Some("stolen"));
    assert_eq!(recorded.revoked_by, Some(c.bob.did()));
    assert_eq!(
        denied(c.engine().write(&c.id, &dev(&phone), |tx| {
            coop::set_display_name(tx, &alice, "thief")
        })),
        Denied::NotALiveDevice { actor: phone.did() }
    );
    // Never undone: not by adding the key again, not by writing `revoked: false`.
    assert!(matches!(
        add(&c.alice, &phone),
        Err(WriteError::Schema(SchemaError::Exists(_)))
    ));
    forbidden(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        let path = [
            "members",
            &alice.to_string(),
            "devices",
            &phone.did().key_string(),
        ];
        let mut obj = ObjId::Root;
        for p in path {
            obj = tx
                .get(&obj, p)?
                .map(|(_, o)| o)
                .ok_or_else(|| SchemaError::Missing(p.into()))?;
        }
        tx.put(&obj, "revoked", false)?;
        Ok(())
    }));
    // The member revokes its own; an admin revokes any; an unlisted key is
    // not revoked.
    revoke(&c.alice, &laptop, alice).expect("the member revokes");
    revoke(&c.admin, &tablet, c.admin.did()).expect("an admin revokes");
    assert!(matches!(
        revoke(&c.alice, &keypair(44), alice),
        Err(WriteError::Schema(SchemaError::Missing(_)))
    ));
    // A trusted contact removed revokes nothing more.
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::remove_trusted_contact(tx, &c.bob.did())
        })
        .expect("admins remove trusted contacts");
    let spare = keypair(45);
    add(&c.alice, &spare).expect("another device");
    forbidden(revoke(&c.bob, &spare, c.bob.did()));
}

#[test]
fn relays_admin_only_and_deletable() {
    let c = coop_fixture();
    let relay = keypair(50);
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::add_relay(tx, &relay.did(), "10.0.0.1:7777", 1)
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::add_relay(tx, &relay.did(), "10.0.0.1:7777", 1)
        })
        .expect("admin registers relay");
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::remove_relay(tx, &relay.did())
    }));
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::remove_relay(tx, &relay.did())
        })
        .expect("admin removes relay");
    assert!(
        c.engine()
            .coop(&c.id)
            .expect("exists")
            .expect("valid")
            .relays
            .is_empty()
    );
}

#[test]
fn genesis_fields_are_never_rewritten() {
    let c = coop_fixture();
    forbidden(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        tx.put(ObjId::Root, "id", "another-coop")?;
        Ok(())
    }));
    forbidden(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        tx.put(ObjId::Root, "creator", c.alice.did().to_string())?;
        Ok(())
    }));
}

#[test]
fn schema_refuses_unknown_paths_wrong_shapes_lists_and_deletes() {
    let c = coop_fixture();
    let schema = |r: Rule| {
        assert!(
            matches!(r, Rule::Schema(_)),
            "expected schema error, got {r:?}"
        )
    };
    schema(rule_of(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        tx.put(ObjId::Root, "treasure", "gold")?;
        Ok(())
    })));
    schema(rule_of(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        let m = tx
            .get(ObjId::Root, "members")?
            .map(|(_, id)| id)
            .ok_or(SchemaError::Missing("members".into()))?;
        let me = tx
            .get(&m, c.alice.did().to_string())?
            .map(|(_, id)| id)
            .ok_or(SchemaError::Missing("alice".into()))?;
        tx.put(&me, "role", "king")?;
        Ok(())
    })));
    schema(rule_of(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        tx.put_object(ObjId::Root, "description", automerge::ObjType::Text)?;
        Ok(())
    })));
    schema(rule_of(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        let m = tx
            .get(ObjId::Root, "members")?
            .map(|(_, id)| id)
            .ok_or(SchemaError::Missing("members".into()))?;
        tx.delete(&m, c.alice.did().to_string())?;
        Ok(())
    })));
    schema(rule_of(c.engine().write(&c.id, &dev(&c.admin), |tx| {
        let m = tx
            .get(ObjId::Root, "members")?
            .map(|(_, id)| id)
            .ok_or(SchemaError::Missing("members".into()))?;
        tx.put(&m, "not-a-did", "x")?;
        Ok(())
    })));
}

/// A second node that holds the same co-op, for changes from "remote" peers.
fn replica(c: &Coop) -> TestNode {
    let other = TestNode::new();
    other
        .engine
        .apply_remote(
            &c.id,
            c.engine().changes_since(&c.id, &[]).expect("changes"),
        )
        .expect("the replica accepts the history");
    other
}

fn assert_unchanged(
    engine: &Engine,
    id: &DocId,
    before: &(Option<Vec<automerge::ChangeHash>>, Option<Vec<u8>>),
) {
    assert_eq!(
        &(engine.heads(id), engine.save(id)),
        before,
        "a refused batch changed the document"
    );
}

#[test]
fn forged_changes_are_refused_whole_and_change_nothing() {
    let c = coop_fixture();
    let other = replica(&c);
    let before = (other.engine.heads(&c.id), other.engine.save(&c.id));
    let good = forge(c.engine(), &c.id, &c.alice, &c.alice, None, |tx| {
        coop::set_display_name(tx, &c.alice.did(), "Alice")
    });

    // Signed by another key.
    let wrong_key = forge(c.engine(), &c.id, &c.alice, &c.bob, None, |tx| {
        coop::set_display_name(tx, &c.alice.did(), "Alice")
    });
    let r = remote_rule(other.engine.apply_remote(&c.id, vec![wrong_key.clone()]));
    assert_eq!(r, Rule::BadSignature(c.alice.did()));
    assert_unchanged(&other.engine, &c.id, &before);
    // In a batch whose other signatures are good, checked together, the
    // forged one is still found and named.
    let mut history = c.engine().changes_since(&c.id, &[]).expect("history");
    history.push(wrong_key);
    let fresh = TestNode::new();
    let refused = fresh
        .engine
        .apply_remote(&c.id, history.clone())
        .expect_err("refused");
    match refused {
        crate::ApplyError::Refused(r) => {
            assert_eq!(r.index, history.len() - 1);
            assert_eq!(r.rule, Rule::BadSignature(c.alice.did()));
        }
        other => panic!("{other:?}"),
    }
    assert!(fresh.engine.doc_ids().is_empty());

    // A flipped byte anywhere: either the change no longer parses or its
    // hash, and so the signed message, changes.
    for i in [0, 10, good.change.len() / 2, good.change.len() - 1] {
        let mut flipped = good.clone();
        flipped.change[i] ^= 0x40;
        let r = remote_rule(other.engine.apply_remote(&c.id, vec![flipped]));
        assert!(
            matches!(
                r,
                Rule::Malformed(_) | Rule::BadSignature(_) | Rule::BadActor
            ),
            "{r:?}"
        );
        assert_unchanged(&other.engine, &c.id, &before);
    }
    let mut bad_sig = good.clone();
    bad_sig.signature[3] ^= 1;
    assert!(matches!(
        remote_rule(other.engine.apply_remote(&c.id, vec![bad_sig])),
        Rule::BadSignature(_)
    ));

    // A good change batched with an unauthorised one: the batch is refused
    // whole, the good change with it.
    let promote = forge(c.engine(), &c.id, &c.bob, &c.bob, None, |tx| {
        coop::set_role(tx, &c.bob.did(), Role::Admin)
    });
    let refused = other
        .engine
        .apply_remote(&c.id, vec![good.clone(), promote]);
    match refused {
        Err(ApplyError::Refused(r)) => {
            assert_eq!(r.index, 1);
            assert!(matches!(r.rule, Rule::Denied(Denied::Forbidden { .. })));
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    assert_unchanged(&other.engine, &c.id, &before);

    // Alone, the good change is accepted; sent again, nothing happens.
    let applied = other
        .engine
        .apply_remote(&c.id, vec![good.clone()])
        .expect("valid");
    assert_eq!(applied.new.len(), 1);
    let again = other
        .engine
        .apply_remote(&c.id, vec![good.clone(), good])
        .expect("replay");
    assert!(again.new.is_empty());
}

#[test]
fn missing_dependencies_and_foreign_geneses_are_refused() {
    let c = coop_fixture();
    let other = replica(&c);
    let first = forge(c.engine(), &c.id, &c.alice, &c.alice, None, |tx| {
        coop::set_display_name(tx, &c.alice.did(), "A1")
    });
    c.engine()
        .apply_remote(&c.id, vec![first.clone()])
        .expect("valid");
    let second = forge(c.engine(), &c.id, &c.alice, &c.alice, None, |tx| {
        coop::set_display_name(tx, &c.alice.did(), "A2")
    });
    let before = (other.engine.heads(&c.id), other.engine.save(&c.id));
    assert!(matches!(
        remote_rule(other.engine.apply_remote(&c.id, vec![second.clone()])),
        Rule::MissingDependency(_)
    ));
    assert_unchanged(&other.engine, &c.id, &before);
    // In either order within one batch, the pair is fine.
    other
        .engine
        .apply_remote(&c.id, vec![second, first])
        .expect("ordered by deps");

    // Another co-op's genesis: its signature binds it to its own id.
    let foreign = TestNode::new();
    let foreign_id = foreign
        .engine
        .create_coop(&dev(&c.alice), &new_coop(&c.alice))
        .expect("create");
    let mut genesis = foreign
        .engine
        .changes_since(&foreign_id, &[])
        .expect("changes");
    assert!(matches!(
        remote_rule(other.engine.apply_remote(&c.id, genesis.clone())),
        Rule::BadSignature(_)
    ));
    // Re-signed by its author for this co-op, it is a second root.
    let hash = automerge::Change::from_bytes(genesis[0].change.clone())
        .expect("valid change")
        .hash();
    genesis[0].signature = c.alice.sign(&crate::change::signing_message(&c.id, &hash));
    assert_eq!(
        remote_rule(other.engine.apply_remote(&c.id, genesis.clone())),
        Rule::ForeignGenesis
    );
    // And for a document nobody has, a batch without its genesis.
    let unknown = DocId([9; 32]);
    let r = remote_rule(other.engine.apply_remote(&unknown, genesis));
    assert!(matches!(r, Rule::BadSignature(_)), "{r:?}");
    assert!(other.engine.heads(&unknown).is_none());
    let second_only = c
        .engine()
        .changes_since(&c.id, &[])
        .expect("changes")
        .split_off(1);
    assert!(matches!(
        remote_rule(other.engine.apply_remote(&unknown, second_only)),
        Rule::BadSignature(_) | Rule::MissingDependency(_)
    ));
}

#[test]
fn a_genesis_must_name_its_author_as_creator_and_admin() {
    let node = TestNode::new();
    let (alice, bob) = (keypair(1), keypair(2));
    // Alice's key writes a genesis that names Bob as creator.
    let mut new = new_coop(&alice);
    new.creator = bob.did();
    new.device = bob.did();
    let r = rule_of(node.engine.create_coop(&dev(&alice), &new));
    assert!(matches!(r, Rule::InvalidGenesis(_)), "{r:?}");
    assert!(node.engine.doc_ids().is_empty());
}

type GenesisWrite<'a> =
    dyn Fn(&mut automerge::transaction::Transaction<'_>) -> Result<(), SchemaError> + 'a;

/// A creator naming another member's voting key (or a retirement, or a
/// seal) in a domain's genesis would vote for it there: refused.
#[test]
fn a_domain_genesis_names_no_member_key_retirement_or_seal() {
    let node = TestNode::new();
    let (alice, bob, mallory) = (keypair(1), keypair(2), keypair(3));
    let proof = mallory.device_proof(&bob.did());
    let writes: [&GenesisWrite<'_>; 3] = [
        &|tx| {
            domain::rotate_key(
                tx,
                &bob.did(),
                &bob.did(),
                &mallory.did(),
                &proof,
                &[[7; 32]],
            )
        },
        &|tx| domain::seal_member(tx, &bob.did(), &[[7; 32]], false),
        &|_| Ok(()),
    ];
    for (i, write) in writes.iter().enumerate() {
        let created = node.engine.create(&dev(&alice), |tx| {
            domain::create(tx, &new_domain(&alice))?;
            domain::add_member(tx, &bob.did(), DomainRole::Member, 1)?;
            write(tx)
        });
        if i < 2 {
            let r = rule_of(created);
            assert!(matches!(r, Rule::InvalidGenesis(_)), "{r:?}");
        } else {
            created.expect("a genesis with members and no keys");
        }
    }
}

#[test]
fn removed_member_writing_in_its_causal_future_is_refused_concurrent_write_is_kept() {
    let c = coop_fixture();
    let other = replica(&c);
    // Bob writes before he learns of anything (concurrent with the removal).
    let concurrent = forge(c.engine(), &c.id, &c.bob, &c.bob, None, |tx| {
        coop::set_display_name(tx, &c.bob.did(), "Bob, before")
    });
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_status(tx, &c.bob.did(), MemberStatus::Removed)
        })
        .expect("admin removes bob");
    // Written after the removal, in its causal future: refused.
    let after = forge(c.engine(), &c.id, &c.bob, &c.bob, None, |tx| {
        coop::set_display_name(tx, &c.bob.did(), "Bob, after")
    });
    assert_eq!(
        remote_rule(c.engine().apply_remote(&c.id, vec![after])),
        Rule::Denied(Denied::InactiveMember(c.bob.did()))
    );
    // The concurrent change is judged by its own causal past, where Bob was
    // active: every replica keeps it, whichever order changes arrive in.
    c.engine()
        .apply_remote(&c.id, vec![concurrent.clone()])
        .expect("concurrent kept");
    other
        .engine
        .apply_remote(&c.id, vec![concurrent])
        .expect("concurrent first");
    other
        .engine
        .apply_remote(
            &c.id,
            c.engine().changes_since(&c.id, &[]).expect("changes"),
        )
        .expect("the rest");
    assert_eq!(other.engine.heads(&c.id), c.engine().heads(&c.id));
    assert_eq!(other.engine.to_json(&c.id), c.engine().to_json(&c.id));
}

/// A run of changes by one key, each on the one before, has its author
/// resolved once, until one of them writes under `members`: from there on
/// the author is read again.
#[test]
fn a_chain_by_one_key_is_judged_again_after_it_changes_its_standing() {
    let c = coop_fixture();
    let bob = c.bob.did();
    let chain = forge_chain(
        c.engine(),
        &c.id,
        &c.bob,
        &c.bob,
        vec![
            Box::new(move |tx| coop::set_display_name(tx, &bob, "Bob 1")),
            Box::new(move |tx| coop::set_display_name(tx, &bob, "Bob 2")),
            Box::new(move |tx| coop::set_status(tx, &bob, MemberStatus::Removed)),
            Box::new(move |tx| coop::set_display_name(tx, &bob, "Bob, gone")),
        ],
    );
    let before = c.engine().heads(&c.id);
    match c.engine().apply_remote(&c.id, chain.clone()) {
        Err(ApplyError::Refused(r)) => {
            assert_eq!(r.index, 3);
            assert_eq!(r.rule, Rule::Denied(Denied::InactiveMember(c.bob.did())));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(c.engine().heads(&c.id), before);
    // Without the last change, the chain is whole and taken.
    c.engine()
        .apply_remote(&c.id, chain[..3].to_vec())
        .expect("renames and leaving");
    assert_eq!(c.member(&c.bob).display_name.as_deref(), Some("Bob 2"));
    assert_eq!(c.member(&c.bob).status, MemberStatus::Removed);
}

/// A large batch has its signatures checked aside while the rest is
/// judged; the refusal is still the first change that fails, in batch
/// order, whichever check it fails.
#[test]
fn a_large_batch_is_refused_at_its_first_failing_change() {
    let c = coop_fixture();
    let bob = c.bob.did();
    let steps = (0..100)
        .map(|i| -> Step {
            Box::new(move |tx| coop::set_display_name(tx, &bob, &format!("Bob {i}")))
        })
        .collect();
    let chain = forge_chain(c.engine(), &c.id, &c.bob, &c.bob, steps);
    let refusal = |batch: Vec<SignedChange>| match c.engine().apply_remote(&c.id, batch) {
        Err(ApplyError::Refused(r)) => (r.index, r.rule),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut bad_signature = chain.clone();
    bad_signature[70].signature[5] ^= 1;
    assert_eq!(
        refusal(bad_signature.clone()),
        (70, Rule::BadSignature(c.bob.did()))
    );
    // A delegation naming another node, before the bad signature, is first.
    let mut both = bad_signature.clone();
    both[30].delegation = Some(delegation(
        &c.bob,
        &c.alice,
        &[Scope::CoopWrite],
        0,
        u64::MAX,
    ));
    assert!(matches!(
        refusal(both),
        (30, Rule::DelegationNotForActor { .. })
    ));
    // After it, the bad signature is first.
    let mut both = bad_signature;
    both[90].delegation = Some(delegation(
        &c.bob,
        &c.alice,
        &[Scope::CoopWrite],
        0,
        u64::MAX,
    ));
    assert_eq!(refusal(both), (70, Rule::BadSignature(c.bob.did())));
    // Bytes that do not decode, after the bad signature, come second too.
    let mut garbled = chain.clone();
    garbled[70].signature[5] ^= 1;
    garbled[80].change.truncate(10);
    assert_eq!(refusal(garbled), (70, Rule::BadSignature(c.bob.did())));
    let before = c.engine().heads(&c.id);
    assert_eq!(c.engine().heads(&c.id), before);
    c.engine()
        .apply_remote(&c.id, chain)
        .expect("the honest chain");
    assert_eq!(c.member(&c.bob).display_name.as_deref(), Some("Bob 99"));
}

#[test]
fn delegated_writes_within_scope_and_validity() {
    let c = coop_fixture();
    let gateway = keypair(70);
    let far = 4_000_000_000;
    let write_scope = delegation(
        &c.alice,
        &gateway,
        &[Scope::CoopRead, Scope::CoopWrite],
        0,
        far,
    );
    let as_alice = Signer::Delegated {
        node: gateway.clone(),
        delegation: write_scope.clone(),
    };
    c.engine()
        .write(&c.id, &as_alice, |tx| {
            coop::set_display_name(tx, &c.alice.did(), "via gateway")
        })
        .expect("delegated member write");
    assert_eq!(
        c.member(&c.alice).display_name.as_deref(),
        Some("via gateway")
    );
    // The delegation carries alice's rights, no more.
    forbidden(c.engine().write(&c.id, &as_alice, |tx| {
        coop::set_display_name(tx, &c.bob.did(), "nope")
    }));

    // An admin's delegation without coop:admin does not carry admin rights.
    let admin_no_admin_scope = Signer::Delegated {
        node: gateway.clone(),
        delegation: delegation(&c.admin, &gateway, &[Scope::CoopWrite], 0, far),
    };
    assert_eq!(
        denied(c.engine().write(&c.id, &admin_no_admin_scope, |tx| {
            coop::set_role(tx, &c.bob.did(), Role::Admin)
        })),
        Denied::MissingScope(Scope::CoopAdmin)
    );
    let admin_scope = Signer::Delegated {
        node: gateway.clone(),
        delegation: delegation(
            &c.admin,
            &gateway,
            &[Scope::CoopAdmin, Scope::CoopWrite],
            0,
            far,
        ),
    };
    c.engine()
        .write(&c.id, &admin_scope, |tx| {
            coop::set_role(tx, &c.bob.did(), Role::Admin)
        })
        .expect("admin scope");

    // Expired (the change is written now, after expiry).
    let expired = Signer::Delegated {
        node: gateway.clone(),
        delegation: delegation(&c.alice, &gateway, &[Scope::CoopWrite], 1, 1_000),
    };
    assert!(matches!(
        rule_of(c.engine().write(&c.id, &expired, |tx| {
            coop::set_display_name(tx, &c.alice.did(), "late")
        })),
        Rule::DelegationNotLive { .. }
    ));

    // A delegation to another node does not let this node write.
    let thief = keypair(71);
    let stolen = Signer::Delegated {
        node: thief.clone(),
        delegation: write_scope.clone(),
    };
    assert!(matches!(
        rule_of(c.engine().write(&c.id, &stolen, |tx| {
            coop::set_display_name(tx, &c.alice.did(), "stolen")
        })),
        Rule::DelegationNotForActor { .. }
    ));

    // A delegation the member never signed.
    let mut forged = write_scope;
    forged.signature = gateway.sign(forged.statement.as_bytes());
    let forged = Signer::Delegated {
        node: gateway,
        delegation: forged,
    };
    assert!(matches!(
        rule_of(c.engine().write(&c.id, &forged, |tx| {
            coop::set_display_name(tx, &c.alice.did(), "forged")
        })),
        Rule::BadDelegation(_)
    ));
}

#[test]
fn a_delegation_of_a_removed_member_is_dead() {
    let c = coop_fixture();
    let gateway = keypair(70);
    let as_bob = Signer::Delegated {
        node: gateway.clone(),
        delegation: delegation(&c.bob, &gateway, &[Scope::CoopWrite], 0, 4_000_000_000),
    };
    c.engine()
        .write(&c.id, &dev(&c.admin), |tx| {
            coop::set_status(tx, &c.bob.did(), MemberStatus::Removed)
        })
        .expect("remove");
    assert_eq!(
        denied(c.engine().write(&c.id, &as_bob, |tx| {
            coop::set_display_name(tx, &c.bob.did(), "ghost")
        })),
        Denied::InactiveMember(c.bob.did())
    );
}

/// A domain fixture with a draft proposal "p1" by alice.
fn domain_fixture() -> Dom {
    let d = fixture(
        |e, admin| {
            e.create_domain(&dev(admin), &new_domain(admin))
                .expect("create")
        },
        |tx, m| domain::add_member(tx, &m.did(), DomainRole::Member, 1),
    );
    d.propose(&d.alice, "p1").expect("member proposes");
    d
}

impl Fixture {
    fn propose(&self, who: &Keypair, id: &str) -> Result<(), WriteError> {
        self.engine().write(&self.id, &dev(who), |tx| {
            domain::create_proposal(
                tx,
                &domain::NewProposal {
                    id: id.into(),
                    title: "Fix the roof".into(),
                    description: "It leaks".into(),
                    author: who.did(),
                    created_at: 1_700_000_200,
                    payload: Payload::Text {
                        body: "Fix it".into(),
                    },
                },
            )
        })
    }

    fn open(&self, who: &Keypair, id: &str) -> Result<(), WriteError> {
        self.engine().write(&self.id, &dev(who), |tx| {
            domain::open_proposal(tx, id, 10, 20)
        })
    }

    fn vote(&self, who: &Keypair, voter: &Keypair, choice: Choice) -> Result<(), WriteError> {
        self.engine().write(&self.id, &dev(who), |tx| {
            domain::cast_vote(tx, "p1", &voter.did(), choice, Some("because"), 15)
        })
    }

    fn proposal(&self, id: &str) -> domain::Proposal {
        self.engine()
            .domain(&self.id)
            .expect("exists")
            .expect("valid")
            .proposals[id]
            .clone()
    }
}

#[test]
fn domain_members_and_rules_admin_only() {
    let d = domain_fixture();
    let carol = keypair(4);
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        domain::add_member(tx, &carol.did(), DomainRole::Member, 1)
    }));
    d.engine()
        .write(&d.id, &dev(&d.admin), |tx| {
            domain::add_member(tx, &carol.did(), DomainRole::Member, 3)
        })
        .expect("admin adds");
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        domain::set_rules(tx, &domain::Rules::default())
    }));
    d.engine()
        .write(&d.id, &dev(&d.admin), |tx| {
            domain::set_rules(tx, &domain::Rules::default())
        })
        .expect("admin sets rules");
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        domain::remove_member(tx, &d.bob.did())
    }));
    d.engine()
        .write(&d.id, &dev(&d.bob), |tx| {
            domain::remove_member(tx, &d.bob.did())
        })
        .expect("a member may leave");
    assert_eq!(
        denied(d.propose(&d.bob, "p-after-leaving")),
        Denied::InactiveMember(d.bob.did())
    );
    let stranger = keypair(99);
    assert!(matches!(
        denied(d.propose(&stranger, "p-stranger")),
        Denied::NotALiveDevice { .. }
    ));
}

#[test]
fn proposal_content_is_set_once_by_its_author() {
    let d = domain_fixture();
    assert_eq!(d.proposal("p1").author, d.alice.did());
    assert_eq!(d.proposal("p1").state, ProposalState::Draft);
    // Rewriting the content of an existing proposal.
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        let p = tx
            .get(ObjId::Root, "proposals")?
            .and_then(|(_, ps)| tx.get(&ps, "p1").ok().flatten())
            .map(|(_, p)| p)
            .ok_or(SchemaError::Missing("p1".into()))?;
        tx.put(&p, "title", "Something else")?;
        Ok(())
    }));
    // Proposing in someone else's name.
    forbidden(d.engine().write(&d.id, &dev(&d.bob), |tx| {
        domain::create_proposal(
            tx,
            &domain::NewProposal {
                id: "p2".into(),
                title: "t".into(),
                description: String::new(),
                author: d.alice.did(),
                created_at: 1,
                payload: Payload::Text {
                    body: String::new(),
                },
            },
        )
    }));
}

#[test]
fn proposal_lifecycle_moves() {
    let d = domain_fixture();
    forbidden(d.open(&d.bob, "p1"));
    forbidden(d.vote(&d.bob, &d.bob, Choice::For)); // still a draft
    d.open(&d.alice, "p1").expect("author opens");
    assert_eq!(d.proposal("p1").state, ProposalState::Open);
    assert_eq!(d.proposal("p1").closes_at, Some(20));
    // Re-opening with the same values writes nothing; with a new schedule it
    // is a write to an open proposal's schedule, refused.
    d.open(&d.alice, "p1").expect("no-op");
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        domain::open_proposal(tx, "p1", 11, 99)
    }));

    d.vote(&d.bob, &d.bob, Choice::For).expect("vote");
    d.vote(&d.bob, &d.bob, Choice::Against)
        .expect("change vote while open");
    forbidden(d.vote(&d.bob, &d.alice, Choice::Against)); // for someone else
    assert_eq!(d.proposal("p1").votes[&d.bob.did()].choice, Choice::Against);

    // Veto: members no, admins yes (this domain allows vetoes).
    forbidden(d.engine().write(&d.id, &dev(&d.bob), |tx| {
        domain::set_proposal_state(tx, "p1", ProposalState::Vetoed)
    }));
    // A closing state needs the close record with it.
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        domain::set_proposal_state(tx, "p1", ProposalState::Accepted)
    }));
    d.engine()
        .write(&d.id, &dev(&d.admin), |tx| {
            domain::set_proposal_state(tx, "p1", ProposalState::Vetoed)
        })
        .expect("admin vetoes");
    forbidden(d.vote(&d.alice, &d.alice, Choice::For)); // not open any more
    // Nor may the votes map be replaced once the proposal is not open.
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        let p = tx
            .get(ObjId::Root, "proposals")?
            .and_then(|(_, ps)| tx.get(&ps, "p1").ok().flatten())
            .map(|(_, p)| p)
            .ok_or(SchemaError::Missing("p1".into()))?;
        tx.put_object(&p, "votes", automerge::ObjType::Map)?;
        Ok(())
    }));
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        domain::set_proposal_state(tx, "p1", ProposalState::Cancelled)
    }));

    d.propose(&d.bob, "p3").expect("propose");
    forbidden(d.engine().write(&d.id, &dev(&d.alice), |tx| {
        domain::set_proposal_state(tx, "p3", ProposalState::Cancelled)
    }));
    d.engine()
        .write(&d.id, &dev(&d.bob), |tx| {
            domain::set_proposal_state(tx, "p3", ProposalState::Cancelled)
        })
        .expect("author cancels");
}

#[test]
fn veto_needs_a_domain_that_allows_it() {
    let node = TestNode::new();
    let admin = keypair(1);
    let mut new = new_domain(&admin);
    new.rules.allow_veto = false;
    let id = node
        .engine
        .create_domain(&dev(&admin), &new)
        .expect("create");
    node.engine
        .write(&id, &dev(&admin), |tx| {
            domain::create_proposal(
                tx,
                &domain::NewProposal {
                    id: "p".into(),
                    title: "t".into(),
                    description: String::new(),
                    author: admin.did(),
                    created_at: 1,
                    payload: Payload::Text {
                        body: String::new(),
                    },
                },
            )?;
            Ok(())
        })
        .expect("propose");
    node.engine
        .write(&id, &dev(&admin), |tx| domain::open_proposal(tx, "p", 1, 2))
        .expect("open");
    forbidden(node.engine.write(&id, &dev(&admin), |tx| {
        domain::set_proposal_state(tx, "p", ProposalState::Vetoed)
    }));
}

#[test]
fn delegated_domain_writes_need_gov_write() {
    let d = domain_fixture();
    d.open(&d.alice, "p1").expect("open");
    let gateway = keypair(70);
    let no_gov = Signer::Delegated {
        node: gateway.clone(),
        delegation: delegation(&d.bob, &gateway, &[Scope::CoopWrite], 0, 4_000_000_000),
    };
    assert_eq!(
        denied(d.engine().write(&d.id, &no_gov, |tx| {
            domain::cast_vote(tx, "p1", &d.bob.did(), Choice::For, None, 1)
        })),
        Denied::MissingScope(Scope::GovWrite)
    );
    let gov = Signer::Delegated {
        node: gateway.clone(),
        delegation: delegation(&d.bob, &gateway, &[Scope::GovWrite], 0, 4_000_000_000),
    };
    d.engine()
        .write(&d.id, &gov, |tx| {
            domain::cast_vote(tx, "p1", &d.bob.did(), Choice::For, None, 1)
        })
        .expect("delegated vote");
    assert_eq!(d.proposal("p1").votes[&d.bob.did()].choice, Choice::For);
}

#[test]
fn a_vote_concurrent_with_closing_is_judged_by_its_own_past() {
    let d = domain_fixture();
    d.open(&d.alice, "p1").expect("open");
    // Bob votes on a replica that has not seen the cancellation.
    let vote = forge(d.engine(), &d.id, &d.bob, &d.bob, None, |tx| {
        domain::cast_vote(tx, "p1", &d.bob.did(), Choice::For, None, 1)
    });
    d.engine()
        .write(&d.id, &dev(&d.alice), |tx| {
            domain::set_proposal_state(tx, "p1", ProposalState::Cancelled)
        })
        .expect("cancel");
    d.engine()
        .apply_remote(&d.id, vec![vote])
        .expect("concurrent vote is kept");
    // A vote written after seeing the cancellation is refused.
    let late = forge(d.engine(), &d.id, &d.bob, &d.bob, None, |tx| {
        domain::cast_vote(tx, "p1", &d.bob.did(), Choice::Against, None, 2)
    });
    assert!(matches!(
        remote_rule(d.engine().apply_remote(&d.id, vec![late])),
        Rule::Denied(Denied::Forbidden { .. })
    ));
}

#[test]
fn refused_writes_store_nothing_across_reopen() {
    let c = coop_fixture();
    let heads = c.engine().heads(&c.id);
    forbidden(c.engine().write(&c.id, &dev(&c.alice), |tx| {
        coop::set_role(tx, &c.alice.did(), Role::Admin)
    }));
    let Coop { node, id, .. } = c;
    let node = node.reopen();
    assert_eq!(node.engine.heads(&id), heads);
}

#[test]
fn snapshots_keep_every_change_and_signature() {
    let c = coop_fixture();
    // Enough writes to cross the snapshot threshold.
    for i in 0..1100 {
        c.engine()
            .write(&c.id, &dev(&c.alice), |tx| {
                coop::set_display_name(tx, &c.alice.did(), &format!("Alice {i}"))
            })
            .expect("write");
    }
    let heads = c.engine().heads(&c.id);
    let all: Vec<SignedChange> = c.engine().changes_since(&c.id, &[]).expect("changes");
    let Coop { node, id, .. } = c;
    let node = node.reopen();
    assert_eq!(node.engine.heads(&id), heads);
    assert_eq!(node.engine.changes_since(&id, &[]).expect("changes"), all);
    // A fresh peer validates the whole history it is sent.
    let fresh = TestNode::new();
    fresh.engine.apply_remote(&id, all).expect("valid history");
    assert_eq!(fresh.engine.heads(&id), heads);
}

/// The dependencies a change by `who` gets now: the heads, and its own
/// previous change when that is not one of them.
fn deps_of(d: &Dom, who: &Keypair) -> Vec<[u8; 32]> {
    d.engine()
        .read(&d.id, |r| {
            let fork = r
                .doc()
                .fork()
                .with_actor(automerge::ActorId::from(who.did().as_bytes().as_slice()));
            let mut deps: Vec<[u8; 32]> = fork.get_heads().iter().map(|h| h.0).collect();
            if let Some(own) = fork.get_last_local_change().map(|c| c.hash().0)
                && !deps.contains(&own)
            {
                deps.push(own);
            }
            deps.sort_unstable();
            deps
        })
        .expect("doc")
}

/// A forged close of "p1" by `who`, with `edit` applied to the honest one.
fn forged_close(d: &Dom, who: &Keypair, edit: impl FnOnce(&mut Close)) -> SignedChange {
    let (tally, outcome) = d.engine().tally(&d.id, "p1").expect("tally");
    let mut close = Close {
        outcome: outcome.expect("not wasm"),
        tally,
        counted_heads: deps_of(d, who),
        closed_at: 16,
        closed_by: who.did(),
    };
    edit(&mut close);
    forge(d.engine(), &d.id, who, who, None, |tx| {
        domain::close_proposal(tx, "p1", &close, None)
    })
}

fn refused_close(d: &Dom, change: SignedChange) {
    assert!(matches!(
        remote_rule(d.engine().apply_remote(&d.id, vec![change])),
        Rule::Denied(Denied::Forbidden { .. })
    ));
    assert_eq!(d.proposal("p1").state, ProposalState::Open);
}

#[test]
fn a_close_records_the_tally_and_yields_a_receipt() {
    let d = domain_fixture();
    d.open(&d.alice, "p1").expect("open");
    d.vote(&d.alice, &d.alice, Choice::For).expect("vote");
    d.vote(&d.bob, &d.bob, Choice::For).expect("vote");
    // Bob is neither proposer nor admin, and voting time (20) is not over.
    forbidden(d.engine().close_proposal(&d.id, &dev(&d.bob), "p1", 16));
    let (close, receipt) = d
        .engine()
        .close_proposal(&d.id, &dev(&d.alice), "p1", 16)
        .expect("the proposer closes");
    assert_eq!(close.outcome, Outcome::Accepted);
    assert_eq!(
        (close.tally.eligible, close.tally.for_, close.tally.against),
        (3, 2, 0)
    );
    assert_eq!(d.proposal("p1").state, ProposalState::Accepted);
    assert_eq!(d.engine().receipt(&d.id, "p1"), Some(receipt.clone()));
    // Closed: no more votes, no second close.
    forbidden(d.vote(&d.admin, &d.admin, Choice::Against));
    assert!(
        d.engine()
            .close_proposal(&d.id, &dev(&d.admin), "p1", 17)
            .is_err()
    );
    // A peer recounts and agrees.
    let peer = replica(&d);
    assert_eq!(peer.engine.receipt(&d.id, "p1"), Some(receipt.clone()));
    assert_eq!(
        receipt.hash(),
        DecisionReceipt::new(d.id, "p1", &close).hash()
    );
}

#[test]
fn any_member_closes_once_voting_time_is_over() {
    let d = domain_fixture();
    d.open(&d.alice, "p1").expect("open");
    d.vote(&d.bob, &d.bob, Choice::Against).expect("vote");
    let (close, _) = d
        .engine()
        .close_proposal(&d.id, &dev(&d.bob), "p1", 20)
        .expect("after closes_at, any member");
    // One of three voted: under the 50 % quorum.
    assert_eq!(close.outcome, Outcome::NoQuorum);
    assert_eq!(d.proposal("p1").state, ProposalState::NoQuorum);
}

#[test]
fn tampered_closes_are_refused() {
    let d = domain_fixture();
    d.open(&d.alice, "p1").expect("open");
    d.vote(&d.alice, &d.alice, Choice::For).expect("vote");
    d.vote(&d.bob, &d.bob, Choice::For).expect("vote");
    let alice = d.alice.clone();
    refused_close(
        &d,
        forged_close(&d, &alice, |c| c.outcome = Outcome::Rejected),
    );
    refused_close(&d, forged_close(&d, &alice, |c| c.tally.for_ = 3));
    refused_close(
        &d,
        forged_close(&d, &alice, |c| c.counted_heads = vec![[7; 32]]),
    );
    refused_close(&d, forged_close(&d, &alice, |c| c.closed_by = d.bob.did()));
    refused_close(&d, forged_close(&d, &alice, |c| c.closed_at = 5)); // before it opened
    let bob = d.bob.clone();
    refused_close(&d, forged_close(&d, &bob, |_| {})); // too early for bob
    // The state alone, without the record, or not matching it.
    let bare = forge(d.engine(), &d.id, &alice, &alice, None, |tx| {
        domain::set_proposal_state(tx, "p1", ProposalState::Accepted)
    });
    refused_close(&d, bare);
    let mismatched = forge(d.engine(), &d.id, &alice, &alice, None, |tx| {
        let (tally, outcome) = (
            Tally {
                eligible: 3,
                for_: 2,
                ..Tally::default()
            },
            Outcome::Accepted,
        );
        let close = Close {
            outcome,
            tally,
            counted_heads: deps_of(&d, &d.alice),
            closed_at: 16,
            closed_by: d.alice.did(),
        };
        domain::close_proposal(tx, "p1", &close, None)?;
        domain::set_proposal_state(tx, "p1", ProposalState::Rejected)
    });
    refused_close(&d, mismatched);
    // The honest close passes.
    d.engine()
        .apply_remote(&d.id, vec![forged_close(&d, &alice, |_| {})])
        .expect("honest close");
    assert_eq!(d.proposal("p1").state, ProposalState::Accepted);
}

#[test]
fn concurrent_closes_converge_on_one_and_late_votes_are_kept_not_counted() {
    let d = domain_fixture();
    d.open(&d.alice, "p1").expect("open");
    d.vote(&d.alice, &d.alice, Choice::For).expect("vote");
    let other = replica(&d);
    // On the replica, bob votes against, then the admin closes there; here,
    // alice closes without having seen bob's vote.
    other
        .engine
        .write(&d.id, &dev(&d.bob), |tx| {
            domain::cast_vote(tx, "p1", &d.bob.did(), Choice::Against, None, 15)
        })
        .expect("bob votes");
    let (theirs, _) = other
        .engine
        .close_proposal(&d.id, &dev(&d.admin), "p1", 17)
        .expect("admin closes there");
    let (ours, _) = d
        .engine()
        .close_proposal(&d.id, &dev(&d.alice), "p1", 16)
        .expect("alice closes here");
    assert_eq!(
        (ours.outcome, theirs.outcome),
        (Outcome::NoQuorum, Outcome::Rejected)
    );
    let here = d.engine().changes_since(&d.id, &[]).expect("changes");
    let there = other.engine.changes_since(&d.id, &[]).expect("changes");
    d.engine().apply_remote(&d.id, there).expect("merge");
    other.engine.apply_remote(&d.id, here).expect("merge");
    let (a, b) = (
        d.engine().receipt(&d.id, "p1").expect("closed"),
        other.engine.receipt(&d.id, "p1").expect("closed"),
    );
    assert_eq!(a, b, "both replicas count the same close");
    assert!(
        a.hash() == DecisionReceipt::new(d.id, "p1", &ours).hash()
            || a.hash() == DecisionReceipt::new(d.id, "p1", &theirs).hash()
    );
    assert_eq!(d.proposal("p1").state, a.outcome.state());
    // Bob's vote, concurrent with alice's close, is kept either way.
    assert_eq!(d.proposal("p1").votes[&d.bob.did()].choice, Choice::Against);
}

/// The domain fixture tallying with WASM module `source`, stored on its
/// node; returns the module's hash.
fn wasm_domain(d: &Dom, source: &str) -> [u8; 32] {
    let hash = d.engine().put_module(source.as_bytes()).expect("module");
    let rules = domain::Rules {
        method: domain::Method::Wasm {
            module: hex::encode(hash),
        },
        allow_veto: true,
        ..domain::Rules::default()
    };
    d.engine()
        .write(&d.id, &dev(&d.admin), |tx| domain::set_rules(tx, &rules))
        .expect("rules");
    hash
}

const TWO_THIRDS: &str = include_str!("../../examples/wasm/two_thirds.wat");

#[test]
fn a_wasm_tally_module_decides_and_peers_need_the_module_to_check_it() {
    let d = domain_fixture();
    wasm_domain(&d, TWO_THIRDS);
    d.open(&d.alice, "p1").expect("open");
    d.vote(&d.alice, &d.alice, Choice::For).expect("vote");
    d.vote(&d.bob, &d.bob, Choice::For).expect("vote");
    d.vote(&d.admin, &d.admin, Choice::Against).expect("vote");
    let (tally, outcome) = d.engine().tally(&d.id, "p1").expect("tally");
    assert_eq!((tally.for_, tally.against), (2, 1));
    assert_eq!(outcome, Some(Outcome::Accepted), "2 of 3 is two thirds");
    let (close, _) = d
        .engine()
        .close_proposal(&d.id, &dev(&d.alice), "p1", 16)
        .expect("close");
    assert_eq!(close.outcome, Outcome::Accepted);
    // A peer without the module cannot check the close and refuses it; with
    // the module, it agrees.
    let history = d.engine().changes_since(&d.id, &[]).expect("changes");
    let peer = TestNode::new();
    assert!(matches!(
        remote_rule(peer.engine.apply_remote(&d.id, history.clone())),
        Rule::Denied(Denied::Forbidden { .. })
    ));
    peer.engine
        .put_module(TWO_THIRDS.as_bytes())
        .expect("module");
    peer.engine.apply_remote(&d.id, history).expect("checked");
    assert_eq!(
        peer.engine.receipt(&d.id, "p1"),
        d.engine().receipt(&d.id, "p1")
    );
}

#[test]
fn a_failing_wasm_module_yields_policy_error_everywhere() {
    let d = domain_fixture();
    let looping = r#"(module (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) i32.const 1024)
        (func (export "tally") (param i32 i32) (result i32) (loop (br 0)) i32.const 1))"#;
    wasm_domain(&d, looping);
    d.open(&d.alice, "p1").expect("open");
    d.vote(&d.alice, &d.alice, Choice::For).expect("vote");
    let (close, _) = d
        .engine()
        .close_proposal(&d.id, &dev(&d.alice), "p1", 16)
        .expect("close");
    assert_eq!(close.outcome, Outcome::PolicyError);
    assert_eq!(d.proposal("p1").state, ProposalState::PolicyError);
    let peer = TestNode::new();
    peer.engine.put_module(looping.as_bytes()).expect("module");
    peer.engine
        .apply_remote(
            &d.id,
            d.engine().changes_since(&d.id, &[]).expect("changes"),
        )
        .expect("the same outcome");
    // A close claiming the module said otherwise is refused.
    let d2 = domain_fixture();
    wasm_domain(&d2, looping);
    d2.open(&d2.alice, "p1").expect("open");
    let alice = d2.alice.clone();
    refused_close(&d2, forged_close_with(&d2, &alice, Outcome::Accepted));
}

/// A close of "p1" by `who` recording `outcome`, whatever the tally.
fn forged_close_with(d: &Dom, who: &Keypair, outcome: Outcome) -> SignedChange {
    let (tally, _) = d.engine().tally(&d.id, "p1").expect("tally");
    let close = Close {
        outcome,
        tally,
        counted_heads: deps_of(d, who),
        closed_at: 16,
        closed_by: who.did(),
    };
    forge(d.engine(), &d.id, who, who, None, |tx| {
        domain::close_proposal(tx, "p1", &close, None)
    })
}

#[test]
fn a_close_by_a_non_member_is_refused() {
    let d = domain_fixture();
    d.open(&d.alice, "p1").expect("open");
    d.vote(&d.alice, &d.alice, Choice::For).expect("vote");
    let stranger = keypair(50);
    // Even after voting time, when any member may close.
    refused_or_denied(&d, forged_close(&d, &stranger, |c| c.closed_at = 30));
}

fn refused_or_denied(d: &Dom, change: SignedChange) {
    assert!(matches!(
        remote_rule(d.engine().apply_remote(&d.id, vec![change])),
        Rule::Denied(_)
    ));
    assert_eq!(d.proposal("p1").state, ProposalState::Open);
}

#[test]
fn a_removed_commit_listener_hears_no_more_commits() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let node = TestNode::new();
    let admin = keypair(1);
    let (kept, removed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let k = kept.clone();
    node.engine.on_commit(move |_| {
        k.fetch_add(1, Ordering::SeqCst);
    });
    let r = removed.clone();
    let id = node.engine.on_commit(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let coop = node
        .engine
        .create_coop(&dev(&admin), &new_coop(&admin))
        .expect("create");
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    node.engine.remove_listener(id);
    node.engine
        .write(&coop, &dev(&admin), |tx| {
            coop::add_member(tx, &keypair(2).did(), Role::Member, 1)
        })
        .expect("member");
    assert_eq!(
        removed.load(Ordering::SeqCst),
        1,
        "removed: heard nothing more"
    );
    assert_eq!(
        kept.load(Ordering::SeqCst),
        2,
        "the other listener still hears"
    );
}

#[test]
fn proposals_open_once_from_draft_and_take_votes_only_while_open() {
    let d = domain_fixture();
    let e = d.engine();
    let refused = |r: Result<(), WriteError>| {
        matches!(
            r,
            Err(WriteError::Schema(
                SchemaError::InvalidValue { .. } | SchemaError::Missing(_)
            ))
        )
    };
    let vote = |who: &Keypair| {
        e.cast_vote(
            &d.id,
            &dev(who),
            "p1",
            &who.did(),
            Choice::For,
            None,
            1_700_000_300,
        )
    };
    let again = e.create_proposal(
        &d.id,
        &dev(&d.bob),
        &domain::NewProposal {
            id: "p1".into(),
            title: "Another roof".into(),
            description: String::new(),
            author: d.bob.did(),
            created_at: 1_700_000_210,
            payload: Payload::Text { body: "x".into() },
        },
    );
    assert!(
        matches!(again, Err(WriteError::Schema(SchemaError::Exists(_)))),
        "one proposal per id: {again:?}"
    );
    assert!(refused(vote(&d.alice)), "no votes on a draft");
    assert!(refused(e.open_proposal(
        &d.id,
        &dev(&d.alice),
        "p1",
        1_700_000_250,
        Some(0)
    )));
    assert!(refused(e.open_proposal(
        &d.id,
        &dev(&d.alice),
        "nope",
        1_700_000_250,
        None
    )));
    e.open_proposal(&d.id, &dev(&d.alice), "p1", 1_700_000_250, None)
        .expect("the author opens the draft");
    assert!(
        refused(e.open_proposal(&d.id, &dev(&d.alice), "p1", 1_700_000_260, None)),
        "only a draft opens"
    );
    vote(&d.alice).expect("a vote while open");
    vote(&d.bob).expect("another");
    let (tally, _) = e.tally(&d.id, "p1").expect("tally");
    assert_eq!(tally.for_, 2);
}

/// Domains list members, not devices: a delegation a device signed writes
/// nothing in them (its member votes with its DID key).
#[test]
fn a_device_delegation_writes_no_domain_document() {
    let d = domain_fixture();
    let node = keypair(77);
    let phone = keypair(50);
    let signer = Signer::Delegated {
        node: node.clone(),
        delegation: crate::test_utils::device_delegation(
            &d.alice.did(),
            &phone,
            &node,
            &[Scope::GovWrite],
        ),
    };
    forbidden(d.engine().write(&d.id, &signer, |tx| {
        domain::set_rules(tx, &domain::Rules::default())
    }));
    let by_did_key = Signer::Delegated {
        node: node.clone(),
        delegation: delegation(&d.admin, &node, &[Scope::GovWrite], 0, 4_000_000_000),
    };
    d.engine()
        .write(&d.id, &by_did_key, |tx| {
            domain::set_rules(tx, &domain::Rules::default())
        })
        .expect("the DID key's delegation writes");
}
