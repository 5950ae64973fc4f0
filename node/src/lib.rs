//! Shared by `icnd` and `icnctl`: the data directory and the node identity.

#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::path::Path;

pub mod client;
pub mod config;
pub mod control;
pub mod logging;
pub mod peers;
pub mod telemetry;

use anyhow::{Context, Result};
use icn_engine::{Keypair, Keystore, KeystoreError, Passphrase};

/// Default data directory, relative to where the node starts.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Unlocks the identity in `data_dir`, or creates one when there is none.
/// Returns the key pair, the member it signs for, and whether it was created.
pub fn load_or_create_identity(data_dir: &Path) -> Result<(Keypair, icn_schemas::Did, bool)> {
    let keystore = Keystore::in_dir(data_dir);
    if keystore.exists() {
        let passphrase = Passphrase::from_env_or_prompt("Keystore passphrase: ")?;
        let (key, member) = keystore.load_member(&passphrase)?;
        return Ok((key, member, false));
    }
    let passphrase = Passphrase::from_env_or_prompt("New keystore passphrase: ")?;
    let keypair = Keypair::generate()?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    keystore.create(&keypair, &passphrase)?;
    let member = keypair.did();
    Ok((keypair, member, true))
}

/// Unlocks the identity in `data_dir`: its key.
pub fn load_identity(data_dir: &Path) -> Result<Keypair> {
    load_member_identity(data_dir).map(|(key, _)| key)
}

/// Unlocks the identity in `data_dir`: its key, and the member it signs for
/// (the key's own DID, unless the member rotated its DID key's powers to
/// this key: `icnctl id rotate`).
pub fn load_member_identity(data_dir: &Path) -> Result<(Keypair, icn_schemas::Did)> {
    let keystore = Keystore::in_dir(data_dir);
    if !keystore.exists() {
        return Err(KeystoreError::Missing(keystore.path().to_owned()).into());
    }
    let passphrase = Passphrase::from_env_or_prompt("Keystore passphrase: ")?;
    Ok(keystore.load_member(&passphrase)?)
}

/// File in the data directory holding the generated gateway JWT secret.
pub const JWT_SECRET_FILE: &str = "gateway.secret";

/// The gateway's JWT secret: `ICN_GATEWAY_JWT_SECRET` when set, else the
/// one stored in the data directory, generated (32 random bytes, mode
/// 0600) the first time. Returns the secret and where it came from; the
/// secret itself is never logged.
pub fn jwt_secret(data_dir: &Path) -> Result<(Vec<u8>, String)> {
    if let Ok(secret) = std::env::var("ICN_GATEWAY_JWT_SECRET")
        && !secret.is_empty()
    {
        if secret.len() < 16 {
            anyhow::bail!("ICN_GATEWAY_JWT_SECRET must have at least 16 characters");
        }
        return Ok((secret.into_bytes(), "ICN_GATEWAY_JWT_SECRET".into()));
    }
    let path = data_dir.join(JWT_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = hex::decode(text.trim())
                .ok()
                .filter(|s| s.len() >= 16)
                .with_context(|| format!("{} is not a hex secret", path.display()))?;
            Ok((secret, path.display().to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            icn_engine::keystore::write_atomically(&path, hex::encode(&secret).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok((secret, format!("{} (generated)", path.display())))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a backup of `engine` to `path`, whole or not at all: a temporary
/// file beside it, fsynced, then renamed over it.
pub fn write_backup(
    engine: &icn_engine::Engine,
    path: &Path,
) -> Result<icn_engine::backup::Counts> {
    use std::io::Write as _;
    if !path.is_absolute() {
        anyhow::bail!("the backup path must be absolute: {}", path.display());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let counts = engine.backup(&mut out)?;
        out.flush()?;
        out.into_inner()
            .map_err(|e| anyhow::anyhow!("writing the backup: {e}"))?
            .sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(counts)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
