//! The decisions ledger entries execute: which closes of a domain document
//! count as accepted budgets, freezes and unfreezes, and the one entry body
//! that executes each.

use std::collections::HashMap;

use icn_schemas::domain::Payload;
use icn_schemas::ledger::{Account, Body, Posting, sort_postings};
use icn_schemas::tally::{DecisionReceipt, Outcome};
use icn_schemas::{DocId, DocKind, Reader};

use super::fold::{Decision, Decisions};

/// The body of the entry that executes a decision with `payload`: a budget
/// pays its recipient from the treasury, a freeze or unfreeze is that
/// entry. `None` for payloads the ledger does not execute, and for a budget
/// whose amount cannot be negated. Both the command that records an
/// execution and the fold that judges one use this, so they cannot differ.
pub(crate) fn execution_body(payload: &Payload) -> Option<Body> {
    Some(match payload {
        Payload::Budget {
            amount,
            recipient,
            unit,
            ..
        } => {
            let mut postings = vec![
                Posting {
                    account: Account::Member(*recipient),
                    unit: unit.clone(),
                    amount: *amount,
                },
                Posting {
                    account: Account::Treasury,
                    unit: unit.clone(),
                    amount: amount.checked_neg()?,
                },
            ];
            sort_postings(&mut postings);
            Body::Transfer {
                postings,
                from_allowance: false,
            }
        }
        Payload::Freeze { did } => Body::Freeze {
            account: *did,
            frozen: true,
        },
        Payload::Unfreeze { did } => Body::Freeze {
            account: *did,
            frozen: false,
        },
        _ => return None,
    })
}

/// The accepted decisions of a domain document that ledger entries may
/// execute, by receipt hash: each proposal's counted close, when accepted,
/// with a budget, freeze or unfreeze payload.
pub(crate) fn counted_decisions(domain_id: &DocId, r: Reader<'_>) -> HashMap<[u8; 32], Decision> {
    if DocKind::of(r) != Some(DocKind::Domain) {
        return HashMap::new();
    }
    let Ok(d) = icn_schemas::domain::Domain::read(r) else {
        return HashMap::new();
    };
    d.proposals
        .iter()
        .filter_map(|(id, p)| {
            let close = p.close.as_ref()?;
            let payload = p.payload.clone()?;
            let executable = matches!(
                payload,
                Payload::Budget { .. } | Payload::Freeze { .. } | Payload::Unfreeze { .. }
            );
            (close.outcome == Outcome::Accepted && executable).then(|| {
                let receipt = DecisionReceipt::new(*domain_id, id, close).hash();
                let decision = Decision {
                    domain: *domain_id,
                    proposal: id.clone(),
                    payload,
                };
                (receipt, decision)
            })
        })
        .collect()
}

/// Accepted decisions by receipt hash.
type DecisionsByReceipt = HashMap<[u8; 32], Decision>;

/// Reads a domain document's accepted decisions.
type ReadDecisions<'a> = Box<dyn Fn(&DocId) -> Option<DecisionsByReceipt> + 'a>;

/// Decisions read from domain documents, each domain once per use.
pub(crate) struct DocDecisions<'a> {
    /// The co-op whose ledger is being folded: its document is locked then,
    /// and is never a domain.
    coop: DocId,
    read: ReadDecisions<'a>,
    cache: std::cell::RefCell<HashMap<DocId, HashMap<[u8; 32], Decision>>>,
}

impl<'a> DocDecisions<'a> {
    pub(crate) fn new(
        coop: DocId,
        read: impl Fn(&DocId) -> Option<HashMap<[u8; 32], Decision>> + 'a,
    ) -> Self {
        DocDecisions {
            coop,
            read: Box::new(read),
            cache: Default::default(),
        }
    }
}

impl Decisions for DocDecisions<'_> {
    fn decision(&self, domain: &DocId, receipt: &[u8; 32]) -> Option<Decision> {
        if *domain == self.coop {
            return None;
        }
        let mut cache = self.cache.borrow_mut();
        if !cache.contains_key(domain) {
            let found = (self.read)(domain).unwrap_or_default();
            cache.insert(*domain, found);
        }
        cache.get(domain)?.get(receipt).cloned()
    }
}
