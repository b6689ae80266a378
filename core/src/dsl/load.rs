//! Loading a definition from YAML or JSON text, every problem with its location. Core reads no
//! files: callers read the text (and name the file in their messages).
//!
//! [`load_str`] works in three passes:
//!
//! 1. syntax: the text is first checked for nesting depth ([`check_nesting`]), then read into a
//!    JSON value (YAML through `serde_norway`); a YAML parser with positions (`saphyr-parser`)
//!    indexes where each node starts and finds duplicate keys;
//! 2. shape: the value is decoded into the strict model ([`Workflow`]) with `serde_path_to_error`,
//!    so a decoding error names the JSON pointer of the offending node (serde stops at the first
//!    one);
//! 3. semantics: the checks of [`super::validate`], whose problems get their line and column here.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::model::{self, Workflow};
use super::pointer::{escape, path_to_pointer};
use super::validate::{check_with, Problem, ValidationErrors};

/// Source format of a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// YAML (a superset of JSON).
    Yaml,
    /// JSON.
    Json,
}

/// What [`load_str_with`] knows beyond the definition itself.
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
            problems.extend(check_with(&w, options.functions.as_deref()));
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
