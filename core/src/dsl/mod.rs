//! The Serverless Workflow DSL 1.0.3: model, loading and validation.
//!
//! - [`Workflow`] and the types under it: the strict typed model (unknown fields rejected).
//! - [`load_str`] / [`load`]: parse YAML or JSON and validate, every problem with its location.
//! - [`validate()`]: the semantic checks alone, for a workflow built in Rust.
//! - [`json_schema`]: the JSON Schema of the DSL as Cairn supports it (checked in as
//!   `schemas/workflow.schema.json`).

mod model;
pub mod validate;

pub use model::*;
pub use validate::{
    check_nesting, load, load_str, load_str_with, load_with, validate, LoadOptions, Problem,
    SourceFormat, ValidationErrors, MAX_NESTING,
};

/// The JSON Schema (draft 2020-12) of a workflow definition as Cairn reads it, generated from
/// the model. It is stricter than the spec's own schema where the model is (see the model's
/// docs); the `oneOf` rules and cross-references that [`validate()`] checks are described in the
/// schema only as far as JSON Schema can say them.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<Workflow>();
    schema.to_value()
}
