//! Runtime expressions: jq, evaluated with the jaq crates, with the spec's arguments
//! (`$context`, `$input`, `$output`, `$secrets`, `$task`, `$workflow`, `$runtime`,
//! `$authorization`) and user-named ones (`$item`, `$index`, `$error`, ...) bound.
//!
//! Compiled programs are cached process-wide by source text and declared variable names, so a
//! definition's expressions are compiled once. Values cross between `serde_json` and jaq as
//! faithfully as jq allows: integers stay integers (a float with an integral value, such as the
//! result of `10 / 2`, comes back as an integer, as jq prints it), NaN becomes `null` and
//! infinities the largest finite numbers, as in jq.
//!
//! Three jaq natives are replaced because the core does no I/O: `env` yields `{}` (it would
//! expose the process environment), and `stderr` and `debug` write nothing (`debug` would log
//! its value, a secret included).
//!
//! Expressions may be hostile, so every compilation and evaluation is bounded
//! ([`crate::budget`]): text longer than [`MAX_SOURCE_LEN`] or nested deeper than
//! [`MAX_SOURCE_NESTING`] is refused before the parser sees it, and evaluation runs on a stack
//! segment of its own, one step of its budget for every term the interpreter evaluates (jaq
//! looks its program up through [`Meter`] for each) and for every number `range` yields
//! (jaq's `range/3` is native and would otherwise produce without a step).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use jaq_core::compile::Undefined;
use jaq_core::data::{DataT, HasLut};
use jaq_core::load::{lex, Arena, Error as LoadError, File, Loader};
use jaq_core::native::{self, Fun};
use jaq_core::{Compiler, Ctx, Cv, Exn, Lut, ValX, ValXs};
use jaq_json::{Num, Val};
use serde_json::Value;

use crate::budget::{self, Budget, Exceeded, Stopped};
use crate::error::{ErrorKind, WorkflowError};

/// Variables bound in an expression, by name without the `$`.
pub type Vars = BTreeMap<String, Value>;

/// An expression failed to compile or to evaluate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expression `{expression}`: {message}")]
pub struct ExprError {
    /// The expression as written.
    pub expression: String,
    /// What went wrong.
    pub message: String,
}

impl From<ExprError> for WorkflowError {
    fn from(e: ExprError) -> Self {
        WorkflowError::new(ErrorKind::Expression, e.to_string()).with_title("Expression error")
    }
}

/// Whether `s` is a runtime expression written as `${ ... }`.
pub fn is_expression(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("${") && t.ends_with('}')
}

/// The jq text of `s`: the inside of `${ ... }`, or `s` itself for a bare expression.
pub fn strip(s: &str) -> &str {
    let t = s.trim();
    if is_expression(t) {
        t[2..t.len() - 1].trim()
    } else {
        t
    }
}

/// Evaluates the jq program `src` (no `${ }`) on `input` with `vars` bound; the first output,
/// or `null` when the program yields nothing. Bounded by the thread's [`budget::limits`].
pub fn eval(src: &str, input: &Value, vars: &Vars) -> Result<Value, ExprError> {
    Ok(evaluate(src, input, vars, false)?
        .into_iter()
        .next()
        .unwrap_or(Value::Null))
}

/// Evaluates a field that is always an expression (`input.from`, `output.as`, `when`, `in`, ...):
/// `${ }` is optional there.
pub fn eval_bare(s: &str, input: &Value, vars: &Vars) -> Result<Value, ExprError> {
    eval(strip(s), input, vars)
}

/// Evaluates a string that is an expression only when written as `${ ... }`; any other string is
/// returned as it is.
pub fn eval_string(s: &str, input: &Value, vars: &Vars) -> Result<Value, ExprError> {
    if is_expression(s) {
        eval(strip(s), input, vars)
    } else {
        Ok(Value::String(s.to_string()))
    }
}

/// Evaluates every `${ }` string inside `v` (objects and arrays walked recursively); a string `v`
/// that is an expression yields the expression's value.
pub fn eval_value(v: &Value, input: &Value, vars: &Vars) -> Result<Value, ExprError> {
    match v {
        Value::String(s) => eval_string(s, input, vars),
        Value::Array(a) => a
            .iter()
            .map(|x| eval_value(x, input, vars))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(o) => {
            let mut out = serde_json::Map::new();
            for (k, x) in o {
                out.insert(k.clone(), eval_value(x, input, vars)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// Evaluates a condition: true when the expression yields `true` (jq truthiness otherwise:
/// anything but `false` and `null`).
pub fn eval_condition(s: &str, input: &Value, vars: &Vars) -> Result<bool, ExprError> {
    Ok(!matches!(
        eval_bare(s, input, vars)?,
        Value::Null | Value::Bool(false)
    ))
}

/// Compiles `src` (no `${ }`) with the given variable names declared (without the `$`), to
/// report syntax errors and undeclared variables before anything runs.
pub fn check(src: &str, var_names: &[&str]) -> Result<(), ExprError> {
    let mut names: Vec<String> = var_names.iter().map(|n| bare_name(n).to_string()).collect();
    names.sort();
    names.dedup();
    let err = |message: String| ExprError {
        expression: src.to_string(),
        message,
    };
    check_source(src).map_err(err)?;
    match budget::metered(|_| compiled(src, names)) {
        Ok(r) => r.map(drop).map_err(err),
        Err(stopped) => Err(err(stopped_message(stopped))),
    }
}

/// Evaluates `src` like [`eval`] but yields every output, in order, as jq would print them.
pub fn eval_all(src: &str, input: &Value, vars: &Vars) -> Result<Vec<Value>, ExprError> {
    evaluate(src, input, vars, true)
}

/// The outputs of `src` (only the first unless `all`), under a budget: steps and memory of the
/// thread's limits, on a stack segment of its own.
fn evaluate(src: &str, input: &Value, vars: &Vars, all: bool) -> Result<Vec<Value>, ExprError> {
    let err = |message: String| ExprError {
        expression: src.to_string(),
        message,
    };
    check_source(src).map_err(err)?;
    let outcome = budget::metered(|budget| -> Result<Vec<Value>, String> {
        let (filter, values) = prepare(src, vars)?;
        let meter = Meter {
            lut: &filter.lut,
            budget,
        };
        let ctx = Ctx::<Metered>::new(meter, jaq_core::Vars::new(values));
        let mut allowance = Allowance::new(budget);
        let mut out = Vec::new();
        for r in filter.id.run((ctx, to_val(input))) {
            let v = r.map_err(exception_message)?;
            out.push(from_val(&v, 0, &mut allowance)?);
            if !all {
                break;
            }
        }
        Ok(out)
    });
    match outcome {
        Ok(r) => r.map_err(err),
        Err(stopped) => Err(err(stopped_message(stopped))),
    }
}

fn stopped_message(stopped: Stopped) -> String {
    match stopped {
        Stopped::Exceeded(e) => e.to_string(),
        Stopped::Panicked(m) => format!("the expression engine failed: {m}"),
    }
}

/// The longest expression text accepted (64 KiB): far beyond any hand-written expression,
/// and it bounds what the parser and compiler spend on one.
pub const MAX_SOURCE_LEN: usize = 64 * 1024;

/// The deepest nesting of parentheses, brackets, braces, strings and string interpolations
/// accepted in expression text. jaq's parser recurses once per level; this keeps it from
/// being asked to recurse without end.
pub const MAX_SOURCE_NESTING: usize = 256;

/// Refuses text too long or nested too deeply, in one linear pass before any parsing.
fn check_source(src: &str) -> Result<(), String> {
    if src.len() > MAX_SOURCE_LEN {
        return Err(format!(
            "expression is {} bytes long; at most {MAX_SOURCE_LEN} are accepted",
            src.len()
        ));
    }
    // What is open: `(`, `[`, `{`, `"` (a string) and `i` (an interpolation `\(` in a string).
    let mut open: Vec<u8> = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if open.last() == Some(&b'"') {
            match b {
                b'\\' if bytes.get(i + 1) == Some(&b'(') => {
                    open.push(b'i');
                    i += 1;
                }
                b'\\' => i += 1,
                b'"' => {
                    open.pop();
                }
                _ => {}
            }
        } else {
            match b {
                b'"' | b'(' | b'[' | b'{' => open.push(b),
                b')' | b']' | b'}' => {
                    open.pop();
                }
                b'#' => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                _ => {}
            }
        }
        if open.len() > MAX_SOURCE_NESTING {
            return Err(format!(
                "expression is nested more than {MAX_SOURCE_NESTING} levels deep (at offset {i})"
            ));
        }
        i += 1;
    }
    Ok(())
}

/// jaq's data for a metered evaluation: the program, and the budget every look-up of it
/// charges a step to.
struct Metered;

impl DataT for Metered {
    type V<'a> = Val;
    type Data<'a> = Meter<'a>;
}

/// The program of one evaluation and its budget.
#[derive(Clone)]
struct Meter<'a> {
    lut: &'a Lut<Metered>,
    budget: &'a Budget,
}

impl<'a> HasLut<'a, Metered> for Meter<'a> {
    fn lut(&self) -> &'a Lut<Metered> {
        // jaq looks the program up once for every term it runs, so this is the interpreter's
        // step counter.
        self.budget.tick();
        self.lut
    }
}

/// `range($from; $to; $by)`, charging a step per number: jaq's native yields numbers without
/// running a term, so `[range(1e12)]` would otherwise grow unchecked.
fn metered_range(mut cv: Cv<'_, Metered>) -> ValXs<'_, Val> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let by = cv.0.pop_var();
    let to = cv.0.pop_var();
    let from = cv.0.pop_var();
    let budget = cv.0.data().budget;
    let direction = by.partial_cmp(&Val::from(0usize)).unwrap_or(Equal);
    let mut next: Option<ValX<'_, Val>> = Some(Ok(from));
    Box::new(std::iter::from_fn(move || {
        let current = next.take()?;
        budget.tick();
        match current {
            Ok(x) => {
                let more = match direction {
                    Greater => x < to,
                    Less => x > to,
                    Equal => x != to,
                };
                if !more {
                    return None;
                }
                next = Some((x.clone() + by.clone()).map_err(Exn::from));
                Some(Ok(x))
            }
            // An addition that failed ends the range after its error.
            Err(e) => Some(Err(e)),
        }
    }))
}

/// The native filters: jaq's and its libraries', with the ones [`CAIRN_DEFS`] replaces left
/// out and `range/3` metered.
fn natives() -> impl Iterator<Item = Fun<Metered>> {
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, args, _)| {
            let replaced = *name == "range" && args.len() == 3;
            !(replaced || WITHHELD_NATIVES.contains(name))
        })
        .chain(std::iter::once(native::run::<Metered>((
            "range",
            native::v(3),
            metered_range,
        ))))
}

/// Bytes charged for each node a result converts to: roughly what a `serde_json::Value`
/// costs. A jaq value shares its parts, so a small one (`reduce range(40) as $i ([1]; [., .])`)
/// can stand for more nodes than memory can hold once converted; the charge stops that.
const NODE_COST: u64 = 64;

/// What converting results may still build, in bytes, out of the memory budget.
struct Allowance(u64);

impl Allowance {
    fn new(budget: &Budget) -> Self {
        Allowance(budget.max_memory())
    }

    fn charge(&mut self, bytes: u64) -> Result<(), String> {
        match self.0.checked_sub(bytes) {
            Some(left) => {
                self.0 = left;
                Ok(())
            }
            None => Err(format!(
                "its result {}",
                Exceeded::Memory(budget::limits().max_memory)
            )),
        }
    }
}

type Filter = jaq_core::Filter<Metered>;

/// Compiled filters by source text and declared names (sorted, without `$`).
type Cache = HashMap<(String, Vec<String>), Arc<Filter>>;

/// How many compiled filters the cache keeps. Each holds its own copy of the compiled standard
/// library (about 100 KiB), so this bounds the cache near 100 MiB. Definitions hold a bounded
/// number of distinct expressions; programs built at run time are what reaches the limit.
const CACHE_CAPACITY: usize = 1024;

/// The deepest nesting of arrays and objects an expression may return: serde_json refuses to
/// parse deeper documents, and results are written to (and read back from) the event log.
pub const MAX_DEPTH: usize = 127;

/// Definitions that replace jaq natives which would reach outside the pure core: `env` would
/// leak the process environment (credentials included) into workflow data, `stderr` would
/// write to the terminal, and `debug` would write its value, secrets included, to the process
/// log (jaq logs through the `log` crate, which tracing forwards).
const CAIRN_DEFS: &str = "def env: {}; def stderr_empty: empty; def debug_empty: empty;";

/// Natives left out in favour of [`CAIRN_DEFS`].
const WITHHELD_NATIVES: [&str; 3] = ["env", "stderr_empty", "debug_empty"];

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A variable name without its `$`, should a caller have written one.
fn bare_name(name: &str) -> &str {
    name.strip_prefix('$').unwrap_or(name)
}

/// The filter for `src` with `vars` declared, and the variables' values in the order the
/// filter declares them.
fn prepare(src: &str, vars: &Vars) -> Result<(Arc<Filter>, Vec<Val>), String> {
    let mut bound: Vec<(&str, &Value)> = vars.iter().map(|(k, v)| (bare_name(k), v)).collect();
    // Already sorted unless a caller wrote some names with `$`; then `x` and `$x` would be one
    // variable, and the first (`$x`) wins.
    bound.sort_by(|a, b| a.0.cmp(b.0));
    bound.dedup_by(|later, earlier| later.0 == earlier.0);
    let names = bound.iter().map(|(n, _)| n.to_string()).collect();
    let filter = compiled(src, names)?;
    Ok((filter, bound.into_iter().map(|(_, v)| to_val(v)).collect()))
}

/// The compiled filter for `src` with `names` (sorted, unique, without `$`) declared, from the
/// cache when it was compiled before.
fn compiled(src: &str, names: Vec<String>) -> Result<Arc<Filter>, String> {
    let key = (src.to_string(), names);
    // A panic while the lock was held cannot leave the map half-updated, so poisoning is ignored.
    if let Some(f) = cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(Arc::clone(f));
    }
    // Compile without holding the lock: two threads may compile the same filter at once, which
    // costs time but never correctness.
    let filter = Arc::new(compile(src, &key.1)?);
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CACHE_CAPACITY {
        // Evict an arbitrary entry (hash order): cheap, and unlike clearing everything it does
        // not make every hot expression recompile at once.
        if let Some(victim) = cache.keys().next().cloned() {
            cache.remove(&victim);
        }
    }
    cache.insert(key, Arc::clone(&filter));
    Ok(filter)
}

fn compile(src: &str, names: &[String]) -> Result<Filter, String> {
    let globals: Vec<String> = names.iter().map(|n| format!("${n}")).collect();
    let cairn_defs = jaq_core::load::parse(CAIRN_DEFS, |p| p.defs())
        .into_iter()
        .flatten();
    let defs = jaq_core::defs()
        .chain(cairn_defs)
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = natives();
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(
            &arena,
            File {
                code: src,
                path: (),
            },
        )
        .map_err(|errs| load_errors(src, errs))?;
    Compiler::default()
        .with_funs(funs)
        .with_global_vars(globals.iter().map(String::as_str))
        .compile(modules)
        .map_err(|errs| {
            let msgs: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, es)| es)
                .map(|(name, undefined)| match undefined {
                    Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                    other => format!("undefined {} `{name}`", other.as_str()),
                })
                .collect();
            msgs.join("; ")
        })
}

fn load_errors(src: &str, errs: jaq_core::load::Errors<&str, ()>) -> String {
    let at = |part: &str| {
        let start = (part.as_ptr() as usize).checked_sub(src.as_ptr() as usize);
        match start.filter(|s| *s <= src.len()) {
            Some(s) if s < src.len() => format!("at offset {s}"),
            _ => "at end of input".to_string(),
        }
    };
    let mut msgs = Vec::new();
    for (_, e) in errs {
        match e {
            LoadError::Lex(es) => msgs.extend(es.into_iter().map(|(expect, rest)| {
                let what = match expect {
                    // `as_str` panics on delimiters it does not know; name them here instead.
                    lex::Expect::Delim(open) => match open.chars().next() {
                        Some('(') => "closing parenthesis",
                        Some('[') => "closing bracket",
                        Some('{') => "closing brace",
                        Some('"') => "closing quote",
                        _ => "closing delimiter",
                    },
                    other => other.as_str(),
                };
                format!("syntax error: expected {what} {}", at(rest))
            })),
            LoadError::Parse(es) => msgs.extend(es.into_iter().map(|(expect, found)| {
                let expected = expect.as_str();
                if found.is_empty() {
                    format!("syntax error: expected {expected}, found end of input")
                } else {
                    format!(
                        "syntax error: expected {expected}, found `{found}` {}",
                        at(found)
                    )
                }
            })),
            LoadError::Io(es) => msgs.extend(
                es.into_iter()
                    .map(|(path, e)| format!("cannot load module `{path}`: {e}")),
            ),
        }
    }
    msgs.join("; ")
}

/// The message of a jaq exception: an error raised by the program, or a `halt`.
fn exception_message(exn: Exn<'_, Val>) -> String {
    match exn.get_err() {
        // `error("...")` carries a string: show it as written rather than as JSON.
        Ok(e) => match e.into_val() {
            Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(&b).into_owned(),
            other => other.to_string(),
        },
        // `jaq_core::unwrap_valr` would exit the process on `halt`; report it instead.
        Err(exn) => match exn.get_halt() {
            Ok(code) => format!("program halted with exit code {code}"),
            Err(_) => "unexpected control flow in program".to_string(),
        },
    }
}

/// A JSON value as a jaq value.
pub(crate) fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => a.iter().map(to_val).collect(),
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, x)| (Val::from(k.clone()), to_val(x)))
                .collect(),
        ),
    }
}

/// A jaq value as a JSON value; `depth` is how deep `v` is nested in the whole result, and
/// every node is charged to `allowance`.
fn from_val(v: &Val, depth: usize, allowance: &mut Allowance) -> Result<Value, String> {
    allowance.charge(NODE_COST)?;
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        // jq has no byte strings; jaq makes them with `tobytes`. Text is the closest JSON.
        Val::TStr(b) | Val::BStr(b) => {
            allowance.charge(b.len() as u64)?;
            Value::String(String::from_utf8_lossy(b).into_owned())
        }
        Val::Arr(a) => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            let mut out = Vec::with_capacity(a.len().min(1024));
            for x in a.iter() {
                out.push(from_val(x, depth + 1, allowance)?);
            }
            Value::Array(out)
        }
        Val::Obj(o) => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            let mut out = serde_json::Map::new();
            for (k, x) in o.iter() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => {
                        allowance.charge(b.len() as u64)?;
                        String::from_utf8_lossy(b).into_owned()
                    }
                    // jaq allows `{(1): 2}`; JSON and jq do not.
                    other => return Err(format!("object key {other} is not a string")),
                };
                out.insert(key, from_val(x, depth + 1, allowance)?);
            }
            Value::Object(out)
        }
    })
}

fn too_deep() -> String {
    format!("result is nested deeper than {MAX_DEPTH} levels")
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i),
        Num::BigInt(b) => int_text_to_json(&b.to_string()),
        Num::Float(f) => float_to_json(*f),
        Num::Dec(s) => float_to_json(s.parse().unwrap_or(f64::NAN)),
    }
}

fn int_text_to_json(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        Value::from(i)
    } else if let Ok(u) = s.parse::<u64>() {
        Value::from(u)
    } else {
        float_to_json(s.parse().unwrap_or(f64::NAN))
    }
}

/// Largest magnitude below which every integral `f64` is exact (2^53).
const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0;

fn float_to_json(f: f64) -> Value {
    if f.is_nan() {
        return Value::Null;
    }
    let f = f.clamp(f64::MIN, f64::MAX);
    if f.fract() == 0.0 && f.abs() < EXACT_INT_LIMIT {
        // Exact: |f| < 2^53, so the cast neither truncates nor saturates.
        return Value::from(f as i64);
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
