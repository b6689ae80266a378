//! Error codes of the GraphQL API: every error a client sees carries `extensions.code`, one of
//! the stable codes below (the same words the CLI prints with `--json`), and never an internal
//! detail: infrastructure failures are logged here and answered with a generic message.

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
    NextValidation,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    ErrorExtensionValues, ErrorExtensions, Response, ServerError, ServerResult, ValidationResult,
    Variables,
};
use futures::StreamExt;
use std::sync::Arc;

/// A stable error code, sent as `extensions.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request is malformed or names something invalid (a bad query, argument or definition).
    BadUserInput,
    /// What the request names does not exist.
    NotFound,
    /// The request contradicts the current state (a run that has ended, a reused key).
    Conflict,
    /// The server is starting or draining and takes no requests.
    Unavailable,
    /// Something failed inside the server; details are in its log, not in the answer.
    Internal,
    /// No token, or an unknown or revoked one.
    Unauthenticated,
    /// The token's role does not allow the operation.
    Forbidden,
    /// The token sent more requests than its rate allows; retry after `Retry-After` seconds.
    RateLimited,
    /// The request took longer than the server's request timeout.
    Timeout,
    /// A cap of the server was reached (live subscriptions of a connection or a token).
    LimitExceeded,
}

impl Code {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::NotFound => "NOT_FOUND",
            Code::Conflict => "CONFLICT",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "INTERNAL",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::RateLimited => "RATE_LIMITED",
            Code::Timeout => "TIMEOUT",
            Code::LimitExceeded => "LIMIT_EXCEEDED",
        }
    }
}

impl From<cairn_runtime::ErrorClass> for Code {
    fn from(class: cairn_runtime::ErrorClass) -> Code {
        use cairn_runtime::ErrorClass as C;
        match class {
            C::NotFound => Code::NotFound,
            C::BadInput => Code::BadUserInput,
            C::Conflict => Code::Conflict,
            C::Unavailable => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

/// A GraphQL error with `extensions.code`.
pub fn error(code: Code, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code.as_str()))
}

/// The message every infrastructure failure is answered with.
const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

/// Logs an infrastructure failure and returns the generic `INTERNAL` error.
pub fn internal(what: &str, e: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(operation = what, error = %e, "request failed");
    error(Code::Internal, INTERNAL_MESSAGE)
}

/// Maps a runtime error to its code. Business outcomes keep their message (it names only what the
/// client sent); store and internal failures are logged and hidden.
pub fn runtime(what: &str, e: cairn_runtime::Error) -> async_graphql::Error {
    match Code::from(e.class()) {
        // Store failures and bugs are logged and hidden, whatever their class.
        Code::Unavailable | Code::Internal => internal(what, e),
        code => error(code, e.to_string()),
    }
}

/// Maps a store error (always an infrastructure failure from the API's point of view).
pub fn store(what: &str, e: cairn_runtime::store::StoreError) -> async_graphql::Error {
    internal(what, e)
}

/// Schema extension that gives the errors async-graphql produces itself a code: parse and
/// validation failures (including depth and complexity limits) are `BAD_USER_INPUT`; anything
/// else left without a code is `INTERNAL`.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

fn with_code(mut e: ServerError, code: Code) -> ServerError {
    let ext = e
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    if ext.get("code").is_none() {
        ext.set("code", code.as_str());
    }
    e
}

fn fill_codes(mut resp: Response) -> Response {
    resp.errors = resp
        .errors
        .into_iter()
        .map(|e| {
            // Input coercion inside a resolver is the client's mistake too.
            let code = if e.message.starts_with("Failed to parse")
                || e.message.starts_with("Invalid value")
                || e.message.starts_with("Unknown")
            {
                Code::BadUserInput
            } else {
                Code::Internal
            };
            with_code(e, code)
        })
        .collect();
    resp
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        fill_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(fill_codes).boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, Code::BadUserInput))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errs| {
            errs.into_iter()
                .map(|e| with_code(e, Code::BadUserInput))
                .collect()
        })
    }
}

/// Schema extension of `--no-introspection`: a document that selects `__schema` or `__type`
/// is refused with `BAD_USER_INPUT` (async-graphql alone would answer `null` without an error).
pub struct NoIntrospection;

impl ExtensionFactory for NoIntrospection {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(NoIntrospection)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for NoIntrospection {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let mut seen = std::collections::HashSet::new();
        for (_, op) in doc.operations.iter() {
            if introspects(&op.node.selection_set.node, &doc, &mut seen) {
                return Err(with_code(
                    ServerError::new("introspection is disabled on this server", None),
                    Code::BadUserInput,
                ));
            }
        }
        Ok(doc)
    }
}

/// Whether a root selection set selects `__schema` or `__type` (through fragments too).
fn introspects<'d>(
    set: &'d async_graphql::parser::types::SelectionSet,
    doc: &'d ExecutableDocument,
    seen: &mut std::collections::HashSet<&'d str>,
) -> bool {
    use async_graphql::parser::types::Selection;
    set.items.iter().any(|item| match &item.node {
        Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
        Selection::InlineFragment(f) => introspects(&f.node.selection_set.node, doc, seen),
        Selection::FragmentSpread(s) => {
            let name = s.node.fragment_name.node.as_str();
            seen.insert(name)
                && doc
                    .fragments
                    .get(name)
                    .is_some_and(|f| introspects(&f.node.selection_set.node, doc, seen))
        }
    })
}
