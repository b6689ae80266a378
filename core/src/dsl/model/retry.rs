//! Error handling: errors as written (`raise`, `use.errors`), `catch` and retry policies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::serde_glue::{some, string_or_object};
use super::*;

/// An error inline or a reference.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ErrorOrRef {
    /// Inline.
    Inline(ErrorDefinition),
    /// A name in `use.errors`.
    Ref(String),
}
string_or_object!(
    ErrorOrRef,
    Ref,
    Inline,
    ErrorDefinition,
    "an error object or the name of one"
);

/// An error as written in a definition (fields may be expressions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDefinition {
    /// The error type URI.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status code (an integer).
    #[schemars(with = "i64")]
    pub status: Value,
    /// The JSON pointer of the raising task (filled in when absent).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A short summary.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A longer explanation.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The `catch` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catch {
    /// Which errors are caught.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<CatchErrors>,
    /// Variable name of the caught error (default `error`).
    #[serde(default, deserialize_with = "some", rename = "as")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_: Option<String>,
    /// Catch only when this is true.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Do not catch when this is true.
    #[serde(default, deserialize_with = "some", rename = "exceptWhen")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except_when: Option<String>,
    /// Retry the `try` block, inline policy or a name in `use.retries`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOrRef>,
    /// Tasks run when an error is caught (after retries are exhausted).
    #[serde(default, deserialize_with = "some", rename = "do")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_: Option<TaskList>,
}

/// `catch.errors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatchErrors {
    /// Properties the error must have (`type`, `status`, `instance`, `title`, `details`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<Object>,
}

/// A retry policy inline or a reference.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
// A definition is decoded once and kept; boxing would only make it harder to match on.
#[allow(clippy::large_enum_variant)]
pub enum RetryOrRef {
    /// Inline.
    Inline(RetryPolicy),
    /// A name in `use.retries`.
    Ref(String),
}
string_or_object!(
    RetryOrRef,
    Ref,
    Inline,
    RetryPolicy,
    "a retry policy object or the name of one"
);

/// A retry policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retry only when this is true.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Do not retry when this is true.
    #[serde(default, deserialize_with = "some", rename = "exceptWhen")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except_when: Option<String>,
    /// Base delay between attempts.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// How the delay grows.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Limits on attempts and total time.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<RetryLimit>,
    /// Random extra delay.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

/// Backoff: exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Backoff {
    /// The delay stays the same.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constant: Option<Object>,
    /// The delay grows as `delay * attempt`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear: Option<Object>,
    /// The delay grows as `delay * 2^(attempt-1)`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exponential: Option<Object>,
}

/// `limit` of a retry policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryLimit {
    /// Limits per attempt.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptLimit>,
    /// Total time allowed for all attempts.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// `limit.attempt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptLimit {
    /// Maximum number of attempts (retries), not counting the first run.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Maximum duration of one attempt.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// `jitter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jitter {
    /// Lower bound.
    pub from: Duration,
    /// Upper bound.
    pub to: Duration,
}
