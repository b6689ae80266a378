//! The Serverless Workflow DSL 1.0.3: model, loading and validation.
//!
//! - [`Workflow`] and the types under it: the strict typed model (unknown fields rejected).
//! - [`load_str`] / [`load_str_with`]: parse YAML or JSON text and validate, every problem with
//!   its location. Core reads no files: the caller reads the text and names the file in its
//!   messages.
//! - [`validate()`]: the semantic checks alone, for a workflow built in Rust.
//! - [`json_schema`]: the JSON Schema of the DSL as Cairn supports it (checked in as
//!   `schemas/workflow.schema.json`).

pub mod diff;
mod load;
mod model;
mod pointer;
#[cfg(test)]
mod tests;
pub mod validate;

pub use load::{check_nesting, load_str, load_str_with, LoadOptions, SourceFormat, MAX_NESTING};
pub use model::*;
pub use validate::{validate, Problem, ValidationErrors};
