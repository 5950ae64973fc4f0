//! `docs/operations.md`, "Set up a co-op", run as written: three real
//! `icnd` processes (a relay and two members' nodes), and every `sh` block
//! of that section after the first (which starts the nodes, done here on
//! free ports) run in order by bash, with only the addresses changed.
//! The co-op is created and configured through `icnctl` alone; a member
//! joins by invite; a budget executes and is traced; a relay registered
//! mid-run catches up; the two members' nodes never meet.

mod common;

use common::{free_port, free_udp_port};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASS: &str = "correct horse battery staple";

struct Node {
    dir: PathBuf,
    gateway: String,
    listen: String,
    child: Child,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let (port, listen) = (free_port(), format!("127.0.0.1:{}", free_udp_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_icnd"))
            .args(["--data-dir", dir.to_str().expect("utf-8")])
            .args(["--gateway-bind", &format!("127.0.0.1:{port}")])
            .args(["--listen-addr", &listen])
            .args(["--metrics-port", &free_port().to_string()])
            .env("ICN_KEYSTORE_PASSPHRASE", PASS)
            .env_remove("ICN_GATEWAY_JWT_SECRET")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn icnd");
        let gateway = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = Command::new("curl")
                .args(["-sf", "--max-time", "5", &format!("{gateway}/v1/health")])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "icnd did not answer /v1/health");
            std::thread::sleep(Duration::from_millis(50));
        }
        Node {
            dir: dir.to_owned(),
            gateway,
            listen,
            child,
        }
    }

    /// Stops the node (SIGTERM) and returns what it logged.
    fn stop(self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let out = self.child.wait_with_output().expect("icnd exits");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// The `sh` blocks of the section `heading` of a markdown file.
fn sh_blocks(markdown: &str, heading: &str) -> Vec<String> {
    let start = markdown
        .find(heading)
        .unwrap_or_else(|| panic!("{heading:?} is in the file"));
    let rest = &markdown[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

#[test]
fn the_set_up_a_co_op_walkthrough_runs_as_written() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .expect("docs/operations.md");
    let blocks = sh_blocks(&doc, "## Set up a co-op");
    assert!(blocks.len() >= 6, "the walkthrough's steps: {blocks:?}");
    let script = blocks[1..].join("\n");

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let nodes: Vec<Node> = dirs.iter().map(|d| Node::start(d.path())).collect();
    let [relay, alice, bob] = [&nodes[0], &nodes[1], &nodes[2]];
    let bin = Path::new(env!("CARGO_BIN_EXE_icnctl"))
        .parent()
        .expect("the binaries' directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    // -x: a failing run shows each command it ran.
    let out: Output = Command::new("bash")
        .args(["-x", "-c"])
        .arg(&script)
        .env("PATH", path)
        .env("ICN_KEYSTORE_PASSPHRASE", PASS)
        .env_remove("ICN_TOKEN")
        .env_remove("ICN_GATEWAY")
        .env("RELAY", &relay.dir)
        .env("ALICE", &alice.dir)
        .env("BOB", &bob.dir)
        .env("RELAY_ADDR", &relay.listen)
        .env("RELAY_GW", &relay.gateway)
        .env("ALICE_GW", &alice.gateway)
        .env("BOB_GW", &bob.gateway)
        .output()
        .expect("run bash");
    let took = started.elapsed();
    let logs: Vec<String> = nodes.into_iter().map(Node::stop).collect();
    assert!(
        out.status.success(),
        "the walkthrough failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}\n--- relay\n{}\n--- alice\n{}\n--- bob\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        logs[0],
        logs[1],
        logs[2]
    );
    eprintln!("the walkthrough ran in {took:?}");
}
