//! One run: a seeded schedule of members' payments and faults, played
//! against a cluster, then the checker.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use icn_node::client::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::byzantine::{self, Thief};
use crate::net::Net;
use crate::nodes::{self, Node};
use crate::phones;

/// The co-op every run uses.
const COOP: &str = "chaos";
/// Its governance domain, where every member votes.
const DOMAIN: &str = "board";
/// Members' credit limit, in hours: two payments of [`OVERSPEND`] on two
/// nodes at once cannot both count.
const CREDIT_LIMIT: i64 = 100;
const OVERSPEND: i64 = 70;

/// What a run is given.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes, 3 to 5.
    pub nodes: usize,
    /// Fixes the schedule (and the nodes' keys).
    pub seed: u64,
    /// Steps in the schedule.
    pub steps: usize,
    /// The `icnd` binary.
    pub icnd: PathBuf,
    /// Where the nodes' data directories go (emptied first).
    pub workdir: PathBuf,
    /// Keeps concurrent runs' interfaces apart (at most 5 characters).
    pub tag: String,
    /// Keeps concurrent runs' addresses apart.
    pub subnet: u8,
    /// Nodes find each other by mDNS alone (no bootstrap peers, no relay
    /// between them): [`mdns_probe`].
    pub mdns: bool,
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Member `from` pays `to`, writing through node `node`.
    Pay {
        /// The node written to.
        node: usize,
        /// The payer.
        from: usize,
        /// The payee.
        to: usize,
        /// Hours.
        amount: i64,
    },
    /// Member `member` pays [`OVERSPEND`] through two nodes at once.
    Overspend {
        /// The payer.
        member: usize,
        /// The two nodes.
        nodes: (usize, usize),
    },
    /// The admin suspends (`false`) or reinstates (`true`) the spare
    /// member, through node 0: one writer, so the last acknowledged status
    /// (or a later unanswered one) must be the one every node ends with.
    Standing(bool),
    /// The admin proposes (and opens) a new proposal through node 0;
    /// votes go to the newest.
    Propose,
    /// A member votes on the newest proposal through its own node.
    Vote(usize, &'static str),
    /// The admin (its proposer) closes the newest proposal through node 0.
    Close,
    /// These nodes reach none of the others.
    Partition(Vec<usize>),
    /// Every partition healed.
    Heal,
    /// The node loses this share of its UDP.
    Loss(usize, u8),
    /// The node's loss stops.
    LossOff(usize),
    /// `kill -9` of the node.
    Kill(usize),
    /// The node starts again on its data.
    Restart(usize),
    /// The node restarts (`kill -9` first, if it runs) with its wall clock
    /// this many seconds off, until the end of the run.
    Skew(usize, i64),
    /// Member 1's phone pays member 0 from its allowance through the node
    /// (if the node holds the grant, and within the allowance).
    PhonePay {
        /// The node written to.
        node: usize,
        /// Hours.
        amount: i64,
    },
    /// Member 2's phone pays member 0 one hour through the node.
    Phone2Pay(usize),
    /// Member 2 revokes its phone ("lost") through its own node (once a
    /// run, before the end if node 2 was down).
    RevokePhone,
    /// The admin registers a relay in the co-op, and the relay starts for
    /// the first time (once a run, at the end if node 0 was down).
    RelayJoins,
    /// Every datagram between nodes waits up to this many milliseconds, each
    /// on its own (so they overtake each other).
    Delay(u64),
    /// No more delay.
    DelayOff,
    /// The node's disk fills up: every free block taken.
    DiskFull(usize),
    /// The node's disk has room again.
    DiskFree(usize),
    /// The byzantine peer visits the node: backdated, replayed and forged
    /// data ([`crate::byzantine`]).
    Byzantine(usize),
    /// The admin removes the byzantine peer's member, through node 0 (once
    /// a run, before the end if node 0 was down).
    RemoveThief,
    /// Time passes, milliseconds.
    Pause(u64),
}

/// The seeded schedule of `steps` steps for `nodes` nodes.
pub fn schedule(seed: u64, nodes: usize, steps: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut down = vec![false; nodes];
    let mut lossy = vec![false; nodes];
    let mut full = vec![false; nodes];
    let mut delayed = false;
    let mut out = Vec::new();
    let removal = rng.random_range(steps / 4..=steps * 3 / 4);
    let revocation = rng.random_range(steps / 4..=steps * 3 / 4);
    let relay = rng.random_range(steps / 4..=steps * 3 / 4);
    for at in 0..steps {
        if at == relay {
            out.push(Step::RelayJoins);
        }
        if at == removal {
            out.push(Step::RemoveThief);
        }
        if at == revocation {
            out.push(Step::RevokePhone);
        }
        let up: Vec<usize> = (0..nodes).filter(|&i| !down[i]).collect();
        let step = match rng.random_range(0..130) {
            115..124 => Step::PhonePay {
                node: rng.random_range(0..nodes),
                amount: rng.random_range(1..=3),
            },
            124..130 => Step::Phone2Pay(rng.random_range(0..nodes)),
            110..115 => {
                delayed = !delayed;
                if delayed {
                    Step::Delay(rng.random_range(5..=200))
                } else {
                    Step::DelayOff
                }
            }
            100..105 => Step::Byzantine(rng.random_range(0..nodes)),
            105..110 => {
                let i = rng.random_range(0..nodes);
                full[i] = !full[i];
                if full[i] {
                    Step::DiskFull(i)
                } else {
                    Step::DiskFree(i)
                }
            }
            0..5 => Step::Standing(rng.random_bool(0.5)),
            5..7 => Step::Propose,
            7..20 => Step::Vote(
                rng.random_range(0..nodes),
                ["for", "against", "abstain"][rng.random_range(0..3)],
            ),
            20..22 => Step::Close,
            22..55 => {
                let from = rng.random_range(0..nodes);
                let to = (from + rng.random_range(1..nodes)) % nodes;
                // Mostly through the payer's own node.
                let node = if rng.random_bool(0.7) {
                    from
                } else {
                    rng.random_range(0..nodes)
                };
                Step::Pay {
                    node,
                    from,
                    to,
                    amount: rng.random_range(1..=10),
                }
            }
            55..62 => {
                let member = rng.random_range(0..nodes);
                let a = rng.random_range(0..nodes);
                let b = (a + rng.random_range(1..nodes)) % nodes;
                Step::Overspend {
                    member,
                    nodes: (a, b),
                }
            }
            62..70 => {
                let mut side: Vec<usize> = (0..nodes).filter(|_| rng.random_bool(0.5)).collect();
                if side.is_empty() || side.len() == nodes {
                    side = vec![rng.random_range(0..nodes)];
                }
                Step::Partition(side)
            }
            70..77 => Step::Heal,
            77..82 => {
                let i = rng.random_range(0..nodes);
                if lossy[i] {
                    lossy[i] = false;
                    Step::LossOff(i)
                } else {
                    lossy[i] = true;
                    Step::Loss(i, rng.random_range(5..=40))
                }
            }
            82..88 if up.len() > 1 => {
                let i = up[rng.random_range(0..up.len())];
                down[i] = true;
                Step::Kill(i)
            }
            94..97 => {
                let i = rng.random_range(0..nodes);
                down[i] = false;
                let seconds = rng.random_range(30..=7_200);
                Step::Skew(
                    i,
                    if rng.random_bool(0.5) {
                        seconds
                    } else {
                        -seconds
                    },
                )
            }
            88..94 if up.len() < nodes => {
                let downs: Vec<usize> = (0..nodes).filter(|&i| down[i]).collect();
                let i = downs[rng.random_range(0..downs.len())];
                down[i] = false;
                Step::Restart(i)
            }
            _ => Step::Pause(rng.random_range(50..=600)),
        };
        out.push(step);
    }
    out
}

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Writes acknowledged (2xx with an entry id).
    pub acknowledged: usize,
    /// Writes refused or unanswered (not acknowledged: nothing is owed).
    pub unacknowledged: usize,
    /// Votes acknowledged.
    pub votes: usize,
    /// Acknowledged writes missing on some node after convergence.
    pub lost: Vec<String>,
    /// Entries conflicted at the end (overspends and the like).
    pub conflicted: usize,
    /// Writes refused by a node with a full disk, with a 503 that says so.
    pub disk_refusals: usize,
    /// Datagrams between nodes that crossed the relay.
    pub relayed: u64,
    /// Payments from a phone's allowance acknowledged (every one must
    /// count everywhere).
    pub allowance_payments: usize,
    /// Payments by a revoked phone acknowledged after its revocation was
    /// (none may count).
    pub after_revocation: usize,
    /// Times a node whose disk had refused a write restarted itself to
    /// reopen its store, once the disk had room.
    pub reopened: usize,
    /// Entries the byzantine peer backdated after its removal was
    /// acknowledged (none may count).
    pub backdated: usize,
    /// From the last heal to identical nodes.
    pub converge: Duration,
    /// What went wrong, if anything.
    pub failure: Option<String>,
}

struct Cluster {
    net: Net,
    nodes: Vec<Node>,
    icnd: PathBuf,
    /// Clients by (node, member).
    clients: HashMap<(usize, usize), Client>,
    /// The byzantine peer, once the co-op is set up.
    thief: Option<Thief>,
    /// Writes a node with a full disk refused with a clear 503.
    disk_refusals: usize,
    /// The first refusal by a node with a full disk that was not clear.
    unclear: Option<String>,
    /// The last error the admin's removal of the thief met.
    last_refusal: String,
    /// Fixes the phones' keys.
    seed: u64,
    /// Phones' clients by (node, member).
    phone_clients: HashMap<(usize, usize), Client>,
    /// Member 1's grant to its phone, once made.
    grant: Option<String>,
    /// Hours member 1's phone tried to pay (acknowledged or not).
    phone_spent: i64,
    /// Payments by member 1's phone that were acknowledged.
    phone_acked: Vec<String>,
    /// Whether member 2's revocation of its phone was acknowledged.
    phone2_revoked: bool,
    /// Payments by member 2's phone acknowledged after that.
    phone2_late: Vec<String>,
    /// Whether the relay (the last node) was registered and started.
    relay_joined: bool,
}

impl Cluster {
    async fn client(&mut self, node: usize, member: usize) -> Result<&Client> {
        if !self.clients.contains_key(&(node, member)) {
            let key = self.nodes[member].key.clone();
            let c = self.nodes[node].client(&key).await?;
            self.clients.insert((node, member), c);
        }
        self.clients
            .get(&(node, member))
            .ok_or_else(|| anyhow!("no client"))
    }

    async fn pay(&mut self, node: usize, from: usize, to: usize, amount: i64) -> Result<String> {
        if !self.nodes[node].is_up() {
            bail!("node {node} is down");
        }
        let to = self.nodes[to].key.did().to_string();
        let body = json!({"to": to, "amount": amount, "unit": "hours", "memo": "chaos"});
        let answer = self
            .client(node, from)
            .await?
            .call("POST", &format!("/v1/ledger/{COOP}/settle"), Some(body))
            .await;
        let answer = self.judge_refusal(node, answer)?;
        answer["entry_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("a settle answered no entry id: {answer}"))
    }

    /// What node `i` holds: document and ledger heads, and the trial
    /// balance, as its own member sees them.
    async fn state(&mut self, i: usize) -> Result<Value> {
        let reader = self.reader(i);
        let c = self.client(i, reader).await?;
        let heads = c
            .call("GET", &format!("/v1/ledger/{COOP}/heads"), None)
            .await?;
        let mut trial = c
            .call("GET", &format!("/v1/ledger/{COOP}/trial-balance"), None)
            .await?;
        trial["coop_id"] = Value::Null;
        let proposals = c
            .list(&format!("/v1/gov/domains/{DOMAIN}/proposals"))
            .await?;
        Ok(json!({"heads": heads, "trial": trial, "proposals": proposals}))
    }
}

/// Plays one run and checks it. A run that could not be set up is an
/// `Err`; a run that found loss or divergence is a report with a failure.
pub async fn run(opts: &Options) -> Result<Report> {
    let steps = schedule(opts.seed, opts.nodes, opts.steps);
    let mut c = start(opts).await?;

    let mut report = Report {
        seed: opts.seed,
        ..Report::default()
    };
    let mut acked: Vec<String> = Vec::new();
    // The spare's statuses written, and whether each was acknowledged.
    let mut standings: Vec<(bool, bool)> = Vec::new();
    let spare_path = format!("/v1/coops/{COOP}/members/{}", spare(opts.seed).did());
    // Proposals made, and the votes acknowledged: (proposal, member).
    c.propose("p1").await.context("the first proposal")?;
    let mut proposals = 1usize;
    let mut votes: Vec<(String, usize)> = Vec::new();
    for step in &steps {
        match step {
            Step::Propose => {
                let id = format!("p{}", proposals + 1);
                if c.propose(&id).await.is_ok() {
                    proposals += 1;
                } else {
                    report.unacknowledged += 1;
                }
            }
            Step::Vote(member, choice) => {
                let id = format!("p{proposals}");
                let path = format!("/v1/gov/proposals/{id}/vote?domain_id={DOMAIN}");
                let done = proposals > 0
                    && c.nodes[*member].is_up()
                    && match c.client(*member, *member).await {
                        Ok(client) => client
                            .call("POST", &path, Some(json!({ "choice": choice })))
                            .await
                            .is_ok(),
                        Err(_) => false,
                    };
                if done {
                    votes.push((id, *member));
                } else {
                    report.unacknowledged += 1;
                }
            }
            Step::Close => {
                let path = format!("/v1/gov/proposals/p{proposals}/close?domain_id={DOMAIN}");
                let done = proposals > 0
                    && c.nodes[0].is_up()
                    && match c.client(0, 0).await {
                        Ok(admin) => admin.call("POST", &path, None).await.is_ok(),
                        Err(_) => false,
                    };
                report.unacknowledged += usize::from(!done);
            }
            Step::Standing(active) => {
                let status = if *active { "active" } else { "suspended" };
                let done = c.nodes[0].is_up()
                    && match c.client(0, 0).await {
                        Ok(admin) => admin
                            .call("PUT", &spare_path, Some(json!({ "status": status })))
                            .await
                            .is_ok(),
                        Err(_) => false,
                    };
                standings.push((*active, done));
                *report.faults.entry("member change").or_default() += usize::from(done);
            }
            Step::Pay {
                node,
                from,
                to,
                amount,
            } => match c.pay(*node, *from, *to, *amount).await {
                Ok(id) => acked.push(id),
                Err(_) => report.unacknowledged += 1,
            },
            Step::Overspend { member, nodes } => {
                let (a, b) = *nodes;
                let to = (member + 1) % opts.nodes;
                // Log in first, so that the two payments leave together.
                let ready =
                    c.client(a, *member).await.is_ok() && c.client(b, *member).await.is_ok();
                if ready && c.nodes[a].is_up() && c.nodes[b].is_up() {
                    let did = c.nodes[to].key.did().to_string();
                    let body = json!({"to": did, "amount": OVERSPEND, "unit": "hours", "memo": "overspend"});
                    let path = format!("/v1/ledger/{COOP}/settle");
                    let (ca, cb) = (&c.clients[&(a, *member)], &c.clients[&(b, *member)]);
                    let (ra, rb) = tokio::join!(
                        ca.call("POST", &path, Some(body.clone())),
                        cb.call("POST", &path, Some(body))
                    );
                    let (ra, rb) = (c.judge_refusal(a, ra), c.judge_refusal(b, rb));
                    for r in [ra, rb] {
                        match r
                            .ok()
                            .and_then(|v| v["entry_id"].as_str().map(str::to_owned))
                        {
                            Some(id) => acked.push(id),
                            None => report.unacknowledged += 1,
                        }
                    }
                } else {
                    report.unacknowledged += 2;
                }
                *report.faults.entry("overspend").or_default() += 1;
            }
            Step::Partition(side) => {
                c.net.partition(side)?;
                *report.faults.entry("partition").or_default() += 1;
            }
            Step::Heal => c.net.heal()?,
            Step::Loss(i, percent) => {
                c.net.lose(*i, *percent)?;
                *report.faults.entry("loss").or_default() += 1;
            }
            Step::LossOff(i) => c.net.clear_loss(*i)?,
            Step::Kill(i) => {
                c.nodes[*i].kill()?;
                *report.faults.entry("kill -9").or_default() += 1;
            }
            Step::Skew(i, seconds) => {
                c.nodes[*i].kill()?;
                c.nodes[*i].skew = *seconds;
                c.nodes[*i].start(&c.icnd)?;
                c.nodes[*i].wait_up_unless_full().await?;
                *report.faults.entry("clock skew").or_default() += 1;
            }
            Step::Restart(i) => {
                c.nodes[*i].start(&c.icnd)?;
                c.nodes[*i].wait_up_unless_full().await?;
            }
            Step::PhonePay { node, amount } => match c.phone_pay(*node, *amount).await {
                Some(id) => {
                    acked.push(id.clone());
                    c.phone_acked.push(id);
                }
                None => report.unacknowledged += 1,
            },
            Step::Phone2Pay(node) => match c.phone2_pay(*node).await {
                Some(id) => {
                    acked.push(id.clone());
                    if c.phone2_revoked {
                        c.phone2_late.push(id);
                    }
                }
                None => report.unacknowledged += 1,
            },
            Step::RelayJoins => {
                if c.join_relay().await? {
                    *report.faults.entry("relay joining late").or_default() += 1;
                }
            }
            Step::RevokePhone => {
                if c.revoke_phone().await {
                    *report.faults.entry("device revocation").or_default() += 1;
                }
            }
            Step::Delay(ms) => {
                c.net.delay(*ms);
                *report.faults.entry("delay and reordering").or_default() += 1;
            }
            Step::DelayOff => c.net.delay(0),
            Step::DiskFull(i) => {
                c.nodes[*i].fill_disk()?;
                *report.faults.entry("disk full").or_default() += 1;
            }
            Step::DiskFree(i) => c.nodes[*i].free_disk()?,
            Step::Byzantine(i) => {
                if c.visit(*i).await? {
                    *report.faults.entry("byzantine visit").or_default() += 1;
                }
            }
            Step::RemoveThief => {
                if c.remove_thief().await {
                    *report.faults.entry("member removal").or_default() += 1;
                }
            }
            Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
    }
    report.acknowledged = acked.len();
    report.disk_refusals = c.disk_refusals;
    if let Some(message) = c.unclear.take() {
        report.failure = Some(format!(
            "a node with a full disk refused a write without saying why: {message}"
        ));
        return Ok(report);
    }

    // Heal everything, bring every node back, and wait for quiet: the
    // convergence time counts from the heal, restarts included (a node whose
    // disk refused a write restarts itself once it has room again).
    c.net.clear()?;
    for n in &mut c.nodes {
        n.free_disk()?;
    }
    let healed = Instant::now();
    for i in 0..opts.nodes {
        if c.nodes[i].skew != 0 {
            c.nodes[i].kill()?;
            c.nodes[i].skew = 0;
        }
        // A node started on a full disk waits for room; it has room now.
        c.nodes[i].start(&c.icnd)?;
        c.nodes[i].wait_up(Duration::from_secs(60)).await?;
    }
    // Node 0 (or 2) may still be reopening its store after a full disk.
    if !c.phone2_revoked {
        within_30s(
            &mut c,
            "node 2 did not revoke member 2's phone",
            async |c| Ok(c.revoke_phone().await),
        )
        .await?;
        *report.faults.entry("device revocation").or_default() += 1;
    }
    if !c.relay_joined {
        within_30s(&mut c, "node 0 did not register the relay", async |c| {
            c.join_relay().await
        })
        .await?;
        *report.faults.entry("relay joining late").or_default() += 1;
    }
    // The thief is removed by now, and visits every node once more: each
    // must count it faulty, and hold what it sent.
    if !c.thief()?.removed {
        within_30s(
            &mut c,
            "node 0 did not remove the byzantine member",
            async |c| Ok(c.remove_thief().await),
        )
        .await?;
        *report.faults.entry("member removal").or_default() += 1;
    }
    for i in 0..opts.nodes {
        let mut reached = false;
        for _ in 0..10 {
            if c.visit(i).await? {
                reached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !reached {
            bail!("the byzantine peer could not reach node {i} after the heal");
        }
        *report.faults.entry("byzantine visit").or_default() += 1;
    }
    let mut last = Vec::new();
    let converged = loop {
        let mut states = Vec::new();
        for i in 0..c.nodes.len() {
            states.push(
                c.state(i)
                    .await
                    .unwrap_or_else(|e| json!({"error": e.to_string()})),
            );
        }
        if states
            .iter()
            .all(|s| s.get("error").is_none() && *s == states[0])
        {
            break true;
        }
        last = states;
        if healed.elapsed() > Duration::from_secs(120) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    report.converge = healed.elapsed();
    report.relayed = c.net.relayed();
    report.reopened = c
        .nodes
        .iter()
        .map(|n| n.log_count("icnd restarts to reopen its store"))
        .sum();
    if !converged {
        report.failure = Some(format!(
            "no convergence within 120 s; the nodes hold: {}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        ));
        return Ok(report);
    }
    let state = c.state(0).await?;
    report.conflicted = state["trial"]["conflicted"].as_array().map_or(0, Vec::len);
    if let Some(totals) = state["trial"]["totals"].as_object()
        && let Some((unit, total)) = totals.iter().find(|(_, t)| t.as_str() != Some("0"))
    {
        report.failure = Some(format!("unit {unit} sums to {total}, not 0"));
        return Ok(report);
    }
    // The spare's status: the last acknowledged one, or one written after
    // it whose answer was lost.
    let from = standings.iter().rposition(|(_, done)| *done);
    let mut allowed: Vec<bool> = match from {
        Some(at) => standings[at..].iter().map(|(a, _)| *a).collect(),
        None => std::iter::once(true)
            .chain(standings.iter().map(|(a, _)| *a))
            .collect(),
    };
    allowed.dedup();
    for i in 0..c.nodes.len() {
        let reader = c.reader(i);
        let members = c
            .client(i, reader)
            .await?
            .list(&format!("/v1/coops/{COOP}/members"))
            .await?;
        let did = spare(opts.seed).did().to_string();
        let member = members["items"]
            .as_array()
            .and_then(|items| items.iter().find(|m| m["did"] == did.as_str()))
            .cloned()
            .ok_or_else(|| anyhow!("node {i} lists no spare member"))?;
        let active = member["status"] == "active";
        if !allowed.contains(&active) {
            report.failure = Some(format!(
                "node {i} says the spare member is {}, but the last acknowledged status was {:?}",
                member["status"],
                from.map(|at| standings[at].0)
            ));
            return Ok(report);
        }
    }
    // Every acknowledged vote is in its proposal (counted or, when it was
    // concurrent with the close, kept), on every node: the nodes agree.
    report.votes = votes.len();
    let listed = state["proposals"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (id, member) in &votes {
        let did = c.nodes[*member].key.did().to_string();
        let found = listed.iter().any(|p| {
            p["id"] == id.as_str()
                && p["votes"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|v| v["voter"] == did.as_str()))
        });
        if !found {
            report
                .lost
                .push(format!("the vote of member {member} on {id}"));
        }
    }
    for id in &acked {
        for i in 0..c.nodes.len() {
            let reader = c.reader(i);
            let found = c
                .client(i, reader)
                .await?
                .call("GET", &format!("/v1/ledger/{COOP}/entries/{id}"), None)
                .await;
            if found.is_err() {
                report.lost.push(format!("{id} on node {i}"));
            }
        }
    }
    // Every payment member 1's phone had acknowledged is within its
    // allowance (the harness never asks for more), so it counts everywhere;
    // what member 2's phone had acknowledged after its revocation counts
    // nowhere.
    report.allowance_payments = c.phone_acked.len();
    report.after_revocation = c.phone2_late.len();
    for (ids, want) in [
        (c.phone_acked.clone(), "applied"),
        (c.phone2_late.clone(), "conflicted"),
    ] {
        for id in &ids {
            for i in 0..c.nodes.len() {
                let reader = c.reader(i);
                let client = c.client(i, reader).await?;
                let held = phones::entry(client, COOP, id).await;
                let ok = match &held {
                    Some((status, from_allowance)) => {
                        status == want && (want == "conflicted" || *from_allowance)
                    }
                    None => false,
                };
                if !ok {
                    report.failure = Some(format!(
                        "node {i} holds the phone's payment {id} as {held:?} (status, from its allowance), not {want}"
                    ));
                    return Ok(report);
                }
            }
        }
    }
    // Nothing the thief wrote after its removal was acknowledged counts
    // anywhere, and every node counted its forgeries as faults.
    let thief = c.thief()?;
    let late: Vec<byzantine::Backdated> = thief
        .sent
        .iter()
        .filter(|b| b.after_removal)
        .cloned()
        .collect();
    report.backdated = late.len();
    for b in &late {
        for i in 0..c.nodes.len() {
            // Every node holds it (the last visits brought it, or sync from
            // a node they reached), and it counts nowhere. A node busy with
            // other work may take a moment; the thief visits again.
            let mut status = None;
            for attempt in 1..=30 {
                let reader = c.reader(i);
                let client = c.client(i, reader).await?;
                status = byzantine::status(client, COOP, &b.id).await;
                if status.is_some() {
                    break;
                }
                if attempt % 10 == 0 && i < opts.nodes {
                    c.visit(i).await?;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if status.as_deref() != Some("conflicted") {
                report.failure = Some(format!(
                    "node {i} holds {} as {status:?}: the removed member backdated it after its removal, so it must be held, conflicted",
                    b.id
                ));
                return Ok(report);
            }
        }
    }
    for i in 0..opts.nodes {
        // A node busy with other work may count a moment later; a node that
        // restarted since (its counters start again) is visited again.
        let mut faults = 0;
        for attempt in 1..=30 {
            faults = c.nodes[i].sync_faults().await?;
            if faults > 0 {
                break;
            }
            if attempt % 10 == 0 {
                c.visit(i).await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if faults == 0 {
            report.failure = Some(format!(
                "node {i} counted no fault, though the byzantine peer sent it forgeries"
            ));
            return Ok(report);
        }
    }
    if !report.lost.is_empty() {
        report.failure = Some(format!(
            "{} acknowledged writes missing: {:?}",
            report.lost.len(),
            report.lost
        ));
    }
    Ok(report)
}

/// Tries `step` every half second until it is done, for at most 30 s
/// after the heal; fails with `what` and the last refusal otherwise.
async fn within_30s(
    c: &mut Cluster,
    what: &str,
    mut step: impl AsyncFnMut(&mut Cluster) -> Result<bool>,
) -> Result<()> {
    for _ in 0..60 {
        if step(c).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{what} within 30 s of the heal: {}", c.last_refusal)
}

impl Cluster {
    /// Passes an answer through, noting a refusal by a node whose disk is
    /// full: a 503 that says the disk refused is the clear error asked for;
    /// a 500 is not.
    fn judge_refusal(&mut self, node: usize, answer: Result<Value>) -> Result<Value> {
        if let Err(e) = &answer
            && self.nodes[node].full
        {
            let message = e.to_string();
            if message.contains("503") && message.contains("disk") {
                self.disk_refusals += 1;
            } else if message.contains("500") {
                self.unclear.get_or_insert(message);
            }
        }
        answer
    }

    /// Whom the checker logs in as at node `i`: its own member, or at the
    /// relay (the last node), member 1, who is in every document.
    fn reader(&self, i: usize) -> usize {
        if i + 1 == self.nodes.len() { 1 } else { i }
    }

    /// The admin registers the relay in the co-op through node 0, and the
    /// relay starts: it joins late, with everything to catch up on.
    async fn join_relay(&mut self) -> Result<bool> {
        let relay = self.nodes.len() - 1;
        if self.relay_joined {
            return Ok(true);
        }
        if !self.nodes[0].is_up() {
            return Ok(false);
        }
        let did = self.nodes[relay].key.did().to_string();
        let addr = format!("{}:{}", self.net.ip(relay), nodes::SYNC_PORT);
        let answer = match self.client(0, 0).await {
            Ok(admin) => {
                admin
                    .call(
                        "POST",
                        &format!("/v1/coops/{COOP}/relays"),
                        Some(json!({ "did": did, "addr": addr })),
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = self.judge_refusal(0, answer) {
            self.last_refusal = e.to_string();
            return Ok(false);
        }
        self.nodes[relay].start(&self.icnd)?;
        self.nodes[relay].wait_up(Duration::from_secs(60)).await?;
        self.relay_joined = true;
        Ok(true)
    }

    /// The phone of member `member` (1 or 2), logged in at node `node`.
    async fn phone_client(&mut self, node: usize, member: usize) -> Result<&Client> {
        if !self.phone_clients.contains_key(&(node, member)) {
            let phone = phones::key(self.seed, member as u8);
            let did = self.nodes[member].key.did().to_string();
            let mut client = Client::new(self.nodes[node].url())?;
            client.login_for(&phone, Some(&did)).await?;
            self.phone_clients.insert((node, member), client);
        }
        self.phone_clients
            .get(&(node, member))
            .ok_or_else(|| anyhow!("no client"))
    }

    /// Member 1's phone pays member 0 from its allowance, signing the entry
    /// itself and submitting it through `node`, if that node holds the
    /// grant and the allowance has room for every payment tried so far; the
    /// entry id, if acknowledged.
    async fn phone_pay(&mut self, node: usize, amount: i64) -> Option<String> {
        let grant = self.grant.clone()?;
        if !self.nodes[node].is_up() || self.phone_spent + amount > phones::ALLOWANCE {
            return None;
        }
        // Only where the grant counts: the phone cites the node's heads, and
        // a spend from an allowance must descend from its grant.
        let admitted = match self.client(node, node).await {
            Ok(c) => phones::entry(c, COOP, &grant).await,
            Err(_) => None,
        };
        if admitted.map(|(status, _)| status).as_deref() != Some("applied") {
            return None;
        }
        self.phone_spent += amount;
        let member = self.nodes[1].key.did();
        let to = self.nodes[0].key.did();
        let phone = phones::key(self.seed, 1);
        let paid = match self.phone_client(node, 1).await {
            Ok(c) => phones::pay_from_allowance(c, COOP, &member, &phone, &to, amount).await,
            Err(e) => Err(e),
        };
        let paid = self.judge_refusal(node, paid.map(|id| json!(id.to_string())));
        paid.ok().and_then(|id| id.as_str().map(str::to_owned))
    }

    /// Member 2's phone pays member 0 one hour through `node`; the entry
    /// id, if acknowledged.
    async fn phone2_pay(&mut self, node: usize) -> Option<String> {
        if !self.nodes[node].is_up() {
            return None;
        }
        let to = self.nodes[0].key.did().to_string();
        let body = json!({"to": to, "amount": 1, "unit": "hours", "memo": "from the other phone"});
        let answer = match self.phone_client(node, 2).await {
            Ok(c) => {
                c.call("POST", &format!("/v1/ledger/{COOP}/settle"), Some(body))
                    .await
            }
            Err(e) => Err(e),
        };
        let answer = self.judge_refusal(node, answer).ok()?;
        answer["entry_id"].as_str().map(str::to_owned)
    }

    /// Member 2 revokes its phone through its own node; whether it was
    /// acknowledged.
    async fn revoke_phone(&mut self) -> bool {
        if self.phone2_revoked {
            return true;
        }
        if !self.nodes[2].is_up() {
            return false;
        }
        let member = self.nodes[2].key.did();
        let phone = phones::key(self.seed, 2).did();
        let path = format!("/v1/devices/{member}/{phone}");
        let answer = match self.client(2, 2).await {
            Ok(c) => {
                c.call("DELETE", &path, Some(json!({ "reason": "lost" })))
                    .await
            }
            Err(e) => Err(e),
        };
        let done = match self.judge_refusal(2, answer) {
            Ok(_) => true,
            Err(e) => {
                self.last_refusal = e.to_string();
                false
            }
        };
        self.phone2_revoked |= done;
        done
    }

    fn thief(&mut self) -> Result<&mut Thief> {
        self.thief
            .as_mut()
            .ok_or_else(|| anyhow!("the co-op is not set up"))
    }

    /// The byzantine peer visits node `i`, if it runs; whether it reached it.
    async fn visit(&mut self, i: usize) -> Result<bool> {
        if !self.nodes[i].is_up() {
            return Ok(false);
        }
        let did = self.nodes[i].key.did();
        let addr = std::net::SocketAddr::new(self.net.ip(i).into(), nodes::SYNC_PORT);
        self.thief()?.visit(i, &did, addr).await
    }

    /// The admin removes the byzantine member through node 0; whether it
    /// was acknowledged.
    async fn remove_thief(&mut self) -> bool {
        let Some(did) = self.thief.as_ref().map(|t| t.key.did()) else {
            return false;
        };
        if !self.nodes[0].is_up() {
            return false;
        }
        let path = format!("/v1/coops/{COOP}/members/{did}");
        let done = match self.client(0, 0).await {
            Ok(admin) => {
                let answer = admin
                    .call("PUT", &path, Some(json!({ "status": "removed" })))
                    .await;
                if let Err(e) = &answer {
                    self.last_refusal = e.to_string();
                }
                self.judge_refusal(0, answer).is_ok()
            }
            Err(e) => {
                self.last_refusal = e.to_string();
                false
            }
        };
        if done && let Some(t) = self.thief.as_mut() {
            t.removed = true;
        }
        done
    }

    /// The admin proposes `id` in the domain and opens it for an hour.
    async fn propose(&mut self, id: &str) -> Result<()> {
        if !self.nodes[0].is_up() {
            bail!("node 0 is down");
        }
        let admin = self.client(0, 0).await?;
        let body = json!({"domain_id": DOMAIN, "id": id, "title": format!("Proposal {id}")});
        admin.call("POST", "/v1/gov/proposals", Some(body)).await?;
        let open = format!("/v1/gov/proposals/{id}/open?domain_id={DOMAIN}");
        admin
            .call("POST", &open, Some(json!({"voting_period_seconds": 3600})))
            .await?;
        Ok(())
    }
}

/// The network, the nodes running, and the co-op set up.
async fn start(opts: &Options) -> Result<Cluster> {
    nodes::unmount_disks(&opts.workdir);
    let _ = std::fs::remove_dir_all(&opts.workdir);
    std::fs::create_dir_all(&opts.workdir)?;
    // The members' nodes, and a relay (the last) that starts later.
    let mut net = Net::create(&opts.tag, opts.subnet, opts.nodes + 1)?;
    net.attach_relay(nodes::SYNC_PORT).await?;
    let nodes = nodes::prepare(&net, &opts.workdir, opts.nodes, opts.seed, opts.mdns)?;
    let mut c = Cluster {
        net,
        nodes,
        icnd: opts.icnd.clone(),
        clients: HashMap::new(),
        thief: None,
        disk_refusals: 0,
        unclear: None,
        last_refusal: String::new(),
        seed: opts.seed,
        phone_clients: HashMap::new(),
        grant: None,
        phone_spent: 0,
        phone_acked: Vec::new(),
        phone2_revoked: false,
        phone2_late: Vec::new(),
        relay_joined: false,
    };
    for n in c.nodes.iter_mut().take(opts.nodes) {
        n.start(&opts.icnd)?;
    }
    for n in c.nodes.iter_mut().take(opts.nodes) {
        n.wait_up(Duration::from_secs(60)).await?;
    }
    setup_coop(&mut c, opts.seed)
        .await
        .context("setting up the co-op")?;
    Ok(c)
}

/// Checks that a partition bites: with the last node cut off, a payment
/// made on node 0 does not reach it for `hold`; once healed, it does.
/// Returns whether it was held back, and how long it took to arrive after
/// the heal.
pub async fn partition_probe(opts: &Options, hold: Duration) -> Result<(bool, Duration)> {
    let mut c = start(opts).await?;
    let last = opts.nodes - 1;
    c.net.partition(&[last])?;
    let id = c.pay(0, 0, 1, 1).await?;
    let path = format!("/v1/ledger/{COOP}/entries/{id}");
    tokio::time::sleep(hold).await;
    let held_back = c
        .client(last, last)
        .await?
        .call("GET", &path, None)
        .await
        .is_err();
    c.net.heal()?;
    let healed = Instant::now();
    loop {
        if c.client(last, last)
            .await?
            .call("GET", &path, None)
            .await
            .is_ok()
        {
            return Ok((held_back, healed.elapsed()));
        }
        if healed.elapsed() > Duration::from_secs(120) {
            bail!("the payment never reached node {last} after the heal");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What [`mdns_probe`] saw.
#[derive(Debug)]
pub struct MdnsProbe {
    /// From the nodes' start to every node holding the co-op: found and
    /// synced by mDNS alone.
    pub found_and_synced: Duration,
    /// Sessions the extra node had before it was asked to dial (none: it
    /// holds nothing, and nobody shares anything with it).
    pub sessions_before_dial: u64,
    /// From `icnctl network dial <did>` (no address) to its session.
    pub dialed_by_did: Duration,
}

/// Checks discovery: nodes with no bootstrap peers and `mdns_enabled`, on
/// one bridge, find each other, sync the co-op and a payment; then an
/// extra node that holds nothing (and so is dialed by no one, nor dials)
/// reaches node 0 by `icnctl network dial <did>` alone.
pub async fn mdns_probe(opts: &Options, icnctl: &std::path::Path) -> Result<MdnsProbe> {
    let started = Instant::now();
    let mut c = start(opts).await?;
    let found_and_synced = started.elapsed();
    let id = c.pay(0, 0, 1, 1).await?;
    let path = format!("/v1/ledger/{COOP}/entries/{id}");
    for i in 1..opts.nodes {
        let since = Instant::now();
        while c
            .client(i, i)
            .await?
            .call("GET", &path, None)
            .await
            .is_err()
        {
            if since.elapsed() > Duration::from_secs(60) {
                bail!("the payment never reached node {i}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let extra = opts.nodes;
    c.nodes[extra].start(&opts.icnd)?;
    c.nodes[extra].wait_up(Duration::from_secs(60)).await?;
    // Long enough for discovery, and for any dial it would start.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sessions_before_dial = c.nodes[extra].sessions().await?;
    let node0 = c.nodes[0].key.did().to_string();
    let out = std::process::Command::new(icnctl)
        .arg("--data-dir")
        .arg(&c.nodes[extra].data)
        .args(["network", "dial", &node0])
        .output()
        .context("running icnctl")?;
    if !out.status.success() {
        bail!(
            "icnctl network dial {node0}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dialed = Instant::now();
    while c.nodes[extra].sessions().await? == sessions_before_dial {
        if dialed.elapsed() > Duration::from_secs(60) {
            bail!("dialing node 0 by DID alone started no session");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(MdnsProbe {
        found_and_synced,
        sessions_before_dial,
        dialed_by_did: dialed.elapsed(),
    })
}

/// A member with no node, whose standing the admin changes: fixed by the
/// seed.
fn spare(seed: u64) -> icn_engine::Keypair {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[9] = 0x18;
    icn_engine::Keypair::from_secret(&secret)
}

/// Node 0's member creates the co-op and adds the others; every node then
/// holds it.
async fn setup_coop(c: &mut Cluster, seed: u64) -> Result<()> {
    // The last node is the relay, which is no member.
    let n = c.nodes.len() - 1;
    let dids: Vec<String> = c.nodes[..n]
        .iter()
        .map(|n| n.key.did().to_string())
        .collect();
    let admin = c.client(0, 0).await?;
    admin
        .call(
            "POST",
            "/v1/coops",
            Some(json!({"id": COOP, "name": "Chaos", "default_credit_limit": CREDIT_LIMIT})),
        )
        .await?;
    let spare = spare(seed).did().to_string();
    let thief = byzantine::key(seed).did().to_string();
    for did in dids[1..].iter().chain([&spare, &thief]) {
        admin
            .call(
                "POST",
                &format!("/v1/coops/{COOP}/members"),
                Some(json!({"did": did, "role": "member"})),
            )
            .await?;
    }
    let admin = c.client(0, 0).await?;
    admin
        .call(
            "POST",
            "/v1/gov/domains",
            Some(json!({"id": DOMAIN, "name": "Board", "coop_id": COOP, "members": dids[1..]})),
        )
        .await?;
    let payee = c.nodes[0].key.did();
    let harness = c.net.gateway_ip();
    let admin = c.client(0, 0).await?;
    let thief = Thief::new(seed, harness, admin, COOP, payee, n).await?;
    c.thief = Some(thief);
    let start = Instant::now();
    for i in 1..n {
        loop {
            let client = c.client(i, i).await?;
            let held = match client.call("GET", &format!("/v1/coops/{COOP}"), None).await {
                Ok(_) => {
                    client
                        .call("GET", &format!("/v1/gov/domains/{DOMAIN}"), None)
                        .await
                }
                Err(e) => Err(e),
            };
            if held.is_ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("node {i} never received the co-op and its domain");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Members 1 and 2 register a phone each on their own nodes; member 1
    // grants its phone an allowance.
    for member in [1, 2] {
        let key = c.nodes[member].key.clone();
        let phone = phones::key(seed, member as u8);
        let client = c.client(member, member).await?;
        phones::register(client, &key, &phone).await?;
    }
    let key = c.nodes[1].key.clone();
    let client = c.client(1, 1).await?;
    let grant = phones::grant(client, COOP, &key, &phones::key(seed, 1)).await?;
    c.grant = Some(grant.to_string());
    Ok(())
}
