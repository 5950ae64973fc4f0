//! `icnd`'s configuration file (TOML), as the deployment guide shows it.
//!
//! ```toml
//! data_dir = "/var/lib/icn"
//!
//! [network]
//! listen_addr = "0.0.0.0:7777"
//! bootstrap_peers = ["icn://did:icn:…@192.168.1.100:7777"]
//! relay_urls = []            # iroh relay servers; empty: direct only
//! mdns_enabled = false       # find peers on the local network by mDNS
//!
//! [gateway]
//! enabled = true
//! bind_addr = "127.0.0.1:8080"
//! cors_origins = []          # origins browsers may call from; ["*"] for any
//! token_ttl_seconds = 86400  # how long a token (and its delegation) lasts
//! rate_burst = 100           # requests per DID at once …
//! rate_per_second = 10       # … then per second
//! body_limit_bytes = 1048576
//!
//! [observability]
//! log_level = "info"
//! log_format = "text"        # or "json": one object per line
//! metrics_port = 9100        # Prometheus, on the gateway's IP; 0: any free port
//! health_port = 8081         # /health and /ready (also on the metrics port)
//! ```
//!
//! Every field is optional; a flag given on the command line wins over the
//! file. Keys the guide mentions that this node does not use are accepted
//! and ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow};
use icn_schemas::Did;
use serde::Deserialize;

/// Default sync address: every interface, the guide's port.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:7777";

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the identity and the store live.
    pub data_dir: Option<PathBuf>,
    /// Sync.
    pub network: Network,
    /// The HTTP gateway.
    pub gateway: Gateway,
    /// Logs and metrics.
    pub observability: Observability,
}

/// `[network]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Network {
    /// Address the sync endpoint binds (UDP, QUIC).
    pub listen_addr: Option<SocketAddr>,
    /// Peers to keep a session with, as `icn://<did>@<ip>:<port>`.
    pub bootstrap_peers: Vec<String>,
    /// iroh relay servers, for peers behind NATs.
    pub relay_urls: Vec<String>,
    /// Find peers on the local network by mDNS, dial those that share a
    /// co-op, and dial by DID alone (default: no).
    pub mdns_enabled: bool,
}

/// `[gateway]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Gateway {
    /// Whether to serve the gateway (default: yes).
    pub enabled: Option<bool>,
    /// Address it listens on.
    pub bind_addr: Option<SocketAddr>,
    /// Origins browsers may call the gateway from; `*` for any.
    pub cors_origins: Vec<String>,
    /// How long a token lasts, seconds.
    pub token_ttl_seconds: Option<u64>,
    /// Requests a DID may make at once.
    pub rate_burst: Option<u32>,
    /// Requests per second a DID may make after its burst.
    pub rate_per_second: Option<u32>,
    /// Largest request body, bytes.
    pub body_limit_bytes: Option<usize>,
}

/// `[observability]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Observability {
    /// Log level, as `--log-level`.
    pub log_level: Option<String>,
    /// `text` or `json`, as `--log-format`.
    pub log_format: Option<crate::logging::LogFormat>,
    /// Port of `/health` and `/ready`, on the gateway's IP, as
    /// `--health-port` (they are on the metrics port too).
    pub health_port: Option<u16>,
    /// Port of the Prometheus endpoint (`/metrics`), on the gateway's IP.
    pub metrics_port: Option<u16>,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration file {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("in the configuration file {}", path.display()))?;
        for peer in &config.network.bootstrap_peers {
            PeerAddr::from_str(peer)
                .with_context(|| format!("in the configuration file {}", path.display()))?;
        }
        Ok(config)
    }
}

/// A peer to dial: `icn://<did>@<ip>:<port>`, or `<did> <ip>:<port>` as
/// `icnctl network dial` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// Its DID, which the transport authenticates.
    pub did: Did,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FromStr for PeerAddr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<PeerAddr> {
        let rest = s
            .strip_prefix("icn://")
            .ok_or_else(|| anyhow!("a peer is icn://<did>@<ip>:<port>, not {s:?}"))?;
        let (did, addr) = rest
            .rsplit_once('@')
            .ok_or_else(|| anyhow!("a peer is icn://<did>@<ip>:<port>, not {s:?}"))?;
        Ok(PeerAddr {
            did: Did::parse_valid(did).map_err(|e| anyhow!("peer {s:?}: {e}"))?,
            addr: addr
                .parse()
                .map_err(|e| anyhow!("peer {s:?}: the address {addr:?}: {e}"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_example_parses() {
        let key = icn_engine::Keypair::from_secret(&[7; 32]).did();
        let text = format!(
            r#"
data_dir = "/var/lib/icn"
[network]
listen_addr = "0.0.0.0:7777"
mdns_enabled = true
bootstrap_peers = ["icn://{key}@192.168.1.100:7777"]
[observability]
metrics_port = 9100
health_port = 8080
log_level = "info"
log_format = "json"
"#
        );
        let config: Config = toml::from_str(&text).expect("parses");
        assert!(config.network.mdns_enabled);
        assert_eq!(
            config.observability.log_format,
            Some(crate::logging::LogFormat::Json)
        );
        assert_eq!(
            config.network.listen_addr,
            Some("0.0.0.0:7777".parse().expect("addr"))
        );
        let peer: PeerAddr = config.network.bootstrap_peers[0].parse().expect("peer");
        assert_eq!(peer.did, key);
        assert_eq!(peer.addr, "192.168.1.100:7777".parse().expect("addr"));
        assert!("icn://nobody@1.2.3.4:5".parse::<PeerAddr>().is_err());
        assert!(format!("icn://{key}@nowhere").parse::<PeerAddr>().is_err());
        assert!(format!("{key}@1.2.3.4:5").parse::<PeerAddr>().is_err());
    }
}
