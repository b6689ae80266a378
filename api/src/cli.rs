//! The `cairn` command line: argument parsing and the commands.
//!
//! Data goes to stdout, progress and diagnostics to stderr. Exit codes are a contract:
//! 0 success (a run completed), 1 a run faulted (stdout holds the error JSON), 2 bad usage,
//! invalid definition or bad input, 3 a run was cancelled, 4 the store or the runtime failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cairn_connectors::{AllowList, HttpConnector};
use cairn_core::activity::{NoSecrets, Secrets};
use cairn_core::dsl::{self, Workflow};
use cairn_core::lifecycle::LifecycleProjector;
use cairn_runtime::definitions::PublishOptions;

use crate::failure::{infra, redact, runtime as runtime_fail, usage, Failure as Fail};
use cairn_runtime::{RunOutcome, Runtime, WorkerScope};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};

use crate::definitions_cli::Target;
use crate::options::{ExprArg, LeaseArg, OutboundArg, DEFAULT_STORE};

mod inspect;
use crate::secrets::FileSecrets;
use crate::server::shutdown_signal;
use inspect::{history, runs, status};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Durable workflows: Serverless Workflow DSL 1.0 on an event-sourced runtime"
)]
struct Cli {
    #[command(flatten)]
    expr: ExprArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct StoreArg {
    /// Event store: sqlite://PATH or postgres://... (default: sqlite://.cairn/cairn.db, or $CAIRN_STORE)
    #[arg(long, env = "CAIRN_STORE", default_value = DEFAULT_STORE)]
    store: String,
}

#[derive(clap::Args, Clone)]
struct SecretsArg {
    /// A YAML or JSON file of secrets (name: value) for $secrets and secret-based authentication
    #[arg(long, env = "CAIRN_SECRETS_FILE")]
    secrets: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow to the end; stdout: its output (or its error, exit 1)
    Run {
        /// A definition file (YAML or JSON), or a deployed definition NS/NAME[@VERSION] (the
        /// head without @VERSION). An existing file wins; otherwise NS/NAME[@VERSION] with no
        /// .yaml/.yml/.json ending is a reference
        #[arg(value_name = "FILE|NS/NAME[@VERSION]")]
        file: String,
        /// Input: JSON text, or @PATH of a JSON or YAML file; at most 1 MiB of JSON, and it
        /// must match the workflow's `input.schema` (otherwise exit 2, nothing recorded)
        #[arg(long)]
        input: Option<String>,
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        secrets: SecretsArg,
        /// Append the spec's lifecycle CloudEvents to this file as JSON lines
        #[arg(long)]
        events: Option<PathBuf>,
        /// Also deploy these definitions (for `run: workflow` sub-workflows)
        #[arg(long = "with", value_name = "FILE")]
        with: Vec<PathBuf>,
        #[command(flatten)]
        outbound: OutboundArg,
    },
    /// Record a new run and print its id; a worker executes it
    Start {
        /// A definition file (YAML or JSON), or a deployed definition NS/NAME[@VERSION] (the
        /// head without @VERSION). An existing file wins; otherwise NS/NAME[@VERSION] with no
        /// .yaml/.yml/.json ending is a reference
        #[arg(value_name = "FILE|NS/NAME[@VERSION]")]
        file: String,
        /// Input: JSON text, or @PATH of a JSON or YAML file; at most 1 MiB of JSON, and it
        /// must match the workflow's `input.schema` (otherwise exit 2, nothing recorded)
        #[arg(long)]
        input: Option<String>,
        /// Record this correlation id with the run (1 to 256 characters, no control characters),
        /// to find it later with `cairn runs --correlation-id`
        #[arg(long = "correlation-id", value_name = "ID")]
        correlation_id: Option<String>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Publish definitions so that runs and sub-workflows can use them: each version becomes
    /// the head of its definition. A version already published with other content is refused
    /// (exit 2: a version label is immutable); the same content again changes nothing
    Deploy {
        /// Definition files (YAML or JSON)
        files: Vec<PathBuf>,
        /// A note kept with the published version(s) (`cairn definitions history`)
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        store: StoreArg,
        /// The check of each new version against the unfinished runs of its definition
        #[command(flatten)]
        check: crate::replay::CheckArgs,
    },
    /// Deployed definitions: list, history, show, diff, deprecate
    #[command(subcommand)]
    Definitions(crate::definitions_cli::DefinitionsCommand),
    /// Move a definition's head back (or forward) to a published version: new runs that name no
    /// version start on it; runs in flight keep the version they started with
    Rollback(crate::definitions_cli::RollbackArgs),
    /// Replay a run's history against its own definition or another, decision by decision:
    /// exit 0 and `identical`, or exit 1 and the first divergence (reads an existing store)
    Replay(crate::replay::ReplayArgs),
    /// Execute and resume runs until stopped
    Worker {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        secrets: SecretsArg,
        #[command(flatten)]
        lease: LeaseArg,
        #[command(flatten)]
        outbound: OutboundArg,
        /// A YAML (or JSON) settings file, as for `cairn serve`; the worker uses its `store`,
        /// `secrets`, `worker_name`, `lease_ttl_ms`, `max_crashes`, `allow_outbound`,
        /// `expr_max_steps`, `expr_max_memory` (flags and CAIRN_* variables override it)
        #[arg(long, env = "CAIRN_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Exit once no run can move without something from outside: nothing in flight, no
        /// run runnable, and no timer due within --idle-window-ms. Runs waiting for an event
        /// or suspended do not keep the worker up (to drain a queue)
        #[arg(long)]
        exit_when_idle: bool,
        /// With --exit-when-idle: a run whose next timer is due within this many ms keeps the
        /// worker up; a later timer does not (the run stays recorded; any worker fires it)
        #[arg(long = "idle-window-ms", value_name = "MS", default_value_t = 60_000)]
        idle_window_ms: u64,
    },
    /// Status, output or error of a run (reads an existing store: never creates or migrates one)
    Status {
        /// Run id
        run: String,
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The events of a run (reads an existing store: never creates or migrates one)
    History {
        /// Run id
        run: String,
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List runs (reads an existing store: never creates or migrates one)
    Runs {
        /// Only runs with this status (pending, running, waiting, suspended, completed, faulted, cancelled)
        #[arg(long)]
        status: Option<String>,
        /// Only runs started with this correlation id
        #[arg(long = "correlation-id", value_name = "ID")]
        correlation_id: Option<String>,
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// At most this many runs, newest first
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Deliver a CloudEvent to a run that listens
    Signal {
        /// Run id
        run: String,
        /// The event: a CloudEvent 1.0 (`specversion` "1.0", non-empty `id`, `source`, `type`;
        /// at most 256 KiB of JSON), as JSON text or @PATH; anything else is refused (exit 2)
        #[arg(long)]
        event: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Cancel a run
    Cancel {
        /// Run id
        run: String,
        /// Why
        #[arg(long)]
        reason: Option<String>,
        /// Undo what the run's completed tasks did first: run the compensations they declare,
        /// in reverse order of completion (docs/compensation.md)
        #[arg(long)]
        compensate: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Retry a faulted run from the task that failed
    Retry {
        /// Run id
        run: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Suspend a run: nothing new starts until it is resumed
    Suspend {
        /// Run id
        run: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Resume a suspended run
    Resume {
        /// Run id
        run: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Serve the GraphQL API (and execute runs, unless --no-workers) until SIGTERM or Ctrl-C
    Serve(crate::server::ServerOptions),
    /// Manage the API tokens `cairn serve` accepts (create, list, revoke)
    #[command(subcommand)]
    Token(crate::server::TokenCommand),
    /// Rebuild read models (the runs index) from the event log
    #[command(subcommand)]
    Projections(crate::projections::ProjectionsCommand),
    /// Check a definition; exit 0, or print every problem with its location (exit 2). A
    /// `call: NAME` must name a built-in call, a `use.functions` entry, a catalog function or a
    /// function registered with the runtime: `cairn` registers none, so name those of an
    /// embedding application with --function
    Validate {
        /// Definition file (YAML or JSON)
        file: PathBuf,
        /// Print problems as JSON
        #[arg(long)]
        json: bool,
        /// A function the runtime that runs the definition registers (an embedding
        /// application's `call: NAME`); repeat for several
        #[arg(long = "function", value_name = "NAME")]
        functions: Vec<String>,
    },
}

/// Runs `cairn` with the process's arguments; the exit code of the contract above.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs `cairn` with `args` (the first one is the program's name, as in `std::env::args_os`),
/// reading `CAIRN_*` variables as `cairn` does; the exit code of the contract above. For a
/// program that must run exactly what `cairn` runs, such as the benchmarks' worker processes.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (mut cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(e) = apply_config(&mut cli, &matches) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    cairn_core::budget::set_limits(cli.expr.limits());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    let json = wants_json(&cli.command);
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(f) if json => {
            let error =
                json!({ "error": { "code": f.wire_code(), "message": format!("{:#}", f.error) } });
            eprintln!("{error}");
            ExitCode::from(f.code)
        }
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// Whether the command was asked for JSON (`--json`): its errors are JSON too.
fn wants_json(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Status { json: true, .. }
            | Command::History { json: true, .. }
            | Command::Runs { json: true, .. }
            | Command::Validate { json: true, .. }
    ) || match cmd {
        Command::Definitions(c) => c.json(),
        Command::Replay(a) => a.json,
        Command::Deploy { check, .. } => check.json,
        _ => false,
    }
}

/// `--config FILE` of `cairn serve` and `cairn worker`: fills what neither a flag nor a
/// `CAIRN_*` variable gave (precedence: flag > environment > file > default).
fn apply_config(cli: &mut Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    use crate::server::config::{apply_expr, apply_to_serve, apply_to_worker, ConfigFile};
    match &mut cli.command {
        Command::Serve(args) => {
            if let (Some(path), Some(m)) =
                (args.config.clone(), matches.subcommand_matches("serve"))
            {
                let file = ConfigFile::load(&path)?;
                apply_expr(&mut cli.expr, m, &file)?;
                apply_to_serve(args, m, file);
            }
        }
        Command::Worker {
            store,
            secrets,
            lease,
            outbound,
            config: Some(path),
            ..
        } => {
            if let Some(m) = matches.subcommand_matches("worker") {
                let file = ConfigFile::load(path)?;
                apply_expr(&mut cli.expr, m, &file)?;
                apply_to_worker(
                    &mut store.store,
                    &mut secrets.secrets,
                    lease,
                    outbound,
                    m,
                    file,
                );
            }
        }
        _ => {}
    }
    Ok(())
}

async fn dispatch(cmd: Command) -> Result<u8, Fail> {
    match cmd {
        Command::Validate {
            file,
            json,
            functions,
        } => validate(&file, json, functions),
        Command::Serve(args) => crate::server::serve(args).await.map_err(|e| Fail {
            code: e.exit_code(),
            error: e.into(),
        }),
        Command::Token(cmd) => crate::server::token_command(cmd).await,
        Command::Projections(cmd) => crate::projections::run(cmd).await,
        Command::Definitions(cmd) => crate::definitions_cli::run(cmd).await,
        Command::Rollback(args) => crate::definitions_cli::rollback(args).await,
        Command::Replay(args) => crate::replay::replay(args).await,
        Command::Run {
            file,
            input,
            store,
            secrets,
            events,
            with,
            outbound,
        } => {
            run(
                &file,
                input.as_deref(),
                &store.store,
                &secrets,
                events.as_deref(),
                &with,
                &outbound,
            )
            .await
        }
        Command::Start {
            file,
            input,
            correlation_id,
            store,
        } => {
            check_correlation_id(correlation_id.as_deref())?;
            let target = Target::of(&file, load)?;
            let input = read_input(input.as_deref())?;
            target.file().map_or(Ok(()), |d| check_input(d, &input))?;
            let rt = client(&store.store).await?;
            let opts = cairn_runtime::StartOptions {
                correlation_id,
                ..Default::default()
            };
            let id = target
                .start(&rt, input, opts, check_input, runtime_fail)
                .await?;
            rt.shutdown().await;
            println!("{id}");
            Ok(0)
        }
        Command::Deploy {
            files,
            note,
            store,
            check,
        } => {
            let rt = client(&store.store).await?;
            for f in files {
                let def = load(&f)?;
                let name = format!(
                    "{}/{} {}",
                    def.document.namespace, def.document.name, def.document.version
                );
                // The deploy-time check (`crate::replay`), before anything is published.
                let report = crate::replay::check(&rt, &def, &check).await?;
                if crate::replay::refused(report.as_ref(), &check) {
                    rt.shutdown().await;
                    return Ok(1);
                }
                let opts = PublishOptions {
                    by: "cli".into(),
                    note: note.clone(),
                };
                let d = rt.publish(def, opts).await.map_err(runtime_fail)?;
                if d.published {
                    eprintln!("deployed {name} (the head now)");
                } else {
                    eprintln!("{name} is already published with this content: nothing changed");
                }
                crate::replay::after(&rt, report, &check).await?;
            }
            rt.shutdown().await;
            Ok(0)
        }
        Command::Worker {
            store,
            secrets,
            lease,
            outbound,
            exit_when_idle,
            idle_window_ms,
            ..
        } => {
            let rt = worker(&store.store, &secrets, WorkerScope::All, &lease, &outbound).await?;
            eprintln!("worker started on {}", redact(&store.store));
            if exit_when_idle {
                let window = std::time::Duration::from_millis(idle_window_ms);
                tokio::select! {
                    r = rt.wait_quiet(window) => r.map_err(infra)?,
                    _ = shutdown_signal() => {}
                }
            } else {
                shutdown_signal().await;
            }
            eprintln!("worker stopping");
            rt.shutdown().await;
            Ok(0)
        }
        Command::Status { run, store, json } => status(&run, &store.store, json).await,
        Command::History { run, store, json } => history(&run, &store.store, json).await,
        Command::Runs {
            status,
            correlation_id,
            store,
            json,
            limit,
        } => runs(status, correlation_id, &store.store, json, limit).await,
        Command::Signal { run, event, store } => {
            let event = read_json(&event, "--event")?;
            // Here as well as in the runtime, so that a refused event opens no store.
            cairn_core::limits::check_cloud_event(&event)
                .map_err(|e| usage(anyhow::anyhow!("--event: {e}")))?;
            let rt = client(&store.store).await?;
            rt.signal(&run, event).await.map_err(runtime_fail)?;
            rt.shutdown().await;
            eprintln!("event delivered to run {run}");
            Ok(0)
        }
        Command::Retry { run, store } => {
            let rt = client(&store.store).await?;
            rt.retry(&run).await.map_err(runtime_fail)?;
            rt.shutdown().await;
            eprintln!("run {run} retried; a worker continues it");
            Ok(0)
        }
        Command::Suspend { run, store } => {
            let rt = client(&store.store).await?;
            rt.suspend(&run).await.map_err(runtime_fail)?;
            rt.shutdown().await;
            eprintln!("run {run} suspended");
            Ok(0)
        }
        Command::Resume { run, store } => {
            let rt = client(&store.store).await?;
            rt.resume(&run).await.map_err(runtime_fail)?;
            rt.shutdown().await;
            eprintln!("run {run} resumed");
            Ok(0)
        }
        Command::Cancel {
            run,
            reason,
            compensate,
            store,
        } => {
            let rt = client(&store.store).await?;
            rt.cancel_with(&run, reason, compensate)
                .await
                .map_err(runtime_fail)?;
            let compensating =
                compensate && rt.state(&run).await.is_ok_and(|s| s.compensation.is_some());
            rt.shutdown().await;
            if compensating {
                eprintln!("run {run} cancelled; a worker runs its compensations");
            } else if compensate {
                eprintln!("run {run} cancelled (no completed task declares a compensation)");
            } else {
                eprintln!("run {run} cancelled");
            }
            Ok(0)
        }
    }
}

/// Exit 2 unless a given `--correlation-id` is well formed.
fn check_correlation_id(id: Option<&str>) -> Result<(), Fail> {
    match id.map(cairn_core::events::check_correlation_id) {
        Some(Err(m)) => Err(usage(anyhow::anyhow!("--correlation-id: {m}"))),
        _ => Ok(()),
    }
}

/// Reads, parses and validates a definition file; `.json` files are JSON, anything else YAML.
/// The file is read here because core does no I/O; a file that cannot be read is reported as a
/// problem of the definition so both `load` and `validate` print it like any other.
fn load_file(file: &Path, options: &dsl::LoadOptions) -> Result<Workflow, dsl::ValidationErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| dsl::ValidationErrors {
        problems: vec![dsl::Problem {
            pointer: String::new(),
            line: None,
            column: None,
            message: format!("cannot read {}: {e}", file.display()),
        }],
    })?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => dsl::SourceFormat::Json,
        _ => dsl::SourceFormat::Yaml,
    };
    dsl::load_str_with(&text, format, options)
}

fn load(file: &Path) -> Result<Workflow, Fail> {
    load_file(file, &dsl::LoadOptions::default()).map_err(|e| {
        let mut msg = format!("invalid definition {}:", file.display());
        for p in &e.problems {
            msg.push_str(&format!("\n  {p}"));
        }
        usage(anyhow::anyhow!(msg))
    })
}

fn validate(file: &Path, as_json: bool, functions: Vec<String>) -> Result<u8, Fail> {
    match load_file(file, &dsl::LoadOptions::with_functions(functions)) {
        Ok(def) => {
            if as_json {
                println!("{}", json!({ "valid": true, "problems": [] }));
            } else {
                eprintln!(
                    "{}: valid ({}/{} {})",
                    file.display(),
                    def.document.namespace,
                    def.document.name,
                    def.document.version
                );
            }
            Ok(0)
        }
        Err(e) => {
            if as_json {
                println!("{}", json!({ "valid": false, "problems": e.problems }));
            } else {
                for p in &e.problems {
                    println!("{}: {p}", file.display());
                }
            }
            Ok(2)
        }
    }
}

fn read_json(arg: &str, what: &str) -> Result<Value, Fail> {
    if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(anyhow::anyhow!("cannot read {what} file {path}: {e}")))?;
        let v: Value = if path.ends_with(".json") {
            serde_json::from_str(&text)
                .map_err(|e| usage(anyhow::anyhow!("{what} file {path} is not valid JSON: {e}")))?
        } else {
            serde_norway::from_str(&text).map_err(|e| {
                usage(anyhow::anyhow!(
                    "{what} file {path} is not valid YAML or JSON: {e}"
                ))
            })?
        };
        Ok(v)
    } else {
        serde_json::from_str(arg).map_err(|e| {
            usage(anyhow::anyhow!(
                "{what} is not valid JSON ({e}); pass JSON text or @PATH of a file"
            ))
        })
    }
}

fn read_input(arg: Option<&str>) -> Result<Value, Fail> {
    match arg {
        None => Ok(json!({})),
        Some(a) => read_json(a, "--input"),
    }
}

fn secrets_of(arg: &SecretsArg) -> Result<Secrets, Fail> {
    match &arg.secrets {
        Some(p) => Ok(Arc::new(FileSecrets::read(p).map_err(usage)?)),
        None => Ok(Arc::new(NoSecrets)),
    }
}

async fn client(store: &str) -> Result<Runtime, Fail> {
    Runtime::builder()
        .store_url(store)
        .workers(false)
        .group_commit(false)
        .build()
        .await
        .map_err(|e| store_fail(store, e))
}

/// A runtime on an existing store, for the read-only commands: a SQLite file that does not
/// exist is an error (exit 2) and is not created, and nothing is written to one that does.
async fn reader(store: &str) -> Result<Runtime, Fail> {
    let s = cairn_runtime::store::open_read_only(store)
        .await
        .map_err(|e| store_fail(store, e.into()))?;
    Runtime::builder()
        .store(s)
        .workers(false)
        .group_commit(false)
        .build()
        .await
        .map_err(|e| store_fail(store, e))
}

/// Exit 2 unless `input` fits the size limit and the workflow's `input.schema`: a run that
/// would fault on its input at once is not recorded.
fn check_input(def: &Workflow, input: &Value) -> Result<(), Fail> {
    cairn_core::limits::check_input(input).map_err(|e| usage(anyhow::anyhow!("--input: {e}")))?;
    if let Some(schema) = def.input.as_ref().and_then(|i| i.schema.as_ref()) {
        cairn_core::data_schema::check(schema, input, "the input")
            .map_err(|e| usage(anyhow::anyhow!("--input: {}", e.detail.unwrap_or_default())))?;
    }
    Ok(())
}

fn store_fail(store: &str, e: cairn_runtime::Error) -> Fail {
    match e {
        cairn_runtime::Error::Store(cairn_runtime::store::StoreError::InvalidUrl { .. }) => {
            usage(e)
        }
        cairn_runtime::Error::Store(cairn_runtime::store::StoreError::Missing(m)) => {
            usage(anyhow::anyhow!("{m}"))
        }
        // Kept as the source (not only its text) so that `--json` names its class.
        other => infra(anyhow::Error::new(other).context(format!("store {}", redact(store)))),
    }
}

async fn worker(
    store: &str,
    secrets: &SecretsArg,
    scope: WorkerScope,
    lease: &LeaseArg,
    outbound: &OutboundArg,
) -> Result<Runtime, Fail> {
    let secrets = secrets_of(secrets)?;
    // A local tool: everything is reachable unless the setting says otherwise.
    let options = outbound.http_options(AllowList::all());
    let http = HttpConnector::new(options, secrets.clone()).map_err(infra)?;
    lease
        .apply(Runtime::builder())
        .store_url(store)
        .secrets(secrets)
        .http(Arc::new(http))
        .scope(scope)
        .build()
        .await
        .map_err(|e| store_fail(store, e))
}

async fn run(
    file: &str,
    input: Option<&str>,
    store: &str,
    secrets: &SecretsArg,
    events: Option<&Path>,
    with: &[PathBuf],
    outbound: &OutboundArg,
) -> Result<u8, Fail> {
    let target = Target::of(file, load)?;
    let input = read_input(input)?;
    target.file().map_or(Ok(()), |d| check_input(d, &input))?;
    let mut extra = Vec::new();
    for w in with {
        extra.push(load(w)?);
    }
    let rt = worker(
        store,
        secrets,
        WorkerScope::OwnRuns,
        &LeaseArg::default(),
        outbound,
    )
    .await?;
    for d in extra {
        let opts = PublishOptions {
            by: "cli".into(),
            note: None,
        };
        rt.publish(d, opts).await.map_err(runtime_fail)?;
    }
    let id = target
        .start(&rt, input, Default::default(), check_input, runtime_fail)
        .await?;
    eprintln!("run {id} started");
    let outcome = tokio::select! {
        o = rt.wait(&id) => o.map_err(infra)?,
        _ = shutdown_signal() => {
            eprintln!("interrupted: run {id} stays recorded; `cairn worker` resumes it");
            rt.shutdown().await;
            return Ok(130);
        }
    };
    if let Some(path) = events {
        write_lifecycle(&rt, &id, path).await?;
    }
    rt.shutdown().await;
    let mut out = std::io::stdout().lock();
    let code = match outcome {
        RunOutcome::Completed(v) => {
            let _ = writeln!(out, "{}", pretty(&v));
            eprintln!("run {id} completed");
            0
        }
        RunOutcome::Faulted(e) => {
            let _ = writeln!(out, "{}", pretty(&e.to_value()));
            eprintln!("run {id} faulted: {e}");
            1
        }
        RunOutcome::Cancelled => {
            eprintln!("run {id} was cancelled");
            3
        }
        RunOutcome::Compensated { error, failed } => {
            let how = if failed.is_empty() {
                "compensated".to_string()
            } else {
                let names: Vec<String> = failed
                    .iter()
                    .map(|f| format!("{} (for {})", f.compensation, f.position))
                    .collect();
                format!(
                    "compensated, but compensations failed: {}",
                    names.join(", ")
                )
            };
            match error {
                Some(e) => {
                    let _ = writeln!(out, "{}", pretty(&e.to_value()));
                    eprintln!("run {id} faulted and was {how}: {e}");
                    1
                }
                None => {
                    eprintln!("run {id} was cancelled and {how}");
                    3
                }
            }
        }
    };
    Ok(code)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

async fn write_lifecycle(rt: &Runtime, id: &str, path: &Path) -> Result<(), Fail> {
    let history = rt.history(id).await.map_err(infra)?;
    let mut p = LifecycleProjector::new();
    let mut text = String::new();
    for h in &history {
        for ce in p.project(&h.event) {
            text.push_str(&ce.to_string());
            text.push('\n');
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open events file {}", path.display()))
        .map_err(usage)?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write events file {}", path.display()))
        .map_err(infra)?;
    Ok(())
}
