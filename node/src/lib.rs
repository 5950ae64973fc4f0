//! Shared by `icnd` and `icnctl`: the data directory and the node identity.

#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::path::Path;

pub mod config;
pub mod control;

use anyhow::{Context, Result};
use icn_engine::{Keypair, Keystore, KeystoreError, Passphrase};

/// Default data directory, relative to where the node starts.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Unlocks the identity in `data_dir`, or creates one when there is none.
/// Returns the key pair and whether it was created.
pub fn load_or_create_identity(data_dir: &Path) -> Result<(Keypair, bool)> {
    let keystore = Keystore::in_dir(data_dir);
    if keystore.exists() {
        let passphrase = Passphrase::from_env_or_prompt("Keystore passphrase: ")?;
        return Ok((keystore.load(&passphrase)?, false));
    }
    let passphrase = Passphrase::from_env_or_prompt("New keystore passphrase: ")?;
    let keypair = Keypair::generate()?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    keystore.create(&keypair, &passphrase)?;
    Ok((keypair, true))
}

/// Unlocks the identity in `data_dir`.
pub fn load_identity(data_dir: &Path) -> Result<Keypair> {
    let keystore = Keystore::in_dir(data_dir);
    if !keystore.exists() {
        return Err(KeystoreError::Missing(keystore.path().to_owned()).into());
    }
    let passphrase = Passphrase::from_env_or_prompt("Keystore passphrase: ")?;
    Ok(keystore.load(&passphrase)?)
}
