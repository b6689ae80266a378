//! The GraphQL schema, code-first, one file per job: the shared object types (`types.rs`),
//! scalars (`scalars.rs`), connection paging and run filters (`pagination.rs`), queries
//! (`query.rs`), mutations (`mutation.rs`) and what resolvers share (`app.rs`); subscriptions in
//! `../subscriptions.rs`, error codes in `../errors.rs`. This module only assembles them.
//!
//! Reads go to the store, never to the runtime's in-memory cache: a run may be executed by
//! another process on the same store, and the store is the only view every process shares.

pub mod app;
mod mutation;
pub mod pagination;
mod query;
mod replay;
pub mod scalars;
pub mod types;

pub use app::App;
pub use mutation::MutationRoot;
pub use query::QueryRoot;

use async_graphql::Schema;

use crate::server::errors;

use crate::server::subscriptions::SubscriptionRoot;

/// The schema type.
pub type CairnSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Default query depth limit (the `cairn serve` default).
pub const MAX_DEPTH: usize = crate::options::MAX_QUERY_DEPTH;
/// Default query complexity limit (the `cairn serve` default).
pub const MAX_COMPLEXITY: usize = crate::options::MAX_QUERY_COMPLEXITY;

/// Limits of the schema: `cairn serve` flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection allowed.
    pub depth: usize,
    /// Largest complexity allowed.
    pub complexity: usize,
    /// Whether `__schema` and `__type` answer.
    pub introspection: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: MAX_DEPTH,
            complexity: MAX_COMPLEXITY,
            introspection: true,
        }
    }
}

/// Builds the schema; `app` is `None` only to print the SDL. `subscriptions` caps live
/// subscriptions (none: no cap, as for the SDL and the schema tests).
pub fn build(
    app: Option<App>,
    limits: Limits,
    subscriptions: Option<crate::server::limits::SubscriptionLimits>,
) -> CairnSchema {
    let mut b = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .limit_depth(limits.depth)
    .limit_complexity(limits.complexity)
    .extension(errors::ErrorCodes)
    .extension(crate::server::auth::Authenticated);
    if !limits.introspection {
        b = b.disable_introspection().extension(errors::NoIntrospection);
    }
    if let Some(s) = subscriptions {
        b = b.extension(s);
    }
    if let Some(app) = app {
        b = b.extension(app.metrics.graphql_timing()).data(app);
    }
    b.finish()
}

/// The SDL of the schema, as exported to `schemas/graphql/schema.graphql`.
#[cfg_attr(not(test), allow(dead_code))]
pub fn sdl() -> String {
    build(None, Limits::default(), None).sdl()
}

#[cfg(test)]
mod tests {
    use super::pagination::{parse_run_cursor, run_cursor};
    use super::*;
    use cairn_runtime::store::{RunOrder, RunSortField, RunSummary};

    /// The checked-in SDL matches the code; `CAIRN_UPDATE_SCHEMAS=1` rewrites it.
    #[test]
    fn sdl_is_exported() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/graphql/schema.graphql");
        let now = sdl();
        if std::env::var("CAIRN_UPDATE_SCHEMAS").is_ok_and(|v| v == "1") {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("create schemas/graphql");
            }
            std::fs::write(&path, &now).expect("write the SDL");
            return;
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == now,
            "{} differs from the schema the code builds; run \
             `CAIRN_UPDATE_SCHEMAS=1 cargo test -p cairn-api --lib sdl_is_exported` \
             and commit the result",
            path.display()
        );
    }

    #[test]
    fn run_cursors_round_trip() {
        let s = RunSummary {
            run_id: "a:b".into(),
            namespace: "n".into(),
            name: "x".into(),
            version: "1".into(),
            status: "running".into(),
            created_at: 42,
            updated_at: 7,
            next_timer_at: None,
            wake_at: None,
            correlation_id: None,
            parent_run_id: None,
        };
        let order = RunOrder::default();
        let (c, id) = parse_run_cursor(&run_cursor(&s, order), order).expect("a cursor");
        assert_eq!((c, id.as_str()), (42, "a:b"));
        assert!(parse_run_cursor("!!", order).is_err());
        let by_update = RunOrder {
            field: RunSortField::UpdatedAt,
            descending: false,
        };
        let (c, _) = parse_run_cursor(&run_cursor(&s, by_update), by_update).expect("a cursor");
        assert_eq!(c, 7);
        assert!(parse_run_cursor(&run_cursor(&s, by_update), order).is_err());
    }
}
