//! `icnd`: the ICN node daemon.
//!
//! On its embedded defaults it keeps everything under `./data` (the identity
//! in `identity.age`, the sled store in `store/`) and serves the gateway on
//! `127.0.0.1:8080`. With an empty data directory and
//! `ICN_KEYSTORE_PASSPHRASE` set, it creates the node's identity and says so.
//! It stops cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use icn_engine::{Engine, Store};

/// The ICN node daemon: holds your co-ops' documents and serves the gateway.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Where the identity (identity.age) and the store live.
    #[arg(long, default_value = icn_node::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Address the HTTP gateway listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway_bind: SocketAddr,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let (identity, created) = icn_node::load_or_create_identity(&args.data_dir)?;
    if created {
        tracing::info!(did = %identity.did(), "created a new node identity in {}", args.data_dir.display());
    } else {
        tracing::info!(did = %identity.did(), "unlocked the node identity");
    }
    let store = Store::open(&args.data_dir).context("opening the store")?;
    let engine = Engine::open(store).context("loading documents")?;
    tracing::info!(documents = engine.doc_ids().len(), "store open");
    // The node's key records the closes that fall due and executes the
    // accepted decisions it learns of (docs/governance.md).
    engine.set_executor(icn_engine::Signer::Device(identity.clone()));
    let closer = engine.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            every.tick().await;
            let engine = closer.clone();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            match tokio::task::spawn_blocking(move || engine.close_due(now)).await {
                Ok(closed) if !closed.is_empty() => {
                    tracing::info!(count = closed.len(), "recorded closes that fell due");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "closing due proposals failed"),
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(args.gateway_bind)
        .await
        .with_context(|| format!("binding the gateway to {}", args.gateway_bind))?;
    tracing::info!("gateway listening on http://{}", listener.local_addr()?);
    icn_gateway::serve(listener, engine.clone(), shutdown_signal()).await?;

    // Every acknowledged write is already durable; this is belt and braces.
    engine.store().make_durable().context("final flush")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
