//! Typed answers of the routes apps call most, so the OpenAPI document
//! gives generated clients real response schemas (issue 15 §1; more
//! routes follow).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::AppError;

/// Where an entry stands.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StatusView {
    /// `applied` (it counts), `conflicted` (it is kept and forwarded but
    /// counts for nothing) or `pending` (waiting for what it cites).
    #[schema(pattern = "^(applied|conflicted|pending)$")]
    pub(crate) status: String,
    /// Why it is conflicted: `credit_limit`, `frozen`, `sealed`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The conflict's particulars (`account`, `unit`, `limit`, `would_be`, …).
    #[serde(flatten)]
    pub(crate) details: BTreeMap<String, Value>,
}

impl StatusView {
    /// The engine's status, as the API shows it.
    pub(crate) fn of(status: &impl serde::Serialize) -> Result<StatusView, AppError> {
        let Value::Object(mut fields) = serde_json::to_value(status).map_err(AppError::internal)?
        else {
            return Err(AppError::internal("a status is not an object"));
        };
        let status = match fields.remove("status") {
            Some(Value::String(s)) => s,
            _ => return Err(AppError::internal("a status without its name")),
        };
        let reason = match fields.remove("reason") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        Ok(StatusView {
            status,
            reason,
            details: fields.into_iter().collect(),
        })
    }

    /// Waiting for parents or co-op heads.
    pub(crate) fn pending() -> StatusView {
        StatusView {
            status: "pending".into(),
            reason: None,
            details: BTreeMap::new(),
        }
    }
}

/// A settlement recorded.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SettleAnswer {
    /// The entry's id, 64 hex.
    pub(crate) entry_id: String,
    pub(crate) status: StatusView,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) amount: i64,
    pub(crate) unit: String,
    pub(crate) memo: String,
}

/// An account's standing in one unit.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PositionView {
    pub(crate) unit: String,
    /// Credits less debits, in the unit's smallest step.
    pub(crate) balance: i64,
    /// How far below zero the member may go (members only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) credit_limit: Option<i64>,
    /// Set aside in device allowances (members only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reserved: Option<i64>,
    /// `balance + credit_limit − reserved` (members only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) available: Option<i64>,
    /// Unspent allowance per device DID (members only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) allowances: Option<BTreeMap<String, i64>>,
}

/// An account's position in every unit of the co-op.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PositionAnswer {
    /// The co-op as the path named it.
    pub(crate) coop_id: String,
    /// The member's DID, or `treasury`.
    pub(crate) did: String,
    pub(crate) positions: Vec<PositionView>,
}

/// What a new entry cites.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct HeadsAnswer {
    /// The co-op document's id (base58): the entry's `coop`.
    pub(crate) coop_doc_id: String,
    /// The co-op document's heads, sorted, 64 hex each.
    pub(crate) coop_heads: Vec<String>,
    /// The ledger's heads (the entry's parents), sorted, 64 hex each.
    pub(crate) ledger_heads: Vec<String>,
}

/// A submitted entry and where it stands.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SubmitAnswer {
    /// The entry's id, 64 hex.
    pub(crate) entry_id: String,
    pub(crate) status: StatusView,
}
