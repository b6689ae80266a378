//! Replay over GraphQL: `replayRun` and the deploy-time check of `deployDefinition` (its
//! `check`, `requireCompatible`, `migrate` and `sample` arguments, answered as
//! `DeployResult.check`). The replaying is `cairn_runtime::replay`.

use async_graphql::{Context, Json, Object, Result, SimpleObject};
use cairn_core::dsl::Workflow;
use cairn_core::replay::{Decided, Divergence, Report};
use cairn_runtime::replay::{Against, CheckOptions, CheckReport, RunCheck};
use serde_json::Value;

use crate::server::auth::{Permission, Require};
use crate::server::errors::{self, Code};

use super::app::{app, App};

/// One side of a divergence: a decision.
#[derive(SimpleObject, Clone, Debug)]
pub struct ReplayDecision {
    /// The event's type name.
    pub event_type: String,
    /// The JSON pointer of the task it is about, when it is about one.
    pub task: Option<String>,
    /// The event as JSON (`{type, data}`), every value written out.
    pub event: Json<Value>,
}

impl From<&Decided> for ReplayDecision {
    fn from(d: &Decided) -> Self {
        ReplayDecision {
            event_type: d.event_type.clone(),
            task: d.task.clone(),
            event: Json(d.event.clone()),
        }
    }
}

/// The first decision a replay did not reproduce.
#[derive(SimpleObject, Clone, Debug)]
pub struct ReplayDivergence {
    /// The sequence of the recorded event (one past the last when the history ends there).
    pub sequence: u64,
    /// What the run recorded there; null when it recorded no decision (it waited).
    pub recorded: Option<ReplayDecision>,
    /// What the replayed definition decides there; null when it decides nothing.
    pub new: Option<ReplayDecision>,
    /// The same in one line: `diverges at event SEQ: recorded X, new version decides Y`.
    pub message: String,
}

impl From<&Divergence> for ReplayDivergence {
    fn from(d: &Divergence) -> Self {
        ReplayDivergence {
            sequence: d.sequence,
            recorded: d.recorded.as_ref().map(ReplayDecision::from),
            new: d.new.as_ref().map(ReplayDecision::from),
            message: d.to_string(),
        }
    }
}

/// What `replayRun` found.
#[derive(SimpleObject, Clone, Debug)]
pub struct ReplayReport {
    /// The run.
    pub run_id: String,
    /// Whether every recorded decision was reproduced.
    pub identical: bool,
    /// Events in the run's history.
    pub events: u64,
    /// Recorded decisions reproduced (before the divergence, if any).
    pub decisions: u64,
    /// The first decision not reproduced.
    pub divergence: Option<ReplayDivergence>,
}

impl ReplayReport {
    fn new(run_id: String, r: &Report) -> Self {
        ReplayReport {
            run_id,
            identical: r.identical(),
            events: r.events,
            decisions: r.decisions,
            divergence: r.divergence.as_ref().map(ReplayDivergence::from),
        }
    }
}

/// What the deploy-time check found for one unfinished run.
#[derive(SimpleObject, Clone, Debug)]
pub struct RunCompatibility {
    /// The run.
    pub run_id: String,
    /// The version it was on when checked.
    pub version: String,
    /// That version's content hash.
    pub hash: String,
    /// The sequence of the last event replayed.
    pub last_sequence: u64,
    /// Whether the new version reproduces every decision the run recorded.
    pub compatible: bool,
    /// Where it does not.
    pub divergence: Option<ReplayDivergence>,
    /// Why the run could not be replayed (it then counts as not compatible).
    pub error: Option<String>,
    /// With `migrate`: whether the run was moved onto the new version.
    pub migrated: Option<bool>,
    /// The line `cairn deploy` prints for it.
    pub message: String,
}

impl From<&RunCheck> for RunCompatibility {
    fn from(r: &RunCheck) -> Self {
        RunCompatibility {
            run_id: r.run_id.clone(),
            version: r.version.clone(),
            hash: r.hash.clone(),
            last_sequence: r.last_sequence,
            compatible: r.compatible,
            divergence: r.divergence.as_ref().map(ReplayDivergence::from),
            error: r.error.clone(),
            migrated: r.migrated,
            message: r.line(),
        }
    }
}

/// The deploy-time check of a new version against the unfinished runs of its definition.
#[derive(SimpleObject, Clone, Debug)]
pub struct DeployCheck {
    /// Whether every checked run is compatible.
    pub compatible: bool,
    /// Unfinished runs of the definition when the check began (any version).
    pub unfinished: u64,
    /// How many checked runs diverge.
    pub diverging: u64,
    /// The runs checked (all those on other versions, or the sample).
    pub runs: Vec<RunCompatibility>,
}

impl From<&CheckReport> for DeployCheck {
    fn from(r: &CheckReport) -> Self {
        DeployCheck {
            compatible: r.compatible(),
            unfinished: r.unfinished as u64,
            diverging: r.diverging() as u64,
            runs: r.runs.iter().map(RunCompatibility::from).collect(),
        }
    }
}

/// What `deployDefinition` asked of the check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckAsked {
    /// `check`.
    pub check: bool,
    /// `requireCompatible`.
    pub require_compatible: bool,
    /// `migrate`.
    pub migrate: bool,
    /// `sample`.
    pub sample: Option<usize>,
}

impl CheckAsked {
    fn wanted(&self) -> bool {
        self.check || self.require_compatible || self.migrate
    }
}

/// The check before publishing `def`, when asked (`None` otherwise).
pub async fn before_deploy(
    app: &App,
    def: &Workflow,
    asked: CheckAsked,
) -> Result<Option<CheckReport>> {
    if !asked.wanted() {
        return Ok(None);
    }
    let opts = CheckOptions {
        sample: asked.sample,
        ..Default::default()
    };
    app.runtime
        .check_deploy(def, &opts)
        .await
        .map(Some)
        .map_err(|e| errors::runtime("check deploy", e))
}

/// Whether the check refuses the deploy (`requireCompatible` and a run diverges).
pub fn refuses(report: Option<&CheckReport>, asked: CheckAsked) -> bool {
    asked.require_compatible && report.is_some_and(|r| !r.compatible())
}

/// Why the check refused a deploy.
pub fn refusal(report: Option<&CheckReport>) -> String {
    match report {
        Some(r) => format!(
            "{} of {} unfinished runs of {}/{} diverge from version {}; nothing was deployed \
             (requireCompatible)",
            r.diverging(),
            r.runs.len(),
            r.namespace,
            r.name,
            r.version
        ),
        None => "nothing was deployed".to_string(),
    }
}

/// After publishing: moves the compatible runs when asked; the check as the API answers it.
pub async fn after_deploy(
    app: &App,
    report: Option<CheckReport>,
    asked: CheckAsked,
) -> Result<Option<DeployCheck>> {
    let Some(mut r) = report else {
        return Ok(None);
    };
    if asked.migrate {
        app.runtime
            .migrate(&mut r, &CheckOptions::default())
            .await
            .map_err(|e| errors::runtime("migrate runs", e))?;
    }
    Ok(Some(DeployCheck::from(&r)))
}

/// Queries that replay runs.
#[derive(Default)]
pub struct ReplayQueries;

#[Object]
impl ReplayQueries {
    /// Replays a run's recorded history, decision by decision, against its own definition (a
    /// determinism check), a deployed `version` of it, or a definition given as `source` (which
    /// needs the right to deploy, as running text does). Records nothing.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn replay_run(
        &self,
        ctx: &Context<'_>,
        id: String,
        source: Option<String>,
        version: Option<String>,
    ) -> Result<ReplayReport> {
        let app = app(ctx)?;
        let against = match (source, version) {
            (Some(_), Some(_)) => {
                return Err(errors::error(
                    Code::BadUserInput,
                    "give `source` or `version`, not both",
                ))
            }
            (Some(src), None) => {
                crate::server::auth::require(ctx, Permission::Deploy)?;
                let parsed = tokio::task::spawn_blocking(move || {
                    cairn_core::dsl::load_str(&src, cairn_core::dsl::SourceFormat::Yaml)
                })
                .await
                .map_err(|e| errors::internal("parse definition", e))?;
                match parsed {
                    Ok(d) => Against::Definition(Box::new(d)),
                    Err(e) => {
                        let problems: Vec<String> =
                            e.problems.iter().map(|p| p.to_string()).collect();
                        return Err(errors::error(
                            Code::BadUserInput,
                            format!("invalid definition: {}", problems.join("; ")),
                        ));
                    }
                }
            }
            (None, Some(v)) => Against::Version(v),
            (None, None) => Against::Own,
        };
        let r = app
            .runtime
            .replay(&id, against)
            .await
            .map_err(|e| errors::runtime("replay run", e))?;
        Ok(ReplayReport::new(id, &r))
    }
}
