//! The UDP relay every node's sync traffic crosses: delay, and with it
//! reordering, for a kernel without `tc netem`.
//!
//! Node `a` knows node `b` only at `<bridge>:<port(a, b)>`, a socket of this
//! relay in the harness's namespace. A datagram from `b`'s address goes back
//! to whoever last wrote to that socket (`a`); any other goes to `b`. Each
//! datagram waits a random delay of `0..=max` milliseconds on its own, so a
//! later one may overtake it: delay with jitter is reordering. Pairs across
//! a partition drop everything (the namespaces' blackhole routes only cut
//! nodes' direct addresses).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::Rng;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// The port of the relay's socket that node `from` uses to reach node `to`.
pub fn port(subnet: u8, from: usize, to: usize) -> u16 {
    // 20000..=44999: apart per subnet, so concurrent runs do not collide.
    20_000 + u16::from(subnet) * 100 + (from * 10 + to) as u16
}

/// What every pair's forwarding reads.
#[derive(Default)]
struct Shared {
    /// Largest delay, milliseconds (0: none).
    max_delay_ms: AtomicU64,
    /// Pairs that reach each other no more, both orders.
    cut: Mutex<HashSet<(usize, usize)>>,
    /// Datagrams forwarded.
    forwarded: AtomicU64,
}

/// The relay of one run; its sockets close on drop.
pub struct Relay {
    shared: Arc<Shared>,
    _tasks: JoinSet<()>,
}

impl Relay {
    /// Binds one socket per ordered pair of `nodes` on `bridge`; node `i`'s
    /// sync address is `ip(i):sync_port`.
    pub async fn start(
        bridge: Ipv4Addr,
        subnet: u8,
        nodes: usize,
        ip: impl Fn(usize) -> Ipv4Addr,
        sync_port: u16,
    ) -> Result<Relay> {
        let shared = Arc::new(Shared::default());
        let mut tasks = JoinSet::new();
        for from in 0..nodes {
            for to in 0..nodes {
                if from == to {
                    continue;
                }
                let at = SocketAddr::new(bridge.into(), port(subnet, from, to));
                let socket = UdpSocket::bind(at)
                    .await
                    .with_context(|| format!("binding the relay at {at}"))?;
                let target = SocketAddr::new(ip(to).into(), sync_port);
                tasks.spawn(forward(
                    Arc::new(socket),
                    target,
                    (from, to),
                    shared.clone(),
                ));
            }
        }
        Ok(Relay {
            shared,
            _tasks: tasks,
        })
    }

    /// Every datagram waits up to `max` milliseconds from now on.
    pub fn delay(&self, max_ms: u64) {
        self.shared.max_delay_ms.store(max_ms, Ordering::Relaxed);
    }

    /// `a` and `b` reach each other no more through the relay.
    pub fn cut(&self, a: usize, b: usize) {
        let mut cut = self.shared.cut.lock().unwrap_or_else(|p| p.into_inner());
        cut.insert((a, b));
        cut.insert((b, a));
    }

    /// Datagrams forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Every pair reaches every other again.
    pub fn heal(&self) {
        self.shared
            .cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Forwards one pair's datagrams, both ways, until the relay drops.
async fn forward(
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    pair: (usize, usize),
    shared: Arc<Shared>,
) {
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let to = if from == target {
            match client {
                Some(c) => c,
                None => continue,
            }
        } else {
            client = Some(from);
            target
        };
        if shared
            .cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&pair)
        {
            continue;
        }
        shared.forwarded.fetch_add(1, Ordering::Relaxed);
        let bytes = buf[..len].to_vec();
        let max = shared.max_delay_ms.load(Ordering::Relaxed);
        if max == 0 {
            let _ = socket.send_to(&bytes, to).await;
            continue;
        }
        let wait = Duration::from_millis(rand::rng().random_range(0..=max));
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = socket.send_to(&bytes, to).await;
        });
    }
}
