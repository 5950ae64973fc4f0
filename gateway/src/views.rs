//! Typed answers shared by several routes, and the one shape of every list:
//! [`Page`], read with [`PageQuery`]. Each route's own answer lives beside
//! its handler; every one is a type here or there, so the OpenAPI document
//! gives generated clients a real schema for each.

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

/// An entry of a ledger, with where it stands.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct EntryView {
    pub(crate) id: icn_schemas::ledger::EntryId,
    pub(crate) entry: icn_schemas::ledger::Entry,
    pub(crate) status: StatusView,
}

impl EntryView {
    /// An engine's history item, as the API shows it.
    pub(crate) fn of(item: icn_engine::ledger::HistoryItem) -> Result<EntryView, AppError> {
        Ok(EntryView {
            id: item.id,
            status: StatusView::of(&item.status)?,
            entry: item.entry,
        })
    }

    /// Every item of `items`.
    pub(crate) fn all(
        items: Vec<icn_engine::ledger::HistoryItem>,
    ) -> Result<Vec<EntryView>, AppError> {
        items.into_iter().map(EntryView::of).collect()
    }
}

/// The most items a page holds.
pub(crate) const MAX_PAGE: usize = 500;
/// Items in a page when `limit` is not given.
pub(crate) const DEFAULT_PAGE: usize = 100;

/// A page of a list: every list route answers this shape.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Page<T> {
    /// The items, in the list's order.
    pub(crate) items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// A whole list as one page: what a write that changes a list answers.
pub(crate) fn whole<T>(items: Vec<T>) -> Page<T> {
    Page {
        items,
        next_cursor: None,
    }
}

/// How every list is paged.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<usize>,
    /// The `next_cursor` of the page before; absent for the first page.
    #[param(min_length = 1)]
    pub(crate) cursor: Option<String>,
}

impl PageQuery {
    /// The page size asked for, or 400.
    pub(crate) fn limit(&self) -> Result<usize, AppError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(AppError::bad_request(format!(
                "limit: from 1 to {MAX_PAGE}, not {n}"
            ))),
        }
    }

    /// The page of `items` (already in the list's order) after the cursor,
    /// each item named by `key`, a string unique in the list: a cursor is
    /// the key of the last item of the page before. A cursor naming no item
    /// is refused (400) rather than read as the start.
    pub(crate) fn page<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>, AppError> {
        let limit = self.limit()?;
        let start = match &self.cursor {
            None => 0,
            Some(cursor) => {
                items
                    .iter()
                    .position(|item| key(item) == *cursor)
                    .ok_or_else(|| {
                        AppError::bad_request(format!(
                            "{cursor:?} is not a cursor of this list (the list changed, or the cursor is of another list)"
                        ))
                    })?
                    + 1
            }
        };
        let rest = items.len().saturating_sub(start);
        let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
        let next_cursor = (rest > limit).then(|| page.last().map(&key)).flatten();
        Ok(Page {
            items: page,
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<usize>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit,
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn pages_walk_the_whole_list_once() {
        let list: Vec<u32> = (0..7).collect();
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let page = query(Some(3), cursor.as_deref())
                .page(list.clone(), u32::to_string)
                .expect("a page");
            seen.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, list);
    }

    #[test]
    fn a_full_last_page_has_no_next_cursor() {
        let page = query(Some(3), None)
            .page(vec![1, 2, 3], u32::to_string)
            .expect("a page");
        assert_eq!(page.items, vec![1, 2, 3]);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn bad_limits_and_unknown_cursors_are_refused() {
        for limit in [0, MAX_PAGE + 1] {
            assert!(
                query(Some(limit), None)
                    .page(vec![1u32], u32::to_string)
                    .is_err()
            );
        }
        assert!(
            query(None, Some("9"))
                .page(vec![1u32], u32::to_string)
                .is_err()
        );
    }
}
