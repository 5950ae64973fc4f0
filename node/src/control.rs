//! The node's control socket: how `icnctl` asks a running `icnd` to dial a
//! peer or report its status.
//!
//! A Unix socket at `<data-dir>/icnd.sock`, readable and writable by the
//! node's user only (mode 0600): whoever may read the data directory's
//! files may steer the node; nobody else can reach it. One JSON request
//! per line, one JSON answer per line: `{"ok": …}` or `{"error": "…"}`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "icnd.sock";

/// Longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// The socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// What `icnctl` may ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Keep a sync session with a peer.
    Dial {
        /// Its DID.
        did: String,
        /// `ip:port` of its sync endpoint; none: found by discovery (mDNS).
        #[serde(default)]
        addr: Option<String>,
        /// Also keep it in `<data-dir>/peers.json`, dialed at every start
        /// (only with `addr`).
        #[serde(default)]
        save: bool,
    },
    /// The node's DID, peers and counters.
    Status,
    /// Write a backup of everything the node holds to `path` (absolute;
    /// written by the node, which must be able to write there).
    Backup {
        /// Where.
        path: String,
    },
    /// The identity in the data directory changed (`icnctl id rotate`):
    /// the node starts itself afresh on it, as after a crash, on the same
    /// store (same pid, arguments and environment).
    Reload,
}

/// Sends one request to the node running on `data_dir`; returns its `ok`
/// value, or its error.
#[cfg(unix)]
pub fn request(data_dir: &Path, request: &Request) -> Result<serde_json::Value> {
    let path = socket_path(data_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "no icnd is running on {} (no control socket at {})",
            data_dir.display(),
            path.display()
        )
    })?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    let answer: serde_json::Value =
        serde_json::from_str(&answer).context("icnd's answer is not JSON")?;
    if let Some(error) = answer.get("error").and_then(|e| e.as_str()) {
        return Err(anyhow!("{error}"));
    }
    answer
        .get("ok")
        .cloned()
        .ok_or_else(|| anyhow!("icnd answered neither ok nor error"))
}

/// Serves the control socket until the task is dropped; `handle` answers
/// each request.
#[cfg(unix)]
pub async fn serve(
    data_dir: &Path,
    handle: impl Fn(Request) -> Result<serde_json::Value> + Send + Sync + 'static,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    let path = socket_path(data_dir);
    // A socket left by a node that was killed.
    if path.exists() {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let handle = std::sync::Arc::new(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let read = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
            let mut lines = read;
            if lines.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match serde_json::from_str::<Request>(&line) {
                Err(e) => serde_json::json!({ "error": format!("not a request: {e}") }),
                // Requests may take a while (a backup): off the async threads.
                Ok(request) => {
                    let handle = handle.clone();
                    match tokio::task::spawn_blocking(move || handle(request)).await {
                        Ok(Ok(ok)) => serde_json::json!({ "ok": ok }),
                        Ok(Err(e)) => serde_json::json!({ "error": format!("{e:#}") }),
                        Err(e) => {
                            serde_json::json!({ "error": format!("the request failed: {e}") })
                        }
                    }
                }
            };
            let mut out = answer.to_string();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}
