//! The Serverless Workflow DSL 1.0.3: model, loading and validation.

mod model;
pub mod validate;

pub use model::*;
pub use validate::{load, load_str, Problem, SourceFormat, ValidationErrors};
