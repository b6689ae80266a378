//! `call` tasks: the built-in protocols' arguments and endpoints.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::{StringMapOrExpression, StringOrObject};
use super::serde_glue::{some, string_or_object};
use super::*;
use crate::dsl::pointer::path_to_pointer;

/// A `call` task.
#[derive(Debug, Clone, PartialEq)]
// A definition is decoded once and kept; boxing would only make it harder to match on.
#[allow(clippy::large_enum_variant)]
pub enum CallTask {
    /// `call: http`.
    Http(HttpArgs),
    /// `call: openapi` (parsed; not executed yet).
    OpenApi(OpenApiArgs),
    /// `call: grpc` (parsed; not executed yet).
    Grpc(GrpcArgs),
    /// `call: asyncapi` (parsed; not executed yet).
    AsyncApi(AsyncApiArgs),
    /// `call: mcp` (parsed; not executed yet).
    Mcp(McpArgs),
    /// `call: a2a` (parsed; not executed yet).
    A2a(A2aArgs),
    /// `call: NAME`: a function from `use.functions`, a catalog, or one registered by the
    /// embedding application.
    Function {
        /// The function's name.
        name: String,
        /// Its arguments.
        with: Option<Object>,
    },
}

/// Decodes `with` as `T`, tracking where an error is (a JSON pointer relative to `with`).
fn decode_args<T: serde::de::DeserializeOwned>(with: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(with).map_err(|e| {
        let pointer = path_to_pointer(e.path());
        (pointer, e.into_inner().to_string())
    })
}

impl CallTask {
    pub(super) fn decode(call: String, with: Option<Value>) -> Result<Self, (String, String)> {
        let builtin = matches!(
            call.as_str(),
            "http" | "openapi" | "grpc" | "asyncapi" | "mcp" | "a2a"
        );
        let with = match with {
            Some(w) => w,
            None if builtin => {
                return Err((
                    String::new(),
                    format!("`call: {call}` needs a `with` block"),
                ))
            }
            None => {
                return Ok(CallTask::Function {
                    name: call,
                    with: None,
                })
            }
        };
        Ok(match call.as_str() {
            "http" => CallTask::Http(decode_args(&with)?),
            "openapi" => CallTask::OpenApi(decode_args(&with)?),
            "grpc" => CallTask::Grpc(decode_args(&with)?),
            "asyncapi" => CallTask::AsyncApi(decode_args(&with)?),
            "mcp" => CallTask::Mcp(decode_args(&with)?),
            "a2a" => CallTask::A2a(decode_args(&with)?),
            _ => match with {
                Value::Object(o) => CallTask::Function {
                    name: call,
                    with: Some(o),
                },
                _ => return Err((String::new(), "`with` must be an object".into())),
            },
        })
    }

    pub(super) fn encode(&self) -> Result<(String, Option<Value>), serde_json::Error> {
        Ok(match self {
            CallTask::Http(a) => ("http".into(), Some(serde_json::to_value(a)?)),
            CallTask::OpenApi(a) => ("openapi".into(), Some(serde_json::to_value(a)?)),
            CallTask::Grpc(a) => ("grpc".into(), Some(serde_json::to_value(a)?)),
            CallTask::AsyncApi(a) => ("asyncapi".into(), Some(serde_json::to_value(a)?)),
            CallTask::Mcp(a) => ("mcp".into(), Some(serde_json::to_value(a)?)),
            CallTask::A2a(a) => ("a2a".into(), Some(serde_json::to_value(a)?)),
            CallTask::Function { name, with } => (name.clone(), with.clone().map(Value::Object)),
        })
    }

    /// The DSL name of the call, e.g. `http` or a function name.
    pub fn name(&self) -> &str {
        match self {
            CallTask::Http(_) => "http",
            CallTask::OpenApi(_) => "openapi",
            CallTask::Grpc(_) => "grpc",
            CallTask::AsyncApi(_) => "asyncapi",
            CallTask::Mcp(_) => "mcp",
            CallTask::A2a(_) => "a2a",
            CallTask::Function { name, .. } => name,
        }
    }
}

/// Arguments of `call: http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// HTTP method, e.g. `get`.
    pub method: String,
    /// Where to send the request.
    pub endpoint: Endpoint,
    /// Request headers: an object of strings/expressions, or one expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringMapOrExpression>")]
    pub headers: Option<Value>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Query parameters: an object of strings/expressions, or one expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringMapOrExpression>")]
    pub query: Option<Value>,
    /// `content` (default), `response` or `raw`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<HttpOutputFormat>,
    /// Whether 3xx responses are followed rather than treated as errors.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// What a `call: http` task outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HttpOutputFormat {
    /// The deserialised body.
    #[default]
    Content,
    /// Status, headers and body.
    Response,
    /// The body, base64-encoded.
    Raw,
}

/// Arguments of `call: openapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenApiArgs {
    /// The OpenAPI document.
    pub document: ExternalResource,
    /// The operation to call.
    pub operation_id: String,
    /// Its parameters.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// Authentication to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
    /// Output format.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<HttpOutputFormat>,
    /// Whether 3xx responses are followed.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// Arguments of `call: grpc` (parsed; not executed yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcArgs {
    /// The proto file describing the service.
    pub proto: ExternalResource,
    /// The service to call.
    pub service: GrpcService,
    /// The method to call.
    pub method: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Object>,
}

/// The service of a `call: grpc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    /// The service's name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its port.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Authentication to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
}

/// Arguments of `call: asyncapi` (parsed; not executed yet). Exactly one of `operation` and
/// `channel`, and exactly one of `message` and `subscription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiArgs {
    /// The AsyncAPI document.
    pub document: ExternalResource,
    /// The channel (AsyncAPI 2.6 documents).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The operation.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The server to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<AsyncApiServer>,
    /// The protocol used to select the server.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<AsyncApiProtocol>,
    /// The message to publish.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AsyncApiMessage>,
    /// The subscription to consume messages with.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<AsyncApiSubscription>,
    /// Authentication to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
}

/// The server of a `call: asyncapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiServer {
    /// The server's name.
    pub name: String,
    /// Its variables.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Object>,
}

/// The protocols of AsyncAPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum AsyncApiProtocol {
    Amqp,
    Amqp1,
    Anypointmq,
    Googlepubsub,
    Http,
    Ibmmq,
    Jms,
    Kafka,
    Mercure,
    Mqtt,
    Mqtt5,
    Nats,
    Pulsar,
    Redis,
    Sns,
    Solace,
    Sqs,
    Stomp,
    Ws,
}

/// A message published by a `call: asyncapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiMessage {
    /// The payload.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Object>,
    /// The headers.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Object>,
}

/// A subscription of a `call: asyncapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiSubscription {
    /// A runtime expression filtering consumed messages.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// How many messages to consume.
    pub consume: AsyncApiConsumptionPolicy,
    /// What to do with each message.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreach: Option<SubscriptionIterator>,
}

/// How a subscription consumes messages: `for` a while, and exactly one of `amount`, `while`
/// and `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiConsumptionPolicy {
    /// How long to consume.
    #[serde(default, deserialize_with = "some", rename = "for")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_: Option<Duration>,
    /// How many messages to consume.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// Go on while this runtime expression is true.
    #[serde(default, deserialize_with = "some", rename = "while")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub while_: Option<String>,
    /// Go on until this runtime expression is true.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The iteration over consumed events or messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionIterator {
    /// Variable name of the item (default `item`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Variable name of the index (default `index`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Tasks run for each item.
    #[serde(default, deserialize_with = "some", rename = "do")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_: Option<TaskList>,
    /// The item's output.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// What each item writes into `$context`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
}

/// Arguments of `call: mcp` (parsed; not executed yet). Stricter than the spec's schema: unknown
/// keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpArgs {
    /// MCP protocol version (default `2025-06-18`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The method.
    pub method: McpMethod,
    /// Its parameters: an object, or a runtime expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringOrObject>")]
    pub parameters: Option<Value>,
    /// When the call times out.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// How to reach the server: exactly one of `http` and `stdio`.
    pub transport: McpTransport,
    /// The client to present.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<McpClient>,
}

/// The methods of MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum McpMethod {
    #[serde(rename = "tools/list")]
    ToolsList,
    #[serde(rename = "tools/call")]
    ToolsCall,
    #[serde(rename = "prompts/list")]
    PromptsList,
    #[serde(rename = "prompts/get")]
    PromptsGet,
    #[serde(rename = "resources/list")]
    ResourcesList,
    #[serde(rename = "resources/read")]
    ResourcesRead,
    #[serde(rename = "resources/templates/list")]
    ResourcesTemplatesList,
}

/// The transport of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpTransport {
    /// Streamable HTTP.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<McpHttpTransport>,
    /// A local process.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdio: Option<McpStdioTransport>,
    /// Transport options.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<IndexMap<String, String>>,
}

/// The HTTP transport of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpHttpTransport {
    /// The server.
    pub endpoint: Endpoint,
    /// Headers sent with requests.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<IndexMap<String, String>>,
}

/// The stdio transport of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpStdioTransport {
    /// The command running the server.
    pub command: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// Its environment.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<IndexMap<String, String>>,
}

/// The client of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpClient {
    /// The client's name.
    pub name: String,
    /// The client's version.
    pub version: String,
    /// A description.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Arguments of `call: a2a` (parsed; not executed yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct A2aArgs {
    /// The agent card describing the agent.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_card: Option<ExternalResource>,
    /// The server to call.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Endpoint>,
    /// The method.
    pub method: A2aMethod,
    /// Its parameters: a non-empty object, or a runtime expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringOrObject>")]
    pub parameters: Option<Value>,
}

/// The methods of A2A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum A2aMethod {
    #[serde(rename = "message/send")]
    MessageSend,
    #[serde(rename = "message/stream")]
    MessageStream,
    #[serde(rename = "tasks/get")]
    TasksGet,
    #[serde(rename = "tasks/list")]
    TasksList,
    #[serde(rename = "tasks/cancel")]
    TasksCancel,
    #[serde(rename = "tasks/resubscribe")]
    TasksResubscribe,
    #[serde(rename = "tasks/pushNotificationConfig/set")]
    PushNotificationConfigSet,
    #[serde(rename = "tasks/pushNotificationConfig/get")]
    PushNotificationConfigGet,
    #[serde(rename = "tasks/pushNotificationConfig/list")]
    PushNotificationConfigList,
    #[serde(rename = "tasks/pushNotificationConfig/delete")]
    PushNotificationConfigDelete,
    #[serde(rename = "agent/getAuthenticatedExtendedCard")]
    GetAuthenticatedExtendedCard,
}

/// An endpoint: a URI template, an expression, or a configuration object.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
// A definition is decoded once and kept; boxing would only make it harder to match on.
#[allow(clippy::large_enum_variant)]
pub enum Endpoint {
    /// A URI (template) or a runtime expression.
    Uri(String),
    /// `{ uri, authentication }`.
    Config(EndpointConfig),
}
string_or_object!(
    Endpoint,
    Uri,
    Config,
    EndpointConfig,
    "a URI or an endpoint object"
);

impl Endpoint {
    /// The URI template or expression.
    pub fn uri(&self) -> &str {
        match self {
            Endpoint::Uri(u) => u,
            Endpoint::Config(c) => &c.uri,
        }
    }

    /// The authentication policy, if any.
    pub fn authentication(&self) -> Option<&AuthenticationPolicy> {
        match self {
            Endpoint::Uri(_) => None,
            Endpoint::Config(c) => c.authentication.as_ref(),
        }
    }
}

/// An endpoint written as an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URI template or expression.
    pub uri: String,
    /// Authentication policy.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
}
