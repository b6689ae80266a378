//! Rust functions that definitions call with `call: NAME`, and the router that sends each
//! recorded activity to whoever performs it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cairn_core::activity::{ActivityContext, ActivityHandler};
use cairn_core::error::{ErrorKind, WorkflowError};
use cairn_core::events::ActivityCall;
use serde_json::Value;

/// What a registered function receives.
#[derive(Debug, Clone)]
pub struct FunctionCall {
    /// The evaluated `with` arguments.
    pub arguments: Value,
    /// The task's transformed input.
    pub input: Value,
    /// Identity of this execution; `ctx.idempotency_key` is stable across re-executions.
    pub ctx: ActivityContext,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Value, WorkflowError>> + Send>>;
type DynFunction = Arc<dyn Fn(FunctionCall) -> BoxFuture + Send + Sync>;

/// Functions registered by the embedding application.
#[derive(Clone, Default)]
pub struct Functions {
    map: HashMap<String, DynFunction>,
}

impl Functions {
    /// Registers `f` under `name`; a definition calls it with `call: name`.
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, f: F)
    where
        F: Fn(FunctionCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, WorkflowError>> + Send + 'static,
    {
        self.map
            .insert(name.into(), Arc::new(move |c| Box::pin(f(c))));
    }

    /// Whether a function of that name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}

/// Sends HTTP calls to the HTTP connector and function calls to registered functions.
pub struct Router {
    http: Option<Arc<dyn ActivityHandler>>,
    functions: Functions,
}

impl Router {
    /// A router; `http` performs `call: http` (None: such calls fail with a clear error).
    pub fn new(http: Option<Arc<dyn ActivityHandler>>, functions: Functions) -> Self {
        Router { http, functions }
    }
}

#[async_trait::async_trait]
impl ActivityHandler for Router {
    async fn call(
        &self,
        ctx: &ActivityContext,
        call: &ActivityCall,
    ) -> Result<Value, WorkflowError> {
        match call {
            ActivityCall::Http(_) | ActivityCall::OpenApi(_) => match &self.http {
                Some(h) => h.call(ctx, call).await,
                None => Err(WorkflowError::new(
                    ErrorKind::Configuration,
                    "no http connector is configured in this runtime",
                )),
            },
            ActivityCall::Function {
                name,
                arguments,
                input,
                ..
            } => match self.functions.map.get(name) {
                Some(f) => {
                    f(FunctionCall {
                        arguments: arguments.clone(),
                        input: input.clone(),
                        ctx: ctx.clone(),
                    })
                    .await
                }
                None => Err(WorkflowError::new(
                    ErrorKind::Configuration,
                    format!("no function named `{name}` is registered with this runtime"),
                )
                .with_title("Unknown function")),
            },
        }
    }
}
