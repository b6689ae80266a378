//! Integration tests of the core, one binary: the DSL against the spec's own corpus (`dsl`) and
//! the decider on data-driven fixtures and random workflows (`decider`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod budget;
mod common;
mod decider;
mod dsl;
