//! Runtime expressions: jq, evaluated with the jaq crates, with the spec's arguments
//! (`$context`, `$input`, `$output`, `$secrets`, `$task`, `$workflow`, `$runtime`,
//! `$authorization`) and user-named ones (`$item`, `$index`, `$error`, ...) bound.
//!
//! STUB: the interface is fixed; the implementation is being written.

use std::collections::BTreeMap;

use serde_json::Value;

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
/// or `null` when the program yields nothing.
pub fn eval(src: &str, input: &Value, vars: &Vars) -> Result<Value, ExprError> {
    let _ = (input, vars);
    Err(ExprError { expression: src.to_string(), message: "not implemented".into() })
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
        Value::Array(a) => a.iter().map(|x| eval_value(x, input, vars)).collect::<Result<_, _>>().map(Value::Array),
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
    Ok(!matches!(eval_bare(s, input, vars)?, Value::Null | Value::Bool(false)))
}

/// Compiles `src` (no `${ }`) with the given variable names declared, to report syntax errors
/// before anything runs.
pub fn check(src: &str, var_names: &[&str]) -> Result<(), ExprError> {
    let _ = var_names;
    let _ = src;
    Ok(())
}
