//! The embedded SQLite store: one file, WAL, `synchronous=FULL`.
//!
//! SQLite admits one writer at a time, so the store keeps exactly one writer connection (a pool of
//! one) and a separate pool of read-only connections: in WAL mode readers see the last committed
//! state and never wait for the writer. Every append transaction starts with `BEGIN IMMEDIATE`, so
//! it holds the write lock before it reads stream heads: its checks are authoritative even if
//! another process opens the same file, and positions (an `AUTOINCREMENT` key) are assigned and
//! committed in one order, which is what makes `read_all` gap-free here.
//!
//! Durability is never traded for speed: each commit is fsync'd. Throughput comes from
//! [`super::group::GroupCommitter`], which lets many runs share one commit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::util::{readers_need, unavailable};
use super::{Result, StoreError};

mod definitions;
mod leases;
mod log;
mod migrations;
mod runs;
mod snapshots;

const STORE: &str = "sqlite";

/// Options of [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Read-only connections (default 4).
    pub read_connections: u32,
    /// How long a statement waits for a lock held by another process (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite event store. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
    /// Work notices of this process's appends (see [`super::Leases::work_notices`]).
    notices: tokio::sync::broadcast::Sender<String>,
    /// Opened by [`SqliteStore::open_read_only`]: snapshots (a cache) are not written.
    read_only: bool,
}

impl SqliteStore {
    /// Opens (creating the file and its parent directories if needed) with default options.
    pub async fn open(path: &str) -> Result<SqliteStore> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens with explicit options. Always WAL, `synchronous=FULL`, foreign keys on.
    pub async fn open_with(path: &str, options: SqliteOptions) -> Result<SqliteStore> {
        if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
            return Err(StoreError::InvalidUrl {
                url: format!("sqlite://{path}"),
                message: "expected a file path (in-memory databases are not supported)".into(),
            });
        }
        let path = PathBuf::from(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                unavailable(STORE, &format!("create directory {}", parent.display()), e)
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let write_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Never close the writer for idleness: reopening it would cost a WAL recovery check.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(write_opts)
            .await
            .map_err(|e| unavailable(STORE, &format!("open {}", path.display()), e))?;
        migrations::migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(base.read_only(true))
            .await
            .map_err(|e| unavailable(STORE, &format!("open {} for reading", path.display()), e))?;
        let store = SqliteStore {
            writer,
            reader,
            path,
            notices: tokio::sync::broadcast::channel(4096).0,
            read_only: false,
        };
        crate::store::legacy::publish_deployed_rows(&store).await?;
        Ok(store)
    }

    /// Opens an existing store for reading only, as the read-only commands (`cairn status`,
    /// `history`, `runs`) do: a missing file is [`StoreError::Missing`] and nothing is created,
    /// no migration is written, and every connection is read-only. A file whose schema is older
    /// than this build's is refused (a writing command upgrades it) rather than misread.
    pub async fn open_read_only(path: &str) -> Result<SqliteStore> {
        if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
            return Err(StoreError::InvalidUrl {
                url: format!("sqlite://{path}"),
                message: "expected a file path (in-memory databases are not supported)".into(),
            });
        }
        let path = PathBuf::from(path);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(StoreError::Missing(format!(
                    "{} is not a file, so it holds no SQLite store",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(format!(
                    "there is no SQLite store at {} (nothing has been recorded there; \
                     give --store or CAIRN_STORE)",
                    path.display()
                )))
            }
            Err(e) => return Err(unavailable(STORE, &format!("open {}", path.display()), e)),
        }
        let options = SqliteOptions::default();
        let read_opts = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(options.busy_timeout)
            .create_if_missing(false)
            .read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(read_opts)
            .await
            .map_err(|e| unavailable(STORE, &format!("open {} for reading", path.display()), e))?;
        let latest = readers_need(migrations::MIGRATIONS);
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&reader)
            .await
            .map_err(|_| {
                StoreError::Missing(format!(
                    "{} is not a cairn store (it has no schema version)",
                    path.display()
                ))
            })?;
        if applied.unwrap_or(0) < latest {
            return Err(StoreError::Missing(format!(
                "the store at {} has schema version {}, older than this cairn's {latest}; \
                 a writing command (e.g. `cairn worker`) upgrades it",
                path.display(),
                applied.unwrap_or(0)
            )));
        }
        Ok(SqliteStore {
            // Read-only too: anything that tries to write through this store fails.
            writer: reader.clone(),
            reader,
            path,
            notices: tokio::sync::broadcast::channel(16).0,
            read_only: true,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The single writer connection, as a pool of one. For benchmarks that measure the raw insert
    /// rate of the same table shape; anything that writes through it must use `BEGIN IMMEDIATE`.
    pub fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The read-only pool.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// SQLite's limit on bound parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`: 32766 since
/// 3.32; sqlx 0.8 bundles 3.46). Multi-row statements are chunked to stay within it.
pub(crate) const MAX_BIND_PARAMS: usize = 32_766;

/// An internal inconsistency of a statement's answer, reported like a database failure.
fn protocol(msg: String) -> sqlx::Error {
    sqlx::Error::Protocol(msg)
}
