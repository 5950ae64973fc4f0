//! The mutual-credit ledger: signed, content-addressed entries validated
//! before they are stored, and balances folded deterministically.
//!
//! An entry is checked before it is stored or forwarded:
//!
//! 1. it decodes canonically and is for this co-op;
//! 2. its signature is by its signer key, and a delegation (when a node signs
//!    for the author) is the author's, names the signer, covers the entry's
//!    time, and grants `ledger:write`;
//! 3. its cited co-op heads and its parents are known; otherwise it waits in
//!    a bounded pending set and is checked again when they arrive;
//! 4. at the cited co-op heads, the signer is a live device of the author (or
//!    the author's DID key, for a delegation), and the author is an active
//!    member or admin;
//! 5. its postings sum to zero per unit, in units the policy defines, and it
//!    debits only the author's own account (treasury debits need a decision
//!    receipt, which arrives with governance).
//!
//! Credit limits are read at the cited heads too, so where an entry lands in
//! the fold, and whether it counts, is the same on every replica ([`fold`]).
//!
//! The subsystem, one file per concern: `api` (what commands take and
//! answer, and their errors), `rules` (the pure checks), `pipeline` (one
//! co-op's `Ledger` and the one path every entry takes
//! into it), `queries`, `decisions` (which closes entries execute, and how),
//! `migrate` (layout 1), `fold` and `rows` (the stored fold). It knows
//! nothing of the engine: it is given the store, the co-op document and the
//! decisions of domain documents, and `crate::ledgers` gives the engine its
//! ledger commands on top.

mod api;
pub(crate) mod decisions;
pub(crate) mod fold;
pub(crate) mod migrate;
pub(crate) mod pipeline;
pub(crate) mod queries;
mod rows;
mod rules;
#[cfg(test)]
mod tests;

pub use api::{
    Convert, EntryRefusal, HistoryItem, HistoryPage, Ingest, LedgerError, MAX_PENDING,
    MAX_PENDING_PER_SIGNER, Settle, TrialBalance, UnitPosition,
};
pub use fold::{Conflict, Status};
pub use queries::MAX_PAGE;
