//! Schemathesis against a real `icnd`: every operation of the OpenAPI
//! document, with generated valid and invalid requests, checked for server
//! errors, undocumented statuses, content types, answers that break their
//! schema, valid requests refused and invalid ones accepted
//! (`tests/schemathesis/schemathesis.toml` says what is left out and why).
//!
//! The node runs on a temporary data directory with its rate limit raised;
//! a co-op with two members, a domain and a proposal give the operations
//! something to find. Schemathesis comes from `ICN_SCHEMATHESIS`, or from a
//! virtual environment under the target directory, made with pip when
//! missing (PyPI is reachable here; `.ci/run` installs Python's venv). The
//! seed is fixed (`ICN_SCHEMATHESIS_SEED` overrides it) so CI is
//! reproducible; the run is bounded by examples per operation.

mod common;

use common::{free_port, free_udp_port};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASS: &str = "correct horse battery staple";
const VERSION: &str = "4.32.5";
const SEED: &str = "20261202";

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn icnctl(dir: &Path, gateway: &str, args: &[&str]) -> String {
    ok(
        run(Command::new(env!("CARGO_BIN_EXE_icnctl"))
            .args(["--data-dir", dir.to_str().expect("utf-8")])
            .args(args)
            .env("ICN_KEYSTORE_PASSPHRASE", PASS)
            .env("ICN_GATEWAY", gateway)
            .env_remove("ICN_TOKEN")),
        &format!("icnctl {args:?}"),
    )
}

/// The `schemathesis` command: `ICN_SCHEMATHESIS`, or a venv of ours.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("ICN_SCHEMATHESIS") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("schemathesis-{VERSION}"));
    let bin = venv.join("bin/schemathesis");
    if !bin.exists() {
        ok(
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv)),
            "python3 -m venv (Debian: python3-venv; .ci/run installs it)",
        );
        ok(
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("schemathesis=={VERSION}"))),
            "pip install schemathesis",
        );
    }
    bin
}

struct Icnd(Child);

impl Drop for Icnd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn schemathesis_finds_no_failure_against_a_real_icnd() {
    let st = schemathesis();
    let data = tempfile::tempdir().expect("dir");
    let dir = data.path();
    icnctl(dir, "", &["id", "init"]);
    let config = dir.join("icnd.toml");
    std::fs::write(
        &config,
        "[gateway]\nrate_burst = 1000000\nrate_per_second = 1000000\n",
    )
    .expect("config");
    let port = free_port();
    let gateway = format!("http://127.0.0.1:{port}");
    let _icnd = Icnd(
        Command::new(env!("CARGO_BIN_EXE_icnd"))
            .arg("--config")
            .arg(&config)
            .args(["--data-dir", dir.to_str().expect("utf-8")])
            .args(["--gateway-bind", &format!("127.0.0.1:{port}")])
            .args(["--listen-addr", &format!("127.0.0.1:{}", free_udp_port())])
            .args(["--metrics-port", &free_port().to_string()])
            .env("ICN_KEYSTORE_PASSPHRASE", PASS)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn icnd"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run(Command::new("curl").args(["-sf", &format!("{gateway}/v1/health")]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "icnd did not answer /v1/health");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Something to find: a co-op with two members, a domain, a proposal.
    let admin = icnctl(dir, &gateway, &["id", "show"]);
    let bob_dir = tempfile::tempdir().expect("dir");
    let bob = icnctl(bob_dir.path(), "", &["id", "init"]);
    let stranger_dir = tempfile::tempdir().expect("dir");
    let stranger = icnctl(stranger_dir.path(), "", &["id", "init"]);
    icnctl(
        dir,
        &gateway,
        &["coop", "create", "demo", "--unit", "hours"],
    );
    icnctl(dir, &gateway, &["member", "add", "demo", &bob]);
    icnctl(
        dir,
        &gateway,
        &["gov", "create-domain", "board", "--coop", "demo"],
    );
    icnctl(
        dir,
        &gateway,
        &["gov", "propose", "board", "Plant the garden"],
    );
    let token = icnctl(dir, &gateway, &["auth", "login", "--output", "token"]);

    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/schemathesis");
    let seed = std::env::var("ICN_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    eprintln!("schemathesis seed {seed} (ICN_SCHEMATHESIS_SEED replays another)");
    let out = run(Command::new(&st)
        .arg("--config-file")
        .arg(suite.join("schemathesis.toml"))
        .args(["--no-color", "run"])
        .arg(format!("{gateway}/v1/openapi.json"))
        .args(["--seed", &seed])
        .current_dir(&suite)
        .env("PYTHONPATH", &suite)
        .env("ICN_TOKEN", token)
        .env("ICN_DIDS", [admin, bob, stranger].join(",")));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("Tested: "),
        "schemathesis ran no operation:\n{report}"
    );
}
