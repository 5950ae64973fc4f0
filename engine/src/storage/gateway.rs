//! The gateway's records ([`super::layout`], tree `gateway`): the
//! delegations members signed to log in, and each co-op's WebSocket event
//! log with the document heads it covers (those in the `ledger` tree, so
//! they join the ledger groups' batches). Only this file knows their keys.

use icn_schemas::{DocId, SignedDelegation};

use super::layout::gateway as keys;
use super::{Record, StorageError, Store};

fn corrupt(reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        tree: super::layout::GATEWAY,
        reason: reason.to_string(),
    }
}

/// An event of a co-op's log as stored: its seq and its JSON text.
pub type StoredEvent = (u64, Vec<u8>);

impl Store {
    /// Stores the delegation `signed` under its hash, unless one is held
    /// there already: then returns `false` and changes nothing. Not durable
    /// until [`Store::make_durable`].
    pub fn put_delegation_once(
        &self,
        hash: &[u8; 32],
        signed: &SignedDelegation,
    ) -> Result<bool, StorageError> {
        let value = postcard::to_stdvec(signed).map_err(corrupt)?;
        let swapped = self.inner.gateway.compare_and_swap(
            keys::delegation_key(hash),
            None as Option<&[u8]>,
            Some(value),
        )?;
        Ok(swapped.is_ok())
    }

    /// The delegation stored under `hash`.
    pub fn delegation(&self, hash: &[u8; 32]) -> Result<Option<SignedDelegation>, StorageError> {
        self.inner
            .gateway
            .get(keys::delegation_key(hash))?
            .map(|v| postcard::from_bytes(&v).map_err(corrupt))
            .transpose()
    }

    /// Records that the delegation stored under `hash` was logged out: the
    /// gateway refuses its tokens from now on. Not durable until
    /// [`Store::make_durable`].
    pub fn log_out(&self, hash: &[u8; 32]) -> Result<(), StorageError> {
        self.inner
            .gateway
            .insert(keys::logged_out_key(hash), Vec::new())?;
        Ok(())
    }

    /// Keeps the answer to an idempotent request under `slot`, stored at
    /// `at` (unix seconds). Durable on return.
    pub fn put_idempotent(
        &self,
        slot: &[u8; 32],
        at: u64,
        record: &[u8],
    ) -> Result<(), StorageError> {
        let mut value = Vec::with_capacity(8 + record.len());
        value.extend_from_slice(&at.to_be_bytes());
        value.extend_from_slice(record);
        self.inner
            .gateway
            .insert(keys::idempotent_key(slot), value)?;
        self.make_durable()
    }

    /// The answer kept under `slot`, if one was stored at or after `since`.
    pub fn idempotent(&self, slot: &[u8; 32], since: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(value) = self.inner.gateway.get(keys::idempotent_key(slot))? else {
            return Ok(None);
        };
        let at = value
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt("an idempotent answer is too short"))?;
        Ok((at >= since).then(|| value[8..].to_vec()))
    }

    /// Forgets the answers stored before `before` (unix seconds); how many.
    pub fn prune_idempotent(&self, before: u64) -> Result<usize, StorageError> {
        let mut batch = sled::Batch::default();
        let mut pruned = 0;
        for row in self.inner.gateway.scan_prefix([keys::IDEMPOTENT]) {
            let (k, v) = row?;
            let at = v
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if at < before {
                batch.remove(k);
                pruned += 1;
            }
        }
        self.inner.gateway.apply_batch(batch)?;
        Ok(pruned)
    }

    /// Stores an invite under the hash of its code, unless one is there.
    /// Durable on return.
    pub fn put_invite(&self, hash: &[u8; 32], invite: &[u8]) -> Result<bool, StorageError> {
        let swapped = self.inner.gateway.compare_and_swap(
            keys::invite_key(hash),
            None as Option<&[u8]>,
            Some(invite),
        )?;
        self.make_durable()?;
        Ok(swapped.is_ok())
    }

    /// The invite stored under the hash of its code.
    pub fn invite(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .inner
            .gateway
            .get(keys::invite_key(hash))?
            .map(|v| v.to_vec()))
    }

    /// Replaces the invite `old` with `new` if it is still `old`: how a
    /// one-time code is used once, even by two applicants at the same
    /// moment. Durable on return.
    pub fn swap_invite(
        &self,
        hash: &[u8; 32],
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StorageError> {
        let swapped =
            self.inner
                .gateway
                .compare_and_swap(keys::invite_key(hash), Some(old), Some(new))?;
        self.make_durable()?;
        Ok(swapped.is_ok())
    }

    /// Stores `applicant`'s application to `coop`. Durable on return.
    pub fn put_application(
        &self,
        coop: &DocId,
        applicant: &[u8; 32],
        application: &[u8],
    ) -> Result<(), StorageError> {
        self.inner
            .gateway
            .insert(keys::application_key(coop, applicant), application)?;
        self.make_durable()
    }

    /// `applicant`'s application to `coop`.
    pub fn application(
        &self,
        coop: &DocId,
        applicant: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .inner
            .gateway
            .get(keys::application_key(coop, applicant))?
            .map(|v| v.to_vec()))
    }

    /// Every application to `coop`.
    pub fn applications(&self, coop: &DocId) -> Result<Vec<Vec<u8>>, StorageError> {
        self.inner
            .gateway
            .scan_prefix(keys::applications_prefix(coop))
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    /// Whether the delegation stored under `hash` was logged out.
    pub fn logged_out(&self, hash: &[u8; 32]) -> Result<bool, StorageError> {
        Ok(self
            .inner
            .gateway
            .contains_key(keys::logged_out_key(hash))?)
    }

    /// Appends events (co-op, seq, JSON) to their co-ops' logs and records
    /// the heads of each document the logs now cover, all or (after a
    /// crash) none. The logs live in the `ledger` tree, and these rows go
    /// to sled in the same batch as whatever ledger groups are being
    /// committed at the time ([`Store::commit_ledger`]): each sled batch
    /// costs two writes of sled's log, which a busy node's event writer
    /// would otherwise add to every sync. Not durable until
    /// [`Store::make_durable`].
    pub fn append_events(
        &self,
        events: &[(DocId, StoredEvent)],
        covered: &[(DocId, Vec<[u8; 32]>)],
    ) -> Result<(), StorageError> {
        if events.is_empty() && covered.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(events.len() + covered.len());
        for (coop, (seq, json)) in events {
            rows.push((keys::event_key(coop, *seq).to_vec(), Some(json.clone())));
        }
        for (doc, heads) in covered {
            let bytes: Vec<u8> = heads.iter().flatten().copied().collect();
            rows.push((keys::heads_key(doc).to_vec(), Some(bytes)));
        }
        self.commit_ledger(rows)
    }

    /// Up to `limit` events of `coop`'s log after seq `after`, in order.
    pub fn events_after(
        &self,
        coop: &DocId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let prefix = keys::events_prefix(coop);
        let from = keys::event_key(coop, after);
        let mut out = Vec::new();
        for kv in self.inner.ledger.range::<&[u8], _>((
            std::ops::Bound::Excluded(&from[..]),
            std::ops::Bound::Unbounded,
        )) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || out.len() == limit {
                break;
            }
            let seq = keys::seq_of(&k).ok_or_else(|| corrupt("an event key without a seq"))?;
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    /// The last seq of `coop`'s log; 0 when it is empty.
    pub fn last_event_seq(&self, coop: &DocId) -> Result<u64, StorageError> {
        let last = self
            .inner
            .ledger
            .scan_prefix(keys::events_prefix(coop))
            .next_back()
            .transpose()?;
        match last {
            None => Ok(0),
            Some((k, _)) => keys::seq_of(&k).ok_or_else(|| corrupt("an event key without a seq")),
        }
    }

    /// The heads of `doc` the event log covers; `None` before the log
    /// first covered it.
    pub fn event_heads(&self, doc: &DocId) -> Result<Option<Vec<[u8; 32]>>, StorageError> {
        let Some(bytes) = self.inner.ledger.get(keys::heads_key(doc))? else {
            return Ok(None);
        };
        if bytes.len() % 32 != 0 {
            return Err(corrupt("covered heads are not 32-byte hashes"));
        }
        Ok(Some(
            bytes
                .chunks_exact(32)
                .filter_map(|c| <[u8; 32]>::try_from(c).ok())
                .collect(),
        ))
    }

    /// Every gateway record, for a backup: the `gateway` tree as stored,
    /// and the event logs under the keys they had there in version 4
    /// ([`keys::event_row_v4`]), so backups read the same either side of
    /// the move.
    pub(crate) fn gateway_records(&self) -> Result<Vec<Record>, StorageError> {
        let mut records = Vec::new();
        for kv in self.inner.gateway.iter() {
            let (k, v) = kv?;
            records.push((k.to_vec(), v.to_vec()));
        }
        for doc in self.inner.doc_meta.iter().keys() {
            let doc = doc?;
            let doc = DocId(
                doc.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("a document id not 32 bytes"))?,
            );
            let heads = keys::heads_key(&doc);
            let covered = self
                .inner
                .ledger
                .get(heads)?
                .map(|v| Ok((heads.as_slice().into(), v)));
            let log = self.inner.ledger.scan_prefix(keys::events_prefix(&doc));
            for kv in covered.into_iter().chain(log) {
                let (k, v) = kv?;
                let k = keys::event_row_v4(&k)
                    .ok_or_else(|| corrupt("an event key of no known shape"))?;
                records.push((k, v.to_vec()));
            }
        }
        Ok(records)
    }

    /// Restores a backup's gateway record as it was stored (an event log
    /// row to where it lives now). Not durable until [`Store::make_durable`].
    pub(crate) fn put_gateway_record(&self, (key, value): &Record) -> Result<(), StorageError> {
        match keys::event_row_now(key) {
            Some(now) => self.inner.ledger.insert(now, value.as_slice())?,
            None => self
                .inner
                .gateway
                .insert(key.as_slice(), value.as_slice())?,
        };
        Ok(())
    }
}
