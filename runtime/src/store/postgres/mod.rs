//! The PostgreSQL store, for many `cairn worker`/`cairn serve` processes on one database.
//!
//! # Gap-free global positions
//!
//! An identity column hands out values when a row is inserted, not when its transaction commits:
//! with concurrent appenders, transaction A may take position 10, B position 11, B commit first,
//! and a reader that has seen 11 and resumes "after 11" never sees 10. Two known cures:
//!
//! 1. serialise appends: every append transaction first takes a transaction-scoped advisory lock
//!    (`pg_advisory_xact_lock(APPEND_LOCK)`), then draws its positions. Positions are therefore
//!    drawn in lock order, and PostgreSQL makes a commit visible *before* it releases the
//!    transaction's locks, so when B can draw a position, every earlier holder is already visible.
//!    A reader's snapshot that contains B contains everything below B.
//! 2. record `pg_current_xact_id()` per row and let readers only return rows below
//!    `pg_snapshot_xmin(pg_current_snapshot())`. Appends stay parallel, but every reader is held
//!    back by the oldest open transaction in the whole database (any long transaction, even an
//!    unrelated one, stalls every subscriber), reads need an extra filter and index, and the rule
//!    is subtle to keep right on replicas.
//!
//! Cairn uses (1): it is short, provably correct and needs nothing from readers. Its cost is that
//! append transactions on one database run one at a time (about one commit, one WAL flush, per
//! lock hold). That is what [`super::group::GroupCommitter`] is for: it packs up to hundreds of
//! runs' appends into each transaction, so the serial section is paid per batch, not per run.
//! Anything that writes to `events` must take the same lock (see [`APPEND_LOCK`]).
//!
//! Under the lock the stream heads read inside the transaction are authoritative, so a group with
//! a stale `expected_sequence` is answered `Conflict` and left out, with no savepoint; the unique
//! constraint on `(aggregate_type, aggregate_id, sequence)` remains as a backstop.
//!
//! An append is one call of the server-side function `cairn_append` (migration 2), run as its
//! statement's own transaction: lock, heads check, insert, upsert and commit cost one round trip
//! instead of six. The plan is made on the client against assumed heads; the function writes only
//! if the heads it reads under the lock are the assumed ones, else answers the real heads and the
//! client plans again (see `try_append_groups`).

use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::util::redact_url;
use super::{Result, StoreError};

mod definitions;
mod leases;
mod log;
mod migrations;
mod runs;
mod snapshots;

const STORE: &str = "postgres";

/// Key of the transaction-scoped advisory lock every append holds (ASCII `cairn_ev`). Any other
/// writer of the `events` table must take it too, or readers may skip its events.
pub const APPEND_LOCK: i64 = 0x6361_6972_6e5f_6576;

/// Key of the advisory lock that serialises schema migrations of concurrent processes.
const MIGRATE_LOCK: i64 = 0x6361_6972_6e5f_6d67;

/// The channel of work notices (see [`crate::store::Leases::work_notices`]).
const WORK_CHANNEL: &str = "cairn_work";

/// The database's clock in ms since the epoch: worker leases are judged by one clock, the
/// database's, so that workers on machines whose clocks disagree still agree on who is alive.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Options of [`PostgresStore::connect_with`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Upper bound of the pool (default 16).
    pub max_connections: u32,
    /// How long to wait for the first connection and for a pooled one (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Splits Cairn's pool parameters off a PostgreSQL URL (see [`PostgresStore::connect`]).
fn options_from_url(url: &str) -> Result<(String, PostgresOptions)> {
    let mut options = PostgresOptions::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), options));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| StoreError::InvalidUrl {
                    url: redact_url(url),
                    message: format!("{key} must be a positive whole number, not `{value}`"),
                })
        };
        match key {
            "pool_max_connections" => {
                options.max_connections = u32::try_from(number()?).unwrap_or(u32::MAX)
            }
            "pool_connect_timeout_ms" => options.connect_timeout = Duration::from_millis(number()?),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_parameters_come_out_of_the_url() {
        let (url, o) = options_from_url(
            "postgres://u@h/db?sslmode=disable&pool_max_connections=4&pool_connect_timeout_ms=250",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(o.max_connections, 4);
        assert_eq!(o.connect_timeout, Duration::from_millis(250));
        let (url, o) = options_from_url("postgres://u@h/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(o.max_connections, 16);
        let err = options_from_url("postgres://u:secret@h/db?pool_max_connections=lots")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("pool_max_connections must be a positive whole number"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
}

/// The PostgreSQL event store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Work notices from every process on the database (LISTEN `cairn_work`), fed by one
    /// listener connection started on first use.
    notices: tokio::sync::broadcast::Sender<String>,
    listening: Arc<AtomicBool>,
    /// The store's own tasks (the work listener), shared by every clone.
    background: Arc<Background>,
}

/// The tasks a store runs on its own, tied to its lifetime: they stop when the store is closed
/// or its last clone is dropped, instead of holding a pool connection for as long as someone
/// still subscribes to notices.
#[derive(Debug, Default)]
struct Background {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Drop for Background {
    fn drop(&mut self) {
        // The last clone of the store is gone: nobody can close it any more, so its tasks end
        // here (they hold no reference to `Background`, only the token).
        self.stop.cancel();
    }
}

impl PostgresStore {
    /// Connects with default options, except those the URL sets, and applies pending
    /// migrations. Cairn's own URL parameters are taken out before the URL reaches the driver:
    /// `pool_max_connections=N` (the pool's upper bound, default 16) and
    /// `pool_connect_timeout_ms=N`.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let (url, options) = options_from_url(url)?;
        Self::connect_with(&url, options).await
    }

    /// Connects with explicit options and applies pending migrations.
    ///
    /// A malformed URL is [`StoreError::InvalidUrl`]; an unreachable server is
    /// [`StoreError::Unavailable`] saying `cannot connect to postgres at host:port/db: ...`.
    /// Neither message contains the password.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresStore> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: redact_url(url),
            message: redact_url(&e.to_string()),
        })?;
        let target = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or(connect.get_username())
        );
        let cannot = |e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!(
                "cannot connect to postgres at {target}: {}",
                redact_url(&e.to_string())
            ))
        };
        // One direct connection first: the pool would retry a refused connection until its
        // timeout and then report only "timed out", hiding the reason.
        let mut conn = match tokio::time::timeout(
            options.connect_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(cannot(&e)),
            Err(_) => {
                return Err(cannot(&format_args!(
                    "timed out after {:?}",
                    options.connect_timeout
                )))
            }
        };
        migrations::migrate(&mut conn).await?;
        // Closing politely can only fail on a dead connection; it is dropped either way.
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(connect);
        let store = PostgresStore {
            pool,
            notices: tokio::sync::broadcast::channel(4096).0,
            listening: Arc::new(AtomicBool::new(false)),
            background: Arc::default(),
        };
        crate::store::legacy::publish_deployed_rows(&store).await?;
        Ok(store)
    }

    /// The connection pool. For benchmarks that measure the raw insert rate of the same table
    /// shape, and for tools; writers of `events` must take [`APPEND_LOCK`] in their transaction.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stops the store's tasks (the work listener; subscribers of
    /// [`super::Leases::work_notices`] see their channel close once every clone is gone) and
    /// closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.background.stop.cancel();
        self.background.tasks.close();
        self.background.tasks.wait().await;
        self.pool.close().await;
    }
}
