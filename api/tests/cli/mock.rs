//! The loopback mock of `conformance.md` §2: the petstore (`/v2/...`, a Swagger 2.0 document
//! included) and httpbin's basic-auth route (`/httpbin/...`), on `127.0.0.1:<random port>`.
//! It runs on its own thread with its own Tokio runtime, so the tests stay synchronous.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
}

#[derive(Clone)]
struct Shared {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The running mock; stops when dropped.
pub struct Mock {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Mock {
    /// Binds `127.0.0.1:0` and serves in the background.
    pub fn start() -> Mock {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("a local address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            port,
            seen: seen.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime for the mock");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a Tokio listener");
                let _ = axum::serve(listener, router(shared))
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Mock {
            port,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The rewrite table of `conformance.md`: public hosts to this mock.
    pub fn rewrite(&self, text: &str) -> String {
        text.replace("https://petstore.swagger.io", &self.base())
            .replace("https://httpbin.org", &format!("{}/httpbin", self.base()))
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // Not joined: a client that keeps a connection open must not hang the test.
        drop(self.thread.take());
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v2/pet/findByStatus", get(find_by_status))
        .route("/v2/pet/getPetByName/{name}", get(pet_by_name))
        .route(
            "/v2/pet/{id}",
            get(get_pet).put(put_pet).post(put_pet).delete(delete_pet),
        )
        // `PUT /v2/pet/{petId}` with no `petId` in the task input expands to `/v2/pet/`
        // (do-multiple, try-catch-then): treat it like the real `PUT /v2/pet`.
        .route("/v2/pet", axum::routing::put(echo).post(echo))
        .route("/v2/pet/", axum::routing::put(echo).post(echo))
        .route("/v2/swagger.json", get(swagger))
        .route("/httpbin/basic-auth/{user}/{pass}", get(basic_auth))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Ok(mut seen) = s.seen.lock() {
        seen.push(Seen {
            method: req.method().to_string(),
            path: req.uri().to_string(),
        });
    }
    next.run(req).await
}

fn pet(id: i64, status: &str) -> Value {
    let names = ["Rex", "Milo", "Luna", "Bella", "Max"];
    let name = names[(id.unsigned_abs() as usize) % names.len()];
    json!({
        "id": id,
        "category": { "id": 1, "name": "Dogs" },
        "name": name,
        "photoUrls": [format!("https://example.invalid/{id}.png")],
        "tags": [{ "id": 1, "name": "good" }],
        "status": status,
    })
}

fn pet_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "code": 1, "type": "error", "message": "Pet not found" })),
    )
        .into_response()
}

async fn find_by_status(Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let status = q.get("status").map(String::as_str).unwrap_or("available");
    Json(json!([pet(1, status), pet(2, status), pet(3, status)]))
}

async fn pet_by_name(Path(_name): Path<String>) -> Response {
    // The real petstore has no such operation: every name is "not found" (ctk-20, ctk-21).
    pet_not_found()
}

async fn get_pet(Path(id): Path<String>) -> Response {
    match id.parse::<i64>() {
        Ok(id) if (1..=100).contains(&id) => Json(pet(id, "available")).into_response(),
        _ => pet_not_found(),
    }
}

async fn put_pet(Path(id): Path<String>, body: Bytes) -> Response {
    match id.parse::<i64>() {
        Ok(id) if (1..=100).contains(&id) => {
            let mut v = serde_json::from_slice::<Value>(&body).unwrap_or_else(|_| pet(id, ""));
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), json!(id));
            }
            Json(v).into_response()
        }
        _ => pet_not_found(),
    }
}

async fn delete_pet(Path(id): Path<String>) -> Response {
    match id.parse::<i64>() {
        Ok(id) if (1..=100).contains(&id) => StatusCode::OK.into_response(),
        _ => pet_not_found(),
    }
}

async fn echo(body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => Json(v).into_response(),
        Err(_) => (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({ "code": 405, "type": "unknown", "message": "no body" })),
        )
            .into_response(),
    }
}

async fn swagger(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "swagger": "2.0",
        "info": { "title": "Swagger Petstore (loopback mock)", "version": "1.0.7" },
        "host": format!("127.0.0.1:{}", s.port),
        "basePath": "/v2",
        "schemes": ["http"],
        "paths": {
            "/pet/findByStatus": {
                "get": {
                    "operationId": "findPetsByStatus",
                    "produces": ["application/json"],
                    "parameters": [{
                        "name": "status", "in": "query", "required": true,
                        "type": "array", "items": { "type": "string" },
                        "collectionFormat": "multi"
                    }],
                    "responses": {
                        "200": {
                            "description": "successful operation",
                            "schema": { "type": "array", "items": { "$ref": "#/definitions/Pet" } }
                        },
                        "400": { "description": "Invalid status value" }
                    }
                }
            },
            "/pet/{petId}": {
                "get": {
                    "operationId": "getPetById",
                    "produces": ["application/json"],
                    "parameters": [{
                        "name": "petId", "in": "path", "required": true,
                        "type": "integer", "format": "int64"
                    }],
                    "responses": {
                        "200": { "description": "successful operation",
                                 "schema": { "$ref": "#/definitions/Pet" } },
                        "404": { "description": "Pet not found" }
                    }
                }
            }
        },
        "definitions": {
            "Pet": {
                "type": "object",
                "required": ["name", "photoUrls"],
                "properties": {
                    "id": { "type": "integer", "format": "int64" },
                    "name": { "type": "string" },
                    "photoUrls": { "type": "array", "items": { "type": "string" } },
                    "status": { "type": "string", "enum": ["available", "pending", "sold"] }
                }
            }
        }
    }))
}

async fn basic_auth(Path((user, pass)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(expected.as_str()) {
        Json(json!({ "authenticated": true, "user": user })).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"Fake Realm\"")],
        )
            .into_response()
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "code": 404, "message": format!("mock has no route {method} {uri}") })),
    )
        .into_response()
}
