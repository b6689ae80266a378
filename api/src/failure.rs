//! How a `cairn` command fails: its exit code (the CLI's contract, `docs/errors.md`) and the
//! error. One type for every command module, so that a runtime error gets the same exit code
//! whichever command met it.

use cairn_runtime::ErrorClass;

/// A failure with the exit code of the CLI contract (2 bad usage or input, 4 the store or the
/// runtime failed).
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What happened (a `cairn_runtime::Error` inside, when there is one, so that `--json`
    /// names its class).
    pub error: anyhow::Error,
}

impl Failure {
    /// The stable code of this failure, as the GraphQL API's `extensions.code` says it
    /// (`docs/errors.md`): from the runtime error's class when there is one, otherwise from the
    /// exit code.
    pub fn wire_code(&self) -> &'static str {
        use crate::server::errors::Code;
        match self.error.downcast_ref::<cairn_runtime::Error>() {
            Some(e) => Code::from(e.class()).as_str(),
            None if self.code == 2 => Code::BadUserInput.as_str(),
            None => Code::Internal.as_str(),
        }
    }
}

/// Bad usage or input: exit 2.
pub fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: e.into(),
    }
}

/// The store or the runtime failed: exit 4.
pub fn infra(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 4,
        error: e.into(),
    }
}

/// A runtime error with the exit code of its class: the caller's fault (not found, bad input,
/// conflict) is 2, anything else 4. The error is kept as the source.
pub fn runtime(e: cairn_runtime::Error) -> Failure {
    match e.class() {
        ErrorClass::NotFound | ErrorClass::BadInput | ErrorClass::Conflict => usage(e),
        _ => infra(e),
    }
}

/// A store URL fit for messages: `postgres://user:password@host/db` becomes
/// `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}
