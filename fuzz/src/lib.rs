//! What the fuzz targets in `fuzz_targets/` run, one function per target, so that a crash found
//! by the fuzzer can be replayed under a debugger or in a test with the same code.
//!
//! Every function takes the fuzzer's bytes, never panics on input it refuses, and asserts the
//! few invariants the code under test documents (a panic here is a finding).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use cairn_core::dsl::{self, SourceFormat};
use cairn_core::events::{RunEvent, EVENT_VERSION};
use cairn_core::expr;
use cairn_core::state::RunState;
use serde_json::{json, Value};

/// The stack of a tokio worker thread, where the server runs all of this (the resolvers of
/// `deployDefinition` and `startRun`, and a worker's decisions): libFuzzer calls the target on
/// the main thread (8 MiB), where a recursion that overflows a worker would pass unnoticed.
const WORKER_STACK: usize = 2 * 1024 * 1024;

/// Writes `data` to the file named by `CAIRN_FUZZ_LAST_INPUT`, when set, before each run: a
/// stack overflow kills the process with SIGSEGV before libFuzzer can save the input (the
/// binary's entry point is libFuzzer's `main`, so Rust's overflow handler and its alternate
/// signal stack are never set up, and libFuzzer's own handler has no stack left to run on).
fn remember(data: &[u8]) {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    if let Some(path) =
        PATH.get_or_init(|| std::env::var_os("CAIRN_FUZZ_LAST_INPUT").map(PathBuf::from))
    {
        let _ = std::fs::write(path, data);
    }
}

/// Runs `f` on a thread with [`WORKER_STACK`]; a panic there is re-raised here so that libFuzzer
/// reports it and saves the input (a stack overflow kills the process: see [`remember`]).
fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(f)
        .expect("spawning a thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The DSL loader, as `cairn validate`, `deployDefinition` and `startRun(source:)` call it.
/// What it accepts, validation accepts again, and a decider can be built for it.
fn load_definition_inner(data: &[u8], format: SourceFormat) {
    // The CLI reads files as UTF-8 and GraphQL strings are UTF-8: other bytes never get here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match dsl::load_str(text, format) {
        Ok(workflow) => {
            if let Err(e) = dsl::validate(&workflow) {
                panic!("load_str accepted a workflow that validate refuses: {e}");
            }
            let _ = cairn_core::decider::Decider::new(std::sync::Arc::new(workflow));
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal without a problem");
            let _ = e.to_string();
        }
    }
}

/// The variables the decider binds, with values of the shapes it gives them.
fn vars(input: &Value) -> expr::Vars {
    let mut v = BTreeMap::new();
    v.insert("input".to_string(), input.clone());
    v.insert(
        "context".to_string(),
        json!({"customer": "ada", "n": [1, 2, 3]}),
    );
    v.insert("secrets".to_string(), json!({"api": {"token": "s3cr3t"}}));
    v.insert(
        "workflow".to_string(),
        json!({"id": "run-1", "startedAt": {"iso8601": "2026-01-01T00:00:00Z", "epoch": {"seconds": 1767225600, "milliseconds": 1767225600000_u64}}}),
    );
    v.insert(
        "task".to_string(),
        json!({"name": "t", "reference": "/do/0/t", "input": input}),
    );
    v.insert(
        "runtime".to_string(),
        json!({"name": "cairn", "version": "0.1.0"}),
    );
    v.insert("item".to_string(), json!({"id": 7}));
    v.insert("index".to_string(), json!(0));
    v.insert("error".to_string(), json!({"status": 500, "type": "x"}));
    v
}

/// Expression compile and evaluate: the bytes are the jq program, then optionally a NUL byte
/// and the JSON input it runs on (`null` when absent or not JSON).
/// Counts allocations, so that the expression budget's memory bound is fuzzed as `cairn` runs
/// it (`cairn_core::budget::set_memory_probe`).
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Budgets far below the defaults, so that a hostile program stops long before libFuzzer's
/// timeout and memory limit would call it a hang or a blow-up: the fuzzer looks for programs
/// that escape the budget, not for ones that spend it.
const FUZZ_LIMITS: cairn_core::budget::Limits = cairn_core::budget::Limits {
    max_steps: 100_000,
    max_memory: 64 << 20,
};

fn expression_inner(data: &[u8]) {
    cairn_core::budget::set_memory_probe(|| ALLOC.allocated());
    cairn_core::budget::with_limits(FUZZ_LIMITS, || expression_budgeted(data));
}

fn expression_budgeted(data: &[u8]) {
    let (program, input) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(program) = std::str::from_utf8(program) else {
        return;
    };
    let input: Value = serde_json::from_slice(input).unwrap_or(Value::Null);
    let vars = vars(&input);
    let names: Vec<&str> = vars.keys().map(String::as_str).collect();
    let checked = expr::check(program, &names);
    // Validation compiles what evaluation compiles: a program it refuses never runs (and, as
    // at deploy time, one it accepts is evaluated).
    if checked.is_err() {
        return;
    }
    let _ = expr::eval(program, &input, &vars);
    let _ = expr::eval_condition(program, &input, &vars);
}

/// Event decoding and upcasting, then the fold: the bytes are a JSON array of stored events
/// `{"type": ..., "version": ..., "data": ...}` (`version` defaults to the current one), read
/// back as the stores read rows. Decoded events must round-trip through their payload, folding
/// them must never panic (`RunState::apply` is total), and the state must survive a snapshot.
fn events_inner(data: &[u8]) {
    let Ok(Value::Array(rows)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut decoded = Vec::new();
    for row in rows {
        let Value::Object(mut row) = row else {
            continue;
        };
        let Some(Value::String(event_type)) = row.remove("type") else {
            continue;
        };
        let version = match row.remove("version") {
            Some(Value::String(v)) => v,
            _ => EVENT_VERSION.to_string(),
        };
        let payload = row.remove("data").unwrap_or(Value::Null);
        let Ok(event) = RunEvent::from_stored(&event_type, &version, payload) else {
            continue;
        };
        let again = RunEvent::from_stored(event.event_type(), EVENT_VERSION, event.payload());
        assert_eq!(
            again.as_ref(),
            Ok(&event),
            "{event_type} does not survive its own payload"
        );
        decoded.push(event);
    }
    let state = RunState::from_events(decoded.iter());
    let _ = state.status_label();
    let _ = state.wake_at();
    let _ = state.current_tasks();
    let _ = state.pending_activities();
    let _ = state.pending_children();
    let _ = state.next_timer();
    let _ = state.due_timers(i64::MAX);
    if let Ok(snapshot) = state.to_snapshot() {
        match RunState::from_snapshot(snapshot, decoded.len() as u64) {
            Ok(back) => assert_eq!(back, state, "the snapshot does not give the state back"),
            Err(e) => panic!("a snapshot of a fold is refused: {e}"),
        }
    }
}

/// GraphQL request parsing as `POST /graphql` does it: the body is decoded as an
/// `async_graphql::Request` with serde_json, then parsed, validated against the depth and
/// complexity limits and executed. Bytes that do not start like a JSON object are taken as the
/// query text itself, so the fuzzer can work on GraphQL syntax directly.
///
/// The server's own schema lives in the `cairn` binary (`api/src/server/schema.rs`, not a
/// library a fuzz target can link), so [`graphql::schema`] is a small stand-in of the same
/// shape (recursive object types, lists, input objects, enums, a JSON scalar, mutations) under
/// the same limits; what is fuzzed is async-graphql's parsing and validation of hostile
/// documents, which runs before any of our resolvers.
fn graphql_request_inner(data: &[u8]) {
    let request = if data.first() == Some(&b'{') {
        match serde_json::from_slice::<async_graphql::Request>(data) {
            Ok(r) => r,
            Err(_) => return,
        }
    } else {
        let Ok(query) = std::str::from_utf8(data) else {
            return;
        };
        async_graphql::Request::new(query)
    };
    let schema = graphql::schema();
    let response = futures_executor::block_on(schema.execute(request));
    // What the server sends back must serialise.
    let _ = serde_json::to_vec(&response);
}

/// The stand-in schema of [`graphql_request`].
pub mod graphql {
    use std::sync::OnceLock;

    use async_graphql::{
        EmptySubscription, Enum, InputObject, Json, Object, Schema, SimpleObject, ID,
    };
    use serde_json::json;

    /// `cairn serve`'s default `--max-query-depth` (`api/src/server/schema.rs::MAX_DEPTH`).
    pub const MAX_DEPTH: usize = 16;
    /// `cairn serve`'s default `--max-query-complexity` (`MAX_COMPLEXITY`).
    pub const MAX_COMPLEXITY: usize = 2_000;

    /// The schema type.
    pub type FuzzSchema = Schema<Query, Mutation, EmptySubscription>;

    /// Built once: building it is most of the cost of a small request.
    pub fn schema() -> &'static FuzzSchema {
        static SCHEMA: OnceLock<FuzzSchema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            Schema::build(Query, Mutation, EmptySubscription)
                .limit_depth(MAX_DEPTH)
                .limit_complexity(MAX_COMPLEXITY)
                .finish()
        })
    }

    /// Run status.
    #[derive(Enum, Copy, Clone, Eq, PartialEq)]
    pub enum RunStatus {
        /// Running.
        Running,
        /// Completed.
        Completed,
        /// Faulted.
        Faulted,
    }

    /// Sort direction.
    #[derive(Enum, Copy, Clone, Eq, PartialEq)]
    pub enum OrderDirection {
        /// Ascending.
        Asc,
        /// Descending.
        Desc,
    }

    /// A filter, as `RunsFilter`.
    #[derive(InputObject)]
    pub struct RunsFilter {
        /// Statuses.
        pub status: Option<Vec<RunStatus>>,
        /// Namespace.
        pub namespace: Option<String>,
        /// Correlation id.
        pub correlation_id: Option<String>,
        /// Nested filter, to let documents nest input objects.
        pub not: Option<Box<RunsFilter>>,
    }

    /// Which definition, as `DefinitionKey`.
    #[derive(InputObject)]
    pub struct DefinitionKey {
        /// Namespace.
        pub namespace: String,
        /// Name.
        pub name: String,
        /// Version.
        #[graphql(default = "latest")]
        pub version: String,
    }

    /// An event of a run.
    #[derive(SimpleObject)]
    pub struct RunEvent {
        /// Position.
        pub position: u64,
        /// Type.
        pub event_type: String,
        /// Payload.
        pub data: Json<serde_json::Value>,
    }

    /// A run.
    pub struct Run {
        depth: u32,
    }

    #[Object]
    impl Run {
        async fn id(&self) -> ID {
            ID(format!("run-{}", self.depth))
        }
        async fn status(&self) -> RunStatus {
            RunStatus::Running
        }
        async fn input(&self) -> Json<serde_json::Value> {
            Json(json!({"order": {"qty": 3}}))
        }
        async fn events(&self, first: Option<i32>, after: Option<String>) -> Vec<RunEvent> {
            let n = first.unwrap_or(3).clamp(0, 3);
            let skip = after.map_or(0, |a| a.len() as u64);
            (0..n as u64)
                .map(|i| RunEvent {
                    position: skip + i,
                    event_type: "TaskStarted".into(),
                    data: Json(json!({"id": i})),
                })
                .collect()
        }
        /// Recursion through a single object, as a run's parent.
        async fn parent(&self) -> Option<Run> {
            Some(Run {
                depth: self.depth + 1,
            })
        }
    }

    /// The query root.
    pub struct Query;

    #[Object]
    impl Query {
        async fn run(&self, id: String) -> Option<Run> {
            (!id.is_empty()).then_some(Run { depth: 0 })
        }
        async fn runs(
            &self,
            #[graphql(default = 20)] first: i32,
            after: Option<String>,
            filter: Option<RunsFilter>,
            order: Option<OrderDirection>,
        ) -> Vec<Run> {
            let _ = (after, filter, order);
            (0..first.clamp(0, 3) as u32)
                .map(|depth| Run { depth })
                .collect()
        }
        async fn definition(
            &self,
            namespace: String,
            name: String,
            #[graphql(default = "latest")] version: String,
        ) -> Option<String> {
            Some(format!("{namespace}/{name}@{version}"))
        }
    }

    /// The mutation root.
    pub struct Mutation;

    #[Object]
    impl Mutation {
        async fn start_run(
            &self,
            definition: Option<DefinitionKey>,
            source: Option<String>,
            input: Option<Json<serde_json::Value>>,
            idempotency_key: Option<String>,
        ) -> Run {
            let _ = (definition, source, input, idempotency_key);
            Run { depth: 0 }
        }
        async fn signal_run(&self, id: String, event: Json<serde_json::Value>) -> Run {
            let _ = (id, event);
            Run { depth: 0 }
        }
    }
}

/// The `dsl_yaml` and `dsl_json` targets: [`load_definition_inner`] on a worker's stack.
pub fn load_definition(data: &[u8], format: SourceFormat) {
    remember(data);
    let data = data.to_vec();
    on_worker_stack(move || load_definition_inner(&data, format));
}

/// The `expr` target: [`expression_inner`] on a worker's stack.
pub fn expression(data: &[u8]) {
    remember(data);
    let data = data.to_vec();
    on_worker_stack(move || expression_inner(&data));
}

/// The `events` target: [`events_inner`] on a worker's stack.
pub fn events(data: &[u8]) {
    remember(data);
    let data = data.to_vec();
    on_worker_stack(move || events_inner(&data));
}

/// The `graphql_request` target: [`graphql_request_inner`] on a worker's stack.
pub fn graphql_request(data: &[u8]) {
    remember(data);
    let data = data.to_vec();
    on_worker_stack(move || graphql_request_inner(&data));
}
