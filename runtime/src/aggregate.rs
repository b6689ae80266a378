//! The run as a cqrs-es aggregate: commands in, events out, state a fold.
//!
//! The aggregate is a thin shell over the pure core: [`RunState::apply`] folds, and the
//! [`Decider`] turns a command plus the state into events. Keeping it a cqrs-es `Aggregate`
//! lets cqrs-es tooling (its `CqrsFramework`, its test fixtures, its persisted event stores
//! through [`crate::store::cqrs`]) work on runs unchanged.

use std::sync::Arc;

use cairn_core::decider::{DecideInput, Decider};
use cairn_core::events::{RunEvent, EVENT_VERSION};
use cairn_core::state::RunState;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A run event in the form cqrs-es persists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunEventEnvelope(pub RunEvent);

impl DomainEvent for RunEventEnvelope {
    fn event_type(&self) -> String {
        self.0.event_type().to_string()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// A run aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunAggregate(pub RunState);

/// A command to a run.
#[derive(Debug, Clone)]
pub enum RunCommand {
    /// Record facts from outside (a call result, a fired timer, a delivered event, a cancel),
    /// then decide what follows.
    Advance {
        /// Facts to record first.
        facts: Vec<RunEvent>,
        /// The time now.
        now: i64,
    },
}

/// What the aggregate needs to decide.
pub struct RunServices {
    /// The decider of the run's definition.
    pub decider: Arc<Decider>,
    /// Secrets bound as `$secrets`.
    pub secrets: Map<String, Value>,
    /// Set when the last decision stopped at one of its bounds (events or interpreter steps)
    /// with work left, so that the caller goes on in another batch.
    pub more: std::sync::atomic::AtomicBool,
}

/// A command rejected by the aggregate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunCommandError {
    /// The run has ended; nothing more can be recorded.
    #[error("run {0} has already ended")]
    Ended(String),
}

impl Aggregate for RunAggregate {
    const TYPE: &'static str = crate::store::RUN_AGGREGATE;
    type Command = RunCommand;
    type Event = RunEventEnvelope;
    type Error = RunCommandError;
    type Services = RunServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            RunCommand::Advance { facts, now } => {
                let reopens = facts
                    .iter()
                    .all(|f| matches!(f, RunEvent::RunRetried { .. }));
                if self.0.status.is_terminal() && !facts.is_empty() && !reopens {
                    return Err(RunCommandError::Ended(self.0.run_id.clone()));
                }
                for e in facts {
                    sink.write(RunEventEnvelope(e), self).await;
                }
                let decided = {
                    let mut entropy = rand::random::<u64>;
                    let mut input = DecideInput {
                        now,
                        secrets: &services.secrets,
                        entropy: &mut entropy,
                    };
                    // A panic while deciding (a bug in the decider or the interpreter) faults
                    // this run alone, with an event that says why, instead of unwinding through
                    // the worker and leaving the run to crash every worker that claims it.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        services.decider.decide_batch(&self.0, &mut input)
                    })) {
                        Ok(d) => {
                            services
                                .more
                                .store(d.more, std::sync::atomic::Ordering::Relaxed);
                            d.events
                        }
                        Err(panic) => vec![decider_panicked(&*panic, now)],
                    }
                };
                for e in decided {
                    sink.write(RunEventEnvelope(e), self).await;
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        self.0.apply(&event.0);
    }
}

/// The message of a caught panic (a `&str` or `String` payload, as `panic!` makes them).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The fault recorded for a run whose decision panicked.
fn decider_panicked(panic: &(dyn std::any::Any + Send), now: i64) -> RunEvent {
    let error = cairn_core::error::WorkflowError::new(
        cairn_core::error::ErrorKind::Runtime,
        format!(
            "deciding the run's next step panicked: {}; this is a bug in Cairn, please report it \
             with the run's history",
            panic_message(panic)
        ),
    )
    .with_title("Decider panicked");
    RunEvent::RunFaulted {
        error,
        at: now,
        resumable: true,
    }
}

/// Runs `command` on `state` and returns the new events (already applied to `state`).
pub async fn execute(
    state: &mut RunState,
    command: RunCommand,
    services: &RunServices,
) -> Result<Vec<RunEvent>, RunCommandError> {
    let mut agg = RunAggregate(std::mem::take(state));
    let sink = EventSink::default();
    let r = agg.handle(command, services, &sink).await;
    *state = agg.0;
    r?;
    Ok(sink.collect().await.into_iter().map(|e| e.0).collect())
}

#[cfg(test)]
mod tests {
    //! Given events, when a command, then events: the aggregate with no database.

    use super::*;
    use cairn_core::dsl::{load_str, SourceFormat};
    use cairn_core::events::DefinitionRef;
    use cairn_core::WorkflowError;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    const T: i64 = 1_767_225_600_000;

    fn services(yaml: &str) -> RunServices {
        let def = load_str(yaml, SourceFormat::Yaml).expect("valid workflow");
        RunServices {
            decider: Arc::new(Decider::new(Arc::new(def))),
            secrets: Map::new(),
            more: Default::default(),
        }
    }

    fn started() -> RunEventEnvelope {
        RunEventEnvelope(RunEvent::RunStarted {
            run_id: "r1".into(),
            definition: DefinitionRef {
                namespace: "t".into(),
                name: "w".into(),
                version: "1.0.0".into(),
                hash: "h".into(),
            },
            input: json!({ "n": 1 }),
            at: T,
            parent: None,
            correlation_id: None,
        })
    }

    const ONE_CALL: &str = r#"
document: { dsl: '1.0.3', namespace: t, name: w, version: '1.0.0' }
do:
  - work: { call: work }
"#;

    fn scheduled() -> Vec<RunEventEnvelope> {
        vec![
            started(),
            // The run's input is stored once, in `RunStarted` (events v2).
            RunEventEnvelope(RunEvent::WorkflowInputAccepted { input: None }),
            RunEventEnvelope(RunEvent::TaskStarted {
                id: 1,
                parent: 0,
                index: 0,
                position: "/do/0/work".into(),
                name: "work".into(),
                kind: "call".into(),
                raw_input: None,
                input: None,
                at: T,
            }),
            RunEventEnvelope(RunEvent::ActivityScheduled {
                id: 1,
                attempt: 0,
                idempotency_key: "r1:1:0".into(),
                call: cairn_core::events::ActivityCall::Function {
                    name: "work".into(),
                    arguments: json!({}),
                    input: json!({ "n": 1 }),
                    seal: None,
                },
            }),
        ]
    }

    #[test]
    fn a_new_run_is_decided_up_to_its_first_call() {
        let mut expected = scheduled();
        let start = expected.remove(0);
        TestFramework::<RunAggregate>::with(services(ONE_CALL))
            .given_no_previous_events()
            .when(RunCommand::Advance {
                facts: vec![start.0],
                now: T,
            })
            .then_expect_events([vec![started()], expected].concat());
    }

    #[test]
    fn a_call_result_completes_the_task_and_the_run() {
        TestFramework::<RunAggregate>::with(services(ONE_CALL))
            .given(scheduled())
            .when(RunCommand::Advance {
                facts: vec![RunEvent::ActivityCompleted {
                    id: 1,
                    result: json!({ "ok": true }),
                    at: T + 5,
                }],
                now: T + 5,
            })
            .then_expect_events(vec![
                RunEventEnvelope(RunEvent::ActivityCompleted {
                    id: 1,
                    result: json!({ "ok": true }),
                    at: T + 5,
                }),
                RunEventEnvelope(RunEvent::TaskCompleted {
                    id: 1,
                    output: json!({ "ok": true }),
                    context: None,
                    then: None,
                    compensation: None,
                    at: T + 5,
                }),
                RunEventEnvelope(RunEvent::RunCompleted {
                    output: json!({ "ok": true }),
                    at: T + 5,
                }),
            ]);
    }

    #[test]
    fn an_uncaught_call_error_faults_the_run_with_the_task_pointer() {
        let error =
            WorkflowError::new(cairn_core::ErrorKind::Communication, "down").with_status(503);
        let events = TestFramework::<RunAggregate>::with(services(ONE_CALL))
            .given(scheduled())
            .when(RunCommand::Advance {
                facts: vec![RunEvent::ActivityFailed {
                    id: 1,
                    error,
                    at: T + 1,
                }],
                now: T + 1,
            })
            .inspect_result()
            .expect("accepted");
        match &events.last().map(|e| &e.0) {
            Some(RunEvent::RunFaulted { error, .. }) => {
                assert_eq!(error.status, 503);
                assert_eq!(error.instance.as_deref(), Some("/do/0/work"));
            }
            other => panic!("expected RunFaulted, got {other:?}"),
        }
    }

    #[test]
    fn an_ended_run_rejects_new_facts() {
        let mut given = scheduled();
        given.push(RunEventEnvelope(RunEvent::RunCancelled {
            reason: None,
            at: T + 1,
        }));
        TestFramework::<RunAggregate>::with(services(ONE_CALL))
            .given(given)
            .when(RunCommand::Advance {
                facts: vec![RunEvent::ActivityCompleted {
                    id: 1,
                    result: json!(1),
                    at: T + 2,
                }],
                now: T + 2,
            })
            .then_expect_error_message("run r1 has already ended");
    }
}
