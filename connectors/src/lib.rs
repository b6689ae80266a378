//! # cairn-connectors
//!
//! The side effects of a workflow. The decider in `cairn-core` resolves a task into a recorded
//! [`ActivityCall`](cairn_core::events::ActivityCall); a connector performs it and returns a JSON
//! value or a [`WorkflowError`](cairn_core::WorkflowError), which the runtime records in turn.
//!
//! - [`HttpConnector`] ([`connector`]): `call: http` and `call: openapi`. Built once from
//!   [`HttpOptions`] and a secret source, it implements
//!   [`ActivityHandler`](cairn_core::activity::ActivityHandler) and routes each call.
//! - [`http`]: sends a recorded request with pooled [`reqwest`] clients and maps the response.
//! - [`openapi`]: fetches (and caches) the OpenAPI 3.x or Swagger 2.0 document, builds the
//!   operation's request and sends it through [`http`]. `http` never imports `openapi`.
//! - [`guard`]: the outbound guard (against server-side request forgery): which addresses calls
//!   may reach, checked after DNS resolution, on every redirect and for IP literals; configured
//!   by [`AllowList`] in [`HttpOptions::allow_outbound`].
//! - [`Error`]: why a connector could not be *built*. Failures of a call are workflow errors,
//!   because a workflow can catch and retry them.
//!
//! Architecture invariants:
//!
//! - Connectors never touch the event store; they take a fully resolved request and return its
//!   result. Everything a retry after a crash needs is in the recorded request, so sending it
//!   again is the same request (plus the same `Idempotency-Key`).
//! - Secret values are resolved here, at send time, and never appear in a result or an error.

pub mod connector;
pub mod guard;
pub mod http;
pub mod openapi;

pub use connector::HttpConnector;
pub use guard::AllowList;
pub use http::{HttpOptions, IDEMPOTENCY_KEY_HEADER};

/// Why a connector could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured user agent is not a valid header value.
    #[error("invalid user agent {0:?}: it must be visible ASCII")]
    InvalidUserAgent(String),
    /// The HTTP client could not be initialised (for instance the TLS backend).
    #[error("cannot build the http client")]
    Client(#[source] reqwest::Error),
}

/// Result of building a connector.
pub type Result<T, E = Error> = std::result::Result<T, E>;
