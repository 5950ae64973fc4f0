//! Backups of a running node, and restoring them into an empty one.
//!
//! Copying sled's files while the node writes can catch them torn. A
//! backup is instead everything the node holds, as the signed data it is
//! made of: every stored blob (tally modules), every document's signed
//! changes in causal order (co-ops first), every co-op's ledger entries
//! parents first, and the gateway's records (delegations behind tokens,
//! event logs). Restoring replays them through the same validation as
//! data from a peer, so a damaged or altered backup cannot put anything
//! invalid into the new store; whatever does not pass is counted and left
//! out.
//!
//! The file: `icn-backup/v1\n`, then records, each a u32 big-endian length
//! and a postcard [`Record`], ending with [`Record::End`], whose counts
//! tell a whole backup from a truncated one. Data committed while a backup
//! is written may or may not be in it; what is in it holds together,
//! because a change is stored only after its dependencies and an entry
//! after its parents.

use std::io::{Read, Write};

use icn_schemas::{DocId, DocKind};

use crate::change::SignedChange;
use crate::ledger::LedgerError;
use crate::storage::StorageError;
use crate::{ApplyError, Engine};

/// First bytes of every backup.
pub const MAGIC: &[u8] = b"icn-backup/v1\n";

/// Largest record read back (a document's whole history, or a page of
/// entries).
const MAX_RECORD: u32 = 1 << 30;

/// Entries per record.
const ENTRIES_PER_RECORD: usize = 1000;

/// One record of a backup file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// A content-addressed blob.
    Blob(Vec<u8>),
    /// A document's signed changes, genesis first.
    Doc {
        /// The document.
        id: [u8; 32],
        /// Its changes in causal order.
        changes: Vec<SignedChange>,
    },
    /// Some of a co-op's ledger entries, encoded, parents first.
    Entries {
        /// The co-op.
        coop: [u8; 32],
        /// Canonical encodings.
        entries: Vec<Vec<u8>>,
    },
    /// A gateway record.
    Gateway {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// The end, with what came before.
    End(Counts),
}

/// What a backup holds, or what a restore took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Blobs.
    pub blobs: u64,
    /// Documents.
    pub docs: u64,
    /// Document changes.
    pub changes: u64,
    /// Ledger entries.
    pub entries: u64,
    /// Gateway records.
    pub gateway: u64,
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing the file.
    #[error("backup file: {0}")]
    Io(#[from] std::io::Error),
    /// The store.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Not a backup, or a damaged one.
    #[error("not an ICN backup, or a damaged one: {0}")]
    Format(String),
    /// The file ends before its last record.
    #[error("the backup is truncated: it has no end record")]
    Truncated,
    /// Restoring into a node that holds data.
    #[error("restore needs an empty store; this one holds {0} documents")]
    NotEmpty(usize),
}

fn write_record(w: &mut impl Write, record: &Record) -> Result<(), BackupError> {
    let bytes = postcard::to_stdvec(record).map_err(|e| BackupError::Format(e.to_string()))?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| BackupError::Format("a record over 1 GiB".into()))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&bytes)?;
    Ok(())
}

fn read_record(r: &mut impl Read) -> Result<Option<Record>, BackupError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_RECORD {
        return Err(BackupError::Format(format!("a record claims {len} bytes")));
    }
    let mut bytes = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut bytes)?;
    if bytes.len() != len as usize {
        return Err(BackupError::Truncated);
    }
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| BackupError::Format(e.to_string()))
}

impl Engine {
    /// Writes a backup of everything this node holds to `w`, while it runs.
    pub fn backup(&self, w: &mut impl Write) -> Result<Counts, BackupError> {
        let mut counts = Counts::default();
        w.write_all(MAGIC)?;
        for hash in self.store().blob_hashes()? {
            if let Some(bytes) = self.store().blob(&hash)? {
                write_record(w, &Record::Blob(bytes))?;
                counts.blobs += 1;
            }
        }
        // Co-ops first: a domain's authority may read its co-op.
        let mut ids = self.doc_ids();
        ids.sort_by_key(|id| self.kind(id) != Some(DocKind::Coop));
        for id in &ids {
            let changes = self.changes_since(id, &[])?;
            counts.docs += 1;
            counts.changes += changes.len() as u64;
            write_record(w, &Record::Doc { id: id.0, changes })?;
        }
        for id in &ids {
            if self.kind(id) != Some(DocKind::Coop) {
                continue;
            }
            let entries = self.entries(id)?;
            counts.entries += entries.len() as u64;
            for page in entries.chunks(ENTRIES_PER_RECORD) {
                write_record(
                    w,
                    &Record::Entries {
                        coop: id.0,
                        entries: page.to_vec(),
                    },
                )?;
            }
        }
        for (key, value) in self.store().gateway_records()? {
            write_record(w, &Record::Gateway { key, value })?;
            counts.gateway += 1;
        }
        write_record(w, &Record::End(counts))?;
        w.flush()?;
        Ok(counts)
    }

    /// Restores a backup into this engine, whose store must be empty.
    /// Every change and entry is validated as if a peer sent it; returns
    /// what was taken, which is less than the backup's counts only for
    /// data that did not pass (logged).
    pub fn restore(&self, r: &mut impl Read) -> Result<Counts, BackupError> {
        let held = self.doc_ids().len();
        if held > 0 {
            return Err(BackupError::NotEmpty(held));
        }
        let mut magic = vec![0u8; MAGIC.len()];
        r.read_exact(&mut magic)
            .map_err(|_| BackupError::Format("no header".into()))?;
        if magic != MAGIC {
            return Err(BackupError::Format("no icn-backup/v1 header".into()));
        }
        let mut taken = Counts::default();
        let expected = loop {
            let Some(record) = read_record(r)? else {
                return Err(BackupError::Truncated);
            };
            match record {
                Record::Blob(bytes) => {
                    self.store().put_blob(&bytes)?;
                    taken.blobs += 1;
                }
                Record::Doc { id, changes } => {
                    let id = DocId(id);
                    let count = changes.len() as u64;
                    match self.apply_remote(&id, changes) {
                        Ok(_) => {
                            taken.docs += 1;
                            taken.changes += count;
                        }
                        Err(ApplyError::Storage(e)) => return Err(e.into()),
                        Err(e) => {
                            tracing::warn!(doc = %id, error = %e, "a document of the backup does not pass; left out")
                        }
                    }
                }
                Record::Entries { coop, entries } => {
                    let results = self.ingest_entries(&DocId(coop), entries)?;
                    for result in results {
                        match result {
                            Ok(_) => taken.entries += 1,
                            Err(e) => {
                                tracing::warn!(error = %e, "an entry of the backup does not pass; left out")
                            }
                        }
                    }
                }
                Record::Gateway { key, value } => {
                    self.store().put_gateway_record(&(key, value))?;
                    taken.gateway += 1;
                }
                Record::End(counts) => break counts,
            }
        };
        self.store().make_durable()?;
        if taken != expected {
            tracing::warn!(
                ?expected,
                ?taken,
                "the restore took less than the backup held"
            );
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Signer;
    use crate::test_utils::{TestNode, keypair, new_coop, new_domain};
    use icn_schemas::coop;

    fn node_with_data() -> (TestNode, DocId) {
        let node = TestNode::new();
        let alice = keypair(1);
        let bob = keypair(2);
        let signer = Signer::Device(alice.clone());
        let coop_id = node
            .engine
            .create_coop(&signer, &new_coop(&alice))
            .expect("coop");
        node.engine
            .write(&coop_id, &signer, |tx| {
                coop::add_member(tx, &bob.did(), coop::Role::Member, 1_700_000_100)
            })
            .expect("member");
        node.engine
            .create_domain(&signer, &new_domain(&alice))
            .expect("domain");
        let bob_signer = Signer::Device(bob.clone());
        for i in 0..2500 {
            let (from, to) = if i % 2 == 0 {
                (&signer, bob.did())
            } else {
                (&bob_signer, alice.did())
            };
            node.engine
                .settle(
                    &coop_id,
                    from,
                    &crate::ledger::Settle {
                        to,
                        amount: 1,
                        unit: "hours".into(),
                        memo: format!("{i}"),
                    },
                )
                .expect("settle");
        }
        node.engine
            .store()
            .put_gateway_record(&(b"dx".to_vec(), b"y".to_vec()))
            .expect("record");
        (node, coop_id)
    }

    #[test]
    fn a_backup_restores_everything_into_an_empty_node() {
        let (node, coop_id) = node_with_data();
        let mut file = Vec::new();
        let counts = node.engine.backup(&mut file).expect("backup");
        assert_eq!((counts.docs, counts.entries, counts.gateway), (2, 2500, 1));

        let fresh = TestNode::new();
        let taken = fresh.engine.restore(&mut file.as_slice()).expect("restore");
        assert_eq!(taken, counts);
        for id in node.engine.doc_ids() {
            assert_eq!(fresh.engine.heads(&id), node.engine.heads(&id));
        }
        let balances = |e: &Engine| e.trial_balance(&coop_id).expect("balance").accounts;
        assert_eq!(balances(&fresh.engine), balances(&node.engine));
        assert_eq!(
            fresh.engine.store().gateway_records().expect("read"),
            vec![(b"dx".to_vec(), b"y".to_vec())]
        );
        // It survives a restart of the restored node.
        let fresh = fresh.reopen();
        assert_eq!(balances(&fresh.engine), balances(&node.engine));

        // Not into a node that holds data.
        assert!(matches!(
            node.engine.restore(&mut file.as_slice()),
            Err(BackupError::NotEmpty(_))
        ));
    }

    #[test]
    fn damaged_backups_are_refused_or_filtered() {
        let (node, _) = node_with_data();
        let mut file = Vec::new();
        node.engine.backup(&mut file).expect("backup");

        // Truncated: refused, at whatever point.
        for cut in [5, MAGIC.len() + 3, file.len() / 2, file.len() - 1] {
            let fresh = TestNode::new();
            assert!(
                fresh.engine.restore(&mut &file[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // Not a backup.
        let fresh = TestNode::new();
        assert!(matches!(
            fresh.engine.restore(&mut &b"hello world, not a backup"[..]),
            Err(BackupError::Format(_))
        ));
        // A flipped byte inside a signed entry: that entry (and what
        // depends on it) is left out; nothing invalid gets in.
        let mut altered = file.clone();
        let memo = b"1234";
        let at = altered
            .windows(memo.len())
            .position(|w| w == memo)
            .expect("a memo in the file");
        altered[at] = b'9';
        let fresh = TestNode::new();
        match fresh.engine.restore(&mut altered.as_slice()) {
            Ok(taken) => assert!(taken.entries < 2500),
            Err(e) => assert!(matches!(e, BackupError::Format(_)), "{e}"),
        }
    }
}
