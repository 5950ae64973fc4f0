//! Names to documents: the API addresses co-ops and domains by the `id`
//! their creators gave them (`food-coop`) and proposals by their own id,
//! while the engine knows documents by the hash of their genesis.
//!
//! The index is derived from the documents: built when the gateway starts,
//! and brought up to date, before each lookup, for the documents committed
//! since (the engine reports them). Names are not unique across a network:
//! a name two documents share answers 409 and asks for the document id,
//! which is always accepted too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use icn_engine::{Committed, Engine};
use icn_schemas::{DocId, DocKind};

use crate::error::AppError;

#[derive(Default)]
struct State {
    /// What each document was indexed under.
    docs: HashMap<DocId, Indexed>,
    names: HashMap<(DocKind, String), BTreeSet<DocId>>,
    proposals: HashMap<String, BTreeSet<DocId>>,
    dirty: HashSet<DocId>,
}

#[derive(Default, Clone)]
struct Indexed {
    kind: Option<DocKind>,
    name: String,
    proposals: Vec<String>,
}

/// The name index.
#[derive(Clone)]
pub(crate) struct Index {
    engine: Engine,
    state: Arc<Mutex<State>>,
}

impl Index {
    /// Indexes every document `engine` holds, and follows its commits.
    pub(crate) fn new(engine: Engine) -> Index {
        let state = Arc::new(Mutex::new(State {
            dirty: engine.doc_ids().into_iter().collect(),
            ..State::default()
        }));
        let dirty = Arc::downgrade(&state);
        engine.on_commit(move |c| {
            if let (Committed::Doc { doc, .. }, Some(state)) = (c, dirty.upgrade()) {
                state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .dirty
                    .insert(*doc);
            }
        });
        Index { engine, state }
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let dirty: Vec<DocId> = state.dirty.drain().collect();
        for id in dirty {
            let now = self
                .engine
                .read(&id, |r| {
                    let kind = DocKind::of(r);
                    let name = icn_schemas::document::slug(r);
                    let proposals = match kind {
                        Some(DocKind::Domain) => icn_schemas::domain::proposal_ids(r),
                        _ => Vec::new(),
                    };
                    Indexed {
                        kind,
                        name,
                        proposals,
                    }
                })
                .unwrap_or_default();
            let before = state.docs.insert(id, now.clone()).unwrap_or_default();
            if let Some(kind) = before.kind
                && let Some(set) = state.names.get_mut(&(kind, before.name))
            {
                set.remove(&id);
            }
            for p in &before.proposals {
                if let Some(set) = state.proposals.get_mut(p) {
                    set.remove(&id);
                }
            }
            if let Some(kind) = now.kind {
                state.names.entry((kind, now.name)).or_default().insert(id);
            }
            for p in now.proposals {
                state.proposals.entry(p).or_default().insert(id);
            }
        }
        state
    }

    /// The document of `kind` named `key`, or whose id is `key`.
    pub(crate) fn resolve(&self, kind: DocKind, key: &str) -> Result<DocId, AppError> {
        let what = match kind {
            DocKind::Coop => "co-op",
            DocKind::Domain => "governance domain",
        };
        let state = self.fresh();
        if let Some(set) = state.names.get(&(kind, key.to_owned())) {
            match only(set) {
                Ok(None) => {}
                Ok(Some(id)) => return Ok(id),
                Err(()) => {
                    let ids: Vec<String> = set.iter().map(|d| d.to_string()).collect();
                    return Err(AppError::conflict(format!(
                        "several {what}s are named {key:?}; use one's document id: {}",
                        ids.join(", ")
                    )));
                }
            }
        }
        if let Ok(id) = key.parse::<DocId>()
            && state.docs.get(&id).and_then(|d| d.kind) == Some(kind)
        {
            return Ok(id);
        }
        Err(AppError::not_found(format!(
            "no {what} {key:?} on this node"
        )))
    }

    /// Whether a document of `kind` is named `name`.
    pub(crate) fn name_taken(&self, kind: DocKind, name: &str) -> bool {
        self.fresh()
            .names
            .get(&(kind, name.to_owned()))
            .is_some_and(|s| !s.is_empty())
    }

    /// The domains holding a proposal with id `id`. Proposal ids are chosen
    /// by their authors, so two domains can hold the same one.
    pub(crate) fn proposal_domains(&self, id: &str) -> Vec<DocId> {
        self.fresh()
            .proposals
            .get(id)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The name of a document.
    pub(crate) fn name(&self, id: &DocId) -> Option<String> {
        self.fresh().docs.get(id).map(|d| d.name.clone())
    }

    /// Every document of `kind`, by id.
    pub(crate) fn all(&self, kind: DocKind) -> Vec<DocId> {
        Self::of_kind(&self.fresh(), kind)
    }

    /// [`Index::all`] when that reads no document and waits for nobody:
    /// `None` while a document changed since the index last read it, or
    /// while another caller holds the index (reading one). For the async
    /// threads, which must not wait for a document's lock.
    pub(crate) fn all_known(&self, kind: DocKind) -> Option<Vec<DocId>> {
        let state = self.state.try_lock().ok()?;
        state.dirty.is_empty().then(|| Self::of_kind(&state, kind))
    }

    fn of_kind(state: &State, kind: DocKind) -> Vec<DocId> {
        let mut ids: Vec<DocId> = state
            .docs
            .iter()
            .filter(|(_, d)| d.kind == Some(kind))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}

/// The one id in `set`: `Ok(None)` when empty, `Err` when several.
fn only(set: &BTreeSet<DocId>) -> Result<Option<DocId>, ()> {
    let mut ids = set.iter();
    match (ids.next(), ids.next()) {
        (None, _) => Ok(None),
        (Some(id), None) => Ok(Some(*id)),
        (Some(_), Some(_)) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::OneCoop;

    #[test]
    fn the_co_ops_are_known_without_reading_only_while_nothing_changed() {
        let coop = OneCoop::new();
        let id = coop.id;
        let index = Index::new(coop.node.engine.clone());
        // Every document is unread at first.
        assert_eq!(index.all_known(DocKind::Coop), None);
        assert_eq!(index.all(DocKind::Coop), vec![id]);
        assert_eq!(index.all_known(DocKind::Coop), Some(vec![id]));
        coop.add_member(2);
        // A change is read (by a caller that may wait) before it is known.
        assert_eq!(index.all_known(DocKind::Coop), None);
        assert_eq!(index.all(DocKind::Coop), vec![id]);
        assert_eq!(index.all_known(DocKind::Coop), Some(vec![id]));
        // A caller holding the index is not waited for.
        let held = index.state.lock().expect("state");
        assert_eq!(index.all_known(DocKind::Coop), None);
        drop(held);
    }
}
