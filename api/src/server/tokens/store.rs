//! The api's access tables: API tokens, kept in the database of the event store but owned here.
//! The runtime knows nothing of tokens; it only answers which database a store is built on
//! ([`cairn_runtime::store::EventLog::database`]), and creates the `tokens` table among its numbered migrations so
//! that a store file has one schema version whoever opened it first.

use cairn_runtime::store::postgres::PostgresStore;
use cairn_runtime::store::sqlite::SqliteStore;
use cairn_runtime::store::{unavailable, Database, EventStore, Result, StoreError};

/// An API token as stored: an id to name it by, a role, and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Public id (`tok_...`), used to list and revoke it; not a credential.
    pub id: String,
    /// A label for people (`ci`, `grafana`); may be empty.
    pub name: String,
    /// `admin`, `editor`, `operator` or `viewer` (the store does not interpret it).
    pub role: String,
    /// Lowercase hex SHA-256 of the secret.
    pub hash: String,
    /// Creation time (ms since epoch).
    pub created_at: i64,
    /// Revocation time (ms since epoch), if revoked.
    pub revoked_at: Option<i64>,
}

/// Where API tokens are kept (not events: a token row is updated once, when it is revoked).
///
/// Native `async fn`s: the api calls it on the concrete stores and on `dyn EventStore`, never
/// through a `dyn TokenStore`, so the futures keep their `Send`-ness without boxing.
pub trait TokenStore: Send + Sync {
    /// Records an API token. Its `hash` must be unique; the secret itself is never stored.
    async fn put_token(&self, token: &StoredToken) -> Result<()>;

    /// The token whose secret hashes to `hash`, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<StoredToken>>;

    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<StoredToken>>;

    /// Marks a token revoked at `at` (ms since epoch); revoking it again keeps the first time.
    /// `Ok(None)` when no token has this id; otherwise the token as it now is.
    async fn revoke_token(&self, id: &str, at: i64) -> Result<Option<StoredToken>>;
}

const TOKEN_COLUMNS: &str = "id, name, role, hash, created_at, revoked_at";

fn token_from_row<R: sqlx::Row>(store: &str, row: &R) -> Result<StoredToken>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("{store} tokens row: {e}"));
    Ok(StoredToken {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        role: row.try_get("role").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
    })
}

/// The same four statements on both built-in stores: `QueryBuilder` writes each dialect's
/// placeholders, so only the pools and the store's name differ.
macro_rules! token_store {
    ($store:ty, $db:ty, $name:literal, $write:ident, $read:ident) => {
        impl TokenStore for $store {
            async fn put_token(&self, t: &StoredToken) -> Result<()> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) "
                ));
                qb.push_values([t], |mut b, t| {
                    b.push_bind(&t.id)
                        .push_bind(&t.name)
                        .push_bind(&t.role)
                        .push_bind(&t.hash)
                        .push_bind(t.created_at)
                        .push_bind(t.revoked_at);
                });
                qb.build()
                    .execute(self.$write())
                    .await
                    .map_err(|e| unavailable($name, "put_token", e))?;
                Ok(())
            }

            async fn token_by_hash(&self, hash: &str) -> Result<Option<StoredToken>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = "
                ));
                qb.push_bind(hash);
                let row = qb
                    .build()
                    .fetch_optional(self.$read())
                    .await
                    .map_err(|e| unavailable($name, "token_by_hash", e))?;
                row.as_ref().map(|r| token_from_row($name, r)).transpose()
            }

            async fn list_tokens(&self) -> Result<Vec<StoredToken>> {
                let rows = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
                ))
                .fetch_all(self.$read())
                .await
                .map_err(|e| unavailable($name, "list_tokens", e))?;
                rows.iter().map(|r| token_from_row($name, r)).collect()
            }

            async fn revoke_token(&self, id: &str, at: i64) -> Result<Option<StoredToken>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ",
                );
                qb.push_bind(at)
                    .push(") WHERE id = ")
                    .push_bind(id)
                    .push(format!(" RETURNING {TOKEN_COLUMNS}"));
                let row = qb
                    .build()
                    .fetch_optional(self.$write())
                    .await
                    .map_err(|e| unavailable($name, "revoke_token", e))?;
                row.as_ref().map(|r| token_from_row($name, r)).transpose()
            }
        }
    };
}

token_store!(SqliteStore, sqlx::Sqlite, "sqlite", write_pool, read_pool);
token_store!(PostgresStore, sqlx::Postgres, "postgres", pool, pool);

/// The tokens of whatever database the store is built on, through any wrappers (group commit,
/// fault injection). A store on no built-in database keeps no tokens: every call fails, so a
/// server on it denies every request instead of admitting any.
impl<'a> TokenStore for dyn EventStore + 'a {
    async fn put_token(&self, token: &StoredToken) -> Result<()> {
        match self.database() {
            Some(Database::Sqlite(s)) => s.put_token(token).await,
            Some(Database::Postgres(s)) => s.put_token(token).await,
            _ => Err(no_tokens()),
        }
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<StoredToken>> {
        match self.database() {
            Some(Database::Sqlite(s)) => s.token_by_hash(hash).await,
            Some(Database::Postgres(s)) => s.token_by_hash(hash).await,
            _ => Err(no_tokens()),
        }
    }

    async fn list_tokens(&self) -> Result<Vec<StoredToken>> {
        match self.database() {
            Some(Database::Sqlite(s)) => s.list_tokens().await,
            Some(Database::Postgres(s)) => s.list_tokens().await,
            _ => Err(no_tokens()),
        }
    }

    async fn revoke_token(&self, id: &str, at: i64) -> Result<Option<StoredToken>> {
        match self.database() {
            Some(Database::Sqlite(s)) => s.revoke_token(id, at).await,
            Some(Database::Postgres(s)) => s.revoke_token(id, at).await,
            _ => Err(no_tokens()),
        }
    }
}

fn no_tokens() -> StoreError {
    StoreError::Unavailable("this store keeps no api tokens".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_runtime::store::group::{GroupCommitOptions, GroupCommitter};
    use cairn_runtime::store::postgres::PostgresStore;
    use cairn_runtime::store::sqlite::SqliteStore;
    use cairn_runtime::store::EventStore;
    use sqlx::Connection as _;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::{StoredToken, TokenStore};

    fn token(id: &str, role: &str, hash: &str, at: i64) -> StoredToken {
        StoredToken {
            id: id.into(),
            name: format!("{id} label"),
            role: role.into(),
            hash: hash.into(),
            created_at: at,
            revoked_at: None,
        }
    }

    async fn tokens(store: Arc<dyn EventStore>) {
        let s = store.as_ref();
        assert_eq!(s.list_tokens().await.expect("list"), vec![]);
        assert_eq!(s.token_by_hash("00").await.expect("lookup"), None);
        let a = token("tok_a", "admin", "aa", 1_000);
        let b = token("tok_b", "viewer", "bb", 2_000);
        s.put_token(&b).await.expect("put b");
        s.put_token(&a).await.expect("put a");
        // A second token with the same hash (or id) is refused: a hash names exactly one token.
        assert!(s
            .put_token(&token("tok_c", "admin", "aa", 3_000))
            .await
            .is_err());
        assert!(s
            .put_token(&token("tok_a", "admin", "cc", 3_000))
            .await
            .is_err());
        assert_eq!(
            s.token_by_hash("aa").await.expect("lookup"),
            Some(a.clone())
        );
        assert_eq!(
            s.list_tokens().await.expect("list"),
            vec![a.clone(), b.clone()],
            "oldest first"
        );

        // Revoking keeps the row (for the audit trail) and the first revocation time.
        let revoked = s.revoke_token("tok_b", 5_000).await.expect("revoke");
        assert_eq!(revoked.as_ref().and_then(|t| t.revoked_at), Some(5_000));
        let again = s.revoke_token("tok_b", 9_000).await.expect("revoke again");
        assert_eq!(again.and_then(|t| t.revoked_at), Some(5_000));
        assert_eq!(
            s.revoke_token("tok_none", 5_000).await.expect("revoke"),
            None
        );
        assert_eq!(
            s.token_by_hash("bb")
                .await
                .expect("lookup")
                .and_then(|t| t.revoked_at),
            Some(5_000)
        );
        assert_eq!(
            s.token_by_hash("aa")
                .await
                .expect("lookup")
                .and_then(|t| t.revoked_at),
            None,
            "revoking one token leaves the others alone"
        );

        // Behind the group committer the runtime wraps stores in, the tokens are still found.
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let gc = GroupCommitter::new(
            store.clone(),
            GroupCommitOptions::default(),
            &tracker,
            shutdown.clone(),
        );
        let gc: Arc<dyn EventStore> = Arc::new(gc);
        assert_eq!(gc.list_tokens().await.expect("list").len(), 2);
        assert_eq!(gc.token_by_hash("aa").await.expect("lookup"), Some(a));
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn tokens_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cairn.db");
        let store = SqliteStore::open(&path.to_string_lossy())
            .await
            .expect("open");
        tokens(Arc::new(store)).await;
    }

    /// On the shared server of the runtime's store tests (`CAIRN_TEST_POSTGRES_URL`), in a
    /// database of its own; skipped loudly when the server cannot be reached.
    #[tokio::test]
    async fn tokens_on_postgres() {
        let admin_url = std::env::var("CAIRN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("CI").map_or(true, |v| v != "true"),
                    "no PostgreSQL for the token tests: {e}"
                );
                eprintln!("SKIPPED tokens_on_postgres: {e}");
                return;
            }
        };
        let db = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE \"{db}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{db}"),
            None => panic!("CAIRN_TEST_POSTGRES_URL names no database"),
        };
        let store = PostgresStore::connect(&url).await.expect("connect");
        tokens(Arc::new(store.clone())).await;
        store.close().await;
        sqlx::raw_sql(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop test database");
    }
}
