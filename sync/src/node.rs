//! The iroh driver: runs [`Session`]s over QUIC connections.
//!
//! The endpoint's secret key is the node's identity key, so the endpoint id
//! the transport authenticates is the peer's DID. Each connection carries
//! one bidirectional stream of length-prefixed [`Frame`]s. Reading and
//! writing run as their own tasks, so a side busy sending a long catch-up
//! keeps reading what the other side sends, and neither can block the
//! other.
//!
//! **Tasks.** The node owns every task it starts (accepting, dialing, one
//! per session, a reader and a writer per session) in one [`TaskTracker`],
//! and stops them with one [`CancellationToken`]. A session's reader and
//! writer are held in [`AbortOnDropHandle`]s, so they never outlive their
//! session. [`SyncNode::shutdown`] runs in this order: stop accepting and
//! dialing and tell sessions to end (cancel the token); let sessions send
//! what they queued and close their connections (wait for the tracker);
//! close the endpoint; stop hearing the engine's commits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use icn_engine::{Committed, Engine, Keypair, ListenerId};
use icn_schemas::Did;
use iroh::endpoint::{Connection, PortmapperConfig, RecvStream, SendStream, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, RelayUrl, SecretKey};
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::Instrument as _;

use crate::session::{Session, SessionError};
use crate::wire::{ALPN, Frame, FrameError, MAX_FRAME_BYTES};

/// How long a peer has to send its `Hello` after connecting, by default.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the rest of a frame may take once its length has arrived.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Frames a peer may send in a burst, and per second after it: past that,
/// its frames are read more slowly (QUIC's flow control then slows the
/// peer), not refused.
const FRAME_BURST: f64 = 2_000.0;
const FRAMES_PER_SECOND: f64 = 1_000.0;

/// Sessions one peer may hold at once (two nodes that dial each other hold
/// two), and sessions in all: each costs a little memory and a task.
const MAX_SESSIONS_PER_PEER: usize = 4;
const MAX_SESSIONS: usize = 4096;

/// Redial delays: from the first to the longest. While a peer was in a
/// session within [`RECENT`], the delay stays under [`BACKOFF_RECENT_MAX`],
/// so a peer that restarts (a relay, say) is back in sync within a few
/// seconds; a peer gone longer is tried less often.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_RECENT_MAX: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const RECENT: Duration = Duration::from_secs(120);

/// How long a node keeps dialing back a peer that had connected to it,
/// after their last session ended (see [`SyncNode::dial`]).
const DIAL_BACK_FOR: Duration = Duration::from_secs(600);

/// Most peers dialed back at once: any key may connect, so what a node
/// dials back on its own is bounded.
const MAX_DIAL_BACKS: usize = 256;

/// The mDNS service nodes advertise: `<id>._icn-sync._udp.local`.
const MDNS_SERVICE: &str = "icn-sync";

/// How often peers found by mDNS are considered for dialing.
const MDNS_DIAL_EVERY: Duration = Duration::from_secs(2);

/// How long the higher DID of two nodes that found each other leaves the
/// dialing to the lower.
const MDNS_DEFER: Duration = Duration::from_secs(10);

/// How long a session's writer has to send what it queued when the session
/// ends.
const WRITER_FLUSH: Duration = Duration::from_secs(5);

/// How long shutdown waits for sessions to flush before it closes the
/// endpoint under them.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// How the node's endpoint is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address to bind (`0.0.0.0:7777` for a relay; `127.0.0.1:0` in tests).
    pub bind: SocketAddr,
    /// iroh relay servers for reaching peers behind NATs. Empty: no relays,
    /// direct addresses only (tests and local runs never need the internet).
    pub relay_urls: Vec<RelayUrl>,
    /// How long a peer has to send its `Hello` ([`HELLO_TIMEOUT`]).
    pub hello_timeout: Duration,
    /// Find peers on the local network by mDNS: advertise this node's
    /// addresses, learn theirs, dial those that may receive a document
    /// held here, and let [`SyncNode::dial_did`] reach them by DID alone.
    pub mdns: bool,
}

impl NodeConfig {
    /// Direct connections only, on `bind`.
    pub fn direct(bind: SocketAddr) -> NodeConfig {
        NodeConfig {
            bind,
            relay_urls: Vec::new(),
            hello_timeout: HELLO_TIMEOUT,
            mdns: false,
        }
    }
}

/// Why the node could not start or dial.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The endpoint did not bind.
    #[error("binding the sync endpoint: {0}")]
    Bind(String),
    /// A peer's DID is not a key iroh accepts.
    #[error("not a node key: {0}")]
    BadPeer(String),
    /// A peer was to be dialed by DID alone, and nothing can find it.
    #[error(
        "no address for {0}: give its ip:port, or set [network] mdns_enabled on both nodes if they share a network"
    )]
    NoDiscovery(Did),
    /// mDNS could not start.
    #[error("starting mDNS discovery: {0}")]
    Mdns(String),
}

/// Counters of every session this node ran; what `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    /// How long sessions lasted, from the connection to its end.
    pub session_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Live push: from a local commit to its frames queued on a session's
    /// connection, once per session it went to.
    pub push_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Sessions started.
    pub sessions: AtomicU64,
    /// Frames refused from peers.
    pub faults: AtomicU64,
    /// Sessions ended because of a peer's faults.
    pub peers_disconnected: AtomicU64,
    /// Document changes merged from peers.
    pub changes_in: AtomicU64,
    /// Ledger entries received from peers.
    pub entries_in: AtomicU64,
    /// Ledger entries sent to peers.
    pub entries_out: AtomicU64,
    /// Bytes read from peers, frames and their length prefixes.
    pub bytes_in: AtomicU64,
    /// Bytes written to peers.
    pub bytes_out: AtomicU64,
    /// Frames received from peers.
    pub frames_in: AtomicU64,
    /// Frames a peer sent past its rate, held back before they were read.
    pub frames_rate_limited: AtomicU64,
    /// What peers announced they hold: `Hello` and `LedgerHeads` frames.
    pub announces_in: AtomicU64,
    /// What peers asked for: `LedgerHave`, `LedgerWant` and `BlobWant` frames.
    pub requests_in: AtomicU64,
    /// Documents peers announced in their `Hello` (a peer announces only
    /// those it thinks this node may have): what each session offers to
    /// keep in sync.
    pub subscriptions: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            // 10 ms to about 91 hours, quadrupling.
            session_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 4.0, 16),
            ),
            // 50 µs to about 1.6 s, doubling.
            push_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16),
            ),
            sessions: AtomicU64::default(),
            faults: AtomicU64::default(),
            peers_disconnected: AtomicU64::default(),
            changes_in: AtomicU64::default(),
            entries_in: AtomicU64::default(),
            entries_out: AtomicU64::default(),
            bytes_in: AtomicU64::default(),
            bytes_out: AtomicU64::default(),
            frames_in: AtomicU64::default(),
            frames_rate_limited: AtomicU64::default(),
            announces_in: AtomicU64::default(),
            requests_in: AtomicU64::default(),
            subscriptions: AtomicU64::default(),
        }
    }
}

struct Live {
    peer: Did,
    /// What this node committed, and when, for the session to push.
    events: mpsc::UnboundedSender<(Instant, Committed)>,
}

struct Inner {
    endpoint: Endpoint,
    engine: Engine,
    me: Did,
    sessions: Mutex<HashMap<u64, Live>>,
    next_session: AtomicU64,
    hello_timeout: Duration,
    metrics: Metrics,
    /// Cancelled when the node shuts down: every task watches it.
    cancel: CancellationToken,
    /// Every task the node started; shutdown waits for them, so that the
    /// engine is released when it returns.
    tasks: TaskTracker,
    /// The engine listener that feeds live sessions.
    listener: Mutex<Option<ListenerId>>,
    /// Peers a dial loop keeps a session with.
    dialing: Mutex<std::collections::HashSet<Did>>,
    /// How many of those are dialed back (at most [`MAX_DIAL_BACKS`]).
    dial_backs: std::sync::atomic::AtomicUsize,
    /// mDNS, when it runs.
    mdns: Option<MdnsAddressLookup>,
}

/// A running sync node. Cheap to clone; clones share the node. Dropping the
/// handles does not stop it: call [`SyncNode::shutdown`].
#[derive(Clone)]
#[must_use = "a sync node runs until shutdown() is called"]
pub struct SyncNode {
    inner: Arc<Inner>,
}

/// What an operator reads when the endpoint cannot bind: iroh says only
/// that it failed, so the address is tried once more here for the reason
/// (in use, not an address of this host, not permitted).
fn why_not_bound(addr: SocketAddr, iroh: &str) -> String {
    match std::net::UdpSocket::bind(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            format!(
                "address {addr} is already in use (another icnd, or another program on that UDP port)"
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            format!("address {addr} is not an address of this host")
        }
        Err(e) => format!("address {addr}: {e}"),
        Ok(_) => format!("address {addr}: {iroh}"),
    }
}

impl SyncNode {
    /// Binds the endpoint with the node's `key` and starts accepting peers.
    pub async fn spawn(
        engine: Engine,
        key: &Keypair,
        config: NodeConfig,
    ) -> Result<SyncNode, NodeError> {
        let secret = SecretKey::from_bytes(&key.secret());
        let relay_mode = if config.relay_urls.is_empty() {
            RelayMode::Disabled
        } else {
            RelayMode::custom(config.relay_urls.clone())
        };
        let mut builder = Endpoint::builder(presets::Minimal)
            .secret_key(secret)
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(relay_mode)
            .clear_address_lookup()
            .portmapper_config(PortmapperConfig::Disabled)
            // Only the address asked for: without this, iroh also binds
            // its defaults (UDP `[::]` on a random port).
            .clear_ip_transports()
            .bind_addr(config.bind)
            .map_err(|e| NodeError::Bind(e.to_string()))?;
        if config.bind.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) {
            // Every interface: IPv6 ones too, on the same port, where the
            // host has IPv6 (not required).
            let v6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), config.bind.port());
            builder = builder
                .bind_addr_with_opts(
                    v6,
                    iroh::endpoint::BindOpts::default().set_is_required(false),
                )
                .map_err(|e| NodeError::Bind(e.to_string()))?;
        }
        let endpoint = builder
            .bind()
            .await
            .map_err(|e| NodeError::Bind(why_not_bound(config.bind, &e.to_string())))?;
        let mdns = if config.mdns {
            let mdns = MdnsAddressLookup::builder()
                .service_name(MDNS_SERVICE)
                .build(endpoint.id())
                .map_err(|e| NodeError::Mdns(e.to_string()))?;
            endpoint
                .address_lookup()
                .map_err(|e| NodeError::Mdns(e.to_string()))?
                .add(mdns.clone());
            Some(mdns)
        } else {
            None
        };
        let inner = Arc::new(Inner {
            endpoint,
            engine: engine.clone(),
            me: key.did(),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
            hello_timeout: config.hello_timeout,
            metrics: Metrics::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            listener: Mutex::new(None),
            dialing: Mutex::default(),
            dial_backs: std::sync::atomic::AtomicUsize::new(0),
            mdns,
        });
        // Every commit goes to every live session; the session decides
        // whether its peer may have it.
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let listener = engine.on_commit(move |event| {
            if let Some(inner) = weak.upgrade() {
                for live in inner.sessions().values() {
                    let _ = live.events.send((Instant::now(), event.clone()));
                }
            }
        });
        *inner.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
        let node = SyncNode { inner };
        node.inner.tasks.spawn(node.clone().accept_loop());
        if let Some(mdns) = node.inner.mdns.clone() {
            node.inner.tasks.spawn(node.clone().discovery_loop(mdns));
        }
        Ok(node)
    }

    /// This node's DID.
    pub fn did(&self) -> Did {
        self.inner.me
    }

    /// The socket addresses the endpoint is bound to.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.endpoint.bound_sockets()
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Counts a frame a peer sent, by what it is.
    fn count_frame(&self, frame: &Frame) {
        let m = &self.inner.metrics;
        m.frames_in.fetch_add(1, Ordering::Relaxed);
        match frame {
            Frame::Hello { docs } => {
                m.announces_in.fetch_add(1, Ordering::Relaxed);
                // Counted as announced: which of them this node shares is
                // the session's to judge, off these threads.
                m.subscriptions
                    .fetch_add(docs.len() as u64, Ordering::Relaxed);
            }
            Frame::LedgerHeads { .. } => {
                m.announces_in.fetch_add(1, Ordering::Relaxed);
            }
            Frame::LedgerHave { .. } | Frame::LedgerWant { .. } | Frame::BlobWant { .. } => {
                m.requests_in.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The peers with a live session.
    pub fn peers(&self) -> Vec<Did> {
        let mut peers: Vec<Did> = self.inner.sessions().values().map(|l| l.peer).collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// Keeps a session with `peer` at `addr`: connects, and reconnects with
    /// backoff whenever the session ends, until the node shuts down. A peer
    /// dialed already is not dialed twice.
    ///
    /// A peer that connected to this node is also dialed back at the
    /// address it came from once their session ends (a member's node whose
    /// connection to its relay dropped, say), for [`DIAL_BACK_FOR`] after
    /// the last session, unless this node dials it already; only a peer
    /// that may receive a document held here, and at most
    /// [`MAX_DIAL_BACKS`] peers at once.
    pub fn dial(&self, peer: Did, addr: SocketAddr) -> Result<(), NodeError> {
        self.keep_dialing(peer, Some(addr), None)
    }

    /// [`SyncNode::dial`] by DID alone: the address comes from discovery
    /// (mDNS, when the node runs it), at each attempt. Refused when nothing
    /// could find one.
    pub fn dial_did(&self, peer: Did) -> Result<(), NodeError> {
        if self.inner.mdns.is_none() {
            return Err(NodeError::NoDiscovery(peer));
        }
        self.keep_dialing(peer, None, None)
    }

    fn keep_dialing(
        &self,
        peer: Did,
        addr: Option<SocketAddr>,
        give_up: Option<Duration>,
    ) -> Result<(), NodeError> {
        let key = iroh::PublicKey::from_bytes(peer.as_bytes())
            .map_err(|e| NodeError::BadPeer(e.to_string()))?;
        if peer == self.inner.me || !self.inner.dialing().insert(peer) {
            return Ok(());
        }
        let mut target = EndpointAddr::new(key);
        if let Some(addr) = addr {
            target = target.with_ip_addr(addr);
        }
        let node = self.clone();
        if give_up.is_some() {
            self.inner.dial_backs.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.tasks.spawn(async move {
            node.dial_loop(peer, target, give_up).await;
            node.inner.dialing().remove(&peer);
            if give_up.is_some() {
                node.inner.dial_backs.fetch_sub(1, Ordering::Relaxed);
            }
        });
        Ok(())
    }

    /// Dials back `peer` at `addr` if it may receive a document this node
    /// holds (a stranger's key is not dialed back) and fewer than
    /// [`MAX_DIAL_BACKS`] peers are dialed back already.
    async fn dial_back(&self, peer: Did, addr: SocketAddr) {
        if self.inner.dial_backs.load(Ordering::Relaxed) >= MAX_DIAL_BACKS {
            tracing::debug!(peer = %peer, "too many peers dialed back; not this one");
            return;
        }
        if !self.shares_with(peer).await {
            return;
        }
        if let Err(e) = self.keep_dialing(peer, Some(addr), Some(DIAL_BACK_FOR)) {
            tracing::debug!(peer = %peer, error = %e, "cannot dial back");
        }
    }

    /// Whether `peer` may receive a document held here.
    async fn shares_with(&self, peer: Did) -> bool {
        let engine = self.inner.engine.clone();
        tokio::task::spawn_blocking(move || {
            engine
                .doc_ids()
                .iter()
                .any(|doc| engine.may_receive(doc, &peer))
        })
        .await
        .unwrap_or(false)
    }

    /// Hears mDNS, and every [`MDNS_DIAL_EVERY`] dials the peers it found
    /// (not expired since) that may receive a document held here and are
    /// not dialed already, as peers that connected are dialed back: for
    /// [`DIAL_BACK_FOR`] after their last session. Of two nodes that find
    /// each other, the one with the lower DID dials at once and the other
    /// only if no session started within [`MDNS_DEFER`], so that they
    /// usually keep one session, and a node that holds nothing yet is still
    /// reached by one that holds something for it. Anyone on the network
    /// may announce keys, so at most [`MAX_DIAL_BACKS`] found peers are
    /// remembered (an expired one makes room).
    async fn discovery_loop(self, mdns: MdnsAddressLookup) {
        use n0_future::StreamExt as _;
        let cancel = self.inner.cancel.clone();
        let mut events = mdns.subscribe().await;
        let mut found: std::collections::BTreeMap<Did, Instant> = std::collections::BTreeMap::new();
        let mut tick = tokio::time::interval(MDNS_DIAL_EVERY);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(DiscoveryEvent::Discovered { endpoint_info, .. }) => {
                        if let Ok(peer) = Did::from_bytes(endpoint_info.endpoint_id.as_bytes())
                            && peer != self.inner.me
                            // Anyone on the network may announce keys.
                            && found.len() < MAX_DIAL_BACKS
                            && let std::collections::btree_map::Entry::Vacant(new) = found.entry(peer)
                        {
                            new.insert(Instant::now());
                            tracing::info!(peer = %peer, "found on the local network (mDNS)");
                        }
                    }
                    Some(DiscoveryEvent::Expired { endpoint_id }) => {
                        if let Ok(peer) = Did::from_bytes(endpoint_id.as_bytes()) {
                            found.remove(&peer);
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = tick.tick() => {
                    let me = self.inner.me;
                    let due: Vec<Did> = found
                        .iter()
                        .filter(|(peer, at)| **peer > me || at.elapsed() >= MDNS_DEFER)
                        .map(|(peer, _)| *peer)
                        .collect();
                    for peer in due {
                        if self.dialing(&peer)
                            || self.peers().contains(&peer)
                            || self.inner.dial_backs.load(Ordering::Relaxed) >= MAX_DIAL_BACKS
                            || !self.shares_with(peer).await
                        {
                            continue;
                        }
                        if let Err(e) = self.keep_dialing(peer, None, Some(DIAL_BACK_FOR)) {
                            tracing::debug!(peer = %peer, error = %e, "cannot dial a peer mDNS found");
                        }
                    }
                }
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Whether a dial loop keeps a session with `peer`.
    pub fn dialing(&self, peer: &Did) -> bool {
        self.inner.dialing().contains(peer)
    }

    /// Stops the node and returns once every task it started has ended.
    /// In order: stop accepting and dialing and tell every session to end;
    /// let sessions send what they queued (each has a few seconds) and
    /// close their connections; close the endpoint; stop hearing commits.
    /// Calling it again does nothing more.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        // Sessions flush within their writer's deadline; past this, closing
        // the endpoint makes whatever still waits on the network fail.
        let flushed = tokio::time::timeout(SHUTDOWN_FLUSH, self.inner.tasks.wait())
            .await
            .is_ok();
        if !flushed {
            tracing::warn!(
                "sync tasks still running after {SHUTDOWN_FLUSH:?}; closing the endpoint under them"
            );
        }
        self.inner.endpoint.close().await;
        self.inner.tasks.wait().await;
        let listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(id) = listener {
            self.inner.engine.remove_listener(id);
        }
    }

    async fn dial_loop(&self, peer: Did, target: EndpointAddr, give_up: Option<Duration>) {
        let cancel = self.inner.cancel.clone();
        let mut delay = BACKOFF_FIRST;
        let mut last_session = Instant::now();
        while !cancel.is_cancelled() {
            if self.peers().contains(&peer) {
                last_session = Instant::now();
            } else {
                let started = Instant::now();
                let connected = tokio::select! {
                    c = self.inner.endpoint.connect(target.clone(), ALPN) => c,
                    () = cancel.cancelled() => return,
                };
                match connected {
                    Ok(conn) => {
                        self.run(conn, true).await;
                        last_session = Instant::now();
                        if started.elapsed() > Duration::from_secs(10) {
                            delay = BACKOFF_FIRST;
                        }
                    }
                    Err(e) => tracing::debug!(peer = %peer, error = %e, "dial failed"),
                }
            }
            if give_up.is_some_and(|d| last_session.elapsed() > d) {
                tracing::debug!(peer = %peer, "stopped dialing back");
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return,
            }
            let cap = if last_session.elapsed() < RECENT {
                BACKOFF_RECENT_MAX
            } else {
                BACKOFF_MAX
            };
            delay = (delay * 2).min(cap);
        }
    }

    async fn accept_loop(self) {
        let cancel = self.inner.cancel.clone();
        loop {
            let incoming = tokio::select! {
                i = self.inner.endpoint.accept() => i,
                () = cancel.cancelled() => return,
            };
            let Some(incoming) = incoming else {
                return; // The endpoint closed.
            };
            let node = self.clone();
            let from = match incoming.remote_addr() {
                iroh::endpoint::IncomingAddr::Ip(addr) => Some(addr),
                _ => None,
            };
            self.inner.tasks.spawn(async move {
                let conn = match incoming.accept() {
                    Ok(accepting) => tokio::select! {
                        c = accepting => c.map_err(|e| e.to_string()),
                        () = node.inner.cancel.cancelled() => return,
                    },
                    Err(e) => Err(e.to_string()),
                };
                match conn {
                    Ok(conn) => {
                        let peer = Did::from_bytes(conn.remote_id().as_bytes()).ok();
                        let ended_well = node.run(conn, false).await;
                        // Dial back a peer whose session ended without its
                        // fault, at the address it came from.
                        if let (true, Some(peer), Some(addr)) = (ended_well, peer, from)
                            && !node.inner.cancel.is_cancelled()
                        {
                            node.dial_back(peer, addr).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "incoming connection failed"),
                }
            });
        }
    }

    /// Runs one session on `conn` until either side ends it. Returns
    /// whether it ran and ended without a fault of either side.
    async fn run(&self, conn: Connection, dialer: bool) -> bool {
        let started = Instant::now();
        let ended_well = self.run_session(conn, dialer).await;
        self.inner
            .metrics
            .session_seconds
            .observe(started.elapsed().as_secs_f64());
        ended_well
    }

    /// [`SyncNode::run`], uncounted.
    async fn run_session(&self, conn: Connection, dialer: bool) -> bool {
        let peer = match Did::from_bytes(conn.remote_id().as_bytes()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "a peer whose key is not a DID");
                return false;
            }
        };
        let streams = if dialer {
            conn.open_bi().await.map_err(|e| e.to_string())
        } else {
            // A peer that connects and opens no stream would hold this
            // task forever.
            match tokio::time::timeout(self.inner.hello_timeout, conn.accept_bi()).await {
                Ok(s) => s.map_err(|e| e.to_string()),
                Err(_) => {
                    self.inner
                        .metrics
                        .peers_disconnected
                        .fetch_add(1, Ordering::Relaxed);
                    conn.close(1u32.into(), b"no stream in time");
                    Err("no stream in time".to_string())
                }
            }
        };
        let (send, recv) = match streams {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "no stream");
                return false;
            }
        };
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::unbounded_channel();
        {
            let mut sessions = self.inner.sessions();
            let from_peer = sessions.values().filter(|l| l.peer == peer).count();
            if from_peer >= MAX_SESSIONS_PER_PEER || sessions.len() >= MAX_SESSIONS {
                drop(sessions);
                tracing::warn!(peer = %peer, from_peer, "too many sessions; refused");
                conn.close(2u32.into(), b"too many sessions");
                return false;
            }
            sessions.insert(
                id,
                Live {
                    peer,
                    events: events_tx,
                },
            );
        }
        self.inner.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %peer, dialer, "sync session started");
        let outcome = self
            .drive(peer, send, recv, events)
            .instrument(tracing::info_span!("sync.session", peer = %peer, dialer))
            .await;
        self.inner.sessions().remove(&id);
        match outcome {
            Ok(()) => {
                tracing::info!(peer = %peer, "sync session ended");
                conn.close(0u32.into(), b"bye");
                true
            }
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "sync session ended");
                conn.close(1u32.into(), e.to_string().as_bytes());
                false
            }
        }
    }

    async fn drive(
        &self,
        peer: Did,
        send: SendStream,
        recv: RecvStream,
        mut events: mpsc::UnboundedReceiver<(Instant, Committed)>,
    ) -> Result<(), SessionError> {
        let engine = self.inner.engine.clone();
        let me = self.inner.me;
        let session = blocking(move || Ok(Session::new(engine, me, peer))).await?;
        let session = Arc::new(Mutex::new(session));
        // Few frames wait decoded: each may be 16 MiB.
        let (frames_tx, mut frames) = mpsc::channel(2);
        // Both abort when dropped: they never outlive the session.
        let reader = AbortOnDropHandle::new(self.inner.tasks.spawn(read_frames(
            recv,
            frames_tx,
            self.clone(),
        )));
        let (wire_tx, wire_rx) = mpsc::channel::<Vec<u8>>(4);
        let mut writer = AbortOnDropHandle::new(self.inner.tasks.spawn(write_frames(
            send,
            wire_rx,
            self.clone(),
        )));
        let cancel = self.inner.cancel.clone();
        let mut faults_seen = 0;
        let hello_by = tokio::time::Instant::now() + self.inner.hello_timeout;
        let result = loop {
            let (has_output, greeted) = {
                let s = lock(&session);
                (s.has_output(), s.greeted())
            };
            let step = tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                _ = tokio::time::sleep_until(hello_by), if !greeted => {
                    self.inner.metrics.faults.fetch_add(1, Ordering::Relaxed);
                    self.inner.metrics.peers_disconnected.fetch_add(1, Ordering::Relaxed);
                    break Err(SessionError::TooManyFaults { peer, faults: 1, last: "no Hello in time".into() });
                }
                frame = frames.recv() => match frame {
                    None => break Ok(()),
                    Some(Err(e)) => {
                        self.inner.metrics.faults.fetch_add(1, Ordering::Relaxed);
                        self.inner.metrics.peers_disconnected.fetch_add(1, Ordering::Relaxed);
                        break Err(SessionError::TooManyFaults { peer, faults: 1, last: e.to_string() });
                    }
                    Some(Ok(frame)) => {
                        self.count_frame(&frame);
                        let s = session.clone();
                        blocking(move || lock(&s).receive(frame)).await
                    }
                },
                Some((at, event)) = events.recv() => {
                    let s = session.clone();
                    let pushed = blocking(move || lock(&s).committed(&event)).await;
                    if let Ok(true) = pushed {
                        self.inner.metrics.push_seconds.observe(at.elapsed().as_secs_f64());
                    }
                    pushed.map(|_| ())
                }
                permit = wire_tx.reserve(), if has_output => {
                    let Ok(permit) = permit else { break Ok(()) };
                    let s = session.clone();
                    match blocking(move || lock(&s).next_frame()).await {
                        Ok(Some(frame)) => { permit.send(frame.to_wire()); Ok(()) }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            };
            let faults = lock(&session).stats().faults;
            self.inner
                .metrics
                .faults
                .fetch_add(u64::from(faults - faults_seen), Ordering::Relaxed);
            faults_seen = faults;
            if let Err(e) = step {
                if matches!(e, SessionError::TooManyFaults { .. }) {
                    self.inner
                        .metrics
                        .peers_disconnected
                        .fetch_add(1, Ordering::Relaxed);
                }
                break Err(e);
            }
        };
        reader.abort();
        let _ = reader.await;
        drop(wire_tx);
        // Let what is queued go out before the connection closes; the
        // writer is aborted when dropped if it takes longer.
        let _ = tokio::time::timeout(WRITER_FLUSH, &mut writer).await;
        let stats = lock(&session).stats().clone();
        let m = &self.inner.metrics;
        m.changes_in.fetch_add(stats.changes_in, Ordering::Relaxed);
        m.entries_in.fetch_add(stats.entries_in, Ordering::Relaxed);
        m.entries_out
            .fetch_add(stats.entries_out, Ordering::Relaxed);
        result
    }
}

impl Inner {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dialing(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Did>> {
        self.dialing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs engine work (sled, fsync, signature checks) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SessionError> + Send + 'static,
) -> Result<T, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SessionError::Storage(format!("session task failed: {e}")))?
}

/// Reads frames until the stream ends or a frame is bad; a bad frame is
/// passed on as an error and ends reading.
async fn read_frames(
    mut recv: RecvStream,
    frames: mpsc::Sender<Result<Frame, FrameError>>,
    node: SyncNode,
) {
    let mut tokens = FRAME_BURST;
    let mut last = Instant::now();
    loop {
        let mut len = [0u8; 4];
        if recv.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME_BYTES {
            let _ = frames.send(Err(FrameError::TooLarge(len))).await;
            return;
        }
        let mut body = vec![0u8; len];
        match tokio::time::timeout(FRAME_READ_TIMEOUT, recv.read_exact(&mut body)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                let _ = frames
                    .send(Err(FrameError::Malformed(
                        "a frame took too long to arrive".into(),
                    )))
                    .await;
                return;
            }
        }
        node.inner
            .metrics
            .bytes_in
            .fetch_add(4 + len as u64, Ordering::Relaxed);
        let frame = Frame::decode(&body);
        let bad = frame.is_err();
        if frames.send(frame).await.is_err() || bad {
            return;
        }
        // Token bucket: a peer past its rate waits here.
        let now = Instant::now();
        tokens =
            (tokens + now.duration_since(last).as_secs_f64() * FRAMES_PER_SECOND).min(FRAME_BURST);
        last = now;
        tokens -= 1.0;
        if tokens < 0.0 {
            node.inner
                .metrics
                .frames_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs_f64(-tokens / FRAMES_PER_SECOND)).await;
        }
    }
}

async fn write_frames(mut send: SendStream, mut wire: mpsc::Receiver<Vec<u8>>, node: SyncNode) {
    while let Some(bytes) = wire.recv().await {
        if send.write_all(&bytes).await.is_err() {
            return;
        }
        node.inner
            .metrics
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
    let _ = send.finish();
}
