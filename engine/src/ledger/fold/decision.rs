//! Entries that execute decisions: whether the decision an entry cites
//! counts where the entry stands, whether the entry does what it decided,
//! and whether an earlier entry executed it already.

use icn_schemas::DocId;
use icn_schemas::ledger::SignedEntry;

use super::{Conflict, Fold, Outside};
use crate::ledger::decisions::execution_body;
use crate::storage::StorageError;
use crate::storage::layout::ledger as tag;

impl Fold {
    /// Judges an entry's decision, if it cites one: it must be an accepted
    /// decision of the treasury domain, the entry must do exactly what it
    /// decided, and no entry earlier in the order executed it. Returns the
    /// `X` row to write when the entry counts.
    pub(super) fn decision_check(
        &self,
        signed: &SignedEntry,
        treasury: Option<[u8; 32]>,
        decisions: &dyn Outside,
    ) -> Result<Result<Option<Vec<u8>>, Conflict>, StorageError> {
        let entry = &signed.entry;
        let Some(receipt) = &entry.decision else {
            return Ok(Ok(None));
        };
        let hex = hex::encode(receipt);
        let decision = treasury.and_then(|t| decisions.decision(&DocId(t), receipt));
        let Some(decision) = decision else {
            return Ok(Err(Conflict::DecisionNotCounted { receipt: hex }));
        };
        if execution_body(&decision.payload).as_ref() != Some(&entry.body) {
            return Ok(Err(Conflict::DecisionMismatch { receipt: hex }));
        }
        let key = self.rows.key(
            tag::EXECUTED,
            &[&decision.domain.0, decision.proposal.as_bytes()],
        );
        if let Some(by) = self.rows.get(&key)? {
            return Ok(Err(Conflict::AlreadyExecuted {
                receipt: hex,
                by: hex::encode(by),
            }));
        }
        Ok(Ok(Some(key)))
    }
}
