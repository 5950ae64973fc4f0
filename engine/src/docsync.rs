//! The Automerge sync protocol, with every change's signature beside it and
//! every received change through validation before it merges.
//!
//! Automerge's own `receive_sync_message` loads whatever a peer sends
//! straight into the document. Here the changes a message carries are
//! loaded into a fork, listed, paired with the signatures that travelled
//! with them, and handed to [`Engine::apply_remote`] as one batch; only the
//! message's bookkeeping (heads, needs, bloom filter) reaches Automerge's
//! sync state directly.

use std::collections::HashMap;

use automerge::sync::{ChunkList, Message, State, SyncDoc};
use automerge::{Automerge, ChangeHash, ReadDoc};
use icn_schemas::{DocId, Reader, domain};

use crate::change::{ChangeSignature, SignedChange};
use crate::engine::{Applied, ApplyError, Engine, Incoming, Loaded};
use crate::storage::StorageError;

/// Automerge's storage chunks start with 4 magic bytes and a 4-byte
/// checksum; the next byte is the chunk type, 0 for a whole document.
const CHUNK_TYPE_AT: usize = 8;
const CHUNK_TYPE_DOCUMENT: u8 = 0;

impl Engine {
    /// The next Automerge sync message for a peer described by `state`,
    /// with the signature of every change it carries; `None` when there is
    /// nothing to say. A document this node does not hold syncs as an empty
    /// one, which asks the peer for everything.
    ///
    /// `need` names changes to ask for beyond what Automerge asks for: the
    /// missing dependencies [`Engine::receive_sync`] reported.
    pub fn generate_sync(
        &self,
        id: &DocId,
        state: &mut State,
        need: &[ChangeHash],
    ) -> Result<Option<(Message, Vec<ChangeSignature>)>, StorageError> {
        let mut generated = self.generate_signed(id, state)?;
        if let Some((message, _)) = &mut generated {
            for hash in need {
                let held = self
                    .read(id, |r| r.doc().get_change_meta_by_hash(hash).is_some())
                    .unwrap_or(false);
                if !held && !message.need.contains(hash) {
                    message.need.push(*hash);
                }
            }
            // The encoding wants them sorted.
            message.need.sort_unstable();
        }
        Ok(generated)
    }

    fn generate_signed(
        &self,
        id: &DocId,
        state: &mut State,
    ) -> Result<Option<(Message, Vec<ChangeSignature>)>, StorageError> {
        let generated = match self.handle(id) {
            None => Automerge::new()
                .generate_sync_message(state)
                .map(|m| (m, Vec::new())),
            Some(handle) => {
                let doc = handle.lock().unwrap_or_else(|p| p.into_inner());
                let before = state.sent_hashes.clone();
                let Some(message) = doc.doc.generate_sync_message(state) else {
                    return Ok(None);
                };
                // A whole-document message carries every change, including
                // ones sent before in this session.
                let whole = message
                    .changes
                    .iter()
                    .any(|chunk| chunk.get(CHUNK_TYPE_AT).copied() == Some(CHUNK_TYPE_DOCUMENT));
                let hashes: Vec<ChangeHash> = if whole {
                    doc.doc
                        .get_changes_meta(&[])
                        .iter()
                        .map(|c| c.hash)
                        .collect()
                } else {
                    state.sent_hashes.difference(&before).copied().collect()
                };
                drop(doc);
                let hashes: Vec<[u8; 32]> = hashes.iter().map(|h| h.0).collect();
                let signed = self.store().signed_changes(id, &hashes)?;
                let signatures = hashes
                    .iter()
                    .zip(signed)
                    .map(|(hash, signed)| ChangeSignature {
                        hash: *hash,
                        signature: signed.signature,
                        delegation: signed.delegation,
                    })
                    .collect();
                Some((message, signatures))
            }
        };
        Ok(generated)
    }

    /// Takes in a peer's sync message: the changes it carries are validated
    /// as one batch with their `signatures` and merged only if all pass
    /// ([`Engine::apply_remote`]); then `state` learns what the peer holds.
    ///
    /// A document this node does not hold is taken only if `wanted`
    /// approves it as the message would make it (for example: it names this
    /// node as a member device or relay); otherwise nothing is stored and
    /// [`ApplyError::NotWanted`] is returned.
    ///
    /// Changes whose dependencies did not come (the peer's bloom filter took
    /// them for ours) are not kept; their missing dependencies are returned
    /// (`need` for the next [`Engine::generate_sync`]), and the next message
    /// asks the peer to send again what it sent.
    pub fn receive_sync(
        &self,
        id: &DocId,
        state: &mut State,
        mut message: Message,
        signatures: &[ChangeSignature],
        wanted: impl FnOnce(Reader<'_>) -> bool,
    ) -> Result<(Applied, Vec<ChangeHash>), ApplyError> {
        check_blooms(&message)?;
        let chunks = std::mem::replace(&mut message.changes, ChunkList::empty());
        let mut applied = Applied {
            new: Vec::new(),
            heads: self.heads(id).unwrap_or_default(),
            closes: Default::default(),
        };
        let mut missing = Vec::new();
        if !chunks.is_empty() {
            let loaded = self.signed_batch(id, &chunks, signatures, wanted)?;
            // Changes whose dependencies did not come are dropped, unlike
            // in Automerge, which queues them; the peer counts them as
            // sent. A fork holding such a queue is never merged: its
            // changes are judged and applied again from their bytes.
            missing = loaded.fork.get_missing_deps(&[]);
            let module = module_of(&loaded.fork);
            let incoming = if missing.is_empty() {
                Incoming::Loaded(Box::new(loaded))
            } else {
                Incoming::Batch(loaded.changes.into_iter().map(|(_, s)| s).collect())
            };
            applied = match self.merge_remote(id, incoming) {
                Err(ApplyError::Refused(r)) if r.module_not_held() => {
                    return Err(match module {
                        Some(hash) => ApplyError::ModuleNeeded(hash),
                        None => ApplyError::Refused(r),
                    });
                }
                other => other?,
            };
        }
        // With the changes taken out, Automerge only updates its record of
        // the peer's heads, needs and bloom filter; the document is not
        // touched. It would also take the message for one without changes
        // and, finding the peer's heads equal to ours, note that the peer
        // knows our heads, so we would never tell the peer that we merged
        // what it sent: keep its record of what we last sent as it was.
        let last_sent = (!chunks.is_empty()).then(|| state.last_sent_heads.clone());
        let result = match self.handle(id) {
            Some(handle) => {
                let mut doc = handle.lock().unwrap_or_else(|p| p.into_inner());
                doc.doc.receive_sync_message(state, message)
            }
            None => Automerge::new().receive_sync_message(state, message),
        };
        result.map_err(|e| ApplyError::BadSync(e.to_string()))?;
        if let Some(last_sent) = last_sent {
            state.last_sent_heads = last_sent;
        }
        if !missing.is_empty() {
            // Our next message asks for the missing dependencies and tells
            // the peer to forget what it sent, so it sends the dropped
            // changes again too.
            state.needs_reset = true;
        }
        Ok((applied, missing))
    }

    /// The changes in `chunks` loaded into a fork of the document as it
    /// stands, with those it lacks listed in causal order, each with its
    /// signature.
    fn signed_batch(
        &self,
        id: &DocId,
        chunks: &ChunkList,
        signatures: &[ChangeSignature],
        wanted: impl FnOnce(Reader<'_>) -> bool,
    ) -> Result<Loaded, ApplyError> {
        let held = self.handle(id);
        let (mut fork, base) = match &held {
            Some(handle) => {
                let doc = handle.lock().unwrap_or_else(|p| p.into_inner());
                (doc.doc.fork(), doc.doc.get_heads())
            }
            None => (Automerge::new(), Vec::new()),
        };
        for chunk in chunks.iter() {
            fork.load_incremental(chunk)
                .map_err(|e| ApplyError::BadSync(format!("changes do not load: {e}")))?;
        }
        if held.is_none() && !wanted(Reader::now(&fork)) {
            return Err(ApplyError::NotWanted(*id));
        }
        let by_hash: HashMap<&[u8; 32], &ChangeSignature> =
            signatures.iter().map(|s| (&s.hash, s)).collect();
        // Changes whose dependencies did not arrive stay queued in the fork
        // and are not listed: the peer is asked for them again (the
        // `needs_reset` in `receive_sync`).
        let changes = fork
            .get_changes(&base)
            .into_iter()
            .map(|c| {
                let hash = c.hash();
                let sig = by_hash.get(&hash.0).ok_or_else(|| {
                    ApplyError::BadSync(format!("change {hash} has no signature"))
                })?;
                let signed = SignedChange {
                    change: c.raw_bytes().to_vec(),
                    signature: sig.signature,
                    delegation: sig.delegation.clone(),
                };
                Ok((c, signed))
            })
            .collect::<Result<Vec<_>, ApplyError>>()?;
        Ok(Loaded {
            fork,
            base,
            changes,
        })
    }
}

/// Most probes, and bits per entry, a peer's bloom filter may ask for.
/// Automerge uses 7 and 10.
const MAX_BLOOM_PARAMETER: u64 = 64;

/// Refuses bloom filters that Automerge would choke on: Automerge 0.12
/// parses any parameters, then divides by the filter's size (zero when it
/// has no bits per entry) and allocates a vector of `probes` entries (up to
/// 2³² of them) for every hash it looks up.
fn check_blooms(message: &Message) -> Result<(), ApplyError> {
    for have in &message.have {
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            continue; // An empty filter: holds nothing.
        }
        let mut rest = bytes.as_slice();
        let mut next = || leb128(&mut rest);
        let (entries, bits_per_entry, probes) = (next(), next(), next());
        let sane = |v: Option<u64>| v.is_some_and(|v| (1..=MAX_BLOOM_PARAMETER).contains(&v));
        if entries.is_none() || !sane(bits_per_entry) || !sane(probes) {
            return Err(ApplyError::BadSync(format!(
                "a bloom filter with {bits_per_entry:?} bits per entry and {probes:?} probes"
            )));
        }
    }
    Ok(())
}

/// Reads one unsigned LEB128 number.
fn leb128(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The WASM tally module a domain document's rules name, if any.
fn module_of(doc: &Automerge) -> Option<[u8; 32]> {
    let domain::Method::Wasm { module } = domain::read_rules(Reader::now(doc)).method else {
        return None;
    };
    let mut hash = [0u8; 32];
    hex::decode_to_slice(module, &mut hash).ok()?;
    Some(hash)
}
