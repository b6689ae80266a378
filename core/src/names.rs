//! The names Cairn stores and shows, spelled once: the type names of run events and definition
//! events (stored beside each payload, matched by the API's feeds) and the status labels of runs (stored in the runs
//! index, filtered on by `runs`, mapped to the GraphQL `RunStatus`). Everything else refers to
//! these, so a rename is one edit and a typo is a compile error.

/// The stored type name of each [`crate::events::RunEvent`] variant.
pub mod event {
    /// `RunStarted`.
    pub const RUN_STARTED: &str = "RunStarted";
    /// `WorkflowInputAccepted`.
    pub const WORKFLOW_INPUT_ACCEPTED: &str = "WorkflowInputAccepted";
    /// `TaskStarted`.
    pub const TASK_STARTED: &str = "TaskStarted";
    /// `TaskSkipped`.
    pub const TASK_SKIPPED: &str = "TaskSkipped";
    /// `IterationStarted`.
    pub const ITERATION_STARTED: &str = "IterationStarted";
    /// `ActivityScheduled`.
    pub const ACTIVITY_SCHEDULED: &str = "ActivityScheduled";
    /// `ActivityCompleted`.
    pub const ACTIVITY_COMPLETED: &str = "ActivityCompleted";
    /// `ActivityFailed`.
    pub const ACTIVITY_FAILED: &str = "ActivityFailed";
    /// `TimerScheduled`.
    pub const TIMER_SCHEDULED: &str = "TimerScheduled";
    /// `TimerFired`.
    pub const TIMER_FIRED: &str = "TimerFired";
    /// `EventReceived`.
    pub const EVENT_RECEIVED: &str = "EventReceived";
    /// `EventsConsumed`.
    pub const EVENTS_CONSUMED: &str = "EventsConsumed";
    /// `EventEmitted`.
    pub const EVENT_EMITTED: &str = "EventEmitted";
    /// `RetryScheduled`.
    pub const RETRY_SCHEDULED: &str = "RetryScheduled";
    /// `TaskRetried`.
    pub const TASK_RETRIED: &str = "TaskRetried";
    /// `ErrorCaught`.
    pub const ERROR_CAUGHT: &str = "ErrorCaught";
    /// `ChildRunRequested`.
    pub const CHILD_RUN_REQUESTED: &str = "ChildRunRequested";
    /// `ChildRunFinished`.
    pub const CHILD_RUN_FINISHED: &str = "ChildRunFinished";
    /// `TaskCompleted`.
    pub const TASK_COMPLETED: &str = "TaskCompleted";
    /// `TaskFaulted`.
    pub const TASK_FAULTED: &str = "TaskFaulted";
    /// `TaskCancelled`.
    pub const TASK_CANCELLED: &str = "TaskCancelled";
    /// `RunSuspended`.
    pub const RUN_SUSPENDED: &str = "RunSuspended";
    /// `RunResumed`.
    pub const RUN_RESUMED: &str = "RunResumed";
    /// `RunRetried`.
    pub const RUN_RETRIED: &str = "RunRetried";
    /// `RunCompleted`.
    pub const RUN_COMPLETED: &str = "RunCompleted";
    /// `RunFaulted`.
    pub const RUN_FAULTED: &str = "RunFaulted";
    /// `RunCancelled`.
    pub const RUN_CANCELLED: &str = "RunCancelled";

    // Compensation (a Cairn extension of the DSL, docs/compensation.md).
    /// `RunCompensating`.
    pub const RUN_COMPENSATING: &str = "RunCompensating";
    /// `CompensationStarted`.
    pub const COMPENSATION_STARTED: &str = "CompensationStarted";
    /// `RunCompensated`.
    pub const RUN_COMPENSATED: &str = "RunCompensated";
    /// `RunMigrated`.
    pub const RUN_MIGRATED: &str = "RunMigrated";
}

/// The stored type name of each [`crate::definition::DefinitionEvent`] variant (a definition's
/// own stream).
pub mod definition_event {
    /// `VersionPublished`.
    pub const VERSION_PUBLISHED: &str = "VersionPublished";
    /// `HeadMoved`.
    pub const HEAD_MOVED: &str = "HeadMoved";
    /// `VersionDeprecated`.
    pub const VERSION_DEPRECATED: &str = "VersionDeprecated";
}

/// The label of a run in the runs index and everywhere a run's status is shown: its
/// [`crate::state::RunStatus`], except that a running run with nothing to do but wait (for a
/// timer, an event, a sub-workflow or a retry's delay) is `waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusLabel {
    /// Recorded, not started yet.
    Pending,
    /// Executing.
    Running,
    /// Running, but only waiting for a timer, an event, a sub-workflow or a retry's delay.
    Waiting,
    /// Paused by an operator.
    Suspended,
    /// Finished with an output.
    Completed,
    /// Finished with an uncaught error.
    Faulted,
    /// Cancelled.
    Cancelled,
    /// Undoing the side effects of its completed tasks (running their compensations), after an
    /// unhandled fault or a `cancel --compensate`.
    Compensating,
    /// Ended after every compensation completed.
    Compensated,
    /// Ended after compensating, with at least one compensation that faulted.
    CompensationFailed,
}

impl StatusLabel {
    /// Every label, in lifecycle order.
    pub const ALL: [StatusLabel; 10] = [
        StatusLabel::Pending,
        StatusLabel::Running,
        StatusLabel::Waiting,
        StatusLabel::Suspended,
        StatusLabel::Compensating,
        StatusLabel::Completed,
        StatusLabel::Faulted,
        StatusLabel::Cancelled,
        StatusLabel::Compensated,
        StatusLabel::CompensationFailed,
    ];

    /// The labels of runs that have not ended.
    pub const OPEN: [StatusLabel; 5] = [
        StatusLabel::Pending,
        StatusLabel::Running,
        StatusLabel::Waiting,
        StatusLabel::Suspended,
        StatusLabel::Compensating,
    ];

    /// The labels of runs a worker may still have something to do for: open and not suspended
    /// (what `cairn worker --exit-when-idle` watches).
    pub const ACTIVE: [StatusLabel; 4] = [
        StatusLabel::Pending,
        StatusLabel::Running,
        StatusLabel::Waiting,
        StatusLabel::Compensating,
    ];

    /// The labels of runs that have ended.
    pub const ENDED: [StatusLabel; 5] = [
        StatusLabel::Completed,
        StatusLabel::Faulted,
        StatusLabel::Cancelled,
        StatusLabel::Compensated,
        StatusLabel::CompensationFailed,
    ];

    /// The lowercase label as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusLabel::Pending => "pending",
            StatusLabel::Running => "running",
            StatusLabel::Waiting => "waiting",
            StatusLabel::Suspended => "suspended",
            StatusLabel::Completed => "completed",
            StatusLabel::Faulted => "faulted",
            StatusLabel::Cancelled => "cancelled",
            StatusLabel::Compensating => "compensating",
            StatusLabel::Compensated => "compensated",
            StatusLabel::CompensationFailed => "compensation_failed",
        }
    }

    /// The label spelled `s`, if it is one.
    pub fn parse(s: &str) -> Option<StatusLabel> {
        StatusLabel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl std::fmt::Display for StatusLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for l in StatusLabel::ALL {
            assert_eq!(StatusLabel::parse(l.as_str()), Some(l));
            // Every label is open or ended, never both; active ones are open.
            assert_ne!(
                StatusLabel::OPEN.contains(&l),
                StatusLabel::ENDED.contains(&l)
            );
        }
        assert!(StatusLabel::ACTIVE
            .iter()
            .all(|l| StatusLabel::OPEN.contains(l)));
        assert_eq!(StatusLabel::parse("Running"), None);
    }
}
