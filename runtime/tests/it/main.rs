//! Integration tests of the runtime, one binary: the store-conformance suite (`store`) and the
//! embedding API end to end (`engine`), each against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;
mod engine;
mod store;
