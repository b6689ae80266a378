//! Hand-written JSON Schema for the types whose serde is hand-written, and the helper types
//! that describe loosely typed (`Value`) fields; [`json_schema`] generates the whole document.

use std::borrow::Cow;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema as JsonSchemaDoc, SchemaGenerator};
use serde_json::Value;

use super::serde_glue::SwitchCaseBody;
use super::*;

/// A string or an object (only used to describe `Value` fields in the JSON Schema).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(super) enum StringOrObject {
    String(String),
    Object(Object),
}

impl JsonSchema for FlowDirective {
    fn schema_name() -> Cow<'static, str> {
        "FlowDirective".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> JsonSchemaDoc {
        json_schema!({
            "description": "What runs after a task: `continue` (the default), `exit` (leave the composite task), `end` (end the workflow), or the name of a task of the same list",
            "type": "string",
            "minLength": 1
        })
    }
}

impl JsonSchema for TaskList {
    fn schema_name() -> Cow<'static, str> {
        "TaskList".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> JsonSchemaDoc {
        json_schema!({
            "description": "An ordered list of named tasks; each item has exactly one key, the task's name, unique within the list",
            "type": "array",
            "items": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": g.subschema_for::<Task>()
            }
        })
    }
}

impl JsonSchema for Task {
    fn schema_name() -> Cow<'static, str> {
        "Task".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> JsonSchemaDoc {
        let base = TaskBase::json_schema(g);
        let base_props = base
            .as_object()
            .and_then(|o| o.get("properties"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let variant = |title: &str, props: Value, required: &[&str]| -> Value {
            let mut all = base_props.clone();
            if let Value::Object(p) = props {
                all.extend(p);
            }
            serde_json::json!({
                "title": title,
                "type": "object",
                "properties": all,
                "required": required,
                "additionalProperties": false
            })
        };
        let call = |name: &str, args: JsonSchemaDoc| serde_json::json!({ "call": { "const": name }, "with": args });
        let builtins = ["http", "openapi", "grpc", "asyncapi", "mcp", "a2a"];
        let variants = vec![
            variant(
                "CallHttp",
                call("http", g.subschema_for::<HttpArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallOpenApi",
                call("openapi", g.subschema_for::<OpenApiArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallGrpc",
                call("grpc", g.subschema_for::<GrpcArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallAsyncApi",
                call("asyncapi", g.subschema_for::<AsyncApiArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallMcp",
                call("mcp", g.subschema_for::<McpArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallA2a",
                call("a2a", g.subschema_for::<A2aArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallFunction",
                serde_json::json!({
                    "call": {
                        "type": "string",
                        "description": "a function of `use.functions`, `name:version@catalog`, or a function registered by the embedding application",
                        "not": { "enum": builtins }
                    },
                    "with": { "type": "object" }
                }),
                &["call"],
            ),
            variant(
                "DoTask",
                serde_json::json!({ "do": g.subschema_for::<TaskList>() }),
                &["do"],
            ),
            variant(
                "ForkTask",
                serde_json::json!({ "fork": g.subschema_for::<Fork>() }),
                &["fork"],
            ),
            variant(
                "EmitTask",
                serde_json::json!({ "emit": g.subschema_for::<Emit>() }),
                &["emit"],
            ),
            variant(
                "ForTask",
                serde_json::json!({
                    "for": g.subschema_for::<ForSpec>(),
                    "while": { "type": "string", "description": "keep iterating while this runtime expression is true" },
                    "do": g.subschema_for::<TaskList>()
                }),
                &["for", "do"],
            ),
            variant(
                "ListenTask",
                serde_json::json!({
                    "listen": g.subschema_for::<ListenSpec>(),
                    "foreach": g.subschema_for::<SubscriptionIterator>()
                }),
                &["listen"],
            ),
            variant(
                "RaiseTask",
                serde_json::json!({ "raise": g.subschema_for::<Raise>() }),
                &["raise"],
            ),
            variant(
                "RunTask",
                serde_json::json!({ "run": g.subschema_for::<RunTask>() }),
                &["run"],
            ),
            variant(
                "SetTask",
                serde_json::json!({
                    "set": {
                        "oneOf": [
                            { "type": "object", "minProperties": 1 },
                            { "type": "string", "description": "a runtime expression" }
                        ]
                    }
                }),
                &["set"],
            ),
            variant(
                "SwitchTask",
                serde_json::json!({
                    "switch": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "additionalProperties": g.subschema_for::<SwitchCaseBody>()
                        }
                    }
                }),
                &["switch"],
            ),
            variant(
                "TryTask",
                serde_json::json!({
                    "try": g.subschema_for::<TaskList>(),
                    "catch": g.subschema_for::<Catch>()
                }),
                &["try", "catch"],
            ),
            variant(
                "WaitTask",
                serde_json::json!({ "wait": g.subschema_for::<Duration>() }),
                &["wait"],
            ),
        ];
        json_schema!({
            "description": "A task: the properties every task has, and exactly one kind",
            "oneOf": variants
        })
    }
}

/// An object of strings, or a runtime expression (only used to describe `Value` fields in the
/// JSON Schema).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(super) enum StringMapOrExpression {
    Map(IndexMap<String, String>),
    Expression(String),
}

/// What a `run` task returns (used to describe `RunTask::return_` in the JSON Schema).
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum ProcessReturnType {
    Stdout,
    Stderr,
    Code,
    All,
    None,
}

/// The JSON Schema (draft 2020-12) of a workflow definition as Cairn reads it, generated from
/// the model. It is stricter than the spec's own schema where the model is (see the model's
/// docs); the `oneOf` rules and cross-references that [`validate()`](crate::dsl::validate()) checks are described in the
/// schema only as far as JSON Schema can say them.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<Workflow>();
    schema.to_value()
}
