//! One co-op's rows in the `ledger` tree ([`crate::storage::layout`]), with
//! the writes of the group being folded laid over them until they are
//! committed as one atomic batch, or discarded.
//!
//! A fold without a tree keeps everything in the overlay: that is how the
//! ledger as it stood at some earlier heads is folded on the side.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::iter::Peekable;

use icn_schemas::DocId;

use crate::storage::{LedgerRows, StorageError};

type Row = (Vec<u8>, Vec<u8>);

/// A key and what the overlay held for it before a write: how a write
/// since the last [`Rows::mark`] is taken back.
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

pub(crate) struct Rows {
    coop: DocId,
    base: Option<sled::Tree>,
    /// Written since the last commit; `None` deletes.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Since the last [`Rows::mark`], what each write replaced.
    undo: Option<Vec<Undo>>,
}

impl Rows {
    /// The co-op's stored rows.
    pub(crate) fn stored(coop: DocId, tree: sled::Tree) -> Self {
        Rows {
            coop,
            base: Some(tree),
            overlay: BTreeMap::new(),
            undo: None,
        }
    }

    /// Rows kept in memory only.
    pub(crate) fn in_memory(coop: DocId) -> Self {
        Rows {
            coop,
            base: None,
            overlay: BTreeMap::new(),
            undo: None,
        }
    }

    pub(crate) fn coop(&self) -> DocId {
        self.coop
    }

    /// `co-op id ‖ tag ‖ parts…`.
    pub(crate) fn key(&self, tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let len = 33 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut key = Vec::with_capacity(len);
        key.extend_from_slice(&self.coop.0);
        key.push(tag);
        for p in parts {
            key.extend_from_slice(p);
        }
        key
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        match &self.base {
            Some(tree) => Ok(tree.get(key)?.map(|v| v.to_vec())),
            None => Ok(None),
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> Result<bool, StorageError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.is_some());
        }
        match &self.base {
            Some(tree) => Ok(tree.contains_key(key)?),
            None => Ok(false),
        }
    }

    /// The first `N` bytes of a row's value, without copying the rest.
    pub(crate) fn get_head<const N: usize>(
        &self,
        key: &[u8],
    ) -> Result<Option<[u8; N]>, StorageError> {
        let head = |v: &[u8]| {
            v.get(..N)
                .and_then(|h| <[u8; N]>::try_from(h).ok())
                .ok_or_else(|| StorageError::Corrupt {
                    tree: crate::storage::layout::LEDGER,
                    reason: "a row is too short".into(),
                })
        };
        if let Some(v) = self.overlay.get(key) {
            return v.as_deref().map(head).transpose();
        }
        match &self.base {
            Some(tree) => tree.get(key)?.as_deref().map(head).transpose(),
            None => Ok(None),
        }
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.note(&key);
        self.overlay.insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) -> Result<(), StorageError> {
        self.note(&key);
        match &self.base {
            // A row written since the last commit and not stored before
            // (a head replaced within one group) needs no write at all.
            Some(tree) if self.overlay.contains_key(&key) && !tree.contains_key(&key)? => {
                self.overlay.remove(&key);
            }
            Some(_) => {
                self.overlay.insert(key, None);
            }
            None => {
                self.overlay.remove(&key);
            }
        }
        Ok(())
    }

    /// The rows whose keys start with `prefix`, from `from` (inclusive) on,
    /// in key order.
    pub(crate) fn scan(
        &self,
        prefix: Vec<u8>,
        from: Vec<u8>,
    ) -> impl Iterator<Item = Result<Row, StorageError>> + '_ {
        let base: Box<dyn Iterator<Item = Result<Row, StorageError>> + '_> = match &self.base {
            Some(tree) => {
                let prefix = prefix.clone();
                Box::new(
                    tree.range(from.clone()..)
                        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
                        .take_while(move |r| {
                            r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix))
                        }),
                )
            }
            None => Box::new(std::iter::empty()),
        };
        Merge {
            base: base.peekable(),
            overlay: self.overlay.range(from..).peekable(),
            prefix,
        }
    }

    /// The row with the greatest key starting with `prefix`.
    pub(crate) fn last(&self, prefix: Vec<u8>) -> Result<Option<Row>, StorageError> {
        // Every key with the prefix sorts before the prefix with its last
        // byte (a row tag, never 0xff) raised by one.
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = last.saturating_add(1);
        }
        let over = self
            .overlay
            .range(prefix.clone()..end.clone())
            .rev()
            .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())));
        let base = match &self.base {
            Some(tree) => {
                // Skip rows the overlay deletes.
                let mut found = None;
                for row in tree.range(prefix..end).rev() {
                    let (k, v) = row?;
                    if let Some(None) = self.overlay.get(k.as_ref()) {
                        continue;
                    }
                    found = Some((k.to_vec(), v.to_vec()));
                    break;
                }
                found
            }
            None => None,
        };
        Ok(match (over, base) {
            (Some(o), Some(b)) => Some(if o.0 >= b.0 { o } else { b }),
            (o, b) => o.or(b),
        })
    }

    /// Records what the overlay holds for `key` before a write to it, when
    /// writes are being noted.
    fn note(&mut self, key: &[u8]) {
        if let Some(undo) = &mut self.undo {
            undo.push((key.to_vec(), self.overlay.get(key).cloned()));
        }
    }

    /// From here on, notes every write so that [`Rows::rollback`] can take
    /// them back (forgetting what an earlier mark noted).
    pub(crate) fn mark(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Takes back every write since the last [`Rows::mark`], and stops
    /// noting them.
    pub(crate) fn rollback(&mut self) {
        for (key, before) in self.undo.take().into_iter().flatten().rev() {
            match before {
                Some(v) => self.overlay.insert(key, v),
                None => self.overlay.remove(&key),
            };
        }
    }

    /// The writes since the last commit, to apply as one batch; `None` when
    /// there are none. The overlay is empty afterwards, so only call this to
    /// commit.
    pub(crate) fn take_batch(&mut self) -> Option<LedgerRows> {
        self.undo = None;
        if self.base.is_none() || self.overlay.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.overlay).into_iter().collect())
    }

    /// Forgets the writes since the last commit.
    pub(crate) fn discard(&mut self) {
        self.undo = None;
        if self.base.is_some() {
            self.overlay.clear();
        }
    }
}

/// The stored rows with the overlay on top, in key order.
struct Merge<'a> {
    base: Peekable<Box<dyn Iterator<Item = Result<Row, StorageError>> + 'a>>,
    overlay: Peekable<btree_map::Range<'a, Vec<u8>, Option<Vec<u8>>>>,
    prefix: Vec<u8>,
}

impl Iterator for Merge<'_> {
    type Item = Result<Row, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let over = self
                .overlay
                .peek()
                .filter(|(k, _)| k.starts_with(&self.prefix))
                .map(|(k, _)| (*k).clone());
            let base = match self.base.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => return self.base.next(),
                None => None,
            };
            let take_overlay = match (&over, &base) {
                (None, None) => return None,
                (Some(o), Some(b)) => o <= b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if !take_overlay {
                return self.base.next();
            }
            let (k, v) = self.overlay.next()?;
            if base.as_ref() == Some(k) {
                self.base.next();
            }
            if let Some(v) = v {
                return Some(Ok((k.clone(), v.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes rows as the store does, in one batch.
    fn apply(tree: &sled::Tree, rows: LedgerRows) -> sled::Result<()> {
        tree.apply_batch(crate::storage::batch_of([rows]))
    }

    #[test]
    fn the_overlay_shadows_and_deletes_stored_rows_in_key_order() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled");
        let tree = db.open_tree("t").expect("tree");
        let coop = DocId([7; 32]);
        let mut rows = Rows::stored(coop, tree.clone());
        for k in [1u8, 3, 5] {
            rows.put(rows.key(b'x', &[&[k]]), vec![k]);
        }
        rows.put(rows.key(b'y', &[&[0]]), vec![0]);
        apply(&tree, rows.take_batch().expect("writes")).expect("commit");
        rows.put(rows.key(b'x', &[&[2]]), vec![20]);
        rows.put(rows.key(b'x', &[&[3]]), vec![30]);
        rows.delete(rows.key(b'x', &[&[5]])).expect("delete");
        let scan = |rows: &Rows, from: u8| -> Vec<(u8, u8)> {
            rows.scan(rows.key(b'x', &[]), rows.key(b'x', &[&[from]]))
                .map(|r| r.expect("row"))
                .map(|(k, v)| (k[33], v[0]))
                .collect()
        };
        assert_eq!(scan(&rows, 0), vec![(1, 1), (2, 20), (3, 30)]);
        assert_eq!(scan(&rows, 2), vec![(2, 20), (3, 30)]);
        rows.discard();
        assert_eq!(scan(&rows, 0), vec![(1, 1), (3, 3), (5, 5)]);
        assert_eq!(
            rows.get(&rows.key(b'y', &[&[0]])).expect("get"),
            Some(vec![0])
        );
    }

    #[test]
    fn a_rollback_takes_back_exactly_the_writes_since_the_mark() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled");
        let tree = db.open_tree("t").expect("tree");
        let mut rows = Rows::stored(DocId([7; 32]), tree.clone());
        let key = |rows: &Rows, k: u8| rows.key(b'x', &[&[k]]);
        rows.put(key(&rows, 1), vec![1]);
        apply(&tree, rows.take_batch().expect("writes")).expect("commit");
        rows.put(key(&rows, 2), vec![2]);
        rows.mark();
        // Overwrite an overlay row, delete a stored one, add a new one, and
        // write the new one twice.
        rows.put(key(&rows, 2), vec![22]);
        rows.delete(key(&rows, 1)).expect("delete");
        rows.put(key(&rows, 3), vec![3]);
        rows.put(key(&rows, 3), vec![33]);
        assert_eq!(rows.get(&key(&rows, 1)).expect("get"), None);
        rows.rollback();
        assert_eq!(rows.get(&key(&rows, 1)).expect("get"), Some(vec![1]));
        assert_eq!(rows.get(&key(&rows, 2)).expect("get"), Some(vec![2]));
        assert_eq!(rows.get(&key(&rows, 3)).expect("get"), None);
        // What was written before the mark is still committed whole.
        apply(&tree, rows.take_batch().expect("writes")).expect("commit");
        assert_eq!(
            tree.get(key(&rows, 2)).expect("get").as_deref(),
            Some(&[2u8][..])
        );
        assert!(!tree.contains_key(key(&rows, 3)).expect("get"));
    }
}
