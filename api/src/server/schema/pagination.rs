//! Connection paging: page sizes, run cursors, the runs filter and order.

use async_graphql::{Enum, InputObject, Result};
use base64::Engine as _;
use cairn_runtime::store::{RunOrder, RunQuery, RunSortField, RunSummary};

use crate::server::errors::{self, Code};

use super::scalars::{DateTime, RunStatus};

/// Largest page of a connection.
pub(super) const MAX_PAGE: i32 = 500;

/// Filter of the runs list and of `runsChanged`.
#[derive(InputObject, Debug, Default, Clone)]
pub struct RunsFilter {
    /// Only runs in one of these statuses.
    pub status: Option<Vec<RunStatus>>,
    /// Only runs of definitions in this namespace.
    pub namespace: Option<String>,
    /// Only runs of definitions with this name.
    pub name: Option<String>,
    /// Only runs started at or after this time (inclusive).
    pub started_after: Option<DateTime>,
    /// Only runs started strictly before this time (so `startedAfter: T` of one window and
    /// `startedBefore: T` of the previous one neither overlap nor leave a gap).
    pub started_before: Option<DateTime>,
    /// Only runs started with this correlation id (exact match).
    pub correlation_id: Option<String>,
}

impl RunsFilter {
    /// Whether a run summary passes.
    pub fn matches(&self, s: &RunSummary) -> bool {
        self.status
            .as_ref()
            .is_none_or(|st| st.iter().any(|x| x.label() == s.status))
            && self.namespace.as_ref().is_none_or(|n| *n == s.namespace)
            && self.name.as_ref().is_none_or(|n| *n == s.name)
            && self.started_after.is_none_or(|t| s.created_at >= t.0)
            && self.started_before.is_none_or(|t| s.created_at < t.0)
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| s.correlation_id.as_ref() == Some(c))
    }

    /// `BAD_USER_INPUT` when a field could never match (a malformed correlation id).
    pub(crate) fn check(&self) -> Result<()> {
        check_correlation_id(self.correlation_id.as_deref())
    }

    /// The store query of this filter (no page bounds set; newest first).
    pub(crate) fn query(&self) -> RunQuery {
        let mut q = RunQuery::default();
        q.statuses = self
            .status
            .iter()
            .flatten()
            .map(|s| s.label().to_string())
            .collect();
        q.namespace = self.namespace.clone();
        q.name = self.name.clone();
        q.created_from = self.started_after.map(|t| t.0);
        q.created_before = self.started_before.map(|t| t.0);
        q.correlation_id = self.correlation_id.clone();
        q
    }
}

/// What the runs list sorts on; the run id breaks ties.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum RunOrderField {
    /// When the run started (stable: pages never shift).
    #[default]
    CreatedAt,
    /// When the run last changed (a run that changes while you page moves in the order).
    UpdatedAt,
}

/// A sort direction.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum OrderDirection {
    /// Smallest first.
    Asc,
    /// Largest (newest) first.
    #[default]
    Desc,
}

/// The order of the runs list (default: `CREATED_AT`, `DESC`).
#[derive(InputObject, Debug, Default, Clone, Copy)]
pub struct RunsOrderBy {
    /// The key.
    #[graphql(default)]
    pub field: RunOrderField,
    /// The direction.
    #[graphql(default)]
    pub direction: OrderDirection,
}

impl RunsOrderBy {
    pub(crate) fn store(self) -> RunOrder {
        RunOrder {
            field: match self.field {
                RunOrderField::CreatedAt => RunSortField::CreatedAt,
                RunOrderField::UpdatedAt => RunSortField::UpdatedAt,
            },
            descending: self.direction == OrderDirection::Desc,
        }
    }
}

pub(crate) fn page_size(first: i32) -> Result<usize> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(errors::error(
            Code::BadUserInput,
            format!("`first` must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(usize::try_from(first).unwrap_or(1))
}

/// The tag of an order in a cursor, so that a cursor of one order is refused by another.
pub(crate) fn order_tag(order: RunOrder) -> &'static str {
    match (order.field, order.descending) {
        (RunSortField::CreatedAt, true) => "cd",
        (RunSortField::CreatedAt, false) => "ca",
        (RunSortField::UpdatedAt, true) => "ud",
        (RunSortField::UpdatedAt, false) => "ua",
    }
}

/// The opaque cursor of a row in `order`: its sort key and run id (keyset pagination).
pub(crate) fn run_cursor(s: &RunSummary, order: RunOrder) -> String {
    let key = match order.field {
        RunSortField::CreatedAt => s.created_at,
        RunSortField::UpdatedAt => s.updated_at,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}:{key}:{}",
        order_tag(order),
        s.run_id
    ))
}

pub(crate) fn parse_run_cursor(c: &str, order: RunOrder) -> Result<(i64, String)> {
    let bad = || errors::error(Code::BadUserInput, "`after` is not a cursor of this list");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (tag, rest) = text.split_once(':').ok_or_else(bad)?;
    if tag != order_tag(order) {
        return Err(errors::error(
            Code::BadUserInput,
            "`after` is a cursor of another `orderBy`; start again without `after`",
        ));
    }
    let (key, id) = rest.split_once(':').ok_or_else(bad)?;
    Ok((key.parse().map_err(|_| bad())?, id.to_string()))
}

/// `BAD_USER_INPUT` unless a given correlation id is well formed.
pub(crate) fn check_correlation_id(id: Option<&str>) -> Result<()> {
    match id.map(cairn_core::events::check_correlation_id) {
        Some(Err(m)) => Err(errors::error(
            Code::BadUserInput,
            format!("`correlationId`: {m}"),
        )),
        _ => Ok(()),
    }
}
