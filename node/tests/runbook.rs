//! The operator runbook against a real `icnd` on a temporary data directory
//! and free ports: `icnctl auth login`, the §7 smoke test script, the
//! metrics, `icnctl` ledger and governance commands, identity export and
//! import, and a restart that keeps everything (tokens included).

mod common;

use common::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASS: &str = "correct horse battery staple";

struct Node {
    dir: PathBuf,
    port: u16,
    metrics: u16,
}

impl Node {
    fn start(&self) -> Child {
        let child = Command::new(env!("CARGO_BIN_EXE_icnd"))
            .args(["--data-dir", self.dir.to_str().expect("utf-8")])
            .args(["--gateway-bind", &format!("127.0.0.1:{}", self.port)])
            .args(["--listen-addr", "127.0.0.1:0"])
            .args(["--metrics-port", &self.metrics.to_string()])
            .env("ICN_KEYSTORE_PASSPHRASE", PASS)
            .env_remove("ICN_GATEWAY_JWT_SECRET")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn icnd");
        let deadline = Instant::now() + Duration::from_secs(60);
        while curl(&["-sf", &self.url("/v1/health")]).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "icnd did not answer /v1/health");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn stop(child: Child) -> Output {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("icnd exits");
    assert!(out.status.success(), "icnd exit status {:?}", out.status);
    out
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--max-time", "30"])
        .args(args)
        .output()
        .expect("curl (the runbook needs it)")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn icnctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icnctl"))
        .args(["--data-dir", dir.to_str().expect("utf-8")])
        .args(args)
        .env("ICN_KEYSTORE_PASSPHRASE", PASS)
        .env_remove("ICN_TOKEN")
        .env_remove("ICN_GATEWAY")
        .output()
        .expect("run icnctl")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status,
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out)
}

/// `POST`s a JSON body with a token; the status code.
fn post(node: &Node, token: &str, path: &str, body: &str) -> String {
    text(&curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &node.url(path),
    ]))
}

fn smoke(node: &Node, token: &str, coop: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smoke-test.sh");
    Command::new("bash")
        .arg(script)
        .env("HOST", node.url(""))
        .env("TOKEN", token)
        .env("COOP_ID", coop)
        .output()
        .expect("run the smoke test")
}

#[test]
fn the_runbook_works_end_to_end_and_survives_a_restart() {
    let node_dir = tempfile::tempdir().expect("dir");
    let member_dir = tempfile::tempdir().expect("dir");
    let node = Node {
        dir: node_dir.path().to_owned(),
        port: free_port(),
        metrics: free_port(),
    };
    let icnd = node.start();
    let gateway = node.url("");
    let member = member_dir.path();

    // §4, option A: icnctl does challenge, sign and verify.
    let did = ok(icnctl(member, &["id", "init"])).trim().to_owned();
    let token = ok(icnctl(
        member,
        &["auth", "login", "--gateway", &gateway, "--output", "token"],
    ))
    .trim()
    .to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // A co-op for step 10 to read.
    let created = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"id": "smoke-coop", "name": "Smoke Co-op"}"#,
        &node.url("/v1/coops"),
    ]);
    assert_eq!(text(&created), "201");

    // §7: the smoke test passes, all 11 steps.
    let out = smoke(&node, &token, "smoke-coop");
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("Results: 11 passed, 0 failed, 0 skipped (11 total)"),
        "{report}"
    );
    assert!(
        report.contains("PASS Close proposal (200) outcome=accepted"),
        "{report}"
    );
    assert!(
        report.contains("PASS Ledger entries-by-decision endpoint reachable (200)"),
        "{report}"
    );
    assert!(report.trim_end().ends_with("SMOKE PASS"), "{report}");
    // And it can fail: with a forged token every authenticated step does.
    let out = smoke(&node, "not.a.token", "smoke-coop");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL Create governance domain (401)"));

    // The API examples of docs/api.md run too.
    let other_member = tempfile::tempdir().expect("dir");
    let other_did = ok(icnctl(other_member.path(), &["id", "init"]))
        .trim()
        .to_owned();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/examples.sh");
    let out = Command::new("bash")
        .arg(&examples)
        .env("HOST", node.url(""))
        .env("TOKEN", &token)
        .env("MEMBER_DID", &other_did)
        .output()
        .expect("run the examples");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("examples done"), "{said}");

    // The runbook's metrics.
    let metrics = text(&curl(&[
        "-s",
        &format!("http://127.0.0.1:{}/metrics", node.metrics),
    ]));
    for line in [
        "gateway_governance_proposals_created_total 2",
        "gateway_governance_proposals_opened_total 2",
        "gateway_governance_proposals_closed_total 2",
        "gateway_governance_votes_cast_total 2",
        "icn_sync_sessions_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // icnctl through the gateway: a position, the proposals.
    let position = ok(icnctl(
        member,
        &[
            "ledger",
            "position",
            "smoke-coop",
            &did,
            "--gateway",
            &gateway,
        ],
    ));
    let position: serde_json::Value = serde_json::from_str(&position).expect("JSON");
    assert_eq!(position["positions"][0]["unit"], "hours");
    let proposals = ok(icnctl(
        member,
        &["gov", "proposals", "--gateway", &gateway, "--token", &token],
    ));
    let proposals: serde_json::Value = serde_json::from_str(&proposals).expect("JSON");
    let id = proposals["items"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(proposals["items"][0]["state"], "accepted");
    // A refusal: a clear message and exit status 3.
    let refused = icnctl(
        member,
        &[
            "gov",
            "vote",
            &id,
            "for",
            "--gateway",
            &gateway,
            "--token",
            &token,
        ],
    );
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("422"));

    // Identity backup and restore.
    let backup = member.join("backup.age");
    ok(icnctl(
        member,
        &["id", "export", backup.to_str().expect("utf-8")],
    ));
    let restored = tempfile::tempdir().expect("dir");
    ok(icnctl(
        restored.path(),
        &["id", "import", backup.to_str().expect("utf-8")],
    ));
    assert_eq!(ok(icnctl(restored.path(), &["id", "show"])).trim(), did);
    assert!(
        !icnctl(
            restored.path(),
            &["id", "import", backup.to_str().expect("utf-8")]
        )
        .status
        .success()
    );

    // A backup while the node runs.
    let backup_file = member.join("node.icnbackup");
    let said = ok(icnctl(
        &node.dir,
        &["backup", backup_file.to_str().expect("utf-8")],
    ));
    assert!(said.contains("backup written"), "{said}");

    // A restart: the token, the proposal, the co-op are all still there.
    let log = text(&stop(icnd));
    assert!(
        log.contains("generated"),
        "the token secret is generated once: {log}"
    );
    assert!(!log.contains(&token), "the token is never logged");
    let icnd = node.start();
    let got = text(&curl(&[
        "-s",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &node.url(&format!("/v1/gov/proposals/{id}")),
    ]));
    let got: serde_json::Value = serde_json::from_str(&got).expect("JSON");
    assert_eq!(got["state"], "accepted", "{got}");
    let log = text(&stop(icnd));
    assert!(
        !log.contains("generated"),
        "the stored secret is reused: {log}"
    );

    // Restored on another machine: the backup, the identity and the token
    // secret give a node that answers the same token the same way.
    let other = tempfile::tempdir().expect("dir");
    let restored = ok(icnctl(
        other.path(),
        &["restore", backup_file.to_str().expect("utf-8")],
    ));
    assert!(restored.contains("restored into"), "{restored}");
    for file in ["identity.age", "gateway.secret"] {
        std::fs::copy(node.dir.join(file), other.path().join(file)).expect("copy");
    }
    let moved = Node {
        dir: other.path().to_owned(),
        port: free_port(),
        metrics: free_port(),
    };
    let icnd = moved.start();
    let got = text(&curl(&[
        "-s",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &moved.url(&format!("/v1/gov/proposals/{id}")),
    ]));
    let got: serde_json::Value = serde_json::from_str(&got).expect("JSON");
    assert_eq!(got["state"], "accepted", "{got}");
    stop(icnd);
    // Restoring over data is refused.
    assert!(
        !icnctl(
            other.path(),
            &["restore", backup_file.to_str().expect("utf-8")]
        )
        .status
        .success()
    );
}

#[test]
fn version_and_a_node_without_gateway() {
    let version = Command::new(env!("CARGO_BIN_EXE_icnd"))
        .arg("--version")
        .output()
        .expect("icnd --version");
    assert!(text(&version).starts_with("icnd "), "{}", text(&version));

    // A relay that serves no gateway still serves its metrics.
    let dir = tempfile::tempdir().expect("dir");
    let (port, metrics) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_icnd"))
        .args(["--data-dir", dir.path().to_str().expect("utf-8")])
        .args(["--gateway-bind", &format!("127.0.0.1:{port}")])
        .args(["--gateway-enable", "false"])
        .args(["--listen-addr", "127.0.0.1:0"])
        .args(["--metrics-port", &metrics.to_string()])
        .env("ICN_KEYSTORE_PASSPHRASE", PASS)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn icnd");
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    while curl(&["-sf", &url]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "no metrics");
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = curl(&["-s", &format!("http://127.0.0.1:{port}/v1/health")]);
    assert_ne!(health.status.code(), Some(0), "the gateway is off");
    let log = text(&stop(child));
    assert!(log.contains("gateway disabled"), "{log}");
}

/// Seed 002's lost phone and emergency revoke through `icnctl device`.
#[test]
fn devices_through_icnctl() {
    let node_dir = tempfile::tempdir().expect("dir");
    let node = Node {
        dir: node_dir.path().to_owned(),
        port: free_port(),
        metrics: free_port(),
    };
    let icnd = node.start();
    let gateway = node.url("");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (alice, bob, phone) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    let alice_did = ok(icnctl(alice, &["id", "init"])).trim().to_owned();
    let bob_did = ok(icnctl(bob, &["id", "init"])).trim().to_owned();
    let phone_did = ok(icnctl(phone, &["id", "init"])).trim().to_owned();
    let token = ok(icnctl(alice, &["auth", "login", "--gateway", &gateway]))
        .trim()
        .to_owned();
    for (path, body) in [
        ("/v1/coops", r#"{"id": "garden"}"#.to_owned()),
        (
            "/v1/coops/garden/members",
            format!(r#"{{"did": "{bob_did}"}}"#),
        ),
    ] {
        assert_eq!(post(&node, &token, path, &body), "201", "{path}");
    }
    let g = ["--gateway", gateway.as_str()];
    let json = |out: String| -> serde_json::Value { serde_json::from_str(&out).expect("JSON") };

    // The new phone signs its consent; alice registers it.
    let proof = json(ok(icnctl(
        phone,
        &["device", "proof", "--member", &alice_did],
    )));
    assert_eq!(proof["device"], phone_did.as_str());
    let proof = proof["proof"].as_str().expect("proof").to_owned();
    let added = json(ok(icnctl(
        alice,
        &[
            &[
                "device", "add", "--device", &phone_did, "--proof", &proof, "--label", "phone",
            ][..],
            &g,
        ]
        .concat(),
    )));
    assert_eq!(added["outcomes"][0]["done"], true);
    let listed = json(ok(icnctl(alice, &[&["device", "list"][..], &g].concat())));
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    // The phone logs in for alice with its own key.
    let login = json(ok(icnctl(
        phone,
        &[
            "auth",
            "login",
            "--gateway",
            &gateway,
            "--member",
            &alice_did,
            "--output",
            "json",
        ],
    )));
    assert_eq!(login["did"], alice_did.as_str());
    assert_eq!(login["device"], phone_did.as_str());
    let phone_token = login["token"].as_str().expect("token").to_owned();
    ok(icnctl(
        phone,
        &[
            &[
                "device",
                "list",
                "--member",
                &alice_did,
                "--token",
                &phone_token,
            ][..],
            &g,
        ]
        .concat(),
    ));

    // An allowance for the phone, signed by alice's DID key in icnctl: over
    // her room (credit limit 0, balance 0) it is refused, nothing stored;
    // with room it counts. The phone gives some back, signed by its own key.
    let over = icnctl(
        alice,
        &[
            &["ledger", "grant", "garden", &phone_did, "4", "hours"][..],
            &g,
        ]
        .concat(),
    );
    assert_eq!(over.status.code(), Some(3), "{}", text(&over));
    ok(icnctl(
        alice,
        &[
            &["coop", "set", "garden", "--default-credit-limit", "10"][..],
            &g,
        ]
        .concat(),
    ));
    let granted = json(ok(icnctl(
        alice,
        &[
            &["ledger", "grant", "garden", &phone_did, "4", "hours"][..],
            &g,
        ]
        .concat(),
    )));
    assert_eq!(granted["status"]["status"], "applied", "{granted}");
    let released = json(ok(icnctl(
        phone,
        &[
            &[
                "ledger", "release", "garden", "1", "hours", "--member", &alice_did,
            ][..],
            &g,
        ]
        .concat(),
    )));
    assert_eq!(released["status"]["status"], "applied", "{released}");
    let position = json(ok(icnctl(
        alice,
        &[&["ledger", "position", "garden", &alice_did][..], &g].concat(),
    )));
    assert_eq!(
        position["positions"][0]["allowances"][&phone_did], 3,
        "{position}"
    );
    // The phone is not bob's device: it cannot act for him (exit 3).
    let refused = icnctl(
        phone,
        &[
            &[
                "ledger", "release", "garden", "9", "hours", "--member", &bob_did,
            ][..],
            &g,
        ]
        .concat(),
    );
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));

    // Bob may not revoke alice's phone (exit status 3); alice may.
    let refused = icnctl(
        bob,
        &[
            &[
                "device", "revoke", &phone_did, "--reason", "lost", "--member", &alice_did,
            ][..],
            &g,
        ]
        .concat(),
    );
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    let revoked = json(ok(icnctl(
        alice,
        &[
            &["device", "revoke", &phone_did, "--reason", "lost"][..],
            &g,
        ]
        .concat(),
    )));
    let phone_row = revoked["devices"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["device"] == phone_did.as_str()))
        .cloned()
        .expect("the phone's row");
    assert_eq!(phone_row["status"], "revoked");
    assert_eq!(phone_row["revoked_reason"], "lost");
    // The phone's token died with it, and it logs in no more.
    let dead = icnctl(
        phone,
        &[
            &[
                "device",
                "list",
                "--member",
                &alice_did,
                "--token",
                &phone_token,
            ][..],
            &g,
        ]
        .concat(),
    );
    assert_eq!(dead.status.code(), Some(3), "{}", text(&dead));
    assert!(String::from_utf8_lossy(&dead.stderr).contains("401"));
    let again = icnctl(
        phone,
        &[
            "auth",
            "login",
            "--gateway",
            &gateway,
            "--member",
            &alice_did,
        ],
    );
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    // Twice is refused: the first revocation's record stands.
    let again = icnctl(
        alice,
        &[
            &["device", "revoke", &phone_did, "--reason", "stolen"][..],
            &g,
        ]
        .concat(),
    );
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));

    // The emergency revoke: bob is no trusted contact; as the admin, alice
    // revokes every device of bob's.
    let refused = icnctl(
        bob,
        &[&["device", "emergency-revoke", &alice_did][..], &g].concat(),
    );
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    let all = json(ok(icnctl(
        alice,
        &[
            &["device", "emergency-revoke", &bob_did, "--reason", "stolen"][..],
            &g,
        ]
        .concat(),
    )));
    assert!(
        all["devices"]
            .as_array()
            .is_some_and(|rows| !rows.is_empty() && rows.iter().all(|r| r["status"] == "revoked")),
        "{all}"
    );
    stop(icnd);
}

/// Issue 13 §1: `icnctl id rotate`. A member rotates from its own data
/// directory against a node's gateway; the node's operator rotates the
/// node's identity, and icnd restarts itself on the new key, its co-ops
/// untouched. The old keys' tokens die; a phone rotates nothing.
#[test]
fn rotation_through_icnctl() {
    let node_dir = tempfile::tempdir().expect("dir");
    let node = Node {
        dir: node_dir.path().to_owned(),
        port: free_port(),
        metrics: free_port(),
    };
    let icnd = node.start();
    let gateway = node.url("");
    let g = ["--gateway", gateway.as_str()];
    let json = |out: String| -> serde_json::Value { serde_json::from_str(&out).expect("JSON") };
    let operator = node.dir.as_path();
    let status = |dir: &Path| json(ok(icnctl(dir, &["status"])));
    let node_did = ok(icnctl(operator, &["id", "show"])).trim().to_owned();
    assert_eq!(status(operator)["did"], node_did.as_str());
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (alice, phone) = (dirs[0].path(), dirs[1].path());
    let alice_did = ok(icnctl(alice, &["id", "init"])).trim().to_owned();
    let phone_did = ok(icnctl(phone, &["id", "init"])).trim().to_owned();
    // The operator's identity creates the co-op; alice joins it and lists
    // a phone.
    let token = ok(icnctl(operator, &["auth", "login", "--gateway", &gateway]))
        .trim()
        .to_owned();
    for (path, body) in [
        ("/v1/coops", r#"{"id": "garden"}"#.to_owned()),
        (
            "/v1/coops/garden/members",
            format!(r#"{{"did": "{alice_did}"}}"#),
        ),
    ] {
        assert_eq!(post(&node, &token, path, &body), "201", "{path}");
    }
    let proof = json(ok(icnctl(
        phone,
        &["device", "proof", "--member", &alice_did],
    )));
    let proof = proof["proof"].as_str().expect("proof").to_owned();
    ok(icnctl(
        alice,
        &[
            &["device", "add", "--device", &phone_did, "--proof", &proof][..],
            &g,
        ]
        .concat(),
    ));
    let alice_token = ok(icnctl(alice, &["auth", "login", "--gateway", &gateway]))
        .trim()
        .to_owned();

    // A phone holds none of alice's DID key powers: refused, exit 3.
    let phone_token = json(ok(icnctl(
        phone,
        &[
            "auth",
            "login",
            "--gateway",
            &gateway,
            "--member",
            &alice_did,
            "--output",
            "json",
        ],
    )))["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let refused = icnctl(
        phone,
        &[&["id", "rotate", "--token", &phone_token][..], &g].concat(),
    );
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));

    // Alice rotates from her own directory (no icnd runs there).
    let rotated = json(ok(icnctl(alice, &[&["id", "rotate"][..], &g].concat())));
    assert_eq!(rotated["did"], alice_did.as_str());
    assert_eq!(rotated["old_key"], alice_did.as_str());
    assert_eq!(rotated["outcomes"][0]["done"], true, "{rotated}");
    let new_key = rotated["new_key"].as_str().expect("new key").to_owned();
    assert_ne!(new_key, alice_did);
    assert!(!alice.join("identity.next.age").exists());
    assert_eq!(
        ok(icnctl(alice, &["id", "show"])).trim(),
        alice_did,
        "the DID stays"
    );
    // Her old key's token died; the new key logs in for her, with gov:write.
    let dead = icnctl(
        alice,
        &[&["device", "list", "--token", &alice_token][..], &g].concat(),
    );
    assert_eq!(dead.status.code(), Some(3), "{}", text(&dead));
    let login = json(ok(icnctl(
        alice,
        &["auth", "login", "--gateway", &gateway, "--output", "json"],
    )));
    assert_eq!(login["did"], alice_did.as_str());
    assert_eq!(login["device"], new_key.as_str());
    assert!(
        login["scopes"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "gov:write")),
        "{login}"
    );
    let devices = json(ok(icnctl(alice, &[&["device", "list"][..], &g].concat())));
    let row = |key: &str| {
        devices["items"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["device"] == key))
            .cloned()
            .expect("listed")
    };
    assert_eq!(row(&alice_did)["revoked_reason"], "retired");
    assert_eq!(row(&new_key)["status"], "live");

    // The operator rotates the node's identity: icnd restarts on it.
    let rotated = json(ok(icnctl(operator, &[&["id", "rotate"][..], &g].concat())));
    let node_key = rotated["new_key"].as_str().expect("new key").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = icnctl(operator, &["status"]);
        if out.status.success() && json(text(&out))["did"] == node_key.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "icnd did not restart on the new key"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while curl(&["-sf", &node.url("/v1/health")]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "the gateway did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its co-op is there, and it still administers it with the new key.
    let token = ok(icnctl(operator, &["auth", "login", "--gateway", &gateway]))
        .trim()
        .to_owned();
    let members = curl(&[
        "-sf",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &node.url("/v1/coops/garden/members"),
    ]);
    assert!(text(&members).contains(&alice_did), "{}", text(&members));
    let bob_dir = tempfile::tempdir().expect("dir");
    let bob_did = ok(icnctl(bob_dir.path(), &["id", "init"]))
        .trim()
        .to_owned();
    let body = format!(r#"{{"did": "{bob_did}"}}"#);
    assert_eq!(
        post(&node, &token, "/v1/coops/garden/members", &body),
        "201"
    );
    stop(icnd);
}

/// Issue 14 §1 and §6: a co-op configured only through `icnctl` against a
/// real `icnd`: settings, a unit, a rate, the treasury domain, a relay, a
/// freeze; refusals exit with status 3.
#[test]
fn coop_settings_through_icnctl() {
    let node_dir = tempfile::tempdir().expect("dir");
    let node = Node {
        dir: node_dir.path().to_owned(),
        port: free_port(),
        metrics: free_port(),
    };
    let icnd = node.start();
    let gateway = node.url("");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (admin, bob) = (dirs[0].path(), dirs[1].path());
    ok(icnctl(admin, &["id", "init"]));
    let bob_did = ok(icnctl(bob, &["id", "init"])).trim().to_owned();
    let token = ok(icnctl(admin, &["auth", "login", "--gateway", &gateway]))
        .trim()
        .to_owned();
    for (path, body) in [
        ("/v1/coops", r#"{"id": "garden"}"#.to_owned()),
        (
            "/v1/coops/garden/members",
            format!(r#"{{"did": "{bob_did}"}}"#),
        ),
        (
            "/v1/gov/domains",
            r#"{"id": "garden-board", "coop_id": "garden"}"#.to_owned(),
        ),
    ] {
        assert_eq!(post(&node, &token, path, &body), "201", "{path}");
    }
    let g = ["--gateway", gateway.as_str()];
    let json = |out: String| -> serde_json::Value { serde_json::from_str(&out).expect("JSON") };
    let run = |dir: &Path, args: &[&str]| icnctl(dir, &[args, &g[..]].concat());

    let set = json(ok(run(
        admin,
        &[
            "coop",
            "set",
            "garden",
            "--default-credit-limit",
            "20",
            "--treasury-domain",
            "garden-board",
        ],
    )));
    assert_eq!(set["policy"]["default_credit_limit"], 20);
    assert!(set["treasury_domain"].is_string(), "{set}");
    let refused = run(bob, &["coop", "set", "garden", "--name", "Mine"]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    ok(run(
        admin,
        &["coop", "unit", "garden", "eur", "--scale", "2"],
    ));
    let rated = json(ok(run(
        admin,
        &["coop", "rate", "garden", "hours", "eur", "2500", "1"],
    )));
    assert_eq!(rated["rates"][0]["num"], 2500);
    let shown = json(ok(run(bob, &["coop", "show", "garden"])));
    assert_eq!(shown["policy"]["units"]["eur"]["scale"], 2);
    // Credit limits per unit: the unit's, then bob's own in eur.
    let shown = json(ok(run(
        admin,
        &[
            "coop",
            "unit",
            "garden",
            "eur",
            "--scale",
            "2",
            "--credit-limit",
            "700",
        ],
    )));
    assert_eq!(shown["policy"]["units"]["eur"]["credit_limit"], 700);
    let bob_row = json(ok(run(
        admin,
        &[
            "member", "limit", "garden", &bob_did, "900", "--unit", "eur",
        ],
    )));
    assert_eq!(bob_row["credit_limits"]["eur"], 900, "{bob_row}");
    let refused = run(bob, &["member", "limit", "garden", &bob_did, "5000"]);
    assert_eq!(refused.status.code(), Some(3));
    // Trusted contacts: named by an admin, listed for members.
    let named = json(ok(run(
        admin,
        &["coop", "trusted", "garden", "--add", &bob_did],
    )));
    assert_eq!(named["items"], serde_json::json!([bob_did]));
    assert_eq!(json(ok(run(bob, &["coop", "trusted", "garden"]))), named);
    let refused = run(bob, &["coop", "trusted", "garden", "--remove", &bob_did]);
    assert_eq!(refused.status.code(), Some(3));
    ok(run(
        admin,
        &["coop", "trusted", "garden", "--remove", &bob_did],
    ));
    // A tally module, uploaded by content: the answer is its hash.
    let wasm = admin.join("tally.wasm");
    let module = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    std::fs::write(&wasm, module).expect("write the module");
    let uploaded = json(ok(run(
        admin,
        &["gov", "module", wasm.to_str().expect("utf-8")],
    )));
    assert_eq!(
        uploaded["hash"],
        hex::encode(blake3::hash(&module).as_bytes())
    );
    std::fs::write(&wasm, b"not wasm").expect("write");
    let refused = run(admin, &["gov", "module", wasm.to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(3));

    let relay = "did:icn:6MkqNiZbHEEp7MMwqz8P9ZyXPMhRUXNTbjwYQy6uWkaS";
    let relays = json(ok(run(
        admin,
        &["relay", "add", "garden", relay, "127.0.0.1:7999"],
    )));
    assert_eq!(relays["items"][0]["addr"], "127.0.0.1:7999");
    assert_eq!(json(ok(run(bob, &["relay", "list", "garden"]))), relays);
    let refused = run(bob, &["relay", "remove", "garden", relay]);
    assert_eq!(refused.status.code(), Some(3));
    assert_eq!(
        json(ok(run(admin, &["relay", "remove", "garden", relay]))),
        serde_json::json!({"items": [], "next_cursor": null})
    );

    let frozen = json(ok(run(admin, &["ledger", "freeze", "garden", &bob_did])));
    assert_eq!(frozen["frozen"], true);
    let refused = run(bob, &["ledger", "freeze", "garden", &bob_did, "--unfreeze"]);
    assert_eq!(refused.status.code(), Some(3));
    ok(run(
        admin,
        &["ledger", "freeze", "garden", &bob_did, "--unfreeze"],
    ));

    // Ledger commands: a retry-safe payment, its entry, history, the
    // trial balance.
    let pay = [
        "ledger",
        "settle",
        "garden",
        bob_did.as_str(),
        "3",
        "hours",
        "--memo",
        "seeds",
        "--idempotency-key",
        "seeds-1",
    ];
    let first = json(ok(run(admin, &pay)));
    assert_eq!(json(ok(run(admin, &pay))), first, "the retry pays once");
    let id = first["entry_id"].as_str().expect("entry id");
    let entry = json(ok(run(bob, &["ledger", "entry", "garden", id])));
    assert_eq!(entry["status"]["status"], "applied");
    let history = json(ok(run(bob, &["ledger", "history", "garden"])));
    assert_eq!(history["items"].as_array().map(Vec::len), Some(1));
    let tb = json(ok(run(bob, &["ledger", "trial-balance", "garden"])));
    assert_eq!(tb["totals"]["hours"], "0");

    // Members: add, role, remove; refused for a non-admin.
    let carol_dir = tempfile::tempdir().expect("dir");
    let carol = ok(icnctl(carol_dir.path(), &["id", "init"]))
        .trim()
        .to_owned();
    let refused = run(bob, &["member", "add", "garden", &carol]);
    assert_eq!(refused.status.code(), Some(3));
    ok(run(admin, &["member", "add", "garden", &carol]));
    let promoted = json(ok(run(
        admin,
        &["member", "role", "garden", &carol, "admin"],
    )));
    assert_eq!(promoted["role"], "admin");
    let removed = json(ok(run(admin, &["member", "remove", "garden", &carol])));
    assert_eq!(removed["status"], "removed");
    let listed = json(ok(run(bob, &["member", "list", "garden"])));
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(3));

    // Onboarding: invite, accept, status, approve.
    let dave_dir = tempfile::tempdir().expect("dir");
    let dave = dave_dir.path();
    let dave_did = ok(icnctl(dave, &["id", "init"])).trim().to_owned();
    let invite = json(ok(run(
        admin,
        &["invite", "create", "garden", "--credit-limit", "5"],
    )));
    let code = invite["code"].as_str().expect("code").to_owned();
    let applied = json(ok(run(dave, &["invite", "accept", "garden", &code])));
    assert_eq!(applied["state"], "pending");
    // Accepting again is the same application (a retry); another
    // applicant's use of the code is refused.
    assert_eq!(
        json(ok(run(dave, &["invite", "accept", "garden", &code]))),
        applied
    );
    let eve_dir = tempfile::tempdir().expect("dir");
    ok(icnctl(eve_dir.path(), &["id", "init"]));
    let again = run(eve_dir.path(), &["invite", "accept", "garden", &code]);
    assert_eq!(again.status.code(), Some(3), "a code works once");
    let status = json(ok(run(dave, &["invite", "status", "garden"])));
    assert_eq!(status["state"], "pending");
    let approved = json(ok(run(admin, &["invite", "approve", "garden", &dave_did])));
    assert_eq!(approved["state"], "approved");
    let listed = json(ok(run(dave, &["member", "list", "garden"])));
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(4));

    // The API directory's `auth token --coop`: a token for a co-op you read.
    let token = ok(icnctl(
        dave,
        &["auth", "token", "--coop", "garden", "--gateway", &gateway],
    ));
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let stranger = tempfile::tempdir().expect("dir");
    ok(icnctl(stranger.path(), &["id", "init"]));
    let refused = icnctl(
        stranger.path(),
        &["auth", "token", "--coop", "garden", "--gateway", &gateway],
    );
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    stop(icnd);
}
