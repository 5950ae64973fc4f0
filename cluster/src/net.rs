//! The virtual network: one namespace per node, each joined to a bridge in
//! the harness's namespace by a veth pair, and the faults it can suffer.
//!
//! Node `i` is `10.213.<subnet>.<i+1>` on its `eth0`; the bridge is
//! `.254`, so the harness reaches every node's gateway however the nodes are
//! split. Nodes reach each other's sync through a relay on the bridge
//! ([`crate::relay`]), which delays and reorders. Partitions are blackhole
//! routes inside the namespaces (between nodes only) and cuts in the relay;
//! packet loss is an nftables rule dropping a share of the node's UDP (sync
//! is QUIC; the harness's HTTP is TCP and is spared).
//! Everything is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `ip` (or any command) and fails with its stderr.
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is iproute2/nftables installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces, veths and bridge of one run.
pub struct Net {
    tag: String,
    subnet: u8,
    nodes: usize,
    /// Blackhole routes in place, as (from, to).
    cut: Vec<(usize, usize)>,
    /// Nodes with a loss rule.
    lossy: Vec<usize>,
    /// The relay the nodes' sync crosses, once attached.
    relay: Option<crate::relay::Relay>,
}

impl Net {
    /// Creates the bridge and `nodes` namespaces. `tag` (at most 5
    /// characters) keeps concurrent runs apart; so does `subnet`.
    pub fn create(tag: &str, subnet: u8, nodes: usize) -> Result<Net> {
        let net = Net {
            tag: tag.to_owned(),
            subnet,
            nodes,
            cut: Vec::new(),
            lossy: Vec::new(),
            relay: None,
        };
        // A leftover of a killed run with the same tag goes first.
        net.remove();
        let bridge = net.bridge();
        sh("ip", &["link", "add", &bridge, "type", "bridge"])?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.gateway_ip()),
                "dev",
                &bridge,
            ],
        )?;
        sh("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            let (ns, veth) = (net.ns(i), net.veth(i));
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", net.ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            // Multicast goes out on the LAN, as on a host with a default
            // route there (mDNS needs it; nothing else leaves the subnet).
            sh(
                "ip",
                &["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"],
            )?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("icb{}", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("icv{}n{i}", self.tag)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("icn{}n{i}", self.tag)
    }

    /// The run's subnet (`10.213.<subnet>.0/24`).
    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    /// Starts the relay every node's sync crosses ([`crate::relay`]).
    pub async fn attach_relay(&mut self, sync_port: u16) -> Result<()> {
        let ips: Vec<Ipv4Addr> = (0..self.nodes).map(|i| self.ip(i)).collect();
        let relay = crate::relay::Relay::start(
            self.gateway_ip(),
            self.subnet,
            self.nodes,
            |i| ips[i],
            sync_port,
        )
        .await?;
        self.relay = Some(relay);
        Ok(())
    }

    /// Datagrams the relay forwarded so far.
    pub fn relayed(&self) -> u64 {
        self.relay.as_ref().map_or(0, |r| r.forwarded())
    }

    /// Every datagram through the relay waits up to `max_ms` (0: none).
    pub fn delay(&self, max_ms: u64) {
        if let Some(r) = &self.relay {
            r.delay(max_ms);
        }
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, i as u8 + 1)
    }

    /// The harness's address on the bridge (where the byzantine peer
    /// speaks from).
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    /// Splits the nodes: those in `side` reach none of the others, and the
    /// others none of them (on top of cuts already made).
    pub fn partition(&mut self, side: &[usize]) -> Result<()> {
        for a in 0..self.nodes {
            for b in 0..self.nodes {
                if side.contains(&a) != side.contains(&b) && !self.cut.contains(&(a, b)) {
                    let to = format!("{}/32", self.ip(b));
                    sh("ip", &["-n", &self.ns(a), "route", "add", "blackhole", &to])?;
                    if let Some(r) = &self.relay {
                        r.cut(a, b);
                    }
                    self.cut.push((a, b));
                }
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<()> {
        if let Some(r) = &self.relay {
            r.heal();
        }
        for (a, b) in std::mem::take(&mut self.cut) {
            let to = format!("{}/32", self.ip(b));
            sh("ip", &["-n", &self.ns(a), "route", "del", "blackhole", &to])?;
        }
        Ok(())
    }

    /// Drops `percent` % of node `i`'s UDP, both ways.
    pub fn lose(&mut self, i: usize, percent: u8) -> Result<()> {
        self.clear_loss(i)?;
        let ns = self.ns(i);
        let nft = |rule: &str| sh("ip", &["netns", "exec", &ns, "nft", rule]);
        nft("add table inet icnloss")?;
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            nft(&format!(
                "add chain inet icnloss {chain} {{ type filter hook {hook} priority 0; }}"
            ))?;
            nft(&format!(
                "add rule inet icnloss {chain} meta l4proto udp numgen random mod 100 < {percent} drop"
            ))?;
        }
        self.lossy.push(i);
        Ok(())
    }

    /// Stops dropping node `i`'s packets.
    pub fn clear_loss(&mut self, i: usize) -> Result<()> {
        if let Some(at) = self.lossy.iter().position(|&n| n == i) {
            self.lossy.remove(at);
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.ns(i),
                    "nft",
                    "delete table inet icnloss",
                ],
            )?;
        }
        Ok(())
    }

    /// Heals every partition, stops every loss and every delay.
    pub fn clear(&mut self) -> Result<()> {
        self.heal()?;
        self.delay(0);
        for i in self.lossy.clone() {
            self.clear_loss(i)?;
        }
        Ok(())
    }

    fn remove(&self) {
        for i in 0..self.nodes {
            let _ = sh("ip", &["netns", "del", &self.ns(i)]);
            let _ = sh("ip", &["link", "del", &self.veth(i)]);
        }
        let _ = sh("ip", &["link", "del", &self.bridge()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}
