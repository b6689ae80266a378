//! JSON Schemas generated from Cairn's types. They are checked in under `schemas/` at the
//! repository root; a test fails when a checked-in file differs from what this module produces
//! (run the tests with `CAIRN_UPDATE_SCHEMAS=1` to rewrite them).

use serde_json::Value;

/// The JSON Schema of a workflow definition as Cairn supports it (`schemas/workflow.schema.json`).
pub fn workflow() -> Value {
    crate::dsl::json_schema()
}

/// The JSON Schema of the events of a run's stream (`schemas/events.schema.json`).
pub fn events() -> Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::events::RunEvent>()
        .to_value()
}

/// The JSON Schema of the events of a definition's stream
/// (`schemas/definition-events.schema.json`).
pub fn definition_events() -> Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::definition::DefinitionEvent>()
        .to_value()
}

/// Every generated schema with its file name under `schemas/`.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("workflow.schema.json", workflow()),
        ("events.schema.json", events()),
        ("definition-events.schema.json", definition_events()),
    ]
}
