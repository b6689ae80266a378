//! Secrets in call arguments, recorded by reference and revealed only when the call is made.
//!
//! A call's arguments are recorded in `ActivityScheduled` before the call is made, and the log is
//! readable by every viewer, so a value taken from `$secrets` must never be recorded as it is.
//! When a call's arguments mention `$secrets`, the decider evaluates them a second time with
//! every secret value replaced by a *placeholder* naming it:
//!
//! ```text
//! ~~secret.<seal>.<name>[.<key>...]~~        e.g. "Bearer ~~secret.5f0c9a1e2b3d4c6f.api.token~~"
//! ```
//!
//! and records that version, with the seal beside it in the call. Whoever performs the call
//! reveals the placeholders just before sending ([`Revealer`]). The seal is a fresh random
//! number drawn when the call is decided: only placeholders carrying the call's own seal are
//! revealed, so text that arrives from outside (a run's input, an HTTP response, an event) can
//! never name a secret, since it was fixed before the seal existed.
//!
//! A placeholder stands for the secret's value as is. The decider checks that revealing the
//! recorded arguments gives exactly what evaluating them with the real secrets gives; arguments
//! that transform a secret (`ascii_downcase`, `length`, `@base64`, ...) cannot be recorded by
//! reference and fault the task instead of being recorded resolved.
//!
//! Placeholders use only RFC 3986 unreserved characters, so they survive URI building and
//! percent-encoding untouched: segments keep `A-Z a-z 0-9 _ -`, every other byte is `~XX`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::activity::SecretSource;
use crate::error::{ErrorKind, WorkflowError};
use crate::events::{ActivityCall, HttpAuth, HttpRequest, OpenApiRequest};

const PREFIX: &str = "~~secret.";
const SUFFIX: &str = "~~";
const SEAL_LEN: usize = 16;
/// Revealed values shorter than this are not scrubbed from messages ([`Revealer::scrub`]).
pub const MIN_SCRUBBED_CHARS: usize = 4;

/// The seal of a call's placeholders, from a random number.
pub fn seal_from(random: u64) -> String {
    format!("{random:016x}")
}

/// Whether an expression (or a definition fragment holding expressions) may read `$secrets`.
/// A textual check: it may say yes for a string that merely contains the word, which only
/// costs a second evaluation.
pub fn mentions_secrets(text: &str) -> bool {
    text.contains("$secrets")
}

/// The placeholder of the secret value at `path` (its name, then keys or indexes).
pub fn placeholder(seal: &str, path: &[String]) -> String {
    let mut out = String::with_capacity(PREFIX.len() + SEAL_LEN + 16);
    out.push_str(PREFIX);
    out.push_str(seal);
    for segment in path {
        out.push('.');
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "~{b:02X}");
            }
        }
    }
    out.push_str(SUFFIX);
    out
}

/// `secrets` with every scalar value (string, number, boolean) replaced by its placeholder;
/// objects, arrays and nulls keep their shape, so expressions navigate it as they would the
/// real secrets.
pub fn placeholders(secrets: &Map<String, Value>, seal: &str) -> Map<String, Value> {
    fn walk(v: &Value, seal: &str, path: &mut Vec<String>) -> Value {
        match v {
            Value::Null => Value::Null,
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| {
                        path.push(k.clone());
                        let w = walk(v, seal, path);
                        path.pop();
                        (k.clone(), w)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        path.push(i.to_string());
                        let w = walk(v, seal, path);
                        path.pop();
                        w
                    })
                    .collect(),
            ),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                Value::String(placeholder(seal, path))
            }
        }
    }
    let mut path = Vec::new();
    secrets
        .iter()
        .map(|(k, v)| {
            path.push(k.clone());
            let w = walk(v, seal, &mut path);
            path.pop();
            (k.clone(), w)
        })
        .collect()
}

/// Whether `text` holds a placeholder of `seal`.
pub fn has_placeholder(text: &str, seal: &str) -> bool {
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        if parse_at(&rest[i..], seal).is_some() {
            return true;
        }
        rest = &rest[i + PREFIX.len()..];
    }
    false
}

/// Whether any string (or object key) in `value` holds a placeholder of `seal`.
pub fn value_has_placeholder(value: &Value, seal: &str) -> bool {
    match value {
        Value::String(s) => has_placeholder(s, seal),
        Value::Array(a) => a.iter().any(|v| value_has_placeholder(v, seal)),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| has_placeholder(k, seal) || value_has_placeholder(v, seal)),
        _ => false,
    }
}

/// A placeholder of `seal` at the start of `text`: its path and its length.
fn parse_at(text: &str, seal: &str) -> Option<(Vec<String>, usize)> {
    let body = text.strip_prefix(PREFIX)?;
    let after_seal = body.strip_prefix(seal)?;
    let path_text = after_seal.strip_prefix('.')?;
    let end = path_text.find(SUFFIX)?;
    let mut path = Vec::new();
    for segment in path_text[..end].split('.') {
        path.push(decode_segment(segment)?);
    }
    let len = PREFIX.len() + seal.len() + 1 + end + SUFFIX.len();
    Some((path, len))
}

fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'~' => {
                let hex = segment.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Where revealed values come from.
pub trait Lookup: Sync {
    /// The value at `path` (a secret's name, then keys or array indexes), if it exists.
    fn secret(&self, path: &[String]) -> Option<Value>;
}

fn navigate(mut v: &Value, rest: &[String]) -> Option<Value> {
    for key in rest {
        v = match v {
            Value::Object(o) => o.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v.clone())
}

impl Lookup for Map<String, Value> {
    fn secret(&self, path: &[String]) -> Option<Value> {
        let (name, rest) = path.split_first()?;
        navigate(self.get(name)?, rest)
    }
}

/// A [`SecretSource`] seen as a [`Lookup`].
pub struct FromSource<'a>(pub &'a dyn SecretSource);

impl Lookup for FromSource<'_> {
    fn secret(&self, path: &[String]) -> Option<Value> {
        let (name, rest) = path.split_first()?;
        navigate(&self.0.get(name)?, rest)
    }
}

/// A placeholder named a secret that does not exist (any more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {path:?} is not defined")]
pub struct MissingSecret {
    /// The secret's name and keys, joined with dots.
    pub path: String,
}

impl From<MissingSecret> for WorkflowError {
    fn from(e: MissingSecret) -> Self {
        WorkflowError::new(ErrorKind::Configuration, e.to_string()).with_title("Missing secret")
    }
}

/// Reveals the placeholders of one call, and remembers what it revealed so that messages about
/// the call can be scrubbed of it ([`Revealer::scrub`]).
pub struct Revealer<'a> {
    seal: Option<&'a str>,
    source: &'a dyn Lookup,
    revealed: Vec<String>,
}

impl<'a> Revealer<'a> {
    /// A revealer for a call recorded with `seal` (none: the call has no placeholders, and
    /// nothing is revealed).
    pub fn new(seal: Option<&'a str>, source: &'a dyn Lookup) -> Self {
        Revealer {
            seal,
            source,
            revealed: Vec::new(),
        }
    }

    fn lookup(&mut self, path: &[String]) -> Result<Value, MissingSecret> {
        let v = self.source.secret(path).ok_or_else(|| MissingSecret {
            path: path.join("."),
        })?;
        let text = scalar_text(&v);
        // Values this short are not credentials (a port, a flag) and replacing them would
        // garble every message.
        if text.chars().count() >= MIN_SCRUBBED_CHARS && !self.revealed.contains(&text) {
            self.revealed.push(text);
        }
        Ok(v)
    }

    /// `text` with each placeholder replaced by the secret's text (a string as is, a number or
    /// boolean as JSON).
    pub fn text<'t>(&mut self, text: &'t str) -> Result<Cow<'t, str>, MissingSecret> {
        let Some(seal) = self.seal else {
            return Ok(Cow::Borrowed(text));
        };
        if !text.contains(PREFIX) {
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(PREFIX) {
            out.push_str(&rest[..i]);
            match parse_at(&rest[i..], seal) {
                Some((path, len)) => {
                    let v = self.lookup(&path)?;
                    out.push_str(&scalar_text(&v));
                    rest = &rest[i + len..];
                }
                None => {
                    out.push_str(PREFIX);
                    rest = &rest[i + PREFIX.len()..];
                }
            }
        }
        out.push_str(rest);
        Ok(Cow::Owned(out))
    }

    /// `value` with its placeholders revealed: a string that is exactly one placeholder becomes
    /// the secret's value (a number stays a number), placeholders inside longer strings and
    /// object keys become the secret's text.
    pub fn value(&mut self, value: &Value) -> Result<Value, MissingSecret> {
        let Some(seal) = self.seal else {
            return Ok(value.clone());
        };
        Ok(match value {
            Value::String(s) => match parse_at(s, seal) {
                Some((path, len)) if len == s.len() => self.lookup(&path)?,
                _ => Value::String(self.text(s)?.into_owned()),
            },
            Value::Array(a) => {
                Value::Array(a.iter().map(|v| self.value(v)).collect::<Result<_, _>>()?)
            }
            Value::Object(o) => {
                let mut m = Map::new();
                for (k, v) in o {
                    m.insert(self.text(k)?.into_owned(), self.value(v)?);
                }
                Value::Object(m)
            }
            other => other.clone(),
        })
    }

    /// `text` with every value revealed so far (of at least [`MIN_SCRUBBED_CHARS`] characters)
    /// replaced by `***`: for messages about the call
    /// (a server's error echoing a URL, a client library quoting a header), which would
    /// otherwise be recorded.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.revealed {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// [`Revealer::scrub`] applied to every text of an error.
    pub fn scrub_error(&self, mut e: WorkflowError) -> WorkflowError {
        if self.revealed.is_empty() {
            return e;
        }
        e.type_ = self.scrub(&e.type_);
        e.title = e.title.map(|t| self.scrub(&t));
        e.detail = e.detail.map(|t| self.scrub(&t));
        e.instance = e.instance.map(|t| self.scrub(&t));
        e
    }

    /// The whole call with its placeholders revealed and its seal removed.
    pub fn call(&mut self, call: &ActivityCall) -> Result<ActivityCall, MissingSecret> {
        Ok(match call {
            ActivityCall::Http(r) => ActivityCall::Http(self.http(r)?),
            ActivityCall::OpenApi(r) => ActivityCall::OpenApi(OpenApiRequest {
                document: self.text(&r.document)?.into_owned(),
                operation_id: r.operation_id.clone(),
                parameters: self.value(&r.parameters)?,
                output: r.output,
                redirect: r.redirect,
                auth: r.auth.as_ref().map(|a| self.auth(a)).transpose()?,
                seal: None,
            }),
            ActivityCall::Function {
                name,
                arguments,
                input,
                ..
            } => ActivityCall::Function {
                name: name.clone(),
                arguments: self.value(arguments)?,
                input: input.clone(),
                seal: None,
            },
        })
    }

    /// An HTTP request with its placeholders revealed and its seal removed.
    pub fn http(&mut self, r: &HttpRequest) -> Result<HttpRequest, MissingSecret> {
        let mut pairs = |v: &[(String, String)]| -> Result<Vec<(String, String)>, MissingSecret> {
            v.iter()
                .map(|(k, v)| Ok((self.text(k)?.into_owned(), self.text(v)?.into_owned())))
                .collect()
        };
        let headers = pairs(&r.headers)?;
        let query = pairs(&r.query)?;
        Ok(HttpRequest {
            method: r.method.clone(),
            uri: self.text(&r.uri)?.into_owned(),
            headers,
            query,
            body: r.body.as_ref().map(|b| self.value(b)).transpose()?,
            output: r.output,
            redirect: r.redirect,
            auth: r.auth.as_ref().map(|a| self.auth(a)).transpose()?,
            seal: None,
        })
    }

    /// Authentication with its placeholders revealed.
    pub fn auth(&mut self, a: &HttpAuth) -> Result<HttpAuth, MissingSecret> {
        Ok(match a {
            HttpAuth::Basic { username, password } => HttpAuth::Basic {
                username: self.text(username)?.into_owned(),
                password: self.text(password)?.into_owned(),
            },
            HttpAuth::Bearer { token } => HttpAuth::Bearer {
                token: self.text(token)?.into_owned(),
            },
            other => other.clone(),
        })
    }
}

/// The seal recorded with a call, if its arguments hold placeholders.
pub fn seal_of(call: &ActivityCall) -> Option<&str> {
    match call {
        ActivityCall::Http(r) => r.seal.as_deref(),
        ActivityCall::OpenApi(r) => r.seal.as_deref(),
        ActivityCall::Function { seal, .. } => seal.as_deref(),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic on failure

    use serde_json::json;

    use super::*;

    #[test]
    fn placeholders_round_trip_and_need_the_seal() {
        let secrets = json!({"api": {"token": "t0k", "pin": 1234}, "odd name.x": ["a"]});
        let secrets = secrets.as_object().unwrap().clone();
        let seal = seal_from(0xfeed);
        let ph = placeholders(&secrets, &seal);
        let token = ph["api"]["token"].as_str().unwrap().to_string();
        assert_eq!(token, "~~secret.000000000000feed.api.token~~");
        let odd = ph["odd name.x"][0].as_str().unwrap().to_string();
        assert_eq!(odd, "~~secret.000000000000feed.odd~20name~2Ex.0~~");

        let mut r = Revealer::new(Some(&seal), &secrets);
        assert_eq!(r.text(&format!("Bearer {token}!")).unwrap(), "Bearer t0k!");
        assert_eq!(r.text(&odd).unwrap(), "a");
        let body = json!({"pin": ph["api"]["pin"], "s": format!("{}-{}", ph["api"]["pin"].as_str().unwrap(), token)});
        assert_eq!(
            r.value(&body).unwrap(),
            json!({"pin": 1234, "s": "1234-t0k"})
        );
        assert_eq!(r.scrub("GET /?t=t0k3 failed"), "GET /?t=t0k3 failed");
        let long = json!({"k": "s3cr3t"});
        let long = long.as_object().unwrap();
        let mut r2 = Revealer::new(Some(&seal), long);
        r2.text(&placeholder(&seal, &["k".to_string()])).unwrap();
        assert_eq!(r2.scrub("GET /?t=s3cr3t a"), "GET /?t=*** a");

        // Another seal reveals nothing: the text stays as it was.
        let mut other = Revealer::new(Some("0000000000000001"), &secrets);
        assert_eq!(other.text(&token).unwrap(), token);
        let mut none = Revealer::new(None, &secrets);
        assert_eq!(none.text(&token).unwrap(), token);
        assert!(has_placeholder(&format!("x{token}y"), &seal));
        assert!(!has_placeholder(&token, "0000000000000001"));

        // A placeholder of a secret that is gone is an error naming it, not its value.
        let missing = placeholder(&seal, &["gone".to_string()]);
        assert_eq!(
            r.text(&missing).unwrap_err().to_string(),
            "secret \"gone\" is not defined"
        );
    }

    #[test]
    fn malformed_placeholders_are_left_alone() {
        let secrets = Map::new();
        let mut r = Revealer::new(Some("000000000000feed"), &secrets);
        for t in [
            "~~secret.",
            "~~secret.000000000000feed",
            "~~secret.000000000000feed.a",
            "~~secret.000000000000feed.a~Z~~",
            "~~secret.000000000000feed.a b~~",
        ] {
            assert_eq!(r.text(t).unwrap(), t);
        }
    }
}
