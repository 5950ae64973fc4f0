//! Real `icnd` processes, one per namespace, each with its own data
//! directory and identity (which is also its member's key), started,
//! killed with SIGKILL and restarted on the same data.
//!
//! Each data directory is its own small ext4 file system (a loop-mounted
//! image), so that the harness can fill one node's disk, as a full disk
//! does, without touching the others or the host.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use icn_engine::Keypair;
use icn_engine::keystore::{Keystore, Passphrase};
use icn_node::client::Client;

use crate::net::Net;

/// The port every node's sync endpoint binds, on its namespace's address.
pub const SYNC_PORT: u16 = 7777;

/// The port of every node's Prometheus endpoint.
const METRICS_PORT: u16 = 9100;

/// The passphrase of every node's keystore in a run.
const PASSPHRASE: &str = "icn-cluster passphrase";

/// One node: its identity, where it lives, and its process while it runs.
pub struct Node {
    /// Its index.
    pub index: usize,
    /// Its key: the node's identity and its member's DID key.
    pub key: Keypair,
    dir: PathBuf,
    /// The data directory: the mounted file system.
    pub(crate) data: PathBuf,
    /// Whether the disk is full now.
    pub full: bool,
    ns: String,
    base: String,
    metrics: String,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: usize,
    /// Seconds its clock runs ahead (or behind) at its next start.
    pub skew: i64,
}

/// libfaketime (Debian's `faketime`), which shifts a process's wall clock.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

impl Node {
    /// The gateway's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether its process runs.
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// A client of its gateway, logged in as `key` (its member, or another
    /// member writing through this node).
    pub async fn client(&self, key: &Keypair) -> Result<Client> {
        let mut c = Client::new(&self.base)?;
        c.login(key).await?;
        Ok(c)
    }

    /// Starts `icnd` in the node's namespace.
    pub fn start(&mut self, icnd: &Path) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("icnd.log"))
            .context("opening the node's log")?;
        let mut command = Command::new("ip");
        if self.skew != 0 {
            if !Path::new(FAKETIME).exists() {
                bail!("{FAKETIME} is missing: apt-get install faketime");
            }
            // The wall clock only: timers and timeouts keep real time.
            command
                .env("LD_PRELOAD", FAKETIME)
                .env("FAKETIME", format!("{:+}s", self.skew))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command
            .args(["netns", "exec", &self.ns])
            .arg(icnd)
            .arg("--config")
            .arg(self.dir.join("icnd.toml"))
            .env(icn_engine::keystore::PASSPHRASE_ENV, PASSPHRASE)
            .env("RUST_LOG", "info,iroh=warn,iroh_quinn=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", icnd.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs icnd itself, so this is icnd's pid.
            child.kill().context("SIGKILL")?;
            child.wait().context("reaping icnd")?;
        }
        Ok(())
    }

    /// `icn_sync_faults_total` on its `/metrics`: faults its peers made
    /// since it last started.
    pub async fn sync_faults(&self) -> Result<u64> {
        self.metric("icn_sync_faults_total").await
    }

    /// `icn_sync_sessions_total`: sync sessions since it last started.
    pub async fn sessions(&self) -> Result<u64> {
        self.metric("icn_sync_sessions_total").await
    }

    /// A metric without labels from its `/metrics`.
    async fn metric(&self, name: &str) -> Result<u64> {
        let text = reqwest::get(&self.metrics)
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("reading {}", self.metrics))?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("{} has no {name}", self.metrics))
    }

    /// [`Node::wait_up`], except on a full disk, where `icnd` waits for room
    /// before it opens its store and serves anything.
    pub async fn wait_up_unless_full(&mut self) -> Result<()> {
        if self.full {
            return Ok(());
        }
        self.wait_up(Duration::from_secs(60)).await
    }

    /// Waits until the gateway answers `/v1/health`.
    pub async fn wait_up(&mut self, within: Duration) -> Result<()> {
        let start = Instant::now();
        let http = Client::new(&self.base)?;
        loop {
            if http.call("GET", "/v1/health", None).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "node {} exited ({status}); its log: {}",
                    self.index,
                    self.dir.join("icnd.log").display()
                );
            }
            if start.elapsed() > within {
                bail!("node {} did not answer within {within:?}", self.index);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Node {
    /// Fills the node's disk: a file takes every free block, so the store's
    /// next write that needs a new block fails (ENOSPC).
    pub fn fill_disk(&mut self) -> Result<()> {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.data)
            .output()
            .context("running df")?;
        let avail: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .context("df gave no free space")?;
        // fallocate takes what it can and says ENOSPC for the rest (the
        // file's own metadata needs blocks too): the disk is full either way.
        let _ = Command::new("fallocate")
            .args(["-l", &avail.to_string()])
            .arg(self.data.join(BALLAST))
            .output()
            .context("running fallocate")?;
        self.full = true;
        Ok(())
    }

    /// How many times its log says `text` (over every start).
    pub fn log_count(&self, text: &str) -> usize {
        std::fs::read_to_string(self.dir.join("icnd.log"))
            .map(|log| log.matches(text).count())
            .unwrap_or(0)
    }

    /// Frees the node's disk.
    pub fn free_disk(&mut self) -> Result<()> {
        match std::fs::remove_file(self.data.join(BALLAST)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("removing the ballast"),
        }
        self.full = false;
        Ok(())
    }
}

/// The file that fills a node's disk.
const BALLAST: &str = "ballast";

/// The size of each node's file system.
const DISK_BYTES: &str = "256M";

/// Makes `dir` a fresh ext4 file system of its own, from an image beside it.
fn mount_disk(dir: &Path, image: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let image_s = image.display().to_string();
    crate::net::sh("truncate", &["-s", DISK_BYTES, &image_s])?;
    // No blocks reserved for root: icnd runs as root, and a full disk must
    // be full for it too.
    crate::net::sh("mkfs.ext4", &["-q", "-F", "-m", "0", &image_s])?;
    crate::net::sh(
        "mount",
        &["-o", "loop", &image_s, &dir.display().to_string()],
    )
}

/// Unmounts what [`mount_disk`] mounted under `root` (a run's work
/// directory), leftovers of a killed run included.
pub fn unmount_disks(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let data = entry.path().join("data");
        if data.is_dir() {
            let _ = Command::new("umount")
                .arg(&data)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = Command::new("umount")
            .arg(&self.data)
            .stderr(Stdio::null())
            .status();
    }
}

/// Makes `n` members' nodes' data directories under `root`, and a relay's
/// (the last of the `n + 1` returned): an identity each, and a
/// configuration that binds the node's namespace address and keeps a
/// session with every other member's node.
pub fn prepare(net: &Net, root: &Path, n: usize, seed: u64, mdns: bool) -> Result<Vec<Node>> {
    let passphrase = Passphrase::new(PASSPHRASE)?;
    // The members' nodes, then a relay: no member, started late; the
    // members learn of it when the co-op registers it.
    let keys: Vec<Keypair> = (0..=n)
        .map(|i| {
            // Fixed by the seed, so a run replays with the same DIDs.
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&seed.to_le_bytes());
            secret[8] = i as u8;
            secret[9] = 0x17;
            Keypair::from_secret(&secret)
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let dir = root.join(format!("node{i}"));
        let data = dir.join("data");
        mount_disk(&data, &dir.join("disk.img"))?;
        Keystore::in_dir(&data).create(key, &passphrase)?;
        let peers: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && *j != n && !mdns)
            // Through the relay, which delays and reorders.
            .map(|(j, k)| {
                let port = crate::relay::port(net.subnet(), i, j);
                format!("\"icn://{}@{}:{port}\"", k.did(), net.gateway_ip())
            })
            .collect();
        let config = format!(
            "data_dir = {dir:?}\n\n[network]\nlisten_addr = \"{ip}:{SYNC_PORT}\"\nbootstrap_peers = [{peers}]\nmdns_enabled = {mdns}\n\n\
             [gateway]\nbind_addr = \"{ip}:8080\"\nrate_burst = 100000\nrate_per_second = 100000\n\n\
             [observability]\nmetrics_port = {METRICS_PORT}\n",
            dir = data.display().to_string(),
            ip = net.ip(i),
            peers = peers.join(", "),
        );
        std::fs::write(dir.join("icnd.toml"), config)?;
        nodes.push(Node {
            index: i,
            key: key.clone(),
            base: format!("http://{}:8080", net.ip(i)),
            metrics: format!("http://{}:{METRICS_PORT}/metrics", net.ip(i)),
            ns: net.ns(i),
            dir,
            data,
            full: false,
            child: None,
            starts: 0,
            skew: 0,
        });
    }
    Ok(nodes)
}
