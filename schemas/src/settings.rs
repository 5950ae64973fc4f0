//! What a co-op's governance changes in its document: the settings a
//! config-change decision sets, the record of every decision applied, and
//! the onboarding policy.
//!
//! Layout, beside `coop`'s:
//!
//! ```text
//! decisions/<receipt hash hex>/{domain, proposal, applied_at}   str, str, int
//! policy/onboarding/{approval, member_invites}                  "admin"|"proposal", bool
//! ```
//!
//! A membership or config-change decision is applied to the co-op document
//! by an admin's node, in one change that also records the decision under
//! `decisions/`. A node that finds the record applies nothing, so a decision
//! takes effect once on every replica, however many nodes saw the close: two
//! admins' nodes applying it concurrently write the same values, and a later
//! change (a member removed after being admitted) is never undone by a late
//! replay of the decision.

use automerge::ObjId;
use automerge::transaction::Transactable;

use crate::coop;
use crate::did::Did;
use crate::document::{Reader, SchemaError, check_ident, ensure_map};

/// A setting a config-change decision changes, parsed from the proposal's
/// `key` and `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// `name`: the co-op's display name.
    Name(String),
    /// `description`.
    Description(String),
    /// `default_credit_limit`: a whole number of smallest steps.
    DefaultCreditLimit(i64),
    /// `credit_limit/<did>`: one member's credit limit.
    CreditLimit(Did, i64),
    /// `credit_limit/<did>/<unit>`: one member's credit limit in one unit.
    CreditLimitIn(Did, String, i64),
    /// `units/<unit>/credit_limit`: members' credit limit in one unit.
    UnitCreditLimit(String, i64),
    /// `units/<unit>`: a unit of account with `value` decimal places (0–18).
    Unit {
        /// Unit id.
        unit: String,
        /// Decimal places.
        scale: i64,
    },
    /// `rates/<from>/<to>`: 1 `from` = `num`/`den` `to`, value `num/den`.
    Rate {
        /// The unit paid.
        from: String,
        /// The unit received.
        to: String,
        /// Numerator.
        num: i64,
        /// Denominator.
        den: i64,
    },
}

/// The keys a config change may name, for error messages and docs.
pub const SETTING_KEYS: &str = "name, description, default_credit_limit, credit_limit/<did>, \
     credit_limit/<did>/<unit>, units/<unit> (value: decimal places, 0 to 18), \
     units/<unit>/credit_limit, rates/<from>/<to> (value: num/den)";

impl Setting {
    /// Parses a config change's key and value.
    pub fn parse(key: &str, value: &str) -> Result<Setting, SchemaError> {
        let invalid = |reason: String| SchemaError::InvalidValue {
            field: "config_change",
            reason,
        };
        let whole = |v: &str| -> Result<i64, SchemaError> {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| invalid(format!("{key}: {v:?} is not a whole number")))
        };
        let parts: Vec<&str> = key.split('/').collect();
        Ok(match parts.as_slice() {
            ["name"] if !value.trim().is_empty() && value.len() <= 200 => {
                Setting::Name(value.to_owned())
            }
            ["description"] if value.len() <= 4000 => Setting::Description(value.to_owned()),
            ["default_credit_limit"] => Setting::DefaultCreditLimit(whole(value)?),
            ["credit_limit", did] => {
                let did = did
                    .parse::<Did>()
                    .map_err(|e| invalid(format!("{key}: {e}")))?;
                Setting::CreditLimit(did, whole(value)?)
            }
            ["credit_limit", did, unit] => {
                let did = did
                    .parse::<Did>()
                    .map_err(|e| invalid(format!("{key}: {e}")))?;
                check_ident("unit", unit)?;
                Setting::CreditLimitIn(did, (*unit).to_owned(), whole(value)?)
            }
            ["units", unit, "credit_limit"] => {
                check_ident("unit", unit)?;
                Setting::UnitCreditLimit((*unit).to_owned(), whole(value)?)
            }
            ["units", unit] => {
                check_ident("unit", unit)?;
                let scale = whole(value)?;
                if scale > 18 {
                    return Err(invalid(format!(
                        "{key}: 0 to 18 decimal places, not {scale}"
                    )));
                }
                Setting::Unit {
                    unit: (*unit).to_owned(),
                    scale,
                }
            }
            ["rates", from, to] => {
                check_ident("unit", from)?;
                check_ident("unit", to)?;
                let rate = value
                    .split_once('/')
                    .and_then(|(n, d)| Some((n.trim().parse().ok()?, d.trim().parse().ok()?)))
                    .filter(|&(n, d): &(i64, i64)| n > 0 && d > 0 && from != to);
                let Some((num, den)) = rate else {
                    return Err(invalid(format!(
                        "{key}: a rate between two different units is num/den, both positive, not {value:?}"
                    )));
                };
                Setting::Rate {
                    from: (*from).to_owned(),
                    to: (*to).to_owned(),
                    num,
                    den,
                }
            }
            _ => {
                return Err(invalid(format!(
                    "{key}={value:?} is not a setting a decision changes; the keys are {SETTING_KEYS}"
                )));
            }
        })
    }

    /// Writes the setting into the co-op document `r` describes. A rate
    /// needs both units in the policy, and a member's credit limit a member.
    pub fn apply(&self, r: Reader<'_>, tx: &mut impl Transactable) -> Result<(), SchemaError> {
        match self {
            Setting::Name(name) => coop::set_profile(tx, Some(name), None),
            Setting::Description(d) => coop::set_profile(tx, None, Some(d)),
            Setting::DefaultCreditLimit(limit) => coop::set_default_credit_limit(tx, *limit),
            Setting::CreditLimit(did, limit) => coop::set_credit_limit(tx, did, *limit),
            Setting::CreditLimitIn(did, unit, limit) => {
                coop::set_credit_limit_in(tx, did, unit, *limit)
            }
            Setting::UnitCreditLimit(unit, limit) => coop::set_unit_credit_limit(tx, unit, *limit),
            Setting::Unit { unit, scale } => coop::put_unit(tx, unit, None, *scale),
            Setting::Rate { from, to, num, den } => {
                for unit in [from, to] {
                    if !coop::has_unit(r, unit) {
                        return Err(SchemaError::Missing(format!("unit {unit}")));
                    }
                }
                coop::set_rate(tx, from, to, *num, *den)
            }
        }
    }
}

/// Whether the decision with receipt hash `hash` is recorded as applied.
pub fn decision_applied(r: Reader<'_>, hash: &[u8; 32]) -> bool {
    r.map_path(&["decisions", &hex::encode(hash)]).is_some()
}

/// Records that decision `hash` (proposal `proposal` of `domain`) is
/// applied, in the change that applies it.
pub fn record_decision(
    tx: &mut impl Transactable,
    hash: &[u8; 32],
    domain: &crate::DocId,
    proposal: &str,
    applied_at: i64,
) -> Result<(), SchemaError> {
    let decisions = ensure_map(tx, &ObjId::Root, "decisions")?;
    let d = tx.put_object(&decisions, hex::encode(hash), automerge::ObjType::Map)?;
    tx.put(&d, "domain", domain.to_string())?;
    tx.put(&d, "proposal", proposal)?;
    tx.put(&d, "applied_at", applied_at.max(0))?;
    Ok(())
}

/// Who approves an application to join.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// An admin approves it (`POST …/applications/{did}/approve`).
    #[default]
    Admin,
    /// A membership proposal in the co-op's governing domain, accepted.
    Proposal,
}

impl Approval {
    /// The names the document holds.
    pub const NAMES: &'static [&'static str] = &["admin", "proposal"];

    /// The name the document holds.
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Admin => "admin",
            Approval::Proposal => "proposal",
        }
    }
}

/// How the co-op takes in members.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Onboarding {
    /// Who approves applications.
    pub approval: Approval,
    /// Whether members who are not admins create invites.
    pub member_invites: bool,
}

impl Onboarding {
    /// Reads the policy (its defaults where unset).
    pub fn read(r: Reader<'_>) -> Onboarding {
        let Some(obj) = r.map_path(&["policy", "onboarding"]) else {
            return Onboarding::default();
        };
        Onboarding {
            approval: match r.str(&obj, "approval").as_deref() {
                Some("proposal") => Approval::Proposal,
                _ => Approval::Admin,
            },
            member_invites: r.bool(&obj, "member_invites").unwrap_or(false),
        }
    }

    /// Writes the policy.
    pub fn write(&self, tx: &mut impl Transactable) -> Result<(), SchemaError> {
        let policy = ensure_map(tx, &ObjId::Root, "policy")?;
        let o = ensure_map(tx, &policy, "onboarding")?;
        tx.put(&o, "approval", self.approval.as_str())?;
        tx.put(&o, "member_invites", self.member_invites)?;
        Ok(())
    }
}
