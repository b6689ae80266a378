//! Workflow errors in the DSL's RFC 7807 shape, and the crate's own error type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Base URI of the DSL's standard error types.
pub const ERROR_TYPE_BASE: &str = "https://serverlessworkflow.io/spec/1.0.0/errors/";

/// The DSL's standard error kinds, with their default status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad configuration (400).
    Configuration,
    /// Schema or input validation failed (400).
    Validation,
    /// A runtime expression failed (400).
    Expression,
    /// Authentication failed (401).
    Authentication,
    /// Not allowed (403).
    Authorization,
    /// A timeout (408).
    Timeout,
    /// Talking to another service failed (500, or the service's status).
    Communication,
    /// Anything else that went wrong while running (500).
    Runtime,
}

impl ErrorKind {
    /// The type URI of this kind.
    pub fn type_uri(self) -> String {
        format!("{ERROR_TYPE_BASE}{}", self.slug())
    }

    fn slug(self) -> &'static str {
        match self {
            ErrorKind::Configuration => "configuration",
            ErrorKind::Validation => "validation",
            ErrorKind::Expression => "expression",
            ErrorKind::Authentication => "authentication",
            ErrorKind::Authorization => "authorization",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Communication => "communication",
            ErrorKind::Runtime => "runtime",
        }
    }

    /// The default status code of this kind.
    pub fn default_status(self) -> u16 {
        match self {
            ErrorKind::Configuration | ErrorKind::Validation | ErrorKind::Expression => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::Authorization => 403,
            ErrorKind::Timeout => 408,
            ErrorKind::Communication | ErrorKind::Runtime => 500,
        }
    }
}

/// An error raised while a workflow runs, as the DSL describes it (RFC 7807 problem details).
///
/// `instance` is the JSON pointer of the task that raised it, e.g. `/do/0/raiseError`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkflowError {
    /// The error type URI.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status code.
    pub status: u16,
    /// A short summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A human explanation of this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// JSON pointer of the task that raised the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl WorkflowError {
    /// A standard error of `kind` with a detail message, cut to
    /// [`crate::limits::MAX_DETAIL_CHARS`] characters: details quote the values that failed,
    /// and those can be as large as a run's input.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        WorkflowError {
            type_: kind.type_uri(),
            status: kind.default_status(),
            title: None,
            detail: Some(crate::limits::clip_detail(detail.into())),
            instance: None,
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Sets `instance` unless the error already names one.
    pub fn at(mut self, instance: &str) -> Self {
        if self.instance.is_none() {
            self.instance = Some(instance.to_string());
        }
        self
    }

    /// Whether this is a standard error of `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.type_ == kind.type_uri()
    }

    /// The error as a JSON value (what `catch.as` binds and `cairn run` prints).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl std::fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.type_, self.status)?;
        if let Some(t) = &self.title {
            write!(f, " {t}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        if let Some(i) = &self.instance {
            write!(f, " at {i}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkflowError {}
