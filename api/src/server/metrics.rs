//! Prometheus metrics of the server, served as text at `/metrics`.
//!
//! Names follow `cairn_<name>_<unit>[_total]` in base units. Labels are bounded: HTTP routes are
//! labelled by their template (never the raw path), subscriptions by kind; run ids are never
//! labels.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The server's metrics. Cheap to clone (the collectors are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_duration: HistogramVec,
    /// Runs started through `startRun` (an idempotent replay does not count).
    pub runs_started: IntCounter,
    subscriptions: IntGaugeVec,
    /// The last global position the log follower fanned out.
    pub follower_position: IntGauge,
}

impl Metrics {
    /// Registers every collector in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
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
        let runs_started = IntCounter::new(
            "cairn_runs_started_total",
            "Runs started through the GraphQL API",
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
        registry.register(Box::new(runs_started.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(follower_position.clone()))?;
        // Make every kind visible at 0 before its first subscriber.
        for kind in SubscriptionKind::ALL {
            subscriptions.with_label_values(&[kind.label()]);
        }
        Ok(Metrics {
            registry,
            http_duration,
            runs_started,
            subscriptions,
            follower_position,
        })
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
    let began = Instant::now();
    let resp = next.run(req).await;
    metrics
        .http_duration
        .with_label_values(&[route.as_str(), method.as_str(), resp.status().as_str()])
        .observe(began.elapsed().as_secs_f64());
    resp
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
