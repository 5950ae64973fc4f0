//! The co-ops' event logs, which the WebSocket streams.
//!
//! Events are derived from what the engine commits, local writes and
//! peers' alike: ledger entries (`SettlementCreated`), membership and
//! settings in the co-op document (`MemberAdded`, `MemberRemoved`,
//! `RoleUpdated`, `SettingsUpdated`), and the governance of the co-op's
//! domains (`GovernanceDomainCreated`, `GovernanceProposalCreated`,
//! `…Opened`, `…Closed`, `GovernanceVoteCast`). Each co-op's log numbers its
//! events from 1 (`seq`) and is stored by the engine's store (beside the
//! co-op's ledger, so its rows join the ledger's sled batches), so a client
//! that reconnects asks for what came after the last `seq` it saw.
//!
//! Document events come from comparing a document with the heads the log
//! last covered (stored with the events, in one batch), so a crash loses
//! none of them: the comparison runs again at the next start. Entry events
//! are written as entries commit; an entry committed in the instant before
//! a crash may lack its event (the ledger itself has it).

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use automerge::ChangeHash;
use icn_engine::{Committed, Engine};
use icn_schemas::coop::{Coop, MemberStatus};
use icn_schemas::domain::{Domain, ProposalState};
use icn_schemas::ledger::{Body, SignedEntry};
use icn_schemas::{DocId, DocKind, Reader};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::auth::now_secs;

/// Events a live subscriber may fall behind by before it re-reads the log.
const LIVE_CAPACITY: usize = 4096;

/// One event of a co-op's log.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) coop: DocId,
    pub(crate) seq: u64,
    /// `{"type": "Event", "seq": …, "event": …, "at": …, "data": {…}}`.
    pub(crate) json: Value,
    /// When the engine reported the commit the event comes from.
    pub(crate) committed: Instant,
}

enum Msg {
    /// A commit, and when the engine reported it.
    Commit(Instant, Committed),
    Stop,
}

/// Most commits the logging thread takes at once.
const MAX_GROUP: usize = 256;

/// `queued` with each run of entry commits of one co-op made one commit
/// (dated by its first: a delivery is measured from the earliest commit it
/// carries), in order.
fn merge_entries(queued: Vec<Msg>) -> Vec<Msg> {
    let mut merged: Vec<Msg> = Vec::with_capacity(queued.len());
    for msg in queued {
        if let (
            Some(Msg::Commit(_, Committed::Entries { coop, entries })),
            Msg::Commit(
                _,
                Committed::Entries {
                    coop: next_coop,
                    entries: more,
                },
            ),
        ) = (merged.last_mut(), &msg)
            && coop == next_coop
        {
            entries.extend(more.iter().cloned());
            continue;
        }
        merged.push(msg);
    }
    merged
}

/// What one commit adds to the logs: events for a co-op's log, and the
/// document heads they bring the log up to.
struct Logged {
    coop: Option<DocId>,
    events: Vec<(&'static str, Value)>,
    covered: Option<(DocId, Vec<ChangeHash>)>,
    /// When the engine reported the commit.
    committed: Instant,
}

/// The event logs: written by one thread, read by WebSocket sessions.
pub(crate) struct Events {
    engine: Engine,
    live: broadcast::Sender<Arc<Event>>,
    last_seq: Mutex<HashMap<DocId, u64>>,
}

/// Stops the writer thread when the gateway goes.
pub(crate) struct EventsHandle {
    pub(crate) events: Arc<Events>,
    stop: mpsc::Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EventsHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Events {
    /// Starts the writer: it first brings the logs up to date with the
    /// documents (a new log starts from the documents as they are), then
    /// follows the engine's commits.
    pub(crate) fn start(engine: Engine) -> EventsHandle {
        let (tx, rx) = mpsc::channel();
        let listener = Mutex::new(tx.clone());
        engine.on_commit(move |c| {
            let _ = listener
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(Msg::Commit(Instant::now(), c.clone()));
        });
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let events = Arc::new(Events {
            engine,
            live,
            last_seq: Mutex::new(HashMap::new()),
        });
        let writer = events.clone();
        let thread = std::thread::Builder::new()
            .name("icn-events".into())
            .spawn(move || writer.run(rx))
            .ok();
        if thread.is_none() {
            tracing::error!("cannot start the event log thread; WebSocket events are off");
        }
        EventsHandle {
            events,
            stop: tx,
            thread,
        }
    }

    fn run(&self, rx: mpsc::Receiver<Msg>) {
        let mut group = Vec::new();
        for doc in self.engine.doc_ids() {
            let stored = self.engine.store().event_heads(&doc);
            match stored {
                // Each document once: nothing earlier in the group covers it.
                Ok(Some(_)) => group.extend(self.log_doc(&doc, &[], Instant::now())),
                // A log that starts now starts from the document as it is.
                Ok(None) => group.push(Logged {
                    coop: None,
                    events: Vec::new(),
                    covered: Some((doc, self.engine.heads(&doc).unwrap_or_default())),
                    committed: Instant::now(),
                }),
                Err(e) => tracing::warn!(%doc, error = %e, "reading the event log"),
            }
        }
        self.append(group);
        while let Ok(first) = rx.recv() {
            // Whatever queued meanwhile goes too, every co-op's events in one
            // write of the logs (one sled batch, not one per settle, when
            // settles come fast).
            let mut queued = vec![first];
            while queued.len() < MAX_GROUP
                && let Ok(next) = rx.try_recv()
            {
                queued.push(next);
            }
            let mut group = Vec::new();
            let mut stop = false;
            for msg in merge_entries(queued) {
                match msg {
                    Msg::Stop => {
                        stop = true;
                        break;
                    }
                    Msg::Commit(at, c) => self.gather(&mut group, at, c),
                }
            }
            self.append(group);
            if stop {
                return;
            }
        }
    }

    /// What one commit adds to the logs, after what `group` (commits
    /// before it in this write) adds.
    fn gather(&self, group: &mut Vec<Logged>, at: Instant, commit: Committed) {
        let logged = match commit {
            Committed::Doc { doc, .. } => self.log_doc(&doc, group, at),
            Committed::Entries { coop, entries } => Some(Logged {
                coop: Some(coop),
                events: entries
                    .iter()
                    .filter_map(|(_, bytes)| SignedEntry::decode(bytes).ok())
                    .map(|(e, id)| entry_event(&e, &id))
                    .collect(),
                covered: None,
                committed: at,
            }),
            Committed::Statuses { coop, changed } => Some(Logged {
                coop: Some(coop),
                events: changed
                    .iter()
                    .map(|(id, status)| {
                        (
                            "EntryStatusChanged",
                            json!({"entry_id": id, "status": status}),
                        )
                    })
                    .collect(),
                covered: None,
                committed: at,
            }),
            _ => None,
        };
        group.extend(logged);
    }

    /// What changed in `doc` since the heads the log covered (as `group`
    /// leaves them, or as stored).
    fn log_doc(&self, doc: &DocId, group: &[Logged], committed: Instant) -> Option<Logged> {
        let pending = group.iter().rev().find_map(|l| match &l.covered {
            Some((d, heads)) if d == doc => Some(heads.clone()),
            _ => None,
        });
        let before: Vec<ChangeHash> = match pending {
            Some(heads) => heads,
            None => match self.engine.store().event_heads(doc) {
                Ok(b) => b.unwrap_or_default().into_iter().map(ChangeHash).collect(),
                Err(e) => {
                    tracing::warn!(%doc, error = %e, "reading the event log");
                    return None;
                }
            },
        };
        let (attached, events, now) = self.engine.read(doc, |r| {
            let now = r.doc().get_heads();
            if now == before {
                return None;
            }
            let old = Reader::at(r.doc(), &before);
            Some(match DocKind::of(r) {
                Some(DocKind::Coop) => (Some((*doc, None)), coop_events(old, r), now),
                Some(DocKind::Domain) => {
                    let attached = Domain::read(r)
                        .ok()
                        .and_then(|d| Some((d.coop_id?.parse::<DocId>().ok()?, Some(d.creator))));
                    (attached, domain_events(old, r), now)
                }
                None => (None, Vec::new(), now),
            })
        })??;
        // A domain's events go to its co-op's log only when one of the
        // co-op's members made it: naming a co-op in `coop_id` does not
        // let a stranger push into the co-op's stream. (The co-op is
        // read after the domain, never inside its read: lock order.)
        let coop = match attached {
            Some((coop, Some(creator))) => self
                .engine
                .read(&coop, |r| icn_schemas::coop::Standing::read(r, &creator))
                .flatten()
                .filter(|s| s.status != icn_schemas::coop::MemberStatus::Removed)
                .map(|_| coop),
            Some((coop, None)) => Some(coop),
            None => None,
        };
        Some(Logged {
            coop,
            events,
            covered: Some((*doc, now)),
            committed,
        })
    }

    /// Numbers the events of `group` in their co-ops' logs and writes them,
    /// with the heads covered, in one batch; then hands them to live
    /// subscribers.
    fn append(&self, group: Vec<Logged>) {
        if group.is_empty() {
            return;
        }
        let mut records = Vec::new();
        let mut stored = Vec::new();
        // The heads each document is covered up to: the last commit of it
        // in the group.
        let mut covered: HashMap<DocId, Vec<[u8; 32]>> = HashMap::new();
        let mut numbered = Vec::new();
        let mut last = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
        let at = now_secs();
        for logged in group {
            if let Some(coop) = logged.coop.filter(|_| !logged.events.is_empty()) {
                let mut seq = match last.get(&coop) {
                    Some(s) => *s,
                    None => match self.read_last_seq(&coop) {
                        Ok(s) => s,
                        Err(e) => {
                            // Its document's heads stay uncovered too, so
                            // the next start logs these events.
                            tracing::warn!(%coop, error = %e, "reading the event log");
                            continue;
                        }
                    },
                };
                for (name, data) in logged.events {
                    seq += 1;
                    let json = json!({"type": "Event", "seq": seq, "event": name, "coop_doc_id": coop.to_string(), "at": at, "data": data});
                    records.push((coop, (seq, json.to_string().into_bytes())));
                    stored.push(Arc::new(Event {
                        coop,
                        seq,
                        json,
                        committed: logged.committed,
                    }));
                }
                last.insert(coop, seq);
                numbered.push(coop);
            }
            if let Some((doc, heads)) = logged.covered {
                covered.insert(doc, heads.iter().map(|h| h.0).collect());
            }
        }
        let covered: Vec<(DocId, Vec<[u8; 32]>)> = covered.into_iter().collect();
        if let Err(e) = self.engine.store().append_events(&records, &covered) {
            tracing::warn!(error = %e, "writing the event log");
            for coop in numbered {
                last.remove(&coop);
            }
            return;
        }
        drop(last);
        for event in stored {
            let _ = self.live.send(event);
        }
    }

    fn read_last_seq(&self, coop: &DocId) -> Result<u64, icn_engine::StorageError> {
        self.engine.store().last_event_seq(coop)
    }

    /// The last seq of `coop`'s log (0 when empty).
    pub(crate) fn last_seq(&self, coop: &DocId) -> u64 {
        let cached = self
            .last_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(coop)
            .copied();
        cached.unwrap_or_else(|| self.read_last_seq(coop).unwrap_or(0))
    }

    /// Up to `limit` events of `coop` after `after`, in order.
    pub(crate) fn after(
        &self,
        coop: &DocId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Value>, icn_engine::StorageError> {
        let records = self.engine.store().events_after(coop, after, limit)?;
        Ok(records
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// New events as they are logged.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }
}

fn entry_event(e: &SignedEntry, id: &icn_schemas::ledger::EntryId) -> (&'static str, Value) {
    let entry = &e.entry;
    let base = json!({
        "entry_id": id,
        "author": entry.author,
        "memo": entry.memo,
        "decision": entry.decision.map(hex::encode),
        "body": entry.body,
    });
    match &entry.body {
        Body::Transfer { .. } => ("SettlementCreated", base),
        _ => ("LedgerEntryRecorded", base),
    }
}

fn coop_events(old: Reader<'_>, new: Reader<'_>) -> Vec<(&'static str, Value)> {
    let Ok(new) = Coop::read(new) else {
        return Vec::new();
    };
    let old = Coop::read(old).ok();
    let mut events = Vec::new();
    let active = |s: MemberStatus| s == MemberStatus::Active;
    for (did, m) in &new.members {
        let before = old.as_ref().and_then(|o| o.members.get(did));
        match before {
            None => events.push(("MemberAdded", json!({"did": did, "role": m.role}))),
            Some(b) if !active(b.status) && active(m.status) => {
                events.push(("MemberAdded", json!({"did": did, "role": m.role})));
            }
            Some(b) if active(b.status) && m.status == MemberStatus::Removed => {
                events.push(("MemberRemoved", json!({"did": did})));
            }
            Some(b) if b.role != m.role => {
                events.push(("RoleUpdated", json!({"did": did, "role": m.role})));
            }
            Some(_) => {}
        }
    }
    let settings =
        |c: &Coop| json!({"name": c.name, "description": c.description, "policy": c.policy});
    if let Some(old) = &old
        && settings(old) != settings(&new)
    {
        events.push(("SettingsUpdated", settings(&new)));
    }
    events
}

fn domain_events(old: Reader<'_>, new: Reader<'_>) -> Vec<(&'static str, Value)> {
    let Ok(new) = Domain::read(new) else {
        return Vec::new();
    };
    let old = Domain::read(old).ok();
    let mut events = Vec::new();
    if old.is_none() {
        events.push((
            "GovernanceDomainCreated",
            json!({"domain_id": new.id, "name": new.name, "creator": new.creator}),
        ));
    }
    for (id, p) in &new.proposals {
        let before = old.as_ref().and_then(|o| o.proposals.get(id));
        let base = |extra: Value| {
            let mut v = json!({"domain_id": new.id, "proposal_id": id, "title": p.title});
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        if before.is_none() {
            events.push((
                "GovernanceProposalCreated",
                base(json!({"author": p.author})),
            ));
        }
        let was = before.map(|b| b.state);
        if p.state == ProposalState::Open && was != Some(ProposalState::Open) {
            events.push((
                "GovernanceProposalOpened",
                base(json!({"closes_at": p.closes_at})),
            ));
        }
        for (voter, v) in &p.votes {
            if before.and_then(|b| b.votes.get(voter)) != Some(v) {
                events.push((
                    "GovernanceVoteCast",
                    base(json!({"voter": voter, "choice": v.choice})),
                ));
            }
        }
        let closed_before = before.and_then(|b| b.close.as_ref());
        if let Some(close) = &p.close
            && closed_before != Some(close)
        {
            events.push((
                "GovernanceProposalClosed",
                base(json!({"state": p.state, "outcome": close.outcome, "tally": close.tally})),
            ));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use icn_schemas::ledger::EntryId;

    fn entries(coop: u8, ids: &[u8]) -> Msg {
        Msg::Commit(
            Instant::now(),
            Committed::Entries {
                coop: DocId([coop; 32]),
                entries: ids
                    .iter()
                    .map(|i| (EntryId([*i; 32]), Arc::from(vec![*i])))
                    .collect(),
            },
        )
    }

    fn shape(msgs: &[Msg]) -> Vec<(u8, Vec<u8>)> {
        msgs.iter()
            .map(|m| match m {
                Msg::Commit(_, Committed::Entries { coop, entries }) => {
                    (coop.0[0], entries.iter().map(|(id, _)| id.0[0]).collect())
                }
                Msg::Commit(_, Committed::Doc { doc, .. }) => (doc.0[0], vec![]),
                _ => (0, vec![]),
            })
            .collect()
    }

    #[test]
    fn runs_of_one_co_ops_entries_merge_in_order_and_nothing_else_does() {
        let doc = Msg::Commit(
            Instant::now(),
            Committed::Doc {
                doc: DocId([9; 32]),
                heads: Vec::new(),
            },
        );
        let queued = vec![
            entries(1, &[1]),
            entries(1, &[2, 3]),
            entries(2, &[4]),
            doc,
            entries(1, &[5]),
            Msg::Stop,
            entries(1, &[6]),
        ];
        let merged = merge_entries(queued);
        assert_eq!(
            shape(&merged),
            vec![
                (1, vec![1, 2, 3]),
                (2, vec![4]),
                (9, vec![]),
                (1, vec![5]),
                (0, vec![]),
                (1, vec![6]),
            ]
        );
        assert!(matches!(merged[4], Msg::Stop));
    }

    #[test]
    fn one_write_logs_several_co_ops_and_a_document_committed_twice_once() {
        use icn_engine::Signer;
        use icn_engine::ledger::Settle;
        use icn_engine::test_utils::{TestNode, keypair, new_coop};
        use icn_schemas::coop::{self, Role};

        let node = TestNode::new();
        let admin = Signer::Device(keypair(1));
        let coops: Vec<DocId> = ["one", "two"]
            .iter()
            .map(|slug| {
                let mut new = new_coop(&keypair(1));
                new.id = (*slug).into();
                node.engine.create_coop(&admin, &new).expect("co-op")
            })
            .collect();
        let events = Events {
            engine: node.engine.clone(),
            live: broadcast::channel(16).0,
            last_seq: Mutex::new(HashMap::new()),
        };
        let mut group = Vec::new();
        let mut covered = Vec::new();
        // The first co-op's document moves twice; both commits are gathered
        // before either is written.
        for seed in [2, 3] {
            node.engine
                .write(&coops[0], &admin, |tx| {
                    coop::add_member(tx, &keypair(seed).did(), Role::Member, 1)
                })
                .expect("member");
            covered = node.engine.heads(&coops[0]).expect("held");
            events.gather(
                &mut group,
                Instant::now(),
                Committed::Doc {
                    doc: coops[0],
                    heads: covered.clone(),
                },
            );
        }
        for (k, coop) in coops.iter().enumerate() {
            node.engine
                .write(coop, &admin, |tx| {
                    coop::add_member(tx, &keypair(9).did(), Role::Member, 1)
                })
                .expect("member");
            let settle = Settle {
                to: keypair(9).did(),
                amount: 1 + k as i64,
                unit: "hours".into(),
                memo: String::new(),
            };
            let (id, _) = node.engine.settle(coop, &admin, &settle).expect("settle");
            let bytes = node
                .engine
                .entry_bytes(coop, &id)
                .expect("read")
                .expect("held");
            events.gather(
                &mut group,
                Instant::now(),
                Committed::Entries {
                    coop: *coop,
                    entries: vec![(id, Arc::from(bytes))],
                },
            );
        }
        events.append(group);

        let logged = |coop: &DocId| -> Vec<(u64, String)> {
            events
                .after(coop, 0, 100)
                .expect("log")
                .iter()
                .map(|e| {
                    (
                        e["seq"].as_u64().unwrap_or(0),
                        e["event"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        };
        let first = logged(&coops[0]);
        let added: Vec<_> = first.iter().filter(|(_, e)| e == "MemberAdded").collect();
        // The creator and members 2 and 3, each once; member 9 joined after
        // the document commits were gathered, and its settle is logged.
        assert_eq!(added.len(), 3, "{first:?}");
        assert_eq!(
            first.last().map(|(_, e)| e.as_str()),
            Some("SettlementCreated")
        );
        assert_eq!(
            first.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=first.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(logged(&coops[1]), vec![(1, "SettlementCreated".to_owned())]);
        // The log covers the document as the last gathered commit left it.
        let covered: Vec<[u8; 32]> = covered.iter().map(|h| h.0).collect();
        assert_eq!(
            node.engine.store().event_heads(&coops[0]).expect("read"),
            Some(covered)
        );
    }
}
