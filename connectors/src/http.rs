//! `call: http` (and the sending half of `call: openapi`, which builds on this module): performs
//! a recorded [`HttpRequest`] and turns the response into the task's raw output, or into a [`WorkflowError`] the workflow can catch.
//!
//! The request arrives fully resolved (expressions evaluated, URI templates expanded), except
//! for secrets: named (`use:`) or recorded as placeholders ([`cairn_core::sealed`]), they are
//! revealed here just before sending and never appear in outputs or errors. Otherwise this
//! module does only I/O and the mapping rules of the DSL:
//!
//! - output `content` (default): the body, deserialised (see [`decode_content`]);
//! - output `response`: the DSL's *HTTP Response* object (`dsl-reference.md`, "HTTP Response"
//!   and "HTTP Request"): `{request: {method, uri, headers}, statusCode, headers, content}`;
//! - output `raw`: the body bytes, base64-encoded;
//! - a status outside 200–299 (200–399 when `redirect` is true) is a `communication` error whose
//!   `status` is the response's, so `catch.errors.with.status` filters match on it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cairn_core::activity::{ActivityContext, Secrets};
use cairn_core::dsl::HttpOutputFormat;
use cairn_core::events::{HttpAuth, HttpRequest};
use cairn_core::sealed::{FromSource, MissingSecret, Revealer};
use cairn_core::{ErrorKind, WorkflowError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::redirect::Policy;
use reqwest::{Client, Method, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::Instrument as _;

use crate::guard::{self, AllowList, Denied, Guard, GuardedResolver, SystemResolver};

/// Name of the header that carries the activity's idempotency key (lower case, as HTTP/2 sends
/// header names).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// What a header value is replaced with in outputs, so credentials never reach the event log.
const REDACTED: &str = "<redacted>";

/// Settings of an [`HttpSender`]. Every field has a default; durations are given in
/// milliseconds when deserialised (`request_timeout_ms`, `connect_timeout_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpOptions {
    /// Deadline of a whole request: connecting, sending and reading the body. Default 30 s.
    /// Exceeding it is a `timeout` error (408).
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// Deadline of establishing a connection (TCP and TLS). Default 10 s.
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    /// `User-Agent` sent unless the request sets its own. Default `cairn/<version>`.
    pub user_agent: String,
    /// How many redirects a request with `redirect: true` follows before failing. Default 10.
    pub max_redirects: usize,
    /// Largest response body accepted, in bytes. Default 16 MiB. The result of a call is
    /// recorded in the run's event log, so an unbounded body would bloat every replay.
    pub max_response_bytes: u64,
    /// What calls may reach besides public addresses (see [`crate::guard`]). Default: public
    /// addresses only; [`AllowList::all`] turns the guard off.
    pub allow_outbound: AllowList,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("cairn/", env!("CARGO_PKG_VERSION")).to_string(),
            max_redirects: 10,
            max_response_bytes: 16 * 1024 * 1024,
            allow_outbound: AllowList::none(),
        }
    }
}

/// Sends recorded HTTP requests (`call: http`, and the requests `call: openapi` builds); the
/// runtime is given the [`crate::HttpConnector`] around it.
///
/// Cheap to clone: clones share the connection pools and the secret source. It holds two
/// pooled clients that differ only in their redirect policy, because reqwest fixes that policy
/// per client and `redirect` is chosen per request; both are built once, never per call.
#[derive(Clone)]
pub struct HttpSender {
    /// Follows up to `max_redirects` redirects (`redirect: true`, and OpenAPI documents).
    pub(crate) following: Client,
    /// Returns 3xx responses as they are (`redirect: false`), so they become errors.
    not_following: Client,
    pub(crate) secrets: Secrets,
    options: HttpOptions,
    /// Checks IP-literal destinations before sending; `None` when everything is allowed.
    guard: Option<Guard>,
}

impl fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret source is deliberately left out: it may hold credentials.
        f.debug_struct("HttpSender")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HttpSender {
    /// Builds a connector. `secrets` resolves [`HttpAuth::BasicSecret`] (an object with string
    /// `username` and `password`) and [`HttpAuth::BearerSecret`] (an object with a string
    /// `token`, or the token itself as a string).
    pub fn new(options: HttpOptions, secrets: Secrets) -> crate::Result<Self> {
        Self::with_resolver(options, secrets, Arc::new(SystemResolver))
    }

    /// [`HttpSender::new`] resolving host names with `resolver` (the outbound guard still
    /// checks every address it returns).
    pub fn with_resolver(
        options: HttpOptions,
        secrets: Secrets,
        resolver: Arc<dyn reqwest::dns::Resolve>,
    ) -> crate::Result<Self> {
        let user_agent = HeaderValue::from_str(&options.user_agent)
            .map_err(|_| crate::Error::InvalidUserAgent(options.user_agent.clone()))?;
        let guard = Guard::new(&options.allow_outbound);
        let resolver = Arc::new(GuardedResolver::new(resolver, &options.allow_outbound));
        let builder = || {
            let b = Client::builder()
                .user_agent(user_agent.clone())
                .timeout(options.request_timeout)
                .connect_timeout(options.connect_timeout)
                .dns_resolver(resolver.clone());
            // A proxy would resolve and reach the target itself, past the guard.
            if guard.is_some() {
                b.no_proxy()
            } else {
                b
            }
        };
        let redirects = match &guard {
            Some(g) => g.redirect_policy(options.max_redirects),
            None => Policy::limited(options.max_redirects),
        };
        let following = builder()
            .redirect(redirects)
            .build()
            .map_err(crate::Error::Client)?;
        let not_following = builder()
            .redirect(Policy::none())
            .build()
            .map_err(crate::Error::Client)?;
        Ok(HttpSender {
            following,
            not_following,
            secrets,
            options,
            guard,
        })
    }

    /// The options this connector was built with.
    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    /// Sends `req` and returns the output its `output` format asks for.
    ///
    /// Every request carries `Idempotency-Key: <ctx.idempotency_key>` unless the definition set
    /// that header itself, so a request re-sent after a crash can be deduplicated by the server.
    /// Errors carry `instance = ctx.position` unless the caller sets another.
    pub async fn execute(
        &self,
        ctx: &ActivityContext,
        req: &HttpRequest,
    ) -> Result<Value, WorkflowError> {
        // Secrets recorded as placeholders are revealed here, in memory, for this request only;
        // any message about it is scrubbed of them before it can be recorded.
        let source = FromSource(&*self.secrets);
        let mut revealer = Revealer::new(req.seal.as_deref(), &source);
        let prepared = match self.prepare(ctx, req, &mut revealer) {
            Ok(p) => p,
            Err(e) => return Err(revealer.scrub_error(e).at(&ctx.position)),
        };
        let span = tracing::debug_span!(
            "http_call",
            run_id = %ctx.run_id,
            position = %ctx.position,
            attempt = ctx.attempt,
            method = %prepared.method,
            uri = %prepared.shown_uri,
        );
        let result = self.send(req, prepared).instrument(span).await;
        result.map_err(|e| revealer.scrub_error(e).at(&ctx.position))
    }

    /// Validates and assembles everything that goes on the wire. Fails with `configuration`
    /// errors only: nothing has been sent yet.
    ///
    /// Messages and the shown URI are made from the request as recorded (placeholders, not
    /// secrets); what goes on the wire is revealed by `revealer`.
    fn prepare(
        &self,
        ctx: &ActivityContext,
        req: &HttpRequest,
        revealer: &mut Revealer<'_>,
    ) -> Result<Prepared, WorkflowError> {
        let method = Method::from_bytes(req.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| configuration(format!("invalid http method {:?}", req.method)))?;

        // The URI as recorded, query included, for messages and outputs.
        let shown_uri = match Url::parse(&req.uri) {
            Ok(mut shown) => {
                append_query(&mut shown, &req.query);
                redact_uri(&shown)
            }
            Err(_) => redact_uri_str(&req.uri),
        };
        let mut url = Url::parse(&revealer.text(&req.uri)?)
            .map_err(|e| configuration(format!("invalid uri {shown_uri}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(configuration(format!(
                "unsupported uri scheme {:?} in {shown_uri}: only http and https are supported",
                url.scheme(),
            )));
        }
        let query = req
            .query
            .iter()
            .map(|(n, v)| {
                Ok((
                    revealer.text(n)?.into_owned(),
                    revealer.text(v)?.into_owned(),
                ))
            })
            .collect::<Result<Vec<_>, MissingSecret>>()?;
        append_query(&mut url, &query);

        let mut headers = HeaderMap::new();
        let mut sealed_headers = Vec::new();
        for (recorded_name, recorded_value) in &req.headers {
            let name = revealer.text(recorded_name)?;
            let value = revealer.text(recorded_value)?;
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                configuration(format!("invalid http header name {recorded_name:?}"))
            })?;
            // The value is left out of the message: it may be a credential.
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                configuration(format!(
                    "the value of http header {recorded_name:?} is not a valid header value"
                ))
            })?;
            if value.as_bytes() != recorded_value.as_bytes() {
                // Made from a secret: hidden from outputs and from hyper's own logging.
                value.set_sensitive(true);
                sealed_headers.push(header.clone());
            }
            headers.append(header, value);
        }
        if !headers.contains_key(IDEMPOTENCY_KEY_HEADER) {
            let key = HeaderValue::from_str(&ctx.idempotency_key).map_err(|_| {
                WorkflowError::new(
                    ErrorKind::Runtime,
                    format!(
                        "idempotency key {:?} is not a valid header value",
                        ctx.idempotency_key
                    ),
                )
            })?;
            headers.insert(HeaderName::from_static(IDEMPOTENCY_KEY_HEADER), key);
        }
        if let Some(auth) = &req.auth {
            let mut value = self.authorization(&revealer.auth(auth)?)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }

        let body = req.body.as_ref().map(|b| revealer.value(b)).transpose()?;
        let body = match &body {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => {
                // A string is taken as already encoded (a pre-serialised document, form data,
                // plain text): sending it JSON-quoted would surprise whoever wrote it.
                default_content_type(&mut headers, "text/plain; charset=utf-8");
                Some(text.clone().into_bytes())
            }
            Some(value) if is_form(&headers) => Some(form_encode(value)?),
            Some(value) => {
                default_content_type(&mut headers, "application/json");
                Some(serde_json::to_vec(value).map_err(|e| {
                    WorkflowError::new(ErrorKind::Runtime, format!("cannot encode the body: {e}"))
                })?)
            }
        };

        Ok(Prepared {
            method,
            url,
            headers,
            body,
            shown_uri,
            sealed_headers,
        })
    }

    /// The `Authorization` value of `auth`, resolving secrets by name.
    fn authorization(&self, auth: &HttpAuth) -> Result<HeaderValue, WorkflowError> {
        match auth {
            HttpAuth::Basic { username, password } => basic(username, password, None),
            HttpAuth::Bearer { token } => bearer(token, None),
            HttpAuth::BasicSecret { secret } => {
                let value = self.secret(secret)?;
                let username = secret_field(&value, secret, "username")?;
                let password = secret_field(&value, secret, "password")?;
                basic(username, password, Some(secret))
            }
            HttpAuth::BearerSecret { secret } => {
                let value = self.secret(secret)?;
                let token = match &value {
                    Value::String(token) => token.as_str(),
                    other => secret_field(other, secret, "token")?,
                };
                bearer(token, Some(secret))
            }
        }
    }

    fn secret(&self, name: &str) -> Result<Value, WorkflowError> {
        self.secrets.get(name).ok_or_else(|| {
            configuration(format!("secret {name:?} is not defined")).with_title("Missing secret")
        })
    }

    /// Sends a prepared request and maps the response to the task's output.
    async fn send(&self, req: &HttpRequest, p: Prepared) -> Result<Value, WorkflowError> {
        let client = if req.redirect {
            &self.following
        } else {
            &self.not_following
        };
        self.check_destination(&p.url, &p.method, &p.shown_uri)?;
        let shown_headers = headers_to_json(&p.headers, Some(&p.sealed_headers));
        let mut builder = client.request(p.method.clone(), p.url).headers(p.headers);
        if let Some(body) = p.body {
            builder = builder.body(body);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(&e, &p.method, &p.shown_uri))?;

        let status = response.status();
        tracing::debug!(status = status.as_u16(), "http response");
        let accepted = status.is_success() || (req.redirect && status.is_redirection());
        if !accepted {
            return Err(status_error(status, &p.method, &p.shown_uri, &response));
        }

        let body = self
            .read_body(&mut response, &p.method, &p.shown_uri)
            .await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());

        Ok(match req.output {
            HttpOutputFormat::Content => decode_content(content_type, &body),
            HttpOutputFormat::Raw if body.is_empty() => Value::Null,
            HttpOutputFormat::Raw => Value::String(BASE64.encode(&body)),
            HttpOutputFormat::Response => {
                let mut request = Map::new();
                request.insert("method".into(), Value::String(p.method.to_string()));
                request.insert("uri".into(), Value::String(p.shown_uri.clone()));
                request.insert("headers".into(), shown_headers);
                let mut out = Map::new();
                out.insert("request".into(), Value::Object(request));
                out.insert("statusCode".into(), Value::from(status.as_u16()));
                out.insert("headers".into(), headers_to_json(response.headers(), None));
                out.insert("content".into(), decode_content(content_type, &body));
                Value::Object(out)
            }
        })
    }

    /// Reads the whole body, refusing more than `max_response_bytes`.
    pub(crate) async fn read_body(
        &self,
        response: &mut Response,
        method: &Method,
        uri: &str,
    ) -> Result<Vec<u8>, WorkflowError> {
        let limit = self.options.max_response_bytes;
        let too_large = || {
            communication(
                502,
                format!("{method} {uri}: the response body exceeds the limit of {limit} bytes"),
            )
            .with_title("HTTP response too large")
        };
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e, method, uri))?
        {
            if body.len().saturating_add(chunk.len()) > limit_usize {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Refuses a destination whose host is an IP literal the outbound guard denies. Host names
    /// are checked once resolved, by the client's resolver.
    pub(crate) fn check_destination(
        &self,
        url: &Url,
        method: &Method,
        uri: &str,
    ) -> Result<(), WorkflowError> {
        match &self.guard {
            Some(g) => g.check_url(url).map_err(|d| denied_error(&d, method, uri)),
            None => Ok(()),
        }
    }

    /// Maps a failure to get or read a response: a timeout is `timeout` (408); anything else
    /// (refused, DNS, TLS, reset) is `communication`, 503 before a response arrived and 502
    /// while its body was read.
    pub(crate) fn transport_error(
        &self,
        e: &reqwest::Error,
        method: &Method,
        uri: &str,
    ) -> WorkflowError {
        if let Some(denied) = guard::find_denied(e) {
            return denied_error(denied, method, uri);
        }
        let cause = cause_chain(e);
        if e.is_timeout() {
            let (phase, limit) = if e.is_connect() {
                ("connecting", self.options.connect_timeout)
            } else {
                ("the request", self.options.request_timeout)
            };
            return WorkflowError::new(
                ErrorKind::Timeout,
                format!("{method} {uri}: {phase} timed out after {limit:?}"),
            )
            .with_title("HTTP request timed out");
        }
        if e.is_redirect() {
            return communication(
                502,
                format!(
                    "{method} {uri}: gave up after {} redirects: {cause}",
                    self.options.max_redirects
                ),
            )
            .with_title("Too many HTTP redirects");
        }
        if e.is_builder() {
            return configuration(format!("{method} {uri}: invalid request: {cause}"));
        }
        if e.is_body() || e.is_decode() {
            return communication(
                502,
                format!("{method} {uri}: reading the response failed: {cause}"),
            )
            .with_title("HTTP response failed");
        }
        let what = if e.is_connect() {
            "could not connect"
        } else {
            "the request failed"
        };
        communication(503, format!("{method} {uri}: {what}: {cause}"))
            .with_title("HTTP connection failed")
    }
}

/// A request ready to send.
struct Prepared {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    /// The URI as errors and outputs show it: as recorded (secrets as placeholders), with the
    /// query, without user info.
    shown_uri: String,
    /// Headers made from secrets, redacted in outputs.
    sealed_headers: Vec<HeaderName>,
}

/// Appends query parameters to any query already in the URI; names and values are
/// form-encoded.
fn append_query(url: &mut Url, query: &[(String, String)]) {
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            pairs.append_pair(name, value);
        }
    }
}

/// Deserialises a response body the way `output: content` promises:
///
/// - an empty body is `null`;
/// - a JSON content type (`application/json`, `*/*+json`) is parsed as JSON;
/// - any other UTF-8 body that looks like a JSON object or array (and parses) is parsed too,
///   because many services send JSON as `text/plain` or without a content type; bare scalars are
///   not sniffed, so a text body such as `42` or `true` stays a string;
/// - other UTF-8 text is a string;
/// - anything else (images, other charsets) is base64, as the spec's *HTTP Response* says for
///   content it cannot deserialise.
pub fn decode_content(content_type: Option<&str>, body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    let declared_json = content_type.is_some_and(is_json_media_type);
    if declared_json {
        if let Ok(value) = serde_json::from_slice(body) {
            return value;
        }
        tracing::debug!("response declared json but did not parse; returning it as text");
    }
    match std::str::from_utf8(body) {
        Ok(text) => {
            let start = text.trim_start();
            if !declared_json && (start.starts_with('{') || start.starts_with('[')) {
                if let Ok(value) = serde_json::from_str(text) {
                    return value;
                }
            }
            Value::String(text.to_string())
        }
        Err(_) => Value::String(BASE64.encode(body)),
    }
}

fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn default_content_type(headers: &mut HeaderMap, value: &'static str) {
    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
    }
}

/// Encodes an object as `application/x-www-form-urlencoded`, for token endpoints and other
/// form APIs: arrays repeat their key, nested objects are sent as JSON text.
fn form_encode(body: &Value) -> Result<Vec<u8>, WorkflowError> {
    let Value::Object(fields) = body else {
        return Err(configuration(
            "a body sent as application/x-www-form-urlencoded must be an object or a string",
        ));
    };
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        match value {
            Value::Array(items) => {
                for item in items {
                    form.append_pair(name, &form_scalar(item));
                }
            }
            other => {
                form.append_pair(name, &form_scalar(other));
            }
        }
    }
    Ok(form.finish().into_bytes())
}

fn form_scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn basic(
    username: &str,
    password: &str,
    secret: Option<&str>,
) -> Result<HeaderValue, WorkflowError> {
    let encoded = BASE64.encode(format!("{username}:{password}"));
    // Base64 output is always a valid header value; the error arm is unreachable in practice.
    HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| invalid_credential("basic credentials", secret))
}

fn bearer(token: &str, secret: Option<&str>) -> Result<HeaderValue, WorkflowError> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| invalid_credential("bearer token", secret))
}

fn invalid_credential(what: &str, secret: Option<&str>) -> WorkflowError {
    // Never echo the credential itself.
    match secret {
        Some(name) => configuration(format!(
            "the {what} from secret {name:?} is not a valid header value"
        )),
        None => configuration(format!("the {what} is not a valid header value")),
    }
}

fn secret_field<'a>(value: &'a Value, secret: &str, field: &str) -> Result<&'a str, WorkflowError> {
    value.get(field).and_then(Value::as_str).ok_or_else(|| {
        configuration(format!("secret {secret:?} has no string field {field:?}"))
            .with_title("Invalid secret")
    })
}

fn configuration(detail: impl Into<String>) -> WorkflowError {
    WorkflowError::new(ErrorKind::Configuration, detail).with_title("Invalid HTTP call")
}

fn communication(status: u16, detail: impl Into<String>) -> WorkflowError {
    WorkflowError::new(ErrorKind::Communication, detail).with_status(status)
}

/// A destination the outbound guard refused: `authorization` (403), which retry policies on
/// `communication` errors do not retry, since sending again is refused again.
fn denied_error(denied: &Denied, method: &Method, uri: &str) -> WorkflowError {
    WorkflowError::new(
        ErrorKind::Authorization,
        format!("{method} {uri}: {denied}"),
    )
    .with_title("Outbound call denied")
}

/// The error for a response whose status the call does not accept.
fn status_error(
    status: StatusCode,
    method: &Method,
    uri: &str,
    response: &Response,
) -> WorkflowError {
    let line = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    let mut detail = format!("{method} {uri} returned {line}");
    if status.is_redirection() {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(redact_uri_str);
        if let Some(location) = location {
            detail.push_str(&format!(" (location {location})"));
        }
        detail.push_str("; redirects are followed only with `redirect: true`");
    }
    communication(status.as_u16(), detail).with_title(format!("HTTP {line}"))
}

/// Response (or sent request) headers as `map[string, string]`; repeated headers are joined
/// with `, ` as RFC 9110 allows. With `redact` (the headers made from secrets), those and
/// credentials are replaced.
fn headers_to_json(headers: &HeaderMap, redact: Option<&[HeaderName]>) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let sensitive = redact.is_some_and(|sealed| {
            name == AUTHORIZATION
                || name == reqwest::header::PROXY_AUTHORIZATION
                || name == reqwest::header::COOKIE
                || sealed.contains(name)
        });
        let value = if sensitive {
            REDACTED.to_string()
        } else {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.insert(name.as_str().to_string(), Value::String(value));
    }
    Value::Object(out)
}

/// The URI without user info (`user:password@`), for messages and outputs.
pub(crate) fn redact_uri(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Both calls only fail for URIs that cannot have user info, which then has none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// [`redact_uri`] for text that may not parse: drops anything between `://` and an `@` that
/// comes before the path.
pub(crate) fn redact_uri_str(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) => redact_uri(&url),
        Err(_) => match uri.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                match rest[..authority_end].rfind('@') {
                    Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                    None => uri.to_string(),
                }
            }
            None => uri.to_string(),
        },
    }
}

/// The messages of an error's sources, outermost first, without the top-level reqwest message
/// (it repeats the URL, which may carry user info).
fn cause_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let message = err.to_string();
        // hyper-util's outer "client error (Connect)" only restates what its source says.
        let noise = message.starts_with("client error (");
        if !noise && !parts.iter().any(|p| p.contains(&message)) {
            parts.push(message);
        }
        source = err.source();
    }
    if parts.is_empty() {
        message_without_url(e)
    } else {
        parts.join(": ")
    }
}

/// `reqwest::Error`'s message without the URL it appends.
fn message_without_url(e: &reqwest::Error) -> String {
    let message = e.to_string();
    match e.url() {
        Some(url) => message.replace(&format!(" ({url})"), ""),
        None => message,
    }
}

/// Serde for durations as whole milliseconds, the unit config files use.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decoding() {
        assert_eq!(decode_content(None, b""), Value::Null);
        assert_eq!(
            decode_content(Some("application/json; charset=utf-8"), b"42"),
            Value::from(42)
        );
        assert_eq!(
            decode_content(Some("application/problem+json"), br#"{"a":1}"#),
            serde_json::json!({"a": 1})
        );
        assert_eq!(decode_content(Some("text/plain"), b"42"), Value::from("42"));
        assert_eq!(
            decode_content(Some("text/plain"), b" [1, 2]"),
            serde_json::json!([1, 2])
        );
        assert_eq!(decode_content(None, b"{not json"), Value::from("{not json"));
        assert_eq!(
            decode_content(Some("image/png"), &[0xff, 0x00]),
            Value::from(BASE64.encode([0xff, 0x00]))
        );
    }

    #[test]
    fn user_info_is_redacted() {
        assert_eq!(
            redact_uri_str("https://u:p@example.com/x?y=1"),
            "https://example.com/x?y=1"
        );
        assert_eq!(redact_uri_str("http://u:p@[bad/x"), "http://[bad/x");
        assert_eq!(
            redact_uri_str("http://example.com/a@b"),
            "http://example.com/a@b"
        );
    }

    #[test]
    fn options_deserialise_with_defaults() {
        let o: HttpOptions =
            serde_json::from_str(r#"{"request_timeout_ms": 1500}"#).unwrap_or_default();
        assert_eq!(o.request_timeout, Duration::from_millis(1500));
        assert_eq!(o.connect_timeout, HttpOptions::default().connect_timeout);
    }

    #[test]
    fn form_encoding() {
        let body =
            serde_json::json!({"grant_type": "client_credentials", "scope": ["a b", "c"], "n": 1});
        let encoded = form_encode(&body).map(String::from_utf8);
        assert_eq!(
            encoded,
            Ok(Ok(
                "grant_type=client_credentials&scope=a+b&scope=c&n=1".to_string()
            ))
        );
    }
}
