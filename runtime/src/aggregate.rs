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
                    services.decider.decide(&self.0, &mut input)
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
