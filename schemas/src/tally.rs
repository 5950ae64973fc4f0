//! Tallies, closes and decision receipts.
//!
//! A proposal's outcome is a pure function of the domain's members and the
//! proposal's votes as they stood at the heads its close records: every peer
//! reads the document at those heads, counts again, and refuses a close whose
//! recorded tally or outcome differs. The formulas are in
//! `docs/governance.md`:
//!
//! - counted: the votes of members active at the counted heads, each with
//!   the member's weight there; `eligible` is the sum of those members'
//!   weights, voting or not;
//! - quorum: `(for + against + abstain + block) × 100 ≥ quorum_percent ×
//!   eligible`, and `eligible > 0`; otherwise `no_quorum`;
//! - simple majority: `for × 100 ≥ approval_percent × (for + against +
//!   block)` and `for > against + block` (a block counts against);
//! - supermajority(t): `for × 100 ≥ max(t, approval_percent) × (for +
//!   against + block)`, with `for > 0`;
//! - consent(max): accepted unless more than `max` members block;
//! - unanimous: `for > 0`, and no one against or blocking;
//! - a WASM tally module: whatever the module answers, or `policy_error`
//!   (run by the engine, `docs/governance.md`).

use std::collections::BTreeMap;

use crate::did::Did;
use crate::document::DocId;
use crate::governance::{Choice, DomainMember, Method, ProposalState, Rules, Vote};

/// Weights counted at a close.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Sum of the weights of the active members.
    pub eligible: i64,
    /// Weight voting for.
    #[serde(rename = "for")]
    pub for_: i64,
    /// Weight voting against.
    pub against: i64,
    /// Weight abstaining (counts for quorum only).
    pub abstain: i64,
    /// Weight blocking.
    pub block: i64,
    /// Members blocking (consent counts members, not weight).
    pub blockers: i64,
}

/// How a closed proposal ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Quorum met and approved.
    Accepted,
    /// Quorum met, not approved.
    Rejected,
    /// Not enough participation.
    NoQuorum,
    /// The domain's WASM tally module failed.
    PolicyError,
}

impl Outcome {
    /// The names a close may record.
    pub const NAMES: &'static [&'static str] =
        &["accepted", "rejected", "no_quorum", "policy_error"];

    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        self.state().as_str()
    }

    /// Parses an outcome name.
    pub fn parse(s: &str) -> Option<Outcome> {
        match ProposalState::parse(s)? {
            ProposalState::Accepted => Some(Outcome::Accepted),
            ProposalState::Rejected => Some(Outcome::Rejected),
            ProposalState::NoQuorum => Some(Outcome::NoQuorum),
            ProposalState::PolicyError => Some(Outcome::PolicyError),
            _ => None,
        }
    }

    /// The proposal state it leaves.
    pub fn state(self) -> ProposalState {
        match self {
            Outcome::Accepted => ProposalState::Accepted,
            Outcome::Rejected => ProposalState::Rejected,
            Outcome::NoQuorum => ProposalState::NoQuorum,
            Outcome::PolicyError => ProposalState::PolicyError,
        }
    }
}

/// Counts `votes` by the active `members`, with their weights.
pub fn count<'a>(
    members: impl IntoIterator<Item = &'a DomainMember>,
    votes: &BTreeMap<Did, Vote>,
) -> Tally {
    let mut t = Tally::default();
    for m in members.into_iter().filter(|m| m.active) {
        let weight = m.weight.max(0);
        t.eligible = t.eligible.saturating_add(weight);
        let Some(vote) = votes.get(&m.did) else {
            continue;
        };
        let side = match vote.choice {
            Choice::For => &mut t.for_,
            Choice::Against => &mut t.against,
            Choice::Abstain => &mut t.abstain,
            Choice::Block => {
                t.blockers += 1;
                &mut t.block
            }
        };
        *side = side.saturating_add(weight);
    }
    t
}

/// The outcome of a tally under `rules`; `None` for a WASM tally module,
/// which this function does not run.
pub fn decide(rules: &Rules, t: &Tally) -> Option<Outcome> {
    // A module decides everything, quorum included (it is given the rules).
    if let Method::Wasm { .. } = rules.method {
        return None;
    }
    let wide = i128::from;
    let participation = wide(t.for_) + wide(t.against) + wide(t.abstain) + wide(t.block);
    if t.eligible <= 0 || participation * 100 < wide(rules.quorum_percent) * wide(t.eligible) {
        return Some(Outcome::NoQuorum);
    }
    let (yes, no) = (wide(t.for_), wide(t.against) + wide(t.block));
    let approved = |percent: i64| yes > 0 && yes * 100 >= wide(percent) * (yes + no);
    let accepted = match &rules.method {
        Method::SimpleMajority => approved(rules.approval_percent) && yes > no,
        Method::Supermajority { threshold } => approved((*threshold).max(rules.approval_percent)),
        Method::Consent { max_blocks } => t.blockers <= *max_blocks,
        Method::Unanimous => yes > 0 && no == 0,
        Method::Wasm { .. } => return None,
    };
    Some(if accepted {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    })
}

/// What a close records under `proposals/<id>/close`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Close {
    /// How it ended.
    pub outcome: Outcome,
    /// The tally at `counted_heads`.
    pub tally: Tally,
    /// The document heads whose votes were counted: the heads the closing
    /// change was written on, sorted.
    pub counted_heads: Vec<[u8; 32]>,
    /// Unix seconds, by the closer's clock.
    pub closed_at: i64,
    /// The member who recorded it.
    pub closed_by: Did,
}

/// Heads as the close stores them: lowercase hex, comma-separated, sorted.
pub fn heads_text(heads: &[[u8; 32]]) -> String {
    let mut heads = heads.to_vec();
    heads.sort_unstable();
    heads.iter().map(hex::encode).collect::<Vec<_>>().join(",")
}

/// Parses [`heads_text`]; `None` unless it is exactly that form.
pub fn parse_heads(text: &str) -> Option<Vec<[u8; 32]>> {
    let heads = text
        .split(',')
        .map(|h| {
            let mut out = [0u8; 32];
            (h.len() == 64 && h == h.to_lowercase())
                .then(|| hex::decode_to_slice(h, &mut out).ok())
                .flatten()
                .map(|()| out)
        })
        .collect::<Option<Vec<_>>>()?;
    (heads_text(&heads) == text).then_some(heads)
}

/// A decision receipt: the content-addressed record of a closed proposal,
/// which ledger entries executing it cite.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecisionReceipt {
    /// The domain document.
    pub domain: DocId,
    /// The proposal id within it.
    pub proposal: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The tally.
    pub tally: Tally,
    /// The heads counted, lowercase hex.
    pub counted_heads: Vec<String>,
    /// Unix seconds.
    pub closed_at: i64,
}

/// Domain separator of receipt hashes.
pub const RECEIPT_CONTEXT: &[u8] = b"icn/receipt/v1";

impl DecisionReceipt {
    /// The receipt of `close` on `proposal` in `domain`.
    pub fn new(domain: DocId, proposal: &str, close: &Close) -> Self {
        DecisionReceipt {
            domain,
            proposal: proposal.to_owned(),
            outcome: close.outcome,
            tally: close.tally,
            counted_heads: close.counted_heads.iter().map(hex::encode).collect(),
            closed_at: close.closed_at,
        }
    }

    /// Its canonical bytes: one line of text per field, in a fixed order.
    pub fn canonical(&self) -> String {
        let t = &self.tally;
        format!(
            "icn-receipt/v1\ndomain: {}\nproposal: {}\noutcome: {}\neligible: {}\nfor: {}\nagainst: {}\nabstain: {}\nblock: {}\nblockers: {}\ncounted_heads: {}\nclosed_at: {}\n",
            self.domain,
            self.proposal,
            self.outcome.as_str(),
            t.eligible,
            t.for_,
            t.against,
            t.abstain,
            t.block,
            t.blockers,
            self.counted_heads.join(","),
            self.closed_at,
        )
    }

    /// Its hash: `blake3("icn/receipt/v1" ‖ canonical bytes)`.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(RECEIPT_CONTEXT);
        h.update(self.canonical().as_bytes());
        *h.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::DomainRole;

    fn member(seed: u8, weight: i64, active: bool) -> DomainMember {
        DomainMember {
            did: Did::from_bytes(&[seed; 32]).expect("32 bytes"),
            role: DomainRole::Member,
            weight,
            active,
        }
    }

    fn votes(choices: &[(u8, Choice)]) -> BTreeMap<Did, Vote> {
        choices
            .iter()
            .map(|(seed, choice)| {
                let did = Did::from_bytes(&[*seed; 32]).expect("32 bytes");
                let vote = Vote {
                    choice: *choice,
                    comment: None,
                    at: None,
                };
                (did, vote)
            })
            .collect()
    }

    fn rules(method: Method) -> Rules {
        Rules {
            method,
            ..Rules::default()
        }
    }

    #[test]
    fn the_documented_formulas() {
        use Choice::*;
        let members: Vec<DomainMember> = (1..=10).map(|s| member(s, 1, true)).collect();
        let majority = rules(Method::SimpleMajority); // quorum 50, approval 51
        let t = count(
            &members,
            &votes(&[(1, For), (2, For), (3, For), (4, Against)]),
        );
        assert_eq!((t.eligible, t.for_, t.against), (10, 3, 1));
        assert_eq!(decide(&majority, &t), Some(Outcome::NoQuorum), "4 of 10");
        let five = votes(&[(1, For), (2, For), (3, For), (4, Against), (5, Abstain)]);
        assert_eq!(
            decide(&majority, &count(&members, &five)),
            Some(Outcome::Accepted)
        );
        let tie = votes(&[(1, For), (2, For), (3, Against), (4, Against), (5, Abstain)]);
        assert_eq!(
            decide(&majority, &count(&members, &tie)),
            Some(Outcome::Rejected)
        );
        // A block counts against outside consent.
        let blocked = votes(&[(1, For), (2, For), (3, Against), (4, Block), (5, Abstain)]);
        assert_eq!(
            decide(&majority, &count(&members, &blocked)),
            Some(Outcome::Rejected)
        );
        let consent = rules(Method::Consent { max_blocks: 1 });
        assert_eq!(
            decide(&consent, &count(&members, &blocked)),
            Some(Outcome::Accepted)
        );
        let two_blocks = votes(&[(1, Block), (2, For), (3, Block), (4, For), (5, For)]);
        assert_eq!(
            decide(&consent, &count(&members, &two_blocks)),
            Some(Outcome::Rejected)
        );
        let sixty = votes(&[(1, For), (2, For), (3, For), (4, Against), (5, Against)]);
        let two_thirds = rules(Method::Supermajority { threshold: 67 });
        assert_eq!(
            decide(&two_thirds, &count(&members, &sixty)),
            Some(Outcome::Rejected)
        );
        assert_eq!(
            decide(&majority, &count(&members, &sixty)),
            Some(Outcome::Accepted)
        );
        let unanimous = rules(Method::Unanimous);
        let all_for = votes(&[(1, For), (2, For), (3, For), (4, For), (5, Abstain)]);
        assert_eq!(
            decide(&unanimous, &count(&members, &all_for)),
            Some(Outcome::Accepted)
        );
        assert_eq!(
            decide(&unanimous, &count(&members, &sixty)),
            Some(Outcome::Rejected)
        );
        let wasm = rules(Method::Wasm {
            module: "ab".into(),
        });
        assert_eq!(decide(&wasm, &count(&members, &sixty)), None);
    }

    #[test]
    fn every_named_profile_has_rules_and_they_differ() {
        use Choice::*;
        let members: Vec<DomainMember> = (1..=4).map(|s| member(s, 1, true)).collect();
        // Three for, one blocking: all four voted.
        let t = count(
            &members,
            &votes(&[(1, For), (2, For), (3, For), (4, Block)]),
        );
        let outcome = |name: &str| decide(&Rules::profile(name).expect("a profile"), &t);
        assert_eq!(outcome("cooperative_default"), Some(Outcome::Accepted));
        assert_eq!(outcome("working_group"), Some(Outcome::Accepted));
        assert_eq!(outcome("supermajority"), Some(Outcome::Accepted)); // 75 % ≥ 67 %
        assert_eq!(outcome("consensus"), Some(Outcome::Rejected)); // one block
        assert_eq!(outcome("unanimous"), Some(Outcome::Rejected));
        assert!(Rules::PROFILES.iter().all(|p| Rules::profile(p).is_some()));
        assert_eq!(Rules::profile("anarchy"), None);
    }

    #[test]
    fn weights_count_and_inactive_members_do_not() {
        use Choice::*;
        let members = vec![
            member(1, 5, true),
            member(2, 1, true),
            member(3, 100, false),
        ];
        let t = count(&members, &votes(&[(1, For), (2, Against), (3, Against)]));
        assert_eq!((t.eligible, t.for_, t.against), (6, 5, 1));
        assert_eq!(
            decide(&rules(Method::SimpleMajority), &t),
            Some(Outcome::Accepted)
        );
        // Nobody eligible: no quorum, never a division by zero.
        assert_eq!(
            decide(&Rules::default(), &Tally::default()),
            Some(Outcome::NoQuorum)
        );
    }

    #[test]
    fn heads_text_is_canonical_and_receipts_hash_their_content() {
        let heads = vec![[0xab; 32], [0x1c; 32]];
        let text = heads_text(&heads);
        assert_eq!(parse_heads(&text), Some(vec![[0x1c; 32], [0xab; 32]]));
        assert_eq!(parse_heads(&text.to_uppercase()), None);
        assert_eq!(parse_heads(&text.replace('a', "g")), None);
        assert_eq!(parse_heads(""), None);
        let unsorted = format!("{},{}", hex::encode([0xab; 32]), hex::encode([0x1c; 32]));
        assert_eq!(parse_heads(&unsorted), None);
        let close = Close {
            outcome: Outcome::Accepted,
            tally: Tally::default(),
            counted_heads: vec![[1; 32]],
            closed_at: 5,
            closed_by: Did::from_bytes(&[9; 32]).expect("32 bytes"),
        };
        let a = DecisionReceipt::new(DocId([4; 32]), "p1", &close);
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        b.closed_at = 6;
        assert_ne!(a.hash(), b.hash());
    }
}
