//! What every resolver shares: the runtime and the services of the server.

use std::sync::Arc;

use async_graphql::{Context, Result};
use cairn_runtime::store::EventStore;
use cairn_runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::server::errors::{self};
use crate::server::feed::LogFeed;
use crate::server::metrics::Metrics;

/// What resolvers share: the runtime and the services of the server.
#[derive(Clone)]
pub struct App {
    /// The runtime (a worker, or a client under `--no-workers`).
    pub runtime: Runtime,
    /// Its store.
    pub store: Arc<dyn EventStore>,
    /// The log follower.
    pub feed: LogFeed,
    /// Metrics.
    pub metrics: Metrics,
    /// Cancelled when the server drains: subscriptions end.
    pub shutdown: CancellationToken,
}

pub fn app<'a>(ctx: &Context<'a>) -> Result<&'a App> {
    ctx.data::<App>()
        .map_err(|e| errors::internal("context", e.message))
}
