//! The outbound guard of `call: http` and `call: openapi` against the usual ways around it: odd
//! IPv4 notations, IPv6 forms of loopback, names that resolve to loopback, redirects from an
//! allowed server to a denied address, and OpenAPI documents that point elsewhere. Every
//! destination is on this machine (127.0.0.0/8 or `::1`); nothing here reaches beyond it.

// A failed unwrap in a test is a test failure with a backtrace, which is what we want here.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::response::Redirect;
use axum::routing::get;
use axum::{Json, Router};
use cairn_connectors::{AllowList, HttpConnector, HttpOptions};
use cairn_core::activity::{ActivityContext, ActivityHandler, NoSecrets};
use cairn_core::dsl::HttpOutputFormat;
use cairn_core::events::{ActivityCall, HttpRequest, OpenApiRequest};
use cairn_core::{ErrorKind, WorkflowError};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{json, Value};

/// A server on `ip` that counts the requests it gets. `/hit` answers `{"hit": true}`,
/// `/bounce?to=URL` redirects to URL, `/swagger.json` describes one operation on `api_host`.
async fn server(ip: [u8; 4], api_host: Option<String>) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "t", "version": "1"},
        "host": api_host.unwrap_or_default(),
        "schemes": ["http"],
        "paths": {"/hit": {"get": {"operationId": "hit", "responses": {"200": {"description": "ok"}}}}}
    });
    let app = Router::new()
        .route("/hit", get(|| async { Json(json!({"hit": true})) }))
        .route(
            "/bounce",
            get(
                |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                    Redirect::to(q.get("to").map(String::as_str).unwrap_or("/"))
                },
            ),
        )
        .route("/swagger.json", get(move || async move { Json(doc) }))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, hits)
}

/// A resolver for made-up names, as a DNS server under an attacker's control would answer.
struct TestResolver(HashMap<&'static str, IpAddr>);

impl Resolve for TestResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self.0.get(name.as_str()).copied();
        let host = name.as_str().to_string();
        Box::pin(async move {
            match found {
                Some(ip) => {
                    let addrs: Addrs = Box::new(std::iter::once(SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                None => Err(format!("test resolver: unknown name {host}").into()),
            }
        })
    }
}

fn connector(allow: &str) -> HttpConnector {
    let options = HttpOptions {
        allow_outbound: allow.parse().unwrap(),
        ..HttpOptions::default()
    };
    let resolver = TestResolver(HashMap::from([
        ("rebind.test", IpAddr::from([127, 0, 0, 1])),
        ("allowed.test", IpAddr::from([127, 0, 0, 1])),
        ("second.test", IpAddr::from([127, 0, 0, 2])),
        ("localhost", IpAddr::from([127, 0, 0, 1])),
    ]));
    HttpConnector::with_resolver(options, Arc::new(NoSecrets), Arc::new(resolver)).unwrap()
}

fn ctx() -> ActivityContext {
    ActivityContext {
        run_id: "run-1".into(),
        frame: 1,
        position: "/do/0/fetch".into(),
        attempt: 0,
        idempotency_key: "run-1:/do/0/fetch:0".into(),
    }
}

fn get_req(uri: String, redirect: bool) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        uri,
        headers: vec![],
        query: vec![],
        body: None,
        output: HttpOutputFormat::Content,
        redirect,
        auth: None,
        seal: None,
    }
}

async fn call(c: &HttpConnector, uri: String, redirect: bool) -> Result<Value, WorkflowError> {
    c.call(&ctx(), &ActivityCall::Http(get_req(uri, redirect)))
        .await
}

/// Asserts `result` is the guard's refusal naming `host` and `range`.
#[track_caller]
fn assert_denied(result: Result<Value, WorkflowError>, host: &str, range: &str) {
    let e = match result {
        Ok(v) => panic!("expected a denial of {host}, got {v}"),
        Err(e) => e,
    };
    assert!(e.is(ErrorKind::Authorization), "{host}: {e}");
    assert_eq!(e.status, 403, "{e}");
    assert_eq!(e.title.as_deref(), Some("Outbound call denied"), "{e}");
    let detail = e.detail.clone().unwrap_or_default();
    assert!(
        detail.contains(&format!("denies {host}:")),
        "{host}: {detail}"
    );
    assert!(detail.contains(range), "{host}: {detail}");
}

#[tokio::test]
async fn guard_is_on_by_default_and_denies_loopback_in_every_notation() {
    let (addr, hits) = server([127, 0, 0, 1], None).await;
    let port = addr.port();
    let c = HttpConnector::new(HttpOptions::default(), Arc::new(NoSecrets)).unwrap();
    assert_denied(
        call(&c, format!("http://127.0.0.1:{port}/hit"), false).await,
        "127.0.0.1",
        "loopback 127.0.0.0/8",
    );
    let c = connector("none");
    for (uri, host, range) in [
        ("http://2130706433:{port}/hit", "127.0.0.1", "loopback"),
        ("http://0x7f.1:{port}/hit", "127.0.0.1", "loopback"),
        ("http://017700000001:{port}/hit", "127.0.0.1", "loopback"),
        ("http://127.1:{port}/hit", "127.0.0.1", "loopback"),
        ("http://0.0.0.0:{port}/hit", "0.0.0.0", "unspecified"),
        ("http://[::1]:{port}/hit", "[::1]", "loopback ::1/128"),
        (
            "http://[::ffff:127.0.0.1]:{port}/hit",
            "[::ffff:127.0.0.1]",
            "loopback 127.0.0.0/8",
        ),
        ("http://localhost:{port}/hit", "localhost", "loopback"),
        ("http://rebind.test:{port}/hit", "rebind.test", "loopback"),
    ] {
        let uri = uri.replace("{port}", &port.to_string());
        assert_denied(call(&c, uri, true).await, host, range);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");
}

#[tokio::test]
async fn allow_list_lets_a_loopback_server_through_by_address_or_by_name() {
    let (addr, hits) = server([127, 0, 0, 1], None).await;
    let port = addr.port();
    let by_ip = connector("127.0.0.1");
    let out = call(&by_ip, format!("http://127.0.0.1:{port}/hit"), false).await;
    assert_eq!(out.unwrap(), json!({"hit": true}));
    let out = call(&by_ip, format!("http://2130706433:{port}/hit"), false).await;
    assert_eq!(out.unwrap(), json!({"hit": true}), "the same address");
    assert_denied(
        call(&by_ip, format!("http://127.0.0.2:{port}/hit"), false).await,
        "127.0.0.2",
        "loopback",
    );

    let by_name = connector("allowed.test");
    let out = call(&by_name, format!("http://allowed.test:{port}/hit"), false).await;
    assert_eq!(out.unwrap(), json!({"hit": true}));
    assert_denied(
        call(&by_name, format!("http://rebind.test:{port}/hit"), false).await,
        "rebind.test",
        "loopback",
    );
    let all = connector("all");
    let out = call(&all, format!("http://localhost:{port}/hit"), false).await;
    assert_eq!(
        out.unwrap(),
        json!({"hit": true}),
        "`all` turns the guard off"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_redirect_from_an_allowed_server_to_a_denied_address_is_refused() {
    let (allowed, allowed_hits) = server([127, 0, 0, 1], None).await;
    let (denied, denied_hits) = server([127, 0, 0, 2], None).await;
    let c = connector("127.0.0.1");
    // To an IP literal: checked by the redirect policy.
    let to = format!("http://{denied}/hit");
    assert_denied(
        call(&c, format!("http://{allowed}/bounce?to={to}"), true).await,
        "127.0.0.2",
        "loopback",
    );
    // To a name that resolves to the denied address: checked by the resolver.
    let to = format!("http://second.test:{}/hit", denied.port());
    assert_denied(
        call(&c, format!("http://{allowed}/bounce?to={to}"), true).await,
        "second.test",
        "loopback",
    );
    // A redirect back to the allowed server is followed.
    let to = format!("http://{allowed}/hit");
    let out = call(&c, format!("http://{allowed}/bounce?to={to}"), true).await;
    assert_eq!(out.unwrap(), json!({"hit": true}));
    assert_eq!(denied_hits.load(Ordering::SeqCst), 0, "never reached");
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn openapi_documents_and_the_hosts_they_name_are_guarded() {
    let (denied, denied_hits) = server([127, 0, 0, 2], None).await;
    let (docs, _) = server([127, 0, 0, 1], Some(denied.to_string())).await;
    let openapi = |document: String| {
        ActivityCall::OpenApi(OpenApiRequest {
            document,
            operation_id: "hit".into(),
            parameters: json!({}),
            output: HttpOutputFormat::Content,
            redirect: false,
            auth: None,
            seal: None,
        })
    };
    let c = connector("none");
    let e = c
        .call(&ctx(), &openapi(format!("http://{docs}/swagger.json")))
        .await
        .unwrap_err();
    assert!(e.is(ErrorKind::Authorization), "the document: {e}");
    // The document is allowed, the host it names is not.
    let c = connector("127.0.0.1");
    let result = c
        .call(&ctx(), &openapi(format!("http://{docs}/swagger.json")))
        .await;
    assert_denied(result, "127.0.0.2", "loopback");
    assert_eq!(denied_hits.load(Ordering::SeqCst), 0);
}

#[test]
fn allow_list_round_trips_through_the_options() {
    let options: HttpOptions =
        serde_json::from_value(json!({"allow_outbound": ["10.0.0.0/8", "*.svc.local"]})).unwrap();
    assert_eq!(
        options.allow_outbound,
        "10.0.0.0/8,*.svc.local".parse::<AllowList>().unwrap()
    );
    let back = serde_json::to_value(&options).unwrap();
    assert_eq!(back["allow_outbound"], json!("10.0.0.0/8,*.svc.local"));
    assert_eq!(HttpOptions::default().allow_outbound, AllowList::none());
}
