//! Scalars and enums of the schema: leaf types every other part uses.

use async_graphql::{Enum, InputValueError, InputValueResult, Scalar, ScalarType};
use cairn_core::names::StatusLabel;
use cairn_core::time::iso8601;

/// A point in time: on input an RFC 3339 date-time with any offset (`2026-11-27T18:00:00Z`,
/// `2026-11-27T19:00:00.250+01:00`), kept to the millisecond; on output RFC 3339 in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Description)]
pub struct DateTime(pub i64);

#[Scalar(
    name = "DateTime",
    use_type_description,
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
)]
impl ScalarType for DateTime {
    fn parse(value: async_graphql::Value) -> InputValueResult<Self> {
        let async_graphql::Value::String(text) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| DateTime(t.timestamp_millis()))
            .map_err(|e| {
                InputValueError::custom(format!(
                    "`{text}` is not an RFC 3339 date-time such as 2026-11-27T18:00:00Z: {e}"
                ))
            })
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::String(iso8601(self.0))
    }
}

/// Where a run is in its life.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RunStatus {
    /// Recorded, not started yet.
    Pending,
    /// Executing.
    Running,
    /// Nothing can progress until a timer, an event or a sub-workflow arrives.
    Waiting,
    /// Paused by an operator.
    Suspended,
    /// Finished with an output.
    Completed,
    /// Finished with an uncaught error (it can be retried).
    Faulted,
    /// Cancelled.
    Cancelled,
    /// Undoing the side effects of its completed tasks: their compensations run
    /// (docs/compensation.md).
    Compensating,
    /// Ended after every compensation completed.
    Compensated,
    /// Ended after compensating, with at least one compensation that faulted.
    CompensationFailed,
}

impl RunStatus {
    /// From the lowercase label the runtime and the runs index use.
    pub fn from_label(s: &str) -> RunStatus {
        match StatusLabel::parse(s) {
            Some(StatusLabel::Pending) => RunStatus::Pending,
            Some(StatusLabel::Waiting) => RunStatus::Waiting,
            Some(StatusLabel::Suspended) => RunStatus::Suspended,
            Some(StatusLabel::Completed) => RunStatus::Completed,
            Some(StatusLabel::Faulted) => RunStatus::Faulted,
            Some(StatusLabel::Cancelled) => RunStatus::Cancelled,
            Some(StatusLabel::Compensating) => RunStatus::Compensating,
            Some(StatusLabel::Compensated) => RunStatus::Compensated,
            Some(StatusLabel::CompensationFailed) => RunStatus::CompensationFailed,
            Some(StatusLabel::Running) | None => RunStatus::Running,
        }
    }

    /// The lowercase label.
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Pending => StatusLabel::Pending,
            RunStatus::Running => StatusLabel::Running,
            RunStatus::Waiting => StatusLabel::Waiting,
            RunStatus::Suspended => StatusLabel::Suspended,
            RunStatus::Completed => StatusLabel::Completed,
            RunStatus::Faulted => StatusLabel::Faulted,
            RunStatus::Cancelled => StatusLabel::Cancelled,
            RunStatus::Compensating => StatusLabel::Compensating,
            RunStatus::Compensated => StatusLabel::Compensated,
            RunStatus::CompensationFailed => StatusLabel::CompensationFailed,
        }
        .as_str()
    }
}
