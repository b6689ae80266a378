//! The connector a runtime is given for `call: http` and `call: openapi`.
//!
//! A module of its own so that the layers point one way: [`crate::http`] sends a recorded
//! request and knows nothing of OpenAPI; [`crate::openapi`] fetches documents and builds
//! requests on top of it; this module routes each recorded call to one of them.

use std::sync::Arc;

use cairn_core::activity::{ActivityContext, ActivityHandler, Secrets};
use cairn_core::events::{ActivityCall, HttpRequest, OpenApiRequest};
use cairn_core::{ErrorKind, WorkflowError};
use serde_json::Value;

use crate::guard::SystemResolver;
use crate::http::{HttpOptions, HttpSender};
use crate::openapi::{DocumentCache, OpenApi};

/// Performs `call: http` and `call: openapi` activities.
///
/// Cheap to clone: clones share the connection pools, the secret source and the cache of
/// OpenAPI documents.
#[derive(Clone, Debug)]
pub struct HttpConnector {
    sender: HttpSender,
    /// OpenAPI documents of `call: openapi`, shared by clones.
    documents: Arc<DocumentCache>,
}

impl HttpConnector {
    /// Builds a connector. `secrets` resolves [`cairn_core::events::HttpAuth::BasicSecret`] (an
    /// object with string `username` and `password`) and
    /// [`cairn_core::events::HttpAuth::BearerSecret`] (an object with a string `token`, or the
    /// token itself as a string).
    pub fn new(options: HttpOptions, secrets: Secrets) -> crate::Result<Self> {
        Self::with_resolver(options, secrets, Arc::new(SystemResolver))
    }

    /// [`HttpConnector::new`] resolving host names with `resolver` (the outbound guard still
    /// checks every address it returns).
    pub fn with_resolver(
        options: HttpOptions,
        secrets: Secrets,
        resolver: Arc<dyn reqwest::dns::Resolve>,
    ) -> crate::Result<Self> {
        Ok(HttpConnector {
            sender: HttpSender::with_resolver(options, secrets, resolver)?,
            documents: Arc::default(),
        })
    }

    /// The options this connector was built with.
    pub fn options(&self) -> &HttpOptions {
        self.sender.options()
    }

    /// Performs a `call: http`: sends `req` and returns the output its `output` format asks
    /// for (see [`HttpSender::execute`]).
    pub async fn execute(
        &self,
        ctx: &ActivityContext,
        req: &HttpRequest,
    ) -> Result<Value, WorkflowError> {
        self.sender.execute(ctx, req).await
    }

    /// Performs a `call: openapi`: fetches (or reuses) the document, builds the operation's
    /// request and sends it as `call: http` would.
    ///
    /// Errors carry `instance = ctx.position`. A document that cannot be fetched is a
    /// `communication` error (the response's status, or 503 when no response arrived); an
    /// unknown operation, a missing required parameter or an unusable document is a
    /// `configuration` error (400).
    pub async fn execute_openapi(
        &self,
        ctx: &ActivityContext,
        req: &OpenApiRequest,
    ) -> Result<Value, WorkflowError> {
        OpenApi {
            sender: &self.sender,
            documents: &self.documents,
        }
        .execute(ctx, req)
        .await
    }
}

#[async_trait::async_trait]
impl ActivityHandler for HttpConnector {
    async fn call(
        &self,
        ctx: &ActivityContext,
        call: &ActivityCall,
    ) -> Result<Value, WorkflowError> {
        match call {
            ActivityCall::Http(req) => self.execute(ctx, req).await,
            ActivityCall::OpenApi(req) => self.execute_openapi(ctx, req).await,
            ActivityCall::Function { name, .. } => Err(WorkflowError::new(
                ErrorKind::Runtime,
                format!(
                    "the http connector cannot perform a call of function {name:?}; \
                     register a handler for functions"
                ),
            )
            .at(&ctx.position)),
        }
    }
}
