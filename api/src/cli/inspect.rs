//! The commands that read runs: `status`, `history` and `runs`.

use std::io::Write;

use cairn_runtime::store::RunQuery;
use serde_json::{json, Value};

use super::{check_correlation_id, infra, reader, runtime_fail, usage, Fail};

pub(super) async fn status(run: &str, store: &str, as_json: bool) -> Result<u8, Fail> {
    let rt = reader(store).await?;
    let s = rt.state(run).await.map_err(runtime_fail)?;
    rt.shutdown().await;
    let def = s.definition.as_ref();
    let v = json!({
        "id": run,
        "status": s.status_label(),
        "definition": def.map(|d| json!({"namespace": d.namespace, "name": d.name, "version": d.version, "hash": d.hash})),
        "input": s.raw_input,
        "output": s.output,
        "error": s.error.as_ref().map(|e| e.to_value()),
        "currentTasks": s.current_tasks(),
        "compensation": compensation_json(&s),
        "startedAt": cairn_core::time::iso8601(s.started_at),
        "updatedAt": cairn_core::time::iso8601(s.updated_at),
    });
    if as_json {
        println!("{v}");
    } else {
        println!("run      {run}");
        if let Some(d) = def {
            println!("workflow {}/{} {}", d.namespace, d.name, d.version);
        }
        println!("status   {}", s.status_label());
        let tasks = s.current_tasks();
        if !tasks.is_empty() {
            println!("tasks    {}", tasks.join(", "));
        }
        if let Some(o) = &s.output {
            println!("output   {o}");
        }
        if let Some(e) = &s.error {
            println!("error    {e}");
        }
        if let Some(c) = &s.compensation {
            let reason = match (&c.error, &c.reason) {
                (Some(_), _) => "after the fault above".to_string(),
                (None, Some(r)) => format!("on cancel ({r})"),
                (None, None) => "on cancel".to_string(),
            };
            println!(
                "compensation {reason}: {} completed, {} failed, {} to run",
                c.completed.len(),
                c.failed.len(),
                c.remaining + usize::from(c.current.is_some())
            );
            for f in &c.failed {
                println!(
                    "  failed {} for {}: {}",
                    f.compensation, f.position, f.error
                );
            }
        }
    }
    Ok(0)
}

/// What `status --json` says of a run's compensation (docs/compensation.md): `null` when it
/// has not begun.
fn compensation_json(s: &cairn_core::state::RunState) -> Value {
    let Some(c) = &s.compensation else {
        return Value::Null;
    };
    let entry = |i: &usize| {
        s.compensable.get(*i).map(
            |e| json!({"task": e.task, "position": e.position, "compensation": e.compensation}),
        )
    };
    json!({
        "reason": c.reason,
        "completed": c.completed.iter().filter_map(entry).collect::<Vec<_>>(),
        "running": c.current.and_then(|(_, i)| entry(&i)),
        "remaining": c.remaining,
        "failed": c.failed.iter().map(|f| json!({
            "task": f.task, "position": f.position, "compensation": f.compensation,
            "error": f.error.to_value(),
        })).collect::<Vec<_>>(),
    })
}

pub(super) async fn history(run: &str, store: &str, as_json: bool) -> Result<u8, Fail> {
    let rt = reader(store).await?;
    let h = rt.history(run).await.map_err(runtime_fail)?;
    rt.shutdown().await;
    let mut out = std::io::stdout().lock();
    for e in h {
        if as_json {
            let v = json!({
                "position": e.position,
                "sequence": e.sequence,
                "type": e.event.event_type(),
                "data": e.event.payload(),
                "metadata": e.metadata,
            });
            let _ = writeln!(out, "{v}");
        } else {
            let at = e
                .metadata
                .get("recorded_at")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "{:>5} {} {:<22} {}",
                e.sequence,
                cairn_core::time::iso8601(at),
                e.event.event_type(),
                summary(&e.event)
            );
        }
    }
    Ok(0)
}

fn summary(e: &cairn_core::RunEvent) -> String {
    use cairn_core::RunEvent as E;
    match e {
        E::TaskStarted { position, .. } | E::TaskSkipped { position, .. } => position.clone(),
        E::TaskCompleted { id, output, .. } => format!("#{id} -> {}", clip(&output.to_string())),
        E::TaskFaulted { id, error, .. } => format!("#{id} {error}"),
        E::ActivityScheduled {
            id,
            idempotency_key,
            ..
        } => format!("#{id} key {idempotency_key}"),
        E::TimerScheduled {
            timer,
            kind,
            due_at,
            ..
        } => {
            format!(
                "timer {timer} {kind:?} due {}",
                cairn_core::time::iso8601(*due_at)
            )
        }
        E::RunCompleted { output, .. } => clip(&output.to_string()),
        E::RunFaulted { error, .. } => error.to_string(),
        E::CompensationStarted {
            id,
            position,
            compensation,
            ..
        } => format!("#{id} {compensation} for {position}"),
        other => clip(&other.payload().to_string()),
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 100 {
        let mut t: String = s.chars().take(97).collect();
        t.push_str("...");
        t
    } else {
        s.to_string()
    }
}

pub(super) async fn runs(
    status: Option<String>,
    correlation_id: Option<String>,
    store: &str,
    as_json: bool,
    limit: u64,
) -> Result<u8, Fail> {
    use cairn_core::names::StatusLabel;
    if let Some(s) = &status {
        if StatusLabel::parse(s).is_none() {
            let known: Vec<&str> = StatusLabel::ALL.iter().map(|l| l.as_str()).collect();
            return Err(usage(anyhow::anyhow!(
                "unknown status `{s}`; expected one of {}",
                known.join(", ")
            )));
        }
    }
    check_correlation_id(correlation_id.as_deref())?;
    let rt = reader(store).await?;
    // Newest first, as `list_runs`; the query form because only it filters by correlation.
    let mut q = RunQuery::default();
    q.statuses = status.into_iter().collect();
    q.correlation_id = correlation_id;
    q.limit = limit;
    let list = rt.store().query_runs(&q).await.map_err(infra)?;
    rt.shutdown().await;
    let mut out = std::io::stdout().lock();
    for r in list {
        if as_json {
            let v = json!({
                "id": r.run_id, "namespace": r.namespace, "name": r.name, "version": r.version,
                "status": r.status,
                "createdAt": cairn_core::time::iso8601(r.created_at),
                "updatedAt": cairn_core::time::iso8601(r.updated_at),
                "correlationId": r.correlation_id,
            });
            let _ = writeln!(out, "{v}");
        } else {
            let _ = writeln!(
                out,
                "{}  {:<10} {}/{} {}  {}",
                r.run_id,
                r.status,
                r.namespace,
                r.name,
                r.version,
                cairn_core::time::iso8601(r.created_at)
            );
        }
    }
    Ok(0)
}
