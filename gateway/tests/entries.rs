//! Entries a client signs itself (`GET …/heads`, `POST …/entries`): built
//! and signed here as a wallet would, with the member's own key, and judged
//! by the node as a peer's entries are.

mod common;

use common::Api;
use icn_engine::Keypair;
use icn_engine::test_utils::keypair;
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry, sort_postings};
use icn_schemas::{Did, DocId};
use serde_json::{Value, json};

/// An entry by `author`, signed by `key`, on the heads `heads` names.
fn signed(heads: &Value, author: Did, key: &Keypair, body: Body) -> SignedEntry {
    let hashes = |field: &str| -> Vec<[u8; 32]> {
        heads[field]
            .as_array()
            .expect("a list")
            .iter()
            .map(|h| h.as_str().expect("hex").parse::<EntryId>().expect("hash").0)
            .collect()
    };
    let entry = Entry {
        coop: heads["coop_doc_id"]
            .as_str()
            .expect("doc id")
            .parse::<DocId>()
            .expect("doc id"),
        parents: hashes("ledger_heads").into_iter().map(EntryId).collect(),
        author,
        signer: key.did(),
        timestamp: 1_790_000_000_000,
        coop_heads: hashes("coop_heads"),
        body,
        memo: "signed on the device".into(),
        decision: None,
        delegation: None,
    };
    let signature = key.sign(&entry.signing_message().expect("message"));
    SignedEntry { entry, signature }
}

fn pay(from: Did, to: Did, amount: i64) -> Body {
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
    sort_postings(&mut postings);
    Body::Transfer {
        postings,
        from_allowance: false,
    }
}

fn submit_body(entry: &SignedEntry) -> Value {
    json!({ "bytes": hex::encode(entry.encode().expect("encode")) })
}

#[tokio::test]
async fn a_wallet_submits_entries_it_signed_itself() {
    let api = Api::new();
    let (alice, bob, phone) = (keypair(1), keypair(2), keypair(7));
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "wallet", "default_credit_limit": 10}),
    )
    .await
    .expect(201);
    api.post(
        "/v1/coops/wallet/members",
        &token,
        json!({"did": bob.did().to_string()}),
    )
    .await
    .expect(201);

    let heads = api.get("/v1/ledger/wallet/heads", &token).await.expect(200);
    assert_eq!(heads["ledger_heads"], json!([]));
    assert_eq!(heads["coop_heads"].as_array().map(Vec::len), Some(1));

    // Alice's payment, signed by her key: stored and counted; a retry is
    // the same entry.
    let entry = signed(&heads, alice.did(), &alice, pay(alice.did(), bob.did(), 3));
    let first = api
        .post("/v1/ledger/wallet/entries", &token, submit_body(&entry))
        .await
        .expect(201);
    assert_eq!(first["status"]["status"], "applied", "{first}");
    let again = api
        .post("/v1/ledger/wallet/entries", &token, submit_body(&entry))
        .await
        .expect(200);
    assert_eq!(again, first);
    let position = api
        .get(&format!("/v1/ledger/wallet/position/{}", bob.did()), &token)
        .await
        .expect(200);
    assert_eq!(position["positions"][0]["balance"], 3);

    // Someone else's entry, garbage, a forged signature: refused, nothing
    // stored.
    let heads = api.get("/v1/ledger/wallet/heads", &token).await.expect(200);
    let next = signed(&heads, alice.did(), &alice, pay(alice.did(), bob.did(), 1));
    api.post("/v1/ledger/wallet/entries", &bob_token, submit_body(&next))
        .await
        .expect(403);
    api.post(
        "/v1/ledger/wallet/entries",
        &token,
        json!({"bytes": "not hex"}),
    )
    .await
    .expect(400);
    api.post(
        "/v1/ledger/wallet/entries",
        &token,
        json!({"bytes": "00ff"}),
    )
    .await
    .expect(422);
    let mut forged = next.clone();
    forged.signature[0] ^= 1;
    api.post("/v1/ledger/wallet/entries", &token, submit_body(&forged))
        .await
        .expect(422);
    // Signed by bob's key as if by alice.
    let impostor = signed(&heads, alice.did(), &bob, pay(alice.did(), bob.did(), 1));
    api.post("/v1/ledger/wallet/entries", &token, submit_body(&impostor))
        .await
        .expect(403);
    api.post(
        "/v1/ledger/wallet/entries",
        &token,
        json!({"bytes": "00", "extra": 1}),
    )
    .await
    .expect(400);
    // Beyond alice's credit limit it would be conflicted: refused, as a
    // settle would be, and not stored.
    let over = signed(&heads, alice.did(), &alice, pay(alice.did(), bob.did(), 20));
    let refused = api
        .post("/v1/ledger/wallet/entries", &token, submit_body(&over))
        .await
        .expect(422);
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("credit")),
        "{refused}"
    );
    let tb = api
        .get("/v1/ledger/wallet/trial-balance", &token)
        .await
        .expect(200);
    assert_eq!(tb["entries"], 1, "{tb}");

    // An allowance for alice's phone, granted with her DID key: the
    // position shows it set aside.
    let grant = signed(
        &heads,
        alice.did(),
        &alice,
        Body::Grant {
            device: phone.did(),
            unit: "hours".into(),
            amount: 5,
        },
    );
    let granted = api
        .post("/v1/ledger/wallet/entries", &token, submit_body(&grant))
        .await
        .expect(201);
    assert_eq!(granted["status"]["status"], "applied", "{granted}");
    let position = api
        .get(
            &format!("/v1/ledger/wallet/position/{}", alice.did()),
            &token,
        )
        .await
        .expect(200);
    assert_eq!(position["positions"][0]["reserved"], 5, "{position}");

    // An entry citing a parent this node lacks waits: 202, pending.
    let mut orphan_heads = heads.clone();
    orphan_heads["ledger_heads"] = json!([EntryId([9; 32]).to_string()]);
    let orphan = signed(
        &orphan_heads,
        alice.did(),
        &alice,
        pay(alice.did(), bob.did(), 1),
    );
    let waiting = api
        .post("/v1/ledger/wallet/entries", &token, submit_body(&orphan))
        .await
        .expect(202);
    assert_eq!(waiting["status"]["status"], "pending");
}
