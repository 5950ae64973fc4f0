//! Governance on top of domain documents: tallies and closes.
//!
//! A close records the heads it counted, its tally and its outcome; every
//! peer recounts the votes at those heads and refuses a close that differs
//! (`authority::check_close`). The formulas are in [`icn_schemas::tally`]
//! and `docs/governance.md`.

use icn_schemas::domain::{self, ProposalState};
use icn_schemas::tally::{self, Close, DecisionReceipt, Outcome, Tally};
use icn_schemas::{Did, DocId, DocKind, SchemaError, coop, settings};

use std::collections::BTreeMap;

use crate::Engine;
use crate::authority::Modules;
use crate::engine::WriteError;
use crate::identity::Signer;
use crate::storage::StorageError;

/// How long after a close (by the closer's clock) other nodes wait before
/// carrying it out themselves ([`Engine::execute_pending`]).
pub const EXECUTION_GRACE_SECONDS: i64 = 30;

/// The member a signer writes for: its own DID key, or the member who
/// signed its delegation.
pub(crate) fn member_of(signer: &Signer) -> Result<Did, SchemaError> {
    match signer {
        Signer::Device(key) => Ok(key.did()),
        Signer::Rotated { member, .. } => Ok(*member),
        Signer::Delegated { delegation, .. } => crate::identity::verify_delegation(delegation)
            .map(|d| d.member)
            .map_err(|e| SchemaError::InvalidValue {
                field: "delegation",
                reason: e.to_string(),
            }),
    }
}

/// The member's key a signer writes with: its own key, or the key that
/// signed its delegation.
pub(crate) fn signing_key(signer: &Signer) -> Result<Did, SchemaError> {
    match signer {
        Signer::Device(key) | Signer::Rotated { key, .. } => Ok(key.did()),
        Signer::Delegated { delegation, .. } => crate::identity::verify_delegation(delegation)
            .map(|d| d.signing_key())
            .map_err(|e| SchemaError::InvalidValue {
                field: "delegation",
                reason: e.to_string(),
            }),
    }
}

impl Engine {
    /// The tally of proposal `id` as the domain stands now, and the outcome
    /// a close now would record (`None` for a WASM tally module).
    pub fn tally(&self, domain: &DocId, id: &str) -> Result<(Tally, Option<Outcome>), SchemaError> {
        self.read(domain, |r| {
            let d = domain::Domain::read(r)?;
            let p = d
                .proposals
                .get(id)
                .ok_or_else(|| SchemaError::Missing(format!("proposal {id}")))?;
            let t = tally::count(d.members.values(), &p.votes);
            Ok((t, self.decide(&d.rules, &d.members, &p.votes, &t).ok()))
        })
        .ok_or_else(|| SchemaError::Missing(format!("domain {domain}")))?
    }

    /// Stores a WASM tally module, durably; returns its hash, which a
    /// domain's rules name (`rules/method/module`, hex). At most
    /// [`crate::policy::MAX_MODULE_BYTES`].
    pub fn put_module(&self, bytes: &[u8]) -> Result<[u8; 32], StorageError> {
        if bytes.len() > crate::policy::MAX_MODULE_BYTES {
            return Err(StorageError::Corrupt {
                tree: crate::storage::layout::BLOBS,
                reason: format!(
                    "a tally module has at most {} bytes, this one {}",
                    crate::policy::MAX_MODULE_BYTES,
                    bytes.len()
                ),
            });
        }
        self.store().put_blob(bytes)
    }

    /// Checks and stores a tally module uploaded by a member: `Err` with
    /// why, when it is no valid WebAssembly module for the tally runner.
    pub fn upload_module(&self, bytes: &[u8]) -> Result<Result<[u8; 32], String>, StorageError> {
        if let Err(why) = self.policies().check(bytes) {
            return Ok(Err(why));
        }
        self.put_module(bytes).map(Ok)
    }

    /// Creates proposal `new` in `domain`, a draft. Refused if the domain
    /// holds a proposal with its id already: checked in the same write, so
    /// two creators of one id cannot both succeed here.
    pub fn create_proposal(
        &self,
        domain: &DocId,
        signer: &Signer,
        new: &domain::NewProposal,
    ) -> Result<(), WriteError> {
        self.write_with(domain, signer, |r, _, tx| {
            if domain::Proposal::read(r, &new.id).is_some() {
                return Err(SchemaError::Exists(format!("proposal {:?}", new.id)));
            }
            domain::create_proposal(tx, new)
        })
    }

    /// Cancels proposal `id` of `domain`: refused unless it is a draft or
    /// open; that only its author cancels is the permission rules' to judge.
    pub fn cancel_proposal(
        &self,
        domain: &DocId,
        signer: &Signer,
        id: &str,
    ) -> Result<(), WriteError> {
        self.write_with(domain, signer, |r, _, tx| {
            let p = domain::Proposal::read(r, id)
                .ok_or_else(|| SchemaError::Missing(format!("proposal {id}")))?;
            if !matches!(
                p.state,
                domain::ProposalState::Draft | domain::ProposalState::Open
            ) {
                return Err(SchemaError::InvalidValue {
                    field: "state",
                    reason: format!(
                        "proposal {id} is {}: only a draft or an open proposal is cancelled",
                        p.state.as_str()
                    ),
                });
            }
            domain::set_proposal_state(tx, id, domain::ProposalState::Cancelled)
        })
    }

    /// Opens draft proposal `id` of `domain` at `now` (unix seconds) for
    /// `period` seconds (the domain's voting period when `None`). Refused
    /// unless the proposal exists and is a draft, and the period is
    /// positive; who may open it is the permission rules' to judge.
    pub fn open_proposal(
        &self,
        domain: &DocId,
        signer: &Signer,
        id: &str,
        now: i64,
        period: Option<i64>,
    ) -> Result<(), WriteError> {
        self.write_with(domain, signer, |r, _, tx| {
            let p = domain::Proposal::read(r, id)
                .ok_or_else(|| SchemaError::Missing(format!("proposal {id}")))?;
            if p.state != domain::ProposalState::Draft {
                return Err(SchemaError::InvalidValue {
                    field: "state",
                    reason: format!("proposal {id} is {}, only a draft opens", p.state.as_str()),
                });
            }
            let period = period.unwrap_or_else(|| domain::read_rules(r).voting_period_seconds);
            domain::check_voting_period(period)?;
            domain::open_proposal(tx, id, now, now.saturating_add(period))
        })
    }

    /// Records `voter`'s vote on proposal `id` of `domain` at `at` (unix
    /// seconds), replacing an earlier one. Refused unless the proposal
    /// exists and is open.
    #[allow(clippy::too_many_arguments)]
    pub fn cast_vote(
        &self,
        domain: &DocId,
        signer: &Signer,
        id: &str,
        voter: &Did,
        choice: domain::Choice,
        comment: Option<&str>,
        at: i64,
    ) -> Result<(), WriteError> {
        self.write_with(domain, signer, |r, _, tx| {
            let p = domain::Proposal::read(r, id)
                .ok_or_else(|| SchemaError::Missing(format!("proposal {id}")))?;
            if p.state != domain::ProposalState::Open {
                return Err(SchemaError::InvalidValue {
                    field: "state",
                    reason: format!(
                        "proposal {id} is {}; votes are cast while it is open",
                        p.state.as_str()
                    ),
                });
            }
            let key = signing_key(signer)?;
            domain::cast_vote_by(tx, id, voter, &key, choice, comment, at)
        })
    }

    /// Closes open proposal `id`: counts the votes as the domain stands and
    /// records the close, at `now` (unix seconds). The proposer and admins
    /// close at any time, any member once voting time is over. Returns the
    /// close and its decision receipt.
    pub fn close_proposal(
        &self,
        domain: &DocId,
        signer: &Signer,
        id: &str,
        now: i64,
    ) -> Result<(Close, DecisionReceipt), WriteError> {
        let closed_by = member_of(signer)?;
        let close = self.write_with(domain, signer, |r, deps, tx| {
            let d = domain::Domain::read(r)?;
            let p = d
                .proposals
                .get(id)
                .ok_or_else(|| SchemaError::Missing(format!("proposal {id}")))?;
            if p.state != ProposalState::Open {
                return Err(SchemaError::InvalidValue {
                    field: "proposal",
                    reason: format!("{id} is {}, not open", p.state.as_str()),
                });
            }
            let t = tally::count(d.members.values(), &p.votes);
            let outcome = self
                .decide(&d.rules, &d.members, &p.votes, &t)
                .map_err(|reason| SchemaError::InvalidValue {
                    field: "rules/method",
                    reason: reason.into(),
                })?;
            let close = Close {
                outcome,
                tally: t,
                counted_heads: deps.iter().map(|h| h.0).collect(),
                closed_at: now,
                closed_by,
            };
            domain::close_proposal(tx, id, &close, Some(&signing_key(signer)?))?;
            Ok(close)
        })?;
        let receipt = DecisionReceipt::new(*domain, id, &close);
        if close.outcome == Outcome::Accepted {
            self.execute_in_ledgers(domain, signer, id);
        }
        Ok((close, receipt))
    }

    /// Closes every open proposal whose voting time is over at `now` (unix
    /// seconds), in every domain held, with this node's executor key (any
    /// member may record such a close). Returns the proposals closed, by
    /// domain; those the executor may not close (not a member there) are
    /// left for another node.
    pub fn close_due(&self, now: i64) -> Vec<(DocId, String)> {
        let Some(signer) = self.executor() else {
            return Vec::new();
        };
        let mut closed = Vec::new();
        for doc in self.doc_ids() {
            let due: Vec<String> = self
                .read(&doc, |r| {
                    if DocKind::of(r) != Some(DocKind::Domain) {
                        return Vec::new();
                    }
                    domain::Domain::read(r)
                        .map(|d| {
                            d.proposals
                                .into_iter()
                                .filter(|(_, p)| {
                                    p.state == ProposalState::Open
                                        && p.closes_at.is_some_and(|end| end <= now)
                                })
                                .map(|(id, _)| id)
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            for id in due {
                match self.close_proposal(&doc, &signer, &id, now) {
                    Ok(_) => closed.push((doc, id)),
                    Err(e) => {
                        tracing::info!(domain = %doc, proposal = %id, error = %e, "due close not recorded here")
                    }
                }
            }
        }
        closed
    }

    /// Executes accepted decision `id` of `domain` in the ledger of every
    /// co-op held here whose treasury domain it is, signed by `signer`. The
    /// fold counts one execution per decision, whoever records it, so a
    /// node that sees a close may always try; a failure (the signer is not
    /// a member of that co-op, the payload is text only) is logged.
    fn execute_in_ledgers(&self, domain: &DocId, signer: &Signer, id: &str) {
        for coop in self.doc_ids() {
            let governed = self
                .read(&coop, |r| {
                    DocKind::of(r) == Some(DocKind::Coop)
                        && coop::treasury_domain(r) == Some(*domain)
                })
                .unwrap_or(false);
            if !governed {
                continue;
            }
            let executed = match self.close_payload(domain, id) {
                Some(domain::Payload::Membership { .. } | domain::Payload::ConfigChange { .. }) => {
                    self.apply_decision(&coop, signer, domain, id)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                _ => self
                    .execute_decision(&coop, signer, domain, id)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = executed {
                tracing::info!(%coop, %domain, proposal = id, error = %e, "decision not executed here");
            }
        }
    }

    /// Carries out, with this node's executor key, every accepted decision
    /// of a co-op's treasury domain held here that is not in effect yet and
    /// was closed at least [`EXECUTION_GRACE_SECONDS`] before `now` (unix
    /// seconds): a close a peer recorded, whose node did not carry it out
    /// (it may not write the co-op document, or holds only the domain), or
    /// one this node missed while stopped. The grace lets the closer's own
    /// execution arrive first, so that nodes do not all write one.
    /// Membership and config changes are applied when the executor is an
    /// active admin of the co-op; ledger decisions are recorded when no
    /// entry cites them yet. Returns how many it carried out.
    pub fn execute_pending(&self, now: i64) -> usize {
        let Some(signer) = self.executor() else {
            return 0;
        };
        let Ok(executor) = member_of(&signer) else {
            return 0;
        };
        let mut done = 0;
        for coop in self.doc_ids() {
            let (member, admin) = self
                .read(&coop, |r| {
                    let standing = coop::Standing::read(r, &executor).filter(|s| s.is_active());
                    (
                        DocKind::of(r) == Some(DocKind::Coop) && standing.is_some(),
                        standing.is_some_and(|s| s.is_admin()),
                    )
                })
                .unwrap_or((false, false));
            if !member {
                continue;
            }
            let Ok(registry) = self.registry(&coop) else {
                continue;
            };
            for d in registry {
                if d.advisory
                    || d.receipt.outcome != Outcome::Accepted
                    || d.receipt.closed_at.saturating_add(EXECUTION_GRACE_SECONDS) > now
                {
                    continue;
                }
                let (domain, id) = (d.receipt.domain, d.receipt.proposal.as_str());
                let carried = match &d.payload {
                    Some(domain::Payload::Membership { .. } | domain::Payload::ConfigChange { .. }) => {
                        admin
                            && !self.applied_to(&coop, &d.receipt.hash())
                            && self
                                .apply_decision(&coop, &signer, &domain, id)
                                .inspect_err(|e| tracing::info!(%coop, %domain, proposal = id, error = %e, "decision not applied here"))
                                .unwrap_or(false)
                    }
                    Some(
                        domain::Payload::Budget { .. }
                        | domain::Payload::Freeze { .. }
                        | domain::Payload::Unfreeze { .. },
                    ) => {
                        self.entries_by_decision(&coop, &d.receipt.hash())
                            .is_ok_and(|e| e.is_empty())
                            && self
                                .execute_decision(&coop, &signer, &domain, id)
                                .inspect_err(|e| tracing::info!(%coop, %domain, proposal = id, error = %e, "decision not executed here"))
                                .is_ok()
                    }
                    _ => false,
                };
                done += usize::from(carried);
            }
        }
        done
    }

    /// The decision receipt of proposal `id`, once it is closed by a tally.
    pub fn receipt(&self, domain: &DocId, id: &str) -> Option<DecisionReceipt> {
        self.read(domain, |r| domain::Proposal::close(r, id))
            .flatten()
            .map(|close| DecisionReceipt::new(*domain, id, &close))
    }
}

impl Engine {
    /// Whether the co-op document records decision `hash` as applied.
    fn applied_to(&self, coop: &DocId, hash: &[u8; 32]) -> bool {
        self.read(coop, |r| settings::decision_applied(r, hash))
            .unwrap_or(false)
    }

    fn close_payload(&self, domain: &DocId, id: &str) -> Option<domain::Payload> {
        self.read(domain, |r| {
            domain::Proposal::read(r, id).and_then(|p| p.payload)
        })
        .flatten()
    }

    /// Applies accepted membership or config-change decision `id` of
    /// `domain` to co-op `coop`, as `signer`, who must be an admin of the
    /// co-op: these are changes to the co-op document, which only admins
    /// write, so an admin's node carries them out. A membership adds the
    /// member with its role, changes its role, or removes it; a config
    /// change sets one [`settings::Setting`]. The change also records the
    /// decision, and a decision already recorded is not applied again (by
    /// this node or any other), so it takes effect once on every replica.
    /// Returns whether this call applied it.
    pub fn apply_decision(
        &self,
        coop: &DocId,
        signer: &Signer,
        domain: &DocId,
        id: &str,
    ) -> Result<bool, WriteError> {
        let invalid = |reason: String| SchemaError::InvalidValue {
            field: "decision",
            reason,
        };
        let receipt = self
            .receipt(domain, id)
            .filter(|r| r.outcome == Outcome::Accepted)
            .ok_or_else(|| invalid(format!("proposal {id} is not accepted")))?;
        let governed = self
            .read(coop, |r| coop::treasury_domain(r) == Some(*domain))
            .unwrap_or(false);
        if !governed {
            return Err(invalid(format!("{domain} does not govern co-op {coop}")).into());
        }
        let payload = self
            .close_payload(domain, id)
            .ok_or_else(|| invalid(format!("proposal {id} has no payload")))?;
        let hash = receipt.hash();
        self.write_with(coop, signer, |r, _, tx| {
            if settings::decision_applied(r, &hash) {
                return Ok(false);
            }
            match &payload {
                domain::Payload::Membership { action, did, role } => {
                    let role = match role.as_deref() {
                        None => None,
                        Some(name) => Some(
                            coop::Role::parse(name)
                                .ok_or_else(|| invalid(format!("unknown role {name}")))?,
                        ),
                    };
                    match action.as_str() {
                        "add" => coop::add_member(
                            tx,
                            did,
                            role.unwrap_or(coop::Role::Member),
                            receipt.closed_at,
                        )?,
                        "role" => {
                            let role = role.ok_or_else(|| {
                                invalid("a role change names the new role".into())
                            })?;
                            if !coop::Standing::read(r, did).is_some_and(|s| s.is_active()) {
                                return Err(invalid(format!("{did} is not an active member")));
                            }
                            coop::set_role(tx, did, role)?
                        }
                        "remove" => coop::set_status(tx, did, coop::MemberStatus::Removed)?,
                        other => {
                            return Err(invalid(format!(
                                "membership action {other} is not add, role or remove"
                            )));
                        }
                    }
                }
                domain::Payload::ConfigChange { key, value } => {
                    settings::Setting::parse(key, value)?.apply(r, tx)?
                }
                _ => {
                    return Err(invalid(format!(
                        "proposal {id} executes in the ledger, not the co-op document"
                    )));
                }
            }
            settings::record_decision(tx, &hash, domain, id, receipt.closed_at)?;
            Ok(true)
        })
    }
}

/// A decision in a co-op's registry: a closed proposal of one of its
/// domains, with its receipt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistryEntry {
    /// The receipt's hash, hex.
    pub hash: String,
    /// The receipt.
    pub receipt: DecisionReceipt,
    /// What the proposal decided.
    pub payload: Option<domain::Payload>,
    /// Whether the domain is the co-op's governing (treasury) domain, whose
    /// accepted decisions execute; another domain's decisions are advice.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
}

/// Where a decision stands in the ledger: receipt → execution → entries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trace {
    /// The decision.
    pub decision: RegistryEntry,
    /// Whether an entry executing it counts.
    pub executed: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
    /// Every entry citing the receipt, in fold order, with its status.
    pub entries: Vec<crate::ledger::HistoryItem>,
}

impl Engine {
    /// The decisions of `coop`'s domains (every closed proposal of its
    /// treasury domain and of each domain attached to it), newest close
    /// first.
    pub fn registry(&self, coop: &DocId) -> Result<Vec<RegistryEntry>, crate::ledger::LedgerError> {
        let unknown = || crate::ledger::LedgerError::UnknownCoop(*coop);
        let treasury = self
            .read(coop, |r| {
                (DocKind::of(r) == Some(DocKind::Coop)).then(|| coop::treasury_domain(r))
            })
            .flatten()
            .ok_or_else(unknown)?;
        let mut domains: Vec<DocId> = self
            .doc_ids()
            .into_iter()
            .filter(|d| {
                Some(*d) != treasury
                    && self
                        .read(d, |r| {
                            DocKind::of(r) == Some(DocKind::Domain)
                                && domain::coop_of(r) == Some(*coop)
                        })
                        .unwrap_or(false)
            })
            .collect();
        domains.extend(treasury);
        let mut entries = Vec::new();
        for domain_id in domains {
            let advisory = Some(domain_id) != treasury;
            let closed = self.read(&domain_id, |r| {
                domain::Domain::read(r)
                    .map(|d| {
                        d.proposals
                            .into_iter()
                            .filter_map(|(id, p)| {
                                let close = p.close?;
                                let receipt = DecisionReceipt::new(domain_id, &id, &close);
                                Some(RegistryEntry {
                                    hash: hex::encode(receipt.hash()),
                                    receipt,
                                    payload: p.payload,
                                    advisory,
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            });
            entries.extend(closed.unwrap_or_default());
        }
        entries.sort_by(|a, b| {
            (b.receipt.closed_at, &b.receipt.proposal, &b.hash).cmp(&(
                a.receipt.closed_at,
                &a.receipt.proposal,
                &a.hash,
            ))
        });
        Ok(entries)
    }

    /// The trace of decision `hash` in `coop`: its receipt, whether it was
    /// executed, and every ledger entry citing it.
    pub fn trace(
        &self,
        coop: &DocId,
        hash: &[u8; 32],
    ) -> Result<Option<Trace>, crate::ledger::LedgerError> {
        let wanted = hex::encode(hash);
        let Some(decision) = self.registry(coop)?.into_iter().find(|d| d.hash == wanted) else {
            return Ok(None);
        };
        let entries = self.entries_by_decision(coop, hash)?;
        let in_document = matches!(
            decision.payload,
            Some(domain::Payload::Membership { .. } | domain::Payload::ConfigChange { .. })
        );
        let executed = if in_document {
            decision.receipt.outcome == Outcome::Accepted && self.applied_to(coop, hash)
        } else {
            entries
                .iter()
                .any(|e| e.status == crate::ledger::Status::Applied)
        };
        let executable = matches!(
            decision.payload,
            Some(
                domain::Payload::Budget { .. }
                    | domain::Payload::Freeze { .. }
                    | domain::Payload::Unfreeze { .. }
            )
        );
        let reason = if executed {
            None
        } else if decision.receipt.outcome != Outcome::Accepted {
            Some(format!(
                "the proposal was {}",
                decision.receipt.outcome.as_str()
            ))
        } else if decision.advisory {
            Some(
                "the domain is not the co-op's treasury domain: its decisions are advice"
                    .to_owned(),
            )
        } else if in_document {
            Some("not applied to the co-op document yet: an admin's node applies it".to_owned())
        } else if !executable {
            Some("nothing for the ledger to execute".to_owned())
        } else if let Some(e) = entries.first() {
            match &e.status {
                crate::ledger::Status::Conflicted { conflict } => Some(conflict.to_string()),
                crate::ledger::Status::Applied => None,
            }
        } else {
            Some("no entry executes it yet".to_owned())
        };
        Ok(Some(Trace {
            decision,
            executed,
            reason,
            entries,
        }))
    }
}

impl Modules for Engine {
    fn decide(
        &self,
        rules: &domain::Rules,
        members: &BTreeMap<Did, domain::DomainMember>,
        votes: &BTreeMap<Did, domain::Vote>,
        tally: &Tally,
    ) -> Result<Outcome, &'static str> {
        if let Some(outcome) = tally::decide(rules, tally) {
            return Ok(outcome);
        }
        let domain::Method::Wasm { module } = &rules.method else {
            return Err("the tally method has no outcome");
        };
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(module, &mut hash).is_err() {
            // A name that is no hash names no module: the same everywhere.
            return Ok(Outcome::PolicyError);
        }
        let bytes = self
            .store()
            .blob(&hash)
            .ok()
            .flatten()
            .ok_or(crate::authority::MODULE_NOT_HELD)?;
        let input = crate::policy::encode_input(rules, members, votes);
        Ok(self.policies().tally(&hash, &bytes, &input))
    }
}
