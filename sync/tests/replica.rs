//! Sessions over a replica that is not the engine: an in-memory one that
//! holds plain Automerge documents and entry bytes and checks nothing. It
//! shows what a session needs of a replica, and that catch-up of documents
//! and ledgers is the session's own doing, not the engine's. (Validation is
//! the engine's, and `tests/session.rs` runs sessions over it.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT};
use icn_engine::ledger::{EntryRefusal, Ingest, LedgerError};
use icn_engine::test_utils::{keypair, sign_entry};
use icn_engine::{ApplyError, ChangeSignature, StorageError};
use icn_schemas::ledger::{Account, Body, Entry, EntryId, Posting, SignedEntry};
use icn_schemas::{Did, DocId, DocKind};
use icn_sync::Replica;
use icn_sync::session::Session;
use icn_sync::wire::Frame;

#[derive(Default)]
struct Held {
    docs: HashMap<DocId, Automerge>,
    /// Per co-op, entries in the order they arrived (parents first here).
    entries: HashMap<DocId, Vec<(EntryId, Vec<u8>)>>,
    peer_states: HashMap<(Did, DocId), Vec<u8>>,
}

/// An in-memory replica, shared between a session and the test.
#[derive(Clone, Default)]
struct MemReplica(Arc<Mutex<Held>>);

impl MemReplica {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.0.lock().expect("not poisoned")
    }

    fn parents(bytes: &[u8]) -> Vec<EntryId> {
        SignedEntry::decode(bytes)
            .map(|(e, _)| e.entry.parents)
            .unwrap_or_default()
    }
}

impl Replica for MemReplica {
    fn doc_ids(&self) -> Vec<DocId> {
        let mut ids: Vec<DocId> = self.held().docs.keys().copied().collect();
        ids.sort();
        ids
    }

    fn kind(&self, doc: &DocId) -> Option<DocKind> {
        self.held().docs.contains_key(doc).then_some(DocKind::Coop)
    }

    fn may_receive(&self, _: &DocId, _: &Did) -> bool {
        true
    }

    fn has_change(&self, doc: &DocId, hash: &ChangeHash) -> bool {
        self.held()
            .docs
            .get(doc)
            .is_some_and(|d| d.get_change_meta_by_hash(hash).is_some())
    }

    fn generate_sync(
        &self,
        doc: &DocId,
        state: &mut State,
        _: &[ChangeHash],
    ) -> Result<Option<(Message, Vec<ChangeSignature>)>, StorageError> {
        let held = self.held();
        let empty = Automerge::new();
        let d = held.docs.get(doc).unwrap_or(&empty);
        Ok(d.generate_sync_message(state).map(|m| (m, Vec::new())))
    }

    fn receive_sync(
        &self,
        doc: &DocId,
        state: &mut State,
        message: Message,
        _: &[ChangeSignature],
        _: &Did,
    ) -> Result<(u64, Vec<ChangeHash>), ApplyError> {
        let mut held = self.held();
        let d = held.docs.entry(*doc).or_default();
        let before = d.get_changes(&[]).len();
        d.receive_sync_message(state, message)
            .map_err(|e| ApplyError::BadSync(e.to_string()))?;
        Ok(((d.get_changes(&[]).len() - before) as u64, Vec::new()))
    }

    fn ledger_heads(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        let held = self.held();
        let entries = held
            .entries
            .get(coop)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let cited: Vec<EntryId> = entries.iter().flat_map(|(_, b)| Self::parents(b)).collect();
        let mut heads: Vec<EntryId> = entries
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !cited.contains(id))
            .collect();
        heads.sort();
        Ok(heads)
    }

    fn entry_ids(&self, coop: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        let held = self.held();
        let entries = held
            .entries
            .get(coop)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(entries.iter().map(|(id, _)| *id).collect())
    }

    fn entry_bytes(&self, coop: &DocId, id: &EntryId) -> Result<Option<Vec<u8>>, LedgerError> {
        let held = self.held();
        let entries = held
            .entries
            .get(coop)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(entries
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, b)| b.clone()))
    }

    fn has_entry(&self, coop: &DocId, id: &EntryId) -> Result<bool, LedgerError> {
        Ok(self.entry_bytes(coop, id)?.is_some())
    }

    fn missing_parents(&self, _: &DocId) -> Result<Vec<EntryId>, LedgerError> {
        Ok(Vec::new())
    }

    fn ingest_entries(
        &self,
        coop: &DocId,
        entries: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Ingest, EntryRefusal>>, LedgerError> {
        let mut out = Vec::new();
        for bytes in entries {
            let id = match SignedEntry::decode(&bytes) {
                Ok((_, id)) => id,
                Err(e) => {
                    out.push(Err(EntryRefusal::Decode(e)));
                    continue;
                }
            };
            if self.has_entry(coop, &id)? {
                out.push(Ok(Ingest::Known(id)));
                continue;
            }
            self.held()
                .entries
                .entry(*coop)
                .or_default()
                .push((id, bytes));
            out.push(Ok(Ingest::Stored(id)));
        }
        Ok(out)
    }

    fn peer_sync_state(&self, peer: &Did, doc: &DocId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.held().peer_states.get(&(*peer, *doc)).cloned())
    }

    fn put_peer_sync_state(
        &self,
        peer: &Did,
        doc: &DocId,
        state: &[u8],
    ) -> Result<(), StorageError> {
        self.held()
            .peer_states
            .insert((*peer, *doc), state.to_vec());
        Ok(())
    }

    fn blob(&self, _: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(None)
    }

    fn put_module(&self, bytes: &[u8]) -> Result<[u8; 32], StorageError> {
        Ok(*blake3::hash(bytes).as_bytes())
    }
}

/// Moves frames both ways, through their encoding, until neither side has
/// anything to say.
fn pump(a: &mut Session<MemReplica>, b: &mut Session<MemReplica>) {
    while deliver(a, b) | deliver(b, a) {}
}

/// Delivers what `from` has to say to `to`; whether anything moved.
fn deliver(from: &mut Session<MemReplica>, to: &mut Session<MemReplica>) -> bool {
    let mut moved = false;
    while let Some(frame) = from.next_frame().expect("next frame") {
        let frame = Frame::decode(&frame.encode()).expect("frames decode");
        to.receive(frame).expect("frame taken");
        moved = true;
    }
    moved
}

/// A chain of `n` settlements in co-op `coop` (citing its heads
/// `coop_heads`), each citing the one before.
fn chain(coop: DocId, coop_heads: &[ChangeHash], n: usize) -> Vec<(EntryId, Vec<u8>)> {
    let (alice, bob) = (keypair(1), keypair(2));
    let mut parents = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let mut postings = vec![
            Posting {
                account: Account::Member(alice.did()),
                unit: "hours".into(),
                amount: -1,
            },
            Posting {
                account: Account::Member(bob.did()),
                unit: "hours".into(),
                amount: 1,
            },
        ];
        icn_schemas::ledger::sort_postings(&mut postings);
        let bytes = sign_entry(
            &alice,
            Entry {
                coop,
                parents: parents.clone(),
                author: alice.did(),
                signer: alice.did(),
                timestamp: 1_700_000_000_000 + i as u64,
                coop_heads: coop_heads.iter().map(|h| h.0).collect(),
                body: Body::Transfer {
                    postings,
                    from_allowance: false,
                },
                memo: format!("{i}"),
                decision: None,
                delegation: None,
            },
        );
        let (_, id) = SignedEntry::decode(&bytes).expect("decodes");
        parents = vec![id];
        out.push((id, bytes));
    }
    out
}

#[test]
fn a_session_catches_up_documents_and_ledgers_over_an_in_memory_replica() {
    let coop = DocId([7; 32]);
    let (a, b) = (MemReplica::default(), MemReplica::default());
    {
        let mut doc = Automerge::new();
        for i in 0..3i64 {
            let mut tx = doc.transaction();
            tx.put(ROOT, "n", i).expect("put");
            tx.commit();
        }
        let entries = chain(coop, &doc.get_heads(), 5);
        let mut held = a.held();
        held.docs.insert(coop, doc);
        held.entries.insert(coop, entries);
    }
    let (me, peer) = (keypair(10).did(), keypair(11).did());
    let mut sa = Session::new(a.clone(), me, peer);
    let mut sb = Session::new(b.clone(), peer, me);
    pump(&mut sa, &mut sb);
    let heads = |r: &MemReplica| r.held().docs.get(&coop).map(|d| d.get_heads());
    assert!(heads(&a).is_some());
    assert_eq!(heads(&b), heads(&a), "the document arrived whole");
    assert_eq!(
        b.entry_ids(&coop).expect("ids").len(),
        5,
        "every entry arrived"
    );
    assert_eq!(
        b.ledger_heads(&coop).expect("heads"),
        a.ledger_heads(&coop).expect("heads")
    );
    assert_eq!(sb.stats().entries_in, 5);
    // What b knows of a's document is kept for the next session.
    assert!(b.peer_sync_state(&me, &coop).expect("state").is_some());
}
