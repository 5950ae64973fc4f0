//! The byzantine peer: a member key the admin removes during the run, that
//! keeps talking to the nodes over the sync protocol itself (a raw iroh
//! connection from the harness's side of the bridge, no `icnd`).
//!
//! Each visit it sends, in one session:
//! - a **backdated** payment, signed with its own key, that cites the co-op
//!   heads and ledger heads of the moment it was added (or no parents), and
//!   a timestamp an hour before the run: valid where it cites, so a node
//!   stores it, and it must count nowhere once written after its removal;
//! - **replays** of every backdated entry it sent before;
//! - a **forged** entry, naming another member as author and signer under
//!   its own signature: a fault every node must count (`icn_sync_faults_total`);
//! - a document frame that is not a sync message: a fault too while the
//!   peer may still read the co-op; after its removal the node ignores its
//!   document frames unread.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, anyhow};
use icn_engine::Keypair;
use icn_node::client::Client;
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry};
use icn_schemas::{Did, DocId};
use icn_sync::{ALPN, Frame};
use iroh::endpoint::{PortmapperConfig, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};
use serde_json::Value;

/// A backdated entry the thief wrote, and whether its removal had been
/// acknowledged by then (if so it must count nowhere).
#[derive(Debug, Clone)]
pub(crate) struct Backdated {
    pub(crate) id: EntryId,
    pub(crate) bytes: Vec<u8>,
    pub(crate) after_removal: bool,
}

/// The thief and what it did.
pub(crate) struct Thief {
    pub(crate) key: Keypair,
    endpoint: Endpoint,
    coop: DocId,
    /// The co-op heads and ledger heads when it was added.
    coop_heads: Vec<[u8; 32]>,
    ledger_heads: Vec<EntryId>,
    /// Whom it pays.
    payee: Did,
    pub(crate) sent: Vec<Backdated>,
    /// Whether the admin's removal was acknowledged.
    pub(crate) removed: bool,
    /// Sessions in which each node was sent forged frames.
    pub(crate) visits: Vec<usize>,
}

/// The thief's key, fixed by the seed.
pub(crate) fn key(seed: u64) -> Keypair {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[9] = 0x19;
    Keypair::from_secret(&secret)
}

impl Thief {
    /// Binds the thief's endpoint on `ip` (the harness's address on the
    /// bridge) and remembers the heads `member` (a member of the co-op, on a
    /// node that has just added the thief) names now.
    pub(crate) async fn new(
        seed: u64,
        ip: Ipv4Addr,
        member: &Client,
        coop: &str,
        payee: Did,
        nodes: usize,
    ) -> Result<Thief> {
        let key = key(seed);
        let endpoint = Endpoint::builder(presets::Minimal)
            .secret_key(SecretKey::from_bytes(&key.secret()))
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(RelayMode::Disabled)
            .clear_address_lookup()
            .portmapper_config(PortmapperConfig::Disabled)
            .clear_ip_transports()
            .bind_addr(SocketAddr::new(ip.into(), 0))
            .map_err(|e| anyhow!("the thief's address: {e}"))?
            .bind()
            .await
            .map_err(|e| anyhow!("binding the thief's endpoint: {e}"))?;
        let heads = member.ledger_heads(coop).await?;
        Ok(Thief {
            key,
            endpoint,
            coop: heads.coop,
            coop_heads: heads.coop_heads,
            ledger_heads: heads.ledger_heads,
            payee,
            sent: Vec::new(),
            removed: false,
            visits: vec![0; nodes],
        })
    }

    fn sign(&self, entry: Entry) -> Result<(EntryId, Vec<u8>)> {
        let signature = self.key.sign(&entry.signing_message()?);
        let signed = SignedEntry { entry, signature };
        Ok((signed.id()?, signed.encode()?))
    }

    /// A payment of 1 hour from `from` to `to`, signed as `from`, as of
    /// the moment the thief was added: its parents are those heads, or none.
    fn backdated(&self, n: usize, from: Did, to: Did) -> Entry {
        let an_hour_before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(3_600_000);
        let mut postings = vec![
            Posting {
                account: Account::Member(from),
                unit: "hours".into(),
                amount: -1,
            },
            Posting {
                account: Account::Member(to),
                unit: "hours".into(),
                amount: 1,
            },
        ];
        icn_schemas::ledger::sort_postings(&mut postings);
        Entry {
            coop: self.coop,
            parents: if n.is_multiple_of(2) {
                Vec::new()
            } else {
                self.ledger_heads.clone()
            },
            author: from,
            signer: from,
            timestamp: an_hour_before + n as u64,
            coop_heads: self.coop_heads.clone(),
            body: Body::Transfer {
                postings,
                from_allowance: false,
            },
            memo: format!("backdated {n}"),
            decision: None,
            delegation: None,
        }
    }

    /// One visit to the node `did` at `addr`. Returns whether the session
    /// ran (the node was reachable).
    pub(crate) async fn visit(&mut self, node: usize, did: &Did, addr: SocketAddr) -> Result<bool> {
        let me = self.key.did();
        let (id, bytes) = self.sign(self.backdated(self.sent.len(), me, self.payee))?;
        // Written now: after the removal, if the removal was acknowledged.
        self.sent.push(Backdated {
            id,
            bytes,
            after_removal: self.removed,
        });
        // The forged entry: the payee paying the thief, under the thief's
        // signature.
        let (_, forged) = self.sign(self.backdated(self.sent.len(), self.payee, me))?;
        let coop = self.coop.0;
        let frames = [
            Frame::Hello { docs: vec![coop] },
            Frame::Entries {
                coop,
                entries: self.sent.iter().map(|b| b.bytes.clone()).collect(),
            },
            Frame::Entries {
                coop,
                entries: vec![forged],
            },
            Frame::Doc {
                doc: coop,
                message: b"not a sync message".to_vec(),
                signatures: Vec::new(),
            },
        ];
        let peer = iroh::PublicKey::from_bytes(did.as_bytes())
            .map_err(|e| anyhow!("node key {did}: {e}"))?;
        let target = EndpointAddr::new(peer).with_ip_addr(addr);
        let conn =
            match tokio::time::timeout(Duration::from_secs(3), self.endpoint.connect(target, ALPN))
                .await
            {
                Ok(Ok(c)) => c,
                _ => return Ok(false),
            };
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            return Ok(false);
        };
        let mut frames = frames.into_iter();
        // The Hello first: the node answers with its own once the session
        // runs, so that what follows is read by a session (a busy node may
        // take a while).
        if let Some(hello) = frames.next() {
            let body = hello.encode();
            let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            if send.write_all(&bytes).await.is_err() {
                return Ok(false);
            }
        }
        let mut len = [0u8; 4];
        match tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut len)).await {
            Ok(Ok(())) => {}
            _ => return Ok(false),
        }
        for frame in frames {
            let body = frame.encode();
            let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            if send.write_all(&bytes).await.is_err() {
                return Ok(false);
            }
        }
        let _ = send.finish();
        // Reads what the node says until it ends the session (for the
        // faults) or two seconds pass, so that it reads every frame.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(Some(_)) = recv.read(&mut buf).await {}
        })
        .await;
        conn.close(0u32.into(), b"bye");
        self.visits[node] += 1;
        Ok(true)
    }
}

/// The status node `client` gives entry `id` ("applied", "conflicted",
/// "pending"), or `None` when it does not hold it.
pub(crate) async fn status(client: &Client, coop: &str, id: &EntryId) -> Option<String> {
    let entry: Value = client
        .call("GET", &format!("/v1/ledger/{coop}/entries/{id}"), None)
        .await
        .ok()?;
    entry["status"]["status"].as_str().map(str::to_owned)
}
