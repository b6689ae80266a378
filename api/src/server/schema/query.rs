//! The queries.

use crate::server::auth::{Permission, Require};

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, MergedObject, Object, Result};
use cairn_runtime::store::StoredDefinition;

use crate::server::errors;

use super::app::{app, App};
use super::pagination::*;
use super::types::*;

// ----- queries --------------------------------------------------------------------------------

/// The query root: one object per area, merged, so that later areas (projections, tokens) add
/// their own object rather than grow one file.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    DefinitionQueries,
    RunQueries,
    super::replay::ReplayQueries,
    crate::server::tokens::TokenQueries,
);

/// Queries on definitions.
#[derive(Default)]
pub struct DefinitionQueries;

#[Object]
impl DefinitionQueries {
    /// Published definitions, by namespace and name, each version in the order it was
    /// published (deprecated ones included: see `Definition.deprecated`).
    #[graphql(guard = "Require(Permission::Read)")]
    async fn definitions(
        &self,
        ctx: &Context<'_>,
        namespace: Option<String>,
        name: Option<String>,
    ) -> Result<Vec<Definition>> {
        let app = app(ctx)?;
        let all = app
            .runtime
            .definitions()
            .list()
            .await
            .map_err(|e| errors::runtime("list definitions", e))?;
        let mut out = Vec::new();
        for d in all
            .into_iter()
            .filter(|d| namespace.as_ref().is_none_or(|n| *n == d.namespace))
            .filter(|d| name.as_ref().is_none_or(|n| *n == d.name))
        {
            for v in &d.state.versions {
                let mut stored = app
                    .store
                    .definition_by_hash(&v.hash)
                    .await
                    .map_err(|e| errors::store("list definitions", e))?
                    .ok_or_else(|| errors::internal("list definitions", "content missing"))?;
                stored.version = v.label.clone();
                out.push(Definition(stored));
            }
        }
        Ok(out)
    }

    /// One published definition; `version` `latest` (the default) names the head.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn definition(
        &self,
        ctx: &Context<'_>,
        namespace: String,
        name: String,
        #[graphql(default = "latest")] version: String,
    ) -> Result<Option<Definition>> {
        // Nullable, so that a `NOT_FOUND` leaves the rest of the query's data in place.
        find_definition(app(ctx)?, &namespace, &name, &version)
            .await
            .map(|d| Some(Definition(d)))
    }

    /// The structural diff of two published versions (`latest` names the head): tasks added,
    /// removed, changed or moved, by task path, and the workflow's settings that differ.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn definition_diff(
        &self,
        ctx: &Context<'_>,
        namespace: String,
        name: String,
        from: String,
        to: String,
    ) -> Result<DefinitionDiff> {
        app(ctx)?
            .runtime
            .definitions()
            .diff(&namespace, &name, &from, &to)
            .await
            .map(DefinitionDiff::from)
            .map_err(|e| errors::runtime("diff definitions", e))
    }
}

pub(crate) async fn find_definition(
    app: &App,
    namespace: &str,
    name: &str,
    version: &str,
) -> Result<StoredDefinition> {
    app.runtime
        .definitions()
        .show(namespace, name, version)
        .await
        .map(|(_, d)| d)
        .map_err(|e| errors::runtime("find definition", e))
}

/// Queries on runs.
#[derive(Default)]
pub struct RunQueries;

#[Object]
impl RunQueries {
    /// Runs as a Relay connection, newest first unless `orderBy` says otherwise. Cursors are
    /// keyset positions (sort key and run id): a page never repeats or skips a run because new
    /// runs arrived; a cursor belongs to the `orderBy` it was issued under.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<RunsFilter>,
        order_by: Option<RunsOrderBy>,
    ) -> Result<Connection<String, RunSummaryNode>> {
        let first = page_size(first)?;
        let order = order_by.unwrap_or_default().store();
        let filter = filter.unwrap_or_default();
        filter.check()?;
        let mut q = filter.query();
        q.order = order;
        q.after = after
            .as_deref()
            .map(|c| parse_run_cursor(c, order))
            .transpose()?;
        q.limit = first as u64 + 1;
        let mut rows = app(ctx)?
            .store
            .query_runs(&q)
            .await
            .map_err(|e| errors::store("list runs", e))?;
        let more = rows.len() > first;
        rows.truncate(first);
        let mut conn = Connection::new(q.after.is_some(), more);
        conn.edges.extend(
            rows.into_iter()
                .map(|r| Edge::new(run_cursor(&r, order), RunSummaryNode(r))),
        );
        Ok(conn)
    }

    /// One run (`NOT_FOUND` when it does not exist).
    #[graphql(guard = "Require(Permission::Read)")]
    async fn run(&self, ctx: &Context<'_>, id: String) -> Result<Option<Run>> {
        Run::load(app(ctx)?.store.as_ref(), &id).await.map(Some)
    }
}
