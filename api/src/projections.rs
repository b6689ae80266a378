//! `cairn projections`: rebuild read models from the event log.
//!
//! The `runs` index is kept inline by every append; `cairn projections rebuild` recomputes it
//! from the log (see `cairn_runtime::projections` for why that is safe while workers run) and
//! records how far it got in the `projection_checkpoints` table.

use std::io::Write as _;

use cairn_runtime::projections::{self, RUNS_PROJECTION};
use cairn_runtime::store::{self, StoreError};

use crate::failure::{redact, Failure};

/// `cairn projections ...`
#[derive(clap::Subcommand, Clone, Debug)]
pub enum ProjectionsCommand {
    /// Rebuild the runs index from the event log (safe while workers run); prints what changed
    Rebuild {
        /// Event store: sqlite://PATH or postgres://... (default: sqlite://.cairn/cairn.db, or $CAIRN_STORE)
        #[arg(long, env = "CAIRN_STORE", default_value = "sqlite://.cairn/cairn.db")]
        store: String,
        /// Print the report as one JSON object
        #[arg(long)]
        json: bool,
    },
}

fn store_failed(url: &str, e: cairn_runtime::Error) -> Failure {
    let code = match e {
        cairn_runtime::Error::Store(StoreError::InvalidUrl { .. }) => 2,
        _ => 4,
    };
    Failure {
        code,
        error: anyhow::anyhow!("store {}: {e}", redact(url)),
    }
}

/// Runs a `cairn projections` command.
pub async fn run(cmd: ProjectionsCommand) -> Result<u8, Failure> {
    match cmd {
        ProjectionsCommand::Rebuild { store: url, json } => {
            let s = store::open(&url)
                .await
                .map_err(|e| store_failed(&url, e.into()))?;
            let report = projections::rebuild_runs(s.as_ref())
                .await
                .map_err(|e| store_failed(&url, e))?;
            let mut out = std::io::stdout().lock();
            if json {
                let v = serde_json::json!({
                    "projection": RUNS_PROJECTION,
                    "previousCheckpoint": report.previous_checkpoint,
                    "checkpoint": report.checkpoint,
                    "events": report.events,
                    "runs": report.runs,
                    "rewritten": report.rewritten,
                    "repaired": report.repaired,
                    "skipped": report.skipped,
                });
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(
                    out,
                    "rebuilt projection {RUNS_PROJECTION}: {} events, {} runs, {} rows rewritten, \
                     {} repaired, {} skipped (extended during the rebuild); checkpoint {} (was {})",
                    report.events,
                    report.runs,
                    report.rewritten,
                    report.repaired.len(),
                    report.skipped,
                    report.checkpoint,
                    report
                        .previous_checkpoint
                        .map_or_else(|| "none".to_string(), |p| p.to_string()),
                );
                for r in &report.repaired {
                    let _ = writeln!(out, "repaired run {r}");
                }
            }
            Ok(0)
        }
    }
}
