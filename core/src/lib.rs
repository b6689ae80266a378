//! # cairn-core
//!
//! The pure heart of Cairn. It does no I/O, never reads the clock and draws no random numbers:
//! everything non-deterministic reaches it through the events and inputs it is given.
//!
//! - [`dsl`]: the Serverless Workflow DSL 1.0.3 model ([`dsl::Workflow`]), loading and validation.
//! - [`expr`]: jq runtime expressions (jaq) with the spec's arguments bound.
//! - [`events`]: the versioned events of a run's stream ([`events::RunEvent`]).
//! - [`definition`]: a definition's own stream (versions published, the head, deprecations),
//!   its fold and its commands.
//! - [`state`]: a run's state as a fold over its events ([`state::RunState`]).
//! - [`decider`]: `(definition, state, inputs) -> next events`, the only place where workflow
//!   semantics live.
//! - [`data_schema`]: JSON Schema checks of data at run time (`input.schema`, `output.schema`).
//! - [`limits`]: what a run accepts from outside (input and event sizes, CloudEvents).
//! - [`names`]: run event type names and run status labels, spelled once.
//! - [`replay`]: a run's recorded history decided again, decision by decision, reporting the
//!   first divergence (determinism checks, the deploy-time check, the CI fixtures).
//! - [`sealed`]: secrets in call arguments, recorded as placeholders and revealed at send time.
//! - [`time`]: points in time as RFC 3339 text and the spec's date-time descriptor.
//! - [`error`]: workflow errors in the DSL's RFC 7807 shape ([`error::WorkflowError`]).

pub mod activity;
pub mod budget;
pub mod data_schema;
pub mod decider;
pub mod definition;
pub mod dsl;
pub mod duration;
pub mod error;
pub mod events;
pub mod expr;
pub mod lifecycle;
pub mod limits;
pub mod names;
pub mod replay;
pub mod schemas;
pub mod sealed;
pub mod state;
pub mod time;
pub mod uri;

pub use error::{ErrorKind, WorkflowError};
pub use events::RunEvent;
