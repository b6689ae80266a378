//! Access: API tokens, roles, the guard every root field carries, and per-token rate limits.
//!
//! A token is `cairn_` followed by 32 random bytes in base64url. The store keeps only its SHA-256
//! (hex): a token has 256 bits of entropy, so a fast unsalted hash cannot be inverted by guessing,
//! and a server-side pepper would add a secret to manage without adding strength. Lookup is by
//! hash, so comparing the presented secret never touches a stored secret byte by byte.
//!
//! Deny by default: a request without a valid token gets `UNAUTHENTICATED` before anything runs
//! (HTTP), or carries no [`Principal`] so that every guarded field refuses it (WebSocket). Only
//! `cairn serve --insecure-no-auth` admits anonymous requests, as an admin.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Context, Guard, ServerError, ServerResult, Variables};
use base64::Engine as _;
use cairn_runtime::store::{EventStore, StoreError};

use super::tokens::store::{StoredToken, TokenStore};
use sha2::{Digest, Sha256};

use super::errors::{error, Code};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, async_graphql::Enum)]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Deploy definitions, and read.
    Editor,
    /// Start, signal, cancel, retry, suspend and resume runs, and read.
    Operator,
    /// Read only.
    Viewer,
}

/// A kind of operation, as guards name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Queries and subscriptions.
    Read,
    /// `deployDefinition`.
    Deploy,
    /// Mutations of runs.
    Operate,
    /// Managing tokens.
    Admin,
}

impl Role {
    /// The lowercase name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "editor" => Some(Role::Editor),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// Whether this role may do `p`.
    pub fn allows(self, p: Permission) -> bool {
        matches!(
            (self, p),
            (Role::Admin, _)
                | (_, Permission::Read)
                | (Role::Editor, Permission::Deploy)
                | (Role::Operator, Permission::Operate)
        )
    }
}

impl Permission {
    fn what(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Deploy => "deploy definitions",
            Permission::Operate => "operate runs",
            Permission::Admin => "manage tokens",
        }
    }
}

/// Who is calling: request (HTTP) or connection (WebSocket) data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token id (`anonymous` under `--insecure-no-auth`).
    pub token_id: String,
    /// The token's name (`anonymous` under `--insecure-no-auth`): what the definitions' streams
    /// record as who deployed, rolled back or deprecated.
    pub token_name: String,
    /// Its role.
    pub role: Role,
}

/// Why a WebSocket connection has no [`Principal`]: its guards answer with this.
#[derive(Debug, Clone)]
pub struct Denied {
    /// `UNAUTHENTICATED` or `RATE_LIMITED`.
    pub code: Code,
    /// The message.
    pub message: String,
}

/// The guard of every root field: the caller's role must allow `permission`.
pub struct Require(pub Permission);

impl Guard for Require {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        require(ctx, self.0)
    }
}

/// What [`Require`] checks, for a resolver whose arguments need more than its field's guard
/// (`startRun(source:)` needs the right to deploy as well).
pub fn require(ctx: &Context<'_>, permission: Permission) -> async_graphql::Result<()> {
    match ctx.data_opt::<Principal>() {
        Some(p) if p.role.allows(permission) => Ok(()),
        Some(p) => Err(error(
            Code::Forbidden,
            format!(
                "forbidden: the {} role may not {}",
                p.role.as_str(),
                permission.what()
            ),
        )),
        None => match ctx.data_opt::<Denied>() {
            Some(d) => Err(error(d.code, d.message.clone())),
            None => Err(error(Code::Unauthenticated, MISSING)),
        },
    }
}

const MISSING: &str = "authentication required: send `Authorization: Bearer <token>`";
const UNKNOWN: &str = "the token is unknown or revoked";

/// A new token: the secret to show once, and the row to store.
pub fn new_token(role: Role, name: &str, now_ms: i64) -> (String, StoredToken) {
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    let mut id = [0u8; 8];
    // `ThreadRng` is a CSPRNG seeded from the operating system.
    let mut rng = rand::rng();
    rng.fill_bytes(&mut secret);
    rng.fill_bytes(&mut id);
    let secret = format!(
        "cairn_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let row = StoredToken {
        id: format!("tok_{}", hex(&id)),
        name: name.to_string(),
        role: role.as_str().to_string(),
        hash: hash(&secret),
        created_at: now_ms,
        revoked_at: None,
    };
    (secret, row)
}

/// Lowercase hex SHA-256 of a token secret.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Refusal {
    /// No token, a malformed header, or an unknown or revoked token.
    Unauthenticated(&'static str),
    /// Over the token's rate; retry after this long.
    RateLimited(Duration),
    /// The token store failed (logged; the client sees `INTERNAL`).
    Store(StoreError),
}

/// Access policy of a server: tokens (or none, when insecure) and the rate limiter.
pub struct Access {
    insecure: bool,
    limiter: Option<Arc<RateLimiter>>,
}

impl Access {
    /// `rate` requests per second per token with bursts of `burst` (`rate` 0: unlimited).
    pub fn new(insecure: bool, rate: f64, burst: u32) -> Access {
        let limiter = (rate > 0.0).then(|| Arc::new(RateLimiter::new(rate, burst.max(1))));
        Access { insecure, limiter }
    }

    /// The per-token rate limiter (none when unlimited or without tokens), which subscribe
    /// messages are charged to as well.
    pub fn limiter(&self) -> Option<Arc<RateLimiter>> {
        if self.insecure {
            None
        } else {
            self.limiter.clone()
        }
    }

    /// Who sends this `Authorization` value (`None`: the header is absent), charging one request
    /// to the token's rate.
    pub async fn authorize(
        &self,
        store: &dyn EventStore,
        authorization: Option<&str>,
    ) -> Result<Principal, Refusal> {
        if self.insecure {
            return Ok(Principal {
                token_id: "anonymous".into(),
                token_name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let value = authorization.ok_or(Refusal::Unauthenticated(MISSING))?;
        let secret = bearer(value).ok_or(Refusal::Unauthenticated(
            "malformed Authorization header: expected `Bearer <token>`",
        ))?;
        let row = store
            .token_by_hash(&hash(secret))
            .await
            .map_err(Refusal::Store)?
            .filter(|t| t.revoked_at.is_none())
            .ok_or(Refusal::Unauthenticated(UNKNOWN))?;
        let role = Role::parse(&row.role).ok_or_else(|| {
            Refusal::Store(StoreError::Corrupt(format!(
                "token {} has an unknown role",
                row.id
            )))
        })?;
        if let Some(l) = &self.limiter {
            l.check(&row.id, Instant::now())
                .map_err(Refusal::RateLimited)?;
        }
        Ok(Principal {
            token_id: row.id,
            token_name: row.name,
            role,
        })
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A token bucket per key: `rate` tokens a second up to `burst`; a request takes one.
///
/// Keys are token ids, so the map is bounded by the tokens that exist (requests without a valid
/// token never reach it). The lock is held for a few arithmetic operations only.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter of `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (level, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *level = (*level + refill).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *level) / self.rate))
        }
    }
}

/// Schema extension that makes deny-by-default structural: a document is not even validated
/// without a [`Principal`] in the request (HTTP) or connection (WebSocket) data, so a field added
/// without a guard is still closed to anonymous callers.
pub struct Authenticated;

impl ExtensionFactory for Authenticated {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Authenticated)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Authenticated {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if ctx.data_opt::<Principal>().is_none() {
            let (code, message) = match ctx.data_opt::<Denied>() {
                Some(d) => (d.code, d.message.clone()),
                None => (Code::Unauthenticated, MISSING.to_string()),
            };
            let mut e = ServerError::new(message, None);
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", code.as_str());
            return Err(e);
        }
        next.run(ctx, query, variables).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_name() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true]),
            (Role::Editor, [true, true, false]),
            (Role::Operator, [true, false, true]),
            (Role::Viewer, [true, false, false]),
        ];
        for (role, allowed) in table {
            for (p, ok) in [Read, Deploy, Operate].into_iter().zip(allowed) {
                assert_eq!(role.allows(p), ok, "{role:?} {p:?}");
            }
            assert_eq!(role.allows(Admin), role == Role::Admin);
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, row) = new_token(Role::Viewer, "ci", 7);
        let (b, _) = new_token(Role::Viewer, "ci", 7);
        assert_ne!(a, b);
        assert!(a.starts_with("cairn_") && a.len() == 6 + 43, "{a}");
        assert_eq!(row.hash, hash(&a));
        assert_eq!(row.hash.len(), 64);
        assert!(!row.hash.contains(&a[6..]) && row.id.starts_with("tok_"));
        assert_eq!((row.role.as_str(), row.created_at), ("viewer", 7));
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let l = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
        }
        let wait = l.check("a", t0).expect_err("over the burst");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(l.check("b", t0).is_ok(), "buckets are per key");
        assert!(l.check("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.check("a", t0 + Duration::from_millis(500)).is_err());
        // Refill stops at the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.check("a", later).is_ok());
        }
        assert!(l.check("a", later).is_err());
    }
}
