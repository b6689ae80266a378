//! `cairn definitions ...` and `cairn rollback`: the streams of deployed definitions (versions
//! published, the head, deprecations), read and moved from the command line.
//!
//! Also how the CLI tells a definition reference (`NS/NAME[@VERSION]`) from a file, for
//! `cairn start` and `cairn run`: an argument that names an existing file is that file; otherwise
//! one of the form `NS/NAME` or `NS/NAME@VERSION` (one `/`, no `.yaml`, `.yml` or `.json`
//! ending) is a reference; anything else is taken as a file (and reported missing).

use std::io::Write as _;
use std::path::Path;

use cairn_core::definition::{DefinitionEvent, DefinitionState, LATEST};
use cairn_core::dsl::Workflow;
use cairn_core::time::iso8601;
use cairn_runtime::definitions::{DefinitionHistoryEntry, Definitions};
use cairn_runtime::store::{self, StoreError};
use cairn_runtime::{Runtime, StartOptions};
use serde_json::{json, Value};

use crate::failure::{self, Failure};
use crate::options::DEFAULT_STORE;

/// The store argument of these commands.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreUrl {
    /// Event store: sqlite://PATH or postgres://... (default: sqlite://.cairn/cairn.db, or $CAIRN_STORE)
    #[arg(long, env = "CAIRN_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
}

/// `cairn definitions ...`
#[derive(clap::Subcommand, Clone, Debug)]
pub enum DefinitionsCommand {
    /// Every deployed definition: its head and versions (reads an existing store)
    List {
        #[command(flatten)]
        store: StoreUrl,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The events of a definition's stream: versions published, the head moved, versions
    /// deprecated, with who and when (reads an existing store)
    History {
        /// NS/NAME
        definition: String,
        #[command(flatten)]
        store: StoreUrl,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// A published version's source (the head without @VERSION) and what the stream says of
    /// it (reads an existing store)
    Show {
        /// NS/NAME or NS/NAME@VERSION
        definition: String,
        #[command(flatten)]
        store: StoreUrl,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The structural diff of two published versions by task path: tasks added, removed,
    /// changed and moved, and the workflow's settings that differ (`latest` names the head;
    /// reads an existing store)
    Diff {
        /// NS/NAME
        definition: String,
        /// The old version
        from: String,
        /// The new version
        to: String,
        #[command(flatten)]
        store: StoreUrl,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Refuse new runs of a version (runs in flight go on). The head cannot be deprecated:
    /// roll back to, or deploy, another version first
    Deprecate {
        /// NS/NAME@VERSION
        definition: String,
        /// Why (kept in the stream)
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        store: StoreUrl,
    },
}

impl DefinitionsCommand {
    /// Whether `--json` was asked for (errors are JSON too then).
    pub fn json(&self) -> bool {
        match self {
            DefinitionsCommand::List { json, .. }
            | DefinitionsCommand::History { json, .. }
            | DefinitionsCommand::Show { json, .. }
            | DefinitionsCommand::Diff { json, .. } => *json,
            DefinitionsCommand::Deprecate { .. } => false,
        }
    }
}

/// `cairn rollback NS/NAME --to VERSION`
#[derive(clap::Args, Clone, Debug)]
pub struct RollbackArgs {
    /// NS/NAME
    pub definition: String,
    /// The published version the head moves to (new runs start on it; runs in flight keep
    /// their version)
    #[arg(long = "to", value_name = "VERSION")]
    pub to: String,
    #[command(flatten)]
    pub store: StoreUrl,
}

fn usage(message: String) -> Failure {
    failure::usage(anyhow::anyhow!(message))
}

/// A definition reference: namespace, name and the version if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The version, or none for the head.
    pub version: Option<String>,
}

impl Reference {
    /// The version, `latest` when none was given.
    pub fn version_or_latest(&self) -> &str {
        self.version.as_deref().unwrap_or(LATEST)
    }
}

/// Parses `NS/NAME` or `NS/NAME@VERSION`.
pub fn parse_reference(s: &str) -> Option<Reference> {
    let (path, version) = match s.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (s, None),
    };
    let (namespace, name) = path.split_once('/')?;
    let ok = |p: &str| !p.is_empty() && !p.contains('/') && !p.chars().any(char::is_whitespace);
    if !ok(namespace) || !ok(name) || version.is_some_and(|v| !ok(v) || v.contains('@')) {
        return None;
    }
    Some(Reference {
        namespace: namespace.to_string(),
        name: name.to_string(),
        version: version.map(str::to_string),
    })
}

/// Whether the `start`/`run` argument `arg` is a reference rather than a file (see the module
/// documentation for the rule).
pub fn as_reference(arg: &str) -> Option<Reference> {
    if Path::new(arg).is_file() {
        return None;
    }
    let lower = arg.to_ascii_lowercase();
    if [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| lower.ends_with(ext))
    {
        return None;
    }
    parse_reference(arg)
}

/// What `cairn start` and `cairn run` start: a definition file (recorded for its runs only), or
/// a deployed definition by reference ([`as_reference`] tells them apart).
pub enum Target {
    /// A definition file, loaded.
    File(Box<Workflow>),
    /// A deployed definition.
    Deployed(Reference),
}

impl Target {
    /// The target `arg` names, loading a file with `load`.
    pub fn of<E>(arg: &str, load: impl FnOnce(&Path) -> Result<Workflow, E>) -> Result<Self, E> {
        match as_reference(arg) {
            Some(r) => Ok(Target::Deployed(r)),
            None => Ok(Target::File(Box::new(load(Path::new(arg))?))),
        }
    }

    /// The definition, for a file (its input can be checked before a store is opened).
    pub fn file(&self) -> Option<&Workflow> {
        match self {
            Target::File(def) => Some(def),
            Target::Deployed(_) => None,
        }
    }

    /// Records the run and returns its id; a deployed definition's input is checked with
    /// `check` once its source is read (a file's is the caller's to check first).
    pub async fn start<E>(
        self,
        rt: &Runtime,
        input: Value,
        opts: StartOptions,
        check: impl FnOnce(&Workflow, &Value) -> Result<(), E>,
        fail: impl Fn(cairn_runtime::Error) -> E,
    ) -> Result<String, E> {
        match self {
            Target::File(def) => rt.start_run_with(*def, input, opts).await.map_err(fail),
            Target::Deployed(r) => {
                let version = r.version_or_latest();
                let (_, stored) = rt
                    .definitions()
                    .show(&r.namespace, &r.name, version)
                    .await
                    .map_err(&fail)?;
                if let Ok(def) = serde_json::from_value::<Workflow>(stored.source) {
                    check(&def, &input)?;
                }
                let started = rt
                    .start_deployed(&r.namespace, &r.name, version, input, opts)
                    .await
                    .map_err(fail)?;
                Ok(started.run_id)
            }
        }
    }
}

fn reference(s: &str, what: &str, version: Option<bool>) -> Result<Reference, Failure> {
    let r = parse_reference(s).ok_or_else(|| {
        usage(format!(
            "`{s}` is not a definition reference: expected {what}"
        ))
    })?;
    match (version, &r.version) {
        (Some(true), None) => Err(usage(format!("`{s}`: expected {what} (with the version)"))),
        (Some(false), Some(_)) => Err(usage(format!("`{s}`: expected {what} (no version)"))),
        _ => Ok(r),
    }
}

async fn open(url: &str, read_only: bool) -> Result<Definitions, Failure> {
    let s = if read_only {
        store::open_read_only(url).await
    } else {
        store::open(url).await
    };
    let s = s.map_err(|e| match e {
        StoreError::InvalidUrl { .. } | StoreError::Missing(_) => usage(e.to_string()),
        e => failure::runtime(e.into()),
    })?;
    Ok(Definitions::new(s))
}

fn print(v: &Value) {
    let _ = writeln!(std::io::stdout().lock(), "{v}");
}

/// Runs `cairn rollback`.
pub async fn rollback(args: RollbackArgs) -> Result<u8, Failure> {
    let r = reference(&args.definition, "NS/NAME", Some(false))?;
    let defs = open(&args.store.store, false).await?;
    let (state, moved) = defs
        .roll_back(&r.namespace, &r.name, &args.to, "cli")
        .await
        .map_err(failure::runtime)?;
    if moved {
        eprintln!(
            "{}/{}: the head is now {} (new runs start on it; runs in flight keep their version)",
            r.namespace,
            r.name,
            state.head.as_deref().unwrap_or(&args.to)
        );
    } else {
        eprintln!(
            "{}/{}: the head is {} already: nothing changed",
            r.namespace, r.name, args.to
        );
    }
    Ok(0)
}

/// Runs a `cairn definitions` command.
pub async fn run(cmd: DefinitionsCommand) -> Result<u8, Failure> {
    match cmd {
        DefinitionsCommand::List { store, json } => {
            let defs = open(&store.store, true).await?;
            let all = defs.list().await.map_err(failure::runtime)?;
            if json {
                let v: Vec<Value> = all
                    .iter()
                    .map(|d| summary_json(&d.namespace, &d.name, &d.state))
                    .collect();
                print(&Value::Array(v));
            } else {
                let mut out = std::io::stdout().lock();
                for d in &all {
                    let versions: Vec<String> = d
                        .state
                        .versions
                        .iter()
                        .map(|v| {
                            let mut s = v.label.clone();
                            if d.state.head.as_deref() == Some(&v.label) {
                                s.push_str(" (head)");
                            }
                            if v.deprecated.is_some() {
                                s.push_str(" (deprecated)");
                            }
                            s
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "{}/{}\thead {}\t{}",
                        d.namespace,
                        d.name,
                        d.state.head.as_deref().unwrap_or("-"),
                        versions.join(", ")
                    );
                }
            }
            Ok(0)
        }
        DefinitionsCommand::History {
            definition,
            store,
            json,
        } => {
            let r = reference(&definition, "NS/NAME", Some(false))?;
            let defs = open(&store.store, true).await?;
            let (state, history) = defs
                .load(&r.namespace, &r.name)
                .await
                .map_err(failure::runtime)?;
            if state.sequence == 0 {
                return Err(failure::runtime(
                    cairn_runtime::Error::DefinitionNotDeployed {
                        namespace: r.namespace,
                        name: r.name,
                        version: LATEST.into(),
                    },
                ));
            }
            if json {
                print(&Value::Array(history.iter().map(history_json).collect()));
            } else {
                let mut out = std::io::stdout().lock();
                for h in &history {
                    let _ = writeln!(out, "{}", history_line(h));
                }
            }
            Ok(0)
        }
        DefinitionsCommand::Show {
            definition,
            store,
            json,
        } => {
            let r = reference(&definition, "NS/NAME or NS/NAME@VERSION", None)?;
            let defs = open(&store.store, true).await?;
            let (state, stored) = defs
                .show(&r.namespace, &r.name, r.version_or_latest())
                .await
                .map_err(failure::runtime)?;
            let v = state.version(&stored.version);
            if json {
                print(&json!({
                    "namespace": r.namespace,
                    "name": r.name,
                    "version": stored.version,
                    "hash": stored.hash,
                    "head": state.head.as_deref() == Some(stored.version.as_str()),
                    "publishedBy": v.map(|v| v.by.clone()),
                    "publishedAt": v.map(|v| iso8601(v.at)),
                    "note": v.and_then(|v| v.note.clone()),
                    "deprecated": v.is_some_and(|v| v.deprecated.is_some()),
                    "source": stored.source,
                }));
            } else {
                eprintln!(
                    "{}/{} {} ({}{}), hash {}",
                    r.namespace,
                    r.name,
                    stored.version,
                    if state.head.as_deref() == Some(stored.version.as_str()) {
                        "head"
                    } else {
                        "not the head"
                    },
                    if v.is_some_and(|v| v.deprecated.is_some()) {
                        ", deprecated"
                    } else {
                        ""
                    },
                    stored.hash
                );
                let text = serde_norway::to_string(&stored.source)
                    .unwrap_or_else(|_| stored.source.to_string());
                let _ = write!(std::io::stdout().lock(), "{text}");
            }
            Ok(0)
        }
        DefinitionsCommand::Diff {
            definition,
            from,
            to,
            store,
            json,
        } => {
            let r = reference(&definition, "NS/NAME", Some(false))?;
            let defs = open(&store.store, true).await?;
            let d = defs
                .diff(&r.namespace, &r.name, &from, &to)
                .await
                .map_err(failure::runtime)?;
            if json {
                print(&serde_json::to_value(&d).unwrap_or(Value::Null));
            } else {
                let mut out = std::io::stdout().lock();
                if d.is_empty() {
                    let _ = writeln!(out, "no structural difference");
                }
                for k in &d.workflow {
                    let _ = writeln!(out, "workflow  {k}");
                }
                for t in &d.tasks {
                    let mut line = format!("{:<8}  {}", t.kind.as_str(), t.path);
                    if let Some(f) = &t.from {
                        line.push_str(&format!(" (was {f})"));
                    }
                    if !t.fields.is_empty() {
                        line.push_str(&format!(" [{}]", t.fields.join(", ")));
                    }
                    let _ = writeln!(out, "{line}");
                }
            }
            Ok(0)
        }
        DefinitionsCommand::Deprecate {
            definition,
            reason,
            store,
        } => {
            let r = reference(&definition, "NS/NAME@VERSION", Some(true))?;
            let version = r.version_or_latest().to_string();
            let defs = open(&store.store, false).await?;
            let (_, changed) = defs
                .deprecate(&r.namespace, &r.name, &version, reason, "cli")
                .await
                .map_err(failure::runtime)?;
            if changed {
                eprintln!(
                    "{}/{} {version} is deprecated: it starts no new runs (runs in flight go on)",
                    r.namespace, r.name
                );
            } else {
                eprintln!(
                    "{}/{} {version} was deprecated already: nothing changed",
                    r.namespace, r.name
                );
            }
            Ok(0)
        }
    }
}

fn summary_json(namespace: &str, name: &str, s: &DefinitionState) -> Value {
    json!({
        "namespace": namespace,
        "name": name,
        "head": s.head,
        "versions": s.versions.iter().map(|v| json!({
            "version": v.label,
            "hash": v.hash,
            "publishedBy": v.by,
            "publishedAt": iso8601(v.at),
            "note": v.note,
            "head": s.head.as_deref() == Some(v.label.as_str()),
            "deprecated": v.deprecated.is_some(),
        })).collect::<Vec<_>>(),
    })
}

fn history_json(h: &DefinitionHistoryEntry) -> Value {
    let mut v = json!({
        "sequence": h.sequence,
        "type": h.event.event_type(),
        "at": iso8601(h.event.at()),
    });
    if let (Value::Object(o), Value::Object(p)) = (&mut v, h.event.payload()) {
        for (k, x) in p {
            if k != "at" {
                o.insert(k, x);
            }
        }
    }
    v
}

fn history_line(h: &DefinitionHistoryEntry) -> String {
    let at = iso8601(h.event.at());
    match &h.event {
        DefinitionEvent::VersionPublished {
            label,
            hash,
            by,
            note,
            ..
        } => format!(
            "{:>3}  {at}  published   {label}  {hash}  by {by}{}",
            h.sequence,
            note.as_ref()
                .map(|n| format!("  \"{n}\""))
                .unwrap_or_default()
        ),
        DefinitionEvent::HeadMoved {
            from,
            to,
            reason,
            by,
            ..
        } => format!(
            "{:>3}  {at}  head moved  {} -> {to}  ({}) by {by}",
            h.sequence,
            from.as_deref().unwrap_or("-"),
            reason.as_str()
        ),
        DefinitionEvent::VersionDeprecated {
            label, by, reason, ..
        } => format!(
            "{:>3}  {at}  deprecated  {label}  by {by}{}",
            h.sequence,
            reason
                .as_ref()
                .map(|r| format!("  \"{r}\""))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("default/order@1.2.0"),
            Some(Reference {
                namespace: "default".into(),
                name: "order".into(),
                version: Some("1.2.0".into()),
            })
        );
        assert_eq!(
            parse_reference("default/order").map(|r| r.version),
            Some(None)
        );
        assert_eq!(parse_reference("order"), None);
        assert_eq!(parse_reference("a/b/c"), None);
        assert_eq!(parse_reference("a/b@"), None);
        assert!(as_reference("examples/hello.yaml").is_none());
        assert!(as_reference("default/hello").is_some());
    }
}
