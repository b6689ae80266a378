//! The boundary between deciding and doing: a recorded [`ActivityCall`] is handed to an
//! [`ActivityHandler`] (HTTP in `cairn-connectors`, Rust functions registered by an embedding
//! application), whose result is recorded before the run goes on.

use std::sync::Arc;

use serde_json::Value;

use crate::error::WorkflowError;
use crate::events::{ActivityCall, FrameId};

/// Identity of one execution of an activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityContext {
    /// The run.
    pub run_id: String,
    /// The `call` activation.
    pub frame: FrameId,
    /// JSON pointer of the task.
    pub position: String,
    /// Retry attempt of the nearest `try` (0 for the first).
    pub attempt: u32,
    /// `Idempotency-Key`: the same for every execution of this activation and attempt.
    pub idempotency_key: String,
}

/// Performs recorded side effects. Called at least once per scheduled activity: after a crash
/// the same call may arrive again with the same idempotency key.
#[async_trait::async_trait]
pub trait ActivityHandler: Send + Sync + 'static {
    /// Performs `call` and returns its raw result.
    async fn call(
        &self,
        ctx: &ActivityContext,
        call: &ActivityCall,
    ) -> Result<Value, WorkflowError>;
}

/// Where secrets (`use.secrets`, `$secrets`, secret-based authentication) come from.
pub trait SecretSource: Send + Sync + 'static {
    /// The secret's value, if it exists.
    fn get(&self, name: &str) -> Option<Value>;
    /// All secrets, for binding `$secrets`.
    fn all(&self) -> serde_json::Map<String, Value>;
}

/// No secrets at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn get(&self, _name: &str) -> Option<Value> {
        None
    }
    fn all(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }
}

/// A shared secret source.
pub type Secrets = Arc<dyn SecretSource>;
