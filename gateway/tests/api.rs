//! The gateway's routes, called through its router on a real engine (sled
//! on a temporary directory): each route's success and its error statuses.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Api, config};
use icn_engine::test_utils::keypair;
use icn_gateway::Config;
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_unknown_routes() {
    let api = Api::new();
    let body = api.call("GET", "/v1/health", None, None).await.expect(200);
    assert_eq!(body, json!({"status": "ok"}));
    api.call("GET", "/v1/nope", None, None).await.expect(404);
    api.call("DELETE", "/v1/health", None, None)
        .await
        .expect(405);
}

#[tokio::test]
async fn auth_refuses_bad_signatures_replays_and_bad_tokens() {
    let api = Api::new();
    let alice = keypair(1);
    let did = alice.did().to_string();

    // Malformed requests.
    api.call(
        "POST",
        "/v1/auth/challenge",
        None,
        Some(json!({"did": "did:icn:nope"})),
    )
    .await
    .expect(400);
    let raw = Request::post("/v1/auth/challenge")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .expect("request");
    api.send(raw).await.expect(400);
    api.call(
        "POST",
        "/v1/auth/challenge",
        None,
        Some(json!({"did": did, "scopes": ["gov:everything"]})),
    )
    .await
    .expect(400);

    let c = api
        .call(
            "POST",
            "/v1/auth/challenge",
            None,
            Some(json!({"did": did})),
        )
        .await
        .expect(200);
    let challenge = c["challenge"].as_str().expect("challenge").to_owned();
    assert!(challenge.starts_with("icn-delegation/v1\n"));
    let verify = |sig: String, challenge: String| json!({"did": did, "challenge": challenge, "signature": sig});

    // Someone else's signature; garbage; a statement not issued here.
    let mallory = keypair(2).sign(challenge.as_bytes());
    api.call(
        "POST",
        "/v1/auth/verify",
        None,
        Some(verify(hex::encode(mallory), challenge.clone())),
    )
    .await
    .expect(401);
    api.call(
        "POST",
        "/v1/auth/verify",
        None,
        Some(verify("zz".into(), challenge.clone())),
    )
    .await
    .expect(400);
    // The same fields, one second longer: parses, but this node never
    // issued it.
    let expires = challenge
        .lines()
        .find_map(|l| l.strip_prefix("expires: "))
        .and_then(|e| e.parse::<u64>().ok())
        .expect("expires");
    let forged = challenge.replace(
        &format!("expires: {expires}"),
        &format!("expires: {}", expires + 1),
    );
    let sig = hex::encode(alice.sign(forged.as_bytes()));
    api.call("POST", "/v1/auth/verify", None, Some(verify(sig, forged)))
        .await
        .expect(401);

    // The real signature, padded base64: a token. Then a replay: refused.
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD.encode(alice.sign(challenge.as_bytes()));
    let v = api
        .call(
            "POST",
            "/v1/auth/verify",
            None,
            Some(verify(sig.clone(), challenge.clone())),
        )
        .await
        .expect(200);
    let token = v["token"].as_str().expect("token").to_owned();
    api.call(
        "POST",
        "/v1/auth/verify",
        None,
        Some(verify(sig, challenge)),
    )
    .await
    .expect(401);
    api.get("/v1/gov/domains", &token).await.expect(200);

    // No token, a tampered one, one from another secret.
    api.call("GET", "/v1/gov/domains", None, None)
        .await
        .expect(401);
    let mut tampered = token.clone();
    tampered.insert(tampered.len() - 3, 'x');
    api.get("/v1/gov/domains", &tampered).await.expect(401);
    let other = Api::with(Config::new(keypair(100), b"another secret".to_vec()));
    other.get("/v1/gov/domains", &token).await.expect(401);
    // The same secret, but a store that never saw the delegation.
    let fresh = Api::new();
    fresh.get("/v1/gov/domains", &token).await.expect(401);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let mut config = config(&keypair(100));
    // Expiry is in whole seconds, so a token of n seconds lives between
    // n - 1 and n: five leave the first request four seconds even on a
    // loaded host (one second failed there).
    config.token_seconds = 5;
    let api = Api::with(config);
    let token = api.login(&keypair(1)).await;
    api.get("/v1/gov/domains", &token).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(6100)).await;
    let body = api.get("/v1/gov/domains", &token).await.expect(401);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired"))
    );
}

#[tokio::test]
async fn scopes_are_enforced() {
    let api = Api::new();
    let token = api.login_with(&keypair(1), Some(&["gov:read"])).await;
    api.get("/v1/gov/domains", &token).await.expect(200);
    let body = api
        .post("/v1/gov/domains", &token, json!({"id": "d1"}))
        .await
        .expect(403);
    assert_eq!(body["message"], "Missing required scope: gov:write");
    api.get("/v1/coops", &token).await.expect(403);
}

/// The runbook's §5 lifecycle, with the writes checked by the engine as
/// every peer would check them: they carry the member's delegation.
#[tokio::test]
async fn governance_lifecycle_through_a_delegation() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;

    let domain = api
        .post(
            "/v1/gov/domains",
            &token,
            json!({
                "id": "ops-test", "name": "Ops Test Domain", "profile": "cooperative_default",
                "quorum_percent": 1, "approval_percent": 51, "voting_period_days": 1,
                "members": [bob.did().to_string()]
            }),
        )
        .await
        .expect(201);
    assert_eq!(domain["id"], "ops-test");
    assert_eq!(domain["rules"]["quorum_percent"], 1);
    assert_eq!(domain["members"].as_array().map(Vec::len), Some(2));
    api.post("/v1/gov/domains", &token, json!({"id": "ops-test"}))
        .await
        .expect(409);
    api.post(
        "/v1/gov/domains",
        &token,
        json!({"id": "x", "profile": "nope"}),
    )
    .await
    .expect(400);
    api.post("/v1/gov/domains", &token, json!({"name": "no id"}))
        .await
        .expect(400);

    let p = api
        .post(
            "/v1/gov/proposals",
            &token,
            json!({"domain_id": "ops-test", "title": "Maintenance", "description": "Manual ops test proposal.",
                   "payload": {"type": "text", "body": "Approve routine maintenance window."}}),
        )
        .await
        .expect(201);
    let id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(p["state"], "draft");
    assert_eq!(p["author"], alice.did().to_string());
    api.post(
        "/v1/gov/proposals",
        &token,
        json!({"domain_id": "nope", "title": "t"}),
    )
    .await
    .expect(404);
    // The API directory's form: under the domain, with `kind`.
    let p2 = api
        .post(
            "/v1/gov/domains/ops-test/proposals",
            &bob_token,
            json!({"title": "Supplier", "description": "Green Valley Farms", "kind": "text"}),
        )
        .await
        .expect(201);
    assert_eq!(p2["payload"]["body"], "Green Valley Farms");

    // Voting before opening; opening by someone other than the author.
    api.post(
        &format!("/v1/gov/proposals/{id}/vote"),
        &token,
        json!({"choice": "for"}),
    )
    .await
    .expect(422);
    api.post(
        &format!("/v1/gov/proposals/{id}/open"),
        &bob_token,
        json!({}),
    )
    .await
    .expect(403);
    let opened = api
        .post(
            &format!("/v1/gov/proposals/{id}/open"),
            &token,
            json!({"voting_period_seconds": 3600}),
        )
        .await
        .expect(200);
    assert_eq!(opened["state"], "open");
    api.post(&format!("/v1/gov/proposals/{id}/open"), &token, json!({}))
        .await
        .expect(422);

    api.post(
        &format!("/v1/gov/proposals/{id}/vote"),
        &token,
        json!({"choice": "maybe"}),
    )
    .await
    .expect(400);
    let v = api
        .post(
            &format!("/v1/gov/proposals/{id}/vote"),
            &token,
            json!({"choice": "for", "comment": "Approved by ops."}),
        )
        .await
        .expect(200);
    assert_eq!(v["choice"], "for");
    api.post(
        &format!("/v1/gov/proposals/{id}/vote"),
        &bob_token,
        json!({"choice": "against"}),
    )
    .await
    .expect(200);
    let tally = api
        .get(&format!("/v1/gov/proposals/{id}/vote"), &token)
        .await
        .expect(200);
    assert_eq!(tally["tally"]["for"], 1);
    assert_eq!(tally["tally"]["against"], 1);

    // A stranger cannot read or write the domain.
    let eve = api.login(&keypair(3)).await;
    api.get(&format!("/v1/gov/proposals/{id}"), &eve)
        .await
        .expect(403);
    api.post(
        &format!("/v1/gov/proposals/{id}/vote"),
        &eve,
        json!({"choice": "for"}),
    )
    .await
    .expect(403);
    assert_eq!(
        api.get("/v1/gov/domains", &eve).await.expect(200),
        json!({"items": [], "next_cursor": null})
    );

    let closed = api
        .post(&format!("/v1/gov/proposals/{id}/close"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(closed["state"], "rejected", "{closed}");
    assert_eq!(closed["outcome"], "rejected");
    assert_eq!(
        closed["decision_receipt_id"].as_str().map(str::len),
        Some(64)
    );
    api.post(&format!("/v1/gov/proposals/{id}/close"), &token, json!({}))
        .await
        .expect(422);
    api.post("/v1/gov/proposals/nope/close", &token, json!({}))
        .await
        .expect(404);

    let got = api
        .get(&format!("/v1/gov/proposals/{id}"), &token)
        .await
        .expect(200);
    assert_eq!(got["state"], "rejected");
    let all = api.get("/v1/gov/proposals", &token).await.expect(200);
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    // Paged: one at a time, the cursor leads to the other, then the end.
    let first = api
        .get("/v1/gov/proposals?limit=1", &token)
        .await
        .expect(200);
    let cursor = first["next_cursor"].as_str().expect("a next cursor");
    let second = api
        .get(
            &format!("/v1/gov/proposals?limit=1&cursor={cursor}"),
            &token,
        )
        .await
        .expect(200);
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    assert_eq!(second["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=501", "limit=-1"] {
        api.get(&format!("/v1/gov/proposals?{bad}"), &token)
            .await
            .expect(400);
    }
    let open = api
        .get("/v1/gov/domains/ops-test/proposals?state=draft", &token)
        .await
        .expect(200);
    assert_eq!(open["items"].as_array().map(Vec::len), Some(1));
    api.get("/v1/gov/proposals?state=sideways", &token)
        .await
        .expect(400);

    // Members: admin only.
    let carol = keypair(4).did().to_string();
    api.post(
        "/v1/gov/domains/ops-test/members",
        &bob_token,
        json!({"did": carol}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/gov/domains/ops-test/members",
        &token,
        json!({"did": carol, "role": "member", "weight": 2}),
    )
    .await
    .expect(201);
    let members = api
        .get("/v1/gov/domains/ops-test/members", &token)
        .await
        .expect(200);
    assert_eq!(members["items"].as_array().map(Vec::len), Some(3));

    // Every write is a change signed by the node and carrying alice's
    // delegation: the engine holds them as it would from a peer.
    let doc: icn_schemas::DocId = domain["doc_id"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("doc id");
    let changes = api.node.engine.changes_since(&doc, &[]).expect("changes");
    assert!(changes.iter().all(|c| c.delegation.is_some()));

    // After a restart: the same token, the same answers.
    let api = api.restart();
    let got = api
        .get(&format!("/v1/gov/proposals/{id}"), &token)
        .await
        .expect(200);
    assert_eq!(got["state"], "rejected");
    assert_eq!(got["votes"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn coops_members_and_the_ledger() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;

    let coop = api
        .post(
            "/v1/coops",
            &token,
            json!({"id": "food-coop", "name": "Downtown Food Cooperative",
                   "description": "A community food buying club", "default_credit_limit": 10}),
        )
        .await
        .expect(201);
    assert_eq!(coop["id"], "food-coop");
    api.post("/v1/coops", &token, json!({"id": "food-coop"}))
        .await
        .expect(409);
    api.get("/v1/coops/food-coop", &bob_token).await.expect(403);
    api.get("/v1/coops/no-such", &token).await.expect(404);
    // A path that does not decode is refused as JSON, like every error.
    api.get("/v1/coops/%FF", &token).await.expect(400);
    api.get("/v1/ledger/%FF/history", &token).await.expect(400);

    let bob_did = bob.did().to_string();
    api.post(
        "/v1/coops/food-coop/members",
        &bob_token,
        json!({"did": bob_did}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/coops/food-coop/members",
        &token,
        json!({"did": bob_did}),
    )
    .await
    .expect(201);
    api.post(
        "/v1/coops/food-coop/members",
        &token,
        json!({"did": bob_did}),
    )
    .await
    .expect(409);
    let members = api
        .get("/v1/coops/food-coop/members", &bob_token)
        .await
        .expect(200);
    assert_eq!(members["items"].as_array().map(Vec::len), Some(2));
    // A member may not promote itself.
    let promote = api
        .call(
            "PUT",
            &format!("/v1/coops/food-coop/members/{bob_did}"),
            Some(&bob_token),
            Some(json!({"role": "admin"})),
        )
        .await;
    promote.expect(403);
    let renamed = api
        .call(
            "PUT",
            "/v1/coops/food-coop",
            Some(&token),
            Some(json!({"name": "Food Co-op"})),
        )
        .await
        .expect(200);
    assert_eq!(renamed["name"], "Food Co-op");
    api.call("DELETE", "/v1/coops/food-coop", Some(&token), None)
        .await
        .expect(422);

    // Settle: from alice to bob, within alice's credit limit of 10.
    let s = api
        .post(
            "/v1/ledger/food-coop/settle",
            &token,
            json!({"from": alice.did().to_string(), "to": bob_did, "amount": 2, "unit": "hours", "memo": "Garden help"}),
        )
        .await
        .expect(201);
    assert_eq!(s["status"]["status"], "applied", "{s}");
    let entry_id = s["entry_id"].as_str().expect("id").to_owned();
    api.post(
        "/v1/ledger/food-coop/settle",
        &token,
        json!({"to": bob_did, "amount": 9, "unit": "hours"}),
    )
    .await
    .expect(422); // beyond the credit limit
    api.post(
        "/v1/ledger/food-coop/settle",
        &token,
        json!({"from": bob_did, "to": bob_did, "amount": 1, "unit": "hours"}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/ledger/food-coop/settle",
        &token,
        json!({"to": bob_did, "amount": 1, "unit": "litres"}),
    )
    .await
    .expect(422);
    api.post(
        "/v1/ledger/food-coop/settle",
        &token,
        json!({"to": bob_did}),
    )
    .await
    .expect(400);

    let pos = api
        .get(
            &format!("/v1/ledger/food-coop/position/{bob_did}"),
            &bob_token,
        )
        .await
        .expect(200);
    let hours = pos["positions"]
        .as_array()
        .and_then(|p| p.iter().find(|u| u["unit"] == "hours"))
        .expect("hours");
    assert_eq!(hours["balance"], 2);
    let history = api
        .get("/v1/ledger/food-coop/history?limit=10", &bob_token)
        .await
        .expect(200);
    assert_eq!(history["items"][0]["id"], entry_id);
    api.get("/v1/ledger/food-coop/history?cursor=nope", &bob_token)
        .await
        .expect(400);
    let by = api
        .get(
            &format!(
                "/v1/ledger/food-coop/entries/by-decision?decision_hash={}",
                "00".repeat(32)
            ),
            &token,
        )
        .await
        .expect(200);
    assert_eq!(by["items"], json!([]));
    api.get("/v1/ledger/food-coop/entries/by-decision", &token)
        .await
        .expect(400);

    // Legacy vocabulary: 404 naming the canonical route.
    let legacy = api
        .get(&format!("/v1/ledger/food-coop/balance/{bob_did}"), &token)
        .await
        .expect(404);
    assert!(
        legacy["message"]
            .as_str()
            .is_some_and(|m| m.contains("/position/"))
    );
    let legacy = api
        .post("/v1/ledger/food-coop/payment", &token, json!({}))
        .await
        .expect(404);
    assert!(
        legacy["message"]
            .as_str()
            .is_some_and(|m| m.contains("/settle"))
    );

    // The registry of a co-op without a treasury domain is empty.
    let reg = api
        .get("/v1/registry/decisions?coop_id=food-coop", &token)
        .await
        .expect(200);
    assert_eq!(reg, json!({"items": [], "next_cursor": null}));
    api.get(
        &format!("/v1/registry/decisions/{}", "00".repeat(32)),
        &token,
    )
    .await
    .expect(404);

    // The whole document, as JSON and as bytes stock Automerge loads.
    let doc_id = coop["doc_id"].as_str().expect("doc id").to_owned();
    let json_doc = api
        .get(&format!("/v1/docs/{doc_id}"), &token)
        .await
        .expect(200);
    assert_eq!(json_doc["name"], "Food Co-op");
    let raw = Request::get(format!("/v1/docs/{doc_id}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "application/octet-stream")
        .body(Body::empty())
        .expect("request");
    let raw = api.send(raw).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert!(raw.headers.get(header::ETAG).is_some());
    let loaded = automerge::Automerge::load(&raw.bytes).expect("stock automerge loads it");
    use automerge::ReadDoc;
    assert!(loaded.get(automerge::ROOT, "name").expect("read").is_some());
    // Caching: one ETag per representation, Vary: Accept, 304 when unchanged.
    let conditional = |accept: &str, tag: &str| {
        Request::get(format!("/v1/docs/{doc_id}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, accept)
            .header(header::IF_NONE_MATCH, tag)
            .body(Body::empty())
            .expect("request")
    };
    let raw_tag = raw.headers[header::ETAG].to_str().expect("tag").to_owned();
    assert_eq!(raw.headers[header::VARY], "Accept");
    let as_json = api.send(conditional("application/json", "\"x\"")).await;
    assert_eq!(as_json.status, StatusCode::OK);
    let json_tag = as_json.headers[header::ETAG]
        .to_str()
        .expect("tag")
        .to_owned();
    assert_ne!(json_tag, raw_tag, "one tag per representation");
    let unchanged = api.send(conditional("application/json", &json_tag)).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.bytes.is_empty());
    let other = api
        .send(conditional("application/octet-stream", &json_tag))
        .await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "the JSON's tag is not the bytes'"
    );
    api.call(
        "PUT",
        "/v1/coops/food-coop",
        Some(&token),
        Some(json!({"description": "changed"})),
    )
    .await
    .expect(200);
    let changed = api.send(conditional("application/json", &json_tag)).await;
    assert_eq!(changed.status, StatusCode::OK, "a new state, a new tag");
    api.get(&format!("/v1/docs/{doc_id}"), &api.login(&keypair(3)).await)
        .await
        .expect(403);
    api.get("/v1/docs/not-an-id", &token).await.expect(400);
    api.get(&format!("/v1/docs/{}", icn_schemas::DocId([7; 32])), &token)
        .await
        .expect(404);

    // Bob leaves.
    let left = api
        .call(
            "DELETE",
            &format!("/v1/coops/food-coop/members/{bob_did}"),
            Some(&bob_token),
            None,
        )
        .await
        .expect(200);
    assert_eq!(left["status"], "removed");
}

#[tokio::test]
async fn registry_lists_treasury_decisions_with_their_trace() {
    let api = Api::new();
    let alice = keypair(1);
    let token = api.login(&alice).await;
    let coop = api
        .post("/v1/coops", &token, json!({"id": "c1", "units": ["hours"]}))
        .await
        .expect(201);
    let domain = api
        .post(
            "/v1/gov/domains",
            &token,
            json!({"id": "treasury", "coop_id": "c1", "quorum_percent": 1}),
        )
        .await
        .expect(201);
    assert_eq!(domain["coop_id"], "c1");
    // Name the domain the co-op's treasury domain, as an admin would.
    let coop_doc: icn_schemas::DocId = coop["doc_id"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("id");
    let domain_doc: icn_schemas::DocId = domain["doc_id"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("id");
    api.node
        .engine
        .write(
            &coop_doc,
            &icn_engine::Signer::Device(alice.clone()),
            |tx| icn_schemas::coop::set_treasury_domain(tx, &domain_doc),
        )
        .expect("treasury domain");

    let p = api
        .post(
            "/v1/gov/domains/treasury/proposals",
            &token,
            json!({"title": "Say yes", "kind": "text"}),
        )
        .await
        .expect(201);
    let id = p["id"].as_str().expect("id");
    api.post(&format!("/v1/gov/proposals/{id}/open"), &token, json!({}))
        .await
        .expect(200);
    api.post(
        &format!("/v1/gov/proposals/{id}/vote"),
        &token,
        json!({"choice": "for"}),
    )
    .await
    .expect(200);
    let closed = api
        .post(&format!("/v1/gov/proposals/{id}/close"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(closed["outcome"], "accepted");
    let receipt = closed["decision_receipt_id"].as_str().expect("receipt");

    let list = api.get("/v1/registry/decisions", &token).await.expect(200);
    assert_eq!(list["items"][0]["decision_receipt_id"], receipt);
    let one = api
        .get(&format!("/v1/registry/decisions/{receipt}"), &token)
        .await
        .expect(200);
    assert_eq!(one["proposal_id"], id);
    let trace = api
        .get(&format!("/v1/registry/decisions/{receipt}/trace"), &token)
        .await
        .expect(200);
    assert_eq!(trace["entries"], json!([]));
    api.get("/v1/registry/decisions/xyz", &token)
        .await
        .expect(400);
    let eve = api.login(&keypair(3)).await;
    api.get(&format!("/v1/registry/decisions/{receipt}"), &eve)
        .await
        .expect(404);
}

#[tokio::test]
async fn rate_limit_and_body_limit() {
    let mut config = config(&keypair(100));
    config.rate_burst = 5;
    config.rate_per_second = 1;
    config.body_limit = 1024;
    let api = Api::with(config);
    let token = api.login(&keypair(1)).await;
    for _ in 0..5 {
        api.get("/v1/gov/domains", &token).await.expect(200);
    }
    let limited = api.get("/v1/gov/domains", &token).await;
    assert!(limited.headers.get(header::RETRY_AFTER).is_some());
    let refusal = limited.expect(429);
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("a burst of 5 requests, then 1 per second")),
        "the 429 states the configured limits: {refusal}"
    );
    // Another DID has its own bucket.
    let other = api.login(&keypair(2)).await;
    api.get("/v1/gov/domains", &other).await.expect(200);
    // Too large a body.
    let big = json!({"id": "x".repeat(4096)});
    api.post("/v1/gov/domains", &other, big).await.expect(413);
}

#[tokio::test]
async fn cors_is_off_unless_configured() {
    let preflight = || {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/health")
            .header(header::ORIGIN, "https://app.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Body::empty())
            .expect("request")
    };
    let api = Api::new();
    let r = api.send(preflight()).await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let mut config = config(&keypair(100));
    config.cors_origins = vec!["https://app.example".into()];
    let api = Api::with(config);
    let r = api.send(preflight()).await;
    assert_eq!(
        r.headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let _ = &api.node_key;
}

/// The committed `docs/api/openapi.json` is what the code generates, and
/// what `/v1/openapi.json` serves. `ICN_UPDATE_OPENAPI=1` rewrites it.
#[tokio::test]
async fn openapi_is_served_and_committed() {
    let spec = serde_json::to_value(icn_gateway::openapi()).expect("json");
    let api = Api::new();
    let served = api
        .call("GET", "/v1/openapi.json", None, None)
        .await
        .expect(200);
    assert_eq!(served, spec);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/openapi.json");
    let text = serde_json::to_string_pretty(&spec).expect("json") + "\n";
    if std::env::var_os("ICN_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &text).expect("write docs/api/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/api/openapi.json differs from the code; regenerate it with \
         ICN_UPDATE_OPENAPI=1 cargo test -p icn-gateway --test api openapi"
    );
    // The YAML (Swagger UI and Redoc mount it): served, committed, and the
    // same document.
    let yaml_path = path.with_extension("yaml");
    let yaml = api.call("GET", "/v1/openapi.yaml", None, None).await;
    assert_eq!(yaml.status.as_u16(), 200);
    let yaml = String::from_utf8(yaml.bytes).expect("utf-8");
    if std::env::var_os("ICN_UPDATE_OPENAPI").is_some() {
        std::fs::write(&yaml_path, &yaml).expect("write docs/api/openapi.yaml");
    }
    assert!(
        std::fs::read_to_string(&yaml_path).unwrap_or_default() == yaml,
        "docs/api/openapi.yaml differs from the code; regenerate it with \
         ICN_UPDATE_OPENAPI=1 cargo test -p icn-gateway --test api openapi"
    );
    assert!(
        yaml.contains("/v1/ledger/{coop}/entries:"),
        "a YAML OpenAPI document"
    );
    // Generated clients name a method per operation: no two share an id.
    let mut ids = std::collections::BTreeMap::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            if let Some(id) = op["operationId"].as_str() {
                let earlier = ids.insert(id.to_owned(), format!("{method} {path}"));
                assert!(
                    earlier.is_none(),
                    "operationId {id} twice: {earlier:?} and {method} {path}"
                );
            }
        }
    }
}

/// Every route of the API directory and the runbook is documented, and
/// every documented route is served (neither the fallback 404 nor 405).
#[tokio::test]
async fn every_route_is_documented_and_served() {
    let spec = serde_json::to_value(icn_gateway::openapi()).expect("json");
    let paths = spec["paths"].as_object().expect("paths");
    let directory = [
        ("get", "/v1/health"),
        ("post", "/v1/auth/challenge"),
        ("post", "/v1/auth/verify"),
        ("get", "/v1/coops"),
        ("post", "/v1/coops"),
        ("get", "/v1/coops/{id}"),
        ("put", "/v1/coops/{id}"),
        ("delete", "/v1/coops/{id}"),
        ("get", "/v1/coops/{id}/members"),
        ("post", "/v1/coops/{id}/members"),
        ("put", "/v1/coops/{id}/members/{did}"),
        ("delete", "/v1/coops/{id}/members/{did}"),
        ("get", "/v1/ledger/{coop}/position/{did}"),
        ("post", "/v1/ledger/{coop}/settle"),
        ("post", "/v1/ledger/{coop}/settle/convert"),
        ("get", "/v1/ledger/{coop}/history"),
        ("get", "/v1/ledger/{coop}/entries/by-decision"),
        ("get", "/v1/ledger/{coop}/balance/{did}"),
        ("post", "/v1/ledger/{coop}/payment"),
        ("get", "/v1/gov/domains"),
        ("post", "/v1/gov/domains"),
        ("get", "/v1/gov/domains/{id}"),
        ("get", "/v1/gov/domains/{id}/members"),
        ("post", "/v1/gov/domains/{id}/members"),
        ("get", "/v1/gov/domains/{id}/proposals"),
        ("post", "/v1/gov/domains/{id}/proposals"),
        ("get", "/v1/gov/proposals"),
        ("post", "/v1/gov/proposals"),
        ("get", "/v1/gov/proposals/{id}"),
        ("post", "/v1/gov/proposals/{id}/open"),
        ("post", "/v1/gov/proposals/{id}/close"),
        ("post", "/v1/gov/proposals/{id}/vote"),
        ("get", "/v1/gov/proposals/{id}/vote"),
        ("get", "/v1/registry/decisions"),
        ("get", "/v1/registry/decisions/{hash}"),
        ("get", "/v1/registry/decisions/{hash}/trace"),
        ("get", "/v1/ws/{coop_id}"),
        ("get", "/v1/docs/{doc_id}"),
        ("get", "/v1/openapi.json"),
        // Beyond the API directory: seed 002's identity lifecycle.
        ("post", "/v1/auth/logout"),
        ("get", "/v1/devices/{did}"),
        ("post", "/v1/devices/{did}"),
        ("delete", "/v1/devices/{did}/{device}"),
        ("post", "/v1/identity/emergency-revoke"),
        ("post", "/v1/identity/rotate"),
        ("get", "/v1/coops/{id}/trusted-contacts"),
        ("post", "/v1/coops/{id}/trusted-contacts"),
        ("delete", "/v1/coops/{id}/trusted-contacts/{did}"),
        // Issue 14: a co-op's settings.
        ("put", "/v1/coops/{id}/units/{unit}"),
        ("put", "/v1/coops/{id}/rates/{from}/{to}"),
        ("get", "/v1/coops/{id}/relays"),
        ("post", "/v1/coops/{id}/relays"),
        ("delete", "/v1/coops/{id}/relays/{did}"),
        ("post", "/v1/ledger/{coop}/freeze"),
        ("put", "/v1/gov/domains/{id}"),
        ("get", "/v1/ledger/{coop}/entries/{id}"),
        ("get", "/v1/ledger/{coop}/heads"),
        ("get", "/v1/openapi.yaml"),
        ("post", "/v1/ledger/{coop}/entries"),
        ("get", "/v1/ledger/{coop}/trial-balance"),
        ("post", "/v1/coops/{id}/invites"),
        ("post", "/v1/coops/{id}/applications"),
        ("get", "/v1/coops/{id}/applications"),
        ("get", "/v1/coops/{id}/applications/{did}"),
        ("post", "/v1/coops/{id}/applications/{did}/approve"),
        ("post", "/v1/coops/{id}/applications/{did}/propose"),
        ("post", "/v1/coops/{id}/applications/{did}/reject"),
        ("post", "/v1/modules"),
        ("get", "/v1/modules/{hash}"),
        ("delete", "/v1/gov/domains/{id}/members/{did}"),
        ("post", "/v1/gov/proposals/{id}/cancel"),
    ];
    for (method, path) in directory {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let api = Api::new();
    let mut count = 0;
    for (path, item) in paths {
        for method in item.as_object().expect("item").keys() {
            let concrete = path.replace(['{', '}'], "");
            let reply = api
                .call(&method.to_uppercase(), &concrete, None, None)
                .await;
            let served = reply.status != StatusCode::METHOD_NOT_ALLOWED
                && !String::from_utf8_lossy(&reply.bytes).contains("no such route");
            assert!(served, "{method} {path} is documented but not served");
            count += 1;
        }
    }
    assert_eq!(count, directory.len(), "documented routes beyond the list");
}

#[tokio::test]
async fn convert_history_pages_and_member_updates() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let bob_did = bob.did().to_string();
    let coop = api
        .post(
            "/v1/coops",
            &token,
            json!({"id": "c2", "default_credit_limit": 100, "units": ["hours", {"id": "eur", "scale": 2}]}),
        )
        .await
        .expect(201);
    api.post("/v1/coops/c2/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    // Rates are policy, set by an admin in the document.
    let coop_doc: icn_schemas::DocId = coop["doc_id"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("id");
    api.node
        .engine
        .write(
            &coop_doc,
            &icn_engine::Signer::Device(alice.clone()),
            |tx| icn_schemas::coop::set_rate(tx, "hours", "eur", 2500, 1),
        )
        .expect("rate");

    let c = api
        .post(
            "/v1/ledger/c2/settle/convert",
            &token,
            json!({"to": bob_did, "amount": 2, "from_unit": "hours", "to_unit": "eur", "memo": "accounting"}),
        )
        .await
        .expect(201);
    assert_eq!(c["status"]["status"], "applied", "{c}");
    let pos = api
        .get(&format!("/v1/ledger/c2/position/{bob_did}"), &bob_token)
        .await
        .expect(200);
    let eur = pos["positions"]
        .as_array()
        .and_then(|p| p.iter().find(|u| u["unit"] == "eur"))
        .expect("eur");
    assert_eq!(eur["balance"], 5000);
    api.post(
        "/v1/ledger/c2/settle/convert",
        &token,
        json!({"amount": 1, "from_unit": "eur", "to_unit": "litres"}),
    )
    .await
    .expect(422);
    api.post(
        "/v1/ledger/c2/settle/convert",
        &bob_token,
        json!({"from": alice.did().to_string(), "amount": 1, "from_unit": "hours", "to_unit": "eur"}),
    )
    .await
    .expect(403);

    // History in pages, by cursor.
    for i in 0..5 {
        api.post(
            "/v1/ledger/c2/settle",
            &token,
            json!({"to": bob_did, "amount": 1, "unit": "hours", "memo": format!("{i}")}),
        )
        .await
        .expect(201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/ledger/c2/history?account={bob_did}&limit=2&cursor={c}"),
            None => format!("/v1/ledger/c2/history?account={bob_did}&limit=2"),
        };
        let page = api.get(&path, &bob_token).await.expect(200);
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "the convert and five settles");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "no entry twice across pages");
    let treasury = api
        .get("/v1/ledger/c2/history?account=treasury", &token)
        .await
        .expect(200);
    assert_eq!(treasury["items"].as_array().map(Vec::len), Some(1));

    // A member renames itself; it may not change its own limit.
    let renamed = api
        .call(
            "PUT",
            &format!("/v1/coops/c2/members/{bob_did}"),
            Some(&bob_token),
            Some(json!({"display_name": "Bob"})),
        )
        .await
        .expect(200);
    assert_eq!(renamed["display_name"], "Bob");
    api.call(
        "PUT",
        &format!("/v1/coops/c2/members/{bob_did}"),
        Some(&bob_token),
        Some(json!({"credit_limit": 1000})),
    )
    .await
    .expect(403);
    let stranger = keypair(5).did().to_string();
    api.call(
        "PUT",
        &format!("/v1/coops/c2/members/{stranger}"),
        Some(&token),
        Some(json!({"role": "admin"})),
    )
    .await
    .expect(404);
    api.get("/v1/gov/domains/none-such", &token)
        .await
        .expect(404);
}

/// Before a DID is proven, challenges and verifies are limited per client
/// IP with the same bucket sizes.
#[tokio::test]
async fn auth_routes_are_limited_per_ip() {
    let mut config = config(&keypair(100));
    config.rate_burst = 3;
    config.rate_per_second = 1;
    let api = Api::with(config);
    let from = |ip: [u8; 4]| {
        let mut req = Request::post("/v1/auth/challenge")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"did": keypair(1).did().to_string()}).to_string(),
            ))
            .expect("request");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 40000,
            ))));
        req
    };
    for _ in 0..3 {
        api.send(from([10, 0, 0, 1])).await.expect(200);
    }
    let limited = api.send(from([10, 0, 0, 1])).await;
    assert!(limited.headers.get(header::RETRY_AFTER).is_some());
    limited.expect(429);
    api.send(from([10, 0, 0, 2])).await.expect(200);
}

/// Holes found from outside (issue 13 §4), each refused now and each
/// allowed path still open.
#[tokio::test]
async fn authorization_holes_found_from_outside_stay_closed() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let mallory = keypair(6);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let mallory_token = api.login(&mallory).await;
    let bob_did = bob.did().to_string();
    let alice_did = alice.did().to_string();

    api.post(
        "/v1/coops",
        &token,
        json!({"id": "bakery", "default_credit_limit": 10}),
    )
    .await
    .expect(201);
    api.post("/v1/coops/bakery/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);

    // A stranger cannot attach a domain to the co-op (nor learn its
    // document id by trying), nor list its members there.
    let refused = api
        .post(
            "/v1/gov/domains",
            &mallory_token,
            json!({"id": "fake-board", "coop_id": "bakery", "members": [alice_did]}),
        )
        .await
        .expect(403);
    assert!(!refused.to_string().contains("doc_id"), "{refused}");
    // A member attaches one, but lists only the co-op's members.
    api.post(
        "/v1/gov/domains",
        &bob_token,
        json!({"id": "board-x", "coop_id": "bakery", "members": [mallory.did().to_string()]}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/gov/domains",
        &bob_token,
        json!({"id": "board", "coop_id": "bakery", "members": [alice_did]}),
    )
    .await
    .expect(201);
    api.post(
        "/v1/gov/domains/board/members",
        &bob_token,
        json!({"did": mallory.did().to_string()}),
    )
    .await
    .expect(403);

    // Governance input is validated.
    for bad in [
        json!({"id": "d1", "voting_period_days": 0}),
        json!({"id": "d2", "voting_period_seconds": i64::MAX}),
        json!({"id": "d3", "voting_period_seconds": -1}),
    ] {
        api.post("/v1/gov/domains", &token, bad).await.expect(422);
    }
    api.post(
        "/v1/gov/domains/board/proposals",
        &token,
        json!({"title": "  "}),
    )
    .await
    .expect(422);
    api.post(
        "/v1/gov/domains/board/proposals",
        &token,
        json!({"title": "Pay", "payload": {"type": "budget", "amount": -5,
               "recipient": alice_did, "unit": "hours", "purpose": "x"}}),
    )
    .await
    .expect(422);
    let p = api
        .post(
            "/v1/gov/domains/board/proposals",
            &token,
            json!({"id": "p1", "title": "Ovens"}),
        )
        .await
        .expect(201);
    assert_eq!(p["id"], "p1");
    api.post(
        "/v1/gov/proposals/p1/open",
        &token,
        json!({"voting_period_seconds": 0}),
    )
    .await
    .expect(422);
    api.post(
        "/v1/gov/proposals/p1/open",
        &token,
        json!({"voting_period_seconds": i64::MAX}),
    )
    .await
    .expect(422);

    // Proposal-id squatting: this node refuses an id in use anywhere here...
    api.post(
        "/v1/gov/domains",
        &mallory_token,
        json!({"id": "squat", "members": [alice_did]}),
    )
    .await
    .expect(201);
    api.post(
        "/v1/gov/domains/squat/proposals",
        &mallory_token,
        json!({"id": "p1", "title": "Mine"}),
    )
    .await
    .expect(409);
    // ...and when a peer's write brings one anyway, the victim's routes stay
    // usable: a caller who reads only one of the domains is not affected,
    // and one who reads both names the domain.
    let squat = api
        .get("/v1/gov/domains/squat", &mallory_token)
        .await
        .expect(200)["doc_id"]
        .as_str()
        .expect("doc id")
        .parse::<icn_schemas::DocId>()
        .expect("doc id");
    api.node
        .engine
        .create_proposal(
            &squat,
            &icn_engine::Signer::Device(mallory.clone()),
            &icn_schemas::domain::NewProposal {
                id: "p1".into(),
                title: "Mine".into(),
                description: String::new(),
                author: mallory.did(),
                created_at: 1,
                payload: icn_schemas::domain::Payload::Text {
                    body: String::new(),
                },
            },
        )
        .expect("a peer's proposal");
    let seen = api
        .get("/v1/gov/proposals/p1", &bob_token)
        .await
        .expect(200);
    assert_eq!(seen["domain_id"], "board");
    let ambiguous = api
        .post("/v1/gov/proposals/p1/open", &token, json!({}))
        .await
        .expect(409);
    assert!(
        ambiguous["message"]
            .as_str()
            .is_some_and(|m| m.contains("?domain_id=")),
        "{ambiguous}"
    );
    api.post(
        "/v1/gov/proposals/p1/open?domain_id=board",
        &token,
        json!({}),
    )
    .await
    .expect(200);
    api.post(
        "/v1/gov/proposals/p1/vote?domain_id=board",
        &bob_token,
        json!({"choice": "for"}),
    )
    .await
    .expect(200);
    api.get("/v1/gov/proposals/p1?domain_id=squat", &bob_token)
        .await
        .expect(403);
    api.get("/v1/gov/proposals/p1?domain_id=nope", &token)
        .await
        .expect(404);

    // A settlement to someone who is not a member is refused.
    let refused = api
        .post(
            "/v1/ledger/bakery/settle",
            &token,
            json!({"from": alice_did, "to": mallory.did().to_string(), "amount": 1, "unit": "hours"}),
        )
        .await
        .expect(422);
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a member")),
        "{refused}"
    );
    api.post(
        "/v1/ledger/bakery/settle",
        &token,
        json!({"from": alice_did, "to": bob_did, "amount": 1, "unit": "hours"}),
    )
    .await
    .expect(201);

    // The last admin stays; once another admin exists, it may leave.
    for (method, body) in [("DELETE", None), ("PUT", Some(json!({"role": "member"})))] {
        let refused = api
            .call(
                method,
                &format!("/v1/coops/bakery/members/{alice_did}"),
                Some(&token),
                body,
            )
            .await
            .expect(403);
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("last active admin")),
            "{refused}"
        );
    }
    api.call(
        "PUT",
        &format!("/v1/coops/bakery/members/{bob_did}"),
        Some(&token),
        Some(json!({"role": "admin"})),
    )
    .await
    .expect(200);
    api.call(
        "DELETE",
        &format!("/v1/coops/bakery/members/{alice_did}"),
        Some(&token),
        None,
    )
    .await
    .expect(200);
}

/// Seed 002's identity lifecycle over HTTP: list, register, lose a phone,
/// and a trusted contact's emergency revoke, then recovery by an admin.
#[tokio::test]
async fn a_member_rotates_its_key_over_http() {
    let api = Api::new();
    let (alice, bob) = (keypair(1), keypair(2));
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let (alice_did, bob_did) = (alice.did().to_string(), bob.did().to_string());
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "garden", "default_credit_limit": 10}),
    )
    .await
    .expect(201);
    api.post("/v1/coops/garden/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    let coop = api.get("/v1/coops/garden", &token).await.expect(200)["doc_id"]
        .as_str()
        .expect("doc id")
        .to_owned();
    api.post(
        "/v1/gov/domains",
        &token,
        json!({"id": "board", "coop_id": coop, "members": [{"did": bob_did}]}),
    )
    .await
    .expect(201);
    let device_login = |key: icn_engine::Keypair| {
        let (api, alice_did) = (&api, alice_did.clone());
        async move { api.device_login(&alice_did, &key).await }
    };
    let new = keypair(50);
    let new_did = new.did().to_string();
    let proof = hex::encode(new.device_proof(&alice.did()));
    // Refused, changing nothing: not a DID, a proof for someone else, the
    // same key, a token without gov:write, a member rotating with another's
    // key proof, a phone's token.
    api.post(
        "/v1/identity/rotate",
        &token,
        json!({"key": "x", "proof": proof}),
    )
    .await
    .expect(400);
    let wrong = hex::encode(new.device_proof(&bob.did()));
    api.post(
        "/v1/identity/rotate",
        &token,
        json!({"key": new_did, "proof": wrong}),
    )
    .await
    .expect(422);
    let own = hex::encode(alice.device_proof(&alice.did()));
    api.post(
        "/v1/identity/rotate",
        &token,
        json!({"key": alice_did, "proof": own}),
    )
    .await
    .expect(422);
    let narrow = api
        .login_with(&alice, Some(&["coop:read", "coop:write", "ledger:write"]))
        .await;
    api.post(
        "/v1/identity/rotate",
        &narrow,
        json!({"key": new_did, "proof": proof}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/identity/rotate",
        &bob_token,
        json!({"key": new_did, "proof": proof}),
    )
    .await
    .expect(422);
    let phone = keypair(51);
    api.post(
        &format!("/v1/devices/{alice_did}"),
        &token,
        json!({"device": phone.did().to_string(), "proof": hex::encode(phone.device_proof(&alice.did()))}),
    )
    .await
    .expect(201);
    let phone_token = device_login(phone.clone()).await.expect(200)["token"]
        .as_str()
        .expect("token")
        .to_owned();
    // A phone's token carries no gov:write: a device rotates nothing.
    api.post(
        "/v1/identity/rotate",
        &phone_token,
        json!({"key": new_did, "proof": proof}),
    )
    .await
    .expect(403);
    let devices = api
        .get(&format!("/v1/devices/{alice_did}"), &token)
        .await
        .expect(200);
    assert_eq!(
        devices["items"].as_array().map(Vec::len),
        Some(2),
        "nothing new"
    );

    // Rotated: sealed, listed, named, voting in the co-op's domain, retired.
    let rotated = api
        .post(
            "/v1/identity/rotate",
            &token,
            json!({"key": new_did, "proof": proof}),
        )
        .await
        .expect(200);
    assert_eq!(rotated["did"], alice_did.as_str());
    assert_eq!(rotated["old_key"], alice_did.as_str());
    assert_eq!(rotated["new_key"], new_did.as_str());
    let outcome = &rotated["outcomes"][0];
    assert_eq!(outcome["done"], true, "{rotated}");
    assert_eq!(outcome["revoked"], json!([alice_did]), "{rotated}");
    assert_eq!(outcome["seals"].as_array().map(Vec::len), Some(1));
    assert_eq!(outcome["domains"].as_array().map(Vec::len), Some(1));
    // The old key's token died at once; it rotates nothing more.
    api.get(&format!("/v1/devices/{alice_did}"), &token)
        .await
        .expect(401);
    api.post(
        "/v1/identity/rotate",
        &token,
        json!({"key": new_did, "proof": proof}),
    )
    .await
    .expect(401);
    // The new key logs in for alice, with gov:write, and acts as her.
    let v = device_login(new.clone()).await.expect(200);
    assert!(
        v["scopes"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "gov:write")),
        "{v}"
    );
    let new_token = v["token"].as_str().expect("token").to_owned();
    let devices = api
        .get(&format!("/v1/devices/{alice_did}"), &new_token)
        .await
        .expect(200);
    let status = |key: &str| {
        devices["items"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["device"] == key))
            .map(|r| (r["status"].clone(), r["revoked_reason"].clone()))
            .expect("listed")
    };
    assert_eq!(status(&alice_did), (json!("revoked"), json!("retired")));
    assert_eq!(status(&new_did).0, json!("live"));
    let paid = api
        .post(
            "/v1/ledger/garden/settle",
            &new_token,
            json!({"to": bob_did, "amount": 2, "unit": "hours"}),
        )
        .await
        .expect(201);
    assert_eq!(paid["status"]["status"], "applied", "{paid}");
    let proposal = api
        .post(
            "/v1/gov/domains/board/proposals",
            &new_token,
            json!({"id": "p1", "title": "Paint", "payload": {"type": "text", "body": "green"}}),
        )
        .await
        .expect(201);
    assert_eq!(proposal["author"], alice_did.as_str());
    // A domain cannot see the co-op's word that the new key is alice's: a
    // rotated key creates none (not built yet).
    let refused = api
        .post(
            "/v1/gov/domains",
            &new_token,
            json!({"id": "after", "coop_id": coop, "members": [{"did": bob_did}]}),
        )
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.json());
    // The phone's token is alive: a device, not the key retired.
    api.get(&format!("/v1/devices/{alice_did}"), &phone_token)
        .await
        .expect(200);
}

#[tokio::test]
async fn devices_lost_phones_and_the_emergency_revoke() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let carol = keypair(3);
    let mallory = keypair(6);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let carol_token = api.login(&carol).await;
    let mallory_token = api.login(&mallory).await;
    let (alice_did, bob_did, carol_did) = (
        alice.did().to_string(),
        bob.did().to_string(),
        carol.did().to_string(),
    );
    api.post("/v1/coops", &token, json!({"id": "garden"}))
        .await
        .expect(201);
    for did in [&bob_did, &carol_did] {
        api.post("/v1/coops/garden/members", &token, json!({"did": did}))
            .await
            .expect(201);
    }
    let listed = api
        .get(&format!("/v1/devices/{alice_did}"), &bob_token)
        .await
        .expect(200);
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["items"][0]["is_did_key"], true);
    assert_eq!(listed["items"][0]["status"], "live");
    api.get(&format!("/v1/devices/{alice_did}"), &mallory_token)
        .await
        .expect(404);
    api.get("/v1/devices/not-a-did", &token).await.expect(400);

    // Register a phone: with its proof, by alice; not by bob, not without proof.
    let phone = keypair(30);
    let phone_did = phone.did().to_string();
    let proof = hex::encode(phone.device_proof(&alice.did()));
    let path = format!("/v1/devices/{alice_did}");
    api.post(&path, &token, json!({"device": phone_did}))
        .await
        .expect(422);
    let wrong = hex::encode(phone.device_proof(&bob.did()));
    api.post(&path, &token, json!({"device": phone_did, "proof": wrong}))
        .await
        .expect(422);
    api.post(
        &path,
        &bob_token,
        json!({"device": phone_did, "proof": proof, "label": "not his"}),
    )
    .await
    .expect(403);
    let added = api
        .post(
            &path,
            &token,
            json!({"device": phone_did, "proof": proof, "label": "iphone-12"}),
        )
        .await
        .expect(201);
    let row = |v: &serde_json::Value, device: &str| {
        v["devices"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["device"] == device).cloned())
            .unwrap_or_else(|| panic!("{device} not in {v}"))
    };
    assert_eq!(row(&added, &phone_did)["status"], "live");
    assert_eq!(row(&added, &phone_did)["label"], "iphone-12");
    // The phone acts for alice.
    let garden = api.get("/v1/coops/garden", &token).await.expect(200)["doc_id"]
        .as_str()
        .expect("doc id")
        .parse::<icn_schemas::DocId>()
        .expect("doc id");
    api.node
        .engine
        .write(&garden, &icn_engine::Signer::Device(phone.clone()), |tx| {
            icn_schemas::coop::set_display_name(tx, &alice.did(), "Alice (phone)")
        })
        .expect("a live device writes");

    // Lost: revoked with a reason, by alice; bob may not; reasons are checked.
    let revoke = format!("/v1/devices/{alice_did}/{phone_did}");
    api.call("DELETE", &revoke, Some(&token), None)
        .await
        .expect(400);
    api.call(
        "DELETE",
        &format!("{revoke}?reason=misplaced"),
        Some(&token),
        None,
    )
    .await
    .expect(400);
    api.call(
        "DELETE",
        &format!("{revoke}?reason=lost"),
        Some(&bob_token),
        None,
    )
    .await
    .expect(403);
    let revoked = api
        .call(
            "DELETE",
            &revoke,
            Some(&token),
            Some(json!({"reason": "lost"})),
        )
        .await
        .expect(200);
    // The revocation sealed the phone in the co-op's ledger.
    assert_eq!(revoked["outcomes"][0]["revoked"], json!([phone_did]));
    assert_eq!(
        revoked["outcomes"][0]["seals"].as_array().map(Vec::len),
        Some(1),
        "{revoked}"
    );
    let row_now = row(&revoked, &phone_did);
    assert_eq!(row_now["status"], "revoked");
    assert_eq!(row_now["revoked_reason"], "lost");
    assert_eq!(row_now["revoked_by"], alice_did);
    assert!(
        api.node
            .engine
            .write(&garden, &icn_engine::Signer::Device(phone.clone()), |tx| {
                icn_schemas::coop::set_display_name(tx, &alice.did(), "finder")
            })
            .is_err(),
        "a revoked phone writes nothing"
    );
    // A revoked key is never registered again.
    api.post(&path, &token, json!({"device": phone_did, "proof": proof}))
        .await
        .expect(409);
    api.call(
        "DELETE",
        &format!("/v1/devices/{alice_did}/{}", keypair(31).did()),
        Some(&token),
        Some(json!({"reason": "lost"})),
    )
    .await
    .expect(404);

    // Emergency: only admins and trusted contacts.
    let emergency = json!({"target_did": carol_did, "voucher_did": bob_did, "reason": "stolen"});
    api.post(
        "/v1/identity/emergency-revoke",
        &bob_token,
        emergency.clone(),
    )
    .await
    .expect(403);
    api.post(
        "/v1/coops/garden/trusted-contacts",
        &bob_token,
        json!({"did": bob_did}),
    )
    .await
    .expect(403);
    let contacts = api
        .post(
            "/v1/coops/garden/trusted-contacts",
            &token,
            json!({"did": bob_did}),
        )
        .await
        .expect(201);
    assert_eq!(contacts["items"], json!([bob_did]));
    api.post(
        "/v1/identity/emergency-revoke",
        &bob_token,
        json!({"target_did": carol_did, "voucher_did": alice_did}),
    )
    .await
    .expect(403);
    let all = api
        .post(
            "/v1/identity/emergency-revoke",
            &bob_token,
            emergency.clone(),
        )
        .await
        .expect(200);
    assert!(
        all["devices"]
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r["status"] == "revoked")),
        "{all}"
    );
    assert_eq!(
        all["outcomes"][0]["seals"].as_array().map(Vec::len),
        all["devices"].as_array().map(Vec::len),
        "a seal per key: {all}"
    );
    // Carol acts nowhere now: her DID key's token died with it...
    api.call(
        "PUT",
        &format!("/v1/coops/garden/members/{carol_did}"),
        Some(&carol_token),
        Some(json!({"display_name": "thief"})),
    )
    .await
    .expect(401);
    // ...until an admin registers a new key for her.
    let new_key = keypair(32);
    api.post(
        &format!("/v1/devices/{carol_did}"),
        &token,
        json!({"device": new_key.did().to_string(),
               "proof": hex::encode(new_key.device_proof(&carol.did())), "label": "new phone"}),
    )
    .await
    .expect(201);
    api.node
        .engine
        .write(
            &garden,
            &icn_engine::Signer::Device(new_key.clone()),
            |tx| icn_schemas::coop::set_display_name(tx, &carol.did(), "Carol"),
        )
        .expect("the new key acts for carol");
    // A trusted contact removed revokes nothing more.
    api.call(
        "DELETE",
        &format!("/v1/coops/garden/trusted-contacts/{bob_did}"),
        Some(&token),
        None,
    )
    .await
    .expect(200);
    api.post("/v1/identity/emergency-revoke", &bob_token, emergency)
        .await
        .expect(403);
}

/// Seed 002: a phone logs in with its own key; its token dies with a
/// logout, with the phone's revocation, and with the member's removal.
#[tokio::test]
async fn devices_log_in_with_their_own_keys_and_tokens_die_with_them() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let (alice_did, bob_did) = (alice.did().to_string(), bob.did().to_string());
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "orchard", "default_credit_limit": 10}),
    )
    .await
    .expect(201);
    api.post("/v1/coops/orchard/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    let phone = keypair(40);
    api.post(
        &format!("/v1/devices/{alice_did}"),
        &token,
        json!({"device": phone.did().to_string(), "proof": hex::encode(phone.device_proof(&alice.did()))}),
    )
    .await
    .expect(201);

    // The phone signs the challenge for alice.
    let device_login = |key: icn_engine::Keypair| {
        let (api, alice_did) = (&api, alice_did.clone());
        async move { api.device_login(&alice_did, &key).await }
    };
    let v = device_login(phone.clone()).await.expect(200);
    assert_eq!(v["did"], alice_did);
    assert_eq!(v["device"], phone.did().to_string());
    assert!(
        !v["scopes"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "gov:write")),
        "{v}"
    );
    let phone_token = v["token"].as_str().expect("token").to_owned();
    // A key that is no device of alice's cannot log in for her.
    device_login(keypair(41)).await.expect(401);
    // A device asks no gov:write.
    api.call(
        "POST",
        "/v1/auth/challenge",
        None,
        Some(json!({"did": alice_did, "device": phone.did().to_string(), "scopes": ["gov:write"]})),
    )
    .await
    .expect(422);

    // Writes under the phone's delegation: a payment, its own name.
    let paid = api
        .post(
            "/v1/ledger/orchard/settle",
            &phone_token,
            json!({"to": bob_did, "amount": 2, "unit": "hours", "memo": "from the phone"}),
        )
        .await
        .expect(201);
    let entry_id = paid["entry_id"].as_str().expect("entry id").to_owned();
    api.call(
        "PUT",
        &format!("/v1/coops/orchard/members/{alice_did}"),
        Some(&phone_token),
        Some(json!({"display_name": "Alice (phone)"})),
    )
    .await
    .expect(200);
    api.post(
        "/v1/gov/domains",
        &phone_token,
        json!({"id": "phone-domain"}),
    )
    .await
    .expect(403);
    // Another replica takes the phone's payment on the same terms.
    let orchard = api.get("/v1/coops/orchard", &token).await.expect(200)["doc_id"]
        .as_str()
        .expect("doc id")
        .parse::<icn_schemas::DocId>()
        .expect("doc id");
    let other = icn_engine::test_utils::TestNode::new();
    other
        .engine
        .apply_remote(
            &orchard,
            api.node
                .engine
                .changes_since(&orchard, &[])
                .expect("changes"),
        )
        .expect("the phone's co-op changes");
    let taken = other
        .engine
        .ingest_entries(
            &orchard,
            api.node.engine.entries(&orchard).expect("entries"),
        )
        .expect("ingest");
    assert!(taken.iter().all(Result::is_ok), "{taken:?}");
    assert!(
        other
            .engine
            .entry_ids(&orchard)
            .expect("ids")
            .iter()
            .any(|id| id.to_string() == entry_id)
    );

    // Logout kills the token at once, and seals its delegation in the
    // co-op's ledger; another login works.
    let out = api
        .call("POST", "/v1/auth/logout", Some(&phone_token), None)
        .await
        .expect(200);
    assert_eq!(out["seals"].as_array().map(Vec::len), Some(1), "{out}");
    let refused = api.get("/v1/coops/orchard", &phone_token).await.expect(401);
    assert!(refused.to_string().contains("logged out"), "{refused}");
    let phone_token = device_login(phone.clone()).await.expect(200)["token"]
        .as_str()
        .expect("token")
        .to_owned();
    api.get("/v1/coops/orchard", &phone_token).await.expect(200);
    // The phone's revocation kills its token.
    api.call(
        "DELETE",
        &format!("/v1/devices/{alice_did}/{}?reason=lost", phone.did()),
        Some(&token),
        None,
    )
    .await
    .expect(200);
    let refused = api.get("/v1/coops/orchard", &phone_token).await.expect(401);
    assert!(refused.to_string().contains("revoked"), "{refused}");
    device_login(phone).await.expect(401);
    // A removal kills the member's tokens, and seals the member in the
    // ledger; alice's own token still works.
    api.get("/v1/coops/orchard", &bob_token).await.expect(200);
    let held = api.node.engine.entry_ids(&orchard).expect("ids");
    api.call(
        "DELETE",
        &format!("/v1/coops/orchard/members/{bob_did}"),
        Some(&token),
        None,
    )
    .await
    .expect(200);
    let seals: Vec<_> = api
        .node
        .engine
        .entry_ids(&orchard)
        .expect("ids")
        .into_iter()
        .filter(|id| !held.contains(id))
        .map(|id| {
            api.node
                .engine
                .entry(&orchard, &id)
                .expect("entry")
                .expect("held")
                .0
                .entry
                .body
        })
        .collect();
    assert_eq!(
        seals,
        vec![icn_schemas::ledger::Body::Seal {
            member: bob.did(),
            of: icn_schemas::ledger::Sealed::Member
        }]
    );
    api.get("/v1/coops", &bob_token).await.expect(401);
    api.get("/v1/coops/orchard", &token).await.expect(200);
}

/// Issue 14 §1: a co-op's settings over HTTP, each both ways.
#[tokio::test]
async fn coop_settings_relays_and_freezes_over_http() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let bob_did = bob.did().to_string();
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "bakery", "default_credit_limit": 50}),
    )
    .await
    .expect(201);
    api.post("/v1/coops/bakery/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    let put = |path: &str, who: &str, body: serde_json::Value| {
        let (api, path, who) = (&api, path.to_owned(), who.to_owned());
        async move { api.call("PUT", &path, Some(&who), Some(body)).await }
    };

    // Settings: unknown ones are refused, never dropped; admins only.
    put("/v1/coops/bakery", &token, json!({"treasury": "x"}))
        .await
        .expect(400);
    put(
        "/v1/coops/bakery",
        &bob_token,
        json!({"default_credit_limit": 9}),
    )
    .await
    .expect(403);
    // Units and rates.
    put(
        "/v1/coops/bakery/units/eur",
        &bob_token,
        json!({"scale": 2}),
    )
    .await
    .expect(403);
    put("/v1/coops/bakery/units/eur", &token, json!({"scale": 40}))
        .await
        .expect(400);
    let c = put(
        "/v1/coops/bakery/units/eur",
        &token,
        json!({"name": "Euro", "scale": 2}),
    )
    .await
    .expect(200);
    assert_eq!(c["policy"]["units"]["eur"]["scale"], 2);
    // Credit limits per unit: the unit's, and one member's in one unit.
    let c = put(
        "/v1/coops/bakery/units/eur",
        &token,
        json!({"name": "Euro", "scale": 2, "credit_limit": 1000}),
    )
    .await
    .expect(200);
    assert_eq!(c["policy"]["units"]["eur"]["credit_limit"], 1000);
    let member_path = format!("/v1/coops/bakery/members/{bob_did}");
    put(&member_path, &token, json!({"credit_limits": {"gold": 5}}))
        .await
        .expect(422);
    put(&member_path, &token, json!({"credit_limit_eur": 5}))
        .await
        .expect(400);
    put(
        &member_path,
        &bob_token,
        json!({"credit_limits": {"eur": 9999}}),
    )
    .await
    .expect(403);
    let m = put(
        &member_path,
        &token,
        json!({"credit_limits": {"eur": 3000}}),
    )
    .await
    .expect(200);
    assert_eq!(m["credit_limits"]["eur"], 3000, "{m}");
    let position = api
        .get(&format!("/v1/ledger/bakery/position/{bob_did}"), &bob_token)
        .await
        .expect(200);
    let limit_in = |unit: &str| {
        position["positions"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["unit"] == unit))
            .map(|p| p["credit_limit"].clone())
    };
    assert_eq!(limit_in("eur"), Some(json!(3000)), "{position}");
    assert_eq!(limit_in("hours"), Some(json!(50)), "{position}");
    put(
        "/v1/coops/bakery/rates/hours/gold",
        &token,
        json!({"num": 1, "den": 1}),
    )
    .await
    .expect(422);
    put(
        "/v1/coops/bakery/rates/hours/eur",
        &token,
        json!({"num": 0, "den": 1}),
    )
    .await
    .expect(422);
    let c = put(
        "/v1/coops/bakery/rates/hours/eur",
        &token,
        json!({"num": 2500, "den": 1}),
    )
    .await
    .expect(200);
    assert_eq!(
        c["rates"],
        json!([{"from": "hours", "to": "eur", "num": 2500, "den": 1}])
    );
    api.post(
        "/v1/ledger/bakery/settle/convert",
        &token,
        json!({"amount": 1, "from_unit": "hours", "to_unit": "eur", "to": bob_did}),
    )
    .await
    .expect(201);
    // The treasury domain: one attached to the co-op.
    api.post("/v1/gov/domains", &token, json!({"id": "loose"}))
        .await
        .expect(201);
    put(
        "/v1/coops/bakery",
        &token,
        json!({"treasury_domain": "loose"}),
    )
    .await
    .expect(422);
    let board = api
        .post(
            "/v1/gov/domains",
            &token,
            json!({"id": "bakery-board", "coop_id": "bakery"}),
        )
        .await
        .expect(201);
    let c = put(
        "/v1/coops/bakery",
        &token,
        json!({"treasury_domain": "bakery-board", "default_credit_limit": 60}),
    )
    .await
    .expect(200);
    assert_eq!(c["treasury_domain"], board["doc_id"]);
    assert_eq!(c["policy"]["default_credit_limit"], 60);

    // Relays: register, list, unregister; admins only.
    let relay = keypair(60).did().to_string();
    api.post(
        "/v1/coops/bakery/relays",
        &bob_token,
        json!({"did": relay, "addr": "127.0.0.1:7777"}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/coops/bakery/relays",
        &token,
        json!({"did": relay, "addr": ""}),
    )
    .await
    .expect(400);
    let relays = api
        .post(
            "/v1/coops/bakery/relays",
            &token,
            json!({"did": relay, "addr": "127.0.0.1:7777"}),
        )
        .await
        .expect(201);
    assert_eq!(
        relays,
        json!({"items": [{"did": relay, "addr": "127.0.0.1:7777"}], "next_cursor": null})
    );
    assert_eq!(
        api.get("/v1/coops/bakery/relays", &bob_token)
            .await
            .expect(200),
        relays
    );
    let path = format!("/v1/coops/bakery/relays/{relay}");
    api.call("DELETE", &path, Some(&bob_token), None)
        .await
        .expect(403);
    api.call("DELETE", &path, Some(&token), None)
        .await
        .expect(200);
    api.call("DELETE", &path, Some(&token), None)
        .await
        .expect(404);

    // Freezes: admins only; a frozen member pays nothing until unfrozen.
    api.post(
        "/v1/ledger/bakery/freeze",
        &bob_token,
        json!({"did": bob_did}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/ledger/bakery/freeze",
        &token,
        json!({"did": keypair(61).did().to_string()}),
    )
    .await
    .expect(404);
    api.post("/v1/ledger/bakery/freeze", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    let pay = json!({"to": alice.did().to_string(), "amount": 1, "unit": "hours"});
    api.post("/v1/ledger/bakery/settle", &bob_token, pay.clone())
        .await
        .expect(422);
    api.post(
        "/v1/ledger/bakery/freeze",
        &token,
        json!({"did": bob_did, "frozen": false}),
    )
    .await
    .expect(201);
    api.post("/v1/ledger/bakery/settle", &bob_token, pay)
        .await
        .expect(201);
}

/// Issue 14 §2: with documented HTTP calls only, a budget proposal of the
/// co-op's treasury domain executes, and the ledger, the registry and the
/// trace show it.
#[tokio::test]
async fn a_budget_executes_end_to_end_over_http() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_did = bob.did().to_string();
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "market", "default_credit_limit": 10}),
    )
    .await
    .expect(201);
    api.post("/v1/coops/market/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    api.post(
        "/v1/gov/domains",
        &token,
        json!({"id": "market-board", "coop_id": "market", "quorum_percent": 1}),
    )
    .await
    .expect(201);
    api.call(
        "PUT",
        "/v1/coops/market",
        Some(&token),
        Some(json!({"treasury_domain": "market-board"})),
    )
    .await
    .expect(200);
    let p = api
        .post(
            "/v1/gov/domains/market-board/proposals",
            &token,
            json!({"title": "Seed fund", "payload": {"type": "budget", "amount": 10,
                   "recipient": bob_did, "unit": "hours", "purpose": "seeds"}}),
        )
        .await
        .expect(201);
    let id = p["id"].as_str().expect("id").to_owned();
    api.post(&format!("/v1/gov/proposals/{id}/open"), &token, json!({}))
        .await
        .expect(200);
    api.post(
        &format!("/v1/gov/proposals/{id}/vote"),
        &token,
        json!({"choice": "for"}),
    )
    .await
    .expect(200);
    let closed = api
        .post(&format!("/v1/gov/proposals/{id}/close"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(closed["outcome"], "accepted");
    let receipt = closed["decision_receipt_id"]
        .as_str()
        .expect("receipt")
        .to_owned();

    let executed = api
        .get(
            &format!("/v1/ledger/market/entries/by-decision?decision_hash={receipt}"),
            &token,
        )
        .await
        .expect(200);
    let executed = executed["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("entries: {executed}"));
    assert_eq!(executed.len(), 1, "{executed:?}");
    let position = api
        .get(&format!("/v1/ledger/market/position/{bob_did}"), &token)
        .await
        .expect(200);
    assert_eq!(position["positions"][0]["balance"], 10);
    let list = api
        .get("/v1/registry/decisions?coop_id=market", &token)
        .await
        .expect(200);
    assert!(
        list["items"].as_array().is_some_and(|l| l
            .iter()
            .any(|d| d["decision_receipt_id"] == receipt.as_str())),
        "{list}"
    );
    let trace = api
        .get(&format!("/v1/registry/decisions/{receipt}/trace"), &token)
        .await
        .expect(200);
    assert_eq!(
        trace["entries"].as_array().map(Vec::len),
        Some(1),
        "{trace}"
    );

    // Issue 14 §4: the reads operators need.
    let treasury = api
        .get("/v1/ledger/market/position/treasury", &token)
        .await
        .expect(200);
    assert_eq!(treasury["positions"][0]["unit"], "hours");
    assert_eq!(treasury["positions"][0]["balance"], -10);
    let entry_id = executed[0]["id"]
        .as_str()
        .or_else(|| executed[0]["entry_id"].as_str())
        .or_else(|| executed[0].as_str())
        .unwrap_or_else(|| panic!("an entry id in {:?}", executed[0]))
        .to_owned();
    let one = api
        .get(&format!("/v1/ledger/market/entries/{entry_id}"), &token)
        .await
        .expect(200);
    assert_eq!(one["status"]["status"], "applied");
    assert!(!one["entry"]["decision"].is_null(), "{one}");
    api.get("/v1/ledger/market/entries/nothex", &token)
        .await
        .expect(400);
    api.get(
        &format!("/v1/ledger/market/entries/{}", "0".repeat(64)),
        &token,
    )
    .await
    .expect(404);
    let tb = api
        .get("/v1/ledger/market/trial-balance", &token)
        .await
        .expect(200);
    assert_eq!(tb["totals"]["hours"], "0");
    assert!(tb["entries"].as_u64().is_some_and(|n| n >= 1), "{tb}");
    let history = api
        .get("/v1/ledger/market/history?account=treasury", &token)
        .await
        .expect(200);
    assert_eq!(
        history["items"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
}

/// Issue 14 §4: a settle retried with the same Idempotency-Key (after a
/// lost answer, even with a new token) answers the first time's answer and
/// pays once; the same key for another request is refused.
#[tokio::test]
async fn a_retried_settle_with_an_idempotency_key_pays_once() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_did = bob.did().to_string();
    api.post(
        "/v1/coops",
        &token,
        json!({"id": "mill", "default_credit_limit": 100}),
    )
    .await
    .expect(201);
    api.post("/v1/coops/mill/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    let settle = |token: String, key: &'static str, amount: i64| {
        let api = &api;
        let body = json!({"to": bob_did, "amount": amount, "unit": "hours"});
        async move {
            let req = Request::builder()
                .method("POST")
                .uri("/v1/ledger/mill/settle")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", key)
                .body(Body::from(body.to_string()))
                .expect("request");
            api.send(req).await
        }
    };
    let first = settle(token.clone(), "pay-bread-1", 5).await;
    assert_eq!(first.headers["idempotent-replayed"], "false");
    let first = first.expect(201);
    let again = settle(token.clone(), "pay-bread-1", 5).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.expect(201), first);
    // After logging in again, still the same member's key.
    let token2 = api.login(&alice).await;
    assert_eq!(settle(token2, "pay-bread-1", 5).await.expect(201), first);
    // A refused request keeps nothing: its key stays free.
    settle(token.clone(), "pay-later", 0).await.expect(422);
    let later = settle(token.clone(), "pay-later", 1).await;
    assert_eq!(later.headers["idempotent-replayed"], "false");
    later.expect(201);
    // The same key for another request is refused; a bad key too.
    settle(token.clone(), "pay-bread-1", 6).await.expect(422);
    settle(token.clone(), "has space", 1).await.expect(400);
    // Two at once with one key: one payment.
    let (a, b) = tokio::join!(
        settle(token.clone(), "pay-bread-2", 7),
        settle(token.clone(), "pay-bread-2", 7)
    );
    assert_eq!(a.expect(201), b.expect(201));
    let position = api
        .get(&format!("/v1/ledger/mill/position/{bob_did}"), &token)
        .await
        .expect(200);
    assert_eq!(
        position["positions"][0]["balance"], 13,
        "5 + 1 + 7, each once"
    );
    // Bob's own key "pay-bread-1" is another slot.
    let bob_token = api.login(&bob).await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/ledger/mill/settle")
        .header(header::AUTHORIZATION, format!("Bearer {bob_token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "pay-bread-1")
        .body(Body::from(
            json!({"to": alice.did().to_string(), "amount": 1, "unit": "hours"}).to_string(),
        ))
        .expect("request");
    assert_eq!(api.send(req).await.headers["idempotent-replayed"], "false");
}

/// Issue 14 §1: a domain's rules changed, members removed, proposals
/// cancelled by their authors, domains listed by co-op; each both ways.
#[tokio::test]
async fn domains_change_rules_remove_members_and_cancel_proposals() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let bob_did = bob.did().to_string();
    api.post("/v1/coops", &token, json!({"id": "guild"}))
        .await
        .expect(201);
    api.post("/v1/coops/guild/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    api.post(
        "/v1/gov/domains",
        &token,
        json!({"id": "guild-board", "coop_id": "guild", "members": [bob_did]}),
    )
    .await
    .expect(201);
    api.post("/v1/gov/domains", &token, json!({"id": "elsewhere"}))
        .await
        .expect(201);
    let listed = api
        .get("/v1/gov/domains?coop_id=guild", &token)
        .await
        .expect(200);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["items"][0]["id"], "guild-board");

    // Rules: admins only; unknown fields and bad values refused.
    let put = |who: &str, body: serde_json::Value| {
        let (api, who) = (&api, who.to_owned());
        async move {
            api.call("PUT", "/v1/gov/domains/guild-board", Some(&who), Some(body))
                .await
        }
    };
    put(&bob_token, json!({"quorum_percent": 10}))
        .await
        .expect(403);
    put(&token, json!({"quorum": 10})).await.expect(400);
    put(&token, json!({"voting_period_days": 0}))
        .await
        .expect(422);
    let changed = put(
        &token,
        json!({"quorum_percent": 10, "voting_period_days": 2, "name": "Board"}),
    )
    .await
    .expect(200);
    assert_eq!(changed["rules"]["quorum_percent"], 10);
    assert_eq!(changed["rules"]["voting_period_seconds"], 172_800);
    assert_eq!(changed["name"], "Board");

    // Cancel: the author only, while a draft or open.
    let p = api
        .post(
            "/v1/gov/domains/guild-board/proposals",
            &token,
            json!({"title": "Paint the door"}),
        )
        .await
        .expect(201);
    let id = p["id"].as_str().expect("id").to_owned();
    api.post(
        &format!("/v1/gov/proposals/{id}/cancel"),
        &bob_token,
        json!({}),
    )
    .await
    .expect(403);
    let cancelled = api
        .post(&format!("/v1/gov/proposals/{id}/cancel"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(cancelled["state"], "cancelled");
    api.post(&format!("/v1/gov/proposals/{id}/cancel"), &token, json!({}))
        .await
        .expect(422);

    // Members: an admin removes one; a member may leave; not others.
    let path = format!("/v1/gov/domains/guild-board/members/{}", alice.did());
    api.call("DELETE", &path, Some(&bob_token), None)
        .await
        .expect(403);
    let removed = api
        .call(
            "DELETE",
            &format!("/v1/gov/domains/guild-board/members/{bob_did}"),
            Some(&token),
            None,
        )
        .await
        .expect(200);
    assert_eq!(removed["active"], false);
    // The last admin stays.
    api.call("DELETE", &path, Some(&token), None)
        .await
        .expect(403);
}

/// Issue 14 §3 (seed 002, onboarding): an admin invites, a fresh DID
/// applies with the code and sees its application; an admin approves and
/// the applicant is a member. Used, forged and foreign codes are refused,
/// and the applicant does nothing else in the co-op until approved.
#[tokio::test]
async fn a_new_member_joins_with_an_invite() {
    let api = Api::new();
    let alice = keypair(1);
    let bob = keypair(2);
    let carol = keypair(3);
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let carol_token = api.login(&carol).await;
    let (bob_did, carol_did) = (bob.did().to_string(), carol.did().to_string());
    api.post("/v1/coops", &token, json!({"id": "pantry"}))
        .await
        .expect(201);
    api.post("/v1/coops", &token, json!({"id": "other"}))
        .await
        .expect(201);
    // Only admins invite.
    api.post("/v1/coops/pantry/invites", &bob_token, json!({}))
        .await
        .expect(403);
    api.post("/v1/coops/pantry/invites", &token, json!({"role": "king"}))
        .await
        .expect(400);
    let invite = api
        .post(
            "/v1/coops/pantry/invites",
            &token,
            json!({"credit_limit": 15, "expires_in_seconds": 3600}),
        )
        .await
        .expect(201);
    let code = invite["code"].as_str().expect("code").to_owned();
    let other = api
        .post("/v1/coops/other/invites", &token, json!({}))
        .await
        .expect(201)["code"]
        .as_str()
        .expect("code")
        .to_owned();

    // Before applying, bob reads nothing of the co-op.
    api.get("/v1/coops/pantry", &bob_token).await.expect(403);
    api.post(
        "/v1/coops/pantry/applications",
        &bob_token,
        json!({"code": "icn-inv-forged"}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/coops/pantry/applications",
        &bob_token,
        json!({"code": other}),
    )
    .await
    .expect(403);
    let applied = api
        .post(
            "/v1/coops/pantry/applications",
            &bob_token,
            json!({"code": code}),
        )
        .await
        .expect(201);
    assert_eq!(applied["state"], "pending");
    // Applying again with the same code (a lost answer) is the same
    // application, not a second one.
    let again = api
        .post(
            "/v1/coops/pantry/applications",
            &bob_token,
            json!({"code": code}),
        )
        .await
        .expect(201);
    assert_eq!(again, applied);
    // The code works once.
    api.post(
        "/v1/coops/pantry/applications",
        &carol_token,
        json!({"code": code}),
    )
    .await
    .expect(409);
    // Pending: bob sees his application, and still nothing else.
    let path = format!("/v1/coops/pantry/applications/{bob_did}");
    assert_eq!(
        api.get(&path, &bob_token).await.expect(200)["state"],
        "pending"
    );
    api.get(&path, &carol_token).await.expect(403);
    api.get("/v1/coops/pantry", &bob_token).await.expect(403);
    api.post(
        "/v1/ledger/pantry/settle",
        &bob_token,
        json!({"to": alice.did().to_string(), "amount": 1, "unit": "hours"}),
    )
    .await
    .expect(403);
    let listed = api
        .get("/v1/coops/pantry/applications", &token)
        .await
        .expect(200);
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    // Approved: a member with the invite's credit limit.
    api.post(&format!("{path}/approve"), &bob_token, json!({}))
        .await
        .expect(403);
    let approved = api
        .post(&format!("{path}/approve"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(approved["state"], "approved");
    api.post(&format!("{path}/approve"), &token, json!({}))
        .await
        .expect(409);
    let member = api
        .get("/v1/coops/pantry/members", &bob_token)
        .await
        .expect(200);
    let bob_row = member["items"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["did"] == bob_did.as_str()).cloned())
        .expect("bob is a member");
    assert_eq!(bob_row["credit_limit"], 15);
    assert_eq!(bob_row["role"], "member");
    // Rejection, for another applicant.
    let code2 = api
        .post("/v1/coops/pantry/invites", &token, json!({}))
        .await
        .expect(201)["code"]
        .as_str()
        .expect("code")
        .to_owned();
    api.post(
        "/v1/coops/pantry/applications",
        &carol_token,
        json!({"code": code2}),
    )
    .await
    .expect(201);
    let rejected = api
        .post(
            &format!("/v1/coops/pantry/applications/{carol_did}/reject"),
            &token,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(rejected["state"], "rejected");
    api.get("/v1/coops/pantry", &carol_token).await.expect(403);
    // An expired code is refused (expiry is in whole seconds).
    let short = api
        .post(
            "/v1/coops/pantry/invites",
            &token,
            json!({"expires_in_seconds": 1}),
        )
        .await
        .expect(201)["code"]
        .as_str()
        .expect("code")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let dave = api.login(&keypair(4)).await;
    api.post(
        "/v1/coops/pantry/applications",
        &dave,
        json!({"code": short}),
    )
    .await
    .expect(410);
}

/// Issue 14 §1: a WASM tally module uploaded by content and addressed by
/// its blake3 hash; a domain names it.
#[tokio::test]
async fn tally_modules_are_uploaded_by_content() {
    let api = Api::new();
    let alice = keypair(1);
    let token = api.login(&alice).await;
    let upload = |bytes: Vec<u8>, token: Option<String>| {
        let api = &api;
        async move {
            let mut req = Request::builder()
                .method("POST")
                .uri("/v1/modules")
                .header(header::CONTENT_TYPE, "application/wasm");
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            api.send(req.body(Body::from(bytes)).expect("request"))
                .await
        }
    };
    // The smallest valid module: the magic number and version 1.
    let module = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    upload(module.clone(), None).await.expect(401);
    upload(b"not wasm".to_vec(), Some(token.clone()))
        .await
        .expect(422);
    let stored = upload(module.clone(), Some(token.clone()))
        .await
        .expect(201);
    let hash = hex::encode(blake3::hash(&module).as_bytes());
    assert_eq!(stored["hash"], hash);
    let got = api.get(&format!("/v1/modules/{hash}"), &token).await;
    assert_eq!(got.status.as_u16(), 200);
    assert_eq!(got.bytes, module);
    api.get(&format!("/v1/modules/{}", "0".repeat(64)), &token)
        .await
        .expect(404);
    api.get("/v1/modules/xyz", &token).await.expect(400);
    let domain = api
        .post(
            "/v1/gov/domains",
            &token,
            json!({"id": "wasm-board", "method": {"kind": "wasm", "module": hash}}),
        )
        .await
        .expect(201);
    assert_eq!(domain["rules"]["method"]["module"], hash);
}

/// Issue 14 §3: when the policy says so, members invite, and applications
/// are decided by a membership proposal of the treasury domain, not by an
/// admin's word; the application's state follows the decision.
#[tokio::test]
async fn members_are_admitted_by_proposal_when_the_policy_says_so() {
    let api = Api::new();
    let (alice, bob, carol, dave) = (keypair(1), keypair(2), keypair(3), keypair(4));
    let token = api.login(&alice).await;
    let bob_token = api.login(&bob).await;
    let carol_token = api.login(&carol).await;
    let dave_token = api.login(&dave).await;
    let (bob_did, carol_did, dave_did) = (
        bob.did().to_string(),
        carol.did().to_string(),
        dave.did().to_string(),
    );
    api.post("/v1/coops", &token, json!({"id": "guild"}))
        .await
        .expect(201);
    api.post("/v1/coops/guild/members", &token, json!({"did": bob_did}))
        .await
        .expect(201);
    // Members do not invite until the policy lets them.
    api.post("/v1/coops/guild/invites", &bob_token, json!({}))
        .await
        .expect(403);
    api.post(
        "/v1/gov/domains",
        &token,
        json!({"id": "guild-board", "coop_id": "guild", "quorum_percent": 1}),
    )
    .await
    .expect(201);
    // An unknown policy field is refused, and changes nothing.
    api.call(
        "PUT",
        "/v1/coops/guild",
        Some(&token),
        Some(json!({"onboarding": {"approval": "lottery"}})),
    )
    .await
    .expect(400);
    let coop = api
        .call(
            "PUT",
            "/v1/coops/guild",
            Some(&token),
            Some(json!({"treasury_domain": "guild-board",
                        "onboarding": {"approval": "proposal", "member_invites": true}})),
        )
        .await
        .expect(200);
    assert_eq!(
        coop["policy"]["onboarding"]["approval"], "proposal",
        "{coop}"
    );

    // A member invites members, not admins, and sets no credit limit.
    api.post(
        "/v1/coops/guild/invites",
        &bob_token,
        json!({"role": "admin"}),
    )
    .await
    .expect(403);
    api.post(
        "/v1/coops/guild/invites",
        &bob_token,
        json!({"credit_limit": 500}),
    )
    .await
    .expect(403);
    let mut codes = Vec::new();
    for _ in 0..2 {
        let invite = api
            .post("/v1/coops/guild/invites", &bob_token, json!({}))
            .await
            .expect(201);
        codes.push(invite["code"].as_str().expect("code").to_owned());
    }
    for (t, code) in [(&carol_token, &codes[0]), (&dave_token, &codes[1])] {
        api.post("/v1/coops/guild/applications", t, json!({"code": code}))
            .await
            .expect(201);
    }

    // An admin's word is not enough here: a proposal decides.
    let carol_path = format!("/v1/coops/guild/applications/{carol_did}");
    api.post(&format!("{carol_path}/approve"), &token, json!({}))
        .await
        .expect(409);
    let proposal = api
        .post(&format!("{carol_path}/propose"), &token, json!({}))
        .await
        .expect(201);
    let pid = proposal["id"].as_str().expect("id").to_owned();
    assert_eq!(proposal["payload"]["action"], "add", "{proposal}");
    let again = api
        .post(&format!("{carol_path}/propose"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(again["id"], pid.as_str());
    let seen = api.get(&carol_path, &carol_token).await.expect(200);
    assert_eq!(seen["state"], "pending");
    assert_eq!(seen["proposal_id"], pid.as_str());
    api.get("/v1/coops/guild", &carol_token).await.expect(403);
    api.post(&format!("/v1/gov/proposals/{pid}/open"), &token, json!({}))
        .await
        .expect(200);
    api.post(
        &format!("/v1/gov/proposals/{pid}/vote"),
        &token,
        json!({"choice": "for"}),
    )
    .await
    .expect(200);
    let closed = api
        .post(&format!("/v1/gov/proposals/{pid}/close"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(closed["outcome"], "accepted");
    assert_eq!(
        api.get(&carol_path, &carol_token).await.expect(200)["state"],
        "approved"
    );
    api.get("/v1/coops/guild", &carol_token).await.expect(200);
    let receipt = closed["decision_receipt_id"].as_str().expect("receipt");
    let trace = api
        .get(&format!("/v1/registry/decisions/{receipt}/trace"), &token)
        .await
        .expect(200);
    assert_eq!(trace["executed"], true, "{trace}");

    // Dave's admission is voted down: his application is rejected.
    let dave_path = format!("/v1/coops/guild/applications/{dave_did}");
    let pid = api
        .post(&format!("{dave_path}/propose"), &token, json!({}))
        .await
        .expect(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    api.post(&format!("/v1/gov/proposals/{pid}/open"), &token, json!({}))
        .await
        .expect(200);
    api.post(
        &format!("/v1/gov/proposals/{pid}/vote"),
        &token,
        json!({"choice": "against"}),
    )
    .await
    .expect(200);
    api.post(&format!("/v1/gov/proposals/{pid}/close"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(
        api.get(&dave_path, &dave_token).await.expect(200)["state"],
        "rejected"
    );
    api.post(&format!("{dave_path}/propose"), &token, json!({}))
        .await
        .expect(200);
    api.get("/v1/coops/guild", &dave_token).await.expect(403);
}

/// Issue 15 §1: every error is JSON `{error, message}`, including the
/// rejections axum makes before a handler runs, and a 401 says how to
/// authenticate.
#[tokio::test]
async fn every_error_is_json_and_401_says_how_to_authenticate() {
    let api = Api::new();
    let alice = keypair(1);
    let token = api.login(&alice).await;
    api.post("/v1/coops", &token, json!({"id": "errs"}))
        .await
        .expect(201);
    for (path, status) in [
        ("/v1/ledger/errs/history?limit=-1", 400),
        ("/v1/ledger/errs/history?limit=lots", 400),
        ("/v1/coops/%FF", 400),
        ("/v1/ws/errs", 400),
        ("/v1/nope", 404),
    ] {
        let reply = api.get(path, &token).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {:?}", reply.json());
        let body = reply.json();
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{path}: {body}"
        );
    }
    let reply = api.call("GET", "/v1/coops", None, None).await;
    assert_eq!(reply.status.as_u16(), 401);
    assert_eq!(
        reply
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"icn\"")
    );
    assert!(reply.json()["message"].is_string());
}

/// The member web app is served at `/` from the binary, with a policy that
/// keeps the page to this node, and revalidates by ETag.
#[tokio::test]
async fn the_web_app_is_served_at_the_root() {
    let api = Api::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let reply = api.call("GET", path, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert!(header("content-security-policy").contains("default-src 'none'"));
        assert!(!reply.bytes.is_empty());
        let etag = header("etag");
        let again = api
            .send(
                Request::builder()
                    .uri(path)
                    .header(header::IF_NONE_MATCH, &etag)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
    }
    let page = String::from_utf8(api.call("GET", "/", None, None).await.bytes).expect("utf-8");
    assert!(page.contains(r#"<script type="module" src="/app.js">"#));
    assert!(!page.contains("http://") && !page.contains("https://"));
}
