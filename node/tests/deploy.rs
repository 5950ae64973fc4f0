//! `deploy/`: the example configurations load as icnd reads them, start a
//! real icnd (the relay's serves /ready with its gateway off), and the
//! systemd unit passes `systemd-analyze verify` where systemd is installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use icn_node::config::Config;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn the_example_configurations_load() {
    let relay = Config::load(&deploy("relay.toml")).expect("relay.toml");
    assert_eq!(relay.gateway.enabled, Some(false));
    assert_eq!(relay.observability.health_port, Some(8081));
    let member = Config::load(&deploy("member.toml")).expect("member.toml");
    assert_eq!(member.network.bootstrap_peers.len(), 1);
    assert_eq!(
        member.gateway.bind_addr.map(|a| a.ip().is_loopback()),
        Some(true),
        "a member's gateway listens on loopback"
    );
    let scrape = std::fs::read_to_string(deploy("prometheus.yml")).expect("prometheus.yml");
    assert!(scrape.contains("icnd:9100"));
}

/// The relay's configuration, on this machine's free ports, runs: /ready
/// answers on the health port with the gateway off.
#[test]
fn the_relay_configuration_runs_a_relay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (health, metrics) = (common::free_port(), common::free_port());
    let text = std::fs::read_to_string(deploy("relay.toml"))
        .expect("relay.toml")
        .replace(
            "/var/lib/icn",
            &dir.path().join("data").display().to_string(),
        )
        .replace(
            "0.0.0.0:7777",
            &format!("127.0.0.1:{}", common::free_udp_port()),
        )
        .replace("0.0.0.0:8080", "127.0.0.1:8080")
        .replace("metrics_port = 9100", &format!("metrics_port = {metrics}"))
        .replace("health_port = 8081", &format!("health_port = {health}"));
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, text).expect("write");
    let mut icnd = Command::new(env!("CARGO_BIN_EXE_icnd"))
        .arg("--config")
        .arg(&config)
        .env("ICN_KEYSTORE_PASSPHRASE", "deploy-test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("icnd starts");
    let url = format!("http://127.0.0.1:{health}/ready");
    let mut answer = String::new();
    for _ in 0..300 {
        let out = Command::new("curl")
            .args(["-s", &url])
            .output()
            .expect("curl");
        answer = String::from_utf8_lossy(&out.stdout).into_owned();
        if answer.contains("\"ready\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let gateway = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:8080/v1/health",
        ])
        .output()
        .expect("curl");
    let _ = icnd.kill();
    let _ = icnd.wait();
    assert!(
        answer.contains("\"status\":\"ready\""),
        "/ready answered {answer}"
    );
    assert_ne!(
        String::from_utf8_lossy(&gateway.stdout),
        "200",
        "a relay serves no gateway"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    };
    assert!(out.status.success());
    // The unit names /usr/local/bin/icnd, which this machine may lack:
    // verify a copy that runs this build's icnd.
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = std::fs::read_to_string(deploy("icnd.service"))
        .expect("icnd.service")
        .replace("/usr/local/bin/icnd", env!("CARGO_BIN_EXE_icnd"));
    let path = dir.path().join("icnd.service");
    std::fs::write(&path, unit).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about units this one does not own (a container without a
    // running systemd) are not about the unit.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("icnd.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
