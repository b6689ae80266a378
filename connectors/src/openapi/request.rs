//! Building the HTTP request of an operation from its document: finding the operation,
//! resolving `$ref`s, the base URL, and serialising parameters the way each dialect says. No I/O.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use cairn_core::events::{HttpRequest, OpenApiRequest};
use cairn_core::{ErrorKind, WorkflowError};
use reqwest::Url;
use serde_json::{Map, Value};

use crate::http::redact_uri;

/// HTTP methods that can hold an operation in a path item, in the order they are searched.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// How many `$ref` hops are followed before a reference is declared circular.
const MAX_REF_DEPTH: usize = 16;

/// Which specification a document follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// `swagger: "2.0"`.
    Swagger2,
    /// `openapi: "3.x.y"`.
    OpenApi3,
}

/// An operation found in `paths`.
pub(super) struct Operation<'d> {
    path: &'d str,
    method: &'d str,
    item: &'d Value,
    op: &'d Value,
}

/// A declared parameter, `$ref` resolved.
pub(super) struct Param<'d> {
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

pub(super) fn dialect(document: &Value, shown_doc: &str) -> Result<Dialect, WorkflowError> {
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

pub(super) fn find_operation<'d>(
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
pub(super) fn parameters<'d>(
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
pub(super) fn resolve<'d>(
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
pub(super) fn base_url(
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
pub(super) fn expand_server(
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
pub(super) fn expand_path(
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
pub(super) fn path_value(dialect: Dialect, p: &Param<'_>, value: &Value) -> String {
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
pub(super) fn exploded_items(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Array(items) => items.iter().map(|i| (String::new(), scalar(i))).collect(),
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        other => vec![(String::new(), scalar(other))],
    }
}

/// Joins encoded items; object entries as `k=v` when exploded, `k,v` otherwise.
pub(super) fn join_items(items: &[(String, String)], explode: bool, sep: &str) -> String {
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
pub(super) fn query_pairs(dialect: Dialect, p: &Param<'_>, value: &Value) -> Vec<(String, String)> {
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
pub(super) fn join_simple(dialect: Dialect, p: &Param<'_>, value: &Value) -> String {
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
pub(super) fn collection_separator(def: &Value) -> &'static str {
    match def.get("collectionFormat").and_then(Value::as_str) {
        Some("ssv") => " ",
        Some("tsv") => "\t",
        Some("pipes") => "|",
        _ => ",",
    }
}

/// A value as the text of a parameter: strings as they are, other scalars as JSON, nested
/// structures as JSON text.
pub(super) fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(super) fn encode(text: &str) -> String {
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

pub(super) fn media_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

pub(super) fn is_json(media: &str) -> bool {
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
pub(super) fn preferred_media(declared: &[String]) -> String {
    declared
        .iter()
        .find(|m| is_json(m))
        .or_else(|| declared.first())
        .cloned()
        .unwrap_or_else(|| "application/json".to_string())
}

/// What the `Accept` header lists: the media types the operation produces (Swagger 2.0
/// `produces`; OpenAPI 3 the content of its success responses), JSON first.
pub(super) fn accepted_media(dialect: Dialect, document: &Value, op: &Value) -> Vec<String> {
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

pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn missing(name: &str, location: &str, op_name: &str) -> WorkflowError {
    configuration(format!(
        "missing required parameter {name:?} (in {location}) of operation {op_name}"
    ))
    .with_title("Missing OpenAPI parameter")
}

pub(super) fn configuration(detail: impl Into<String>) -> WorkflowError {
    WorkflowError::new(ErrorKind::Configuration, detail).with_title("Invalid OpenAPI call")
}
