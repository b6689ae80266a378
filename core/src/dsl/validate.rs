//! Loading a definition from YAML or JSON and validating it before anything runs.
//!
//! STUB (parse only): semantic checks are being written.

use std::path::Path;

use super::Workflow;

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

/// Parses and validates a definition from text.
pub fn load_str(text: &str, format: SourceFormat) -> Result<Workflow, ValidationErrors> {
    let one = |message: String, line: Option<usize>, column: Option<usize>| ValidationErrors {
        problems: vec![Problem { pointer: String::new(), line, column, message }],
    };
    match format {
        SourceFormat::Json => serde_json::from_str(text)
            .map_err(|e| one(e.to_string(), Some(e.line()), Some(e.column()))),
        SourceFormat::Yaml => serde_norway::from_str(text).map_err(|e| {
            let loc = e.location();
            one(e.to_string(), loc.as_ref().map(|l| l.line()), loc.as_ref().map(|l| l.column()))
        }),
    }
}

/// Reads, parses and validates a definition file; `.json` files are JSON, anything else YAML.
pub fn load(path: &Path) -> Result<Workflow, ValidationErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ValidationErrors {
        problems: vec![Problem {
            pointer: String::new(),
            line: None,
            column: None,
            message: format!("cannot read {}: {e}", path.display()),
        }],
    })?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => SourceFormat::Json,
        _ => SourceFormat::Yaml,
    };
    load_str(&text, format)
}
