//! Ledger rules, both ways, on one and two replicas.

use icn_schemas::coop::{self, MemberStatus, Role};
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, Sealed, SignedEntry};
use icn_schemas::{Did, DocId};

use super::{Conflict, EntryRefusal, Ingest, LedgerError, Settle, Status};
use crate::test_utils::{TestNode, keypair, new_coop, sign_entry};
use crate::{Engine, Keypair, Signer};

mod decisions;
mod rotation;

fn dev(k: &Keypair) -> Signer {
    Signer::Device(k.clone())
}

fn settle(to: &Keypair, amount: i64) -> Settle {
    Settle {
        to: to.did(),
        amount,
        unit: "hours".into(),
        memo: "garden help".into(),
    }
}

/// A co-op (default credit limit 100) with admin 1 and members alice 2, bob 3.
fn setup() -> (TestNode, DocId, Keypair, Keypair, Keypair) {
    let node = TestNode::new();
    let (admin, alice, bob) = (keypair(1), keypair(2), keypair(3));
    let id = node
        .engine
        .create_coop(&dev(&admin), &new_coop(&admin))
        .expect("create");
    for m in [&alice, &bob] {
        node.engine
            .write(&id, &dev(&admin), |tx| {
                coop::add_member(tx, &m.did(), Role::Member, 1)
            })
            .expect("member");
    }
    (node, id, admin, alice, bob)
}

fn balance(engine: &Engine, coop: &DocId, who: &Keypair) -> i64 {
    engine
        .position(coop, &who.did())
        .expect("position")
        .into_iter()
        .find(|p| p.unit == "hours")
        .expect("hours")
        .balance
}

fn replica(engine: &Engine, coop: &DocId) -> TestNode {
    let other = TestNode::new();
    other
        .engine
        .apply_remote(coop, engine.changes_since(coop, &[]).expect("history"))
        .expect("co-op history");
    other
}

/// A transfer of `amount` hours from `from` to `to`, signed by `signer`,
/// at the co-op's current heads and ledger heads.
fn transfer(
    engine: &Engine,
    coop: &DocId,
    signer: &Keypair,
    from: Did,
    to: Did,
    amount: i64,
) -> Entry {
    let mut postings = vec![
        Posting {
            account: Account::Member(from),
            unit: "hours".into(),
            amount: -amount,
        },
        Posting {
            account: Account::Member(to),
            unit: "hours".into(),
            amount,
        },
    ];
    icn_schemas::ledger::sort_postings(&mut postings);
    Entry {
        coop: *coop,
        parents: engine.ledger_heads(coop).expect("heads"),
        author: from,
        signer: signer.did(),
        timestamp: 1_700_000_000_000,
        coop_heads: engine
            .heads(coop)
            .expect("doc")
            .iter()
            .map(|h| h.0)
            .collect(),
        body: Body::Transfer {
            postings,
            from_allowance: false,
        },
        memo: String::new(),
        decision: None,
        delegation: None,
    }
}

fn refusal(engine: &Engine, coop: &DocId, bytes: Vec<u8>) -> EntryRefusal {
    let before = engine.trial_balance(coop).expect("trial balance");
    let result = engine
        .ingest_entries(coop, vec![bytes])
        .expect("ingest")
        .remove(0);
    assert_eq!(
        engine.trial_balance(coop).expect("trial balance"),
        before,
        "a refused entry changed the ledger"
    );
    match result {
        Err(r) => r,
        Ok(i) => panic!("expected a refusal, got {i:?}"),
    }
}

#[test]
fn settle_moves_balances_and_positions_show_limits() {
    let (node, coop, _, alice, bob) = setup();
    let (_, status) = node
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 30))
        .expect("settle");
    assert_eq!(status, Status::Applied);
    assert_eq!(balance(&node.engine, &coop, &alice), -30);
    assert_eq!(balance(&node.engine, &coop, &bob), 30);
    let p = node.engine.position(&coop, &alice.did()).expect("position");
    let hours = p.iter().find(|p| p.unit == "hours").expect("hours");
    assert_eq!((hours.credit_limit, hours.available), (100, 70));
    let tb = node.engine.trial_balance(&coop).expect("trial balance");
    assert!(tb.totals.values().all(|t| *t == 0));
    // Survives a restart.
    let node = node.reopen();
    assert_eq!(balance(&node.engine, &coop, &alice), -30);
    assert_eq!(node.engine.trial_balance(&coop).expect("tb").entries, 1);
}

/// `settle_then` from many threads at once: each is told once, after its
/// entry is durable and its commit reported; a refused one is refused at
/// once and never told; every entry is there after a restart.
#[test]
fn settlements_told_when_durable_are_each_told_once_and_survive_a_restart() {
    let (node, coop, _, alice, bob) = setup();
    let reported = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reported.clone();
    node.engine.on_commit(move |c| {
        if let crate::Committed::Entries { entries, .. } = c {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(entries.iter().map(|(id, _)| *id));
        }
    });
    let (told, answers) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (engine, told, reported) = (node.engine.clone(), told.clone(), reported.clone());
            let (from, to) = if t % 2 == 0 {
                (alice.clone(), bob.clone())
            } else {
                (bob.clone(), alice.clone())
            };
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let (told, reported) = (told.clone(), reported.clone());
                    engine
                        .settle_then(&coop, &dev(&from), &settle(&to, 1), move |r| {
                            // Reported to listeners before the caller is told.
                            let listed = r.as_ref().is_ok_and(|(id, _)| {
                                reported
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .contains(id)
                            });
                            let _ = told.send((r, listed));
                        })
                        .expect("taken");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let mut ids = Vec::new();
    for _ in 0..40 {
        let (r, listed) = answers
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("every settlement is told");
        let (id, status) = r.expect("durable");
        assert_eq!(status, Status::Applied);
        assert!(listed, "reported before told");
        ids.push(id);
    }
    assert!(answers.try_recv().is_err(), "told once each");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    // Refused before anything is stored, and never told.
    assert!(matches!(
        node.engine
            .settle_then(&coop, &dev(&alice), &settle(&bob, 500), |_| {
                panic!("a refused settlement is not told")
            }),
        Err(LedgerError::Conflict(_))
    ));
    let node = node.reopen();
    assert_eq!(node.engine.trial_balance(&coop).expect("tb").entries, 40);
    assert_eq!(balance(&node.engine, &coop, &alice), 0);
}

/// A batch large enough to have its signatures checked beside its judging
/// (`VERIFY_ASIDE`), with one forged signature: judged as if all verified,
/// then, when they do not, judged again with each checked. The forged entry
/// is refused, those before it stored, those after it (its children) wait;
/// nothing of the first judging stays. The genuine entry then completes
/// them.
#[test]
fn a_large_batch_with_one_forged_signature_refuses_it_and_keeps_the_rest() {
    let (node, coop, _, alice, bob) = setup();
    for i in 0..80 {
        let (from, to) = if i % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        node.engine
            .settle(&coop, &dev(from), &settle(to, 1))
            .expect("settle");
    }
    let entries = node.engine.entries(&coop).expect("entries");
    assert_eq!(entries.len(), 80);
    let peer = replica(&node.engine, &coop);
    // The last entry came first: it waits, and the first judging of the
    // batch releases it; it must be waiting again after the second.
    let last = peer
        .engine
        .ingest_entries(&coop, vec![entries[79].clone()])
        .expect("ingest");
    assert!(matches!(last[..], [Ok(Ingest::Pending(_))]));
    let mut forged = entries[..79].to_vec();
    let sig_at = forged[40].len() - 64;
    forged[40][sig_at + 5] ^= 1;
    let results = peer.engine.ingest_entries(&coop, forged).expect("ingest");
    assert_eq!(results.len(), 79);
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (0..40, Ok(Ingest::Stored(_))) => {}
            (40, Err(EntryRefusal::BadSignature(_))) => {}
            (41.., Ok(Ingest::Pending(_))) => {}
            _ => panic!("entry {i}: {r:?}"),
        }
    }
    assert_eq!(peer.engine.trial_balance(&coop).expect("tb").entries, 40);
    assert_eq!(peer.engine.pending_entries(&coop).expect("pending"), 39);
    let done = peer
        .engine
        .ingest_entries(&coop, vec![entries[40].clone()])
        .expect("ingest");
    assert!(matches!(done[..], [Ok(Ingest::Stored(_))]));
    assert_eq!(peer.engine.trial_balance(&coop).expect("tb").entries, 80);
    assert_eq!(peer.engine.pending_entries(&coop).expect("pending"), 0);
    assert_eq!(
        peer.engine.trial_balance(&coop).expect("tb"),
        node.engine.trial_balance(&coop).expect("tb")
    );
}

#[test]
fn a_settlement_over_the_credit_limit_is_refused_and_stores_nothing() {
    let (node, coop, admin, alice, bob) = setup();
    node.engine
        .settle(&coop, &dev(&alice), &settle(&bob, 100))
        .expect("exactly the limit");
    match node.engine.settle(&coop, &dev(&alice), &settle(&bob, 1)) {
        Err(LedgerError::Conflict(Conflict::CreditLimit {
            would_be: -101,
            limit: 100,
            ..
        })) => {}
        other => panic!("expected a credit-limit conflict, got {other:?}"),
    }
    assert_eq!(node.engine.trial_balance(&coop).expect("tb").entries, 1);
    // A per-member override raises the limit.
    node.engine
        .write(&coop, &dev(&admin), |tx| {
            coop::set_credit_limit(tx, &alice.did(), 150)
        })
        .expect("override");
    node.engine
        .settle(&coop, &dev(&alice), &settle(&bob, 50))
        .expect("within the new limit");
    assert_eq!(balance(&node.engine, &coop, &alice), -150);
    assert!(matches!(
        node.engine.settle(&coop, &dev(&alice), &settle(&bob, 0)),
        Err(LedgerError::NotPositive)
    ));
}

#[test]
fn peers_refuse_forged_unbalanced_and_unauthorised_entries() {
    let (node, coop, _, alice, bob) = setup();
    let e = &node.engine;
    let good = transfer(e, &coop, &alice, alice.did(), bob.did(), 5);

    // Signed by someone else.
    assert_eq!(
        refusal(e, &coop, sign_entry(&bob, good.clone())),
        EntryRefusal::BadSignature(alice.did())
    );
    // Unbalanced.
    let mut unbalanced = good.clone();
    let Body::Transfer { postings, .. } = &mut unbalanced.body else {
        unreachable!("a transfer")
    };
    postings.iter_mut().for_each(|p| {
        if p.amount > 0 {
            p.amount = 6
        }
    });
    assert_eq!(
        refusal(e, &coop, sign_entry(&alice, unbalanced)),
        EntryRefusal::Unbalanced("hours".into())
    );
    // Debiting someone else's account.
    let theft = transfer(e, &coop, &alice, bob.did(), alice.did(), 5);
    assert!(matches!(
        refusal(e, &coop, sign_entry(&alice, theft)),
        EntryRefusal::NotTheirAccount { .. } | EntryRefusal::Denied(_)
    ));
    let mut theft = transfer(e, &coop, &alice, alice.did(), bob.did(), 5);
    theft.author = alice.did();
    let Body::Transfer { postings, .. } = &mut theft.body else {
        unreachable!("a transfer")
    };
    for p in postings.iter_mut() {
        p.amount = -p.amount; // bob pays alice, written by alice
    }
    assert!(matches!(
        refusal(e, &coop, sign_entry(&alice, theft)),
        EntryRefusal::NotTheirAccount { .. }
    ));
    // Paying someone who is not a member: refused by peers, and by settle.
    let stranger = keypair(99).did();
    let outside = transfer(e, &coop, &alice, alice.did(), stranger, 5);
    assert_eq!(
        refusal(e, &coop, sign_entry(&alice, outside)),
        EntryRefusal::NotAMember(stranger)
    );
    assert!(matches!(
        e.settle(
            &coop,
            &dev(&alice),
            &Settle {
                to: stranger,
                ..settle(&bob, 1)
            }
        ),
        Err(LedgerError::Refused(EntryRefusal::NotAMember(_)))
    ));
    // The treasury is not anyone's to debit without a decision.
    let mut treasury = transfer(e, &coop, &alice, alice.did(), bob.did(), 5);
    let Body::Transfer { postings, .. } = &mut treasury.body else {
        unreachable!("a transfer")
    };
    *postings = vec![
        Posting {
            account: Account::Member(alice.did()),
            unit: "hours".into(),
            amount: 5,
        },
        Posting {
            account: Account::Treasury,
            unit: "hours".into(),
            amount: -5,
        },
    ];
    assert!(matches!(
        refusal(e, &coop, sign_entry(&alice, treasury)),
        EntryRefusal::NotTheirAccount { .. }
    ));
    // A unit the policy does not have.
    let mut gold = good.clone();
    let Body::Transfer { postings, .. } = &mut gold.body else {
        unreachable!("a transfer")
    };
    postings.iter_mut().for_each(|p| p.unit = "gold".into());
    assert_eq!(
        refusal(e, &coop, sign_entry(&alice, gold)),
        EntryRefusal::UnknownUnit("gold".into())
    );
    // A stranger's key.
    let stranger = keypair(99);
    let mut strange = transfer(e, &coop, &stranger, stranger.did(), bob.did(), 5);
    strange.author = stranger.did();
    assert!(matches!(
        refusal(e, &coop, sign_entry(&stranger, strange)),
        EntryRefusal::Denied(_)
    ));
    // Flipped bytes.
    let mut flipped = sign_entry(&alice, good.clone());
    let last = flipped.len() - 70;
    flipped[last] ^= 1;
    assert!(matches!(
        refusal(e, &coop, flipped),
        EntryRefusal::BadSignature(_) | EntryRefusal::Decode(_)
    ));
    // And the good one is stored, once.
    let bytes = sign_entry(&alice, good);
    assert!(matches!(
        e.ingest_entries(&coop, vec![bytes.clone()])
            .expect("ingest")[0],
        Ok(Ingest::Stored(_))
    ));
    assert!(matches!(
        e.ingest_entries(&coop, vec![bytes]).expect("ingest")[0],
        Ok(Ingest::Known(_))
    ));
}

#[test]
fn a_removed_member_writes_no_entries_after_its_removal() {
    let (node, coop, admin, alice, bob) = setup();
    node.engine
        .write(&coop, &dev(&admin), |tx| {
            coop::set_status(tx, &alice.did(), MemberStatus::Removed)
        })
        .expect("remove");
    let late = transfer(&node.engine, &coop, &alice, alice.did(), bob.did(), 5);
    assert_eq!(
        refusal(&node.engine, &coop, sign_entry(&alice, late)),
        EntryRefusal::Denied(crate::Denied::InactiveMember(alice.did()))
    );
    assert!(
        node.engine
            .settle(&coop, &dev(&alice), &settle(&bob, 1))
            .is_err()
    );
}

#[test]
fn entries_wait_for_their_parents_and_co_op_heads() {
    let (node, coop, admin, alice, bob) = setup();
    let other = replica(&node.engine, &coop);
    let (first, _) = node
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 10))
        .expect("settle");
    let (second, _) = node
        .engine
        .settle(&coop, &dev(&bob), &settle(&alice, 3))
        .expect("settle");
    let all = node.engine.entries(&coop).expect("entries");
    // The child first: it waits.
    let r = other
        .engine
        .ingest_entries(&coop, vec![all[1].clone()])
        .expect("ingest");
    assert_eq!(r, vec![Ok(Ingest::Pending(second))]);
    assert_eq!(other.engine.trial_balance(&coop).expect("tb").entries, 0);
    // Then the parent: both are stored.
    other
        .engine
        .ingest_entries(&coop, vec![all[0].clone()])
        .expect("ingest");
    assert_eq!(other.engine.trial_balance(&coop).expect("tb").entries, 2);
    assert!(other.engine.entry(&coop, &first).expect("entry").is_some());

    // An entry citing co-op heads the replica lacks waits for them.
    node.engine
        .write(&coop, &dev(&admin), |tx| {
            coop::set_credit_limit(tx, &alice.did(), 500)
        })
        .expect("limit");
    let (third, _) = node
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 300))
        .expect("within 500");
    let third_bytes = node
        .engine
        .entries(&coop)
        .expect("entries")
        .pop()
        .expect("one more");
    let r = other
        .engine
        .ingest_entries(&coop, vec![third_bytes])
        .expect("ingest");
    assert_eq!(r, vec![Ok(Ingest::Pending(third))]);
    other
        .engine
        .apply_remote(
            &coop,
            node.engine.changes_since(&coop, &[]).expect("changes"),
        )
        .expect("co-op changes");
    assert!(other.engine.entry(&coop, &third).expect("entry").is_some());
    assert_eq!(
        other.engine.trial_balance(&coop).expect("tb"),
        node.engine.trial_balance(&coop).expect("tb")
    );
}

#[test]
fn concurrent_overspend_conflicts_the_same_entry_everywhere() {
    let (node, coop, _, alice, bob) = setup();
    // Alice has a phone; the phone writes on another replica.
    let phone = keypair(20);
    let proof = phone.device_proof(&alice.did());
    node.engine
        .write(&coop, &dev(&alice), |tx| {
            coop::add_device(tx, &alice.did(), &phone.did(), Some(&proof), None, 1)
        })
        .expect("device");
    let other = replica(&node.engine, &coop);
    // Offline from each other, each spends 80 of alice's 100.
    let (a, _) = node
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 80))
        .expect("laptop");
    let (b, _) = other
        .engine
        .settle(&coop, &dev(&phone), &settle(&bob, 80))
        .expect("phone");
    let from_a = node.engine.entries(&coop).expect("entries");
    let from_b = other.engine.entries(&coop).expect("entries");
    node.engine.ingest_entries(&coop, from_b).expect("ingest");
    other.engine.ingest_entries(&coop, from_a).expect("ingest");
    let (tb_a, tb_b) = (
        node.engine.trial_balance(&coop).expect("tb"),
        other.engine.trial_balance(&coop).expect("tb"),
    );
    assert_eq!(tb_a, tb_b);
    assert_eq!(
        tb_a.conflicted.len(),
        1,
        "exactly one of the two spends counts"
    );
    let loser = if a < b { b } else { a }; // same depth: the larger id comes second
    assert_eq!(tb_a.conflicted, vec![loser]);
    assert_eq!(balance(&node.engine, &coop, &alice), -80);
    assert!(tb_a.totals.values().all(|t| *t == 0));
    // Conflicted entries are kept and forwarded.
    let (entry, status) = node
        .engine
        .entry(&coop, &loser)
        .expect("entry")
        .expect("held");
    assert!(matches!(
        status,
        Status::Conflicted {
            conflict: Conflict::CreditLimit { .. }
        }
    ));
    let bytes = SignedEntry::encode(&entry).expect("encode");
    assert_eq!(SignedEntry::decode(&bytes).expect("decode").1, loser);
    let _: EntryId = loser;
}

#[test]
fn history_pages_by_cursor_and_trial_balance_at_earlier_heads() {
    let (node, coop, _, alice, bob) = setup();
    let e = &node.engine;
    let carol = keypair(4);
    e.write(&coop, &dev(&keypair(1)), |tx| {
        coop::add_member(tx, &carol.did(), Role::Member, 1)
    })
    .expect("carol");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (id, _) = e
            .settle(&coop, &dev(&alice), &settle(&bob, 1 + i))
            .expect("settle");
        ids.push(id);
        e.settle(&coop, &dev(&bob), &settle(&carol, 1))
            .expect("not alice's");
    }
    let heads_after_two = vec![ids[1]];
    // Pages of two, following the cursor.
    let alice_account = Account::Member(alice.did());
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = e.history(&coop, alice_account, cursor, 2).expect("page");
        assert!(page.items.len() <= 2);
        for item in &page.items {
            assert!(
                item.entry
                    .postings()
                    .iter()
                    .any(|p| p.account == alice_account)
            );
            assert_eq!(item.status, Status::Applied);
        }
        seen.extend(page.items.iter().map(|i| i.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every entry of alice's, once, in fold order");
    assert!(matches!(
        e.history(&coop, alice_account, Some(EntryId([7; 32])), 2),
        Err(LedgerError::UnknownCursor(c)) if c == EntryId([7; 32])
    ));

    // The ledger as it stood after alice's second settlement: her first two
    // settlements and bob's first (the parent of her second).
    let then = e
        .trial_balance_at(&coop, &heads_after_two)
        .expect("at heads");
    assert_eq!(then.entries, 3);
    assert_eq!(
        then.accounts
            .get(&(alice.did().to_string(), "hours".into())),
        Some(&-3)
    );
    assert!(then.totals.values().all(|t| *t == 0));
    assert!(e.trial_balance_at(&coop, &[EntryId([7; 32])]).is_err());
    let now = e
        .trial_balance_at(&coop, &e.ledger_heads(&coop).expect("heads"))
        .expect("now");
    assert_eq!(now, e.trial_balance(&coop).expect("tb"));

    // No entry cites a decision yet.
    assert!(
        e.entries_by_decision(&coop, &[1; 32])
            .expect("by decision")
            .is_empty()
    );
}

#[test]
fn convert_at_the_policy_rate_through_the_treasury() {
    use super::Convert;
    let (node, coop, admin, alice, bob) = setup();
    let e = &node.engine;
    // Only admins set rates.
    let forbidden = e.write(&coop, &dev(&alice), |tx| {
        coop::set_rate(tx, "hours", "eur", 2500, 1)
    });
    assert!(matches!(forbidden, Err(crate::WriteError::Refused(_))));
    e.write(&coop, &dev(&admin), |tx| {
        coop::set_rate(tx, "hours", "eur", 2500, 1)
    })
    .expect("admin sets 1 hour = 25.00 eur");
    let convert = |to: Option<&Keypair>, amount, from: &str, to_unit: &str| Convert {
        to: to.map(Keypair::did),
        amount,
        from_unit: from.into(),
        to_unit: to_unit.into(),
        memo: "two hours of accounting, paid in euros".into(),
    };
    let (id, status) = e
        .convert(&coop, &dev(&alice), &convert(Some(&bob), 2, "hours", "eur"))
        .expect("convert");
    assert_eq!(status, Status::Applied);
    let tb = e.trial_balance(&coop).expect("tb");
    let get = |who: String, unit: &str| {
        tb.accounts
            .get(&(who, unit.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(get(alice.did().to_string(), "hours"), -2);
    assert_eq!(get("treasury".into(), "hours"), 2);
    assert_eq!(get("treasury".into(), "eur"), -5000);
    assert_eq!(get(bob.did().to_string(), "eur"), 5000);
    assert!(tb.totals.values().all(|t| *t == 0));

    // A peer accepts it as it is...
    let other = replica(e, &coop);
    let all = e.entries(&coop).expect("entries");
    assert!(
        matches!(other.engine.ingest_entries(&coop, all).expect("ingest")[0], Ok(Ingest::Stored(i)) if i == id)
    );
    // ...but not at another rate.
    let (_, entry_status) = e.entry(&coop, &id).expect("entry").expect("held");
    assert_eq!(entry_status, Status::Applied);
    let mut cheat = e.entry(&coop, &id).expect("entry").expect("held").0.entry;
    cheat.parents = e.ledger_heads(&coop).expect("heads");
    let Body::Transfer { postings, .. } = &mut cheat.body else {
        unreachable!("a transfer")
    };
    for p in postings.iter_mut() {
        if p.unit == "eur" {
            p.amount *= 2;
        }
    }
    assert!(matches!(
        refusal(e, &coop, sign_entry(&alice, cheat)),
        EntryRefusal::NotTheirAccount { .. }
    ));

    // No rate the other way, and no fractions.
    assert!(matches!(
        e.convert(&coop, &dev(&alice), &convert(None, 1, "eur", "hours")),
        Err(LedgerError::NoRate { .. })
    ));
    e.write(&coop, &dev(&admin), |tx| {
        coop::set_rate(tx, "eur", "hours", 1, 2500)
    })
    .expect("rate back");
    assert!(matches!(
        e.convert(&coop, &dev(&alice), &convert(None, 100, "eur", "hours")),
        Err(LedgerError::InexactConversion { .. })
    ));
    e.convert(&coop, &dev(&bob), &convert(None, 5000, "eur", "hours"))
        .expect("bob converts back");
    assert_eq!(balance(e, &coop, &bob), 2);
}

#[test]
fn freeze_conflicts_what_touches_the_account_from_its_place_on() {
    let (node, coop, admin, alice, bob) = setup();
    let e = &node.engine;
    // Only admins freeze.
    assert!(matches!(
        e.freeze(&coop, &dev(&bob), &alice.did(), true),
        Err(LedgerError::Refused(EntryRefusal::Denied(_)))
    ));
    e.settle(&coop, &dev(&alice), &settle(&bob, 5))
        .expect("before the freeze");
    e.freeze(&coop, &dev(&admin), &alice.did(), true)
        .expect("admin freezes");
    // Neither paying nor being paid while frozen.
    assert!(matches!(
        e.settle(&coop, &dev(&alice), &settle(&bob, 1)),
        Err(LedgerError::Conflict(Conflict::Frozen { .. }))
    ));
    assert!(matches!(
        e.settle(&coop, &dev(&bob), &settle(&alice, 1)),
        Err(LedgerError::Conflict(Conflict::Frozen { .. }))
    ));
    e.freeze(&coop, &dev(&admin), &alice.did(), false)
        .expect("admin unfreezes");
    e.settle(&coop, &dev(&alice), &settle(&bob, 1))
        .expect("after the unfreeze");
    assert_eq!(balance(e, &coop, &alice), -6);

    // A spend concurrent with a freeze: both replicas decide it the same way.
    let other = replica(e, &coop);
    other
        .engine
        .ingest_entries(&coop, e.entries(&coop).expect("entries"))
        .expect("sync");
    e.freeze(&coop, &dev(&admin), &alice.did(), true)
        .expect("freeze on one replica");
    other
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 2))
        .expect("unaware of the freeze");
    other
        .engine
        .ingest_entries(&coop, e.entries(&coop).expect("entries"))
        .expect("sync");
    e.ingest_entries(&coop, other.engine.entries(&coop).expect("entries"))
        .expect("sync");
    assert_eq!(
        e.trial_balance(&coop).expect("tb"),
        other.engine.trial_balance(&coop).expect("tb")
    );
}

#[test]
fn only_entries_valid_at_their_heads_wait_and_each_signer_has_a_share() {
    use super::MAX_PENDING_PER_SIGNER;
    let (node, coop, _, alice, bob) = setup();
    let e = &node.engine;
    let orphan = |signer: &Keypair, author: &Keypair, n: u64| {
        let mut entry = transfer(e, &coop, signer, author.did(), bob.did(), 1);
        entry.parents = vec![EntryId([9; 32])]; // nobody has it
        entry.timestamp += n;
        sign_entry(signer, entry)
    };
    // A stranger's entry is judged at its known co-op heads, not parked.
    let stranger = keypair(99);
    assert!(matches!(
        refusal(e, &coop, orphan(&stranger, &stranger, 0)),
        EntryRefusal::Denied(_)
    ));
    // A member's waits, up to its share of the pending set.
    let batch: Vec<Vec<u8>> = (0..MAX_PENDING_PER_SIGNER as u64 + 1)
        .map(|n| orphan(&alice, &alice, n))
        .collect();
    let results = e.ingest_entries(&coop, batch).expect("ingest");
    assert!(
        results[..MAX_PENDING_PER_SIGNER]
            .iter()
            .all(|r| matches!(r, Ok(Ingest::Pending(_))))
    );
    assert_eq!(
        results[MAX_PENDING_PER_SIGNER],
        Err(EntryRefusal::PendingFull)
    );
    // Someone else's still may.
    let mut entry = transfer(e, &coop, &bob, bob.did(), alice.did(), 1);
    entry.parents = vec![EntryId([9; 32])];
    let r = e
        .ingest_entries(&coop, vec![sign_entry(&bob, entry)])
        .expect("ingest");
    assert!(matches!(r[0], Ok(Ingest::Pending(_))));
    assert_eq!(
        e.pending_entries(&coop).expect("pending"),
        MAX_PENDING_PER_SIGNER + 1,
        "alice's share and bob's one wait"
    );
    assert_eq!(
        e.trial_balance(&coop).expect("tb").entries,
        0,
        "nothing pending is stored"
    );
}

/// Alice's phones `keypair(20)` and `keypair(21)`, proven devices of hers.
fn with_phones(node: &TestNode, coop: &DocId, alice: &Keypair) -> (Keypair, Keypair) {
    let phones = (keypair(20), keypair(21));
    for phone in [&phones.0, &phones.1] {
        let proof = phone.device_proof(&alice.did());
        node.engine
            .write(coop, &dev(alice), |tx| {
                coop::add_device(tx, &alice.did(), &phone.did(), Some(&proof), None, 1)
            })
            .expect("device");
    }
    phones
}

fn hours(engine: &Engine, coop: &DocId, who: &Keypair) -> super::UnitPosition {
    engine
        .position(coop, &who.did())
        .expect("position")
        .into_iter()
        .find(|p| p.unit == "hours")
        .expect("hours")
}

/// Both replicas take each other's entries; their ledgers must agree.
fn exchange(a: &Engine, b: &Engine, coop: &DocId) -> super::TrialBalance {
    let (from_a, from_b) = (
        a.entries(coop).expect("entries"),
        b.entries(coop).expect("entries"),
    );
    a.ingest_entries(coop, from_b).expect("ingest");
    b.ingest_entries(coop, from_a).expect("ingest");
    let tb = a.trial_balance(coop).expect("tb");
    assert_eq!(tb, b.trial_balance(coop).expect("tb"));
    tb
}

fn status_of(engine: &Engine, coop: &DocId, id: &EntryId) -> Status {
    engine.entry(coop, id).expect("entry").expect("held").1
}

#[test]
fn an_allowance_spent_offline_survives_a_concurrent_general_overspend() {
    let (node, coop, _, alice, bob) = setup();
    let (phone, _) = with_phones(&node, &coop, &alice);
    let (grant, status) = node
        .engine
        .grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 60)
        .expect("grant");
    assert_eq!(status, Status::Applied);
    let p = hours(&node.engine, &coop, &alice);
    assert_eq!((p.reserved, p.available), (60, 40));
    assert_eq!(p.allowances.get(&phone.did()), Some(&60));
    let handset = replica(&node.engine, &coop);
    exchange(&node.engine, &handset.engine, &coop);
    // Offline from each other: the DID key spends all the general credit,
    // the phone its whole allowance.
    let (general, _) = node
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 40))
        .expect("general spend");
    let over = node
        .engine
        .settle(&coop, &dev(&alice), &settle(&bob, 1))
        .expect_err("the rest is reserved");
    assert!(matches!(
        over,
        LedgerError::Conflict(Conflict::CreditLimit { reserved: 60, .. })
    ));
    let (spent, _) = handset
        .engine
        .settle(&coop, &dev(&phone), &settle(&bob, 60))
        .expect("allowance spend");
    let (entry, _) = handset
        .engine
        .entry(&coop, &spent)
        .expect("entry")
        .expect("held");
    assert!(matches!(
        entry.entry.body,
        Body::Transfer {
            from_allowance: true,
            ..
        }
    ));
    let tb = exchange(&node.engine, &handset.engine, &coop);
    assert!(tb.conflicted.is_empty(), "nothing conflicts: {tb:?}");
    for id in [grant, general, spent] {
        assert_eq!(status_of(&handset.engine, &coop, &id), Status::Applied);
    }
    let p = hours(&node.engine, &coop, &alice);
    assert_eq!((p.balance, p.reserved, p.available), (-100, 0, 0));
    assert!(tb.totals.values().all(|t| *t == 0));
    // Over the allowance: refused on the phone, nothing stored.
    let more = handset
        .engine
        .settle(&coop, &dev(&phone), &settle(&bob, 1))
        .expect_err("the allowance is spent");
    assert!(matches!(
        more,
        LedgerError::Conflict(Conflict::AllowanceExceeded {
            remaining: 0,
            wanted: 1,
            ..
        })
    ));
    // Allowances are folded again after a restart.
    let node = node.reopen();
    assert_eq!(hours(&node.engine, &coop, &alice), p);
}

#[test]
fn a_device_general_spend_concurrent_with_a_grant_does_not_count_in_any_order() {
    let (node, coop, _, alice, bob) = setup();
    let (phone, laptop) = with_phones(&node, &coop, &alice);
    let other = replica(&node.engine, &coop);
    // Before any grant, a device spends general credit.
    let (before, _) = other
        .engine
        .settle(&coop, &dev(&laptop), &settle(&bob, 10))
        .expect("general spend before grants");
    exchange(&node.engine, &other.engine, &coop);
    // Concurrently: a grant on one side, a general spend by the laptop on
    // the other. The laptop's spend would fit in the limit, but it takes
    // credit the grant set aside.
    let (grant, _) = node
        .engine
        .grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 90)
        .expect("grant");
    let (concurrent, status) = other
        .engine
        .settle(&coop, &dev(&laptop), &settle(&bob, 30))
        .expect("laptop");
    assert_eq!(status, Status::Applied, "it counts until the grant arrives");
    let entries = [
        node.engine.entries(&coop).expect("entries"),
        other.engine.entries(&coop).expect("entries"),
    ]
    .concat();
    let tb = exchange(&node.engine, &other.engine, &coop);
    assert_eq!(tb.conflicted, vec![concurrent]);
    assert!(matches!(
        status_of(&node.engine, &coop, &concurrent),
        Status::Conflicted {
            conflict: Conflict::AllowanceRequired { .. }
        }
    ));
    assert_eq!(status_of(&node.engine, &coop, &before), Status::Applied);
    assert_eq!(status_of(&node.engine, &coop, &grant), Status::Applied);
    // Any arrival order gives the same fold.
    for order in [entries.clone(), entries.iter().rev().cloned().collect()] {
        let fresh = replica(&node.engine, &coop);
        for bytes in order {
            fresh
                .engine
                .ingest_entries(&coop, vec![bytes])
                .expect("ingest");
        }
        assert_eq!(fresh.engine.trial_balance(&coop).expect("tb"), tb);
        assert_eq!(
            hours(&fresh.engine, &coop, &alice),
            hours(&node.engine, &coop, &alice)
        );
    }
    // From now on the laptop spends only from an allowance, and has none.
    let err = node
        .engine
        .settle(&coop, &dev(&laptop), &settle(&bob, 1))
        .expect_err("no allowance");
    assert!(matches!(
        err,
        LedgerError::Conflict(Conflict::AllowanceExceeded { remaining: 0, .. })
    ));
}

#[test]
fn releases_return_credit_and_allowance_entries_need_the_right_key() {
    let (node, coop, _, alice, bob) = setup();
    let (phone, _) = with_phones(&node, &coop, &alice);
    node.engine
        .grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 50)
        .expect("grant");
    node.engine
        .release_allowance(&coop, &dev(&phone), "hours", 20)
        .expect("release");
    let p = hours(&node.engine, &coop, &alice);
    assert_eq!((p.reserved, p.available), (30, 70));
    let over = node
        .engine
        .release_allowance(&coop, &dev(&phone), "hours", 31)
        .expect_err("more than is left");
    assert!(matches!(
        over,
        LedgerError::Conflict(Conflict::AllowanceExceeded { remaining: 30, .. })
    ));
    let too_much = node
        .engine
        .grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 71)
        .expect_err("no room");
    assert!(matches!(
        too_much,
        LedgerError::Conflict(Conflict::CreditLimit { .. })
    ));
    // Wrong keys, refused by every peer.
    let wrong = |signer: &Keypair, body: Body| {
        let mut entry = transfer(&node.engine, &coop, signer, alice.did(), bob.did(), 1);
        entry.body = body;
        refusal(&node.engine, &coop, sign_entry(signer, entry))
    };
    let grant = |device: &Keypair| Body::Grant {
        device: device.did(),
        unit: "hours".into(),
        amount: 5,
    };
    let release = Body::Release {
        unit: "hours".into(),
        amount: 5,
    };
    assert!(matches!(
        wrong(&phone, grant(&bob)),
        EntryRefusal::BadAllowance(_)
    ));
    assert!(matches!(
        wrong(&alice, grant(&alice)),
        EntryRefusal::BadAllowance(_)
    ));
    assert!(matches!(
        wrong(&alice, release),
        EntryRefusal::BadAllowance(_)
    ));
    let mut own = transfer(&node.engine, &coop, &alice, alice.did(), bob.did(), 1);
    let Body::Transfer { from_allowance, .. } = &mut own.body else {
        unreachable!("a transfer")
    };
    *from_allowance = true;
    assert!(matches!(
        refusal(&node.engine, &coop, sign_entry(&alice, own)),
        EntryRefusal::BadAllowance(_)
    ));
    // The DID key still spends general credit: 70 are available.
    node.engine
        .settle(&coop, &dev(&alice), &settle(&bob, 70))
        .expect("general spend");
}

#[test]
fn a_version_1_store_is_folded_into_the_new_layout_once() {
    let (node, coop, _, alice, bob) = setup();
    let (phone, _) = with_phones(&node, &coop, &alice);
    node.engine
        .settle(&coop, &dev(&alice), &settle(&bob, 30))
        .expect("settle");
    node.engine
        .grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 20)
        .expect("grant");
    node.engine
        .settle(&coop, &dev(&phone), &settle(&bob, 5))
        .expect("allowance spend");
    let tb = node.engine.trial_balance(&coop).expect("tb");
    let position = hours(&node.engine, &coop, &alice);
    let entries = node.engine.entries(&coop).expect("entries");
    let TestNode { engine, dir } = node;
    drop(engine);
    // Rewrite the store as version 1 had it: entries by seq, no fold.
    {
        // The engine's last handle may close a moment after the drop
        // returns (a background thread lets go of sled's file lock).
        let mut tries = 0;
        let db = loop {
            match sled::open(dir.path().join("store")) {
                Ok(db) => break db,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("sled: {e}"),
            }
        };
        db.drop_tree(crate::storage::layout::LEDGER).expect("drop");
        let old = db
            .open_tree(crate::storage::layout::V1_LEDGER_ENTRIES)
            .expect("tree");
        for (seq, bytes) in entries.iter().enumerate() {
            let key = crate::storage::layout::id_seq_key(&coop, seq as u64);
            old.insert(key, bytes.as_slice()).expect("insert");
        }
        db.open_tree(crate::storage::layout::META)
            .expect("meta")
            .insert(
                crate::storage::layout::SCHEMA_VERSION_KEY,
                &1u32.to_be_bytes(),
            )
            .expect("version");
        db.flush().expect("flush");
    }
    let node = TestNode {
        engine: Engine::open(crate::Store::open(dir.path()).expect("store")).expect("engine"),
        dir,
    };
    assert_eq!(node.engine.trial_balance(&coop).expect("tb"), tb);
    assert_eq!(hours(&node.engine, &coop, &alice), position);
    assert_eq!(
        node.engine.store().schema_version().expect("version"),
        crate::storage::layout::SCHEMA_VERSION
    );
    // Migrated once: the old trees are gone, and a restart reads the fold.
    let node = node.reopen();
    assert_eq!(node.engine.trial_balance(&coop).expect("tb"), tb);
    assert_eq!(node.engine.entries(&coop).expect("entries"), entries);
}

/// The co-op of [`setup`], with a governance domain (admin; alice and bob,
/// weight 1) that the policy names its treasury domain, and a proposal "p"
/// by alice with `payload`, accepted by alice and bob. Not closed yet.
fn governed(
    payload: icn_schemas::domain::Payload,
) -> (TestNode, DocId, DocId, Keypair, Keypair, Keypair) {
    use icn_schemas::domain::{self, Choice, DomainRole};
    let (node, coop, admin, alice, bob) = setup();
    let domain = node
        .engine
        .create_domain(&dev(&admin), &crate::test_utils::new_domain(&admin))
        .expect("domain");
    node.engine
        .write(&domain, &dev(&admin), |tx| {
            domain::add_member(tx, &alice.did(), DomainRole::Member, 1)?;
            domain::add_member(tx, &bob.did(), DomainRole::Member, 1)
        })
        .expect("domain members");
    node.engine
        .write(&coop, &dev(&admin), |tx| {
            coop::set_treasury_domain(tx, &domain)
        })
        .expect("treasury domain");
    node.engine
        .write(&domain, &dev(&alice), |tx| {
            domain::create_proposal(
                tx,
                &domain::NewProposal {
                    id: "p".into(),
                    title: "Pay bob for the roof".into(),
                    description: String::new(),
                    author: alice.did(),
                    created_at: 1,
                    payload,
                },
            )
        })
        .expect("proposal");
    node.engine
        .write(&domain, &dev(&alice), |tx| {
            domain::open_proposal(tx, "p", 1, 100)
        })
        .expect("open");
    for voter in [&alice, &bob] {
        node.engine
            .write(&domain, &dev(voter), |tx| {
                domain::cast_vote(tx, "p", &voter.did(), Choice::For, None, 2)
            })
            .expect("vote");
    }
    (node, coop, domain, admin, alice, bob)
}

fn budget(to: &Keypair, amount: i64) -> icn_schemas::domain::Payload {
    icn_schemas::domain::Payload::Budget {
        amount,
        recipient: to.did(),
        unit: "hours".into(),
        purpose: "roof".into(),
    }
}

#[test]
fn an_accepted_budget_executes_once_from_the_treasury() {
    let (node, coop, domain, _admin, alice, bob) = governed(budget(&keypair(3), 50));
    // Closing executes it: the closer records the allocation.
    let (_, receipt) = node
        .engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close");
    assert_eq!(balance(&node.engine, &coop, &bob), 50);
    let hash = receipt.hash();
    let executed = node
        .engine
        .entries_by_decision(&coop, &hash)
        .expect("by decision");
    assert_eq!(executed.len(), 1);
    assert_eq!(executed[0].status, Status::Applied);
    let tb = node.engine.trial_balance(&coop).expect("tb");
    assert_eq!(
        tb.accounts
            .get(&("treasury".to_owned(), "hours".to_owned())),
        Some(&-50)
    );
    assert!(tb.totals.values().all(|t| *t == 0));
    // A second execution, by anyone, does not count.
    let again = node
        .engine
        .execute_decision(&coop, &dev(&bob), &domain, "p")
        .expect_err("executed already");
    assert!(matches!(
        again,
        LedgerError::Conflict(Conflict::AlreadyExecuted { .. })
    ));
    // A peer's entry citing it with another amount, or citing a receipt
    // that is no accepted decision, is kept and does not count.
    let cite = |receipt: [u8; 32], amount: i64| {
        let mut entry = transfer(&node.engine, &coop, &alice, alice.did(), bob.did(), amount);
        let Body::Transfer { postings, .. } = &mut entry.body else {
            unreachable!("a transfer")
        };
        postings[0] = Posting {
            account: Account::Member(bob.did()),
            unit: "hours".into(),
            amount,
        };
        postings[1] = Posting {
            account: Account::Treasury,
            unit: "hours".into(),
            amount: -amount,
        };
        entry.decision = Some(receipt);
        let bytes = sign_entry(&alice, entry);
        let result = node
            .engine
            .ingest_entries(&coop, vec![bytes])
            .expect("ingest")
            .remove(0);
        let Ok(Ingest::Stored(id)) = result else {
            panic!("expected it stored, got {result:?}")
        };
        status_of(&node.engine, &coop, &id)
    };
    assert!(matches!(
        cite(hash, 60),
        Status::Conflicted {
            conflict: Conflict::DecisionMismatch { .. }
        }
    ));
    assert!(matches!(
        cite([9; 32], 50),
        Status::Conflicted {
            conflict: Conflict::DecisionNotCounted { .. }
        }
    ));
    assert!(matches!(
        cite(hash, 50),
        Status::Conflicted {
            conflict: Conflict::AlreadyExecuted { .. }
        }
    ));
    assert_eq!(balance(&node.engine, &coop, &bob), 50);
    // Without a decision the treasury is not anyone's to debit.
    let mut theft = transfer(&node.engine, &coop, &alice, alice.did(), bob.did(), 5);
    let Body::Transfer { postings, .. } = &mut theft.body else {
        unreachable!("a transfer")
    };
    postings[1].account = Account::Treasury;
    icn_schemas::ledger::sort_postings(postings);
    assert!(matches!(
        refusal(&node.engine, &coop, sign_entry(&alice, theft)),
        EntryRefusal::NotTheirAccount { .. }
    ));
    // Stored, not rebuilt: a restart shows the same.
    let node = node.reopen();
    assert_eq!(balance(&node.engine, &coop, &bob), 50);
}

#[test]
fn an_execution_that_arrives_before_its_close_counts_once_the_close_does() {
    let (node, coop, domain, _admin, alice, bob) = governed(budget(&keypair(3), 40));
    let peer = replica(&node.engine, &coop);
    peer.engine
        .apply_remote(
            &domain,
            node.engine.changes_since(&domain, &[]).expect("domain"),
        )
        .expect("the domain, open");
    node.engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close and execute");
    // The peer gets the ledger entry first: it is kept, and does not count.
    peer.engine
        .ingest_entries(&coop, node.engine.entries(&coop).expect("entries"))
        .expect("ingest");
    assert_eq!(balance(&peer.engine, &coop, &bob), 0);
    // Then the close: the ledger folds again, and the allocation counts.
    peer.engine
        .apply_remote(
            &domain,
            node.engine.changes_since(&domain, &[]).expect("domain"),
        )
        .expect("the close");
    assert_eq!(balance(&peer.engine, &coop, &bob), 40);
    assert_eq!(
        peer.engine.trial_balance(&coop).expect("tb"),
        node.engine.trial_balance(&coop).expect("tb")
    );
}

#[test]
fn an_accepted_freeze_executes_and_any_member_records_it() {
    let (node, coop, domain, _admin, alice, bob) = governed(icn_schemas::domain::Payload::Freeze {
        did: keypair(3).did(),
    });
    node.engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close and execute");
    let err = node
        .engine
        .settle(&coop, &dev(&bob), &settle(&alice, 1))
        .expect_err("bob is frozen");
    assert!(matches!(
        err,
        LedgerError::Conflict(Conflict::Frozen { .. })
    ));
}

#[test]
fn the_registry_traces_receipt_to_ledger_entry() {
    let (node, coop, domain, _admin, alice, bob) = governed(budget(&keypair(3), 30));
    assert!(node.engine.registry(&coop).expect("registry").is_empty());
    let (_, receipt) = node
        .engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close");
    let registry = node.engine.registry(&coop).expect("registry");
    assert_eq!(registry.len(), 1);
    assert_eq!(registry[0].receipt, receipt);
    let trace = node
        .engine
        .trace(&coop, &receipt.hash())
        .expect("trace")
        .expect("known");
    assert!(trace.executed);
    assert_eq!(trace.reason, None);
    assert_eq!(trace.entries.len(), 1);
    assert_eq!(trace.entries[0].status, Status::Applied);
    // A second execution shows in the trace, not counted, with its reason.
    let forged = {
        let mut entry = transfer(&node.engine, &coop, &bob, bob.did(), alice.did(), 30);
        let Body::Transfer { postings, .. } = &mut entry.body else {
            unreachable!("a transfer")
        };
        *postings = vec![
            Posting {
                account: Account::Member(bob.did()),
                unit: "hours".into(),
                amount: 30,
            },
            Posting {
                account: Account::Treasury,
                unit: "hours".into(),
                amount: -30,
            },
        ];
        entry.decision = Some(receipt.hash());
        sign_entry(&bob, entry)
    };
    node.engine
        .ingest_entries(&coop, vec![forged])
        .expect("ingest");
    let trace = node
        .engine
        .trace(&coop, &receipt.hash())
        .expect("trace")
        .expect("known");
    assert_eq!(trace.entries.len(), 2);
    assert!(trace.executed);
    assert!(trace.entries.iter().any(|e| matches!(
        e.status,
        Status::Conflicted {
            conflict: Conflict::AlreadyExecuted { .. }
        }
    )));
    assert_eq!(node.engine.trace(&coop, &[7; 32]).expect("trace"), None);
}

#[test]
fn a_text_decision_is_traced_as_nothing_to_execute() {
    let (node, coop, domain, _admin, alice, _bob) = governed(icn_schemas::domain::Payload::Text {
        body: "We thank the garden team".into(),
    });
    let (_, receipt) = node
        .engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close");
    let trace = node
        .engine
        .trace(&coop, &receipt.hash())
        .expect("trace")
        .expect("known");
    assert!(!trace.executed);
    assert_eq!(
        trace.reason.as_deref(),
        Some("nothing for the ledger to execute")
    );
    assert!(trace.entries.is_empty());
}

#[test]
fn an_accepted_membership_is_applied_by_an_admin_node() {
    let carol = keypair(4);
    let (node, coop, domain, admin, alice, _bob) =
        governed(icn_schemas::domain::Payload::Membership {
            action: "add".into(),
            did: carol.did(),
            role: Some("member".into()),
        });
    // Alice closes; she is no co-op admin, so her node cannot apply it.
    let (_, receipt) = node
        .engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close");
    let standing = |n: &TestNode| {
        n.engine
            .read(&coop, |r| coop::Standing::read(r, &carol.did()))
            .flatten()
    };
    assert!(standing(&node).is_none());
    let trace = node
        .engine
        .trace(&coop, &receipt.hash())
        .expect("trace")
        .expect("known");
    assert!(!trace.executed);
    assert!(trace.reason.expect("a reason").contains("admin"));
    // A member may not apply it: the co-op document is admins' to write.
    assert!(
        node.engine
            .apply_decision(&coop, &dev(&alice), &domain, "p")
            .is_err()
    );
    // An admin's node applies it; twice is the same as once.
    node.engine
        .apply_decision(&coop, &dev(&admin), &domain, "p")
        .expect("admin applies");
    node.engine
        .apply_decision(&coop, &dev(&admin), &domain, "p")
        .expect("again, a no-op");
    assert!(standing(&node).is_some_and(|s| s.is_active()));
    let trace = node
        .engine
        .trace(&coop, &receipt.hash())
        .expect("trace")
        .expect("known");
    assert!(trace.executed);
}

#[test]
fn an_accepted_config_change_closed_by_an_admin_applies_at_once() {
    let (node, coop, domain, admin, _alice, bob) =
        governed(icn_schemas::domain::Payload::ConfigChange {
            key: "default_credit_limit".into(),
            value: "250".into(),
        });
    node.engine
        .close_proposal(&domain, &dev(&admin), "p", 5)
        .expect("close");
    assert_eq!(hours(&node.engine, &coop, &bob).credit_limit, 250);
}

#[test]
fn a_node_that_learns_of_an_accepted_close_executes_it() {
    let (node, coop, domain, _admin, alice, bob) = governed(budget(&keypair(3), 20));
    // The closer's node holds only the domain, so it executes nothing.
    let closer = TestNode::new();
    closer
        .engine
        .apply_remote(
            &domain,
            node.engine.changes_since(&domain, &[]).expect("domain"),
        )
        .expect("the domain");
    closer
        .engine
        .close_proposal(&domain, &dev(&alice), "p", 5)
        .expect("close");
    // This node executes with its executor key once the close reaches it
    // and the closer's node has had its time to.
    node.engine.set_executor(dev(&bob));
    node.engine
        .apply_remote(
            &domain,
            closer.engine.changes_since(&domain, &[]).expect("close"),
        )
        .expect("the close");
    assert_eq!(balance(&node.engine, &coop, &bob), 0, "not at once");
    assert_eq!(
        node.engine
            .execute_pending(5 + crate::EXECUTION_GRACE_SECONDS - 1),
        0
    );
    assert_eq!(
        node.engine
            .execute_pending(5 + crate::EXECUTION_GRACE_SECONDS),
        1
    );
    assert_eq!(node.engine.execute_pending(1_000), 0, "once");
    assert_eq!(balance(&node.engine, &coop, &bob), 20);
    let receipt = node.engine.receipt(&domain, "p").expect("closed");
    let executions = node
        .engine
        .entries_by_decision(&coop, &receipt.hash())
        .expect("by decision");
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].entry.author, bob.did());
}

#[test]
fn close_due_records_the_closes_whose_time_is_over() {
    let (node, coop, domain, admin, _alice, bob) = governed(budget(&keypair(3), 15));
    // Without an executor key, a node records nothing.
    assert!(node.engine.close_due(1_000).is_empty());
    node.engine.set_executor(dev(&admin));
    assert!(node.engine.close_due(99).is_empty(), "open until 100");
    assert_eq!(node.engine.close_due(100), vec![(domain, "p".to_owned())]);
    assert_eq!(
        node.engine.receipt(&domain, "p").map(|r| r.outcome),
        Some(icn_schemas::tally::Outcome::Accepted)
    );
    assert_eq!(balance(&node.engine, &coop, &bob), 15);
    assert!(node.engine.close_due(200).is_empty(), "closed once");
}

#[test]
fn a_long_chain_arriving_children_first_is_folded_whole() {
    let (node, coop, _, alice, bob) = setup();
    for i in 0..200 {
        let (from, to) = if i % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        node.engine
            .settle(&coop, &dev(from), &settle(to, 1 + i % 3))
            .expect("settle");
    }
    let entries = node.engine.entries(&coop).expect("entries");
    let other = replica(&node.engine, &coop);
    // One at a time, last first: each waits for its parent until the first.
    for bytes in entries.iter().rev() {
        other
            .engine
            .ingest_entries(&coop, vec![bytes.clone()])
            .expect("ingest");
    }
    assert_eq!(
        other.engine.trial_balance(&coop).expect("tb"),
        node.engine.trial_balance(&coop).expect("tb")
    );
    assert_eq!(other.engine.trial_balance(&coop).expect("tb").entries, 200);
}

/// A phone of alice's, registered with its proof.
fn with_phone(node: &TestNode, coop: &DocId, alice: &Keypair, seed: u64) -> Keypair {
    let phone = keypair(seed);
    let proof = phone.device_proof(&alice.did());
    node.engine
        .write(coop, &dev(alice), |tx| {
            coop::add_device(tx, &alice.did(), &phone.did(), Some(&proof), None, 1)
        })
        .expect("phone");
    phone
}

fn reserved(engine: &Engine, coop: &DocId, who: &Keypair) -> i64 {
    engine
        .position(coop, &who.did())
        .expect("position")
        .into_iter()
        .find(|p| p.unit == "hours")
        .expect("hours")
        .reserved
}

fn status(engine: &Engine, coop: &DocId, id: &EntryId) -> Status {
    engine.entry(coop, id).expect("entry").expect("held").1
}

/// `admin` suspends `member`; answers the seal it writes.
fn suspend(engine: &Engine, coop: &DocId, admin: &Keypair, member: &Keypair) -> EntryId {
    engine
        .set_member_status(
            coop,
            &dev(admin),
            &member.did(),
            coop::MemberStatus::Suspended,
        )
        .expect("suspend")
        .expect("sealed")
}

/// Whether a seal keeps entry `id` from counting.
fn sealed(engine: &Engine, coop: &DocId, id: &EntryId) -> bool {
    matches!(
        status(engine, coop, id),
        Status::Conflicted {
            conflict: Conflict::Sealed { .. }
        }
    )
}

/// Ingests one entry from a peer, which must be stored (valid at its heads).
fn stored(engine: &Engine, coop: &DocId, bytes: Vec<u8>) -> EntryId {
    match engine
        .ingest_entries(coop, vec![bytes])
        .expect("ingest")
        .remove(0)
    {
        Ok(crate::ledger::Ingest::Stored(id)) => id,
        other => panic!("valid at its heads: {other:?}"),
    }
}

#[test]
fn a_sealed_key_that_backdates_counts_for_nothing_it_was_not_seen_writing() {
    let (node, coop, admin, alice, bob) = setup();
    let e = &node.engine;
    let phone = with_phone(&node, &coop, &alice, 30);
    // What the phone wrote honestly: an allowance spend and a general
    // payment (before any grant).
    let (honest, s) = e
        .settle(&coop, &dev(&phone), &settle(&bob, 5))
        .expect("pay");
    assert_eq!(s, Status::Applied);
    e.grant_allowance(&coop, &dev(&alice), &phone.did(), "hours", 20)
        .expect("grant");
    let (spend, _) = e
        .settle(&coop, &dev(&phone), &settle(&bob, 3))
        .expect("spend");
    assert_eq!(reserved(e, &coop, &alice), 17);
    let old_heads: Vec<[u8; 32]> = e.heads(&coop).expect("heads").iter().map(|h| h.0).collect();
    let old_parents = e.ledger_heads(&coop).expect("ledger heads");

    // The thief's first backdated entry arrives before the seal: the old
    // co-op heads and ledger parents, an old time, from the phone's
    // allowance. It counts, for now.
    let backdated = |amount: i64, memo: &str| {
        let mut entry = transfer(e, &coop, &phone, alice.did(), bob.did(), amount);
        entry.parents = old_parents.clone();
        entry.coop_heads = old_heads.clone();
        entry.timestamp = 1_000;
        entry.memo = memo.into();
        if let Body::Transfer { from_allowance, .. } = &mut entry.body {
            *from_allowance = true;
        }
        sign_entry(&phone, entry)
    };
    let early = backdated(7, "thief, early");
    let early_id = icn_schemas::ledger::SignedEntry::decode(&early)
        .expect("decodes")
        .1;
    e.ingest_entries(&coop, vec![early]).expect("ingest")[0]
        .as_ref()
        .expect("valid at its heads");
    assert_eq!(status(e, &coop, &early_id), Status::Applied);

    // Alice, who had not seen it, revokes the phone and seals it. A plain
    // member may not seal someone else's key; the phone may not seal at all.
    let seal_alice =
        |who: &Keypair| e.seal(&coop, &dev(who), &alice.did(), Sealed::Key(phone.did()));
    assert!(matches!(
        seal_alice(&bob),
        Err(LedgerError::Refused(EntryRefusal::Denied(_)))
    ));
    assert!(matches!(
        seal_alice(&phone),
        Err(LedgerError::Refused(EntryRefusal::Denied(_)))
    ));
    let alice_device = e.ledger_heads(&coop).expect("heads"); // the seal's past: everything held now
    assert!(
        alice_device.contains(&early_id),
        "the early entry is a head"
    );
    // Seal first from a replica that never saw the early entry.
    let other = replica(e, &coop);
    let grant_bytes: Vec<Vec<u8>> = e
        .entry_ids(&coop)
        .expect("ids")
        .iter()
        .filter(|id| **id != early_id)
        .map(|id| e.entry_bytes(&coop, id).expect("bytes").expect("held"))
        .collect();
    other
        .engine
        .ingest_entries(&coop, grant_bytes)
        .expect("ingest");
    other
        .engine
        .write(&coop, &dev(&alice), |tx| {
            coop::revoke_device(tx, &alice.did(), &phone.did())
        })
        .expect("revoke");
    let (seal, s) = other
        .engine
        .seal(&coop, &dev(&alice), &alice.did(), Sealed::Key(phone.did()))
        .expect("seal");
    assert_eq!(s, Status::Applied);
    // The unspent allowance went back to alice.
    assert_eq!(reserved(&other.engine, &coop, &alice), 0);
    // Both replicas take everything, in opposite orders.
    let late = backdated(11, "thief, after the seal");
    let everything = |from: &Engine| -> Vec<Vec<u8>> {
        from.entry_ids(&coop)
            .expect("ids")
            .iter()
            .map(|id| from.entry_bytes(&coop, id).expect("bytes").expect("held"))
            .collect()
    };
    e.apply_remote(
        &coop,
        other.engine.changes_since(&coop, &[]).expect("changes"),
    )
    .expect("co-op changes");
    let mut to_e = everything(&other.engine);
    to_e.push(late.clone());
    e.ingest_entries(&coop, to_e).expect("ingest");
    let mut to_other = vec![late];
    to_other.extend(everything(e));
    other
        .engine
        .ingest_entries(&coop, to_other)
        .expect("ingest");

    for replica in [e, &other.engine] {
        let tb = replica.trial_balance(&coop).expect("tb");
        assert_eq!(tb, e.trial_balance(&coop).expect("tb"), "replicas agree");
        assert!(tb.totals.values().all(|t| *t == 0));
        assert_eq!(status(replica, &coop, &honest), Status::Applied);
        assert_eq!(status(replica, &coop, &spend), Status::Applied);
        assert_eq!(status(replica, &coop, &seal), Status::Applied);
        assert!(
            matches!(
                status(replica, &coop, &early_id),
                Status::Conflicted {
                    conflict: Conflict::Sealed { .. }
                }
            ),
            "the early thief entry no longer counts"
        );
        assert_eq!(
            balance(replica, &coop, &bob),
            8,
            "5 + 3, nothing of the thief's"
        );
        assert_eq!(reserved(replica, &coop, &alice), 0);
    }
    let _ = admin;
}

/// A node writing under a delegation its member's phone signed: it writes
/// where the phone is live, and seals nothing; once the phone is revoked,
/// nothing more, and what it wrote unseen by the revoker is sealed.
#[test]
fn a_device_delegation_writes_where_the_device_is_live() {
    let (node, coop, _, alice, bob) = setup();
    let e = &node.engine;
    let phone = with_phone(&node, &coop, &alice, 31);
    let gateway = keypair(77);
    use icn_schemas::Scope;
    let scopes = [Scope::CoopWrite, Scope::LedgerWrite, Scope::GovWrite];
    let by_phone = Signer::Delegated {
        node: gateway.clone(),
        delegation: crate::test_utils::device_delegation(&alice.did(), &phone, &gateway, &scopes),
    };
    let (paid, s) = e.settle(&coop, &by_phone, &settle(&bob, 4)).expect("pay");
    assert_eq!(s, Status::Applied);
    e.write(&coop, &by_phone, |tx| {
        coop::set_display_name(tx, &alice.did(), "Alice (phone, via a node)")
    })
    .expect("a co-op write");
    assert!(matches!(
        e.seal(
            &coop,
            &by_phone,
            &alice.did(),
            Sealed::Key(keypair(99).did())
        ),
        Err(LedgerError::Refused(EntryRefusal::Denied(_)))
    ));
    // A key that is no device of alice's signs nothing for her.
    let stranger = keypair(98);
    let forged = Signer::Delegated {
        node: gateway.clone(),
        delegation: crate::test_utils::device_delegation(
            &alice.did(),
            &stranger,
            &gateway,
            &scopes,
        ),
    };
    assert!(matches!(
        e.settle(&coop, &forged, &settle(&bob, 1)),
        Err(LedgerError::Refused(EntryRefusal::Denied(_)))
    ));
    // Revoked and sealed: the delegation writes no more, and its unseen
    // backdated entry is sealed; the payment alice saw still counts.
    let before_heads: Vec<[u8; 32]> = e.heads(&coop).expect("heads").iter().map(|h| h.0).collect();
    let unseen = {
        let mut entry = transfer(e, &coop, &gateway, alice.did(), bob.did(), 3);
        entry.coop_heads = before_heads;
        entry.delegation = match &by_phone {
            Signer::Delegated { delegation, .. } => Some(delegation.clone()),
            Signer::Device(_) | Signer::Rotated { .. } => None,
        };
        sign_entry(&gateway, entry)
    };
    e.revoke_device(
        &coop,
        &dev(&alice),
        &alice.did(),
        &phone.did(),
        &coop::Revocation {
            reason: "lost".into(),
            at: 2,
            by: alice.did(),
        },
    )
    .expect("revoke and seal");
    assert!(e.settle(&coop, &by_phone, &settle(&bob, 1)).is_err());
    let taken = e
        .ingest_entries(&coop, vec![unseen])
        .expect("ingest")
        .remove(0);
    let Ok(crate::ledger::Ingest::Stored(id)) = taken else {
        panic!("valid at its heads: {taken:?}");
    };
    assert!(matches!(
        status(e, &coop, &id),
        Status::Conflicted {
            conflict: Conflict::Sealed { .. }
        }
    ));
    assert_eq!(status(e, &coop, &paid), Status::Applied);
}

/// An entry with no parents sorts first in the fold: before a freeze, it
/// used to count whatever the freeze meant. Now an admin's freeze seals
/// the debits of the account it had not seen that sort before it.
#[test]
fn a_freeze_seals_the_debits_it_had_not_seen_that_sort_before_it() {
    let (node, coop, admin, alice, bob) = setup();
    let e = &node.engine;
    let (seen, _) = e
        .settle(&coop, &dev(&alice), &settle(&bob, 5))
        .expect("pay");
    let (freeze, _) = e
        .freeze(&coop, &dev(&admin), &alice.did(), true)
        .expect("freeze");
    // Alice's key backdates: no parents, so it sorts before the freeze.
    let mut entry = transfer(e, &coop, &alice, alice.did(), bob.did(), 7);
    entry.parents.clear();
    let backdated = sign_entry(&alice, entry);
    // A payment *to* alice that the freeze had not seen is the frozen-account
    // rule's business, not the seal's: it does not debit alice.
    let mut credit = transfer(e, &coop, &bob, bob.did(), alice.did(), 1);
    credit.parents.clear();
    let credit = sign_entry(&bob, credit);
    let other = replica(e, &coop);
    let mut all = e.entries(&coop).expect("entries");
    e.ingest_entries(&coop, vec![backdated.clone(), credit.clone()])
        .expect("ingest");
    all.insert(0, backdated);
    all.push(credit);
    all.reverse();
    other.engine.ingest_entries(&coop, all).expect("ingest");
    for engine in [e, &other.engine] {
        assert_eq!(
            engine.trial_balance(&coop).expect("tb"),
            e.trial_balance(&coop).expect("tb")
        );
        assert_eq!(status(engine, &coop, &seen), Status::Applied);
        assert_eq!(status(engine, &coop, &freeze), Status::Applied);
        let sealed = engine
            .entry_ids(&coop)
            .expect("ids")
            .into_iter()
            .filter(|id| {
                matches!(
                    status(engine, &coop, id),
                    Status::Conflicted {
                        conflict: Conflict::Sealed { .. }
                    }
                )
            })
            .count();
        assert_eq!(sealed, 1, "the backdated debit, and only it");
        assert_eq!(
            balance(engine, &coop, &alice),
            -4,
            "-5, +1: the credit counts"
        );
    }
}

/// A logout seals the delegation: what the node wrote under it that the
/// seal had not seen does not count, whatever it cites; the member's other
/// delegations write on. A node seals its own delegation; a device's
/// delegation seals no other.
#[test]
fn a_sealed_delegation_writes_nothing_unseen() {
    use icn_schemas::Scope;
    let (node, coop, _, alice, bob) = setup();
    let e = &node.engine;
    let gateway = keypair(77);
    let delegated = |nonce_node: &Keypair| Signer::Delegated {
        node: nonce_node.clone(),
        delegation: crate::test_utils::delegation(
            &alice,
            nonce_node,
            &[Scope::LedgerWrite],
            0,
            4_000_000_000,
        ),
    };
    let session = delegated(&gateway);
    let other_node = keypair(78);
    let other_session = delegated(&other_node);
    let Signer::Delegated { delegation, .. } = &session else {
        unreachable!("delegated")
    };
    let hash = delegation.hash();
    let (before, _) = e.settle(&coop, &session, &settle(&bob, 2)).expect("pay");
    let old_parents = e.ledger_heads(&coop).expect("heads");
    // A phone's delegation may not seal this one (the DID key's, or a
    // delegation of it, may: "log out everywhere"); its own node may.
    let phone = with_phone(&node, &coop, &alice, 32);
    let by_phone = Signer::Delegated {
        node: other_node.clone(),
        delegation: crate::test_utils::device_delegation(
            &alice.did(),
            &phone,
            &other_node,
            &[Scope::LedgerWrite],
        ),
    };
    assert!(matches!(
        e.seal(&coop, &by_phone, &alice.did(), Sealed::Delegation(hash)),
        Err(LedgerError::Refused(EntryRefusal::Denied(_)))
    ));
    e.seal(&coop, &session, &alice.did(), Sealed::Delegation(hash))
        .expect("logout seals");
    let mut late = transfer(e, &coop, &gateway, alice.did(), bob.did(), 3);
    late.parents = old_parents;
    late.delegation = Some(delegation.clone());
    let taken = e
        .ingest_entries(&coop, vec![sign_entry(&gateway, late)])
        .expect("ingest")
        .remove(0);
    let Ok(crate::ledger::Ingest::Stored(late)) = taken else {
        panic!("valid at its heads: {taken:?}");
    };
    assert!(matches!(
        status(e, &coop, &late),
        Status::Conflicted {
            conflict: Conflict::Sealed { .. }
        }
    ));
    assert_eq!(status(e, &coop, &before), Status::Applied);
    let (other, s) = e
        .settle(&coop, &other_session, &settle(&bob, 1))
        .expect("another delegation");
    assert_eq!(s, Status::Applied);
    assert_eq!(status(e, &coop, &other), Status::Applied);
    assert_eq!(balance(e, &coop, &bob), 3);
}

/// A suspension seals the member: what it wrote that the admin had not
/// seen does not count, whatever co-op heads it cites; once reinstated, what
/// it writes knowing of it counts again, and backdating past the
/// suspension still does not.
#[test]
fn a_suspension_seals_what_the_admin_had_not_seen_and_reinstatement_lifts_it() {
    let (node, coop, admin, alice, bob) = setup();
    let e = &node.engine;
    let (seen, _) = e
        .settle(&coop, &dev(&bob), &settle(&alice, 2))
        .expect("pay");
    let old_heads: Vec<[u8; 32]> = e.heads(&coop).expect("heads").iter().map(|h| h.0).collect();
    let old_parents = e.ledger_heads(&coop).expect("ledger heads");
    let backdated = |amount: i64| {
        let mut entry = transfer(e, &coop, &bob, bob.did(), alice.did(), amount);
        entry.coop_heads = old_heads.clone();
        entry.parents = old_parents.clone();
        entry.memo = format!("backdated {amount}");
        sign_entry(&bob, entry)
    };
    let seal = suspend(e, &coop, &admin, &bob);
    assert_eq!(status(e, &coop, &seal), Status::Applied);
    let during = stored(e, &coop, backdated(3));
    // A suspended member writes nothing at current heads.
    assert!(e.settle(&coop, &dev(&bob), &settle(&alice, 1)).is_err());
    e.set_member_status(&coop, &dev(&admin), &bob.did(), coop::MemberStatus::Active)
        .expect("reinstate");
    let (after, s) = e
        .settle(&coop, &dev(&bob), &settle(&alice, 4))
        .expect("pay again");
    assert_eq!(s, Status::Applied);
    let still_backdated = stored(e, &coop, backdated(5));
    let sealed = |id: &EntryId| sealed(e, &coop, id);
    assert_eq!(status(e, &coop, &seen), Status::Applied);
    assert!(
        sealed(&during),
        "written unseen, citing heads before the suspension"
    );
    assert!(
        sealed(&still_backdated),
        "after the reinstatement, but backdated"
    );
    assert_eq!(status(e, &coop, &after), Status::Applied);
    assert_eq!(balance(e, &coop, &alice), 6);
    agrees_in_reverse(e, &coop);
}

#[test]
fn a_suspension_arriving_late_seals_a_held_entry_that_touches_no_account_of_its_author() {
    // A seal placed after entries it did not see finds them by author: a
    // transfer through its author's account history (`A` rows), a grant,
    // which has no postings, by its `u` row, the only way back into the
    // refold for it.
    let (node, coop, admin, alice, bob) = setup();
    let e = &node.engine;
    let (phone, _) = with_phones(&node, &coop, &bob);
    e.settle(&coop, &dev(&alice), &settle(&bob, 3))
        .expect("a first entry");
    let admins = replica(e, &coop);
    admins
        .engine
        .ingest_entries(&coop, e.entries(&coop).expect("entries"))
        .expect("the ledger");
    let unseen = |body: Body| {
        let mut entry = transfer(e, &coop, &bob, bob.did(), alice.did(), 1);
        entry.body = body;
        entry.memo = "unseen by the admin".into();
        sign_entry(&bob, entry)
    };
    let grant = unseen(Body::Grant {
        device: phone.did(),
        unit: "hours".into(),
        amount: 5,
    });
    let held = stored(e, &coop, grant);
    // The admin, elsewhere, suspends bob without having seen it.
    let seal = suspend(&admins.engine, &coop, &admin, &bob);
    let heads: Vec<_> = e.heads(&coop).expect("heads");
    e.apply_remote(
        &coop,
        admins.engine.changes_since(&coop, &heads).expect("changes"),
    )
    .expect("the suspension");
    let theirs = admins.engine.entries(&coop).expect("entries");
    e.ingest_entries(&coop, theirs).expect("the seal");
    assert_eq!(status(e, &coop, &seal), Status::Applied);
    assert!(sealed(e, &coop, &held), "written unseen by the suspension");
    assert_eq!(balance(e, &coop, &alice), -3);
    agrees_in_reverse(e, &coop);
}

/// Another replica, taking everything `engine` holds in the opposite
/// order, ends with the same books.
fn agrees_in_reverse(engine: &Engine, coop: &DocId) {
    let other = replica(engine, coop);
    let mut all = engine.entries(coop).expect("entries");
    all.reverse();
    other.engine.ingest_entries(coop, all).expect("ingest");
    assert_eq!(
        other.engine.trial_balance(coop).expect("tb"),
        engine.trial_balance(coop).expect("tb")
    );
}

#[test]
fn credit_limits_are_per_unit_where_the_policy_says_so() {
    let (node, coop, admin, alice, bob) = setup();
    let signer = dev(&admin);
    node.engine
        .write(&coop, &signer, |tx| {
            coop::put_unit(tx, "eur", None, 2)?;
            // Members may go 5.00 eur below zero, not the default 100.
            coop::set_unit_credit_limit(tx, "eur", 500)
        })
        .expect("a unit with its own limit");
    let pay = |who: &Keypair, unit: &str, amount: i64| {
        node.engine.settle(
            &coop,
            &dev(who),
            &Settle {
                to: admin.did(),
                amount,
                unit: unit.into(),
                memo: String::new(),
            },
        )
    };
    assert!(matches!(
        pay(&alice, "eur", 501),
        Err(LedgerError::Conflict(Conflict::CreditLimit { .. }))
    ));
    pay(&alice, "eur", 500).expect("within the unit's limit");
    pay(&alice, "hours", 100).expect("hours keep the default");
    // A member's limit in one unit wins over the unit's.
    node.engine
        .write(&coop, &signer, |tx| {
            coop::set_credit_limit_in(tx, &bob.did(), "eur", 2_000)
        })
        .expect("bob's own eur limit");
    pay(&bob, "eur", 2_000).expect("within bob's eur limit");
    let position = |who: &Keypair, unit: &str| {
        node.engine
            .position(&coop, &who.did())
            .expect("position")
            .into_iter()
            .find(|p| p.unit == unit)
            .expect("unit")
    };
    assert_eq!(position(&alice, "eur").credit_limit, 500);
    assert_eq!(position(&alice, "hours").credit_limit, 100);
    assert_eq!(position(&bob, "eur").credit_limit, 2_000);
    // A replica judges the same.
    let other = replica(&node.engine, &coop);
    let tb = exchange(&node.engine, &other.engine, &coop);
    assert_eq!(tb.entries, 3);
    assert!(tb.conflicted.is_empty());
}

/// Local writes recorded together (as the writers queued behind one lock
/// holder are) are drafted in turn, each on the one before it; one refused
/// among them leaves nothing behind, and the others are committed whole.
#[test]
fn writes_recorded_together_chain_and_a_refused_one_among_them_leaves_nothing() {
    use super::fold::{Decision, Decisions};
    use super::pipeline::{CoopDoc, Draft, Ledger};

    struct Plain(automerge::Automerge);
    impl CoopDoc for Plain {
        fn read<T>(&self, f: impl FnOnce(&automerge::Automerge) -> T) -> T {
            f(&self.0)
        }
    }
    struct NoDecisions;
    impl Decisions for NoDecisions {
        fn decision(&self, _: &DocId, _: &[u8; 32]) -> Option<Decision> {
            None
        }
    }
    let (node, coop, _admin, alice, bob) = setup();
    let doc = {
        let handle = node.engine.handle(&coop).expect("co-op");
        let state = handle.lock().expect("co-op document");
        state.doc.clone()
    };
    let transfer = |from: &Keypair, to: &Keypair, amount: i64| Draft {
        author: from.did(),
        signer: from.did(),
        delegation: None,
        body: Body::Transfer {
            postings: vec![
                Posting {
                    account: Account::Member(to.did()),
                    unit: "hours".into(),
                    amount,
                },
                Posting {
                    account: Account::Member(from.did()),
                    unit: "hours".into(),
                    amount: -amount,
                },
            ],
            from_allowance: false,
        },
        memo: String::new(),
        decision: None,
        timestamp: 1,
    };
    // Alice's second 60 would take her to -120, past her limit of 100.
    let drafts = [
        transfer(&alice, &bob, 60),
        transfer(&alice, &bob, 60),
        transfer(&bob, &alice, 10),
    ];
    let writes = [
        (&drafts[0], &alice),
        (&drafts[1], &alice),
        (&drafts[2], &bob),
    ];
    let mut ledger = Ledger::open(coop, node.engine.store());
    let mut results = ledger
        .record(&Plain(doc), &NoDecisions, &writes)
        .into_iter();
    let (first, _) = results.next().expect("first").expect("within the limit");
    assert!(matches!(
        results.next().expect("second"),
        Err(LedgerError::Conflict(Conflict::CreditLimit { .. }))
    ));
    let (third, _) = results.next().expect("third").expect("within the limit");
    drop(ledger);

    let node = node.reopen();
    assert_eq!(node.engine.ledger_heads(&coop).expect("heads"), vec![third]);
    assert_eq!(
        node.engine.entry_ids(&coop).expect("ids"),
        vec![first, third]
    );
    let (entry, status) = node
        .engine
        .entry(&coop, &third)
        .expect("entry")
        .expect("stored");
    assert_eq!(entry.entry.parents, vec![first]);
    assert_eq!(status, Status::Applied);
    assert_eq!(balance(&node.engine, &coop, &alice), -50);
    assert_eq!(balance(&node.engine, &coop, &bob), 50);
}

/// Many writers settling at once on one co-op: every write within the
/// limit is acknowledged, stored and counted, every one past it is refused
/// and stores nothing, and the entries form one chain.
#[test]
fn concurrent_settles_each_land_at_the_end_and_overspends_store_nothing() {
    let (node, coop, admin, alice, bob) = setup();
    type Outcome = (bool, Result<(EntryId, Status), LedgerError>);
    let writing = std::sync::atomic::AtomicBool::new(true);
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let mut threads = Vec::new();
        for w in 0..8 {
            let (engine, alice, bob, admin) = (&node.engine, &alice, &bob, &admin);
            threads.push(s.spawn(move || {
                (0..5)
                    .map(|_| {
                        // Alice's writers try 200 hours against a limit
                        // of 100; Bob's pay the admin 20 in all.
                        if w % 2 == 0 {
                            (true, engine.settle(&coop, &dev(alice), &settle(bob, 10)))
                        } else {
                            (false, engine.settle(&coop, &dev(bob), &settle(admin, 1)))
                        }
                    })
                    .collect::<Vec<_>>()
            }));
        }
        // A reader meanwhile, without the ledger's lock, never sees half
        // of a group: the books always balance.
        let reader = s.spawn(|| {
            let mut seen = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let trial = node.engine.trial_balance(&coop).expect("trial balance");
                let sum: i64 = trial.accounts.values().sum();
                assert_eq!(sum, 0, "a trial balance read mid-commit");
                assert!(trial.entries >= seen);
                seen = trial.entries;
            }
        });
        let results = threads
            .into_iter()
            .flat_map(|t| t.join().expect("writer"))
            .collect();
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("reader");
        results
    });
    let mut acknowledged = Vec::new();
    let mut alice_refused = 0;
    for (by_alice, result) in results {
        match result {
            Ok((id, Status::Applied)) => acknowledged.push(id),
            Err(LedgerError::Conflict(Conflict::CreditLimit { .. })) if by_alice => {
                alice_refused += 1
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(alice_refused, 10);
    assert_eq!(acknowledged.len(), 10 + 20);
    let node = node.reopen();
    let mut ids = node.engine.entry_ids(&coop).expect("ids");
    assert_eq!(node.engine.ledger_heads(&coop).expect("heads").len(), 1);
    ids.sort();
    acknowledged.sort();
    assert_eq!(ids, acknowledged);
    for id in &ids {
        assert_eq!(status_of(&node.engine, &coop, id), Status::Applied);
    }
    assert_eq!(balance(&node.engine, &coop, &alice), -100);
    assert_eq!(balance(&node.engine, &coop, &bob), 80);
    assert_eq!(balance(&node.engine, &coop, &admin), 20);
}
