//! `cairn replay` and the deploy-time check of `cairn deploy` (`--sample`, `--require-compatible`,
//! `--migrate`): the command line's face of `cairn_runtime::replay`.
//!
//! `cairn replay RUN` exits 0 when every recorded decision is reproduced and 1 with the first
//! divergence. `cairn deploy` checks each new version against the unfinished runs of its
//! definition before publishing it, prints one line per run, and publishes anyway unless
//! `--require-compatible` (exit 1, nothing published) says otherwise.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_core::activity::{NoSecrets, Secrets};
use cairn_core::dsl::{self, Workflow};
use cairn_runtime::replay::{Against, CheckOptions, CheckReport};
use cairn_runtime::Runtime;
use serde_json::{json, Map, Value};

use crate::failure::{self, usage, Failure};
use crate::secrets::FileSecrets;

/// `cairn replay RUN`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplayArgs {
    /// Run id
    pub run: String,
    /// Replay against this definition file instead of the run's own versions
    #[arg(long, value_name = "FILE", conflicts_with = "version")]
    pub definition: Option<PathBuf>,
    /// Replay against this deployed version of the run's definition (`latest` for the head)
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Event store: sqlite://PATH or postgres://... (default: sqlite://.cairn/cairn.db, or $CAIRN_STORE)
    #[arg(long, env = "CAIRN_STORE", default_value = crate::options::DEFAULT_STORE)]
    pub store: String,
    /// A YAML or JSON file of secrets, the run's own, so that calls built from them replay
    #[arg(long, env = "CAIRN_SECRETS_FILE")]
    pub secrets: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// The deploy-time check's flags of `cairn deploy`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CheckArgs {
    /// Check only N unfinished runs, chosen at random (default: all of them)
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Refuse the deploy (exit 1, nothing published) if any checked run diverges
    #[arg(long)]
    pub require_compatible: bool,
    /// Move every compatible unfinished run onto the new version (diverging runs stay pinned)
    #[arg(long)]
    pub migrate: bool,
    /// Print each check as one JSON object
    #[arg(long)]
    pub json: bool,
    /// A YAML or JSON file of secrets, the runs' own, so that calls built from them replay
    #[arg(long = "secrets", env = "CAIRN_SECRETS_FILE")]
    pub secrets: Option<PathBuf>,
}

fn store_failed(e: cairn_runtime::Error) -> Failure {
    match e {
        cairn_runtime::Error::Store(cairn_runtime::store::StoreError::Missing(m)) => {
            usage(anyhow::anyhow!("{m}"))
        }
        other => failure::runtime(other),
    }
}

/// Reads and checks a definition file (`.json` is JSON, anything else YAML).
fn load(file: &Path) -> Result<Workflow, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| usage(anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => dsl::SourceFormat::Json,
        _ => dsl::SourceFormat::Yaml,
    };
    dsl::load_str(&text, format).map_err(|e| {
        let mut msg = format!("invalid definition {}:", file.display());
        for p in &e.problems {
            msg.push_str(&format!("\n  {p}"));
        }
        usage(anyhow::anyhow!(msg))
    })
}

fn secrets(file: Option<&Path>) -> Result<Secrets, Failure> {
    match file {
        Some(p) => Ok(Arc::new(FileSecrets::read(p).map_err(usage)?)),
        None => Ok(Arc::new(NoSecrets)),
    }
}

/// `cairn replay RUN`: exit 0 and `identical`, or exit 1 and the first divergence.
pub async fn replay(args: ReplayArgs) -> Result<u8, Failure> {
    let against = match (&args.definition, &args.version) {
        (Some(f), _) => Against::Definition(Box::new(load(f)?)),
        (None, Some(v)) => Against::Version(v.clone()),
        (None, None) => Against::Own,
    };
    let secrets = secrets(args.secrets.as_deref())?;
    // Read only: a replay records nothing, and a store that does not exist is not created.
    let store = cairn_runtime::store::open_read_only(&args.store)
        .await
        .map_err(|e| store_failed(e.into()))?;
    let rt = Runtime::builder()
        .store(store)
        .secrets(secrets)
        .workers(false)
        .group_commit(false)
        .build()
        .await
        .map_err(store_failed)?;
    let report = rt.replay(&args.run, against).await;
    rt.shutdown().await;
    let report = report.map_err(failure::runtime)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("run".into(), json!(args.run));
            o.insert("identical".into(), json!(report.identical()));
        }
        let _ = writeln!(out, "{v}");
    } else {
        match &report.divergence {
            None => {
                let _ = writeln!(
                    out,
                    "identical ({} events, {} decisions)",
                    report.events, report.decisions
                );
            }
            Some(d) => {
                let _ = writeln!(out, "{d}");
                let side = |x: &Option<cairn_core::replay::Decided>| {
                    x.as_ref()
                        .map_or_else(|| "nothing".to_string(), |x| x.event.to_string())
                };
                let _ = writeln!(out, "  recorded: {}", side(&d.recorded));
                let _ = writeln!(out, "  new:      {}", side(&d.new));
            }
        }
    }
    Ok(if report.identical() { 0 } else { 1 })
}

/// The deploy-time check of `def`, before anything is published: `None` when it has no
/// unfinished runs on other versions.
pub async fn check(
    rt: &Runtime,
    def: &Workflow,
    args: &CheckArgs,
) -> Result<Option<CheckReport>, Failure> {
    let report = rt
        .check_deploy(def, &options(args)?)
        .await
        .map_err(failure::runtime)?;
    Ok((!report.runs.is_empty()).then_some(report))
}

fn options(args: &CheckArgs) -> Result<CheckOptions, Failure> {
    let secrets: Option<Map<String, Value>> = match &args.secrets {
        Some(p) => Some(secrets(Some(p))?.all()),
        None => None,
    };
    Ok(CheckOptions {
        sample: args.sample,
        secrets,
    })
}

/// Whether the deploy is refused (`--require-compatible` and a run diverges); prints the
/// report and why when it is.
pub fn refused(report: Option<&CheckReport>, args: &CheckArgs) -> bool {
    let Some(r) = report.filter(|r| args.require_compatible && !r.compatible()) else {
        return false;
    };
    print(r, args.json);
    eprintln!(
        "refused: {} of {} unfinished runs of {}/{} diverge from version {}; nothing was \
         deployed (--require-compatible)",
        r.diverging(),
        r.runs.len(),
        r.namespace,
        r.name,
        r.version
    );
    true
}

/// After the deploy: moves the compatible runs with `--migrate`, and prints the report.
pub async fn after(
    rt: &Runtime,
    report: Option<CheckReport>,
    args: &CheckArgs,
) -> Result<(), Failure> {
    let Some(mut r) = report else {
        if args.json {
            // One object per file, so that a script reads the same shape every time.
            println!("{}", json!({ "runs": [], "compatible": true }));
        }
        return Ok(());
    };
    if args.migrate {
        rt.migrate(&mut r, &options(args)?)
            .await
            .map_err(failure::runtime)?;
    }
    print(&r, args.json);
    let moved = r.runs.iter().filter(|x| x.migrated == Some(true)).count();
    eprintln!(
        "checked {} unfinished runs of {}/{}: {} compatible, {} diverge{}",
        r.runs.len(),
        r.namespace,
        r.name,
        r.runs.len() - r.diverging(),
        r.diverging(),
        if args.migrate {
            format!("; {moved} migrated to {}", r.version)
        } else {
            "; runs stay on their versions".to_string()
        }
    );
    Ok(())
}

fn print(r: &CheckReport, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("compatible".into(), json!(r.compatible()));
        }
        let _ = writeln!(out, "{v}");
    } else {
        for run in &r.runs {
            let _ = writeln!(out, "{}", run.line());
        }
    }
}
