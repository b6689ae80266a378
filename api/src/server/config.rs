//! `--config FILE` (`CAIRN_CONFIG`): settings of `cairn serve` and `cairn worker` from a YAML
//! (or JSON) file whose keys are the long flag names in snake_case (`no_workers`,
//! `rate_limit`, ...).
//!
//! Precedence: flag > environment > file > default. The file is parsed into a
//! [`ServerOptions`] (the same declaration as the flags; unknown keys refused), and a key the
//! file sets replaces an argument only when clap says that argument took its default
//! ([`ArgMatches::value_source`]), so a value given on the command line or in a `CAIRN_*`
//! variable always wins, whatever its value.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::options::{ExprArg, LeaseArg, OutboundArg, ServerOptions};

/// A failure to read or parse a settings file; its text names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("`{0}: 0` would fault every expression; give a positive number")]
    ZeroBudget(&'static str),
}

/// The settings file: its values, and which keys it set (a key it leaves out must not replace
/// an argument's default, even with an equal value, so that precedence never depends on the
/// defaults agreeing). `cairn worker` reads the same file and uses `store`, `secrets`,
/// `worker_name`, `lease_ttl_ms`, `max_crashes`, `allow_outbound`, `expr_max_steps` and
/// `expr_max_memory` only.
#[derive(Debug, Default)]
pub(crate) struct ConfigFile {
    pub(crate) options: ServerOptions,
    keys: BTreeSet<String>,
}

impl ConfigFile {
    /// Reads and parses `path`. Errors name the file and, when the text is at fault, the
    /// line and column (an unknown key is named with the keys allowed).
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses the text of a settings file; an empty file (or only comments) sets nothing.
    pub(crate) fn parse(text: &str) -> Result<Self, serde_norway::Error> {
        // Typed first, so that every error about the text carries its line and column.
        let options: Option<ServerOptions> = serde_norway::from_str(text)?;
        let Some(options) = options else {
            return Ok(ConfigFile::default());
        };
        let keys: Option<std::collections::BTreeMap<String, serde_norway::Value>> =
            serde_norway::from_str(text)?;
        Ok(ConfigFile {
            options,
            keys: keys.unwrap_or_default().into_keys().collect(),
        })
    }

    /// Whether the file sets `key` (to something other than null, as an absent key).
    fn sets(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

/// Whether the argument `id` took its default (was given neither as a flag nor through its
/// environment variable), so that a file value may replace it.
fn defaulted(matches: &ArgMatches, id: &str) -> bool {
    !matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills every argument of `args` left at its default with the file's value.
pub(crate) fn apply_to_serve(args: &mut ServerOptions, matches: &ArgMatches, file: ConfigFile) {
    macro_rules! fill {
        ($($field:ident),* $(,)?) => {
            $(
                if file.sets(stringify!($field)) && defaulted(matches, stringify!($field)) {
                    args.$field = file.options.$field.clone();
                }
            )*
        };
    }
    fill!(
        store,
        listen,
        no_workers,
        worker_name,
        lease_ttl_ms,
        max_crashes,
        allow_outbound,
        secrets,
        drain_timeout,
        insecure_no_auth,
        max_query_depth,
        max_query_complexity,
        max_body_bytes,
        rate_limit,
        rate_limit_burst,
        request_timeout_ms,
        no_introspection,
        max_connections,
        header_timeout_ms,
        ws_init_timeout_ms,
        max_subscriptions_per_connection,
        max_subscriptions_per_token,
    );
}

/// The expression budget, for `cairn serve` and `cairn worker` alike.
/// A budget of 0 would fault every expression, so the file may not set one.
pub(crate) fn apply_expr(
    expr: &mut ExprArg,
    matches: &ArgMatches,
    file: &ConfigFile,
) -> Result<(), ConfigError> {
    let o = &file.options;
    for (key, value) in [
        ("expr_max_steps", o.expr_max_steps),
        ("expr_max_memory", o.expr_max_memory),
    ] {
        if value == Some(0) {
            return Err(ConfigError::ZeroBudget(key));
        }
    }
    if o.expr_max_steps.is_some() && defaulted(matches, "expr_max_steps") {
        expr.expr_max_steps = o.expr_max_steps;
    }
    if o.expr_max_memory.is_some() && defaulted(matches, "expr_max_memory") {
        expr.expr_max_memory = o.expr_max_memory;
    }
    Ok(())
}

/// The settings `cairn worker` takes from the file: its store, secrets file, name, lease and
/// what its calls may reach.
pub(crate) fn apply_to_worker(
    store: &mut String,
    secrets: &mut Option<PathBuf>,
    lease: &mut LeaseArg,
    outbound: &mut OutboundArg,
    matches: &ArgMatches,
    file: ConfigFile,
) {
    let o = &file.options;
    if o.worker_name.is_some() && defaulted(matches, "worker_name") {
        lease.worker_name = o.worker_name.clone();
    }
    if o.lease_ttl_ms.is_some() && defaulted(matches, "lease_ttl_ms") {
        lease.lease_ttl_ms = o.lease_ttl_ms;
    }
    if o.max_crashes.is_some() && defaulted(matches, "max_crashes") {
        lease.max_crashes = o.max_crashes;
    }
    if o.allow_outbound.is_some() && defaulted(matches, "allow_outbound") {
        outbound.allow_outbound = o.allow_outbound.clone();
    }
    if file.sets("store") && defaulted(matches, "store") {
        *store = o.store.clone();
    }
    if o.secrets.is_some() && defaulted(matches, "secrets") {
        *secrets = o.secrets.clone();
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

    fn resolve(argv: &[&str], file: &str) -> ServerOptions {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("cairn").chain(argv.iter().copied()))
            .expect("valid flags");
        let mut cli = Cli::from_arg_matches(&matches).expect("valid flags");
        apply_to_serve(
            &mut cli.serve,
            &matches,
            ConfigFile::parse(file).expect("a valid file"),
        );
        cli.serve
    }

    #[test]
    fn worker_name_and_lease_come_from_the_file_unless_a_flag_says() {
        let file = "worker_name: api-1\nlease_ttl_ms: 4000\n";
        let a = resolve(&[], file);
        assert_eq!(a.worker_name.as_deref(), Some("api-1"));
        assert_eq!(a.lease_ttl_ms, Some(4000));
        let b = resolve(&["--worker-name", "api-2", "--lease-ttl-ms", "10000"], file);
        assert_eq!(b.worker_name.as_deref(), Some("api-2"));
        assert_eq!(b.lease_ttl_ms, Some(10000), "a flag beats the file");
    }

    #[test]
    fn max_crashes_comes_from_the_file_unless_a_flag_says_and_is_never_zero() {
        assert_eq!(resolve(&[], "max_crashes: 2\n").max_crashes, Some(2));
        let b = resolve(&["--max-crashes", "7"], "max_crashes: 2\n");
        assert_eq!(b.max_crashes, Some(7), "a flag beats the file");
        assert_eq!(resolve(&[], "").max_crashes, None);
        let e = ConfigFile::parse("max_crashes: 0\n")
            .expect_err("zero")
            .to_string();
        assert!(e.contains("max_crashes") && e.contains("nonzero"), "{e}");
    }

    #[test]
    fn allow_outbound_comes_from_the_file_as_a_string_or_a_list_unless_a_flag_says() {
        let a = resolve(&[], "allow_outbound: 127.0.0.1, api.internal\n");
        assert_eq!(
            a.allow_outbound.map(|l| l.to_string()).as_deref(),
            Some("127.0.0.1/32,api.internal")
        );
        let b = resolve(&[], "allow_outbound: [10.0.0.0/8, '*.svc.local']\n");
        assert_eq!(
            b.allow_outbound.map(|l| l.to_string()).as_deref(),
            Some("10.0.0.0/8,*.svc.local")
        );
        let c = resolve(&["--allow-outbound", "none"], "allow_outbound: all\n");
        assert_eq!(
            c.allow_outbound.map(|l| l.to_string()).as_deref(),
            Some("none"),
            "a flag beats the file"
        );
        assert!(resolve(&[], "").allow_outbound.is_none());
        let e = ConfigFile::parse("allow_outbound: 10.0.0.0/99\n")
            .expect_err("a bad CIDR")
            .to_string();
        assert!(e.contains("10.0.0.0/99"), "{e}");
    }

    #[test]
    fn file_fills_defaults_and_flags_win() {
        let file = "store: sqlite://file.db\nlisten: 127.0.0.1:9999\nno_workers: true\n\
                    rate_limit: 7.5\nsecrets: s.yaml\nmax_query_depth: 3\n\
                    max_connections: 5\nws_init_timeout_ms: 700\n";
        let a = resolve(
            &["--listen", "127.0.0.1:1234", "--max-query-depth", "16"],
            file,
        );
        assert_eq!(a.store, "sqlite://file.db");
        assert_eq!(a.listen.port(), 1234, "a flag beats the file");
        assert_eq!(
            a.max_query_depth, 16,
            "a flag equal to the default still beats the file"
        );
        assert!(a.no_workers);
        assert_eq!(a.rate_limit, 7.5);
        assert_eq!(a.secrets, Some(PathBuf::from("s.yaml")));
        assert_eq!((a.max_connections, a.ws_init_timeout_ms), (5, 700));
        assert_eq!(a.header_timeout_ms, 10_000, "not in the file: the default");
        // Not in the file, not given: the default.
        assert_eq!(a.drain_timeout, 30);
    }

    #[test]
    fn empty_file_sets_nothing() {
        let a = resolve(&[], "# nothing\n");
        assert_eq!(a.store, "sqlite://.cairn/cairn.db");
        assert!(!a.no_workers);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = ConfigFile::parse("store: x\nrate_limt: 3\n")
            .expect_err("an unknown key")
            .to_string();
        assert!(e.contains("rate_limt"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn malformed_file_gives_line_and_column() {
        let e = ConfigFile::parse("store: x\nlisten: [1,\n")
            .expect_err("malformed")
            .to_string();
        assert!(e.contains("line"), "{e}");
        assert!(e.contains("column"), "{e}");
        let e = ConfigFile::parse("rate_limit: fast\n")
            .expect_err("a wrong type")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn expression_budgets_take_sizes_with_units() {
        let f = ConfigFile::parse("expr_max_steps: 5000\nexpr_max_memory: 64MiB\n").expect("valid");
        assert_eq!(f.options.expr_max_steps, Some(5000));
        assert_eq!(f.options.expr_max_memory, Some(64 << 20));
        let f = ConfigFile::parse("expr_max_memory: 1024\n").expect("valid");
        assert_eq!(f.options.expr_max_memory, Some(1024));
        let e = ConfigFile::parse("expr_max_memory: 12MB\n")
            .expect_err("an unknown unit")
            .to_string();
        assert!(e.contains("unknown unit `MB`"), "{e}");
    }
}
