//! Integration tests of the runtime, one binary: the store-conformance suite (`store`), the
//! embedding API end to end (`engine`) and snapshots of long runs (`snapshots`), each against
//! SQLite and PostgreSQL; the plans of the PostgreSQL store's hot queries (`explain`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;
mod engine;
mod explain;
mod lease_review;
mod leases;
mod snapshots;
mod store;
