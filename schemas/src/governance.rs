//! The plain values of governance, shared by the domain document
//! ([`crate::domain`], which reads and writes them) and the tally
//! ([`crate::tally`], which counts them): roles, proposal states, choices,
//! methods, rules, members and votes. Neither of those modules imports the
//! other's reading of the document to get them.

use crate::did::Did;

/// The longest voting period a domain or a proposal may set: one year.
pub const MAX_VOTING_PERIOD_SECONDS: i64 = 366 * 24 * 3600;

/// A member's role in a domain.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainRole {
    /// May change rules and members, and veto where the domain allows it.
    Admin,
    /// May propose and vote.
    Member,
}

impl DomainRole {
    pub(crate) const NAMES: &'static [&'static str] = &["admin", "member"];

    /// The role's name in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainRole::Admin => "admin",
            DomainRole::Member => "member",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(DomainRole::Admin),
            "member" => Some(DomainRole::Member),
            _ => None,
        }
    }
}

/// The lifecycle state of a proposal.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Written, not yet open for votes.
    Draft,
    /// Open for votes.
    Open,
    /// Closed, approved.
    Accepted,
    /// Closed, not approved.
    Rejected,
    /// Closed without enough participation.
    NoQuorum,
    /// Closed, but the domain's WASM tally module failed (trapped, ran out
    /// of fuel or memory, or answered nonsense), the same on every peer.
    PolicyError,
    /// Withdrawn by its author.
    Cancelled,
    /// Stopped by an admin.
    Vetoed,
}

impl ProposalState {
    pub(crate) const NAMES: &'static [&'static str] = &[
        "draft",
        "open",
        "accepted",
        "rejected",
        "no_quorum",
        "policy_error",
        "cancelled",
        "vetoed",
    ];

    /// The state's name in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Draft => "draft",
            ProposalState::Open => "open",
            ProposalState::Accepted => "accepted",
            ProposalState::Rejected => "rejected",
            ProposalState::NoQuorum => "no_quorum",
            ProposalState::PolicyError => "policy_error",
            ProposalState::Cancelled => "cancelled",
            ProposalState::Vetoed => "vetoed",
        }
    }

    /// Parses a state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => ProposalState::Draft,
            "open" => ProposalState::Open,
            "accepted" => ProposalState::Accepted,
            "rejected" => ProposalState::Rejected,
            "no_quorum" => ProposalState::NoQuorum,
            "policy_error" => ProposalState::PolicyError,
            "cancelled" => ProposalState::Cancelled,
            "vetoed" => ProposalState::Vetoed,
            _ => return None,
        })
    }
}

/// A vote's choice.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// In favour.
    For,
    /// Against.
    Against,
    /// Counted for quorum, not for approval.
    Abstain,
    /// A block (consent method).
    Block,
}

impl Choice {
    pub(crate) const NAMES: &'static [&'static str] = &["for", "against", "abstain", "block"];

    /// The choice's name in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::For => "for",
            Choice::Against => "against",
            Choice::Abstain => "abstain",
            Choice::Block => "block",
        }
    }

    /// Parses a choice name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "for" => Choice::For,
            "against" => Choice::Against,
            "abstain" => Choice::Abstain,
            "block" => Choice::Block,
            _ => return None,
        })
    }
}

/// How votes are tallied.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Method {
    /// More for than against, among those voting for or against.
    SimpleMajority,
    /// At least `threshold` percent for.
    Supermajority {
        /// Percent.
        threshold: i64,
    },
    /// Accepted unless more than `max_blocks` blocks.
    Consent {
        /// Blocks tolerated.
        max_blocks: i64,
    },
    /// Every counted vote for.
    Unanimous,
    /// A WASM tally module, by blake3 hash (hex).
    Wasm {
        /// Module hash.
        module: String,
    },
}

impl Method {
    pub(crate) const KINDS: &'static [&'static str] = &[
        "simple_majority",
        "supermajority",
        "consent",
        "unanimous",
        "wasm",
    ];
}

/// Voting rules.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    /// Participation needed, percent of the weighted membership.
    pub quorum_percent: i64,
    /// Approval needed, percent of for + against.
    pub approval_percent: i64,
    /// Default voting period.
    pub voting_period_seconds: i64,
    /// Tally method.
    pub method: Method,
    /// Whether an admin may veto an open proposal.
    pub allow_veto: bool,
}

impl Default for Rules {
    /// The `cooperative_default` profile.
    fn default() -> Self {
        Rules {
            quorum_percent: 50,
            approval_percent: 51,
            voting_period_seconds: 7 * 24 * 3600,
            method: Method::SimpleMajority,
            allow_veto: false,
        }
    }
}

impl Rules {
    /// The named profiles a domain may start from.
    pub const PROFILES: &'static [&'static str] = &[
        "cooperative_default",
        "working_group",
        "supermajority",
        "consensus",
        "unanimous",
    ];

    /// The rules of a named profile:
    ///
    /// | profile | quorum | approval | method | period | veto |
    /// |---|---|---|---|---|---|
    /// | `cooperative_default` | 50 % | 51 % | simple majority | 7 days | no |
    /// | `working_group` | 50 % | 51 % | simple majority | 3 days | yes |
    /// | `supermajority` | 60 % | 67 % | supermajority 67 % | 7 days | no |
    /// | `consensus` | 75 % | — | consent, no block | 14 days | no |
    /// | `unanimous` | 100 % | — | unanimous | 14 days | no |
    pub fn profile(name: &str) -> Option<Rules> {
        let day = 24 * 3600;
        let base = Rules::default();
        Some(match name {
            "cooperative_default" => base,
            "working_group" => Rules {
                voting_period_seconds: 3 * day,
                allow_veto: true,
                ..base
            },
            "supermajority" => Rules {
                quorum_percent: 60,
                approval_percent: 67,
                method: Method::Supermajority { threshold: 67 },
                ..base
            },
            "consensus" => Rules {
                quorum_percent: 75,
                voting_period_seconds: 14 * day,
                method: Method::Consent { max_blocks: 0 },
                ..base
            },
            "unanimous" => Rules {
                quorum_percent: 100,
                voting_period_seconds: 14 * day,
                method: Method::Unanimous,
                ..base
            },
            _ => return None,
        })
    }
}

/// A member of a domain.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DomainMember {
    /// DID.
    pub did: Did,
    /// Role.
    pub role: DomainRole,
    /// Vote weight.
    pub weight: i64,
    /// Whether the member is still in the domain.
    pub active: bool,
}

/// A vote.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Vote {
    /// Choice.
    pub choice: Choice,
    /// Free text.
    pub comment: Option<String>,
    /// Unix seconds.
    pub at: Option<i64>,
}
