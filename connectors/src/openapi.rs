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

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::activity::ActivityContext;
use cairn_core::events::{HttpRequest, OpenApiRequest};
use cairn_core::sealed::{FromSource, Revealer};
use cairn_core::{ErrorKind, WorkflowError};
use reqwest::header::ACCEPT;
use reqwest::{Method, Url};
use serde_json::{Map, Value};
use tracing::Instrument as _;

use crate::http::{redact_uri, redact_uri_str, HttpSender};

/// How long a fetched document is reused before it is fetched again.
pub const DOCUMENT_TTL: Duration = Duration::from_secs(5 * 60);

/// How many documents a connector keeps; the oldest is dropped to make room.
pub const DOCUMENT_CACHE_CAPACITY: usize = 32;

/// HTTP methods that can hold an operation in a path item, in the order they are searched.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// How many `$ref` hops are followed before a reference is declared circular.
const MAX_REF_DEPTH: usize = 16;

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
fn parse_document(body: &[u8]) -> Result<Value, String> {
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

/// Which specification a document follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `swagger: "2.0"`.
    Swagger2,
    /// `openapi: "3.x.y"`.
    OpenApi3,
}

/// An operation found in `paths`.
struct Operation<'d> {
    path: &'d str,
    method: &'d str,
    item: &'d Value,
    op: &'d Value,
}

/// A declared parameter, `$ref` resolved.
struct Param<'d> {
    name: &'d str,
    location: &'d str,
    required: bool,
    def: &'d Value,
}

/// Builds the HTTP request of `req`'s operation from `document` (fetched from `document_uri`).
/// Fails with `configuration` errors only.
pub fn build_request(
    document: &Value,
    document_uri: &Url,
    req: &OpenApiRequest,
) -> Result<HttpRequest, WorkflowError> {
    let shown_doc = redact_uri(document_uri);
    let dialect = dialect(document, &shown_doc)?;
    let empty = Map::new();
    let args = match &req.parameters {
        Value::Null => &empty,
        Value::Object(m) => m,
        other => {
            return Err(configuration(format!(
                "the parameters of operation {:?} must be an object, not {}",
                req.operation_id,
                json_type(other)
            )))
        }
    };
    let found = find_operation(document, &req.operation_id, &shown_doc)?;
    let op_name = format!(
        "{:?} ({} {})",
        req.operation_id,
        found.method.to_ascii_uppercase(),
        found.path
    );
    let params = parameters(document, &found, &shown_doc)?;

    let mut path_values: HashMap<&str, String> = HashMap::new();
    let mut query: Vec<(String, String)> = Vec::new();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut cookies: Vec<String> = Vec::new();
    let mut form = Map::new();
    let mut body: Option<Value> = None;
    let mut consumed: HashSet<&str> = HashSet::new();

    for p in &params {
        consumed.insert(p.name);
        let mut value = args.get(p.name).filter(|v| !v.is_null());
        if value.is_none() && dialect == Dialect::Swagger2 && p.location == "body" {
            // The DSL names the body `body`; Swagger names its body parameter freely.
            value = args.get("body").filter(|v| !v.is_null());
            consumed.insert("body");
        }
        let Some(value) = value else {
            if p.required || p.location == "path" {
                return Err(missing(p.name, p.location, &op_name));
            }
            continue;
        };
        match p.location {
            "path" => {
                path_values.insert(p.name, path_value(dialect, p, value));
            }
            "query" => query.extend(query_pairs(dialect, p, value)),
            "header" => headers.push((p.name.to_string(), join_simple(dialect, p, value))),
            "cookie" if dialect == Dialect::OpenApi3 => {
                cookies.push(format!("{}={}", p.name, join_simple(dialect, p, value)));
            }
            "body" if dialect == Dialect::Swagger2 => body = Some(value.clone()),
            "formData" if dialect == Dialect::Swagger2 => {
                form.insert(p.name.to_string(), value.clone());
            }
            other => {
                return Err(configuration(format!(
                    "parameter {:?} of operation {op_name} is in {other:?}, which this \
                     document version does not support",
                    p.name
                )))
            }
        }
    }

    let mut content_type: Option<String> = None;
    match dialect {
        Dialect::Swagger2 => {
            let consumes = media_list(found.op.get("consumes").or(document.get("consumes")));
            if !form.is_empty() {
                let urlencoded = "application/x-www-form-urlencoded";
                if !consumes.is_empty()
                    && !consumes.iter().any(|c| c.eq_ignore_ascii_case(urlencoded))
                {
                    return Err(configuration(format!(
                        "operation {op_name} takes form data as {}, which is not supported; \
                         only {urlencoded} is",
                        consumes.join(", ")
                    )));
                }
                body = Some(Value::Object(form));
                content_type = Some(urlencoded.to_string());
            } else if body.is_some() {
                content_type = Some(preferred_media(&consumes));
            }
        }
        Dialect::OpenApi3 => {
            if let Some(rb) = found.op.get("requestBody") {
                let rb = resolve(document, rb, &shown_doc)?;
                let given = if consumed.contains("body") {
                    None
                } else {
                    args.get("body").filter(|v| !v.is_null()).cloned()
                };
                body = given.or_else(|| {
                    let rest: Map<String, Value> = args
                        .iter()
                        .filter(|(k, v)| !consumed.contains(k.as_str()) && !v.is_null())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    (!rest.is_empty()).then_some(Value::Object(rest))
                });
                if body.is_none() && rb.get("required").and_then(Value::as_bool) == Some(true) {
                    return Err(missing("body", "requestBody", &op_name));
                }
                if body.is_some() {
                    let declared: Vec<String> = rb
                        .get("content")
                        .and_then(Value::as_object)
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    content_type = Some(preferred_media(&declared));
                }
            }
        }
    }

    let has_header = |headers: &[(String, String)], name: &str| {
        headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(name))
    };
    if let Some(ct) = content_type {
        if !has_header(&headers, "content-type") {
            headers.push(("Content-Type".into(), ct));
        }
    }
    if !cookies.is_empty() {
        headers.push(("Cookie".into(), cookies.join("; ")));
    }
    let accept = accepted_media(dialect, document, found.op);
    if !accept.is_empty() && !has_header(&headers, "accept") {
        headers.push(("Accept".into(), accept.join(", ")));
    }

    let base = base_url(dialect, document, document_uri, &found, &shown_doc)?;
    let path = expand_path(found.path, &path_values, args, &op_name)?;
    Ok(HttpRequest {
        method: found.method.to_ascii_uppercase(),
        uri: format!("{base}{path}"),
        headers,
        query,
        body,
        output: req.output,
        redirect: req.redirect,
        auth: req.auth.clone(),
        seal: req.seal.clone(),
    })
}

fn dialect(document: &Value, shown_doc: &str) -> Result<Dialect, WorkflowError> {
    let version = |field: &str| match document.get(field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(v) = version("openapi") {
        if v.starts_with("3.") {
            return Ok(Dialect::OpenApi3);
        }
        return Err(configuration(format!(
            "the openapi document {shown_doc} has version {v:?}; supported are OpenAPI 3.x \
             and Swagger 2.0"
        )));
    }
    if let Some(v) = version("swagger") {
        if v == "2.0" || v == "2" {
            return Ok(Dialect::Swagger2);
        }
        return Err(configuration(format!(
            "the openapi document {shown_doc} has swagger version {v:?}; supported are \
             OpenAPI 3.x and Swagger 2.0"
        )));
    }
    Err(configuration(format!(
        "{shown_doc} is not an openapi document: it has neither an `openapi` nor a `swagger` \
         field"
    )))
}

fn find_operation<'d>(
    document: &'d Value,
    operation_id: &str,
    shown_doc: &str,
) -> Result<Operation<'d>, WorkflowError> {
    let paths = document.get("paths").and_then(Value::as_object);
    let mut known = Vec::new();
    for (path, item) in paths.into_iter().flatten() {
        let item = resolve(document, item, shown_doc)?;
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            match op.get("operationId").and_then(Value::as_str) {
                Some(id) if id == operation_id => {
                    return Ok(Operation {
                        path,
                        method,
                        item,
                        op,
                    })
                }
                Some(id) => known.push(id),
                None => {}
            }
        }
    }
    let listed = if known.is_empty() {
        "it defines no operation ids".to_string()
    } else {
        const SHOWN: usize = 20;
        let mut list = known
            .iter()
            .take(SHOWN)
            .map(|id| format!("{id:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if known.len() > SHOWN {
            let _ = write!(list, " and {} more", known.len() - SHOWN);
        }
        format!("it defines {list}")
    };
    Err(configuration(format!(
        "operation {operation_id:?} is not defined in the openapi document {shown_doc}: {listed}"
    ))
    .with_title("Unknown OpenAPI operation"))
}

/// The operation's parameters: the path item's, overridden by the operation's with the same
/// name and location.
fn parameters<'d>(
    document: &'d Value,
    found: &Operation<'d>,
    shown_doc: &str,
) -> Result<Vec<Param<'d>>, WorkflowError> {
    let mut out: Vec<Param<'d>> = Vec::new();
    for list in [found.item.get("parameters"), found.op.get("parameters")] {
        for raw in list.and_then(Value::as_array).into_iter().flatten() {
            let def = resolve(document, raw, shown_doc)?;
            let (Some(name), Some(location)) = (
                def.get("name").and_then(Value::as_str),
                def.get("in").and_then(Value::as_str),
            ) else {
                return Err(configuration(format!(
                    "a parameter of {} {} in {shown_doc} has no `name` or `in`",
                    found.method.to_ascii_uppercase(),
                    found.path
                )));
            };
            let param = Param {
                name,
                location,
                required: def.get("required").and_then(Value::as_bool) == Some(true),
                def,
            };
            match out
                .iter_mut()
                .find(|p| p.name == name && p.location == location)
            {
                Some(existing) => *existing = param,
                None => out.push(param),
            }
        }
    }
    Ok(out)
}

/// Follows local `$ref`s (`#/...`) until a value that is not a reference.
fn resolve<'d>(
    document: &'d Value,
    mut value: &'d Value,
    shown_doc: &str,
) -> Result<&'d Value, WorkflowError> {
    for _ in 0..MAX_REF_DEPTH {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return Ok(value);
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(configuration(format!(
                "reference {reference:?} in {shown_doc} points outside the document, which is \
                 not supported"
            )));
        };
        value = document.pointer(pointer).ok_or_else(|| {
            configuration(format!(
                "reference {reference:?} in {shown_doc} points at nothing"
            ))
        })?;
    }
    Err(configuration(format!(
        "references in {shown_doc} nest deeper than {MAX_REF_DEPTH} levels (a cycle?)"
    )))
}

/// The base URL, without a trailing `/`, that operation paths are appended to.
fn base_url(
    dialect: Dialect,
    document: &Value,
    document_uri: &Url,
    found: &Operation<'_>,
    shown_doc: &str,
) -> Result<String, WorkflowError> {
    match dialect {
        Dialect::Swagger2 => {
            let schemes: Vec<&str> = document
                .get("schemes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let own = document_uri.scheme();
            let scheme =
                if schemes.is_empty() || schemes.iter().any(|s| s.eq_ignore_ascii_case(own)) {
                    own.to_string()
                } else if schemes.iter().any(|s| s.eq_ignore_ascii_case("https")) {
                    "https".to_string()
                } else {
                    schemes[0].to_ascii_lowercase()
                };
            let host = match document.get("host").and_then(Value::as_str) {
                Some(h) if !h.trim().is_empty() => h.trim().trim_end_matches('/').to_string(),
                _ => {
                    let host = document_uri.host_str().ok_or_else(|| {
                        configuration(format!(
                            "the swagger document {shown_doc} has no `host` and its uri has none"
                        ))
                    })?;
                    match document_uri.port() {
                        Some(port) => format!("{host}:{port}"),
                        None => host.to_string(),
                    }
                }
            };
            let base_path = document
                .get("basePath")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .trim_end_matches('/');
            let slash = if base_path.is_empty() || base_path.starts_with('/') {
                ""
            } else {
                "/"
            };
            Ok(format!("{scheme}://{host}{slash}{base_path}"))
        }
        Dialect::OpenApi3 => {
            let first_server = |v: &Value| {
                v.get("servers")
                    .and_then(Value::as_array)
                    .and_then(|s| s.first())
                    .cloned()
            };
            let server = first_server(found.op)
                .or_else(|| first_server(found.item))
                .or_else(|| first_server(document));
            let template = server
                .as_ref()
                .and_then(|s| s.get("url"))
                .and_then(Value::as_str)
                .unwrap_or("/");
            let variables = server
                .as_ref()
                .and_then(|s| s.get("variables"))
                .and_then(Value::as_object);
            let url = expand_server(template, variables, shown_doc)?;
            let resolved = document_uri.join(&url).map_err(|e| {
                configuration(format!(
                    "server url {url:?} of the openapi document {shown_doc} is invalid: {e}"
                ))
            })?;
            let mut base = resolved.to_string();
            // The operation path brings its own `/`; a query or fragment of the server is dropped.
            if let Some(cut) = base.find(['?', '#']) {
                base.truncate(cut);
            }
            Ok(base.trim_end_matches('/').to_string())
        }
    }
}

/// Replaces `{name}` in a server URL with the variable's default.
fn expand_server(
    template: &str,
    variables: Option<&Map<String, Value>>,
    shown_doc: &str,
) -> Result<String, WorkflowError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        let default = variables
            .and_then(|v| v.get(name))
            .and_then(|v| v.get("default"))
            .and_then(|d| match d {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                configuration(format!(
                    "server variable {name:?} of the openapi document {shown_doc} has no default"
                ))
            })?;
        out.push_str(&default);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Replaces `{name}` in an operation path with the encoded path parameter.
fn expand_path(
    template: &str,
    values: &HashMap<&str, String>,
    args: &Map<String, Value>,
    op_name: &str,
) -> Result<String, WorkflowError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        match values.get(name) {
            Some(v) => out.push_str(v),
            // A template variable the document forgot to declare: take the argument if given.
            None => match args.get(name).filter(|v| !v.is_null()) {
                Some(v) => out.push_str(&encode(&scalar(v))),
                None => return Err(missing(name, "path", op_name)),
            },
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    Ok(out)
}

/// A path parameter's value, percent-encoded (separators of its style excepted).
fn path_value(dialect: Dialect, p: &Param<'_>, value: &Value) -> String {
    match dialect {
        Dialect::Swagger2 => {
            let sep = collection_separator(p.def);
            match value {
                Value::Array(items) => items
                    .iter()
                    .map(|i| encode(&scalar(i)))
                    .collect::<Vec<_>>()
                    .join(sep),
                other => encode(&scalar(other)),
            }
        }
        Dialect::OpenApi3 => {
            let style = p
                .def
                .get("style")
                .and_then(Value::as_str)
                .unwrap_or("simple");
            let explode = p.def.get("explode").and_then(Value::as_bool) == Some(true);
            let items = exploded_items(value);
            match style {
                "label" => {
                    let sep = if explode { "." } else { "," };
                    format!(".{}", join_items(&items, explode, sep))
                }
                "matrix" => {
                    let name = encode(p.name);
                    match value {
                        Value::Array(_) if explode => items
                            .iter()
                            .map(|(_, v)| format!(";{name}={}", encode(v)))
                            .collect(),
                        Value::Object(_) if explode => items
                            .iter()
                            .map(|(k, v)| format!(";{}={}", encode(k), encode(v)))
                            .collect(),
                        _ => format!(";{name}={}", join_items(&items, false, ",")),
                    }
                }
                _ => join_items(&items, explode, ","),
            }
        }
    }
}

/// A value as (key, item) pairs: an object's entries, an array's items (empty keys), or one
/// scalar.
fn exploded_items(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Array(items) => items.iter().map(|i| (String::new(), scalar(i))).collect(),
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        other => vec![(String::new(), scalar(other))],
    }
}

/// Joins encoded items; object entries as `k=v` when exploded, `k,v` otherwise.
fn join_items(items: &[(String, String)], explode: bool, sep: &str) -> String {
    items
        .iter()
        .map(|(k, v)| match (k.is_empty(), explode) {
            (true, _) => encode(v),
            (false, true) => format!("{}={}", encode(k), encode(v)),
            (false, false) => format!("{},{}", encode(k), encode(v)),
        })
        .collect::<Vec<_>>()
        .join(sep)
}

/// A query parameter as name/value pairs (not encoded: the HTTP connector form-encodes them).
fn query_pairs(dialect: Dialect, p: &Param<'_>, value: &Value) -> Vec<(String, String)> {
    let name = p.name.to_string();
    match dialect {
        Dialect::Swagger2 => match value {
            Value::Array(items) => {
                let format = p.def.get("collectionFormat").and_then(Value::as_str);
                if format == Some("multi") {
                    items.iter().map(|i| (name.clone(), scalar(i))).collect()
                } else {
                    let sep = collection_separator(p.def);
                    let joined = items.iter().map(scalar).collect::<Vec<_>>().join(sep);
                    vec![(name, joined)]
                }
            }
            other => vec![(name, scalar(other))],
        },
        Dialect::OpenApi3 => {
            let style = p.def.get("style").and_then(Value::as_str).unwrap_or("form");
            let explode = p
                .def
                .get("explode")
                .and_then(Value::as_bool)
                .unwrap_or(style == "form");
            match value {
                Value::Array(items) => match style {
                    "form" if explode => items.iter().map(|i| (name.clone(), scalar(i))).collect(),
                    _ => {
                        let sep = match style {
                            "spaceDelimited" => " ",
                            "pipeDelimited" => "|",
                            _ => ",",
                        };
                        vec![(name, items.iter().map(scalar).collect::<Vec<_>>().join(sep))]
                    }
                },
                Value::Object(m) => match style {
                    "deepObject" => m
                        .iter()
                        .map(|(k, v)| (format!("{name}[{k}]"), scalar(v)))
                        .collect(),
                    "form" if explode => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
                    _ => {
                        let flat = m
                            .iter()
                            .flat_map(|(k, v)| [k.clone(), scalar(v)])
                            .collect::<Vec<_>>()
                            .join(",");
                        vec![(name, flat)]
                    }
                },
                other => vec![(name, scalar(other))],
            }
        }
    }
}

/// A header or cookie value: arrays joined with commas (Swagger's `collectionFormat` for
/// headers), objects as `k,v` (or `k=v` when exploded).
fn join_simple(dialect: Dialect, p: &Param<'_>, value: &Value) -> String {
    let sep = match dialect {
        Dialect::Swagger2 => collection_separator(p.def),
        Dialect::OpenApi3 => ",",
    };
    let explode = p.def.get("explode").and_then(Value::as_bool) == Some(true);
    match value {
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(sep),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                if explode {
                    format!("{k}={}", scalar(v))
                } else {
                    format!("{k},{}", scalar(v))
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        other => scalar(other),
    }
}

/// Swagger 2.0's `collectionFormat` separator (`csv` by default; `multi` is handled by callers).
fn collection_separator(def: &Value) -> &'static str {
    match def.get("collectionFormat").and_then(Value::as_str) {
        Some("ssv") => " ",
        Some("tsv") => "\t",
        Some("pipes") => "|",
        _ => ",",
    }
}

/// A value as the text of a parameter: strings as they are, other scalars as JSON, nested
/// structures as JSON text.
fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn media_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn is_json(media: &str) -> bool {
    let essence = media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// The media type a body is sent as: JSON when the operation takes it (or says nothing),
/// otherwise the first one it declares.
fn preferred_media(declared: &[String]) -> String {
    declared
        .iter()
        .find(|m| is_json(m))
        .or_else(|| declared.first())
        .cloned()
        .unwrap_or_else(|| "application/json".to_string())
}

/// What the `Accept` header lists: the media types the operation produces (Swagger 2.0
/// `produces`; OpenAPI 3 the content of its success responses), JSON first.
fn accepted_media(dialect: Dialect, document: &Value, op: &Value) -> Vec<String> {
    let mut media = match dialect {
        Dialect::Swagger2 => media_list(op.get("produces").or(document.get("produces"))),
        Dialect::OpenApi3 => {
            let mut out: Vec<String> = Vec::new();
            let responses = op.get("responses").and_then(Value::as_object);
            for (code, response) in responses.into_iter().flatten() {
                if !(code.starts_with('2') || code == "default") {
                    continue;
                }
                let Ok(response) = resolve(document, response, "") else {
                    continue;
                };
                let content = response.get("content").and_then(Value::as_object);
                for key in content.into_iter().flat_map(|c| c.keys()) {
                    if !out.contains(key) {
                        out.push(key.clone());
                    }
                }
            }
            out
        }
    };
    // Only well-formed media types: a header value must not carry control characters.
    media.retain(|m| m.contains('/') && m.bytes().all(|b| (0x20..0x7f).contains(&b)));
    media.sort_by_key(|m| !is_json(m));
    media
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn missing(name: &str, location: &str, op_name: &str) -> WorkflowError {
    configuration(format!(
        "missing required parameter {name:?} (in {location}) of operation {op_name}"
    ))
    .with_title("Missing OpenAPI parameter")
}

fn configuration(detail: impl Into<String>) -> WorkflowError {
    WorkflowError::new(ErrorKind::Configuration, detail).with_title("Invalid OpenAPI call")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::dsl::HttpOutputFormat;
    use serde_json::json;

    fn request(operation_id: &str, parameters: Value) -> OpenApiRequest {
        OpenApiRequest {
            document: "http://docs.example/api/openapi.json".into(),
            operation_id: operation_id.into(),
            parameters,
            output: HttpOutputFormat::Content,
            redirect: false,
            auth: None,
            seal: None,
        }
    }

    fn doc_uri() -> Url {
        Url::parse("http://docs.example/api/openapi.json").unwrap_or_else(|e| panic!("{e}"))
    }

    fn build(doc: &Value, op: &str, params: Value) -> Result<HttpRequest, WorkflowError> {
        build_request(doc, &doc_uri(), &request(op, params))
    }

    fn oas3() -> Value {
        json!({
            "openapi": "3.0.3",
            "servers": [{"url": "/{version}", "variables": {"version": {"default": "v3"}}}],
            "components": {
                "parameters": {
                    "Trace": {"name": "X-Trace", "in": "header", "required": true}
                }
            },
            "paths": {
                "/items/{id}/{tags}": {
                    "parameters": [
                        {"name": "id", "in": "path", "required": true},
                        {"$ref": "#/components/parameters/Trace"}
                    ],
                    "put": {
                        "operationId": "putItem",
                        "parameters": [
                            {"name": "tags", "in": "path", "required": true},
                            {"name": "filter", "in": "query",
                             "style": "deepObject", "explode": true},
                            {"name": "ids", "in": "query", "explode": false},
                            {"name": "session", "in": "cookie"}
                        ],
                        "requestBody": {
                            "required": true,
                            "content": {"application/json": {}}
                        },
                        "responses": {"200": {"content": {"application/json": {}}}}
                    }
                }
            }
        })
    }

    #[test]
    fn openapi3_request_is_built_from_the_operation() {
        let req = build(
            &oas3(),
            "putItem",
            json!({
                "id": "a b/c", "tags": ["x", "y"], "X-Trace": "t1",
                "filter": {"color": "red"}, "ids": [1, 2], "session": "s",
                "name": "widget", "size": 3
            }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.method, "PUT");
        assert_eq!(req.uri, "http://docs.example/v3/items/a%20b%2Fc/x,y");
        assert_eq!(
            req.query,
            vec![
                ("filter[color]".to_string(), "red".to_string()),
                ("ids".to_string(), "1,2".to_string())
            ]
        );
        assert!(req.headers.contains(&("X-Trace".into(), "t1".into())));
        assert!(req.headers.contains(&("Cookie".into(), "session=s".into())));
        assert!(req
            .headers
            .contains(&("Content-Type".into(), "application/json".into())));
        assert_eq!(req.body, Some(json!({"name": "widget", "size": 3})));
    }

    #[test]
    fn openapi3_body_argument_wins_and_required_body_is_checked() {
        let params = json!({"id": 1, "tags": "t", "X-Trace": "t", "body": {"a": 1}, "b": 2});
        let req = build(&oas3(), "putItem", params).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.body, Some(json!({"a": 1})));

        let e = build(
            &oas3(),
            "putItem",
            json!({"id": 1, "tags": "t", "X-Trace": "t"}),
        )
        .err()
        .unwrap_or_else(|| panic!("a missing body must fail"));
        assert!(e.is(ErrorKind::Configuration), "{e}");
        assert!(e.detail.unwrap_or_default().contains("\"body\""));
    }

    #[test]
    fn missing_path_parameter_and_unknown_operation() {
        let e = build(&oas3(), "putItem", json!({"tags": "t", "X-Trace": "t"}))
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        let detail = e.detail.clone().unwrap_or_default();
        assert!(
            detail.contains("\"id\"") && detail.contains("putItem"),
            "{detail}"
        );
        assert_eq!(e.status, 400);

        let e = build(&oas3(), "nope", json!({}))
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        let detail = e.detail.unwrap_or_default();
        assert!(
            detail.contains("\"nope\"") && detail.contains("\"putItem\""),
            "{detail}"
        );
    }

    #[test]
    fn swagger2_base_url_and_collection_formats() {
        let doc = json!({
            "swagger": "2.0",
            "basePath": "/v2/",
            "schemes": ["https", "http"],
            "consumes": ["application/x-www-form-urlencoded"],
            "paths": {
                "/pet/{petId}": {
                    "post": {
                        "operationId": "updatePetWithForm",
                        "parameters": [
                            {"name": "petId", "in": "path", "required": true, "type": "integer"},
                            {"name": "name", "in": "formData", "type": "string"},
                            {"name": "tags", "in": "query", "type": "array",
                             "collectionFormat": "pipes"},
                            {"name": "ids", "in": "query", "type": "array",
                             "collectionFormat": "multi"}
                        ]
                    }
                }
            }
        });
        let req = build(
            &doc,
            "updatePetWithForm",
            json!({"petId": 7, "name": "rex", "tags": ["a", "b"], "ids": [1, 2]}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // No host: the document's own; its scheme is listed, so it is kept.
        assert_eq!(req.uri, "http://docs.example/v2/pet/7");
        assert_eq!(
            req.query,
            vec![
                ("tags".to_string(), "a|b".to_string()),
                ("ids".to_string(), "1".to_string()),
                ("ids".to_string(), "2".to_string())
            ]
        );
        assert_eq!(req.body, Some(json!({"name": "rex"})));
        assert!(req.headers.contains(&(
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into()
        )));
    }

    #[test]
    fn external_refs_and_unknown_versions_are_configuration_errors() {
        let doc = json!({"openapi": "3.1.0", "paths": {"/a": {"get": {
            "operationId": "a", "parameters": [{"$ref": "other.json#/p"}]}}}});
        let e = build(&doc, "a", json!({}))
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        assert!(e.detail.unwrap_or_default().contains("other.json"));

        let e = build(&json!({"openapi": "4.0"}), "a", json!({}))
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        assert!(e.is(ErrorKind::Configuration));
    }

    #[test]
    fn yaml_documents_parse_with_numeric_keys() {
        let doc = parse_document(b"openapi: 3.0.0\npaths:\n  /a:\n    get:\n      responses:\n        200:\n          description: ok\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            doc["paths"]["/a"]["get"]["responses"]["200"]["description"],
            "ok"
        );
        assert!(parse_document(b"{not json").is_err());
        let deep = format!(
            "openapi: 3.0.0\nx: {}1{}\n",
            "[".repeat(20_000),
            "]".repeat(20_000)
        );
        let e = parse_document(deep.as_bytes()).err().unwrap_or_default();
        assert!(e.contains("nested deeper than 128 levels (line 2,"), "{e}");
    }

    #[test]
    fn cache_is_bounded() {
        let cache = DocumentCache::default();
        for i in 0..DOCUMENT_CACHE_CAPACITY + 5 {
            cache.insert(&format!("http://x/{i}"), Arc::new(json!({})));
        }
        let len = cache.entries.lock().map(|e| e.len()).unwrap_or_default();
        assert_eq!(len, DOCUMENT_CACHE_CAPACITY);
        assert!(cache.get("http://x/0").is_none());
        assert!(cache
            .get(&format!("http://x/{}", DOCUMENT_CACHE_CAPACITY + 4))
            .is_some());
    }
}
