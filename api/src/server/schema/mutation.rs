//! The mutations.

use crate::server::auth::{Permission, Principal, Require};

use async_graphql::{Context, ErrorExtensions, Json, MergedObject, Object, Result, SimpleObject};
use cairn_core::dsl::{self, SourceFormat, Workflow};
use cairn_runtime::definitions::PublishOptions;
use cairn_runtime::StartOptions;
use serde_json::Value;

use crate::server::errors::{self, Code};

use super::app::app;
use super::pagination::*;
use super::query::find_definition;
use super::types::*;

// ----- mutations ------------------------------------------------------------------------------

/// The mutation root.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    DefinitionMutations,
    RunMutations,
    crate::server::tokens::TokenMutations,
);

/// The outcome of `deployDefinition`: the definition, or the problems that stopped it.
#[derive(SimpleObject)]
pub struct DeployResult {
    /// Whether it was recorded (or was already published with this very content).
    pub ok: bool,
    /// The recorded definition.
    pub definition: Option<Definition>,
    /// What is wrong with the source (empty when `ok`), or why the check refused it.
    pub problems: Vec<Problem>,
    /// False when this version was already published with exactly this content: nothing was
    /// recorded and the head did not move (null when not `ok`).
    pub published: Option<bool>,
    /// What happened, in words (null when not `ok`).
    pub message: Option<String>,
    /// The check against the unfinished runs of the definition, when asked for (`check`,
    /// `requireCompatible` or `migrate`).
    pub check: Option<super::replay::DeployCheck>,
}

/// Mutations on definitions.
#[derive(Default)]
pub struct DefinitionMutations;

#[Object]
impl DefinitionMutations {
    /// Validates and publishes a definition (YAML or JSON): its version becomes the head. A
    /// version already published with other content is refused (`BAD_USER_INPUT`: a version
    /// label is immutable); the same content again changes nothing (`published: false`). The
    /// token's name is recorded as who deployed it, with the optional `note`. Problems come
    /// back as data. With `check` (implied by the other two), the new version is first
    /// replayed against the unfinished runs of its definition on other versions (all, or a
    /// random `sample`); `requireCompatible` refuses the deploy if one diverges (nothing is
    /// published); `migrate` moves every compatible run onto it (and needs the right to
    /// operate runs).
    #[graphql(guard = "Require(Permission::Deploy)")]
    // Each argument is an argument of the GraphQL field; a struct would change the schema.
    #[allow(clippy::too_many_arguments)]
    async fn deploy_definition(
        &self,
        ctx: &Context<'_>,
        source: String,
        note: Option<String>,
        #[graphql(default)] check: bool,
        #[graphql(default)] require_compatible: bool,
        #[graphql(default)] migrate: bool,
        sample: Option<u32>,
    ) -> Result<DeployResult> {
        let app = app(ctx)?;
        if migrate {
            // Moving runs in flight is operating them, whatever the source turns out to be.
            crate::server::auth::require(ctx, Permission::Operate)?;
        }
        let def = match load_source(source).await? {
            Ok(d) => d,
            Err(e) => {
                return Ok(DeployResult {
                    ok: false,
                    definition: None,
                    problems: e.problems.iter().map(Problem::from).collect(),
                    published: None,
                    message: None,
                    check: None,
                })
            }
        };
        let asked = super::replay::CheckAsked {
            check,
            require_compatible,
            migrate,
            sample: sample.map(|n| n as usize),
        };
        let report = super::replay::before_deploy(app, &def, asked).await?;
        if super::replay::refuses(report.as_ref(), asked) {
            return Ok(DeployResult {
                ok: false,
                definition: None,
                problems: vec![Problem {
                    pointer: String::new(),
                    line: None,
                    column: None,
                    message: super::replay::refusal(report.as_ref()),
                }],
                published: None,
                message: None,
                check: report.as_ref().map(super::replay::DeployCheck::from),
            });
        }
        let opts = PublishOptions {
            by: actor(ctx),
            note,
        };
        let d = app
            .runtime
            .publish(def, opts)
            .await
            .map_err(|e| errors::runtime("deploy definition", e))?;
        let r = &d.definition;
        let stored = app
            .store
            .definition_by_hash(&r.hash)
            .await
            .map_err(|e| errors::store("deploy definition", e))?
            .ok_or_else(|| errors::internal("deploy definition", "deployed but not found"))?;
        let message = if d.published {
            format!("published {}/{} {}", r.namespace, r.name, r.version)
        } else {
            format!(
                "{}/{} {} is already published with this content: nothing changed",
                r.namespace, r.name, r.version
            )
        };
        let check = super::replay::after_deploy(app, report, asked).await?;
        Ok(DeployResult {
            ok: true,
            definition: Some(Definition(stored)),
            problems: Vec::new(),
            published: Some(d.published),
            message: Some(message),
            check,
        })
    }

    /// Moves the head of a definition to the published version `to`: new runs that name no
    /// version start on it, runs in flight keep theirs. A new event in the definition's stream
    /// (nothing is deleted); `moved` is false when `to` was the head already.
    #[graphql(guard = "Require(Permission::Deploy)")]
    async fn rollback_definition(
        &self,
        ctx: &Context<'_>,
        namespace: String,
        name: String,
        to: String,
    ) -> Result<HeadChange> {
        let app = app(ctx)?;
        let defs = app.runtime.definitions();
        let (_, changed) = defs
            .roll_back(&namespace, &name, &to, &actor(ctx))
            .await
            .map_err(|e| errors::runtime("roll back definition", e))?;
        let definition = find_definition(app, &namespace, &name, &to).await?;
        Ok(HeadChange {
            definition: Definition(definition),
            changed,
        })
    }

    /// Deprecates a published version: new runs of it are refused (`CONFLICT`), runs in flight
    /// go on. The head cannot be deprecated (`CONFLICT`: roll back or deploy another version
    /// first). `changed` is false when it was deprecated already.
    #[graphql(guard = "Require(Permission::Deploy)")]
    async fn deprecate_definition_version(
        &self,
        ctx: &Context<'_>,
        namespace: String,
        name: String,
        version: String,
        reason: Option<String>,
    ) -> Result<HeadChange> {
        let app = app(ctx)?;
        let (_, changed) = app
            .runtime
            .definitions()
            .deprecate(&namespace, &name, &version, reason, &actor(ctx))
            .await
            .map_err(|e| errors::runtime("deprecate definition version", e))?;
        let definition = find_definition(app, &namespace, &name, &version).await?;
        Ok(HeadChange {
            definition: Definition(definition),
            changed,
        })
    }
}

/// The outcome of `rollbackDefinition` and `deprecateDefinitionVersion`.
#[derive(SimpleObject)]
pub struct HeadChange {
    /// The version concerned.
    pub definition: Definition,
    /// False when nothing changed (the head was there already, or the version was deprecated
    /// already).
    pub changed: bool,
}

/// Who the definitions' streams record for this request: the token's name.
fn actor(ctx: &Context<'_>) -> String {
    ctx.data_opt::<Principal>()
        .map_or_else(|| "anonymous".to_string(), |p| p.token_name.clone())
}

/// Parses and validates a definition's text on a blocking thread, off the threads that serve
/// requests; the request's timeout still bounds the answer.
async fn load_source(
    source: String,
) -> Result<std::result::Result<Workflow, dsl::ValidationErrors>> {
    tokio::task::spawn_blocking(move || dsl::load_str(&source, SourceFormat::Yaml))
        .await
        .map_err(|e| errors::internal("parse definition", e))
}

/// The outcome of `startRun`.
#[derive(SimpleObject)]
pub struct StartRunResult {
    /// The run.
    pub run: Run,
    /// False when the idempotency key named a run that already existed.
    pub created: bool,
}

/// Mutations on runs.
#[derive(Default)]
pub struct RunMutations;

#[Object]
impl RunMutations {
    /// Starts a run of a deployed definition (`definition`) or of a definition given as text
    /// (`source`: recorded for this run only, never deployed, so `latest` does not change; it
    /// needs the right to deploy as well as to operate). With an `idempotencyKey`, the same key
    /// returns the same run. A `correlationId` (1 to 256 characters, no control characters) is
    /// recorded with the run, and the runs list can be filtered by it.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn start_run(
        &self,
        ctx: &Context<'_>,
        definition: Option<DefinitionKey>,
        source: Option<String>,
        input: Option<Json<Value>>,
        idempotency_key: Option<String>,
        correlation_id: Option<String>,
    ) -> Result<StartRunResult> {
        let app = app(ctx)?;
        check_correlation_id(correlation_id.as_deref())?;
        let input = input.map(|j| j.0).unwrap_or_else(|| serde_json::json!({}));
        let opts = StartOptions {
            correlation_id,
            idempotency_key,
            ..StartOptions::default()
        };
        // Counted as started by the runtime (`cairn_runs_started_total`); an idempotency key
        // that names an existing run answers it (`created: false`).
        let started = match (definition, source) {
            (Some(k), None) => {
                app.runtime
                    .start_deployed(&k.namespace, &k.name, &k.version, input, opts)
                    .await
            }
            (None, Some(text)) => {
                // Running code nobody deployed is deploying it: it needs that right too.
                crate::server::auth::require(ctx, Permission::Deploy)?;
                let def = load_source(text).await?.map_err(|e| {
                    let problems: Vec<Value> = e
                        .problems
                        .iter()
                        .filter_map(|p| serde_json::to_value(p).ok())
                        .collect();
                    errors::error(Code::BadUserInput, "the definition is invalid").extend_with(
                        move |_, ext| {
                            if let Ok(v) =
                                async_graphql::Value::from_json(Value::Array(problems.clone()))
                            {
                                ext.set("problems", v);
                            }
                        },
                    )
                })?;
                app.runtime.start_inline(def, input, opts).await
            }
            _ => {
                return Err(errors::error(
                    Code::BadUserInput,
                    "give exactly one of `definition` and `source`",
                ))
            }
        }
        .map_err(|e| errors::runtime("start run", e))?;
        Ok(StartRunResult {
            run: Run::load(app.store.as_ref(), &started.run_id).await?,
            created: started.created,
        })
    }

    /// Delivers a CloudEvent to a run (for its `listen` tasks); duplicates (same `source` and
    /// `id`) are dropped.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn signal_run(&self, ctx: &Context<'_>, id: String, event: Json<Value>) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .signal(&id, event.0)
            .await
            .map_err(|e| errors::runtime("signal run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Cancels a run. With `compensate: true`, the compensations its completed tasks declare
    /// run first, in reverse order of completion, and the run ends `COMPENSATED` or
    /// `COMPENSATION_FAILED` (docs/compensation.md); a run with nothing to compensate is
    /// simply cancelled.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn cancel_run(
        &self,
        ctx: &Context<'_>,
        id: String,
        reason: Option<String>,
        #[graphql(default = false)] compensate: bool,
    ) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .cancel_with(&id, reason, compensate)
            .await
            .map_err(|e| errors::runtime("cancel run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Retries a faulted run from the task that failed.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn retry_run(&self, ctx: &Context<'_>, id: String) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .retry(&id)
            .await
            .map_err(|e| errors::runtime("retry run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Suspends a run: nothing new starts until it is resumed.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn suspend_run(&self, ctx: &Context<'_>, id: String) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .suspend(&id)
            .await
            .map_err(|e| errors::runtime("suspend run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Resumes a suspended run.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn resume_run(&self, ctx: &Context<'_>, id: String) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .resume(&id)
            .await
            .map_err(|e| errors::runtime("resume run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }
}
