//! The spec's lifecycle CloudEvents (`io.serverlessworkflow.task.started.v1`, ...) derived from
//! run events.
