//! Settings shared by several commands, and the server's: [`ServerOptions`] is both the flags
//! of `cairn serve` (clap) and the keys of its `--config` file (serde), from one declaration.
//!
//! `cairn worker` and `cairn run` take [`LeaseArg`] and [`OutboundArg`] as flags of their own;
//! the server takes the same settings flat in [`ServerOptions`], because its settings file
//! names them as top-level keys.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use cairn_connectors::{AllowList, HttpOptions};
use serde::Deserialize;

/// The store of every command that takes `--store`, unless told otherwise: one SQLite file in
/// `./.cairn/`.
pub const DEFAULT_STORE: &str = "sqlite://.cairn/cairn.db";

/// Deepest query selection a server accepts unless told otherwise (`--max-query-depth`): deep
/// enough for every real query of the schema, shallow enough to stop pathological nesting.
pub const MAX_QUERY_DEPTH: usize = 16;
/// Largest query complexity a server accepts unless told otherwise (`--max-query-complexity`;
/// async-graphql's default cost of 1 per field).
pub const MAX_QUERY_COMPLEXITY: usize = 2_000;

/// Settings no server can run with; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOptions(pub String);

/// The budget of every expression evaluation in this process (see docs/security.md). One
/// setting for every command, since a run's expressions must fault or not whichever process
/// evaluates them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ExprArg {
    /// Most steps of the jq interpreter one expression evaluation may take before its task
    /// faults [default: 10000000]
    #[arg(
        long = "expr-max-steps",
        env = "CAIRN_EXPR_MAX_STEPS",
        value_name = "N",
        global = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub expr_max_steps: Option<u64>,
    /// Most memory one expression evaluation may allocate before its task faults: bytes, or a
    /// number with KiB, MiB or GiB [default: 256MiB]
    #[arg(
        long = "expr-max-memory",
        env = "CAIRN_EXPR_MAX_MEMORY",
        value_name = "SIZE",
        global = true,
        value_parser = parse_memory
    )]
    pub expr_max_memory: Option<u64>,
}

impl ExprArg {
    /// The limits these settings give, defaults where unset.
    pub fn limits(&self) -> cairn_core::budget::Limits {
        let d = cairn_core::budget::Limits::default();
        cairn_core::budget::Limits {
            max_steps: self.expr_max_steps.unwrap_or(d.max_steps),
            max_memory: self.expr_max_memory.unwrap_or(d.max_memory),
        }
    }
}

fn parse_memory(s: &str) -> Result<u64, String> {
    match cairn_core::budget::parse_size(s)? {
        0 => Err("the memory budget must be more than 0 bytes".to_string()),
        n => Ok(n),
    }
}

/// How a worker identifies itself and how long its lease lasts (see docs/operations.md).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LeaseArg {
    /// The name this worker registers under (default: host, pid and a random part). Restarting
    /// a worker under the same name takes its runs back at once; two live workers must never
    /// share a name
    #[arg(long = "worker-name", env = "CAIRN_WORKER_NAME", value_name = "NAME")]
    pub worker_name: Option<String>,
    /// How long a worker's lease lasts without renewal, in ms: how soon others take over the
    /// runs of a worker that died or stalls [default: 10000]
    #[arg(long = "lease-ttl-ms", env = "CAIRN_LEASE_TTL_MS", value_name = "MS")]
    pub lease_ttl_ms: Option<u64>,
    /// How many claims of one run in a row may end with their worker dead (crashed, killed,
    /// lease lost) before nothing was recorded; the next claim faults the run ("Poison run")
    /// instead of running it again, so one bad run cannot take down every worker in turn
    /// [default: 5]
    #[arg(long = "max-crashes", env = "CAIRN_MAX_CRASHES", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_crashes: Option<u32>,
}

impl LeaseArg {
    /// Applies the settings to a runtime builder.
    pub fn apply(&self, mut b: cairn_runtime::RuntimeBuilder) -> cairn_runtime::RuntimeBuilder {
        if let Some(n) = &self.worker_name {
            b = b.worker_name(n.clone());
        }
        if let Some(ms) = self.lease_ttl_ms {
            b = b.lease_ttl(std::time::Duration::from_millis(ms));
        }
        if let Some(n) = self.max_crashes {
            b = b.max_crashes(n);
        }
        b
    }
}

/// What `call: http` and `call: openapi` may reach: one setting for `cairn serve`, `cairn
/// worker` and `cairn run`, whose defaults differ (see docs/security/ssrf.md).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OutboundArg {
    /// Addresses outbound calls may reach besides public ones: comma-separated IPs, CIDRs
    /// (10.1.0.0/16), host names (api.internal, *.svc.local), `none` (public only) or `all` (no
    /// guard). The guard denies loopback, private, link-local, cloud metadata and other special
    /// addresses, after DNS and on every redirect. Default: `none` for `cairn serve` and its
    /// workers; `all` for `cairn run` and `cairn worker`, which are local tools
    #[arg(
        long = "allow-outbound",
        env = "CAIRN_ALLOW_OUTBOUND",
        value_name = "LIST",
        value_parser = parse_allow_list
    )]
    pub allow_outbound: Option<AllowList>,
}

impl OutboundArg {
    /// The options of the HTTP connector, with `default` unless the setting was given.
    pub fn http_options(&self, default: AllowList) -> HttpOptions {
        HttpOptions {
            allow_outbound: self.allow_outbound.clone().unwrap_or(default),
            ..HttpOptions::default()
        }
    }
}

fn parse_allow_list(s: &str) -> Result<AllowList, String> {
    s.parse()
        .map_err(|e: cairn_connectors::guard::AllowListError| e.to_string())
}

/// Everything a [`Server`](crate::server::Server) is built from: the flags of `cairn serve`
/// (each also read from a `CAIRN_*` environment variable) and, field for field, the keys of
/// its settings file (`--config`, keys as the long flags in snake_case).
///
/// [`Default`] gives what `cairn serve` gives without flags, variables or file.
#[derive(clap::Args, Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct ServerOptions {
    /// A YAML (or JSON) file of settings, keys as the long flags in snake_case (`no_workers: true`);
    /// flags and CAIRN_* variables override it
    #[arg(long, env = "CAIRN_CONFIG", value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Event store: sqlite://PATH or postgres://... (default: sqlite://.cairn/cairn.db, or $CAIRN_STORE)
    #[arg(long, env = "CAIRN_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// Address to listen on; port 0 picks a free port (the address is printed on stderr)
    #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve the API only: execute no runs here (run `cairn worker` processes on the same store)
    #[arg(long)]
    pub no_workers: bool,
    /// The name this worker registers under (default: host, pid and a random part). Restarting
    /// a worker under the same name takes its runs back at once; two live workers must never
    /// share a name
    #[arg(long = "worker-name", env = "CAIRN_WORKER_NAME", value_name = "NAME")]
    pub worker_name: Option<String>,
    /// How long a worker's lease lasts without renewal, in ms: how soon others take over the
    /// runs of a worker that died or stalls [default: 10000]
    #[arg(long = "lease-ttl-ms", env = "CAIRN_LEASE_TTL_MS", value_name = "MS")]
    pub lease_ttl_ms: Option<u64>,
    /// How many claims of one run in a row may end with their worker dead (crashed, killed,
    /// lease lost) before nothing was recorded; the next claim faults the run ("Poison run")
    /// instead of running it again, so one bad run cannot take down every worker in turn
    /// [default: 5]
    #[arg(long = "max-crashes", env = "CAIRN_MAX_CRASHES", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    // At least 1 in the file too: 0 would fault every run a worker claims.
    #[serde(deserialize_with = "nonzero")]
    pub max_crashes: Option<u32>,
    /// Addresses outbound calls may reach besides public ones: comma-separated IPs, CIDRs
    /// (10.1.0.0/16), host names (api.internal, *.svc.local), `none` (public only) or `all` (no
    /// guard). The guard denies loopback, private, link-local, cloud metadata and other special
    /// addresses, after DNS and on every redirect. Default: `none` for `cairn serve` and its
    /// workers; `all` for `cairn run` and `cairn worker`, which are local tools
    #[arg(
        long = "allow-outbound",
        env = "CAIRN_ALLOW_OUTBOUND",
        value_name = "LIST",
        value_parser = parse_allow_list
    )]
    pub allow_outbound: Option<AllowList>,
    /// A YAML or JSON file of secrets (name: value) for $secrets and secret-based authentication
    #[arg(long, env = "CAIRN_SECRETS_FILE")]
    pub secrets: Option<PathBuf>,
    /// Seconds allowed to in-flight requests and tasks when stopping
    #[arg(long, env = "CAIRN_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// LOCAL DEVELOPMENT ONLY: accept requests without a token, each as an admin
    #[arg(long, env = "CAIRN_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Deepest query selection accepted
    #[arg(long, env = "CAIRN_MAX_QUERY_DEPTH", default_value_t = MAX_QUERY_DEPTH)]
    pub max_query_depth: usize,
    /// Largest query complexity accepted (1 per field, connections count their page)
    #[arg(long, env = "CAIRN_MAX_QUERY_COMPLEXITY", default_value_t = MAX_QUERY_COMPLEXITY)]
    pub max_query_complexity: usize,
    /// Largest request body in bytes (larger: 413)
    #[arg(long, env = "CAIRN_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Requests per second allowed to each token, on average (0: no limit; over: 429)
    #[arg(long, env = "CAIRN_RATE_LIMIT", default_value_t = 50.0)]
    pub rate_limit: f64,
    /// Requests a token may send at once above its rate
    #[arg(long, env = "CAIRN_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// Milliseconds a request may take, reading its body included (longer: 408)
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Refuse introspection (`__schema`, `__type`)
    #[arg(long, env = "CAIRN_NO_INTROSPECTION")]
    pub no_introspection: bool,
    /// Open connections at most, WebSockets included (over it: refused at once with 503)
    #[arg(long, env = "CAIRN_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers, from when it connects or got its
    /// previous answer: slow senders and idle keep-alive connections are closed
    #[arg(long, env = "CAIRN_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Milliseconds a WebSocket has to send `connection_init` (later: closed with 4408)
    #[arg(long, env = "CAIRN_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,
    /// Live subscriptions one WebSocket may hold (more: LIMIT_EXCEEDED)
    #[arg(
        long,
        env = "CAIRN_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_subscriptions_per_connection: usize,
    /// Live subscriptions one token may hold across its WebSockets (more: LIMIT_EXCEEDED)
    #[arg(
        long,
        env = "CAIRN_MAX_SUBSCRIPTIONS_PER_TOKEN",
        default_value_t = 1_000
    )]
    pub max_subscriptions_per_token: usize,
    /// The expression step budget, from the settings file only: on the command line it is the
    /// global `--expr-max-steps` ([`ExprArg`]), a setting of the whole process, not of a server.
    #[arg(skip)]
    pub expr_max_steps: Option<u64>,
    /// The expression memory budget (bytes, or a size with a unit as a string: `256MiB`), from
    /// the settings file only, as `expr_max_steps`.
    #[arg(skip)]
    #[serde(deserialize_with = "size")]
    pub expr_max_memory: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            config: None,
            store: DEFAULT_STORE.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            no_workers: false,
            worker_name: None,
            lease_ttl_ms: None,
            max_crashes: None,
            allow_outbound: None,
            secrets: None,
            drain_timeout: 30,
            insecure_no_auth: false,
            max_query_depth: MAX_QUERY_DEPTH,
            max_query_complexity: MAX_QUERY_COMPLEXITY,
            max_body_bytes: 2 * 1024 * 1024,
            rate_limit: 50.0,
            rate_limit_burst: 100,
            request_timeout_ms: 30_000,
            no_introspection: false,
            max_connections: 1024,
            header_timeout_ms: 10_000,
            ws_init_timeout_ms: 10_000,
            max_subscriptions_per_connection: 100,
            max_subscriptions_per_token: 1_000,
            expr_max_steps: None,
            expr_max_memory: None,
        }
    }
}

impl ServerOptions {
    /// The in-process worker's name, lease and crash limit.
    pub fn lease(&self) -> LeaseArg {
        LeaseArg {
            worker_name: self.worker_name.clone(),
            lease_ttl_ms: self.lease_ttl_ms,
            max_crashes: self.max_crashes,
        }
    }

    /// What the in-process workers' calls may reach (public addresses only unless set).
    pub fn outbound(&self) -> OutboundArg {
        OutboundArg {
            allow_outbound: self.allow_outbound.clone(),
        }
    }

    /// Refuses settings no server can run with, naming the flag.
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        if !(self.rate_limit.is_finite() && self.rate_limit >= 0.0) {
            return Err(InvalidOptions(
                "--rate-limit must be a number of requests per second, 0 or more".into(),
            ));
        }
        for (flag, value) in [
            ("--request-timeout-ms", self.request_timeout_ms),
            ("--header-timeout-ms", self.header_timeout_ms),
            ("--ws-init-timeout-ms", self.ws_init_timeout_ms),
            ("--max-connections", self.max_connections as u64),
            (
                "--max-subscriptions-per-connection",
                self.max_subscriptions_per_connection as u64,
            ),
            (
                "--max-subscriptions-per-token",
                self.max_subscriptions_per_token as u64,
            ),
        ] {
            if value == 0 {
                return Err(InvalidOptions(format!("{flag} must be above 0")));
            }
        }
        Ok(())
    }
}

/// `max_crashes` of the file: a `NonZeroU32`, so that `0` is refused with its line.
fn nonzero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(Option::<NonZeroU32>::deserialize(d)?.map(NonZeroU32::get))
}

/// A size given as a number of bytes or as a string with a unit (`64MiB`).
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => cairn_core::budget::parse_size(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServerOptions,
    }

    /// A server built in code without settings is the server `cairn serve` runs without any.
    #[test]
    fn default_is_what_no_flag_gives() {
        let matches = Cli::command()
            .try_get_matches_from(["cairn"])
            .expect("no flags");
        let parsed = Cli::from_arg_matches(&matches).expect("no flags").serve;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", ServerOptions::default())
        );
        let from_file: ServerOptions = serde_norway::from_str("{}").expect("an empty mapping");
        assert_eq!(
            format!("{from_file:?}"),
            format!("{:?}", ServerOptions::default())
        );
    }
}
