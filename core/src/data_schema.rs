//! JSON Schema validation of data at run time (`input.schema`, `output.schema`,
//! `export.schema` of workflows and tasks).
//!
//! Schemas are compiled once and cached by their text: a definition's schemas are few and
//! validated for every run. Only inline schemas (`document`) are supported; remote references
//! are not resolved (core does no I/O).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::dsl::Schema;
use crate::error::{ErrorKind, WorkflowError};

const CACHE_CAPACITY: usize = 1024;

fn cache() -> &'static Mutex<HashMap<String, Arc<jsonschema::Validator>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn compiled(doc: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    let key = doc.to_string();
    if let Some(v) = cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(v);
    }
    let v = Arc::new(jsonschema::validator_for(doc).map_err(|e| e.to_string())?);
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_CAPACITY {
            c.clear();
        }
        c.insert(key, v.clone());
    }
    Ok(v)
}

/// Checks `data` against `schema`; `what` names the data in messages (e.g. "workflow input").
/// A failure is the spec's validation error (400) listing every violation with its location.
pub fn check(schema: &Schema, data: &Value, what: &str) -> Result<(), WorkflowError> {
    if let Some(f) = &schema.format {
        if !f.eq_ignore_ascii_case("json") && !f.starts_with("json:") {
            return Err(WorkflowError::new(
                ErrorKind::Configuration,
                format!("schema format `{f}` is not supported (only json)"),
            ));
        }
    }
    let Some(doc) = &schema.document else {
        return Err(WorkflowError::new(
            ErrorKind::Configuration,
            "external schema resources are not supported yet; inline the schema as `document`",
        )
        .with_title("Not supported"));
    };
    let v = compiled(doc).map_err(|e| {
        WorkflowError::new(
            ErrorKind::Configuration,
            format!("invalid schema for {what}: {e}"),
        )
    })?;
    let problems: Vec<String> = v
        .iter_errors(data)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(WorkflowError::new(
            ErrorKind::Validation,
            format!("{what} does not match its schema: {}", problems.join("; ")),
        )
        .with_title("Validation failed"))
    }
}
