//! Why an entry does not count, and how that reason is stored.
//!
//! [`Conflict`] is public and shaped for readers (the API shows it as JSON).
//! What the `o` row stores is not its serde form: each reason has a fixed
//! tag byte followed by its fields in postcard, written and read by hand
//! here, so that renaming a variant or a field changes nothing on disk. Rows
//! written before this codec hold the reason as JSON text, which always
//! starts with `{`; no tag is that byte, so both read.

use icn_schemas::Did;

use crate::storage::StorageError;

/// Why an entry does not count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Conflict {
    /// A debit would take the account below minus its credit limit.
    #[error("{account} would go to {would_be} {unit}, below its credit limit of {limit}")]
    CreditLimit {
        /// The account.
        account: Did,
        /// The unit.
        unit: String,
        /// Its balance after the debit.
        would_be: i64,
        /// Its credit limit.
        limit: i64,
        /// The part of the limit set aside for devices' allowances, which a
        /// general debit may not use.
        reserved: i64,
    },
    /// A device spent, or gave back, more than its unspent allowance.
    #[error("{device} has {remaining} {unit} of allowance left, not {wanted}")]
    AllowanceExceeded {
        /// The device (signer) key.
        device: Did,
        /// The unit.
        unit: String,
        /// Its unspent allowance at this place.
        remaining: i64,
        /// What the entry takes.
        wanted: i64,
    },
    /// The decision the entry cites is not an accepted decision of the
    /// co-op's treasury domain, as that domain's counted closes stand here.
    #[error("decision {receipt} is not an accepted decision of the co-op's treasury domain")]
    DecisionNotCounted {
        /// The receipt hash, hex.
        receipt: String,
    },
    /// The entry does not do what the decision decided.
    #[error("the entry does not do what decision {receipt} decided")]
    DecisionMismatch {
        /// The receipt hash, hex.
        receipt: String,
    },
    /// Another entry earlier in the order executed the same decision.
    #[error("decision {receipt} was executed already, by entry {by}")]
    AlreadyExecuted {
        /// The receipt hash, hex.
        receipt: String,
        /// The entry that executed it.
        by: String,
    },
    /// A general debit signed by a key other than the member's DID key,
    /// concurrent with one of the member's allowance grants in the unit.
    #[error(
        "{account} has set {unit} aside in allowances; its devices and delegates spend {unit} from their allowances"
    )]
    AllowanceRequired {
        /// The member.
        account: Did,
        /// The unit.
        unit: String,
    },
    /// The entry touches a frozen account.
    #[error("the account of {account} is frozen")]
    Frozen {
        /// The account.
        account: Did,
    },
    /// A balance would overflow 64 bits.
    #[error("a balance of {account} in {unit} would overflow")]
    Overflow {
        /// The account.
        account: String,
        /// The unit.
        unit: String,
    },
    /// A seal (a device's revocation, a member's removal, or an admin's
    /// freeze) was written without this entry in its past: the party who
    /// sealed had not seen it, so it does not count, whatever it cites.
    #[error("sealed by entry {seal}, which had not seen this entry")]
    Sealed {
        /// The seal (or freeze) entry, hex.
        seal: String,
    },
}

/// Where an entry stands in the fold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// It counts.
    Applied,
    /// It is kept and forwarded but does not count.
    Conflicted {
        /// Why.
        #[serde(flatten)]
        conflict: Conflict,
    },
}

/// The stored tags. Never renumber one; a new reason takes a new number.
mod tag {
    pub(super) const CREDIT_LIMIT: u8 = 1;
    pub(super) const ALLOWANCE_EXCEEDED: u8 = 2;
    pub(super) const DECISION_NOT_COUNTED: u8 = 3;
    pub(super) const DECISION_MISMATCH: u8 = 4;
    pub(super) const ALREADY_EXECUTED: u8 = 5;
    pub(super) const ALLOWANCE_REQUIRED: u8 = 6;
    pub(super) const FROZEN: u8 = 7;
    pub(super) const OVERFLOW: u8 = 8;
    pub(super) const SEALED: u8 = 9;
    /// The first byte of a reason stored as JSON, before tags.
    pub(super) const LEGACY_JSON: u8 = b'{';
}

fn corrupt(reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        tree: crate::storage::layout::LEDGER,
        reason: reason.to_string(),
    }
}

/// A DID as its 32 key bytes.
fn did_bytes(did: &Did) -> [u8; 32] {
    *did.as_bytes()
}

fn did_of(bytes: [u8; 32]) -> Result<Did, StorageError> {
    Did::from_bytes(&bytes).map_err(|_| corrupt("a stored conflict names a key that is not a DID"))
}

impl Conflict {
    /// The stored form: tag byte ‖ the fields in postcard.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, fields) = match self {
            Conflict::CreditLimit {
                account,
                unit,
                would_be,
                limit,
                reserved,
            } => (
                tag::CREDIT_LIMIT,
                postcard::to_stdvec(&(did_bytes(account), unit, would_be, limit, reserved)),
            ),
            Conflict::AllowanceExceeded {
                device,
                unit,
                remaining,
                wanted,
            } => (
                tag::ALLOWANCE_EXCEEDED,
                postcard::to_stdvec(&(did_bytes(device), unit, remaining, wanted)),
            ),
            Conflict::DecisionNotCounted { receipt } => {
                (tag::DECISION_NOT_COUNTED, postcard::to_stdvec(&(receipt,)))
            }
            Conflict::DecisionMismatch { receipt } => {
                (tag::DECISION_MISMATCH, postcard::to_stdvec(&(receipt,)))
            }
            Conflict::AlreadyExecuted { receipt, by } => {
                (tag::ALREADY_EXECUTED, postcard::to_stdvec(&(receipt, by)))
            }
            Conflict::AllowanceRequired { account, unit } => (
                tag::ALLOWANCE_REQUIRED,
                postcard::to_stdvec(&(did_bytes(account), unit)),
            ),
            Conflict::Frozen { account } => {
                (tag::FROZEN, postcard::to_stdvec(&(did_bytes(account),)))
            }
            Conflict::Overflow { account, unit } => {
                (tag::OVERFLOW, postcard::to_stdvec(&(account, unit)))
            }
            Conflict::Sealed { seal } => (tag::SEALED, postcard::to_stdvec(&(seal,))),
        };
        let fields = fields.expect("postcard encodes plain tuples into a Vec");
        let mut out = Vec::with_capacity(1 + fields.len());
        out.push(tag);
        out.extend_from_slice(&fields);
        out
    }

    /// Reads a stored reason: tagged, or JSON from before tags.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Conflict, StorageError> {
        let (&tag, fields) = bytes
            .split_first()
            .ok_or_else(|| corrupt("an empty stored conflict"))?;
        fn read<'a, T: serde::Deserialize<'a>>(fields: &'a [u8]) -> Result<T, StorageError> {
            postcard::from_bytes(fields).map_err(corrupt)
        }
        Ok(match tag {
            tag::CREDIT_LIMIT => {
                let (account, unit, would_be, limit, reserved) = read(fields)?;
                Conflict::CreditLimit {
                    account: did_of(account)?,
                    unit,
                    would_be,
                    limit,
                    reserved,
                }
            }
            tag::ALLOWANCE_EXCEEDED => {
                let (device, unit, remaining, wanted) = read(fields)?;
                Conflict::AllowanceExceeded {
                    device: did_of(device)?,
                    unit,
                    remaining,
                    wanted,
                }
            }
            tag::DECISION_NOT_COUNTED => {
                let (receipt,) = read(fields)?;
                Conflict::DecisionNotCounted { receipt }
            }
            tag::DECISION_MISMATCH => {
                let (receipt,) = read(fields)?;
                Conflict::DecisionMismatch { receipt }
            }
            tag::ALREADY_EXECUTED => {
                let (receipt, by) = read(fields)?;
                Conflict::AlreadyExecuted { receipt, by }
            }
            tag::ALLOWANCE_REQUIRED => {
                let (account, unit) = read(fields)?;
                Conflict::AllowanceRequired {
                    account: did_of(account)?,
                    unit,
                }
            }
            tag::FROZEN => {
                let (account,) = read(fields)?;
                Conflict::Frozen {
                    account: did_of(account)?,
                }
            }
            tag::OVERFLOW => {
                let (account, unit) = read(fields)?;
                Conflict::Overflow { account, unit }
            }
            tag::SEALED => {
                let (seal,) = read(fields)?;
                Conflict::Sealed { seal }
            }
            tag::LEGACY_JSON => legacy::decode(bytes)?,
            other => return Err(corrupt(format!("unknown conflict tag {other}"))),
        })
    }
}

/// Reasons stored as JSON by layout 2 before tags: the serde form of the
/// public type as it was then, frozen here.
mod legacy {
    use icn_schemas::Did;

    use super::{Conflict, corrupt};
    use crate::storage::StorageError;

    #[derive(serde::Deserialize)]
    #[serde(tag = "reason", rename_all = "snake_case")]
    enum Json {
        CreditLimit {
            account: Did,
            unit: String,
            would_be: i64,
            limit: i64,
            reserved: i64,
        },
        AllowanceExceeded {
            device: Did,
            unit: String,
            remaining: i64,
            wanted: i64,
        },
        DecisionNotCounted {
            receipt: String,
        },
        DecisionMismatch {
            receipt: String,
        },
        AlreadyExecuted {
            receipt: String,
            by: String,
        },
        AllowanceRequired {
            account: Did,
            unit: String,
        },
        Frozen {
            account: Did,
        },
        Overflow {
            account: String,
            unit: String,
        },
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Conflict, StorageError> {
        let json: Json = serde_json::from_slice(bytes).map_err(corrupt)?;
        Ok(match json {
            Json::CreditLimit {
                account,
                unit,
                would_be,
                limit,
                reserved,
            } => Conflict::CreditLimit {
                account,
                unit,
                would_be,
                limit,
                reserved,
            },
            Json::AllowanceExceeded {
                device,
                unit,
                remaining,
                wanted,
            } => Conflict::AllowanceExceeded {
                device,
                unit,
                remaining,
                wanted,
            },
            Json::DecisionNotCounted { receipt } => Conflict::DecisionNotCounted { receipt },
            Json::DecisionMismatch { receipt } => Conflict::DecisionMismatch { receipt },
            Json::AlreadyExecuted { receipt, by } => Conflict::AlreadyExecuted { receipt, by },
            Json::AllowanceRequired { account, unit } => {
                Conflict::AllowanceRequired { account, unit }
            }
            Json::Frozen { account } => Conflict::Frozen { account },
            Json::Overflow { account, unit } => Conflict::Overflow { account, unit },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(did: Did) -> Vec<Conflict> {
        vec![
            Conflict::CreditLimit {
                account: did,
                unit: "hours".into(),
                would_be: -101,
                limit: 100,
                reserved: 3,
            },
            Conflict::AllowanceExceeded {
                device: did,
                unit: "eur".into(),
                remaining: 4,
                wanted: 5,
            },
            Conflict::DecisionNotCounted {
                receipt: "ab".into(),
            },
            Conflict::DecisionMismatch {
                receipt: "cd".into(),
            },
            Conflict::AlreadyExecuted {
                receipt: "ef".into(),
                by: "01".into(),
            },
            Conflict::AllowanceRequired {
                account: did,
                unit: "hours".into(),
            },
            Conflict::Frozen { account: did },
            Conflict::Overflow {
                account: "treasury".into(),
                unit: "hours".into(),
            },
            Conflict::Sealed { seal: "02".into() },
        ]
    }

    #[test]
    fn every_reason_round_trips_under_its_own_tag() {
        let did = crate::test_utils::keypair(7).did();
        for (i, c) in all(did).into_iter().enumerate() {
            let bytes = c.encode();
            assert_eq!(usize::from(bytes[0]), i + 1, "tags are fixed: {c:?}");
            assert_eq!(Conflict::decode(&bytes).expect("decodes"), c);
        }
    }

    #[test]
    fn reasons_stored_as_json_before_tags_still_read() {
        let did = crate::test_utils::keypair(7).did();
        // Reasons newer than the tags were never stored as JSON.
        for c in all(did)
            .into_iter()
            .filter(|c| !matches!(c, Conflict::Sealed { .. }))
        {
            // The serde form of the public type is what layout 2 stored.
            let json = serde_json::to_vec(&c).expect("json");
            assert_eq!(Conflict::decode(&json).expect("legacy decodes"), c);
        }
        // The fixed bytes of one, as the old code wrote them.
        let stored = br#"{"reason":"overflow","account":"treasury","unit":"hours"}"#;
        assert_eq!(
            Conflict::decode(stored).expect("decodes"),
            Conflict::Overflow {
                account: "treasury".into(),
                unit: "hours".into()
            }
        );
        assert!(
            Conflict::decode(&[0x7f, 1, 2]).is_err(),
            "an unknown tag is corrupt"
        );
        assert!(Conflict::decode(&[]).is_err());
    }
}
