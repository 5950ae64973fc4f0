//! Two sessions run against each other over in-memory queues: catch-up,
//! live push, divergent histories, access control and hostile frames.

use std::sync::mpsc;

use icn_engine::ledger::Settle;
use icn_engine::test_utils::{TestNode, keypair, new_coop};
use icn_engine::{Committed, Engine, Keypair, Signer};
use icn_schemas::DocId;
use icn_schemas::coop;
use icn_sync::session::{Session, SessionError};
use icn_sync::wire::Frame;

/// A node: its engine, its key, and what it commits.
struct Peer {
    node: TestNode,
    key: Keypair,
    events: mpsc::Receiver<Committed>,
}

impl Peer {
    fn new(seed: u64) -> Peer {
        let node = TestNode::new();
        let (tx, events) = mpsc::channel();
        node.engine.on_commit(move |e| {
            let _ = tx.send(e.clone());
        });
        Peer {
            node,
            key: keypair(seed),
            events,
        }
    }

    fn engine(&self) -> &Engine {
        &self.node.engine
    }

    fn session_with(&self, other: &Peer) -> Session {
        // What was committed before the session is carried by its catch-up.
        while self.events.try_recv().is_ok() {}
        Session::new(self.engine().clone(), self.key.did(), other.key.did())
    }

    fn settle(&self, coop: &DocId, to: &Peer, amount: i64) {
        self.engine()
            .settle(
                coop,
                &Signer::Device(self.key.clone()),
                &Settle {
                    to: to.key.did(),
                    amount,
                    unit: "hours".into(),
                    memo: String::new(),
                },
            )
            .expect("settle");
    }
}

/// Moves frames both ways, through their encoding, and feeds each session
/// its node's commits, until neither has anything to say.
fn pump(a: &Peer, sa: &mut Session, b: &Peer, sb: &mut Session) -> Result<(), SessionError> {
    loop {
        let moved = step(a, sa, sb)? | step(b, sb, sa)?;
        if !moved {
            return Ok(());
        }
    }
}

/// Feeds `from` its node's commits and delivers its frames to `to`.
fn step(peer: &Peer, from: &mut Session, to: &mut Session) -> Result<bool, SessionError> {
    let mut moved = false;
    while let Ok(event) = peer.events.try_recv() {
        from.committed(&event)?;
    }
    while let Some(frame) = from.next_frame()? {
        let frame = Frame::decode(&frame.encode()).expect("frames decode");
        to.receive(frame)?;
        moved = true;
    }
    Ok(moved)
}

/// Alice's node holds a co-op in which Bob (another node's key) is a member.
fn coop_with_member() -> (Peer, Peer, DocId) {
    let alice = Peer::new(1);
    let bob = Peer::new(2);
    let signer = Signer::Device(alice.key.clone());
    let id = alice
        .engine()
        .create_coop(&signer, &new_coop(&alice.key))
        .expect("create");
    alice
        .engine()
        .write(&id, &signer, |tx| {
            coop::add_member(tx, &bob.key.did(), coop::Role::Member, 1)
        })
        .expect("add bob");
    (alice, bob, id)
}

fn assert_same(a: &Peer, b: &Peer, coop: &DocId) {
    assert_eq!(
        a.engine().heads(coop),
        b.engine().heads(coop),
        "document heads"
    );
    let ids = |p: &Peer| {
        let mut ids = p.engine().entry_ids(coop).expect("ids");
        ids.sort();
        ids
    };
    assert_eq!(ids(a), ids(b), "ledger entries");
    assert_eq!(
        a.engine().trial_balance(coop).expect("trial balance"),
        b.engine().trial_balance(coop).expect("trial balance")
    );
}

#[test]
fn a_new_member_catches_up_and_then_gets_live_pushes() {
    let (alice, bob, coop) = coop_with_member();
    for i in 0..20 {
        alice.settle(&coop, &bob, 1 + i % 4);
    }
    let mut sa = alice.session_with(&bob);
    let mut sb = bob.session_with(&alice);
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
    assert_eq!(bob.engine().entry_ids(&coop).expect("ids").len(), 20);
    assert_same(&alice, &bob, &coop);

    // Live: each side's commits reach the other within the session.
    alice.settle(&coop, &bob, 5);
    bob.settle(&coop, &alice, 7);
    alice
        .engine()
        .write(&coop, &Signer::Device(alice.key.clone()), |tx| {
            coop::set_display_name(tx, &bob.key.did(), "Bob")
        })
        .expect("rename");
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
    assert_eq!(bob.engine().entry_ids(&coop).expect("ids").len(), 22);
    assert_same(&alice, &bob, &coop);
    assert_eq!(sa.stats().faults + sb.stats().faults, 0);
}

#[test]
fn divergent_offline_histories_merge_in_a_later_session() {
    let (alice, bob, coop) = coop_with_member();
    alice.settle(&coop, &bob, 1);
    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("first sync");
    drop((sa, sb));

    // Offline, both write: entries and document changes.
    for i in 0..30 {
        alice.settle(&coop, &bob, 1 + i % 3);
        bob.settle(&coop, &alice, 2);
    }
    bob.engine()
        .write(&coop, &Signer::Device(bob.key.clone()), |tx| {
            coop::set_display_name(tx, &bob.key.did(), "Bob on the road")
        })
        .expect("bob writes");
    alice
        .engine()
        .write(&coop, &Signer::Device(alice.key.clone()), |tx| {
            coop::set_display_name(tx, &alice.key.did(), "Alice")
        })
        .expect("alice writes");

    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("second sync");
    assert_same(&alice, &bob, &coop);
    assert_eq!(alice.engine().entry_ids(&coop).expect("ids").len(), 61);
    // Each side sent only what the other lacked.
    assert_eq!(sa.stats().entries_out, 30);
    assert_eq!(sb.stats().entries_out, 30);
}

#[test]
fn a_stranger_gets_nothing() {
    let (alice, _bob, coop) = coop_with_member();
    alice.settle(&coop, &_bob, 3);
    let mallory = Peer::new(66);
    let (mut sa, mut sm) = (alice.session_with(&mallory), mallory.session_with(&alice));
    pump(&alice, &mut sa, &mallory, &mut sm).expect("sync");
    assert!(mallory.engine().doc_ids().is_empty());

    // Asking outright gets nothing either.
    sa.receive(Frame::LedgerHave {
        coop: coop.0,
        bloom: Vec::new(),
    })
    .expect("not a fault");
    sa.receive(Frame::LedgerWant {
        coop: coop.0,
        ids: alice
            .engine()
            .entry_ids(&coop)
            .expect("ids")
            .iter()
            .map(|i| i.0)
            .collect(),
    })
    .expect("not a fault");
    assert_eq!(sa.next_frame().expect("frame"), None);
}

#[test]
fn a_peer_sending_forged_data_is_refused_then_cut_off() {
    let (alice, bob, coop) = coop_with_member();
    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");

    // An entry signed by a key that is not Bob's, claiming to be Bob's.
    let forged = {
        let mallory = keypair(66);
        let entry = icn_schemas::ledger::Entry {
            coop,
            parents: Vec::new(),
            author: bob.key.did(),
            signer: bob.key.did(),
            timestamp: 1,
            coop_heads: alice
                .engine()
                .heads(&coop)
                .expect("heads")
                .iter()
                .map(|h| h.0)
                .collect(),
            body: icn_schemas::ledger::Body::Transfer {
                postings: sorted(vec![
                    icn_schemas::ledger::Posting {
                        account: icn_schemas::ledger::Account::Member(bob.key.did()),
                        unit: "hours".into(),
                        amount: -5,
                    },
                    icn_schemas::ledger::Posting {
                        account: icn_schemas::ledger::Account::Member(alice.key.did()),
                        unit: "hours".into(),
                        amount: 5,
                    },
                ]),
                from_allowance: false,
            },
            memo: String::new(),
            decision: None,
            delegation: None,
        };
        icn_engine::test_utils::sign_entry(&mallory, entry)
    };
    let bad = || Frame::Entries {
        coop: coop.0,
        entries: vec![forged.clone()],
    };
    sa.receive(bad()).expect("one fault is not fatal");
    sa.receive(Frame::Doc {
        doc: coop.0,
        message: vec![0x42, 0xff, 0xff],
        signatures: Vec::new(),
    })
    .expect("two faults are not fatal");
    assert!(matches!(
        sa.receive(bad()),
        Err(SessionError::TooManyFaults { faults: 3, .. })
    ));
    assert!(alice.engine().entry_ids(&coop).expect("ids").is_empty());
}

fn sorted(mut postings: Vec<icn_schemas::ledger::Posting>) -> Vec<icn_schemas::ledger::Posting> {
    icn_schemas::ledger::sort_postings(&mut postings);
    postings
}

#[test]
fn a_close_needing_a_tally_module_fetches_it_then_merges() {
    use icn_schemas::domain::{self, Choice, DomainRole, Payload};
    let alice = Peer::new(1);
    let bob = Peer::new(2);
    let me = Signer::Device(alice.key.clone());
    let dom = alice
        .engine()
        .create_domain(&me, &icn_engine::test_utils::new_domain(&alice.key))
        .expect("domain");
    let module = include_str!("../../examples/wasm/two_thirds.wat");
    let hash = alice
        .engine()
        .put_module(module.as_bytes())
        .expect("module");
    alice
        .engine()
        .write(&dom, &me, |tx| {
            domain::add_member(tx, &bob.key.did(), DomainRole::Member, 1)?;
            domain::set_rules(
                tx,
                &domain::Rules {
                    method: domain::Method::Wasm {
                        module: hex::encode(hash),
                    },
                    ..domain::Rules::default()
                },
            )?;
            domain::create_proposal(
                tx,
                &domain::NewProposal {
                    id: "p1".into(),
                    title: "Paint the hall".into(),
                    description: String::new(),
                    author: alice.key.did(),
                    created_at: 1_700_000_200,
                    payload: Payload::Text {
                        body: "Blue".into(),
                    },
                },
            )
        })
        .expect("proposal");
    alice
        .engine()
        .write(&dom, &me, |tx| domain::open_proposal(tx, "p1", 10, 20))
        .expect("open");
    alice
        .engine()
        .write(&dom, &me, |tx| {
            domain::cast_vote(tx, "p1", &alice.key.did(), Choice::For, None, 15)
        })
        .expect("vote");
    alice
        .engine()
        .close_proposal(&dom, &me, "p1", 16)
        .expect("close");

    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
    assert_eq!(
        bob.engine().store().blob(&hash).expect("blob").as_deref(),
        Some(module.as_bytes())
    );
    assert_eq!(bob.engine().heads(&dom), alice.engine().heads(&dom));
    assert_eq!(
        bob.engine().receipt(&dom, "p1"),
        alice.engine().receipt(&dom, "p1")
    );
    assert_eq!(
        sa.stats().faults + sb.stats().faults,
        0,
        "fetching a module is no fault"
    );
}

/// Inputs the `sync_frame` fuzz target found crashing a node, replayed as a
/// peer would send them: each is refused as a fault, and nothing panics.
#[test]
fn fuzz_crashers_are_faults() {
    let (alice, bob, coop) = coop_with_member();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crashers");
    let mut replayed = 0;
    for file in std::fs::read_dir(&dir).expect("crashers") {
        let bytes = std::fs::read(file.expect("file").path()).expect("read");
        let mut sa = alice.session_with(&bob);
        sa.receive(Frame::Hello { docs: vec![coop.0] })
            .expect("hello");
        if let Ok(mut frame) = Frame::decode(&bytes) {
            // The fuzzer learnt its fixture's co-op id; aim at this one.
            if let Frame::Doc { doc, .. } = &mut frame {
                *doc = coop.0;
            }
            sa.receive(frame).expect("one fault is not fatal");
            assert_eq!(sa.stats().faults, 1);
        }
        replayed += 1;
    }
    assert!(replayed > 0);
}

#[test]
fn after_catch_up_a_live_change_carries_only_itself() {
    let (alice, bob, coop) = coop_with_member();
    for i in 0..50 {
        alice
            .engine()
            .write(&coop, &Signer::Device(alice.key.clone()), |tx| {
                coop::set_display_name(tx, &bob.key.did(), &format!("name {i}"))
            })
            .expect("write");
    }
    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
    for i in 0..3 {
        alice
            .engine()
            .write(&coop, &Signer::Device(alice.key.clone()), |tx| {
                coop::set_display_name(tx, &bob.key.did(), &format!("live {i}"))
            })
            .expect("write");
        while let Ok(event) = alice.events.try_recv() {
            sa.committed(&event).expect("push");
        }
        let mut signatures = 0;
        while let Some(frame) = sa.next_frame().expect("frame") {
            if let Frame::Doc { signatures: s, .. } = &frame {
                signatures += s.len();
            }
            sb.receive(frame).expect("receive");
        }
        assert_eq!(signatures, 1, "live change {i} resent history");
        pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
        assert_eq!(alice.engine().heads(&coop), bob.engine().heads(&coop));
    }
}

/// A long run of entries whose first parent never arrives (as when the
/// bloom filter wrongly claims it) overflows the receiver's pending set;
/// the receiver asks again and still ends with everything.
#[test]
fn a_long_run_missing_its_first_parent_still_arrives_whole() {
    let (alice, bob, coop) = coop_with_member();
    alice
        .engine()
        .write(&coop, &Signer::Device(alice.key.clone()), |tx| {
            coop::set_default_credit_limit(tx, 1_000_000)
        })
        .expect("limit");
    for _ in 0..1_200 {
        alice.settle(&coop, &bob, 1);
    }
    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    let (mut dropped, mut wants) = (false, 0);
    loop {
        let mut moved = false;
        while let Ok(event) = bob.events.try_recv() {
            sb.committed(&event).expect("push");
        }
        while let Some(frame) = sb.next_frame().expect("frame") {
            wants += usize::from(matches!(frame, Frame::LedgerWant { .. }));
            sa.receive(frame).expect("receive");
            moved = true;
        }
        while let Ok(event) = alice.events.try_recv() {
            sa.committed(&event).expect("push");
        }
        while let Some(mut frame) = sa.next_frame().expect("frame") {
            if let Frame::Entries { entries, .. } = &mut frame
                && !dropped
            {
                entries.remove(0); // lost: everything after it waits
                dropped = true;
            }
            sb.receive(frame).expect("receive");
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(dropped);
    assert_same(&alice, &bob, &coop);
    // Asked again as a whole, not parent by parent up the run.
    assert!(wants < 10, "{wants} wants");
}

/// A node takes a document it does not hold only if the document names it:
/// a co-op pushed by a peer to a node that is neither a member device nor a
/// registered relay is not stored.
#[test]
fn a_document_that_does_not_name_this_node_is_not_taken() {
    let (alice, _bob, coop) = coop_with_member();
    let mallory = Peer::new(66);
    let mut sm = mallory.session_with(&alice);
    sm.receive(Frame::Hello { docs: vec![coop.0] })
        .expect("hello");
    let signatures = alice
        .engine()
        .changes_since(&coop, &[])
        .expect("history")
        .into_iter()
        .map(|c| {
            let hash = automerge::Change::from_bytes(c.change.clone())
                .expect("change")
                .hash();
            icn_engine::ChangeSignature {
                hash: hash.0,
                signature: c.signature,
                delegation: c.delegation,
            }
        })
        .collect();
    let whole = automerge::sync::Message {
        heads: alice.engine().heads(&coop).expect("heads"),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![alice.engine().save(&coop).expect("save")].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V2,
    };
    sm.receive(Frame::Doc {
        doc: coop.0,
        message: whole.encode(),
        signatures,
    })
    .expect("not a fault");
    assert!(
        mallory.engine().doc_ids().is_empty(),
        "stored a co-op it is not in"
    );
    assert_eq!(sm.stats().faults, 0);
}

/// A peer that never reads what is pushed to it cannot make a session hold
/// an unbounded backlog: the session ends, and a later one catches it up.
#[test]
fn a_peer_that_does_not_read_pushes_ends_its_session() {
    let (alice, bob, coop) = coop_with_member();
    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
    let mut ended = None;
    for n in 0..=icn_sync::session::MAX_OUTBOX_FRAMES as u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_le_bytes());
        let event = Committed::Entries {
            coop,
            entries: vec![(icn_schemas::ledger::EntryId(id), vec![1u8, 2, 3].into())],
        };
        if let Err(e) = sa.committed(&event) {
            ended = Some(e);
            break;
        }
    }
    assert!(matches!(ended, Some(SessionError::Backlog(_))), "{ended:?}");
}

/// Requests that cost this node a pass over its whole ledger cannot be
/// repeated at will: heads come once per session, filters a bounded number
/// of times, and a peer that does not read what it asked for ends its
/// session.
#[test]
fn a_peer_repeating_costly_requests_is_refused() {
    let (alice, bob, coop) = coop_with_member();
    alice.settle(&coop, &bob, 1);
    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
    sa.receive(Frame::LedgerHeads {
        coop: coop.0,
        heads: vec![[9; 32]],
    })
    .expect("one fault");
    assert_eq!(sa.stats().faults, 1);
    while sa.next_frame().expect("frame").is_some() {}

    let have = || Frame::LedgerHave {
        coop: coop.0,
        bloom: Vec::new(),
    };
    // Bob sent one filter during the sync; these are the rest, and one more.
    let mut outcome = Ok(());
    for _ in 0..icn_sync::session::MAX_HAVES_PER_LEDGER {
        outcome = sa.receive(have());
        while sa.next_frame().expect("frame").is_some() {}
    }
    assert!(outcome.is_ok());
    assert_eq!(sa.stats().faults, 2, "the filter past the limit is a fault");

    // Frames that each queue an answer, never read.
    let (mut sa, mut sb) = (alice.session_with(&bob), bob.session_with(&alice));
    pump(&alice, &mut sa, &bob, &mut sb).expect("sync");
    let mut ended = None;
    for _ in 0..=icn_sync::session::MAX_OUTBOX_FRAMES {
        if let Err(e) = sa.receive(Frame::BlobWant { hash: [0; 32] }) {
            ended = Some(e);
            break;
        }
    }
    // Blobs this node lacks queue nothing; ask for one it holds.
    assert!(ended.is_none());
    let hash = alice.engine().put_module(b"(module)").expect("blob");
    for _ in 0..=icn_sync::session::MAX_OUTBOX_FRAMES {
        if let Err(e) = sa.receive(Frame::BlobWant { hash }) {
            ended = Some(e);
            break;
        }
    }
    assert!(matches!(ended, Some(SessionError::Backlog(_))), "{ended:?}");
}
