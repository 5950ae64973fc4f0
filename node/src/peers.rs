//! Peers saved by `icnctl network dial --save`: `<data-dir>/peers.json`,
//! `{"peers": ["icn://<did>@<ip>:<port>", …]}`, written atomically. `icnd`
//! dials them at every start, as it dials `bootstrap_peers`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::PeerAddr;

/// The file, in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("peers.json")
}

/// The saved peers; none when the file is absent.
pub fn load(data_dir: &Path) -> Result<Vec<PeerAddr>> {
    let file = path(data_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let saved: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    saved["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            p.as_str()
                .unwrap_or_default()
                .parse::<PeerAddr>()
                .with_context(|| format!("in {}", file.display()))
        })
        .collect()
}

/// Saves `peer` (replacing the address saved for its DID, if any); returns
/// whether the file changed.
pub fn save(data_dir: &Path, peer: &PeerAddr) -> Result<bool> {
    let mut peers = load(data_dir)?;
    if peers.contains(peer) {
        return Ok(false);
    }
    peers.retain(|p| p.did != peer.did);
    peers.push(peer.clone());
    let text: Vec<String> = peers
        .iter()
        .map(|p| format!("icn://{}@{}", p.did, p.addr))
        .collect();
    let json = serde_json::to_vec_pretty(&serde_json::json!({ "peers": text }))?;
    icn_engine::keystore::write_atomically(&path(data_dir), &json)
        .with_context(|| format!("writing {}", path(data_dir).display()))?;
    Ok(true)
}
