//! `GET /v1/ws/{coop_id}` over a real socket: authentication, live events,
//! backfill, and the log surviving a restart.

mod common;

use std::time::Duration;

use common::Api;
use futures_util::{SinkExt, StreamExt};
use icn_engine::test_utils::keypair;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr, coop: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws/{coop}"))
        .await
        .expect("connect");
    socket
}

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .expect("send");
}

/// The next JSON message, within 10 s.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("a message");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

/// The next event named `name`, skipping others.
async fn event(socket: &mut Socket, name: &str) -> Value {
    loop {
        let msg = next(socket).await;
        assert_eq!(msg["type"], "Event", "{msg}");
        if msg["event"] == name {
            return msg;
        }
    }
}

/// Waits until the gateway has no WebSocket client left: a session ends
/// after its socket closes, and holds the engine until then.
async fn gone(api: &Api) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api
        .gateway
        .metrics()
        .ws_clients
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a session did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn auth(socket: &mut Socket, token: &str) -> Value {
    send(socket, json!({"type": "Auth", "token": token})).await;
    next(socket).await
}

#[tokio::test]
async fn events_stream_live_backfill_and_survive_a_restart() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let bob_did = bob.did().to_string();
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "c1", "default_credit_limit": 50}),
    )
    .await
    .expect(201);
    let server = api.serve().await;

    // Refusals: an unknown co-op before the upgrade; a bad token, a
    // non-member, a first message that is not Auth.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws/nope", server.addr))
            .await
            .is_err()
    );
    let mut s = connect(server.addr, "c1").await;
    let refused = auth(&mut s, "not.a.token").await;
    assert_eq!(refused["type"], "AuthError", "{refused}");
    let mut s = connect(server.addr, "c1").await;
    let refused = auth(&mut s, &bob_token).await;
    assert_eq!(refused["type"], "AuthError");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a member"))
    );
    let mut s = connect(server.addr, "c1").await;
    send(&mut s, json!({"type": "Backfill", "after_seq": 0})).await;
    assert_eq!(next(&mut s).await["type"], "AuthError");

    let mut s = connect(server.addr, "c1").await;
    let ok = auth(&mut s, &token).await;
    assert_eq!(ok["type"], "AuthOk", "{ok}");
    assert_eq!(ok["did"], alice.did().to_string());
    let start = ok["last_seq"].as_u64().expect("last_seq");

    // Live: a member joins, a settlement, a governance domain of the co-op.
    api.post("/v1/coops/c1/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    let added = event(&mut s, "MemberAdded").await;
    assert_eq!(added["data"]["did"], bob_did);
    assert!(added["seq"].as_u64() > Some(start));
    api.post(
        "/v1/ledger/c1/settle",
        &token,
        json!({"to": bob_did, "amount": 3, "unit": "hours", "memo": "soup"}),
    )
    .await
    .expect(201);
    let settled = event(&mut s, "SettlementCreated").await;
    assert_eq!(settled["data"]["memo"], "soup");
    // Both events went out live, and their push latency was measured.
    let mut registry = prometheus_client::registry::Registry::default();
    api.gateway.metrics().register(&mut registry);
    let mut exposition = String::new();
    prometheus_client::encoding::text::encode(&mut exposition, &registry).expect("encodes");
    let pushed: u64 = exposition
        .lines()
        .find_map(|l| l.strip_prefix("icn_gateway_ws_push_duration_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the live push histogram");
    assert!(pushed >= 2, "{exposition}");
    assert_eq!(
        settled["seq"].as_u64(),
        added["seq"].as_u64().map(|s| s + 1)
    );
    api.post(
        "/v1/gov/domains",
        &token,
        json!({"id": "c1-board", "coop_id": "c1"}),
    )
    .await
    .expect(201);
    let created = event(&mut s, "GovernanceDomainCreated").await;
    assert_eq!(created["data"]["domain_id"], "c1-board");
    let p = api
        .post(
            "/v1/gov/domains/c1-board/proposals",
            &token,
            json!({"title": "Soup Fridays"}),
        )
        .await
        .expect(201);
    let pid = p["id"].as_str().expect("id");
    assert_eq!(
        event(&mut s, "GovernanceProposalCreated").await["data"]["proposal_id"],
        pid
    );
    api.post(&format!("/v1/gov/proposals/{pid}/open"), &token, json!({}))
        .await
        .expect(200);
    event(&mut s, "GovernanceProposalOpened").await;
    api.post(
        &format!("/v1/gov/proposals/{pid}/vote"),
        &token,
        json!({"choice": "for"}),
    )
    .await
    .expect(200);
    assert_eq!(
        event(&mut s, "GovernanceVoteCast").await["data"]["choice"],
        "for"
    );
    api.post(&format!("/v1/gov/proposals/{pid}/close"), &token, json!({}))
        .await
        .expect(200);
    let closed = event(&mut s, "GovernanceProposalClosed").await;
    let last = closed["seq"].as_u64().expect("seq");

    // Backfill: every event from the first, in order, then BackfillDone.
    send(&mut s, json!({"type": "Backfill", "after_seq": 0})).await;
    let mut seqs = Vec::new();
    loop {
        let msg = next(&mut s).await;
        if msg["type"] == "BackfillDone" {
            assert_eq!(msg["last_seq"].as_u64(), Some(last));
            assert_eq!(msg["more"], false);
            break;
        }
        seqs.push(msg["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    // Asked from beyond the end, it says where the log really ends.
    send(&mut s, json!({"type": "Backfill", "after_seq": last + 50})).await;
    let done = next(&mut s).await;
    assert_eq!(done["type"], "BackfillDone");
    assert_eq!(done["last_seq"].as_u64(), Some(last), "{done}");
    assert_eq!(done["through"].as_u64(), Some(last + 50), "{done}");
    send(&mut s, json!({"type": "Backfill"})).await;
    assert_eq!(next(&mut s).await["type"], "Error");
    s.close(None).await.expect("close");
    drop(s);
    gone(&api).await;
    server.stop().await;

    // After a restart the log is the same, and continues from it.
    let api = api.restart();
    let server = api.serve().await;
    let mut s = connect(server.addr, "c1").await;
    let ok = auth(&mut s, &token).await;
    assert_eq!(ok["last_seq"].as_u64(), Some(last));
    send(&mut s, json!({"type": "Backfill", "after_seq": last - 1})).await;
    assert_eq!(next(&mut s).await["event"], "GovernanceProposalClosed");
    assert_eq!(next(&mut s).await["type"], "BackfillDone");
    api.post(
        "/v1/ledger/c1/settle",
        &token,
        json!({"to": bob_did, "amount": 1, "unit": "hours"}),
    )
    .await
    .expect(201);
    let again = event(&mut s, "SettlementCreated").await;
    assert_eq!(again["seq"].as_u64(), Some(last + 1));
    s.close(None).await.expect("close");
    drop(s);
    server.stop().await;
}

/// Issue 15 §1: when a merge changes an entry's status after the fact (a
/// settle answered `applied` that an earlier-ordered entry makes
/// conflicted), subscribers hear of it, so apps need not poll.
#[tokio::test]
async fn a_status_changed_after_the_fact_is_pushed() {
    use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry, sort_postings};
    let api = Api::new();
    let (alice, bob) = (keypair(1), keypair(2));
    let token = api.login(&alice).await;
    let bob_did = bob.did().to_string();
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "late", "default_credit_limit": 10}),
    )
    .await
    .expect(201);
    api.post("/v1/coops/late/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    let heads = api.get("/v1/ledger/late/heads", &token).await.expect(200);
    let server = api.serve().await;
    let mut s = connect(server.addr, "late").await;
    assert_eq!(auth(&mut s, &token).await["type"], "AuthOk");

    let first = api
        .post(
            "/v1/ledger/late/settle",
            &token,
            json!({"to": bob_did, "amount": 8, "unit": "hours"}),
        )
        .await
        .expect(201);
    assert_eq!(first["status"]["status"], "applied");
    let first_id: EntryId = first["entry_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("entry id");
    event(&mut s, "SettlementCreated").await;

    // Alice's phone, offline, also paid 8 on the heads it had; its entry
    // sorts first (same depth, smaller id), so the settle above no longer
    // fits her limit of 10.
    let coop_heads: Vec<[u8; 32]> = heads["coop_heads"]
        .as_array()
        .expect("heads")
        .iter()
        .map(|h| h.as_str().expect("hex").parse::<EntryId>().expect("hash").0)
        .collect();
    let coop: icn_schemas::DocId = heads["coop_doc_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("doc id");
    let mut postings = vec![
        Posting {
            account: Account::Member(alice.did()),
            unit: "hours".into(),
            amount: -8,
        },
        Posting {
            account: Account::Member(bob.did()),
            unit: "hours".into(),
            amount: 8,
        },
    ];
    sort_postings(&mut postings);
    let earlier = (0..1000u64)
        .map(|n| {
            let entry = Entry {
                coop,
                parents: Vec::new(),
                author: alice.did(),
                signer: alice.did(),
                timestamp: 1_790_000_000_000 + n,
                coop_heads: coop_heads.clone(),
                body: Body::Transfer {
                    postings: postings.clone(),
                    from_allowance: false,
                },
                memo: "offline".into(),
                decision: None,
                delegation: None,
            };
            let signature = alice.sign(&entry.signing_message().expect("message"));
            SignedEntry { entry, signature }
        })
        .find(|e| e.id().expect("id") < first_id)
        .expect("an entry ordered first");
    let submitted = api
        .post(
            "/v1/ledger/late/entries",
            &token,
            json!({"bytes": hex::encode(earlier.encode().expect("encode"))}),
        )
        .await
        .expect(201);
    assert_eq!(submitted["status"]["status"], "applied", "{submitted}");
    let changed = event(&mut s, "EntryStatusChanged").await;
    assert_eq!(
        changed["data"]["entry_id"],
        first_id.to_string(),
        "{changed}"
    );
    assert_eq!(
        changed["data"]["status"]["status"], "conflicted",
        "{changed}"
    );
    assert_eq!(
        changed["data"]["status"]["reason"], "credit_limit",
        "{changed}"
    );
    s.close(None).await.expect("close");
    drop(s);
    gone(&api).await;
    server.stop().await;
}
