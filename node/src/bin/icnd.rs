//! `icnd`: the ICN node daemon.
//!
//! On its embedded defaults it keeps everything under `./data` (the identity
//! in `identity.age`, the sled store in `store/`) and serves the gateway on
//! `127.0.0.1:8080`, and syncs with peers over iroh on UDP `0.0.0.0:7777`
//! (docs/sync.md). With an empty data directory and
//! `ICN_KEYSTORE_PASSPHRASE` set, it creates the node's identity and says so.
//! The gateway signs tokens with `ICN_GATEWAY_JWT_SECRET`, or with a secret
//! it generates once in `<data-dir>/gateway.secret`. Prometheus metrics are
//! on port 9100 of the gateway's IP. It stops cleanly on Ctrl-C or SIGTERM.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use icn_engine::{Engine, Store};
use icn_node::config::{Config, DEFAULT_LISTEN_ADDR, PeerAddr};
use icn_node::control::Request;
use icn_schemas::{Did, DocKind};
use icn_sync::{NodeConfig, SyncNode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The deployment guide's Prometheus port.
const DEFAULT_METRICS_PORT: u16 = 9100;

/// Dials each peer once; the sync node keeps the session up from then on.
#[derive(Clone)]
struct Dialer {
    sync: SyncNode,
    dialed: Arc<Mutex<HashSet<Did>>>,
}

impl Dialer {
    fn new(sync: SyncNode) -> Dialer {
        Dialer {
            sync,
            dialed: Arc::default(),
        }
    }

    /// Starts keeping a session with `did`; `false` when already keeping
    /// one (or `did` is this node).
    fn dial(&self, did: Did, addr: SocketAddr) -> bool {
        if did == self.sync.did() {
            return false;
        }
        let mut dialed = self.dialed.lock().unwrap_or_else(|p| p.into_inner());
        if !dialed.insert(did) {
            return false;
        }
        match self.sync.dial(did, addr) {
            Ok(()) => {
                tracing::info!(peer = %did, %addr, "keeping a sync session");
                true
            }
            Err(e) => {
                tracing::warn!(peer = %did, %addr, error = %e, "cannot dial");
                dialed.remove(&did);
                false
            }
        }
    }

    /// [`Dialer::dial`] by DID alone, the address found by discovery;
    /// refused when the node runs none.
    fn dial_did(&self, did: Did) -> Result<bool> {
        if did == self.sync.did() {
            return Ok(false);
        }
        // Refused without discovery, even for a peer dialed already.
        self.sync.dial_did(did)?;
        let new = self
            .dialed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(did);
        if new {
            tracing::info!(peer = %did, "keeping a sync session, the address found by mDNS");
        }
        Ok(new)
    }
}

/// What the daemon runs besides sync and the gateway (periodic engine work,
/// the control socket, the metrics endpoint): one tracker owns the tasks,
/// one token stops them, and shutdown waits for them before it releases the
/// engine.
#[derive(Clone, Default)]
struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// Runs `work` on the engine now and every `period`, off the async
    /// threads, until shutdown. A run in progress finishes.
    fn every(
        &self,
        period: Duration,
        engine: Engine,
        work: impl Fn(&Engine) + Send + Sync + 'static,
    ) {
        let work = Arc::new(work);
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = cancel.cancelled() => return,
                }
                let (engine, work) = (engine.clone(), work.clone());
                if let Err(e) = tokio::task::spawn_blocking(move || work(&engine)).await {
                    tracing::warn!(error = %e, "a periodic task failed");
                }
            }
        });
    }

    /// Runs `task` until it ends or shutdown begins.
    fn until_shutdown(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = cancel.cancelled() => {}
            }
        });
    }

    /// Stops every task and waits for them.
    async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Answers `icnctl` on the control socket.
fn control_handler(
    engine: Engine,
    dialer: Dialer,
    data_dir: PathBuf,
) -> impl Fn(Request) -> Result<serde_json::Value> + Send + Sync + 'static {
    move |request| match request {
        Request::Dial { did, addr, save } => {
            let did = Did::parse_valid(&did).map_err(|e| anyhow::anyhow!("{did:?}: {e}"))?;
            let Some(addr) = addr else {
                // By DID alone: discovery finds the address.
                anyhow::ensure!(!save, "--save needs the peer's ip:port");
                let started = dialer.dial_did(did)?;
                return Ok(serde_json::json!({
                    "did": did.to_string(),
                    "addr": null,
                    "new": started,
                    "saved": false,
                }));
            };
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| anyhow::anyhow!("{addr:?} is not ip:port: {e}"))?;
            let saved = save && icn_node::peers::save(&data_dir, &PeerAddr { did, addr })?;
            let started = dialer.dial(did, addr);
            Ok(serde_json::json!({
                "did": did.to_string(),
                "addr": addr.to_string(),
                "new": started,
                "saved": saved,
            }))
        }
        Request::Backup { path } => {
            let counts = icn_node::write_backup(&engine, std::path::Path::new(&path))?;
            tracing::info!(path, ?counts, "wrote a backup");
            Ok(serde_json::json!({ "path": path, "counts": counts }))
        }
        Request::Reload => {
            #[cfg(unix)]
            {
                // After the answer has gone out.
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(200));
                    tracing::warn!("the identity changed: icnd restarts on it");
                    let e = restart_in_place();
                    tracing::error!(error = %e, "icnd could not restart itself; restart it");
                });
            }
            Ok(serde_json::json!({ "restarting": true }))
        }
        Request::Status => {
            let m = dialer.sync.metrics();
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            Ok(serde_json::json!({
                "did": dialer.sync.did().to_string(),
                "sync_addrs": dialer.sync.local_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "peers": dialer.sync.peers().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "documents": engine.doc_ids().len(),
                "sync": {
                    "sessions": load(&m.sessions),
                    "faults": load(&m.faults),
                    "peers_disconnected": load(&m.peers_disconnected),
                    "changes_in": load(&m.changes_in),
                    "entries_in": load(&m.entries_in),
                    "entries_out": load(&m.entries_out),
                    "bytes_in": load(&m.bytes_in),
                    "bytes_out": load(&m.bytes_out),
                },
            }))
        }
    }
}

/// The relays registered in every co-op this node holds, with an address.
fn registered_relays(engine: &Engine) -> Vec<(Did, SocketAddr)> {
    let mut found = Vec::new();
    for id in engine.doc_ids() {
        if engine.kind(&id) != Some(DocKind::Coop) {
            continue;
        }
        let Some(Ok(coop)) = engine.coop(&id) else {
            continue;
        };
        for (did, relay) in coop.relays {
            if let Some(addr) = relay.addr.and_then(|a| a.parse().ok()) {
                found.push((did, addr));
            }
        }
    }
    found
}

/// The ICN node daemon: holds your co-ops' documents, syncs them with peers
/// over iroh (QUIC), and serves the gateway.
///
/// Flags win over the configuration file, which wins over the defaults.
#[derive(Parser, Debug)]
#[command(
    name = "icnd",
    version,
    after_long_help = "Environment:
  ICN_KEYSTORE_PASSPHRASE       the node identity's passphrase (asked for on a terminal when unset)
  ICN_GATEWAY_JWT_SECRET        the gateway's token secret (default: generated once in the data directory)
  RUST_LOG                      a log filter; overrides --log-level
  OTEL_EXPORTER_OTLP_ENDPOINT   export traces over OTLP/HTTP to <endpoint>/v1/traces (off when unset)
  OTEL_SERVICE_NAME             the traces' service name [default: icnd]"
)]
struct Args {
    /// Configuration file (TOML: data_dir, [network] listen_addr,
    /// bootstrap_peers, relay_urls, mdns_enabled, [gateway] enabled, bind_addr,
    /// cors_origins, token_ttl_seconds, rate_burst, rate_per_second,
    /// body_limit_bytes, [observability] log_level, log_format, metrics_port, health_port; see
    /// docs/operations.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the identity (identity.age) and the store live [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address the sync endpoint binds, UDP [default: 0.0.0.0:7777].
    #[arg(long)]
    listen_addr: Option<SocketAddr>,
    /// Address the HTTP gateway listens on [default: 127.0.0.1:8080].
    #[arg(long)]
    gateway_bind: Option<SocketAddr>,
    /// Serve the HTTP gateway: `--gateway-enable` or `--gateway-enable
    /// false` [default: true, or [gateway] enabled].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    gateway_enable: Option<bool>,
    /// Port of the Prometheus endpoint (/metrics), on the gateway's IP; 0
    /// picks a free port [default: 9100].
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it
    /// [default: info]. `kill -USR1 <pid>` switches to debug and back while
    /// the node runs.
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text, or json (one object per line) [default: text, or
    /// [observability] log_format].
    #[arg(long, value_enum)]
    log_format: Option<icn_node::logging::LogFormat>,
    /// Port of /health (liveness) and /ready (store open, sync bound, a
    /// bootstrap peer reached), on the gateway's IP, served even with the
    /// gateway off; both are on the metrics port too [default: none, or
    /// [observability] health_port].
    #[arg(long)]
    health_port: Option<u16>,
}

/// `/health`: the process answers. `/ready`: the store is open and takes
/// writes, sync is bound, and, when bootstrap peers are configured, one of
/// them is connected (503 until then, with what is missing).
fn health_router(sync: SyncNode, engine: Engine, bootstrap: Vec<icn_schemas::Did>) -> axum::Router {
    use axum::Json;
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/ready",
            get(move || {
                let (sync, bootstrap, engine) = (sync.clone(), bootstrap.clone(), engine.clone());
                async move {
                    // Asks sled too: a write that failed anywhere stops it.
                    let failure = tokio::task::spawn_blocking(move || engine.store().check_writable())
                        .await
                        .unwrap_or_else(|e| Some(format!("checking the store failed: {e}")));
                    let bound = !sync.local_addrs().is_empty();
                    let peers = sync.peers();
                    let reached = bootstrap.iter().filter(|d| peers.contains(d)).count();
                    let ready =
                        failure.is_none() && bound && (bootstrap.is_empty() || reached > 0);
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = serde_json::json!({
                        "status": if ready { "ready" } else { "not ready" },
                        "store": match &failure {
                            None => "open".to_owned(),
                            Some(reason) => format!("refusing writes: the disk refused one ({reason})"),
                        },
                        "sync_bound": bound,
                        "peers_connected": peers.len(),
                        "bootstrap_peers": bootstrap.len(),
                        "bootstrap_peers_connected": reached,
                    });
                    (status, Json(body))
                }
            }),
        )
}

/// Opens the store; while the disk refuses the writes that takes (a full
/// disk, say), says so once and tries again every two seconds, until it
/// works or icnd is stopped.
async fn open_store(data_dir: &std::path::Path) -> Result<Store> {
    let mut said = false;
    loop {
        match Store::open(data_dir) {
            Ok(store) => {
                if said {
                    tracing::info!("the disk takes writes again: store open");
                }
                return Ok(store);
            }
            Err(e) if e.is_disk() => {
                if !said {
                    tracing::error!(
                        error = %e,
                        dir = %data_dir.display(),
                        "the disk refuses the writes opening the store takes (full or read-only?): icnd tries again every 2 s"
                    );
                    said = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = shutdown_signal() => anyhow::bail!("stopped while waiting for the disk"),
                }
            }
            Err(e) => return Err(e).context("opening the store"),
        }
    }
}

/// Whether a megabyte can be written and synced in `dir` (then removed):
/// room enough for the store to open again.
#[cfg(unix)]
fn disk_takes_writes(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = dir.join(".icnd-disk-probe");
    let result = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; 1 << 20])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    result
}

/// Replaces this process with a fresh `icnd` (same binary, arguments and
/// environment, same pid): every file and socket closes, as in a crash, and
/// the new process opens the store again. Returns only if that failed.
#[cfg(unix)]
fn restart_in_place() -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "icnd".into());
    std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let log_level = args
        .log_level
        .or(config.observability.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let log_format = args
        .log_format
        .or(config.observability.log_format)
        .unwrap_or(icn_node::logging::LogFormat::Text);
    let logging = std::sync::Arc::new(icn_node::logging::init(&log_level, log_format)?);
    tokio::spawn(switch_log_level_on_usr1(logging.clone()));
    let data_dir = args
        .data_dir
        .or(config.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(icn_node::DEFAULT_DATA_DIR));
    let listen_addr = match args.listen_addr.or(config.network.listen_addr) {
        Some(a) => a,
        None => DEFAULT_LISTEN_ADDR.parse()?,
    };
    let gateway_bind = match args.gateway_bind.or(config.gateway.bind_addr) {
        Some(a) => a,
        None => "127.0.0.1:8080".parse()?,
    };

    let (identity, member, created) = icn_node::load_or_create_identity(&data_dir)?;
    if created {
        tracing::info!(did = %identity.did(), "created a new node identity in {}", data_dir.display());
    } else if member != identity.did() {
        tracing::info!(did = %identity.did(), %member, "unlocked the node identity, a key the member rotated to");
    } else {
        tracing::info!(did = %identity.did(), "unlocked the node identity");
    }
    let store = open_store(&data_dir).await?;
    let engine = Engine::open(store).context("loading documents")?;
    tracing::info!(documents = engine.doc_ids().len(), "store open");
    // The node's key records the closes that fall due, executes the
    // accepted decisions it learns of, and seals in the domains it
    // administers the members their co-ops revoked (docs/governance.md).
    engine.set_executor(icn_engine::Signer::member_key(member, identity.clone()));
    let tasks = Tasks::default();
    tasks.every(Duration::from_secs(30), engine.clone(), |engine| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        // Seals first: a member the co-op revoked votes no more.
        let sealed = engine.seal_pending();
        if sealed > 0 {
            tracing::info!(
                count = sealed,
                "sealed revoked or removed members in domains"
            );
        }
        let closed = engine.close_due(now);
        if !closed.is_empty() {
            tracing::info!(count = closed.len(), "recorded closes that fell due");
        }
        let carried = engine.execute_pending(now);
        if carried > 0 {
            tracing::info!(
                count = carried,
                "carried out accepted decisions not yet in effect"
            );
        }
    });

    let relay_urls = config
        .network
        .relay_urls
        .iter()
        .map(|u| u.parse().with_context(|| format!("relay URL {u:?}")))
        .collect::<Result<Vec<_>>>()?;
    let sync = SyncNode::spawn(
        engine.clone(),
        &identity,
        NodeConfig {
            relay_urls,
            mdns: config.network.mdns_enabled,
            ..NodeConfig::direct(listen_addr)
        },
    )
    .await
    .with_context(|| format!("starting sync on {listen_addr}"))?;
    tracing::info!(addrs = ?sync.local_addrs(), "sync listening as {}", identity.did());
    let dialer = Dialer::new(sync.clone());
    let mut bootstrap = Vec::new();
    // The configured peers, then those saved by `network dial --save`.
    let mut peers = Vec::new();
    for peer in &config.network.bootstrap_peers {
        peers.push(peer.parse::<PeerAddr>()?);
    }
    peers.extend(icn_node::peers::load(&data_dir)?);
    for peer in peers {
        dialer.dial(peer.did, peer.addr);
        bootstrap.push(peer.did);
    }
    let health = health_router(sync.clone(), engine.clone(), bootstrap);
    // A disk that refused a write (full, read-only) stops the store for good
    // (sled takes nothing more after an I/O error): writes are refused with a
    // 503 that says so, and once the disk takes writes again icnd starts
    // itself afresh on the same data, which is a restart after a crash.
    #[cfg(unix)]
    {
        let probe_dir = data_dir.clone();
        tasks.every(Duration::from_secs(1), engine.clone(), move |engine| {
            let Some(reason) = engine.store().check_writable() else {
                return;
            };
            match disk_takes_writes(&probe_dir) {
                Ok(()) => {
                    tracing::warn!(%reason, "the disk takes writes again: icnd restarts to reopen its store");
                    let e = restart_in_place();
                    tracing::error!(error = %e, "icnd could not restart itself; restart it");
                }
                Err(e) => tracing::debug!(error = %e, "the disk still refuses writes"),
            }
        });
    }
    #[cfg(unix)]
    {
        let control = control_handler(engine.clone(), dialer.clone(), data_dir.clone());
        let dir = data_dir.clone();
        tasks.until_shutdown(async move {
            if let Err(e) = icn_node::control::serve(&dir, control).await {
                tracing::warn!(error = %e, "the control socket stopped");
            }
        });
    }
    // Relays registered in the co-ops this node holds: now, whenever a
    // document changes (a relay registered here or by a peer is dialed at
    // once), and every minute.
    let relays = dialer.clone();
    tasks.every(Duration::from_secs(60), engine.clone(), move |engine| {
        for (did, addr) in registered_relays(engine) {
            relays.dial(did, addr);
        }
    });
    let (changed, mut doc_changes) = tokio::sync::mpsc::channel::<()>(1);
    let listener = engine.on_commit(move |event| {
        if matches!(event, icn_engine::Committed::Doc { .. }) {
            // One pending wake-up is enough: it reads every co-op.
            let _ = changed.try_send(());
        }
    });
    let (relays, on_change) = (dialer.clone(), engine.clone());
    tasks.until_shutdown(async move {
        while doc_changes.recv().await.is_some() {
            let engine = on_change.clone();
            let Ok(found) = tokio::task::spawn_blocking(move || registered_relays(&engine)).await
            else {
                continue;
            };
            for (did, addr) in found {
                relays.dial(did, addr);
            }
        }
    });

    let (secret, source) = icn_node::jwt_secret(&data_dir)?;
    tracing::info!("gateway token secret from {source}");
    let mut gw_config = icn_gateway::Config::new(identity.clone(), secret);
    let g = &config.gateway;
    gw_config.cors_origins = g.cors_origins.clone();
    gw_config.token_seconds = g.token_ttl_seconds.unwrap_or(gw_config.token_seconds);
    gw_config.rate_burst = g.rate_burst.unwrap_or(gw_config.rate_burst);
    gw_config.rate_per_second = g.rate_per_second.unwrap_or(gw_config.rate_per_second);
    gw_config.body_limit = g.body_limit_bytes.unwrap_or(gw_config.body_limit);
    let gateway = icn_gateway::Gateway::new(engine.clone(), gw_config);

    let metrics_port = args
        .metrics_port
        .or(config.observability.metrics_port)
        .unwrap_or(DEFAULT_METRICS_PORT);
    let metrics_addr = SocketAddr::new(gateway_bind.ip(), metrics_port);
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| {
            format!("binding the metrics endpoint to {metrics_addr} (set [observability] metrics_port or --metrics-port; 0 picks a free port)")
        })?;
    tracing::info!(
        "metrics on http://{}/metrics",
        metrics_listener.local_addr()?
    );
    let registry = icn_node::telemetry::registry(&gateway, &sync, &engine);
    let metrics = icn_gateway::metrics::router(Arc::new(registry)).merge(health.clone());
    let metrics_port = metrics_listener.local_addr()?.port();
    let stop_metrics = tasks.cancel.clone();
    tasks.tracker.spawn(async move {
        let served = axum::serve(metrics_listener, metrics)
            .with_graceful_shutdown(stop_metrics.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });

    let gateway_enabled = args
        .gateway_enable
        .or(config.gateway.enabled)
        .unwrap_or(true);
    let health_port = args.health_port.or(config.observability.health_port);
    // On the gateway's own port (the deployment guide's example puts both
    // on 8080), the gateway serves them; on the metrics port, they are
    // there already; on another, they get their own listener.
    let health_on_gateway = gateway_enabled && health_port == Some(gateway_bind.port());
    if let Some(port) = health_port.filter(|p| *p != metrics_port && !health_on_gateway) {
        let addr = SocketAddr::new(gateway_bind.ip(), port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("binding /health and /ready to {addr} (set [observability] health_port or --health-port)")
        })?;
        tracing::info!(
            "health on http://{}/health and /ready",
            listener.local_addr()?
        );
        let (stop, health) = (tasks.cancel.clone(), health.clone());
        tasks.tracker.spawn(async move {
            let served = axum::serve(listener, health)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the health endpoint stopped");
            }
        });
    }
    if gateway_enabled {
        let listener = tokio::net::TcpListener::bind(gateway_bind)
            .await
            .with_context(|| format!("binding the gateway to {gateway_bind}"))?;
        tracing::info!("gateway listening on http://{}", listener.local_addr()?);
        let mut router = gateway.router();
        if health_on_gateway {
            router = router.merge(health);
        }
        icn_gateway::serve_router(listener, router, shutdown_signal()).await?;
    } else {
        tracing::info!("gateway disabled");
        shutdown_signal().await;
    }
    // The gateway has stopped taking requests. Then: the daemon's own tasks
    // (periodic work finishes its run), sync (sessions flush, then the
    // endpoint closes), and only then the control socket file goes.
    engine.remove_listener(listener);
    tasks.shutdown().await;
    sync.shutdown().await;
    let _ = std::fs::remove_file(icn_node::control::socket_path(&data_dir));

    // Every acknowledged write is already durable; this is belt and braces.
    engine.store().make_durable().context("final flush")?;
    tracing::info!("stopped");
    // The last spans, if traces are exported.
    let _ = tokio::task::spawn_blocking(move || logging.shutdown()).await;
    Ok(())
}

/// `kill -USR1`: debug logs on, and off again.
async fn switch_log_level_on_usr1(logging: std::sync::Arc<icn_node::logging::Logging>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGUSR1: the log level stays");
            return;
        }
    };
    while usr1.recv().await.is_some() {
        match logging.toggle() {
            Ok(filter) => tracing::warn!(filter = %filter, "SIGUSR1: log level changed"),
            Err(e) => tracing::warn!(error = %e, "SIGUSR1: the log level stays"),
        }
    }
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
