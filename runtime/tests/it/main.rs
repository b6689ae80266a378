//! Integration tests of the runtime, one binary: the store-conformance suite (`store`), the
//! embedding API end to end (`engine`) and snapshots of long runs (`snapshots`), each against
//! SQLite and PostgreSQL; the plans of the PostgreSQL store's hot queries (`explain`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

/// Generates `sqlite::NAME` and `postgres::NAME` tests calling `async fn NAME(TestStore)` in the
/// invoking module: every such test runs on both stores (PostgreSQL in a database of its own,
/// skipped loudly when unreachable, failing under `CI=true`).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::common::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(store) = crate::common::postgres().await else { return };
                    super::$name(store).await;
                }
            )*
        }
    };
}

mod common;
mod engine;
mod explain;
mod lease_review;
mod leases;
mod migrations;
mod snapshots;
mod store;
