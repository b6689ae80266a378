//! Prometheus metrics of the server, served as text at `/metrics`, and the per-request tracing
//! span.
//!
//! The server's collectors live in the same registry as the runtime's
//! ([`cairn_runtime::metrics::Metrics`]: runs started and finished, task durations, append
//! latency and conflicts, projection lag), so one scrape shows both. Runs started are counted
//! there, by the engine, so a start counts once whichever API made it.
//!
//! Names follow `cairn_<name>_<unit>[_total]` in base units. Labels are bounded: HTTP routes are
//! labelled by their template (never the raw path), subscriptions by kind, GraphQL requests by
//! operation type; run ids are never labels.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{ServerResult, Variables};
use tracing::Instrument;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics. Cheap to clone (the collectors are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_duration: HistogramVec,
    subscriptions: IntGaugeVec,
    /// The last global position the log follower fanned out.
    pub follower_position: IntGauge,
    graphql_duration: HistogramVec,
    /// The runtime's collectors, in the same registry.
    pub runtime: cairn_runtime::metrics::Metrics,
}

impl Metrics {
    /// Registers the server's collectors in the registry of the runtime's `runtime`.
    pub fn new(runtime: cairn_runtime::metrics::Metrics) -> prometheus::Result<Self> {
        let registry: Registry = runtime.registry().clone();
        let graphql_duration = HistogramVec::new(
            HistogramOpts::new(
                "cairn_graphql_request_duration_seconds",
                "GraphQL query and mutation execution time by operation type (parse, validation \
                 and execution; subscriptions are counted by cairn_subscriptions_open instead)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            // No operation name: clients choose it freely, so it is an unbounded label.
            &["operation"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "cairn_http_request_duration_seconds",
                "HTTP request duration by route template, method and status",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method", "status"],
        )?;
        let subscriptions = IntGaugeVec::new(
            Opts::new(
                "cairn_subscriptions_open",
                "GraphQL subscriptions open now, by kind",
            ),
            &["kind"],
        )?;
        let follower_position = IntGauge::new(
            "cairn_log_follower_position",
            "Global position of the last event the server's log follower delivered",
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(follower_position.clone()))?;
        registry.register(Box::new(graphql_duration.clone()))?;
        // Make every kind visible at 0 before its first subscriber.
        for kind in SubscriptionKind::ALL {
            subscriptions.with_label_values(&[kind.label()]);
        }
        Ok(Metrics {
            registry,
            http_duration,
            subscriptions,
            follower_position,
            graphql_duration,
            runtime,
        })
    }

    /// The schema extension that times GraphQL requests by operation type.
    pub fn graphql_timing(&self) -> GraphqlTiming {
        GraphqlTiming(self.graphql_duration.clone())
    }

    /// Counts an open subscription until the guard is dropped (when its stream ends or the
    /// client goes away).
    pub fn subscription(&self, kind: SubscriptionKind) -> SubscriptionGuard {
        let gauge = self.subscriptions.with_label_values(&[kind.label()]);
        gauge.inc();
        SubscriptionGuard(gauge)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// What a subscription streams (a metric label).
#[derive(Debug, Clone, Copy)]
pub enum SubscriptionKind {
    /// `runEvents`.
    RunEvents,
    /// `runUpdated`.
    RunUpdated,
    /// `runsChanged`.
    RunsChanged,
}

impl SubscriptionKind {
    const ALL: [SubscriptionKind; 3] = [
        SubscriptionKind::RunEvents,
        SubscriptionKind::RunUpdated,
        SubscriptionKind::RunsChanged,
    ];

    fn label(self) -> &'static str {
        match self {
            SubscriptionKind::RunEvents => "run_events",
            SubscriptionKind::RunUpdated => "run_updated",
            SubscriptionKind::RunsChanged => "runs_changed",
        }
    }
}

/// Decrements the open-subscriptions gauge when dropped.
pub struct SubscriptionGuard(IntGauge);

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware: observes each request's duration under its route template.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        // Unmatched paths share one label so that scanners cannot grow the label set.
        .unwrap_or_else(|| "unmatched".to_string());
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "PATCH") => m.to_string(),
        // Arbitrary methods would grow the label set without bound.
        _ => "other".to_string(),
    };
    // One span per request, by route template (the raw path could carry ids); the status is
    // recorded when the answer is known.
    let span = tracing::info_span!(
        "http_request",
        route = %route,
        method = %method,
        status = tracing::field::Empty,
    );
    let began = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("status", resp.status().as_u16());
    metrics
        .http_duration
        .with_label_values(&[route.as_str(), method.as_str(), resp.status().as_str()])
        .observe(began.elapsed().as_secs_f64());
    resp
}

/// Schema extension: observes `cairn_graphql_request_duration_seconds` by operation type.
pub struct GraphqlTiming(HistogramVec);

impl ExtensionFactory for GraphqlTiming {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GraphqlTimingExtension {
            histogram: self.0.clone(),
            operations: Mutex::new(Vec::new()),
            began: Instant::now(),
        })
    }
}

struct GraphqlTimingExtension {
    histogram: HistogramVec,
    /// The type of each operation of the document, by name (`None`: the anonymous one), known
    /// once the document is parsed; `execute` then picks the one that runs.
    operations: Mutex<Vec<(Option<String>, &'static str)>>,
    /// When the request reached GraphQL (one extension instance per request).
    began: Instant,
}

fn label(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for GraphqlTimingExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let ops = match &doc.operations {
            DocumentOperations::Single(op) => vec![(None, label(op.node.ty))],
            DocumentOperations::Multiple(ops) => ops
                .iter()
                .map(|(name, op)| (Some(name.to_string()), label(op.node.ty)))
                .collect(),
        };
        if let Ok(mut o) = self.operations.lock() {
            *o = ops;
        }
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        let resp = next.run(ctx, operation_name).await;
        let op = self
            .operations
            .lock()
            .ok()
            .and_then(|ops| {
                ops.iter()
                    .find(|(n, _)| n.is_none() || n.as_deref() == operation_name)
                    .map(|(_, t)| *t)
            })
            .unwrap_or("query");
        self.histogram
            .with_label_values(&[op])
            .observe(self.began.elapsed().as_secs_f64());
        resp
    }
}

/// `GET /metrics`.
pub async fn serve(State(metrics): State<Metrics>) -> Response {
    match metrics.render() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
