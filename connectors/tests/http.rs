//! Integration tests of `call: http` against a real axum server on an ephemeral loopback port.
//! Nothing here reaches beyond 127.0.0.1.

// A failed unwrap in a test is a test failure with a backtrace, which is what we want here.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{self, any};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cairn_connectors::{HttpConnector, HttpOptions};
use cairn_core::activity::{ActivityContext, ActivityHandler, NoSecrets, SecretSource};
use cairn_core::dsl::HttpOutputFormat;
use cairn_core::events::{ActivityCall, HttpAuth, HttpRequest};
use cairn_core::{ErrorKind, WorkflowError};
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// The server

/// Echoes what it received, so tests can assert on the wire request.
async fn echo(
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::from(v.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    Json(json!({
        "method": method.as_str(),
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// httpbin's `/basic-auth/{user}/{pass}`, as the CTK mock describes it.
async fn basic_auth(Path((user, pass)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let expected = format!("Basic {}", BASE64.encode(format!("{user}:{pass}")));
    match headers.get(header::AUTHORIZATION) {
        Some(v) if v.as_bytes() == expected.as_bytes() => {
            Json(json!({"authenticated": true, "user": user})).into_response()
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn bearer(headers: HeaderMap) -> Response {
    match headers.get(header::AUTHORIZATION) {
        Some(v) if v.as_bytes() == b"Bearer s3cr3t-token" => {
            Json(json!({"ok": true})).into_response()
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn serve() -> SocketAddr {
    let app = Router::new()
        .route("/echo", any(echo))
        .route(
            "/pet/1",
            routing::get(|| async { Json(json!({"id": 1, "name": "milou", "status": "pending"})) }),
        )
        .route("/text", routing::get(|| async { "hello, world" }))
        .route(
            "/json-as-text",
            routing::get(|| async { ([(header::CONTENT_TYPE, "text/plain")], r#"{"a":[1,2]}"#) }),
        )
        .route("/empty", routing::get(|| async { StatusCode::NO_CONTENT }))
        .route("/empty-200", routing::get(|| async { StatusCode::OK }))
        .route(
            "/bytes",
            routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    vec![0u8, 159, 146, 150, 255],
                )
            }),
        )
        .route("/basic-auth/{user}/{pass}", routing::get(basic_auth))
        .route("/bearer", routing::get(bearer))
        .route(
            "/missing",
            routing::get(|| async { (StatusCode::NOT_FOUND, "no such pet") }),
        )
        .route(
            "/boom",
            routing::get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/redirect",
            routing::get(|| async { Redirect::to("/pet/1") }),
        )
        .route(
            "/slow",
            routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route("/big", routing::get(|| async { "x".repeat(4096) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Helpers

struct MapSecrets(HashMap<String, Value>);

impl SecretSource for MapSecrets {
    fn get(&self, name: &str) -> Option<Value> {
        self.0.get(name).cloned()
    }
    fn all(&self) -> Map<String, Value> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn secrets() -> Arc<MapSecrets> {
    Arc::new(MapSecrets(HashMap::from([
        (
            "db".to_string(),
            json!({"username": "alice", "password": "wonder land"}),
        ),
        ("api".to_string(), json!({"token": "s3cr3t-token"})),
        ("raw-token".to_string(), json!("s3cr3t-token")),
        ("broken".to_string(), json!({"username": "bob"})),
    ])))
}

/// The default options, with the loopback test servers let through the outbound guard.
fn options() -> HttpOptions {
    HttpOptions {
        allow_outbound: "127.0.0.1".parse().unwrap(),
        ..HttpOptions::default()
    }
}

fn connector() -> HttpConnector {
    HttpConnector::new(options(), secrets()).unwrap()
}

fn ctx() -> ActivityContext {
    ActivityContext {
        run_id: "run-1".into(),
        frame: 3,
        position: "/do/0/getPet".into(),
        attempt: 0,
        idempotency_key: "run-1:/do/0/getPet:0".into(),
    }
}

fn get(addr: SocketAddr, path: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        uri: format!("http://{addr}{path}"),
        headers: vec![],
        query: vec![],
        body: None,
        output: HttpOutputFormat::Content,
        redirect: false,
        auth: None,
        seal: None,
    }
}

async fn ok(c: &HttpConnector, req: &HttpRequest) -> Value {
    match c.execute(&ctx(), req).await {
        Ok(v) => v,
        Err(e) => panic!("{} {} failed: {e}", req.method, req.uri),
    }
}

async fn err(c: &HttpConnector, req: &HttpRequest) -> WorkflowError {
    match c.execute(&ctx(), req).await {
        Ok(v) => panic!("{} {} succeeded with {v}", req.method, req.uri),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs

#[tokio::test]
async fn content_output_deserialises_json() {
    let addr = serve().await;
    let out = ok(&connector(), &get(addr, "/pet/1")).await;
    assert_eq!(out, json!({"id": 1, "name": "milou", "status": "pending"}));
}

#[tokio::test]
async fn content_output_of_text_and_json_sent_as_text() {
    let addr = serve().await;
    let c = connector();
    assert_eq!(ok(&c, &get(addr, "/text")).await, json!("hello, world"));
    assert_eq!(
        ok(&c, &get(addr, "/json-as-text")).await,
        json!({"a": [1, 2]})
    );
}

#[tokio::test]
async fn empty_body_is_null() {
    let addr = serve().await;
    let c = connector();
    assert_eq!(ok(&c, &get(addr, "/empty")).await, Value::Null);
    assert_eq!(ok(&c, &get(addr, "/empty-200")).await, Value::Null);
}

#[tokio::test]
async fn response_output_has_the_spec_shape() {
    let addr = serve().await;
    let mut req = get(addr, "/pet/1");
    req.method = "get".into();
    req.output = HttpOutputFormat::Response;
    req.headers = vec![("Accept".into(), "application/json".into())];
    req.auth = Some(HttpAuth::Bearer {
        token: "literal-token".into(),
    });
    let out = ok(&connector(), &req).await;

    assert_eq!(out["statusCode"], json!(200));
    assert_eq!(
        out["content"],
        json!({"id": 1, "name": "milou", "status": "pending"})
    );
    assert_eq!(out["headers"]["content-type"], json!("application/json"));
    assert_eq!(out["request"]["method"], json!("GET"));
    assert_eq!(out["request"]["uri"], json!(format!("http://{addr}/pet/1")));
    let sent = &out["request"]["headers"];
    assert_eq!(sent["accept"], json!("application/json"));
    assert_eq!(sent["idempotency-key"], json!("run-1:/do/0/getPet:0"));
    // Credentials never reach the output (and so the event log).
    assert_eq!(sent["authorization"], json!("<redacted>"));
    assert!(!out.to_string().contains("literal-token"));
    // Exactly the spec's properties (dsl-reference.md, "HTTP Response").
    let mut keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["content", "headers", "request", "statusCode"]);
}

#[tokio::test]
async fn raw_output_is_base64() {
    let addr = serve().await;
    let c = connector();
    let mut req = get(addr, "/bytes");
    req.output = HttpOutputFormat::Raw;
    assert_eq!(
        ok(&c, &req).await,
        json!(BASE64.encode([0u8, 159, 146, 150, 255]))
    );

    let mut req = get(addr, "/text");
    req.output = HttpOutputFormat::Raw;
    assert_eq!(ok(&c, &req).await, json!(BASE64.encode("hello, world")));

    // Content output of a non-UTF-8 body falls back to base64 too.
    assert_eq!(
        ok(&c, &get(addr, "/bytes")).await,
        json!(BASE64.encode([0u8, 159, 146, 150, 255]))
    );
}

// ---------------------------------------------------------------------------------------------
// The request on the wire

#[tokio::test]
async fn query_parameters_are_merged_and_encoded() {
    let addr = serve().await;
    let mut req = get(addr, "/echo?status=available");
    req.query = vec![
        ("name".into(), "Milou & co".into()),
        ("tag".into(), "a=b".into()),
    ];
    let out = ok(&connector(), &req).await;
    assert_eq!(
        out["query"],
        json!("status=available&name=Milou+%26+co&tag=a%3Db")
    );
}

#[tokio::test]
async fn headers_and_idempotency_key_are_sent() {
    let addr = serve().await;
    let mut req = get(addr, "/echo");
    req.headers = vec![
        ("X-Trace".into(), "abc".into()),
        ("Accept".into(), "application/json".into()),
    ];
    let out = ok(&connector(), &req).await;
    let headers = &out["headers"];
    assert_eq!(headers["x-trace"], json!("abc"));
    assert_eq!(headers["accept"], json!("application/json"));
    assert_eq!(headers["idempotency-key"], json!("run-1:/do/0/getPet:0"));
    assert_eq!(
        headers["user-agent"],
        json!(format!("cairn/{}", env!("CARGO_PKG_VERSION")))
    );

    // The same activation re-sent after a crash carries the same key.
    let again = ok(&connector(), &req).await;
    assert_eq!(
        again["headers"]["idempotency-key"],
        headers["idempotency-key"]
    );

    // A key set explicitly by the definition is kept.
    req.headers
        .push(("Idempotency-Key".into(), "order-42".into()));
    let out = ok(&connector(), &req).await;
    assert_eq!(out["headers"]["idempotency-key"], json!("order-42"));
}

#[tokio::test]
async fn post_json_body() {
    let addr = serve().await;
    let mut req = get(addr, "/echo");
    req.method = "post".into();
    req.body = Some(json!({"name": "milou", "tags": ["dog"]}));
    let out = ok(&connector(), &req).await;
    assert_eq!(out["method"], json!("POST"));
    assert_eq!(out["headers"]["content-type"], json!("application/json"));
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"name": "milou", "tags": ["dog"]}));
}

#[tokio::test]
async fn string_and_form_bodies() {
    let addr = serve().await;
    let c = connector();

    let mut req = get(addr, "/echo");
    req.method = "PUT".into();
    req.body = Some(json!("plain words"));
    let out = ok(&c, &req).await;
    assert_eq!(out["body"], json!("plain words"));
    assert_eq!(
        out["headers"]["content-type"],
        json!("text/plain; charset=utf-8")
    );

    // An explicit content type wins, and a string is sent as it is.
    req.headers = vec![("Content-Type".into(), "application/json".into())];
    req.body = Some(json!(r#"{"pre":"serialised"}"#));
    let out = ok(&c, &req).await;
    assert_eq!(out["body"], json!(r#"{"pre":"serialised"}"#));
    assert_eq!(out["headers"]["content-type"], json!("application/json"));

    // An object with a form content type is form-encoded.
    req.headers = vec![(
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    )];
    req.body = Some(json!({"grant_type": "client_credentials", "scope": "a b"}));
    let out = ok(&c, &req).await;
    assert_eq!(
        out["body"],
        json!("grant_type=client_credentials&scope=a+b")
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn basic_auth_literal_and_from_secret() {
    let addr = serve().await;
    let c = connector();

    let mut req = get(addr, "/basic-auth/serverless-workflow/conformance-test");
    req.auth = Some(HttpAuth::Basic {
        username: "serverless-workflow".into(),
        password: "conformance-test".into(),
    });
    assert_eq!(
        ok(&c, &req).await,
        json!({"authenticated": true, "user": "serverless-workflow"})
    );

    let mut req = get(addr, "/basic-auth/alice/wonder%20land");
    req.auth = Some(HttpAuth::BasicSecret {
        secret: "db".into(),
    });
    assert_eq!(
        ok(&c, &req).await,
        json!({"authenticated": true, "user": "alice"})
    );

    // Wrong credentials: the server's 401 is a communication error that keeps the status.
    let mut req = get(addr, "/basic-auth/alice/other");
    req.auth = Some(HttpAuth::BasicSecret {
        secret: "db".into(),
    });
    let e = err(&c, &req).await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert_eq!(e.status, 401);
    assert!(!e.to_string().contains("wonder"), "{e}");
}

#[tokio::test]
async fn bearer_auth_literal_and_from_secret() {
    let addr = serve().await;
    let c = connector();
    for auth in [
        HttpAuth::Bearer {
            token: "s3cr3t-token".into(),
        },
        HttpAuth::BearerSecret {
            secret: "api".into(),
        },
        HttpAuth::BearerSecret {
            secret: "raw-token".into(),
        },
    ] {
        let mut req = get(addr, "/bearer");
        req.auth = Some(auth);
        assert_eq!(ok(&c, &req).await, json!({"ok": true}));
    }

    let mut req = get(addr, "/bearer");
    req.auth = Some(HttpAuth::Bearer {
        token: "wrong".into(),
    });
    let e = err(&c, &req).await;
    assert_eq!(
        (e.is(ErrorKind::Communication), e.status),
        (true, 401),
        "{e}"
    );
}

#[tokio::test]
async fn missing_or_malformed_secret_is_a_configuration_error() {
    let addr = serve().await;
    let c = connector();

    let mut req = get(addr, "/bearer");
    req.auth = Some(HttpAuth::BearerSecret {
        secret: "nope".into(),
    });
    let e = err(&c, &req).await;
    assert!(e.is(ErrorKind::Configuration), "{e}");
    assert_eq!(e.status, 400);
    assert!(
        e.detail.as_deref().unwrap_or_default().contains("\"nope\""),
        "{e}"
    );
    assert_eq!(e.instance.as_deref(), Some("/do/0/getPet"));

    req.auth = Some(HttpAuth::BasicSecret {
        secret: "broken".into(),
    });
    let e = err(&c, &req).await;
    assert!(e.is(ErrorKind::Configuration), "{e}");
    assert!(
        e.detail.as_deref().unwrap_or_default().contains("password"),
        "{e}"
    );
    assert!(!e.to_string().contains("bob"), "{e}");

    // Without any secret source, secrets are simply missing.
    let bare = HttpConnector::new(options(), Arc::new(NoSecrets)).unwrap();
    req.auth = Some(HttpAuth::BasicSecret {
        secret: "db".into(),
    });
    assert!(err(&bare, &req).await.is(ErrorKind::Configuration));
}

// ---------------------------------------------------------------------------------------------
// Errors

#[tokio::test]
async fn not_found_is_a_communication_error_with_status_404() {
    let addr = serve().await;
    let e = err(&connector(), &get(addr, "/missing")).await;
    assert_eq!(
        e.type_,
        "https://serverlessworkflow.io/spec/1.0.0/errors/communication"
    );
    assert_eq!(e.status, 404);
    assert_eq!(e.title.as_deref(), Some("HTTP 404 Not Found"));
    let detail = e.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("GET") && detail.contains(&format!("http://{addr}/missing")),
        "{detail}"
    );
    assert_eq!(e.instance.as_deref(), Some("/do/0/getPet"));
}

#[tokio::test]
async fn server_error_is_a_communication_error_with_status_500() {
    let addr = serve().await;
    let e = err(&connector(), &get(addr, "/boom")).await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert_eq!(e.status, 500);
    assert_eq!(e.title.as_deref(), Some("HTTP 500 Internal Server Error"));
}

#[tokio::test]
async fn credentials_in_the_uri_never_reach_errors() {
    let addr = serve().await;
    let req = get(addr, "/missing");
    let req = HttpRequest {
        uri: req.uri.replace("http://", "http://user:hunter2@"),
        ..req
    };
    let e = err(&connector(), &req).await;
    assert_eq!(e.status, 404);
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[tokio::test]
async fn redirects_are_errors_unless_followed() {
    let addr = serve().await;
    let c = connector();
    let mut req = get(addr, "/redirect");
    let e = err(&c, &req).await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert_eq!(e.status, 303);
    assert!(
        e.detail.as_deref().unwrap_or_default().contains("/pet/1"),
        "{e}"
    );

    req.redirect = true;
    assert_eq!(ok(&c, &req).await["id"], json!(1));
}

#[tokio::test]
async fn timeout_is_a_timeout_error() {
    let addr = serve().await;
    let options = HttpOptions {
        request_timeout: Duration::from_millis(200),
        ..options()
    };
    let c = HttpConnector::new(options, secrets()).unwrap();
    let started = std::time::Instant::now();
    let e = err(&c, &get(addr, "/slow")).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        e.type_,
        "https://serverlessworkflow.io/spec/1.0.0/errors/timeout"
    );
    assert_eq!(e.status, 408);
    assert!(
        e.detail
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{e}"
    );
}

#[tokio::test]
async fn connection_refused_is_a_communication_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // dropped: nothing listens on the port any more
    let req = get(SocketAddr::from(([127, 0, 0, 1], port)), "/pet/1");
    let e = err(&connector(), &req).await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert_eq!(e.status, 503);
    let detail = e.detail.as_deref().unwrap_or_default().to_lowercase();
    assert!(detail.contains("could not connect"), "{detail}");
    assert!(detail.contains("refused"), "{detail}");
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let addr = serve().await;
    let options = HttpOptions {
        max_response_bytes: 1024,
        ..options()
    };
    let c = HttpConnector::new(options, secrets()).unwrap();
    let e = err(&c, &get(addr, "/big")).await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert!(
        e.detail
            .as_deref()
            .unwrap_or_default()
            .contains("1024 bytes"),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_requests_are_configuration_errors() {
    let addr = serve().await;
    let c = connector();
    let mut req = get(addr, "/echo");
    req.method = "NOT A METHOD".into();
    assert!(err(&c, &req).await.is(ErrorKind::Configuration));

    let mut req = get(addr, "/echo");
    req.uri = "ftp://127.0.0.1/file".into();
    assert!(err(&c, &req).await.is(ErrorKind::Configuration));

    let mut req = get(addr, "/echo");
    req.headers = vec![("bad header".into(), "x".into())];
    assert!(err(&c, &req).await.is(ErrorKind::Configuration));
}

// ---------------------------------------------------------------------------------------------
// The activity handler

#[tokio::test]
async fn activity_handler_performs_http_and_rejects_other_calls() {
    let addr = serve().await;
    let c = connector();
    let out = c
        .call(&ctx(), &ActivityCall::Http(get(addr, "/pet/1")))
        .await
        .unwrap();
    assert_eq!(out["name"], json!("milou"));

    let call = ActivityCall::Function {
        name: "greet".into(),
        arguments: json!({}),
        input: json!({}),
        seal: None,
    };
    let e = c.call(&ctx(), &call).await.unwrap_err();
    assert!(e.is(ErrorKind::Runtime), "{e}");
    assert!(
        e.detail.as_deref().unwrap_or_default().contains("greet"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// call: openapi

#[path = "http/openapi.rs"]
mod openapi;
