//! Durations of the DSL: inline objects and ISO 8601 literals, to milliseconds.
//!
//! STUB: the interface is fixed; the implementation is being written.

use crate::dsl::DurationInline;

/// A duration could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration `{text}`: {message}")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What is wrong.
    pub message: String,
}

/// Milliseconds of an inline duration.
pub fn inline_millis(d: &DurationInline) -> u64 {
    let f = |v: Option<u64>, m: u64| v.unwrap_or(0).saturating_mul(m);
    f(d.days, 86_400_000)
        .saturating_add(f(d.hours, 3_600_000))
        .saturating_add(f(d.minutes, 60_000))
        .saturating_add(f(d.seconds, 1_000))
        .saturating_add(f(d.milliseconds, 1))
}

/// Milliseconds of an ISO 8601 duration such as `PT1H30M` or `P2DT0.5S`. Years and months are
/// rejected: their length depends on the calendar.
pub fn iso8601_millis(text: &str) -> Result<u64, DurationError> {
    Err(DurationError { text: text.to_string(), message: "not implemented".into() })
}
