//! `call: openapi`: turns a recorded [`OpenApiRequest`] into an [`HttpRequest`] by reading the
//! operation out of its OpenAPI 3.x or Swagger 2.0 document, then sends it through
//! [`HttpConnector::execute`], so `Idempotency-Key`, authentication, outputs and error mapping
//! are those of `call: http`.
//!
//! - The document is fetched with a GET on its URI (JSON or YAML), following redirects, and kept
//!   in a small per-connector cache for [`DOCUMENT_TTL`].
//! - The operation is found by `operationId` across `paths`; path-level parameters are merged
//!   with the operation's (the operation's win), and local `$ref`s are resolved.
//! - Swagger 2.0: the base URL is `schemes` + `host` + `basePath` (the document's own scheme and
//!   host when absent); parameters are `in: path | query | header | body | formData`.
//! - OpenAPI 3.x: the base URL is the first `servers` entry (operation, then path item, then
//!   document) with its variables set to their defaults, resolved against the document URI;
//!   parameters are `in: path | query | header | cookie`, and the `requestBody` is the `body`
//!   argument or, failing that, the arguments no declared parameter consumed.
//!
//! Building the request does no I/O ([`build_request`]); only fetching the document does.
//! The document is not recorded: the request built from it is sent at most once per attempt,
//! and its result is what the run's event log keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::activity::ActivityContext;
use cairn_core::events::OpenApiRequest;
use cairn_core::sealed::{FromSource, Revealer};
use cairn_core::{ErrorKind, WorkflowError};
use reqwest::header::ACCEPT;
use reqwest::{Method, Url};
use serde_json::Value;
use tracing::Instrument as _;

use crate::http::{redact_uri, redact_uri_str, HttpSender};

mod request;
#[cfg(test)]
mod tests;

pub use request::build_request;
use request::configuration;

/// How long a fetched document is reused before it is fetched again.
pub const DOCUMENT_TTL: Duration = Duration::from_secs(5 * 60);

/// How many documents a connector keeps; the oldest is dropped to make room.
pub const DOCUMENT_CACHE_CAPACITY: usize = 32;

/// Parsed OpenAPI documents by URI, each kept for [`DOCUMENT_TTL`], at most
/// [`DOCUMENT_CACHE_CAPACITY`] of them. Shared by the clones of a connector.
#[derive(Debug, Default)]
pub(crate) struct DocumentCache {
    entries: Mutex<HashMap<String, CachedDocument>>,
}

#[derive(Debug)]
struct CachedDocument {
    fetched: Instant,
    /// Insertion order, so eviction does not depend on the clock's resolution.
    seq: u64,
    document: Arc<Value>,
}

impl DocumentCache {
    /// The cached document of `uri`, unless it is missing or expired.
    fn get(&self, uri: &str) -> Option<Arc<Value>> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(uri) {
            Some(e) if e.fetched.elapsed() < DOCUMENT_TTL => Some(e.document.clone()),
            Some(_) => {
                entries.remove(uri);
                None
            }
            None => None,
        }
    }

    /// Keeps `document` for `uri`, dropping expired entries and, when still full, the oldest.
    fn insert(&self, uri: &str, document: Arc<Value>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        entries.retain(|_, e| e.fetched.elapsed() < DOCUMENT_TTL);
        let seq = entries.values().map(|e| e.seq + 1).max().unwrap_or(0);
        entries.remove(uri);
        while entries.len() >= DOCUMENT_CACHE_CAPACITY {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => entries.remove(&k),
                None => break,
            };
        }
        entries.insert(
            uri.to_string(),
            CachedDocument {
                fetched: Instant::now(),
                seq,
                document,
            },
        );
    }
}

/// `call: openapi` for a connector: `sender` sends, `documents` caches what it fetched.
pub(crate) struct OpenApi<'a> {
    pub(crate) sender: &'a HttpSender,
    pub(crate) documents: &'a DocumentCache,
}

impl OpenApi<'_> {
    /// Performs a `call: openapi`: fetches (or reuses) the document, builds the operation's
    /// request and sends it with [`HttpSender::execute`] (errors: see
    /// [`crate::HttpConnector::execute_openapi`]).
    pub(crate) async fn execute(
        &self,
        ctx: &ActivityContext,
        req: &OpenApiRequest,
    ) -> Result<Value, WorkflowError> {
        let span = tracing::debug_span!(
            "openapi_call",
            run_id = %ctx.run_id,
            position = %ctx.position,
            document = %redact_uri_str(&req.document),
            operation_id = %req.operation_id,
        );
        async {
            // A document URI made from a secret is revealed only to fetch it; the operation's
            // own request keeps its placeholders until `execute` sends it.
            let source = FromSource(&*self.sender.secrets);
            let mut revealer = Revealer::new(req.seal.as_deref(), &source);
            let document_uri = revealer
                .text(&req.document)
                .map_err(|e| WorkflowError::from(e).at(&ctx.position))?
                .into_owned();
            let (document_uri, document) = self
                .openapi_document(&document_uri)
                .await
                .map_err(|e| revealer.scrub_error(e).at(&ctx.position))?;
            let http =
                build_request(&document, &document_uri, req).map_err(|e| e.at(&ctx.position))?;
            self.sender.execute(ctx, &http).await
        }
        .instrument(span)
        .await
    }

    /// The parsed document at `uri`, from the cache or fetched.
    async fn openapi_document(&self, uri: &str) -> Result<(Url, Arc<Value>), WorkflowError> {
        let url = Url::parse(uri).map_err(|e| {
            configuration(format!(
                "invalid openapi document uri {}: {e}",
                redact_uri_str(uri)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(configuration(format!(
                "unsupported scheme {:?} of the openapi document {}: only http and https are \
                 supported",
                url.scheme(),
                redact_uri(&url)
            )));
        }
        if let Some(document) = self.documents.get(uri) {
            tracing::debug!("openapi document from cache");
            return Ok((url, document));
        }

        let shown = redact_uri(&url);
        let method = Method::GET;
        self.sender
            .check_destination(&url, &method, &shown)
            .map_err(|e| fetch_error(e, &shown))?;
        let mut response = self
            .sender
            .following
            .get(url.clone())
            .header(
                ACCEPT,
                "application/json, application/yaml;q=0.9, text/yaml;q=0.9, */*;q=0.5",
            )
            .send()
            .await
            .map_err(|e| fetch_error(self.sender.transport_error(&e, &method, &shown), &shown))?;
        let status = response.status();
        if !status.is_success() {
            let line = match status.canonical_reason() {
                Some(reason) => format!("{} {reason}", status.as_u16()),
                None => status.as_u16().to_string(),
            };
            return Err(WorkflowError::new(
                ErrorKind::Communication,
                format!("cannot fetch the openapi document {shown}: it returned {line}"),
            )
            .with_status(status.as_u16())
            .with_title("OpenAPI document unavailable"));
        }
        let body = self
            .sender
            .read_body(&mut response, &method, &shown)
            .await
            .map_err(|e| fetch_error(e, &shown))?;
        let bytes = body.len();
        // Off the async threads: a large YAML document takes a while to parse.
        let document = tokio::task::spawn_blocking(move || parse_document(&body))
            .await
            .unwrap_or_else(|e| Err(format!("its parser failed: {e}")))
            .map_err(|e| {
                configuration(format!(
                    "the openapi document {shown} is neither JSON nor YAML: {e}"
                ))
            })?;
        if !document.is_object() {
            return Err(configuration(format!(
                "the openapi document {shown} is not an object"
            )));
        }
        tracing::debug!(bytes, "openapi document fetched");
        let document = Arc::new(document);
        self.documents.insert(uri, document.clone());
        Ok((url, document))
    }
}

/// Says which document a transport error was about, keeping its kind and status.
fn fetch_error(mut e: WorkflowError, shown: &str) -> WorkflowError {
    let detail = e.detail.take().unwrap_or_default();
    e.detail = Some(format!(
        "cannot fetch the openapi document {shown}: {detail}"
    ));
    e.with_title("OpenAPI document unavailable")
}

/// Parses a document as JSON, or as YAML when it is not JSON. Text nested deeper than the
/// parsers go is refused first, in one linear pass: the YAML parser would spend time quadratic
/// in the depth finding out.
pub(super) fn parse_document(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    if let Err((line, column)) = cairn_core::dsl::check_nesting(text) {
        return Err(format!(
            "it is nested deeper than {} levels (line {line}, column {column})",
            cairn_core::dsl::MAX_NESTING
        ));
    }
    let json_error = match serde_json::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    match serde_norway::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        // Report the error of the syntax the document seems to be written in.
        Err(_) if text.trim_start().starts_with(['{', '[']) => Err(json_error.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
