//! The co-ops' event logs, which the WebSocket streams.
//!
//! Events are derived from what the engine commits, local writes and
//! peers' alike: ledger entries (`SettlementCreated`), membership and
//! settings in the co-op document (`MemberAdded`, `MemberRemoved`,
//! `RoleUpdated`, `SettingsUpdated`), and the governance of the co-op's
//! domains (`GovernanceDomainCreated`, `GovernanceProposalCreated`,
//! `…Opened`, `…Closed`, `GovernanceVoteCast`). Each co-op's log numbers its
//! events from 1 (`seq`) and is stored in the `gateway` tree, so a client
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
        for doc in self.engine.doc_ids() {
            let stored = self.engine.store().event_heads(&doc);
            match stored {
                Ok(Some(_)) => self.log_doc(&doc, Instant::now()),
                // A log that starts now starts from the document as it is.
                Ok(None) => {
                    let heads = self.engine.heads(&doc).unwrap_or_default();
                    self.append(None, Vec::new(), Some((doc, heads)), Instant::now());
                }
                Err(e) => tracing::warn!(%doc, error = %e, "reading the event log"),
            }
        }
        while let Ok(first) = rx.recv() {
            // Whatever queued meanwhile goes too, entries of one co-op
            // committed one after another in one append (one write of the
            // log, not one per settle, when settles come fast).
            let mut queued = vec![first];
            while queued.len() < MAX_GROUP
                && let Ok(next) = rx.try_recv()
            {
                queued.push(next);
            }
            for msg in merge_entries(queued) {
                if !self.handle(msg) {
                    return;
                }
            }
        }
    }

    /// Logs one commit; `false` on [`Msg::Stop`].
    fn handle(&self, msg: Msg) -> bool {
        {
            match msg {
                Msg::Stop => return false,
                Msg::Commit(at, Committed::Doc { doc, .. }) => self.log_doc(&doc, at),
                Msg::Commit(at, Committed::Entries { coop, entries }) => {
                    let events = entries
                        .iter()
                        .filter_map(|(_, bytes)| SignedEntry::decode(bytes).ok())
                        .map(|(e, id)| entry_event(&e, &id))
                        .collect();
                    self.append(Some(coop), events, None, at);
                }
                Msg::Commit(at, Committed::Statuses { coop, changed }) => {
                    let events = changed
                        .iter()
                        .map(|(id, status)| {
                            (
                                "EntryStatusChanged",
                                json!({"entry_id": id, "status": status}),
                            )
                        })
                        .collect();
                    self.append(Some(coop), events, None, at);
                }
                Msg::Commit(..) => {}
            }
        }
        true
    }

    /// Logs what changed in `doc` since the heads the log covered.
    fn log_doc(&self, doc: &DocId, committed: Instant) {
        let before: Vec<ChangeHash> = match self.engine.store().event_heads(doc) {
            Ok(b) => b.unwrap_or_default().into_iter().map(ChangeHash).collect(),
            Err(e) => {
                tracing::warn!(%doc, error = %e, "reading the event log");
                return;
            }
        };
        let diffed = self.engine.read(doc, |r| {
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
        });
        if let Some(Some((attached, events, now))) = diffed {
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
            self.append(coop, events, Some((*doc, now)), committed);
        }
    }

    /// Appends `events` to `coop`'s log, with the heads covered, in one
    /// batch; then hands them to live subscribers.
    fn append(
        &self,
        coop: Option<DocId>,
        events: Vec<(&'static str, Value)>,
        covered: Option<(DocId, Vec<ChangeHash>)>,
        committed: Instant,
    ) {
        let mut records = Vec::new();
        let mut stored = Vec::new();
        let logged = coop.filter(|_| !events.is_empty());
        let mut last = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(coop) = logged {
            let mut seq = match last.get(&coop) {
                Some(s) => *s,
                None => match self.read_last_seq(&coop) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%coop, error = %e, "reading the event log");
                        return;
                    }
                },
            };
            let at = now_secs();
            for (name, data) in events {
                seq += 1;
                let json = json!({"type": "Event", "seq": seq, "event": name, "coop_doc_id": coop.to_string(), "at": at, "data": data});
                records.push((seq, json.to_string().into_bytes()));
                stored.push(Arc::new(Event {
                    coop,
                    seq,
                    json,
                    committed,
                }));
            }
            last.insert(coop, seq);
        }
        let covered: Option<(DocId, Vec<[u8; 32]>)> =
            covered.map(|(doc, heads)| (doc, heads.iter().map(|h| h.0).collect()));
        let written = self.engine.store().append_events(
            logged.as_ref(),
            &records,
            covered.as_ref().map(|(doc, heads)| (doc, heads.as_slice())),
        );
        if let Err(e) = written {
            tracing::warn!(error = %e, "writing the event log");
            if let Some(coop) = coop {
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
}
