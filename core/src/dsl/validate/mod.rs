//! Loading a definition from YAML or JSON and validating it before anything runs.
//!
//! [`load_str`] works in three passes and reports every problem it finds with its location:
//!
//! 1. syntax: the text is read into a JSON value (YAML through `serde_norway`); a YAML parser
//!    with positions (`saphyr-parser`) indexes where each node starts and finds duplicate keys;
//! 2. shape: the value is decoded into the strict model ([`Workflow`]) with `serde_path_to_error`,
//!    so a decoding error names the JSON pointer of the offending node (serde stops at the first
//!    one);
//! 3. semantics ([`validate`]): what a JSON Schema cannot say (targets of `then`, duplicate task
//!    names, references into `use`, runtime expression syntax, ISO 8601 durations) and the
//!    `oneOf` rules of the spec's schema that the serde shape does not enforce.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use super::model::{self, *};
use crate::{duration, expr};

/// Source format of a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// YAML (a superset of JSON).
    Yaml,
    /// JSON.
    Json,
}

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
    fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
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

/// What [`load_str_with`] and [`load_with`] know beyond the definition itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The functions registered with the runtime that will run the definition (`call: NAME`
    /// of a function the embedding application registered). `None`: unknown, so such calls
    /// are not checked. `Some(list)`: a `call: NAME` that is not a built-in call, not in
    /// `use.functions`, not a catalog function (`name:version@catalog`), not a URI and not in
    /// the list is a problem.
    pub functions: Option<Vec<String>>,
}

impl LoadOptions {
    /// Options that check `call: NAME` against these registered functions.
    pub fn with_functions(functions: Vec<String>) -> Self {
        LoadOptions {
            functions: Some(functions),
        }
    }
}

/// Parses and validates a definition from text.
pub fn load_str(text: &str, format: SourceFormat) -> Result<Workflow, ValidationErrors> {
    load_str_with(text, format, &LoadOptions::default())
}

/// [`load_str`], checking what `options` know.
pub fn load_str_with(
    text: &str,
    format: SourceFormat,
    options: &LoadOptions,
) -> Result<Workflow, ValidationErrors> {
    let value = parse_value(text, format)?;
    let positions = Positions::index(text);
    let mut problems: Vec<Problem> = positions
        .duplicates
        .iter()
        .map(|(pointer, key, (line, column))| Problem {
            pointer: pointer.clone(),
            line: Some(*line),
            column: Some(*column),
            message: format!("duplicate key `{key}`"),
        })
        .collect();
    let workflow = match decode(&value) {
        Ok(w) => {
            problems.extend(check_with(&w, options));
            Some(w)
        }
        Err(p) => {
            problems.extend(structural_problems(&value, p));
            None
        }
    };
    match workflow {
        Some(w) if problems.is_empty() => Ok(w),
        _ => {
            for p in &mut problems {
                if p.line.is_none() {
                    if let Some((l, c)) = positions.find(&p.pointer) {
                        p.line = Some(l);
                        p.column = Some(c);
                    }
                }
            }
            problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
            Err(ValidationErrors { problems })
        }
    }
}

/// Reads, parses and validates a definition file; `.json` files are JSON, anything else YAML.
pub fn load(path: &Path) -> Result<Workflow, ValidationErrors> {
    load_with(path, &LoadOptions::default())
}

/// [`load`], checking what `options` know.
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Workflow, ValidationErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ValidationErrors {
        problems: vec![Problem::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )],
    })?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => SourceFormat::Json,
        _ => SourceFormat::Yaml,
    };
    load_str_with(&text, format, options)
}

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
    check_with(workflow, &LoadOptions::default())
}

fn check_with(workflow: &Workflow, options: &LoadOptions) -> Vec<Problem> {
    let mut c = Checker {
        use_: workflow.use_.as_ref(),
        functions: options.functions.as_deref(),
        problems: Vec::new(),
    };
    c.workflow(workflow);
    c.problems
}

/// Drops the ` at line L column C` suffix that serde_json and serde_norway append.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Deepest nesting of collections a definition may have (serde_json and serde_norway stop
/// at 128 levels too, but only after their parsers have done the work).
pub const MAX_NESTING: usize = 128;

/// Refuses text nested deeper than [`MAX_NESTING`] before any parser sees it, in one linear
/// pass: the YAML parsers take time quadratic in the nesting depth (a 200 KB line of `[` took
/// 38 s of CPU to refuse). Counts flow collections (`[`, `{` outside quotes and comments) and
/// compact block sequences (`- - - x`). It over-counts only brackets left unbalanced inside
/// plain or block scalars, far below the limit in any real definition. The error is the line
/// and column (from 1) where the limit is passed. Any YAML or JSON from outside can be checked
/// with it before parsing (OpenAPI documents are).
pub fn check_nesting(text: &str) -> Result<(), (usize, usize)> {
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    for (n, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut i = 0;
        if quote.is_none() && flow == 0 {
            // Compact block nesting: `- - - x` (or `? ? x`) opens one collection per indicator.
            let mut compact = 0usize;
            let mut j = line.len() - line.trim_start().len();
            while j + 1 < bytes.len()
                && matches!(bytes[j], b'-' | b'?')
                && matches!(bytes[j + 1], b' ' | b'\t')
            {
                compact += 1;
                j += 2;
                while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
                    j += 1;
                }
            }
            if compact > MAX_NESTING {
                return Err((n + 1, j + 1));
            }
        }
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(b'\'') if b == b'\'' => {
                    // `''` is an escaped quote inside a single-quoted scalar.
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        quote = None;
                    }
                }
                Some(b'"') if b == b'\\' => i += 1,
                Some(b'"') if b == b'"' => quote = None,
                Some(_) => {}
                None => {
                    let after_space = i == 0 || matches!(bytes[i - 1], b' ' | b'\t');
                    let token_start =
                        i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'[' | b'{' | b',');
                    match b {
                        b'#' if after_space => break,
                        b'\'' | b'"' if token_start => quote = Some(b),
                        b'[' | b'{' => {
                            flow += 1;
                            if flow > MAX_NESTING {
                                return Err((n + 1, i + 1));
                            }
                        }
                        b']' | b'}' => flow = flow.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            i += 1;
        }
    }
    Ok(())
}

fn parse_value(text: &str, format: SourceFormat) -> Result<Value, ValidationErrors> {
    let err = |line, column, message: String| ValidationErrors {
        problems: vec![Problem {
            pointer: String::new(),
            line,
            column,
            message,
        }],
    };
    if let Err((line, column)) = check_nesting(text) {
        return Err(err(
            Some(line),
            Some(column),
            format!("the document is nested deeper than {MAX_NESTING} levels"),
        ));
    }
    match format {
        SourceFormat::Json => serde_json::from_str(text).map_err(|e| {
            err(
                Some(e.line()),
                Some(e.column()),
                format!("invalid JSON: {}", strip_location(&e.to_string())),
            )
        }),
        SourceFormat::Yaml => serde_norway::from_str(text).map_err(|e| {
            let loc = e.location();
            err(
                loc.as_ref().map(|l| l.line()),
                loc.as_ref().map(|l| l.column()),
                format!("invalid YAML: {}", strip_location(&e.to_string())),
            )
        }),
    }
}

/// Decodes the strict model, locating the first error.
/// Every structural problem, not only the first: serde stops at the first error, so the
/// offending node is cut out and decoding tried again. An error that is only the consequence of a
/// cut (a field now missing above a removed node) is not reported.
fn structural_problems(value: &Value, first: Problem) -> Vec<Problem> {
    const MAX: usize = 50;
    let mut v = value.clone();
    let mut cut = vec![first.pointer.clone()];
    let mut out = vec![first];
    while out.len() < MAX {
        let Some(last) = cut.last() else { break };
        if last.is_empty() || v.pointer_mut(last).is_none() || !remove_at(&mut v, last) {
            break;
        }
        match decode(&v) {
            Ok(_) => break,
            Err(p) => {
                if cut.iter().any(|c| c.starts_with(&p.pointer)) {
                    break;
                }
                cut.push(p.pointer.clone());
                out.push(p);
            }
        }
    }
    out
}

/// Cuts the node at `pointer` out of its parent object. A whole task (the only key of a task
/// list item) is replaced by a harmless one instead, so that the pointers of the tasks after it
/// stay what the author wrote.
fn remove_at(v: &mut Value, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    let in_list = parent.rsplit_once('/').is_some_and(|(gp, idx)| {
        idx.parse::<usize>().is_ok() && matches!(v.pointer(gp), Some(Value::Array(_)))
    });
    match v.pointer_mut(parent) {
        Some(Value::Object(o)) if in_list && o.len() == 1 => match o.get_mut(&key) {
            Some(slot) => {
                *slot = serde_json::json!({ "set": { "_": 0 } });
                true
            }
            None => false,
        },
        Some(Value::Object(o)) => o.shift_remove(&key).is_some(),
        _ => false,
    }
}

fn decode(value: &Value) -> Result<Workflow, Problem> {
    serde_path_to_error::deserialize::<_, Workflow>(value).map_err(|e| {
        let mut pointer = path_to_pointer(e.path());
        let mut message = e.into_inner().to_string();
        // Arguments of a `call` are decoded once its kind is known, from a value: find where.
        if let Some((rel, m)) = value.pointer(&pointer).and_then(model::locate_call_error) {
            pointer = format!("{pointer}/with{rel}");
            message = m;
        }
        Problem::new(pointer, tidy(&message))
    })
}

/// Shortens serde's "unknown field `x`, expected one of ..." when the list is long.
fn tidy(message: &str) -> String {
    if message.starts_with("unknown field") && message.matches('`').count() > 16 {
        if let Some(i) = message.find(", expected") {
            return message[..i].to_string();
        }
    }
    message.to_string()
}

/// Escapes one reference token of a JSON pointer.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointer of a `serde_path_to_error` path.
pub(crate) fn path_to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&escape(key));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Where each node of the source starts, by JSON pointer, and the duplicate keys found.
#[derive(Default)]
struct Positions {
    starts: HashMap<String, (usize, usize)>,
    duplicates: Vec<(String, String, (usize, usize))>,
}

enum Frame {
    Map {
        pointer: String,
        key: Option<String>,
        seen: HashSet<String>,
    },
    Seq {
        pointer: String,
        next: usize,
    },
}

impl Positions {
    /// Indexes `text` (YAML or JSON); on a syntax error, what was indexed before it.
    fn index(text: &str) -> Positions {
        use saphyr_parser::{Event, Parser};
        let mut out = Positions::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut root_seen = false;
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = (span.start.line(), span.start.col() + 1);
            let is_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(_)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
            );
            if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
                continue;
            }
            if !is_node {
                continue;
            }
            // The pointer of this node, or `None` when it is a mapping key.
            let pointer = match stack.last_mut() {
                None => {
                    if root_seen {
                        // A second document: not indexed.
                        break;
                    }
                    root_seen = true;
                    Some(String::new())
                }
                Some(Frame::Seq { pointer, next }) => {
                    let p = format!("{pointer}/{next}");
                    *next += 1;
                    Some(p)
                }
                Some(Frame::Map { pointer, key, seen }) => match key.take() {
                    Some(k) => Some(format!("{pointer}/{}", escape(&k))),
                    None => {
                        let k = match &event {
                            Event::Scalar(s, ..) => s.to_string(),
                            _ => String::from("\u{0}complex"),
                        };
                        let p = format!("{pointer}/{}", escape(&k));
                        if !seen.insert(k.clone()) {
                            out.duplicates.push((p.clone(), k.clone(), pos));
                        }
                        out.starts.entry(p).or_insert(pos);
                        *key = Some(k);
                        None
                    }
                },
            };
            let node_pointer = match pointer {
                Some(p) => {
                    out.starts.entry(p.clone()).or_insert(pos);
                    p
                }
                // A complex key's own children are indexed under a pointer nobody asks for.
                None => String::from("\u{0}key"),
            };
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map {
                    pointer: node_pointer,
                    key: None,
                    seen: HashSet::new(),
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    pointer: node_pointer,
                    next: 0,
                }),
                _ => {}
            }
        }
        out
    }

    /// The position of `pointer`, or of its nearest ancestor that has one.
    fn find(&self, pointer: &str) -> Option<(usize, usize)> {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.starts.get(p) {
                return Some(*pos);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
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
    /// The functions the runtime has registered, when known ([`LoadOptions::functions`]).
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

    fn list(&mut self, list: &TaskList, pointer: &str, scope: &Scope) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, nt) in list.0.iter().enumerate() {
            if let Some(j) = first.get(nt.name.as_str()) {
                self.problem(
                    format!("{pointer}/{i}/{}", escape(&nt.name)),
                    format!(
                        "duplicate task name `{}`: already used by task {j} of this list",
                        nt.name
                    ),
                );
            } else {
                first.insert(&nt.name, i);
            }
        }
        for (i, nt) in list.0.iter().enumerate() {
            let p = format!("{pointer}/{i}/{}", escape(&nt.name));
            if let Some(FlowDirective::Goto(target)) = &nt.task.base.then {
                if !first.contains_key(target.as_str()) {
                    self.problem(
                        format!("{p}/then"),
                        format!("`then` refers to `{target}`, which is not a task of this list"),
                    );
                }
            }
            if let TaskKind::Switch(cases) = &nt.task.kind {
                for (j, c) in cases.iter().enumerate() {
                    if let FlowDirective::Goto(target) = &c.then {
                        if !first.contains_key(target.as_str()) {
                            self.problem(
                                format!("{p}/switch/{j}/{}/then", escape(&c.name)),
                                format!(
                                    "`then` refers to `{target}`, which is not a task of this list"
                                ),
                            );
                        }
                    }
                }
            }
            self.task(&nt.task, &p, scope);
        }
    }

    fn task(&mut self, t: &Task, pointer: &str, scope: &Scope) {
        let b = &t.base;
        self.opt_expr(&b.if_, &format!("{pointer}/if"), scope, true);
        if let Some(i) = &b.input {
            self.input(i, &format!("{pointer}/input"), scope);
        }
        if let Some(o) = &b.output {
            self.output(o, &format!("{pointer}/output"), scope);
        }
        if let Some(o) = &b.export {
            self.output(o, &format!("{pointer}/export"), scope);
        }
        if let Some(to) = &b.timeout {
            self.timeout(to, &format!("{pointer}/timeout"), scope);
        }
        match &t.kind {
            TaskKind::Call(c) => self.call(c, pointer, scope),
            TaskKind::Do(l) => self.list(l, &format!("{pointer}/do"), scope),
            TaskKind::Fork(f) => self.list(&f.branches, &format!("{pointer}/fork/branches"), scope),
            TaskKind::Emit(e) => self.event_props(
                &e.event.with,
                &format!("{pointer}/emit/event/with"),
                scope,
                true,
            ),
            TaskKind::For(f) => {
                self.expr(&f.for_.in_, &format!("{pointer}/for/in"), scope, true);
                let inner = scope.with(&[
                    f.for_.each.as_deref().unwrap_or("item"),
                    f.for_.at.as_deref().unwrap_or("index"),
                ]);
                self.opt_expr(&f.while_, &format!("{pointer}/while"), &inner, true);
                self.list(&f.do_, &format!("{pointer}/do"), &inner);
            }
            TaskKind::Listen(l) => {
                self.strategy(&l.listen.to, &format!("{pointer}/listen/to"), scope);
                if let Some(it) = &l.foreach {
                    self.iterator(it, &format!("{pointer}/foreach"), scope);
                }
            }
            TaskKind::Raise(r) => {
                let p = format!("{pointer}/raise/error");
                match &r.error {
                    ErrorOrRef::Ref(name) => {
                        self.reference(name, &p, "error", "errors", |u| u.errors.as_ref())
                    }
                    ErrorOrRef::Inline(e) => self.error_def(e, &p, scope),
                }
            }
            TaskKind::Run(r) => self.run(r, &format!("{pointer}/run"), scope),
            TaskKind::Set(v) => self.values(v, &format!("{pointer}/set"), scope),
            TaskKind::Switch(cases) => {
                for (j, c) in cases.iter().enumerate() {
                    let p = format!("{pointer}/switch/{j}/{}/when", escape(&c.name));
                    self.opt_expr(&c.when, &p, scope, true);
                }
            }
            TaskKind::Try(t) => {
                self.list(&t.try_, &format!("{pointer}/try"), scope);
                let c = &t.catch;
                let p = format!("{pointer}/catch");
                let inner = scope.with(&[c.as_.as_deref().unwrap_or("error")]);
                if let Some(with) = c.errors.as_ref().and_then(|e| e.with.as_ref()) {
                    self.error_filter(with, &format!("{p}/errors/with"));
                }
                self.opt_expr(&c.when, &format!("{p}/when"), &inner, true);
                self.opt_expr(&c.except_when, &format!("{p}/exceptWhen"), &inner, true);
                match &c.retry {
                    Some(RetryOrRef::Ref(name)) => self.reference(
                        name,
                        &format!("{p}/retry"),
                        "retry policy",
                        "retries",
                        |u| u.retries.as_ref(),
                    ),
                    Some(RetryOrRef::Inline(r)) => self.retry(r, &format!("{p}/retry"), &inner),
                    None => {}
                }
                if let Some(l) = &c.do_ {
                    self.list(l, &format!("{p}/do"), &inner);
                }
            }
            TaskKind::Wait(d) => self.duration(d, &format!("{pointer}/wait"), scope),
        }
    }

    fn error_filter(&mut self, with: &Object, pointer: &str) {
        if with.is_empty() {
            self.problem(pointer, "an error filter needs at least one property");
        }
        for (k, v) in with {
            let ok = match k.as_str() {
                "status" => is_integer(v),
                "type" | "instance" | "title" | "details" => v.is_string(),
                _ => true,
            };
            if !ok {
                let want = if k == "status" {
                    "an integer"
                } else {
                    "a string"
                };
                self.problem(
                    format!("{pointer}/{}", escape(k)),
                    format!("`{k}` must be {want}"),
                );
            }
        }
    }

    fn string_map_or_expr(&mut self, v: &Option<Value>, pointer: &str, scope: &Scope, field: &str) {
        match v {
            None => {}
            Some(Value::String(s)) if expr::is_expression(s) => self.expr(s, pointer, scope, false),
            Some(Value::Object(o)) => {
                for (k, x) in o {
                    let p = format!("{pointer}/{}", escape(k));
                    match x {
                        Value::String(s) => self.expr(s, &p, scope, false),
                        _ => self.problem(p, format!("the values of `{field}` must be strings")),
                    }
                }
            }
            Some(_) => self.problem(
                pointer,
                format!("`{field}` must be an object of strings or a runtime expression"),
            ),
        }
    }

    fn call(&mut self, c: &CallTask, pointer: &str, scope: &Scope) {
        let w = format!("{pointer}/with");
        match c {
            CallTask::Http(a) => {
                self.endpoint(&a.endpoint, &format!("{w}/endpoint"), scope);
                self.expr(&a.method, &format!("{w}/method"), scope, false);
                self.string_map_or_expr(&a.headers, &format!("{w}/headers"), scope, "headers");
                self.string_map_or_expr(&a.query, &format!("{w}/query"), scope, "query");
                if let Some(body) = &a.body {
                    self.values(body, &format!("{w}/body"), scope);
                }
            }
            CallTask::OpenApi(a) => {
                self.resource(&a.document, &format!("{w}/document"), scope);
                self.object_values(&a.parameters, &format!("{w}/parameters"), scope);
                if let Some(au) = &a.authentication {
                    self.auth(au, &format!("{w}/authentication"), scope);
                }
            }
            CallTask::Grpc(a) => {
                self.resource(&a.proto, &format!("{w}/proto"), scope);
                let host = &a.service.host;
                let host_ok = !host.is_empty()
                    && host.len() <= 63
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && host.as_bytes()[0].is_ascii_alphanumeric()
                    && host.as_bytes()[host.len() - 1].is_ascii_alphanumeric();
                if !host_ok {
                    self.problem(
                        format!("{w}/service/host"),
                        format!("invalid host `{host}`"),
                    );
                }
                if let Some(au) = &a.service.authentication {
                    self.auth(au, &format!("{w}/service/authentication"), scope);
                }
                self.object_values(&a.arguments, &format!("{w}/arguments"), scope);
            }
            CallTask::AsyncApi(a) => {
                self.resource(&a.document, &format!("{w}/document"), scope);
                if a.operation.is_some() == a.channel.is_some() {
                    self.problem(
                        &w,
                        "`call: asyncapi` has exactly one of `operation` and `channel`",
                    );
                }
                if a.message.is_some() == a.subscription.is_some() {
                    self.problem(
                        &w,
                        "`call: asyncapi` has exactly one of `message` and `subscription`",
                    );
                }
                if let Some(s) = &a.server {
                    self.object_values(&s.variables, &format!("{w}/server/variables"), scope);
                }
                if let Some(m) = &a.message {
                    self.object_values(&m.payload, &format!("{w}/message/payload"), scope);
                    self.object_values(&m.headers, &format!("{w}/message/headers"), scope);
                }
                if let Some(s) = &a.subscription {
                    let p = format!("{w}/subscription");
                    self.runtime_expression(&s.filter, &format!("{p}/filter"), scope);
                    let c = &s.consume;
                    let n = [c.amount.is_some(), c.while_.is_some(), c.until.is_some()]
                        .iter()
                        .filter(|x| **x)
                        .count();
                    if n != 1 {
                        self.problem(
                            format!("{p}/consume"),
                            "`consume` has exactly one of amount, while, until",
                        );
                    }
                    self.opt_duration(&c.for_, &format!("{p}/consume/for"), scope);
                    self.runtime_expression(&c.while_, &format!("{p}/consume/while"), scope);
                    self.runtime_expression(&c.until, &format!("{p}/consume/until"), scope);
                    if let Some(it) = &s.foreach {
                        self.iterator(it, &format!("{p}/foreach"), scope);
                    }
                }
                if let Some(au) = &a.authentication {
                    self.auth(au, &format!("{w}/authentication"), scope);
                }
            }
            CallTask::Mcp(a) => {
                match &a.parameters {
                    None => {}
                    Some(Value::String(s)) => {
                        self.expr(s, &format!("{w}/parameters"), scope, false)
                    }
                    Some(v @ Value::Object(_)) => self.values(v, &format!("{w}/parameters"), scope),
                    Some(_) => self.problem(
                        format!("{w}/parameters"),
                        "`parameters` must be an object or a runtime expression",
                    ),
                }
                self.opt_duration(&a.timeout, &format!("{w}/timeout"), scope);
                let t = &a.transport;
                if t.http.is_some() == t.stdio.is_some() {
                    self.problem(
                        format!("{w}/transport"),
                        "`transport` has exactly one of `http` and `stdio`",
                    );
                }
                if let Some(h) = &t.http {
                    self.endpoint(&h.endpoint, &format!("{w}/transport/http/endpoint"), scope);
                }
                if let Some(s) = &t.stdio {
                    self.strings(
                        &s.arguments,
                        &format!("{w}/transport/stdio/arguments"),
                        scope,
                    );
                }
            }
            CallTask::A2a(a) => {
                if let Some(r) = &a.agent_card {
                    self.resource(r, &format!("{w}/agentCard"), scope);
                }
                if let Some(e) = &a.server {
                    self.endpoint(e, &format!("{w}/server"), scope);
                }
                match &a.parameters {
                    None => {}
                    Some(Value::String(s)) => {
                        self.expr(s, &format!("{w}/parameters"), scope, false)
                    }
                    Some(Value::Object(o)) if !o.is_empty() => {
                        if let Some(v) = &a.parameters {
                            self.values(v, &format!("{w}/parameters"), scope);
                        }
                    }
                    Some(_) => self.problem(
                        format!("{w}/parameters"),
                        "`parameters` must be a non-empty object or a runtime expression",
                    ),
                }
            }
            CallTask::Function { name, with } => {
                self.object_values(with, &w, scope);
                self.function_exists(name, &format!("{pointer}/call"));
                // `name:version@catalog` names a function of a catalog, which must be declared.
                if !name.contains("://") {
                    if let Some((function, catalog)) = name.rsplit_once('@') {
                        if function.contains(':') {
                            self.reference(
                                catalog,
                                &format!("{pointer}/call"),
                                "catalog",
                                "catalogs",
                                |u| u.catalogs.as_ref(),
                            );
                        }
                    }
                }
            }
        }
    }

    /// A field whose string must be written as `${ ... }`.
    fn runtime_expression(&mut self, s: &Option<String>, pointer: &str, scope: &Scope) {
        if let Some(s) = s {
            if expr::is_expression(s) {
                self.expr(s, pointer, scope, false);
            } else {
                self.problem(
                    pointer,
                    "expected a runtime expression written as `${ ... }`",
                );
            }
        }
    }

    fn run(&mut self, r: &RunTask, pointer: &str, scope: &Scope) {
        if let Some(ret) = &r.return_ {
            if !PROCESS_RETURN_TYPES.contains(&ret.as_str()) {
                self.problem(
                    format!("{pointer}/return"),
                    format!(
                        "unknown return type `{ret}`: expected one of {}",
                        PROCESS_RETURN_TYPES.join(", ")
                    ),
                );
            }
        }
        let n = [
            r.container.is_some(),
            r.script.is_some(),
            r.shell.is_some(),
            r.workflow.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if n != 1 {
            self.problem(
                pointer,
                "`run` has exactly one of container, script, shell, workflow",
            );
        }
        if let Some(c) = &r.container {
            let p = format!("{pointer}/container");
            self.opt_expr(&c.name, &format!("{p}/name"), scope, false);
            self.opt_expr(&c.command, &format!("{p}/command"), scope, false);
            self.opt_expr(&c.stdin, &format!("{p}/stdin"), scope, false);
            self.strings(&c.arguments, &format!("{p}/arguments"), scope);
            self.object_values(&c.environment, &format!("{p}/environment"), scope);
            if let Some(l) = &c.lifetime {
                let lp = format!("{p}/lifetime");
                match (l.cleanup, &l.after) {
                    (ContainerCleanup::Eventually, Some(d)) => {
                        self.duration(d, &format!("{lp}/after"), scope)
                    }
                    (ContainerCleanup::Eventually, None) => {
                        self.problem(lp, "`cleanup: eventually` needs `after`")
                    }
                    (_, Some(_)) => self.problem(
                        format!("{lp}/after"),
                        "`after` is only allowed with `cleanup: eventually`",
                    ),
                    (_, None) => {}
                }
            }
        }
        if let Some(s) = &r.script {
            let p = format!("{pointer}/script");
            match (&s.code, &s.source) {
                (Some(_), None) => {}
                (None, Some(src)) => self.resource(src, &format!("{p}/source"), scope),
                _ => self.problem(&p, "`script` has exactly one of `code` and `source`"),
            }
            self.opt_expr(&s.stdin, &format!("{p}/stdin"), scope, false);
            self.strings(&s.arguments, &format!("{p}/arguments"), scope);
            self.object_values(&s.environment, &format!("{p}/environment"), scope);
        }
        if let Some(s) = &r.shell {
            let p = format!("{pointer}/shell");
            self.expr(&s.command, &format!("{p}/command"), scope, false);
            self.opt_expr(&s.stdin, &format!("{p}/stdin"), scope, false);
            self.strings(&s.arguments, &format!("{p}/arguments"), scope);
            self.object_values(&s.environment, &format!("{p}/environment"), scope);
        }
        if let Some(w) = &r.workflow {
            let p = format!("{pointer}/workflow");
            match &w.input {
                None => {}
                Some(v @ Value::Object(_)) => self.values(v, &format!("{p}/input"), scope),
                Some(_) => self.problem(format!("{p}/input"), "`input` must be an object"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: t\n  version: '0.1.0'\n";

    fn problems(body: &str) -> Vec<Problem> {
        match load_str(&format!("{HEAD}{body}"), SourceFormat::Yaml) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    fn pointers(body: &str) -> Vec<String> {
        problems(body).into_iter().map(|p| p.pointer).collect()
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        for (text, format) in [
            ("[".repeat(100_000), SourceFormat::Yaml),
            ("{a: ".repeat(100_000), SourceFormat::Yaml),
            ("{\"a\":".repeat(50_000), SourceFormat::Json),
            (format!("{}1", "- ".repeat(100_000)), SourceFormat::Yaml),
        ] {
            let e = load_str(&text, format).expect_err("too deep");
            assert_eq!(e.problems.len(), 1, "{e}");
            assert!(e.problems[0].message.contains("nested deeper"), "{e}");
            assert_eq!(e.problems[0].line, Some(1), "{e}");
        }
        // Brackets in quotes and comments do not count; 100 real levels are fine.
        let deep_ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(check_nesting(&deep_ok).is_ok());
        let quoted = format!(
            "a: '{}'\nb: \"{}\" # {}\n",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(check_nesting(&quoted).is_ok());
        assert!(check_nesting(&format!("- {}x", "- ".repeat(MAX_NESTING))).is_err());
    }

    #[test]
    fn valid_definition_loads() {
        let body = "do:\n  - a:\n      set:\n        x: ${ .y }\n      then: b\n  - b:\n      wait: PT1S\n";
        assert_eq!(problems(body), Vec::new());
    }

    #[test]
    fn unknown_field_has_pointer_and_line() {
        let p = problems("do:\n  - a:\n      set:\n        x: 1\n      sett: 2\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/do/0/a/sett");
        assert_eq!(p[0].line, Some(10));
        assert!(
            p[0].message.contains("unknown field `sett`"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn call_argument_error_points_inside_with() {
        let p = problems("do:\n  - a:\n      call: http\n      with:\n        method: get\n        endpoint: https://x.example\n        foo: 1\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/do/0/a/with/foo");
        assert_eq!(p[0].line, Some(12));
    }

    #[test]
    fn two_tasks_in_one_item_is_rejected() {
        let p = pointers("do:\n  - a:\n      set: {x: 1}\n    b:\n      set: {x: 2}\n");
        assert_eq!(p, vec!["/do/0"]);
    }

    #[test]
    fn all_semantic_problems_are_collected() {
        let body = "do:\n  - a:\n      set: {x: 1}\n      then: nowhere\n  - a:\n      raise:\n        error: missing\n  - c:\n      switch:\n        - one:\n            when: .x ==\n            then: gone\n";
        let p = pointers(body);
        assert!(p.contains(&"/do/0/a/then".to_string()), "{p:?}");
        assert!(p.contains(&"/do/1/a".to_string()), "{p:?}");
        assert!(p.contains(&"/do/1/a/raise/error".to_string()), "{p:?}");
        assert!(
            p.contains(&"/do/2/c/switch/0/one/then".to_string()),
            "{p:?}"
        );
    }

    #[test]
    fn unsupported_dsl_version() {
        let text = "document:\n  dsl: '0.8'\n  namespace: test\n  name: t\n  version: '0.1.0'\ndo:\n  - a:\n      wait: PT1S\n";
        let e = load_str(text, SourceFormat::Yaml)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pointer, "/document/dsl");
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].message.contains("unsupported dsl version `0.8`"));
    }

    #[test]
    fn references_into_use() {
        let body = "do:\n  - a:\n      call: http\n      with:\n        method: get\n        endpoint:\n          uri: https://x.example\n          authentication:\n            use: nope\n      timeout: slow\n  - b:\n      call: log:1.0.0@nocat\n  - c:\n      call: myRustFunction\n";
        let p = pointers(body);
        assert_eq!(
            p,
            vec![
                "/do/0/a/with/endpoint/authentication/use",
                "/do/0/a/timeout",
                "/do/1/b/call"
            ],
        );
    }

    #[test]
    fn oneof_rules() {
        let body = "do:\n  - a:\n      call: http\n      with:\n        method: get\n        endpoint:\n          uri: https://x.example\n          authentication:\n            basic: {username: u, password: p}\n            bearer: {token: t}\n  - b:\n      run:\n        shell: {command: ls}\n        script: {language: js, code: x}\n  - c:\n      listen:\n        to:\n          one: {with: {type: t}}\n          any: []\n";
        let p = pointers(body);
        assert_eq!(
            p,
            vec![
                "/do/0/a/with/endpoint/authentication",
                "/do/1/b/run",
                "/do/2/c/listen/to"
            ]
        );
    }

    #[test]
    fn durations_are_checked() {
        let p = pointers(
            "do:\n  - a:\n      wait: PT1X\n  - b:\n      wait: ${ .d }\n  - c:\n      wait: {}\n",
        );
        assert_eq!(p, vec!["/do/0/a/wait", "/do/2/c/wait"]);
    }

    #[test]
    fn json_source_has_positions() {
        let text = r#"{"document": {"dsl": "1.0.3", "namespace": "t", "name": "t", "version": "1.0.0"},
 "do": [{"a": {"set": {"x": 1}, "then": "zz"}}]}"#;
        let e = load_str(text, SourceFormat::Json)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pointer, "/do/0/a/then");
        assert_eq!(e[0].line, Some(2));
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let p = pointers("do:\n  - a:\n      wait: PT1S\ndo:\n  - b:\n      wait: PT1S\n");
        assert!(!p.is_empty());
    }

    #[test]
    fn task_shape_errors() {
        let p = problems("do:\n  - a:\n      set: {x: 1}\n      wait: PT1S\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].pointer, "/do/0/a");
        assert!(
            p[0].message.contains("exactly one kind"),
            "{}",
            p[0].message
        );
        let p = problems("do:\n  - a:\n      set: {x: 1}\n      while: .x\n");
        assert!(p[0]
            .message
            .contains("`while` is only allowed in a `for` task"));
        // An explicit null is not the same as an absent field.
        assert_eq!(
            pointers("do:\n  - a:\n      set: {x: 1}\n      input: null\n"),
            vec!["/do/0/a/input"]
        );
    }

    #[test]
    fn for_variables_are_in_scope_only_in_the_body() {
        let body = "do:\n  - loop:\n      for: {each: color, in: .colors}\n      do:\n        - paint:\n            set: {c: '${ $color }'}\n  - after:\n      set: {c: '${ $color }'}\n";
        assert_eq!(pointers(body), vec!["/do/1/after/set/c"]);
    }

    #[test]
    fn round_trip_keeps_the_task_kind() {
        let text = format!("{HEAD}do:\n  - loop:\n      for: {{in: .xs}}\n      while: .ok\n      do:\n        - a:\n            wait: {{seconds: 1}}\n");
        let w = load_str(&text, SourceFormat::Yaml).expect("valid");
        let v = serde_json::to_value(&w).expect("serialisable");
        assert_eq!(
            v.pointer("/do/0/loop/while"),
            Some(&Value::String(".ok".into()))
        );
        let again: Workflow = serde_json::from_value(v).expect("decodes again");
        assert_eq!(again, w);
    }

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
