//! Real iroh endpoints on loopback (no relays, no discovery): two nodes
//! converge and stay converged; three nodes through a relay; a node killed
//! mid-sync resumes.

use std::net::SocketAddr;
use std::time::Duration;

use icn_engine::ledger::Settle;
use icn_engine::test_utils::{TestNode, keypair, new_coop};
use icn_engine::{Engine, Keypair, Signer};
use icn_schemas::DocId;
use icn_schemas::coop;
use icn_sync::{NodeConfig, SyncNode};

/// Long enough for any honest sync on a loaded CI machine; a deadline for
/// liveness, not a performance assertion.
const PATIENCE: Duration = Duration::from_secs(60);

struct Node {
    test: TestNode,
    key: Keypair,
    sync: SyncNode,
}

impl Node {
    async fn start(seed: u64) -> Node {
        Node::start_on(TestNode::new(), seed).await
    }

    async fn start_on(test: TestNode, seed: u64) -> Node {
        Node::start_at(test, seed, "127.0.0.1:0".parse().expect("address")).await
    }

    async fn start_at(test: TestNode, seed: u64, bind: SocketAddr) -> Node {
        let key = keypair(seed);
        let sync = SyncNode::spawn(test.engine.clone(), &key, NodeConfig::direct(bind))
            .await
            .expect("bind");
        Node { test, key, sync }
    }

    fn engine(&self) -> &Engine {
        &self.test.engine
    }

    fn addr(&self) -> SocketAddr {
        self.sync.local_addrs()[0]
    }

    fn dial(&self, other: &Node) {
        self.sync.dial(other.key.did(), other.addr()).expect("dial");
    }

    async fn settle(&self, coop: DocId, to: &Node, amount: i64) {
        self.settle_to(coop, to.key.did(), amount).await;
    }

    async fn settle_to(&self, coop: DocId, to: icn_schemas::Did, amount: i64) {
        let engine = self.engine().clone();
        let signer = Signer::Device(self.key.clone());
        let settle = Settle {
            to,
            amount,
            unit: "hours".into(),
            memo: String::new(),
        };
        tokio::task::spawn_blocking(move || engine.settle(&coop, &signer, &settle))
            .await
            .expect("task")
            .expect("settle");
    }
}

/// Waits until `check` holds, or fails the test after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not converged after {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn converged(a: &Engine, b: &Engine, coop: &DocId) -> bool {
    let ids = |e: &Engine| {
        let mut ids = e.entry_ids(coop).unwrap_or_default();
        ids.sort();
        ids
    };
    a.heads(coop).is_some()
        && a.heads(coop) == b.heads(coop)
        && ids(a) == ids(b)
        && a.trial_balance(coop).ok() == b.trial_balance(coop).ok()
}

/// A co-op on `admin`'s node with every other node's key as a member and,
/// for `relay`, registered as the co-op's relay.
fn coop_on(admin: &Node, members: &[&Node], relay: Option<&Node>) -> DocId {
    let signer = Signer::Device(admin.key.clone());
    let id = admin
        .engine()
        .create_coop(&signer, &new_coop(&admin.key))
        .expect("create");
    admin
        .engine()
        .write(&id, &signer, |tx| {
            for m in members {
                coop::add_member(tx, &m.key.did(), coop::Role::Member, 1)?;
            }
            // Room for long runs of settlements one way.
            coop::set_default_credit_limit(tx, 1_000_000)?;
            if let Some(r) = relay {
                coop::add_relay(tx, &r.key.did(), &r.addr().to_string(), 1)?;
            }
            Ok(())
        })
        .expect("members");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_and_push_live() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    let coop = coop_on(&a, &[&b], None);
    for i in 0..50 {
        a.settle(coop, &b, 1 + i % 2).await;
    }
    a.dial(&b);
    eventually("catch-up", || converged(a.engine(), b.engine(), &coop)).await;
    assert_eq!(b.engine().entry_ids(&coop).expect("ids").len(), 50);

    // The connection stays open: new commits on either side arrive.
    b.settle(coop, &a, 3).await;
    a.settle(coop, &b, 4).await;
    eventually("live push", || {
        converged(a.engine(), b.engine(), &coop)
            && a.engine().entry_ids(&coop).map(|i| i.len()).unwrap_or(0) == 52
    })
    .await;
    assert_eq!(
        a.sync
            .metrics()
            .faults
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Each side pushed its commit live, and measured it.
    for node in [&a, &b] {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            "push",
            "live push",
            node.sync.metrics().push_seconds.clone(),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let pushed: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("push_count "))
            .and_then(|n| n.trim().parse().ok())
            .expect("the live push histogram");
        assert!(pushed >= 1, "{text}");
    }
    a.sync.shutdown().await;
    b.sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_who_never_meet_sync_through_a_relay() {
    let alice = Node::start(1).await;
    let relay = Node::start(9).await;
    let bob = Node::start(2).await;
    let coop = coop_on(&alice, &[&bob], Some(&relay));
    alice.settle(coop, &bob, 2).await;
    // Alice and Bob each know only the relay.
    alice.dial(&relay);
    bob.dial(&relay);
    eventually("bob gets alice's entry through the relay", || {
        converged(alice.engine(), bob.engine(), &coop)
    })
    .await;
    bob.settle(coop, &alice, 1).await;
    eventually("alice gets bob's entry through the relay", || {
        converged(alice.engine(), bob.engine(), &coop)
            && alice
                .engine()
                .entry_ids(&coop)
                .map(|i| i.len())
                .unwrap_or(0)
                == 2
    })
    .await;
    assert!(converged(relay.engine(), bob.engine(), &coop));
    for n in [&alice, &relay, &bob] {
        n.sync.shutdown().await;
    }
}

/// Issue 14 §5: a node registered as the co-op's relay while a session
/// with it is already open (on the admin's node, or on a member's node the
/// registration reaches from elsewhere) receives the co-op and every entry
/// held before, without a new write or a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_registered_mid_session_is_caught_up_at_once() {
    let admin = Node::start(1).await;
    let member = Node::start(2).await;
    let relay = Node::start(9).await;
    let coop = coop_on(&admin, &[&member], None);
    for i in 0..40 {
        admin.settle(coop, &member, 1 + i % 3).await;
    }
    // The member's node holds the co-op; only it talks to the relay.
    member.dial(&admin);
    eventually("the member catches up", || {
        converged(admin.engine(), member.engine(), &coop)
    })
    .await;
    relay.dial(&member);
    relay.dial(&admin);
    eventually("the relay's sessions are open", || {
        member.sync.peers().contains(&relay.key.did())
            && admin.sync.peers().contains(&relay.key.did())
    })
    .await;
    assert!(relay.engine().heads(&coop).is_none(), "not entitled yet");
    // The admin registers the relay on its own node; the registration
    // reaches the member's node, whose open session must now serve it.
    let started = std::time::Instant::now();
    admin
        .engine()
        .write(&coop, &Signer::Device(admin.key.clone()), |tx| {
            coop::add_relay(tx, &relay.key.did(), &relay.addr().to_string(), 2)
        })
        .expect("register the relay");
    eventually("the relay holds the co-op and its ledger", || {
        converged(member.engine(), relay.engine(), &coop)
            && relay
                .engine()
                .entry_ids(&coop)
                .map(|i| i.len())
                .unwrap_or(0)
                == 40
    })
    .await;
    eprintln!(
        "relay caught up {:?} after its registration",
        started.elapsed()
    );
    for n in [&admin, &member, &relay] {
        n.sync.shutdown().await;
    }
}

/// Issue 14 §5: a relay dials back the members it has seen. A member's
/// node that restarts and dials nobody is found again by its relay, at the
/// address it last came from, and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_dials_back_a_member_that_restarted() {
    let admin = Node::start(1).await;
    let member = Node::start(2).await;
    let relay = Node::start(9).await;
    let coop = coop_on(&admin, &[&member], Some(&relay));
    admin.settle(coop, &member, 1).await;
    admin.dial(&relay);
    member.dial(&relay);
    eventually("all three hold the co-op", || {
        converged(admin.engine(), member.engine(), &coop)
            && converged(admin.engine(), relay.engine(), &coop)
    })
    .await;
    assert!(
        !relay.sync.dialing(&member.key.did()),
        "the member dialed in"
    );
    // The member's node stops, and comes back at its address dialing
    // nobody; meanwhile the admin pays it again.
    let addr = member.addr();
    member.sync.shutdown().await;
    let Node { test, sync, .. } = member;
    drop(sync);
    admin.settle_to(coop, keypair(2).did(), 2).await;
    let member = Node::start_at(test.reopen(), 2, addr).await;
    let started = std::time::Instant::now();
    eventually("the relay dials the member back and it catches up", || {
        converged(admin.engine(), member.engine(), &coop)
    })
    .await;
    eprintln!(
        "member caught up {:?} after it restarted",
        started.elapsed()
    );
    assert!(relay.sync.dialing(&member.key.did()));
    // A stranger's key, which may receive nothing held here, is not dialed
    // back: any key may connect, and what a node dials is bounded.
    let stranger = Node::start(7).await;
    stranger.dial(&relay);
    eventually("the stranger's session opens", || {
        relay.sync.peers().contains(&stranger.key.did())
    })
    .await;
    stranger.sync.shutdown().await;
    eventually("the stranger's session ends", || {
        !relay.sync.peers().contains(&stranger.key.did())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!relay.sync.dialing(&stranger.key.did()));
    for n in [&admin, &member, &relay] {
        n.sync.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_mid_sync_keeps_what_it_took_and_resumes() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    let coop = coop_on(&a, &[&b], None);
    // More entries than one frame carries, so B is stopped between frames.
    const ENTRIES: usize = 2 * icn_sync::wire::MAX_ENTRIES_PER_FRAME + 100;
    for i in 0..ENTRIES {
        a.settle(coop, &b, 1 + i as i64 % 2).await;
    }
    // Stop B as soon as its first frame of entries is stored.
    let (stored_tx, mut stored) = tokio::sync::mpsc::unbounded_channel();
    b.engine().on_commit(move |e| {
        if matches!(e, icn_engine::Committed::Entries { .. }) {
            let _ = stored_tx.send(());
        }
    });
    a.dial(&b);
    tokio::time::timeout(PATIENCE, stored.recv())
        .await
        .expect("entries arrive");
    let b_addr = b.addr();
    b.sync.shutdown().await;
    let Node { test, sync, .. } = b;
    drop(sync);
    let held = test.engine.entry_ids(&coop).expect("ids").len();
    eprintln!("B held {held} of {ENTRIES} entries when it stopped");
    let reopened = test.reopen();
    assert_eq!(
        reopened.engine.entry_ids(&coop).expect("ids").len(),
        held,
        "what B acknowledged survives its restart"
    );
    // B comes back at the same address: A's dial loop finds it again.
    let b = Node::start_at(reopened, 2, b_addr).await;
    let mut tries = 0;
    eventually("A redials, B resumes and catches up", || {
        tries += 1;
        if tries % 500 == 0 {
            eprintln!(
                "A {} entries, B {}; peers A {:?} B {:?}; docs equal {}",
                a.engine().entry_ids(&coop).map(|i| i.len()).unwrap_or(0),
                b.engine().entry_ids(&coop).map(|i| i.len()).unwrap_or(0),
                a.sync.peers().len(),
                b.sync.peers().len(),
                a.engine().heads(&coop) == b.engine().heads(&coop)
            );
        }
        converged(a.engine(), b.engine(), &coop)
    })
    .await;
    a.sync.shutdown().await;
    b.sync.shutdown().await;
}

/// A raw iroh endpoint speaking the sync ALPN with `key`.
async fn raw_peer(key: &Keypair) -> iroh::Endpoint {
    iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .secret_key(iroh::SecretKey::from_bytes(&key.secret()))
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
        .bind_addr("127.0.0.1:0")
        .expect("addr")
        .bind()
        .await
        .expect("bind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_or_huge_frames_is_cut_off_and_counted() {
    let node = Node::start(1).await;
    let coop = coop_on(&node, &[], None);
    let addr = iroh::EndpointAddr::new(
        iroh::PublicKey::from_bytes(node.key.did().as_bytes()).expect("key"),
    )
    .with_ip_addr(node.addr());
    let mallory = keypair(66);
    let before = node.engine().heads(&coop);
    for (i, payload) in [
        // A length over the frame limit.
        (u32::MAX).to_be_bytes().to_vec(),
        // A frame that is not one.
        [&5u32.to_be_bytes()[..], &[0xff; 5]].concat(),
    ]
    .into_iter()
    .enumerate()
    {
        let endpoint = raw_peer(&mallory).await;
        let conn = endpoint
            .connect(addr.clone(), icn_sync::ALPN)
            .await
            .expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        send.write_all(&payload).await.expect("write");
        // The node reads its Hello out to us, then closes the connection.
        let mut sink = vec![0u8; 1 << 16];
        let closed = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(_)) = recv.read(&mut sink).await {}
            conn.closed().await
        })
        .await;
        assert!(closed.is_ok(), "the node kept the connection open");
        let m = node.sync.metrics();
        eventually("the fault is counted", || {
            m.peers_disconnected
                .load(std::sync::atomic::Ordering::Relaxed)
                == i as u64 + 1
        })
        .await;
        endpoint.close().await;
    }
    assert_eq!(node.engine().heads(&coop), before, "nothing stored");
    node.sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_hello_is_cut_off() {
    let test = TestNode::new();
    let key = keypair(1);
    let sync = SyncNode::spawn(
        test.engine.clone(),
        &key,
        NodeConfig {
            hello_timeout: Duration::from_millis(200),
            ..NodeConfig::direct("127.0.0.1:0".parse().expect("addr"))
        },
    )
    .await
    .expect("bind");
    let addr =
        iroh::EndpointAddr::new(iroh::PublicKey::from_bytes(key.did().as_bytes()).expect("key"))
            .with_ip_addr(sync.local_addrs()[0]);
    let endpoint = raw_peer(&keypair(66)).await;
    // Connected, and silent: no stream (QUIC keeps such a connection alive).
    let conn = endpoint
        .connect(addr.clone(), icn_sync::ALPN)
        .await
        .expect("connect");
    let closed = tokio::time::timeout(PATIENCE, conn.closed()).await;
    assert!(
        closed.is_ok(),
        "a peer that opened no stream kept its connection"
    );
    // A stream, four bytes of a length, and then nothing.
    let conn = endpoint
        .connect(addr, icn_sync::ALPN)
        .await
        .expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&8u32.to_be_bytes()).await.expect("write");
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(_)) = recv.read(&mut sink).await {}
        conn.closed().await
    })
    .await;
    assert!(closed.is_ok(), "the silent peer kept its session");
    let m = sync.metrics();
    assert_eq!(
        m.peers_disconnected
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    endpoint.close().await;
    sync.shutdown().await;
}
