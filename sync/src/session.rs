//! One sync session with one peer, free of IO: frames in, frames out.
//!
//! The driver ([`crate::node`]) feeds a session the frames the peer sends
//! ([`Session::receive`]) and what this node commits ([`Session::committed`]),
//! and writes whatever [`Session::next_frame`] gives it. Tests run two
//! sessions against each other over in-memory queues.
//!
//! What a session does:
//! - Announces the documents this node holds that the peer may receive
//!   ([`Engine::may_receive`]), and syncs those and the ones the peer
//!   announces. A document this node does not hold is taken only if, as the
//!   peer sends it, it names this node as a reader ([`Engine::may_read`]).
//! - Documents: the Automerge sync protocol, every change with its
//!   signature, every received batch validated before it merges
//!   ([`Engine::receive_sync`]). The sync state is kept per (peer,
//!   document), so the next session starts where this one stopped.
//! - Ledgers: heads first; a side that lacks a head sends a bloom filter of
//!   every entry id it holds, and the other sends, parents first and in
//!   bounded frames, every entry not in it. Parents and heads still missing
//!   afterwards (bloom false positives) are asked for by id.
//! - After catch-up, what this node commits is pushed at once.
//! - A peer that sends what every honest peer refuses (bad signatures,
//!   forged authority, unbalanced entries, malformed messages) is counted;
//!   after [`MAX_FAULTS`] the session ends. Nothing it sent is stored.

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::sync::{Message, State};
use icn_engine::ledger::{EntryRefusal, Ingest, LedgerError};
use icn_engine::{ApplyError, Committed, Engine};

use crate::replica::Replica;
use icn_schemas::ledger::EntryId;
use icn_schemas::{Did, DocId, DocKind};

use crate::bloom::Bloom;
use crate::wire::{ENTRIES_FRAME_TARGET, Frame, MAX_ENTRIES_PER_FRAME, MAX_IDS_PER_FRAME};

/// Faults after which a session ends.
pub const MAX_FAULTS: u32 = 3;

/// Entry ids remembered per ledger as held by the peer, so that what it
/// sent is not pushed back to it; the set is cleared when it grows past
/// this (costing only a redundant push).
const PEER_HAS_LIMIT: usize = 200_000;

/// Most entry ids a peer's requests may have queued for sending at once
/// (32 MiB of ids); a request past that is a fault and is dropped.
pub const MAX_QUEUED_IDS: usize = 1 << 20;

/// Frames a session may hold for a peer that does not read them; past
/// that the session ends, and the next one catches the peer up.
pub const MAX_OUTBOX_FRAMES: usize = 10_000;

/// Filters (`LedgerHave`) a peer may send per ledger and session: one at
/// the start and one per recovery from a full pending set.
pub const MAX_HAVES_PER_LEDGER: u32 = 64;

/// Why a session must end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent what honest peers do not, too often.
    #[error("peer {peer} made {faults} faults, the last: {last}")]
    TooManyFaults {
        /// The peer.
        peer: Did,
        /// How many.
        faults: u32,
        /// The last one.
        last: String,
    },
    /// This node's storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The peer does not read what this node pushes (see
    /// [`MAX_OUTBOX_FRAMES`]).
    #[error("peer {0} is not reading; {MAX_OUTBOX_FRAMES} frames wait for it")]
    Backlog(Did),
}

/// Counters of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Document changes received and merged.
    pub changes_in: u64,
    /// Ledger entries received and stored (or waiting for parents).
    pub entries_in: u64,
    /// Ledger entries sent.
    pub entries_out: u64,
    /// Frames refused.
    pub faults: u32,
}

/// A ledger as one session sees it.
#[derive(Default)]
struct Ledger {
    /// Whether this node sent its heads (it holds the co-op).
    started: bool,
    /// The peer's heads, as it last said.
    their_heads: Vec<EntryId>,
    /// Ids asked for and not yet received.
    wanted: HashSet<EntryId>,
    /// Ids the peer is known to hold.
    peer_has: HashSet<EntryId>,
    /// Entries of the peer's were dropped because the pending set was full
    /// (a long run waiting for a parent the filter wrongly claimed): ask
    /// again, with a fresh filter, once the current answer is done.
    overflowed: bool,
    /// Whether the peer sent its heads (once per session).
    heads_seen: bool,
    /// Filters the peer sent: each costs a pass over the whole ledger.
    haves: u32,
}

/// Entries queued for the peer, sent a frame at a time.
struct Outgoing {
    coop: DocId,
    ids: VecDeque<EntryId>,
    /// Send `LedgerDone` after the last.
    then_done: bool,
    /// An answer to a `LedgerHave` (rather than to a `LedgerWant`).
    whole: bool,
}

/// One session with one peer, on a [`Replica`] (the engine, on a node).
pub struct Session<R: Replica = Engine> {
    replica: R,
    me: Did,
    peer: Did,
    hello: bool,
    /// Documents the peer announced.
    offered: HashSet<DocId>,
    /// Documents in sync with the peer, with their sync states.
    docs: HashMap<DocId, State>,
    /// Changes to ask the peer for, per document, beyond Automerge's own
    /// needs: dependencies of changes that came without them.
    needs: HashMap<DocId, Vec<automerge::ChangeHash>>,
    ledgers: HashMap<DocId, Ledger>,
    outbox: VecDeque<Frame>,
    outgoing: VecDeque<Outgoing>,
    /// Blobs asked for, and the documents waiting for each.
    blobs_wanted: HashMap<[u8; 32], Vec<DocId>>,
    stats: Stats,
}

impl<R: Replica> Session<R> {
    /// A session of this node (`me`) with `peer`, whose key the transport
    /// authenticated. Its first frame is the `Hello`.
    pub fn new(replica: R, me: Did, peer: Did) -> Session<R> {
        let docs = replica
            .doc_ids()
            .into_iter()
            .filter(|d| replica.may_receive(d, &peer))
            .map(|d| d.0)
            .collect();
        Session {
            replica,
            me,
            peer,
            hello: false,
            offered: HashSet::new(),
            docs: HashMap::new(),
            needs: HashMap::new(),
            ledgers: HashMap::new(),
            outbox: VecDeque::from([Frame::Hello { docs }]),
            outgoing: VecDeque::new(),
            blobs_wanted: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// The peer.
    pub fn peer(&self) -> &Did {
        &self.peer
    }

    /// This session's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the peer's `Hello` has arrived.
    pub fn greeted(&self) -> bool {
        self.hello
    }

    /// Whether [`Session::next_frame`] has something to send.
    pub fn has_output(&self) -> bool {
        !self.outbox.is_empty() || !self.outgoing.is_empty()
    }

    /// The next frame to send, if any. Catch-up entries are read from the
    /// store a frame at a time, as the transport takes them.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SessionError> {
        if let Some(frame) = self.outbox.pop_front() {
            return Ok(Some(frame));
        }
        let Some(out) = self.outgoing.front_mut() else {
            return Ok(None);
        };
        let coop = out.coop;
        let mut entries = Vec::new();
        let mut size = 0;
        while entries.len() < MAX_ENTRIES_PER_FRAME && size < ENTRIES_FRAME_TARGET {
            let Some(id) = out.ids.pop_front() else {
                break;
            };
            if let Some(bytes) = self.replica.entry_bytes(&coop, &id).map_err(storage)? {
                size += bytes.len();
                entries.push(bytes);
                if let Some(l) = self.ledgers.get_mut(&coop) {
                    remember(&mut l.peer_has, id);
                }
            }
        }
        let finished = out.ids.is_empty();
        let then_done = out.then_done;
        if finished {
            self.outgoing.pop_front();
        }
        self.stats.entries_out += entries.len() as u64;
        if !entries.is_empty() {
            if finished && then_done {
                self.outbox.push_back(Frame::LedgerDone { coop: coop.0 });
            }
            return Ok(Some(Frame::Entries {
                coop: coop.0,
                entries,
            }));
        }
        if finished && then_done {
            return Ok(Some(Frame::LedgerDone { coop: coop.0 }));
        }
        self.next_frame()
    }

    /// Handles one frame from the peer.
    pub fn receive(&mut self, frame: Frame) -> Result<(), SessionError> {
        // Every frame may queue an answer; a peer that sends without
        // reading what it is sent cannot grow the queue without bound.
        self.check_backlog()?;
        match frame {
            Frame::Hello { docs } => self.on_hello(docs),
            _ if !self.hello => self.fault("a frame before Hello"),
            Frame::Doc {
                doc,
                message,
                signatures,
            } => self.on_doc(DocId(doc), &message, &signatures),
            Frame::LedgerHeads { coop, heads } => {
                self.on_heads(DocId(coop), heads.into_iter().map(EntryId).collect())
            }
            Frame::LedgerHave { coop, bloom } => self.on_have(DocId(coop), Bloom::from_bits(bloom)),
            Frame::LedgerWant { coop, ids } => self.on_want(DocId(coop), ids),
            Frame::Entries { coop, entries } => self.on_entries(DocId(coop), entries),
            Frame::LedgerDone { coop } => self.on_done(DocId(coop)),
            Frame::BlobWant { hash } => self.on_blob_want(hash),
            Frame::Blob { hash, bytes } => self.on_blob(hash, bytes),
        }
    }

    /// Pushes what this node just committed, if the peer may have it;
    /// whether that queued a frame for the peer.
    pub fn committed(&mut self, event: &Committed) -> Result<bool, SessionError> {
        let queued = self.outbox.len();
        if !self.hello {
            return Ok(false); // The catch-up will carry it.
        }
        self.check_backlog()?;
        match event {
            Committed::Doc { doc, .. } => {
                if !self.replica.may_receive(doc, &self.peer) {
                    return Ok(false);
                }
                if self.docs.contains_key(doc) {
                    self.sync_doc(doc)?;
                } else {
                    // New to this session: just created here, or the peer
                    // just became a member.
                    self.start_doc(*doc)?;
                }
            }
            Committed::Entries { coop, entries } => {
                let Some(ledger) = self.ledgers.get_mut(coop) else {
                    return Ok(false);
                };
                if !ledger.started || !self.replica.may_receive(coop, &self.peer) {
                    return Ok(false);
                }
                let mut frame = Vec::new();
                for (id, bytes) in entries {
                    if ledger.peer_has.contains(id) {
                        continue;
                    }
                    remember(&mut ledger.peer_has, *id);
                    frame.push(bytes.to_vec());
                    if frame.len() == MAX_ENTRIES_PER_FRAME {
                        self.stats.entries_out += frame.len() as u64;
                        self.outbox.push_back(Frame::Entries {
                            coop: coop.0,
                            entries: std::mem::take(&mut frame),
                        });
                    }
                }
                if !frame.is_empty() {
                    self.stats.entries_out += frame.len() as u64;
                    self.outbox.push_back(Frame::Entries {
                        coop: coop.0,
                        entries: frame,
                    });
                }
            }
            _ => {}
        }
        Ok(self.outbox.len() > queued)
    }

    fn check_backlog(&self) -> Result<(), SessionError> {
        if self.outbox.len() >= MAX_OUTBOX_FRAMES {
            return Err(SessionError::Backlog(self.peer));
        }
        Ok(())
    }

    fn fault(&mut self, reason: impl std::fmt::Display) -> Result<(), SessionError> {
        self.stats.faults += 1;
        tracing::warn!(peer = %self.peer, faults = self.stats.faults, "refused from peer: {reason}");
        if self.stats.faults >= MAX_FAULTS {
            return Err(SessionError::TooManyFaults {
                peer: self.peer,
                faults: self.stats.faults,
                last: reason.to_string(),
            });
        }
        Ok(())
    }

    fn on_hello(&mut self, docs: Vec<[u8; 32]>) -> Result<(), SessionError> {
        if self.hello {
            return self.fault("a second Hello");
        }
        self.hello = true;
        self.offered = docs.into_iter().map(DocId).collect();
        // Each side starts the documents it holds; one it does not hold
        // arrives from the side that does (starting both ways would make
        // the holder send the whole document twice).
        let start: Vec<DocId> = self
            .replica
            .doc_ids()
            .into_iter()
            .filter(|d| self.replica.may_receive(d, &self.peer))
            .collect();
        for doc in start {
            self.start_doc(doc)?;
        }
        Ok(())
    }

    fn start_doc(&mut self, doc: DocId) -> Result<(), SessionError> {
        if self.docs.contains_key(&doc) {
            return Ok(());
        }
        let state = self
            .replica
            .peer_sync_state(&self.peer, &doc)
            .map_err(|e| SessionError::Storage(e.to_string()))?
            .and_then(|bytes| State::decode(&bytes).ok())
            .unwrap_or_default();
        self.docs.insert(doc, state);
        self.sync_doc(&doc)?;
        if self.replica.kind(&doc) == Some(DocKind::Coop) {
            self.start_ledger(&doc)?;
        }
        Ok(())
    }

    /// Queues the next sync message of `doc`, if Automerge has one.
    fn sync_doc(&mut self, doc: &DocId) -> Result<(), SessionError> {
        let Some(state) = self.docs.get_mut(doc) else {
            return Ok(());
        };
        let need = self.needs.get(doc).map(Vec::as_slice).unwrap_or_default();
        if let Some((message, signatures)) = self
            .replica
            .generate_sync(doc, state, need)
            .map_err(|e| SessionError::Storage(e.to_string()))?
        {
            self.outbox.push_back(Frame::Doc {
                doc: doc.0,
                message: message.encode(),
                signatures,
            });
        }
        Ok(())
    }

    fn on_doc(
        &mut self,
        doc: DocId,
        message: &[u8],
        signatures: &[icn_engine::ChangeSignature],
    ) -> Result<(), SessionError> {
        let held = self.replica.kind(&doc).is_some();
        if !self.docs.contains_key(&doc) {
            // A document not held here is taken only if it names this node
            // as a reader (`receive_sync`'s check below); one held here is
            // synced only with a peer that may have it.
            if held && !self.replica.may_receive(&doc, &self.peer) {
                // Views of membership can lag; nothing is sent or taken.
                tracing::debug!(peer = %self.peer, doc = %doc, "sync of a document not shared with this peer");
                return Ok(());
            }
            self.docs.insert(doc, State::new());
        }
        let message = match Message::decode(message) {
            Ok(m) => m,
            Err(e) => return self.fault(format!("a malformed sync message: {e}")),
        };
        let Some(state) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        let received = self
            .replica
            .receive_sync(&doc, state, message, signatures, &self.me);
        match received {
            Ok((new, missing)) => {
                self.stats.changes_in += new;
                let needs = self.needs.entry(doc).or_default();
                let replica = &self.replica;
                needs.retain(|h| !replica.has_change(&doc, h));
                for h in missing {
                    if !needs.contains(&h) && needs.len() < MAX_IDS_PER_FRAME {
                        needs.push(h);
                    }
                }
                if let Err(e) = self
                    .replica
                    .put_peer_sync_state(&self.peer, &doc, &state.encode())
                {
                    tracing::warn!(doc = %doc, error = %e, "keeping the sync state failed");
                }
                self.sync_doc(&doc)?;
                if !held && self.replica.kind(&doc).is_some() {
                    self.newly_held(&doc)?;
                }
                Ok(())
            }
            Err(ApplyError::NotWanted(_)) => {
                // Perhaps it belongs to a co-op not held yet; it is asked
                // for again when one arrives.
                tracing::debug!(peer = %self.peer, doc = %doc, "document offered but not for this node");
                self.docs.remove(&doc);
                Ok(())
            }
            Err(ApplyError::Storage(e)) => Err(SessionError::Storage(e.to_string())),
            Err(ApplyError::ModuleNeeded(hash)) => {
                // Honest: a close this node cannot check yet. Fetch the
                // module, then sync the document afresh.
                self.docs.insert(doc, fresh_state());
                let waiting = self.blobs_wanted.entry(hash).or_default();
                if waiting.is_empty() {
                    self.outbox.push_back(Frame::BlobWant { hash });
                }
                if !waiting.contains(&doc) {
                    waiting.push(doc);
                }
                Ok(())
            }
            Err(e) => {
                // Start this document over: the peer's state of it is unknown.
                self.docs.insert(doc, fresh_state());
                self.fault(format!("document {doc}: {e}"))
            }
        }
    }

    /// A document this node did not hold arrived: start its ledger, and
    /// ask again for offered documents that may hang off it.
    fn newly_held(&mut self, doc: &DocId) -> Result<(), SessionError> {
        if self.replica.kind(doc) == Some(DocKind::Coop) {
            self.start_ledger(doc)?;
        }
        let retry: Vec<DocId> = self
            .offered
            .iter()
            .filter(|d| self.replica.kind(d).is_none() && !self.docs.contains_key(d))
            .copied()
            .collect();
        for d in retry {
            self.start_doc(d)?;
        }
        Ok(())
    }

    /// Sends this node's heads of a co-op's ledger, once per session.
    fn start_ledger(&mut self, coop: &DocId) -> Result<(), SessionError> {
        let ledger = self.ledgers.entry(*coop).or_default();
        if ledger.started {
            return Ok(());
        }
        ledger.started = true;
        let heads = self.replica.ledger_heads(coop).map_err(storage)?;
        self.outbox.push_back(Frame::LedgerHeads {
            coop: coop.0,
            heads: heads.iter().take(MAX_IDS_PER_FRAME).map(|h| h.0).collect(),
        });
        // The peer's heads may have come before this node held the co-op.
        self.want_missing_heads(coop)
    }

    fn on_heads(&mut self, coop: DocId, heads: Vec<EntryId>) -> Result<(), SessionError> {
        if !self.docs.contains_key(&coop) {
            // Not a co-op these two sync (yet): views of membership can lag.
            return Ok(());
        }
        let ledger = self.ledgers.entry(coop).or_default();
        if std::mem::replace(&mut ledger.heads_seen, true) {
            return self.fault(format!("ledger heads of {coop} a second time"));
        }
        ledger.their_heads = heads;
        self.want_missing_heads(&coop)
    }

    /// When the peer names heads this node lacks, sends the filter of what
    /// it holds, so the peer sends the rest.
    fn want_missing_heads(&mut self, coop: &DocId) -> Result<(), SessionError> {
        let Some(ledger) = self.ledgers.get(coop) else {
            return Ok(());
        };
        if !ledger.started || ledger.their_heads.is_empty() {
            return Ok(());
        }
        let mut lacking = false;
        for h in &ledger.their_heads {
            lacking |= !self.replica.has_entry(coop, h).map_err(storage)?;
        }
        if lacking {
            self.send_have(coop)?;
        }
        // Entries waiting here count as held above: when the peer's heads
        // are all waiting on a parent, no filter goes out and no answer
        // comes back to ask for it at its end. Ask for such parents now.
        self.want_missing_parents(coop)
    }

    /// Sends the filter of every entry id this node holds of `coop`.
    fn send_have(&mut self, coop: &DocId) -> Result<(), SessionError> {
        let ids = self.replica.entry_ids(coop).map_err(storage)?;
        let bloom = Bloom::of(ids.iter().map(|i| &i.0));
        self.outbox.push_back(Frame::LedgerHave {
            coop: coop.0,
            bloom: bloom.into_bits(),
        });
        Ok(())
    }

    fn may_send_ledger(&self, coop: &DocId) -> bool {
        self.replica.kind(coop) == Some(DocKind::Coop) && self.replica.may_receive(coop, &self.peer)
    }

    fn on_have(&mut self, coop: DocId, bloom: Bloom) -> Result<(), SessionError> {
        if !self.may_send_ledger(&coop) {
            tracing::debug!(peer = %self.peer, coop = %coop, "ledger asked for, not sent");
            return Ok(());
        }
        let ledger = self.ledgers.entry(coop).or_default();
        ledger.haves += 1;
        if ledger.haves > MAX_HAVES_PER_LEDGER {
            return self.fault(format!(
                "more than {MAX_HAVES_PER_LEDGER} filters of {coop}"
            ));
        }
        let ids: VecDeque<EntryId> = self
            .replica
            .entry_ids(&coop)
            .map_err(storage)?
            .into_iter()
            .filter(|id| !bloom.contains(&id.0))
            .collect();
        // A newer filter of the same ledger replaces an older one not sent
        // yet: it describes the peer better, and a peer repeating itself
        // cannot pile up copies of the ledger here.
        self.outgoing.retain(|o| o.coop != coop || !o.whole);
        self.queue(Outgoing {
            coop,
            ids,
            then_done: true,
            whole: true,
        })
    }

    /// Queues entries for the peer, within [`MAX_QUEUED_IDS`].
    fn queue(&mut self, out: Outgoing) -> Result<(), SessionError> {
        let queued: usize = self.outgoing.iter().map(|o| o.ids.len()).sum();
        if queued + out.ids.len() > MAX_QUEUED_IDS {
            return self.fault(format!(
                "requests for more than {MAX_QUEUED_IDS} entries at once"
            ));
        }
        if out.whole {
            self.outgoing.push_back(out);
        } else {
            // A few ids a peer waits on (a missing parent, say) go before
            // a long catch-up still being sent.
            self.outgoing.push_front(out);
        }
        Ok(())
    }

    fn on_want(&mut self, coop: DocId, ids: Vec<[u8; 32]>) -> Result<(), SessionError> {
        if !self.may_send_ledger(&coop) {
            tracing::debug!(peer = %self.peer, coop = %coop, "entries asked for, not sent");
            return Ok(());
        }
        self.queue(Outgoing {
            coop,
            ids: ids.into_iter().map(EntryId).collect(),
            then_done: true,
            whole: false,
        })
    }

    fn on_entries(&mut self, coop: DocId, entries: Vec<Vec<u8>>) -> Result<(), SessionError> {
        if self.replica.kind(&coop) != Some(DocKind::Coop) {
            // The co-op's document has not arrived yet; its catch-up will
            // bring these again.
            return Ok(());
        }
        let results = match self.replica.ingest_entries(&coop, entries) {
            Ok(r) => r,
            Err(LedgerError::Storage(e)) => return Err(SessionError::Storage(e.to_string())),
            Err(e) => return self.fault(format!("entries of {coop}: {e}")),
        };
        let mut refused = None;
        let mut waiting = false;
        {
            let ledger = self.ledgers.entry(coop).or_default();
            for r in results {
                match r {
                    Ok(Ingest::Stored(id) | Ingest::Known(id)) => {
                        ledger.wanted.remove(&id);
                        remember(&mut ledger.peer_has, id);
                        self.stats.entries_in += 1;
                    }
                    Ok(Ingest::Pending(id)) => {
                        ledger.wanted.remove(&id);
                        remember(&mut ledger.peer_has, id);
                        self.stats.entries_in += 1;
                        waiting = true;
                    }
                    Err(EntryRefusal::PendingFull) => ledger.overflowed = true,
                    Err(e) => refused = Some(e),
                }
            }
        }
        if waiting {
            self.want_missing_parents(&coop)?;
        }
        match refused {
            Some(e) => self.fault(format!("an entry of {coop}: {e}")),
            None => Ok(()),
        }
    }

    fn on_done(&mut self, coop: DocId) -> Result<(), SessionError> {
        if self.replica.kind(&coop) != Some(DocKind::Coop) {
            return Ok(());
        }
        let Some(ledger) = self.ledgers.get_mut(&coop) else {
            return Ok(());
        };
        if std::mem::take(&mut ledger.overflowed) {
            // Entries were dropped, wanted ones among them perhaps: start
            // over from what is held now.
            ledger.wanted.clear();
            self.send_have(&coop)?;
        } else {
            let heads: Vec<EntryId> = ledger
                .their_heads
                .iter()
                .filter(|h| !ledger.wanted.contains(h))
                .copied()
                .collect();
            let mut want = Vec::new();
            for h in heads {
                if !self.replica.has_entry(&coop, &h).map_err(storage)? {
                    want.push(h);
                }
            }
            self.want(&coop, want);
        }
        self.want_missing_parents(&coop)
    }

    fn want_missing_parents(&mut self, coop: &DocId) -> Result<(), SessionError> {
        let missing = self.replica.missing_parents(coop).map_err(storage)?;
        self.want(coop, missing);
        Ok(())
    }

    fn want(&mut self, coop: &DocId, ids: Vec<EntryId>) {
        let ledger = self.ledgers.entry(*coop).or_default();
        let new: Vec<[u8; 32]> = ids
            .into_iter()
            .filter(|id| ledger.wanted.insert(*id))
            .map(|id| id.0)
            .collect();
        for chunk in new.chunks(MAX_IDS_PER_FRAME) {
            self.outbox.push_back(Frame::LedgerWant {
                coop: coop.0,
                ids: chunk.to_vec(),
            });
        }
    }
}

impl<R: Replica> Session<R> {
    fn on_blob_want(&mut self, hash: [u8; 32]) -> Result<(), SessionError> {
        // Blobs go to peers this node shares a document with.
        if self.docs.is_empty() {
            return Ok(());
        }
        let bytes = self
            .replica
            .blob(&hash)
            .map_err(|e| SessionError::Storage(e.to_string()))?;
        if let Some(bytes) = bytes.filter(|b| b.len() <= crate::wire::MAX_BLOB_BYTES) {
            self.outbox.push_back(Frame::Blob { hash, bytes });
        }
        Ok(())
    }

    fn on_blob(&mut self, hash: [u8; 32], bytes: Vec<u8>) -> Result<(), SessionError> {
        let Some(waiting) = self.blobs_wanted.remove(&hash) else {
            return self.fault("a blob that was not asked for");
        };
        if *blake3::hash(&bytes).as_bytes() != hash {
            self.blobs_wanted.insert(hash, waiting);
            return self.fault("a blob whose bytes do not match its hash");
        }
        self.replica
            .put_module(&bytes)
            .map_err(|e| SessionError::Storage(e.to_string()))?;
        for doc in waiting {
            self.sync_doc(&doc)?;
        }
        Ok(())
    }
}

/// A sync state that starts over: its first message tells the peer to
/// forget what it sent (Automerge's reset), so changes this node refused or
/// could not check yet are sent again.
fn fresh_state() -> State {
    let mut state = State::new();
    state.needs_reset = true;
    state
}

fn remember(set: &mut HashSet<EntryId>, id: EntryId) {
    if set.len() >= PEER_HAS_LIMIT {
        set.clear();
    }
    set.insert(id);
}

fn storage(e: LedgerError) -> SessionError {
    SessionError::Storage(e.to_string())
}
