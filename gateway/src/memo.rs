//! Answers read from a co-op document, kept until the document moves.
//!
//! Every request reads the caller's standing in the co-op documents (is
//! the token's key revoked, is the member removed, may it read this
//! co-op). Automerge answers those slowly enough that, under load, they
//! cost a tenth of the node's CPU, and they change only when the document
//! does. A [`Memo`] keeps each answer beside the document's version
//! ([`Engine::version`]) as it was *before* it was read: versions only
//! grow, so an answer found again under the version a request reads is
//! never older than the document was when the request began, and the first
//! change to the document makes every kept answer miss. The version is read
//! without the document's lock: a request asking about every co-op on the
//! node waits for none of their writers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use icn_engine::Engine;
use icn_schemas::DocId;

/// At most this many answers are kept per document; past it they are all
/// forgotten.
const KEPT: usize = 4096;

type Kept<K, V> = HashMap<DocId, (u64, HashMap<K, V>)>;

/// Answers of type `V` to questions `K` about co-op documents.
pub(crate) struct Memo<K, V> {
    kept: Mutex<Kept<K, V>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            kept: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    /// The answer to `key` about `doc`: kept, or read by `read` (which reads
    /// `doc` and nothing else that can change) and kept.
    pub(crate) fn get(&self, engine: &Engine, doc: &DocId, key: K, read: impl FnOnce() -> V) -> V {
        let Some(version) = engine.version(doc) else {
            return read();
        };
        if let Some(v) = self.kept_at(doc, version, &key) {
            return v;
        }
        let v = read();
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (at, answers) = kept.entry(*doc).or_default();
        if *at != version || answers.len() >= KEPT {
            *at = version;
            answers.clear();
        }
        answers.insert(key, v.clone());
        v
    }

    /// The answer to `key` about `doc` if it is kept, without reading.
    pub(crate) fn peek(&self, engine: &Engine, doc: &DocId, key: &K) -> Option<V> {
        self.kept_at(doc, engine.version(doc)?, key)
    }

    fn kept_at(&self, doc: &DocId, version: u64, key: &K) -> Option<V> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (at, answers) = kept.get(doc)?;
        if *at != version {
            return None;
        }
        answers.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OneCoop;

    #[test]
    fn an_answer_is_kept_until_the_document_moves() {
        let coop = OneCoop::new();
        let (engine, id) = (&coop.node.engine, coop.id);
        let memo: Memo<u8, u32> = Memo::default();
        assert_eq!(memo.peek(engine, &id, &0), None);
        assert_eq!(memo.get(engine, &id, 0, || 1), 1);
        // Kept: the document has not moved.
        assert_eq!(memo.get(engine, &id, 0, || 2), 1);
        assert_eq!(memo.peek(engine, &id, &0), Some(1));
        assert_eq!(memo.peek(engine, &id, &1), None);
        coop.add_member(2);
        // Read again once it has.
        assert_eq!(memo.peek(engine, &id, &0), None);
        assert_eq!(memo.get(engine, &id, 0, || 3), 3);
        assert_eq!(memo.get(engine, &id, 0, || 4), 3);
    }
}
