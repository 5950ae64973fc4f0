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
    /// The page size asked for, or 400 (so is an empty cursor).
    pub(crate) fn limit(&self) -> Result<usize, AppError> {
        if self.cursor.as_deref() == Some("") {
            return Err(AppError::bad_request(
                "cursor: the next_cursor of the page before, not empty",
            ));
        }
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(AppError::bad_request(format!(
                "limit: from 1 to {MAX_PAGE}, not {n}"
            ))),
        }
    }

    /// The page of `items` after the cursor, in the order of their keys
    /// (`key`: a string unique in the list). A cursor is the key of the last
    /// item of the page before, and the next page starts after it wherever
    /// it falls: an item added or removed meanwhile moves no other item
    /// across the cursor, and a cursor naming no item is a place all the
    /// same.
    pub(crate) fn page<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>, AppError> {
        let limit = self.limit()?;
        let mut keyed: Vec<(String, T)> =
            items.into_iter().map(|item| (key(&item), item)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let after = |k: &str| self.cursor.as_deref().is_none_or(|c| k > c);
        let mut rest = keyed.into_iter().filter(|(k, _)| after(k));
        let page: Vec<(String, T)> = rest.by_ref().take(limit).collect();
        let next_cursor = match rest.next() {
            Some(_) => page.last().map(|(k, _)| k.clone()),
            None => None,
        };
        Ok(Page {
            items: page.into_iter().map(|(_, item)| item).collect(),
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
    fn bad_limits_are_refused() {
        for limit in [0, MAX_PAGE + 1] {
            assert!(
                query(Some(limit), None)
                    .page(vec![1u32], u32::to_string)
                    .is_err()
            );
        }
    }

    #[test]
    fn a_cursor_is_a_place_even_when_its_item_is_gone() {
        // The page before ended at "b", which was removed since.
        let page = query(Some(2), Some("b"))
            .page(vec!["d", "a", "c", "e"], |s| s.to_string())
            .expect("a page");
        assert_eq!(page.items, vec!["c", "d"]);
        assert_eq!(page.next_cursor.as_deref(), Some("d"));
    }
}
