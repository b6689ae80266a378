//! Integration tests of the runtime, one binary: the store-conformance suite (`store`), the
//! embedding API end to end (`engine`) and snapshots of long runs (`snapshots`), each against
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;
mod engine;
mod leases;
mod snapshots;
mod store;
