//! Layout version 1 kept only a co-op's entries (`ledger_entries`), and
//! folded them at every start. Opening such a store folds them once into the
//! `ledger` tree, exactly as a peer's entries are folded: stored entries were
//! validated when they arrived, so only the credit limits and treasury they
//! are judged by are read again, at their cited heads.

use automerge::Automerge;
use icn_schemas::coop;
use icn_schemas::ledger::{Account, Body, SignedEntry};

use super::fold::{Beside, Decisions, Judged};
use super::pipeline::Ledger;
use super::rules::{heads_of, reader_at};
use crate::storage::layout::OrderRow;
use crate::storage::{StorageError, Store};

/// Folds what a version 1 store holds of `ledger`'s co-op into it, and
/// commits it. Nothing to do for a store of the current layout.
pub(crate) fn fold_v1_entries(
    ledger: &mut Ledger,
    store: &Store,
    doc: &Automerge,
    decisions: &dyn Decisions,
) -> Result<(), StorageError> {
    let coop = ledger.coop();
    for bytes in store.v1_entries(&coop)? {
        let (e, id) = SignedEntry::decode(&bytes).map_err(|err| StorageError::Corrupt {
            tree: crate::storage::layout::V1_LEDGER_ENTRIES,
            reason: err.to_string(),
        })?;
        let heads = heads_of(&e.entry);
        let r = reader_at(doc, &heads);
        // The author is the only member an entry debits, and a grant is
        // judged by the author's limit too.
        let limited = matches!(e.entry.body, Body::Grant { .. })
            || e.entry
                .postings()
                .iter()
                .any(|p| p.amount < 0 && p.account == Account::Member(e.entry.author));
        let judged = Judged {
            limits: if limited {
                vec![(
                    *e.entry.author.as_bytes(),
                    coop::credit_limit(r, &e.entry.author),
                )]
            } else {
                Vec::new()
            },
            treasury: e.entry.decision.and_then(|_| coop::treasury_domain(r)),
            // Version 1 knew no rotation.
            owner: OrderRow::signed_by_did_key(&e.entry),
        };
        ledger
            .fold_mut()
            .insert(id, &e, &bytes, judged, &Beside { doc, decisions })?;
    }
    ledger.commit()
}
