//! Checking a decoded definition: what a JSON Schema cannot say (targets of `then`, duplicate
//! task names, references into `use`, runtime expression syntax, ISO 8601 durations) and the
//! `oneOf` rules of the spec's schema that the serde shape does not enforce. Every problem is
//! collected with its JSON pointer; the loader ([`super::load_str`]) adds lines and columns.

use std::collections::HashMap;

use serde_json::Value;

use super::model::{self, *};
use super::pointer::escape;
use crate::{duration, expr};

mod tasks;

/// One problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// JSON pointer of the offending node (`/do/1/setGreen/then`), `""` for the document.
    pub pointer: String,
    /// 1-based line in the source, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in the source, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl Problem {
    pub(super) fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            pointer: pointer.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{l}:{c}: ")?,
            (Some(l), None) => write!(f, "{l}: ")?,
            _ => {}
        }
        if !self.pointer.is_empty() {
            write!(f, "{}: ", self.pointer)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ValidationErrors {
    /// The problems, in document order.
    pub problems: Vec<Problem>,
}

/// The DSL versions this runtime reads: `1.0.x`.
pub const SUPPORTED_DSL: &str = "1.0.x";

/// Checks a workflow that is already decoded (built in Rust, say): everything [`load_str`] checks
/// after decoding. The problems have pointers but no line numbers.
pub fn validate(workflow: &Workflow) -> Result<(), ValidationErrors> {
    let problems = check(workflow);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors { problems })
    }
}

/// The problems of a decoded workflow, in walk order.
fn check(workflow: &Workflow) -> Vec<Problem> {
    check_with(workflow, None)
}

/// The problems of a decoded workflow, `call: NAME` checked against `functions` when they are
/// known.
pub(super) fn check_with(workflow: &Workflow, functions: Option<&[String]>) -> Vec<Problem> {
    let mut c = Checker {
        use_: workflow.use_.as_ref(),
        functions,
        problems: Vec::new(),
    };
    c.workflow(workflow);
    c.problems
}

/// The arguments every runtime expression may read.
const BASE_VARS: &[&str] = &[
    "context",
    "input",
    "output",
    "secrets",
    "task",
    "workflow",
    "runtime",
    "authorization",
];

/// Names of the variables in scope of an expression.
#[derive(Clone)]
struct Scope(Vec<String>);

impl Scope {
    fn root() -> Scope {
        Scope(BASE_VARS.iter().map(|s| (*s).to_string()).collect())
    }

    fn with(&self, names: &[&str]) -> Scope {
        let mut v = self.0.clone();
        v.extend(names.iter().map(|s| s.trim_start_matches('$').to_string()));
        Scope(v)
    }
}

/// Whether `s` is a semantic version (`1.0.3`, `1.0.0-alpha.1+build`).
fn is_semver(s: &str) -> bool {
    let numeric = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    let ident =
        |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| {
            p.split('.')
                .all(|i| ident(i) && (!i.bytes().all(|b| b.is_ascii_digit()) || numeric(i)))
        })
        && build.is_none_or(|b| b.split('.').all(ident))
}

/// Whether `s` is a valid workflow name or namespace: 1 to 63 letters, digits and hyphens,
/// starting and ending with a letter or digit.
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether `s` starts with a URI scheme and `://`, as the spec's `uriTemplate` requires.
fn is_absolute_uri(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_integer(v: &Value) -> bool {
    v.as_i64().is_some() || v.as_u64().is_some()
}

/// The semantic checks, collecting every problem.
struct Checker<'w> {
    use_: Option<&'w Use>,
    /// The functions the runtime has registered, when known ([`super::LoadOptions::functions`]).
    functions: Option<&'w [String]>,
    problems: Vec<Problem>,
}

impl<'w> Checker<'w> {
    fn problem(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(pointer, message));
    }

    /// Checks the syntax of `s` when it is an expression: always when `bare` (the field is an
    /// expression with `${ }` optional), otherwise only when written as `${ ... }`.
    fn expr(&mut self, s: &str, pointer: &str, scope: &Scope, bare: bool) {
        let src = if expr::is_expression(s) {
            expr::strip(s)
        } else if bare {
            s
        } else {
            return;
        };
        if src.trim().is_empty() {
            self.problem(pointer, "empty runtime expression");
            return;
        }
        let names: Vec<&str> = scope.0.iter().map(String::as_str).collect();
        if let Err(e) = expr::check(src, &names) {
            self.problem(
                pointer,
                format!("invalid runtime expression `{}`: {}", src, e.message),
            );
        }
    }

    fn opt_expr(&mut self, s: &Option<String>, pointer: &str, scope: &Scope, bare: bool) {
        if let Some(s) = s {
            self.expr(s, pointer, scope, bare);
        }
    }

    /// Checks every `${ }` string inside `v`.
    fn values(&mut self, v: &Value, pointer: &str, scope: &Scope) {
        match v {
            Value::String(s) => self.expr(s, pointer, scope, false),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.values(x, &format!("{pointer}/{i}"), scope);
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    self.values(x, &format!("{pointer}/{}", escape(k)), scope);
                }
            }
            _ => {}
        }
    }

    fn object_values(&mut self, o: &Option<Object>, pointer: &str, scope: &Scope) {
        if let Some(o) = o {
            for (k, x) in o {
                self.values(x, &format!("{pointer}/{}", escape(k)), scope);
            }
        }
    }

    fn strings(&mut self, v: &Option<Vec<String>>, pointer: &str, scope: &Scope) {
        for (i, s) in v.iter().flatten().enumerate() {
            self.expr(s, &format!("{pointer}/{i}"), scope, false);
        }
    }

    fn duration(&mut self, d: &Duration, pointer: &str, scope: &Scope) {
        match d {
            Duration::Inline(i) => {
                if i.days.is_none()
                    && i.hours.is_none()
                    && i.minutes.is_none()
                    && i.seconds.is_none()
                    && i.milliseconds.is_none()
                {
                    self.problem(pointer, "a duration needs at least one of days, hours, minutes, seconds, milliseconds");
                }
            }
            Duration::Text(t) if expr::is_expression(t) => self.expr(t, pointer, scope, false),
            Duration::Text(t) => {
                if let Err(e) = duration::iso8601_millis(t) {
                    self.problem(
                        pointer,
                        format!("invalid ISO 8601 duration `{t}`: {}", e.message),
                    );
                }
            }
        }
    }

    fn opt_duration(&mut self, d: &Option<Duration>, pointer: &str, scope: &Scope) {
        if let Some(d) = d {
            self.duration(d, pointer, scope);
        }
    }

    /// `name` is a key of the `use` map `pick` selects.
    fn reference<T>(
        &mut self,
        name: &str,
        pointer: &str,
        what: &str,
        block: &str,
        pick: impl Fn(&Use) -> Option<&indexmap::IndexMap<String, T>>,
    ) {
        let found = self
            .use_
            .and_then(&pick)
            .is_some_and(|m| m.contains_key(name));
        if !found {
            self.problem(
                pointer,
                format!("unknown {what} `{name}`: not defined in `use.{block}`"),
            );
        }
    }

    /// `call: NAME` of a function that is nowhere: when the registered functions are known.
    fn function_exists(&mut self, name: &str, pointer: &str) {
        let Some(registered) = self.functions else {
            return;
        };
        let declared = self
            .use_
            .and_then(|u| u.functions.as_ref())
            .is_some_and(|m| m.contains_key(name));
        // Catalog functions and functions by URI are resolved elsewhere.
        if declared || name.contains('@') || name.contains("://") {
            return;
        }
        if !registered.iter().any(|r| r == name) {
            let known = if registered.is_empty() {
                "none".to_string()
            } else {
                registered.join(", ")
            };
            self.problem(
                pointer,
                format!(
                    "unknown function `{name}`: not a built-in call (http, grpc, openapi, \
                     asyncapi, mcp, a2a), not defined in `use.functions`, not a catalog function \
                     (`name:version@catalog`) and not registered with this runtime \
                     (registered: {known})"
                ),
            );
        }
    }

    fn workflow(&mut self, w: &Workflow) {
        let scope = Scope::root();
        self.document(&w.document);
        if let Some(i) = &w.input {
            self.input(i, "/input", &scope);
        }
        if let Some(u) = &w.use_ {
            self.use_block(u, &scope);
        }
        self.list(&w.do_, "/do", &scope);
        if let Some(t) = &w.timeout {
            self.timeout(t, "/timeout", &scope);
        }
        if let Some(o) = &w.output {
            self.output(o, "/output", &scope);
        }
        if let Some(s) = &w.schedule {
            self.opt_duration(&s.every, "/schedule/every", &scope);
            self.opt_duration(&s.after, "/schedule/after", &scope);
            if let Some(on) = &s.on {
                self.strategy(on, "/schedule/on", &scope);
            }
        }
    }

    fn document(&mut self, d: &Document) {
        let supported =
            is_semver(&d.dsl) && d.dsl.split('.').take(2).collect::<Vec<_>>() == ["1", "0"];
        if !supported {
            self.problem(
                "/document/dsl",
                format!(
                    "unsupported dsl version `{}`: cairn reads {SUPPORTED_DSL} (e.g. 1.0.3)",
                    d.dsl
                ),
            );
        }
        for (field, v) in [("namespace", &d.namespace), ("name", &d.name)] {
            if !is_name(v) {
                self.problem(
                    format!("/document/{field}"),
                    format!("invalid {field} `{v}`: 1 to 63 letters, digits or hyphens, starting and ending with a letter or digit"),
                );
            }
        }
        if !is_semver(&d.version) {
            self.problem(
                "/document/version",
                format!(
                    "invalid version `{}`: a semantic version such as 1.0.0 is required",
                    d.version
                ),
            );
        }
    }

    fn use_block(&mut self, u: &Use, scope: &Scope) {
        for (name, a) in u.authentications.iter().flatten() {
            let p = format!("/use/authentications/{}", escape(name));
            if a.use_.is_some() {
                self.problem(
                    format!("{p}/use"),
                    "a policy of `use.authentications` cannot refer to another one",
                );
            }
            self.auth(a, &p, scope);
        }
        for (name, e) in u.errors.iter().flatten() {
            self.error_def(e, &format!("/use/errors/{}", escape(name)), scope);
        }
        for (i, item) in u.extensions.iter().flatten().enumerate() {
            let p = format!("/use/extensions/{i}");
            if item.len() != 1 {
                self.problem(
                    &p,
                    format!(
                        "an extension item must have exactly one key (its name), found {}",
                        item.len()
                    ),
                );
            }
            for (name, x) in item {
                let p = format!("{p}/{}", escape(name));
                self.opt_expr(&x.when, &format!("{p}/when"), scope, true);
                if let Some(l) = &x.before {
                    self.list(l, &format!("{p}/before"), scope);
                }
                if let Some(l) = &x.after {
                    self.list(l, &format!("{p}/after"), scope);
                }
            }
        }
        for (name, t) in u.functions.iter().flatten() {
            self.task(t, &format!("/use/functions/{}", escape(name)), scope);
        }
        for (name, r) in u.retries.iter().flatten() {
            self.retry(r, &format!("/use/retries/{}", escape(name)), scope);
        }
        for (name, t) in u.timeouts.iter().flatten() {
            self.duration(
                &t.after,
                &format!("/use/timeouts/{}/after", escape(name)),
                scope,
            );
        }
        for (name, c) in u.catalogs.iter().flatten() {
            self.endpoint(
                &c.endpoint,
                &format!("/use/catalogs/{}/endpoint", escape(name)),
                scope,
            );
        }
    }

    fn schema(&mut self, s: &model::Schema, pointer: &str, scope: &Scope) {
        match (&s.document, &s.resource) {
            (Some(_), None) => {}
            (None, Some(r)) => self.resource(r, &format!("{pointer}/resource"), scope),
            _ => self.problem(
                pointer,
                "a schema has exactly one of `document` and `resource`",
            ),
        }
    }

    fn string_or_object(&mut self, v: &Option<Value>, pointer: &str, scope: &Scope) {
        match v {
            None => {}
            Some(Value::String(s)) => self.expr(s, pointer, scope, true),
            Some(v @ Value::Object(_)) => self.values(v, pointer, scope),
            Some(_) => self.problem(pointer, "expected a runtime expression or an object"),
        }
    }

    fn input(&mut self, i: &Input, pointer: &str, scope: &Scope) {
        if let Some(s) = &i.schema {
            self.schema(s, &format!("{pointer}/schema"), scope);
        }
        self.string_or_object(&i.from, &format!("{pointer}/from"), scope);
    }

    fn output(&mut self, o: &Output, pointer: &str, scope: &Scope) {
        if let Some(s) = &o.schema {
            self.schema(s, &format!("{pointer}/schema"), scope);
        }
        self.string_or_object(&o.as_, &format!("{pointer}/as"), scope);
    }

    fn timeout(&mut self, t: &TimeoutOrRef, pointer: &str, scope: &Scope) {
        match t {
            TimeoutOrRef::Ref(name) => self.reference(name, pointer, "timeout", "timeouts", |u| {
                u.timeouts.as_ref()
            }),
            TimeoutOrRef::Inline(t) => self.duration(&t.after, &format!("{pointer}/after"), scope),
        }
    }

    fn endpoint(&mut self, e: &Endpoint, pointer: &str, scope: &Scope) {
        let (uri, uri_pointer) = match e {
            Endpoint::Uri(u) => (u, pointer.to_string()),
            Endpoint::Config(c) => (&c.uri, format!("{pointer}/uri")),
        };
        if expr::is_expression(uri) {
            self.expr(uri, &uri_pointer, scope, false);
        } else if !is_absolute_uri(uri) {
            self.problem(
                uri_pointer,
                format!(
                    "`{uri}` is neither an absolute URI (scheme://...) nor a runtime expression"
                ),
            );
        }
        if let Some(a) = e.authentication() {
            self.auth(a, &format!("{pointer}/authentication"), scope);
        }
    }

    fn resource(&mut self, r: &ExternalResource, pointer: &str, scope: &Scope) {
        self.endpoint(&r.endpoint, &format!("{pointer}/endpoint"), scope);
    }

    fn auth(&mut self, a: &AuthenticationPolicy, pointer: &str, scope: &Scope) {
        let schemes = [
            ("use", a.use_.is_some()),
            ("basic", a.basic.is_some()),
            ("bearer", a.bearer.is_some()),
            ("digest", a.digest.is_some()),
            ("oauth2", a.oauth2.is_some()),
            ("oidc", a.oidc.is_some()),
        ];
        let found: Vec<&str> = schemes
            .iter()
            .filter(|(_, p)| *p)
            .map(|(k, _)| *k)
            .collect();
        if found.len() != 1 {
            self.problem(
                pointer,
                format!(
                    "an authentication policy has exactly one of use, basic, bearer, digest, oauth2, oidc; found {}",
                    if found.is_empty() { "none".to_string() } else { found.join(", ") }
                ),
            );
        }
        if let Some(name) = &a.use_ {
            self.reference(
                name,
                &format!("{pointer}/use"),
                "authentication policy",
                "authentications",
                |u| u.authentications.as_ref(),
            );
        }
        for (scheme, b) in [("basic", &a.basic), ("digest", &a.digest)] {
            if let Some(b) = b {
                let p = format!("{pointer}/{scheme}");
                let inline = b.username.is_some() || b.password.is_some();
                match (&b.use_, inline) {
                    (Some(s), false) => self.secret_name(s, &format!("{p}/use")),
                    (None, true) if b.username.is_some() && b.password.is_some() => {
                        self.opt_expr(&b.username, &format!("{p}/username"), scope, false);
                        self.opt_expr(&b.password, &format!("{p}/password"), scope, false);
                    }
                    _ => self.problem(
                        p,
                        format!(
                            "`{scheme}` has either `username` and `password`, or `use` (a secret)"
                        ),
                    ),
                }
            }
        }
        if let Some(b) = &a.bearer {
            let p = format!("{pointer}/bearer");
            match (&b.token, &b.use_) {
                (Some(t), None) => self.expr(t, &format!("{p}/token"), scope, false),
                (None, Some(s)) => self.secret_name(s, &format!("{p}/use")),
                _ => self.problem(p, "`bearer` has either `token` or `use` (a secret)"),
            }
        }
        for (scheme, o) in [("oauth2", &a.oauth2), ("oidc", &a.oidc)] {
            if let Some(o) = o {
                let p = format!("{pointer}/{scheme}");
                let inline = o.authority.is_some()
                    || o.grant.is_some()
                    || o.client.is_some()
                    || o.request.is_some()
                    || o.issuers.is_some()
                    || o.scopes.is_some()
                    || o.audiences.is_some()
                    || o.username.is_some()
                    || o.password.is_some()
                    || o.subject.is_some()
                    || o.actor.is_some()
                    || o.endpoints.is_some();
                if let Some(s) = &o.use_ {
                    if inline {
                        self.problem(&p, format!("`{scheme}` has either inline properties or `use` (a secret), not both"));
                    }
                    self.secret_name(s, &format!("{p}/use"));
                }
                if scheme == "oidc" && o.endpoints.is_some() {
                    self.problem(
                        format!("{p}/endpoints"),
                        "`endpoints` is only allowed in `oauth2`",
                    );
                }
                if let Some(auth) = &o.authority {
                    if !expr::is_expression(auth) && !is_absolute_uri(auth) {
                        self.problem(
                            format!("{p}/authority"),
                            format!("`{auth}` is not an absolute URI"),
                        );
                    }
                }
            }
        }
    }

    fn secret_name(&mut self, s: &str, pointer: &str) {
        if s.is_empty() {
            self.problem(pointer, "the secret name is empty");
        }
    }

    fn error_def(&mut self, e: &ErrorDefinition, pointer: &str, scope: &Scope) {
        if expr::is_expression(&e.type_) {
            self.expr(&e.type_, &format!("{pointer}/type"), scope, false);
        } else if !is_absolute_uri(&e.type_) {
            self.problem(
                format!("{pointer}/type"),
                format!(
                    "error type `{}` is neither an absolute URI nor a runtime expression",
                    e.type_
                ),
            );
        }
        if !is_integer(&e.status) {
            self.problem(format!("{pointer}/status"), "`status` must be an integer");
        }
        self.opt_expr(&e.instance, &format!("{pointer}/instance"), scope, false);
        self.opt_expr(&e.title, &format!("{pointer}/title"), scope, false);
        self.opt_expr(&e.detail, &format!("{pointer}/detail"), scope, false);
    }

    fn retry(&mut self, r: &RetryPolicy, pointer: &str, scope: &Scope) {
        self.opt_expr(&r.when, &format!("{pointer}/when"), scope, true);
        self.opt_expr(
            &r.except_when,
            &format!("{pointer}/exceptWhen"),
            scope,
            true,
        );
        self.opt_duration(&r.delay, &format!("{pointer}/delay"), scope);
        if let Some(b) = &r.backoff {
            let n = [
                b.constant.is_some(),
                b.linear.is_some(),
                b.exponential.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                self.problem(
                    format!("{pointer}/backoff"),
                    "a backoff has exactly one of constant, linear, exponential",
                );
            }
        }
        if let Some(l) = &r.limit {
            self.opt_duration(&l.duration, &format!("{pointer}/limit/duration"), scope);
            if let Some(a) = &l.attempt {
                self.opt_duration(
                    &a.duration,
                    &format!("{pointer}/limit/attempt/duration"),
                    scope,
                );
            }
        }
        if let Some(j) = &r.jitter {
            self.duration(&j.from, &format!("{pointer}/jitter/from"), scope);
            self.duration(&j.to, &format!("{pointer}/jitter/to"), scope);
        }
    }

    fn strategy(&mut self, s: &EventConsumptionStrategy, pointer: &str, scope: &Scope) {
        let n = [s.all.is_some(), s.any.is_some(), s.one.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if n != 1 {
            self.problem(
                pointer,
                "an event consumption strategy has exactly one of all, any, one",
            );
        }
        for (key, filters) in [("all", &s.all), ("any", &s.any)] {
            for (i, f) in filters.iter().flatten().enumerate() {
                self.filter(f, &format!("{pointer}/{key}/{i}"), scope);
            }
        }
        if let Some(f) = &s.one {
            self.filter(f, &format!("{pointer}/one"), scope);
        }
        if let Some(u) = &s.until {
            let p = format!("{pointer}/until");
            if s.any.is_none() {
                self.problem(&p, "`until` is only allowed with `any`");
            }
            match u.as_ref() {
                Until::Condition(c) => self.expr(c, &p, scope, true),
                Until::Events(inner) => {
                    if inner.until.is_some() {
                        self.problem(
                            format!("{p}/until"),
                            "a strategy given as `until` cannot have an `until` of its own",
                        );
                    }
                    self.strategy(inner, &p, scope);
                }
            }
        }
    }

    fn filter(&mut self, f: &EventFilter, pointer: &str, scope: &Scope) {
        if f.with.is_empty() {
            self.problem(
                format!("{pointer}/with"),
                "an event filter needs at least one attribute",
            );
        }
        self.event_props(&f.with, &format!("{pointer}/with"), scope, false);
        for (k, c) in f.correlate.iter().flatten() {
            let p = format!("{pointer}/correlate/{}", escape(k));
            self.expr(&c.from, &format!("{p}/from"), scope, true);
            self.opt_expr(&c.expect, &format!("{p}/expect"), scope, false);
        }
    }

    /// CloudEvent attributes of an `emit` or a filter.
    fn event_props(&mut self, with: &Object, pointer: &str, scope: &Scope, emit: bool) {
        if emit {
            for k in ["source", "type"] {
                if !with.contains_key(k) {
                    self.problem(pointer, format!("the event to emit needs `{k}`"));
                }
            }
        }
        for k in [
            "id",
            "source",
            "type",
            "time",
            "subject",
            "datacontenttype",
            "dataschema",
        ] {
            if let Some(v) = with.get(k) {
                if !v.is_string() {
                    self.problem(format!("{pointer}/{k}"), format!("`{k}` must be a string"));
                }
            }
        }
        for k in ["source", "dataschema"] {
            if let Some(Value::String(s)) = with.get(k) {
                if !expr::is_expression(s) && !is_absolute_uri(s) {
                    self.problem(
                        format!("{pointer}/{k}"),
                        format!("`{s}` is neither an absolute URI nor a runtime expression"),
                    );
                }
            }
        }
        for (k, v) in with {
            self.values(v, &format!("{pointer}/{}", escape(k)), scope);
        }
    }

    fn iterator(&mut self, it: &SubscriptionIterator, pointer: &str, scope: &Scope) {
        let inner = scope.with(&[
            it.item.as_deref().unwrap_or("item"),
            it.at.as_deref().unwrap_or("index"),
        ]);
        if let Some(l) = &it.do_ {
            self.list(l, &format!("{pointer}/do"), &inner);
        }
        if let Some(o) = &it.output {
            self.output(o, &format!("{pointer}/output"), &inner);
        }
        if let Some(o) = &it.export {
            self.output(o, &format!("{pointer}/export"), &inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_and_names() {
        assert!(is_semver("1.0.3"));
        assert!(is_semver("1.0.0-alpha.1+build.5"));
        assert!(!is_semver("1.0"));
        assert!(!is_semver("01.0.0"));
        assert!(is_name("a-b1"));
        assert!(!is_name("-a"));
        assert!(!is_name("a_b"));
    }
}
