//! `icnd` and `icnctl` as an operator runs them: real processes, a temporary
//! data directory, a free port on loopback.

mod common;

use common::{free_port, free_udp_port};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASS: &str = "correct horse battery staple";

fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn start_icnd(dir: &std::path::Path, port: u16, pass: &str) -> Child {
    // Tests run several nodes at once: none takes the default sync port.
    start_icnd_on(dir, port, "127.0.0.1:0", pass)
}

fn start_icnd_on(dir: &std::path::Path, port: u16, listen: &str, pass: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_icnd"))
        .args(["--data-dir", dir.to_str().expect("utf-8 path")])
        .args(["--gateway-bind", &format!("127.0.0.1:{port}")])
        .args(["--listen-addr", listen])
        .args(["--metrics-port", "0"])
        .env("ICN_KEYSTORE_PASSPHRASE", pass)
        .env_remove("ICN_GATEWAY_JWT_SECRET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn icnd")
}

fn wait_healthy(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = get(port, "/v1/health") {
            return r;
        }
        assert!(Instant::now() < deadline, "icnd did not answer /v1/health");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: Child) -> Output {
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait_with_output().expect("icnd exits")
}

#[test]
fn icnd_starts_on_defaults_serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let child = start_icnd(dir.path(), port, PASS);
    let response = wait_healthy(port);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"status":"ok"}"#), "{response}");
    let out = terminate(child);
    assert!(out.status.success(), "icnd exit status {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("created a new node identity"), "{log}");
    assert!(dir.path().join("identity.age").exists());

    // Restarted, it unlocks the same identity.
    let child = start_icnd(dir.path(), port, PASS);
    wait_healthy(port);
    let log = String::from_utf8_lossy(&terminate(child).stdout).into_owned();
    assert!(log.contains("unlocked the node identity"), "{log}");

    // With the wrong passphrase it refuses to start, and says why.
    let out = start_icnd(dir.path(), port, "wrong")
        .wait_with_output()
        .expect("exits");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
}

#[test]
fn icnctl_id_init_show_sign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let icnctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_icnctl"))
            .args(["--data-dir", dir.path().to_str().expect("utf-8")])
            .args(args)
            .env("ICN_KEYSTORE_PASSPHRASE", PASS)
            .output()
            .expect("run icnctl")
    };
    let init = icnctl(&["id", "init"]);
    assert!(init.status.success());
    let did = String::from_utf8(init.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let did: icn_schemas::Did = did.parse().expect("init prints a DID");
    let show = icnctl(&["id", "show"]);
    assert_eq!(
        String::from_utf8_lossy(&show.stdout).trim(),
        did.to_string()
    );
    assert!(
        !icnctl(&["id", "init"]).status.success(),
        "init refuses to overwrite"
    );

    let sig = icnctl(&["id", "sign", "challenge-123"]);
    let sig = hex::decode(String::from_utf8_lossy(&sig.stdout).trim()).expect("hex");
    let sig: [u8; 64] = sig.try_into().expect("64 bytes");
    icn_engine::identity::verify(&did, b"challenge-123", &sig).expect("a valid signature");
    let b64 = icnctl(&["id", "sign", "challenge-123", "--base64"]);
    assert!(!String::from_utf8_lossy(&b64.stdout).trim().ends_with('='));
}

fn icnctl(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icnctl"))
        .args(["--data-dir", dir.to_str().expect("utf-8")])
        .args(args)
        .env("ICN_KEYSTORE_PASSPHRASE", PASS)
        .output()
        .expect("run icnctl")
}

fn status(dir: &std::path::Path) -> serde_json::Value {
    let out = icnctl(dir, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

#[test]
fn icnctl_dials_a_peer_through_the_running_icnd() {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (pa, pb) = (free_port(), free_port());
    let ub = free_udp_port();
    let node_a = start_icnd(a.path(), pa, PASS);
    let node_b = start_icnd_on(b.path(), pb, &format!("127.0.0.1:{ub}"), PASS);
    wait_healthy(pa);
    wait_healthy(pb);
    let b_did = status(b.path())["did"].as_str().expect("did").to_owned();

    let dial = icnctl(
        a.path(),
        &[
            "network",
            "dial",
            &b_did,
            &format!("127.0.0.1:{ub}"),
            "--save",
        ],
    );
    assert!(
        dial.status.success(),
        "{}",
        String::from_utf8_lossy(&dial.stderr)
    );
    let said = String::from_utf8_lossy(&dial.stdout).into_owned();
    assert!(
        said.contains("dialing") && said.contains("saved in"),
        "{said}"
    );
    let connected = |dir: &std::path::Path| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !status(dir)["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .any(|p| p.as_str() == Some(b_did.as_str()))
        {
            assert!(Instant::now() < deadline, "A never connected to B");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    connected(a.path());
    // Saved: after a restart, A keeps the session with B undialled.
    terminate(node_a);
    let node_a = start_icnd(a.path(), pa, PASS);
    wait_healthy(pa);
    connected(a.path());
    let saved = std::fs::read_to_string(a.path().join("peers.json")).expect("peers.json");
    assert!(saved.contains(&b_did), "{saved}");
    // Bad input: a clear error, a failing exit code.
    let bad = icnctl(
        a.path(),
        &["network", "dial", "did:icn:nope", "127.0.0.1:1"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did:icn:nope"));
    let bad = icnctl(
        a.path(),
        &["network", "dial", "did:icn:nope", "127.0.0.1:1", "--save"],
    );
    assert!(!bad.status.success());
    assert_eq!(
        std::fs::read_to_string(a.path().join("peers.json")).expect("peers.json"),
        saved,
        "nothing bad is saved"
    );
    // By DID alone, with no discovery to find the address: refused, and
    // says what would work.
    let by_did = icnctl(a.path(), &["network", "dial", &b_did]);
    assert!(!by_did.status.success());
    let said = String::from_utf8_lossy(&by_did.stderr);
    assert!(
        said.contains("no address for") && said.contains("mdns_enabled"),
        "{said}"
    );
    terminate(node_a);
    terminate(node_b);
    assert!(
        !a.path().join("icnd.sock").exists(),
        "the socket is removed on exit"
    );

    // No node running: says so.
    let none = icnctl(a.path(), &["status"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no icnd is running"));
}

/// `--log-format json` writes one JSON object per line, and `kill -USR1`
/// switches the level to debug and back while the node runs.
#[test]
fn json_logs_and_the_level_switches_on_sigusr1() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_icnd"))
        .args(["--data-dir", dir.path().to_str().expect("utf-8 path")])
        .args(["--gateway-bind", &format!("127.0.0.1:{port}")])
        .args(["--listen-addr", "127.0.0.1:0", "--metrics-port", "0"])
        .args(["--log-format", "json", "--log-level", "info"])
        .env("ICN_KEYSTORE_PASSPHRASE", PASS)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn icnd");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_healthy(port);
    // Every line is a JSON object; the switch says the filter now in force.
    let until_filter = |filter: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(wait)
                .unwrap_or_else(|_| panic!("the log never said the filter is {filter}"));
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(
                event["timestamp"].is_string() && event["level"].is_string(),
                "{line}"
            );
            if event["message"] == "SIGUSR1: log level changed" && event["filter"] == filter {
                return;
            }
        }
    };
    let usr1 = || {
        let status = Command::new("kill")
            .args(["-USR1", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    usr1();
    until_filter("debug");
    usr1();
    until_filter("info");
    let out = terminate(child);
    assert!(out.status.success());
    drop(reader);
}

/// `--health-port` serves `/health` and `/ready` with the gateway off (as
/// relays run); `/ready` is 503 while no configured bootstrap peer is
/// reached, and both are on the metrics port too.
#[test]
fn health_and_readiness_with_the_gateway_off() {
    let status_of = |port: u16, path: &str| -> (String, serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(r) = get(port, path) {
                let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
                let status = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let json = serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null);
                return (status, json);
            }
            assert!(
                Instant::now() < deadline,
                "nothing answered {path} on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let start = |dir: &std::path::Path, config: Option<&std::path::Path>| {
        let (health, metrics) = (free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_icnd"));
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .args(["--data-dir", dir.to_str().expect("utf-8 path")])
            .args(["--gateway-enable", "false"])
            .args(["--listen-addr", "127.0.0.1:0"])
            .args(["--health-port", &health.to_string()])
            .args(["--metrics-port", &metrics.to_string()])
            .env("ICN_KEYSTORE_PASSPHRASE", PASS)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn icnd");
        (child, health, metrics)
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let (child, health, metrics) = start(dir.path(), None);
    let (status, body) = status_of(health, "/health");
    assert_eq!(
        (status.as_str(), &body["status"]),
        ("200", &serde_json::json!("ok"))
    );
    let (status, body) = status_of(health, "/ready");
    assert_eq!(status, "200", "{body}");
    assert_eq!(body["sync_bound"], true);
    assert_eq!(status_of(metrics, "/ready").0, "200");
    terminate(child);

    // A bootstrap peer nobody answers for: not ready, and it says why.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("icnd.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nbootstrap_peers = [\"icn://did:icn:6MkqNiZbHEEp7MMwqz8P9ZyXPMhRUXNTbjwYQy6uWkaS@127.0.0.1:{}\"]\n",
            free_udp_port()
        ),
    )
    .expect("config");
    let (child, health, _) = start(dir.path(), Some(&config));
    let (status, body) = status_of(health, "/ready");
    assert_eq!(status, "503", "{body}");
    assert_eq!(body["bootstrap_peers"], 1);
    assert_eq!(body["bootstrap_peers_connected"], 0);
    assert_eq!(status_of(health, "/health").0, "200");
    terminate(child);
}

/// `--listen-addr 127.0.0.1:P` binds that address and nothing else, and a
/// second node on the same port stops with a message that says why.
#[test]
fn sync_binds_only_its_address_and_says_when_it_is_taken() {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let port = free_port();
    let first = start_icnd_on(a.path(), port, &listen, PASS);
    wait_healthy(port);
    let status = Command::new(env!("CARGO_BIN_EXE_icnctl"))
        .args(["--data-dir", a.path().to_str().expect("utf-8"), "status"])
        .env("ICN_KEYSTORE_PASSPHRASE", PASS)
        .output()
        .expect("icnctl status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON status");
    assert_eq!(status["sync_addrs"], serde_json::json!([listen]));

    let second = start_icnd_on(b.path(), free_port(), &listen, PASS)
        .wait_with_output()
        .expect("the second icnd exits");
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains(&format!("address {listen} is already in use")),
        "{said}"
    );
    terminate(first);
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, icnd exports its spans over
/// OTLP (HTTP, protobuf) under `OTEL_SERVICE_NAME`: a request's span names
/// its route and status, and commits have spans. The receiver is a small
/// HTTP server of this test's own, decoding what it is sent.
#[test]
fn traces_go_to_the_otlp_endpoint() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;

    // `--help` tells the operator how.
    let help = Command::new(env!("CARGO_BIN_EXE_icnd"))
        .arg("--help")
        .output()
        .expect("icnd --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && help.contains("OTEL_SERVICE_NAME"),
        "{help}"
    );

    let receiver = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
    let endpoint = format!("http://{}", receiver.local_addr().expect("addr"));
    let (tx, exports) = std::sync::mpsc::channel::<(String, Vec<u8>)>();
    std::thread::spawn(move || {
        for stream in receiver.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((path, body)) = read_post(&mut stream) else {
                continue;
            };
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
            );
            if tx.send((path, body)).is_err() {
                break;
            }
        }
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_icnd"))
        .args(["--data-dir", dir.path().to_str().expect("utf-8 path")])
        .args(["--gateway-bind", &format!("127.0.0.1:{port}")])
        .args(["--listen-addr", "127.0.0.1:0", "--metrics-port", "0"])
        .env("ICN_KEYSTORE_PASSPHRASE", PASS)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "icn-trace-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn icnd");
    wait_healthy(port);
    get(port, "/v1/health");

    let mut spans: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut services = std::collections::BTreeSet::new();
    let mut receive = |spans: &mut Vec<(String, Vec<(String, String)>)>, deadline: Instant| {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (path, body) = exports
            .recv_timeout(wait)
            .unwrap_or_else(|_| panic!("the spans awaited never came; so far: {spans:?}"));
        assert_eq!(path, "/v1/traces");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP request");
        for resource in request.resource_spans {
            for kv in resource.resource.map(|r| r.attributes).unwrap_or_default() {
                if kv.key == "service.name"
                    && let Some(Value::StringValue(s)) = kv.value.and_then(|v| v.value)
                {
                    services.insert(s);
                }
            }
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                let attrs = span
                    .attributes
                    .into_iter()
                    .map(|kv| {
                        let value = match kv.value.and_then(|v| v.value) {
                            Some(Value::StringValue(s)) => s,
                            Some(Value::IntValue(i)) => i.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key, value)
                    })
                    .collect();
                spans.push((span.name, attrs));
            }
        }
    };
    // The request's span, exported while the node runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !spans.iter().any(|(name, attrs)| {
        name == "GET /v1/health"
            && attrs.contains(&("http.route".into(), "/v1/health".into()))
            && attrs.contains(&("http.response.status_code".into(), "200".into()))
    }) {
        receive(&mut spans, deadline);
    }
    // The final flush's commit, exported as the node stops.
    let out = terminate(child);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !spans.iter().any(|(name, _)| name == "storage.commit") {
        receive(&mut spans, deadline);
    }
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["icn-trace-test"],
        "the service name"
    );
}

/// One HTTP/1.1 POST read from `stream`: its path and body.
fn read_post(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((path, body))
}
