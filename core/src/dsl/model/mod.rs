//! The typed model of a Serverless Workflow DSL 1.0.3 document.
//!
//! Every struct rejects unknown fields: a typo in a definition is an error at load time, not a
//! silently ignored key. Tasks are decoded by hand (see [`Task`]'s `Deserialize`) because the DSL
//! tells task kinds apart by which key is present, which serde's `untagged` enums do badly (they
//! lose the real error and, as in `serverless_workflow_core`, can pick the wrong variant). The
//! "string or object" unions ([`Duration`], [`Endpoint`], [`TimeoutOrRef`], ...) are decoded by a
//! visitor too, so that an error inside the object keeps its path.
//!
//! Rules of the spec's schema that the serde shape cannot express (an authentication policy has
//! exactly one scheme, a `run` exactly one of `container`/`script`/`shell`/`workflow`, ...) are
//! checked by [`super::validate`], which reports them with their location.
//!
//! Where this model is stricter than the spec's schema (it is in a few places where the schema
//! allows arbitrary extra keys, such as `emit.event`, `event.correlate.*` or `mcp` arguments), the
//! doc comment of the type says so; the JSON Schema generated from these types
//! ([`super::json_schema`]) describes the DSL as Cairn supports it.

mod auth;
mod call;
mod retry;
mod schema;
mod serde_glue;
mod task;
mod workflow;

pub use auth::*;
pub use call::*;
pub use retry::*;
pub use schema::json_schema;
pub(crate) use serde_glue::locate_call_error;
pub use task::*;
pub use workflow::*;

use serde_json::{Map, Value};

/// A JSON object as written in a definition, order preserved.
pub type Object = Map<String, Value>;
