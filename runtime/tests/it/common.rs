//! Shared helpers of the runtime's integration tests.
//!
//! Store tests get a fresh store each: SQLite in a temporary directory, PostgreSQL in a database
//! `cairn_test_<random>` created for the test and dropped when its [`TestStore`] is dropped (also
//! when the test panics), so parallel and repeated runs never collide.

#![allow(dead_code)]

use std::sync::Arc;

use cairn_runtime::store::postgres::PostgresStore;
use cairn_runtime::store::sqlite::SqliteStore;
use cairn_runtime::store::{AppendRequest, EventStore, NewEvent, RunSummary};
use serde_json::json;
use sqlx::Connection as _;

/// The server the PostgreSQL tests use (its database is only used to create and drop others).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `CAIRN_TEST_POSTGRES_URL` or the default.
pub fn postgres_admin_url() -> String {
    std::env::var("CAIRN_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// What a store test runs against.
pub struct TestStore {
    /// `sqlite` or `postgres`.
    pub kind: &'static str,
    /// The store.
    pub store: Arc<dyn EventStore>,
    /// A URL that opens the same database again (as another process would).
    pub url: String,
    _guard: Guard,
}

impl TestStore {
    /// Another, independent store on the same database (its own connections).
    pub async fn open_again(&self) -> Arc<dyn EventStore> {
        // A second SQLite store is a second process's connection: on a loaded machine its
        // appends can wait on the first one's write lock for longer than the default 5 s. The
        // tests are about what the stores do, not how long a busy machine takes, so they wait
        // as long as needed.
        if let Some(path) = self.url.strip_prefix("sqlite://") {
            return Arc::new(
                SqliteStore::open_with(path, patient())
                    .await
                    .expect("reopen test store"),
            );
        }
        cairn_runtime::store::open(&self.url)
            .await
            .expect("reopen test store")
    }
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, db: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Postgres { admin_url, db } = self {
            let (admin_url, db) = (admin_url.clone(), db.clone());
            // Drop is synchronous and may run inside the test's runtime: do the async work on a
            // thread with its own runtime, and wait for it so the database is gone afterwards.
            let handle = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for dropping the test database");
                rt.block_on(async move {
                    match sqlx::PgConnection::connect(&admin_url).await {
                        Ok(mut conn) => {
                            let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
                            if let Err(e) = sqlx::raw_sql(&sql).execute(&mut conn).await {
                                eprintln!("warning: could not drop test database {db}: {e}");
                            }
                        }
                        Err(e) => eprintln!("warning: could not drop test database {db}: {e}"),
                    }
                });
            });
            let _ = handle.join();
        }
    }
}

/// A fresh SQLite store in a temporary directory.
/// SQLite options for tests: a store waits as long as needed for another's write lock.
fn patient() -> cairn_runtime::store::sqlite::SqliteOptions {
    cairn_runtime::store::sqlite::SqliteOptions {
        busy_timeout: std::time::Duration::from_secs(120),
        ..Default::default()
    }
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/cairn.db");
    let path = path.to_str().expect("utf-8 temp path").to_string();
    let store = SqliteStore::open_with(&path, patient())
        .await
        .expect("open sqlite store");
    TestStore {
        kind: "sqlite",
        store: Arc::new(store),
        url: format!("sqlite://{path}"),
        _guard: Guard::Sqlite(dir),
    }
}

/// A fresh PostgreSQL store in its own database, or `None` (after a loud message) when the
/// server cannot be reached. Under `CI=true` an unreachable server fails the test instead.
pub async fn postgres() -> Option<TestStore> {
    let admin_url = postgres_admin_url();
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) => {
            let msg = format!(
                "SKIPPED postgres store tests: cannot reach {}: {e}; set CAIRN_TEST_POSTGRES_URL",
                redact(&admin_url)
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg} (CI=true: failing instead of skipping)");
            }
            eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
            return None;
        }
    };
    let db = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE DATABASE \"{db}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let guard = Guard::Postgres {
        admin_url: admin_url.clone(),
        db: db.clone(),
    };
    let url = with_database(&admin_url, &db);
    let store = PostgresStore::connect(&url)
        .await
        .expect("connect to the test database");
    Some(TestStore {
        kind: "postgres",
        store: Arc::new(store),
        url,
        _guard: guard,
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// An event with a recognisable payload.
pub fn event(kind: &str, n: u64) -> NewEvent {
    NewEvent {
        event_type: kind.to_string(),
        event_version: "1".to_string(),
        payload: json!({ "n": n, "nested": { "z": 1, "a": [1, 2, 3] } }),
        metadata: json!({ "actor": "test", "recorded_at": 1_700_000_000_000u64 + n }),
    }
}

/// A request appending `count` events to run stream `stream` after `expected`.
pub fn run_request(stream: &str, expected: u64, count: u64) -> AppendRequest {
    AppendRequest {
        aggregate_type: "run".to_string(),
        stream: stream.to_string(),
        expected_sequence: expected,
        events: (0..count)
            .map(|i| event("TaskCompleted", expected + 1 + i))
            .collect(),
        run_summary: None,
        lease: Default::default(),
    }
}

/// A run summary.
pub fn summary(run_id: &str, status: &str, created_at: i64) -> RunSummary {
    RunSummary {
        run_id: run_id.to_string(),
        namespace: "default".to_string(),
        name: "order".to_string(),
        version: "1.0.0".to_string(),
        status: status.to_string(),
        created_at,
        updated_at: created_at,
        next_timer_at: None,
        wake_at: None,
        correlation_id: None,
        parent_run_id: None,
    }
}
