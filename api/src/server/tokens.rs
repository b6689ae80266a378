//! API tokens: `cairn token create|list|revoke` on the store directly (whoever can reach the
//! store is already trusted with everything in it), and the admin-only `apiTokens`,
//! `createApiToken` and `revokeApiToken` fields of the schema.

use std::io::Write as _;

use cairn_runtime::store::{self as event_store, StoreError};
use serde_json::json;

use async_graphql::{Context, Object, SimpleObject};

use super::auth::{self, Permission, Require, Role};
use super::errors::{self, Code};
use super::{fail, redact, ServeFailure};

pub mod store;

pub use self::store::{StoredToken, TokenStore};

/// The subcommands of `cairn token`.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum TokenCommand {
    /// Create a token and print it on stdout; it is shown this once, only its hash is stored
    Create {
        /// What the token may do: admin (everything), editor (deploy definitions, read),
        /// operator (start, signal, cancel, retry, suspend, resume runs, read), viewer (read)
        #[arg(long, value_enum)]
        role: Role,
        /// A label to recognise the token by in `cairn token list`
        #[arg(long, default_value = "")]
        name: String,
        /// Event store: sqlite://PATH or postgres://...
        #[arg(long, env = "CAIRN_STORE", default_value = super::DEFAULT_STORE)]
        store: String,
    },
    /// List tokens (ids, roles, names, when created and revoked; never secrets)
    List {
        /// Event store: sqlite://PATH or postgres://...
        #[arg(long, env = "CAIRN_STORE", default_value = super::DEFAULT_STORE)]
        store: String,
        /// Print JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: requests with it are refused from now on
    Revoke {
        /// Token id (`tok_...`, from `cairn token list`)
        id: String,
        /// Event store: sqlite://PATH or postgres://...
        #[arg(long, env = "CAIRN_STORE", default_value = super::DEFAULT_STORE)]
        store: String,
    },
}

fn open_failed(url: &str, e: StoreError) -> ServeFailure {
    match e {
        StoreError::InvalidUrl { .. } => fail(2, e),
        other => fail(4, anyhow::anyhow!("store {}: {other}", redact(url))),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn line(t: &StoredToken) -> serde_json::Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "createdAt": cairn_core::time::iso8601(t.created_at),
        "revokedAt": t.revoked_at.map(cairn_core::time::iso8601),
    })
}

/// Runs `cairn token ...`.
pub async fn run(cmd: TokenCommand) -> Result<u8, ServeFailure> {
    match cmd {
        TokenCommand::Create { role, name, store } => {
            let s = event_store::open(&store)
                .await
                .map_err(|e| open_failed(&store, e))?;
            let (secret, row) = auth::new_token(role, &name, now_ms());
            s.put_token(&row)
                .await
                .map_err(|e| open_failed(&store, e))?;
            eprintln!(
                "created token {} (role {}); it is shown once, keep it secret",
                row.id,
                role.as_str()
            );
            println!("{secret}");
            Ok(0)
        }
        TokenCommand::List { store, json } => {
            let s = event_store::open(&store)
                .await
                .map_err(|e| open_failed(&store, e))?;
            let all = s.list_tokens().await.map_err(|e| open_failed(&store, e))?;
            let mut out = std::io::stdout().lock();
            for t in &all {
                if json {
                    let _ = writeln!(out, "{}", line(t));
                } else {
                    let revoked = t
                        .revoked_at
                        .map(|r| format!("  revoked {}", cairn_core::time::iso8601(r)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{}  {:<8} {}  {}{revoked}",
                        t.id,
                        t.role,
                        cairn_core::time::iso8601(t.created_at),
                        t.name,
                    );
                }
            }
            Ok(0)
        }
        TokenCommand::Revoke { id, store } => {
            let s = event_store::open(&store)
                .await
                .map_err(|e| open_failed(&store, e))?;
            match s
                .revoke_token(&id, now_ms())
                .await
                .map_err(|e| open_failed(&store, e))?
            {
                Some(t) => {
                    eprintln!("revoked token {} (role {})", t.id, t.role);
                    Ok(0)
                }
                None => Err(fail(2, anyhow::anyhow!("no token with id `{id}`"))),
            }
        }
    }
}

// ----- GraphQL --------------------------------------------------------------------------------

/// An API token (never its secret).
#[derive(SimpleObject)]
pub struct ApiToken {
    /// Public id (`tok_...`).
    pub id: String,
    /// Label.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was created (ISO 8601).
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

impl ApiToken {
    fn from_row(t: StoredToken) -> async_graphql::Result<ApiToken> {
        let role = Role::parse(&t.role).ok_or_else(|| {
            errors::internal("tokens", format!("token {} has no known role", t.id))
        })?;
        Ok(ApiToken {
            id: t.id,
            name: t.name,
            role,
            created_at: cairn_core::time::iso8601(t.created_at),
            revoked_at: t.revoked_at.map(cairn_core::time::iso8601),
        })
    }
}

/// A token just created: `secret` is shown this once.
#[derive(SimpleObject)]
pub struct CreatedApiToken {
    /// The token.
    pub token: ApiToken,
    /// The secret to send as `Authorization: Bearer <secret>`; only its hash is kept.
    pub secret: String,
}

/// Token queries (admin only).
#[derive(Default)]
pub struct TokenQueries;

#[Object]
impl TokenQueries {
    /// Every API token, revoked ones included, oldest first (admin only).
    #[graphql(guard = "Require(Permission::Admin)")]
    async fn api_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiToken>> {
        let rows = super::schema::app::app(ctx)?
            .store
            .list_tokens()
            .await
            .map_err(|e| errors::store("list tokens", e))?;
        rows.into_iter().map(ApiToken::from_row).collect()
    }
}

/// Token mutations (admin only).
#[derive(Default)]
pub struct TokenMutations;

#[Object]
impl TokenMutations {
    /// Creates an API token (admin only); its secret is in the answer and nowhere else.
    #[graphql(guard = "Require(Permission::Admin)")]
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        role: Role,
        #[graphql(default)] name: String,
    ) -> async_graphql::Result<CreatedApiToken> {
        let (secret, row) = auth::new_token(role, &name, now_ms());
        super::schema::app::app(ctx)?
            .store
            .put_token(&row)
            .await
            .map_err(|e| errors::store("create token", e))?;
        Ok(CreatedApiToken {
            token: ApiToken::from_row(row)?,
            secret,
        })
    }

    /// Revokes an API token (admin only): requests with it are refused from now on.
    #[graphql(guard = "Require(Permission::Admin)")]
    async fn revoke_api_token(
        &self,
        ctx: &Context<'_>,
        id: String,
    ) -> async_graphql::Result<ApiToken> {
        let row = super::schema::app::app(ctx)?
            .store
            .revoke_token(&id, now_ms())
            .await
            .map_err(|e| errors::store("revoke token", e))?
            .ok_or_else(|| errors::error(Code::NotFound, format!("no token with id `{id}`")))?;
        ApiToken::from_row(row)
    }
}
