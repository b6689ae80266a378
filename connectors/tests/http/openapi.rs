//! `call: openapi` against a loopback server that serves a Swagger 2.0 petstore (the document
//! the CTK uses), an OpenAPI 3 document in YAML, and the operations both describe.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{OriginalUri, State};
use cairn_core::events::OpenApiRequest;

use super::*;

#[derive(Clone, Default)]
struct Fetches(Arc<AtomicUsize>);

fn swagger(port: u16) -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "petstore", "version": "1.0.7"},
        "host": format!("127.0.0.1:{port}"),
        "basePath": "/v2",
        "schemes": ["http"],
        "parameters": {
            "PetId": {"name": "petId", "in": "path", "required": true, "type": "integer"}
        },
        "paths": {
            "/pet/findByStatus": {
                "get": {
                    "operationId": "findPetsByStatus",
                    "produces": ["application/xml", "application/json"],
                    "parameters": [{
                        "name": "status", "in": "query", "required": true,
                        "type": "array", "items": {"type": "string"},
                        "collectionFormat": "multi"
                    }],
                    "responses": {"200": {"description": "ok"}}
                }
            },
            "/pet/{petId}": {
                "parameters": [{"$ref": "#/parameters/PetId"}],
                "get": {
                    "operationId": "getPetById",
                    "responses": {"200": {"description": "ok"}}
                }
            },
            "/echo/{value}": {
                "post": {
                    "operationId": "echoPath",
                    "parameters": [
                        {"name": "value", "in": "path", "required": true, "type": "string"},
                        {"name": "X-Note", "in": "header", "type": "string"},
                        {"name": "pet", "in": "body", "schema": {"type": "object"}}
                    ],
                    "responses": {"200": {"description": "ok"}}
                }
            }
        }
    })
}

/// OpenAPI 3, in YAML, with a server URL relative to the document and a variable.
const OPENAPI3_YAML: &str = r#"
openapi: 3.0.3
info: {title: pets, version: "1"}
servers:
  - url: /api/{version}
    variables:
      version: {default: v3}
components:
  parameters:
    Tenant: {name: X-Tenant, in: header, required: true, schema: {type: string}}
paths:
  /pets/{petId}:
    get:
      operationId: showPet
      parameters:
        - {name: petId, in: path, required: true, schema: {type: integer}}
        - $ref: '#/components/parameters/Tenant'
        - {name: fields, in: query, schema: {type: array, items: {type: string}}}
      responses:
        200:
          description: ok
          content:
            application/json: {}
  /pets:
    post:
      operationId: addPet
      parameters:
        - $ref: '#/components/parameters/Tenant'
      requestBody:
        required: true
        content:
          application/json: {}
      responses:
        '201': {description: created}
  /secure:
    get:
      operationId: whoAmI
      responses:
        '200': {description: ok}
"#;

/// Returns the request as the server saw it: method, raw URI, a few headers and the body.
async fn echo_request(
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Json(json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "tenant": header("x-tenant"),
        "note": header("x-note"),
        "contentType": header("content-type"),
        "accept": header("accept"),
        "idempotencyKey": header("idempotency-key"),
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn find_by_status(RawQuery(query): RawQuery) -> Json<Value> {
    let statuses: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("status="))
        .map(str::to_string)
        .collect();
    Json(Value::Array(
        statuses
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"id": i + 1, "name": "rex", "status": s}))
            .collect(),
    ))
}

async fn pet_by_id(Path(id): Path<String>) -> Response {
    match id.as_str() {
        "1" => Json(json!({"id": 1, "name": "milou", "status": "available"})).into_response(),
        _ => (StatusCode::NOT_FOUND, "no such pet").into_response(),
    }
}

async fn serve_openapi() -> (SocketAddr, Fetches) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fetches = Fetches::default();
    let doc = swagger(addr.port());
    let app = Router::new()
        .route(
            "/v2/swagger.json",
            routing::get(|State(f): State<Fetches>| async move {
                f.0.fetch_add(1, Ordering::SeqCst);
                Json(doc)
            }),
        )
        .route("/v2/pet/findByStatus", routing::get(find_by_status))
        .route("/v2/pet/{petId}", routing::get(pet_by_id))
        .route("/v2/echo/{value}", routing::post(echo_request))
        .route(
            "/docs/openapi.yaml",
            routing::get(|| async {
                ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI3_YAML)
            }),
        )
        .route("/api/v3/pets/{petId}", routing::get(echo_request))
        .route("/api/v3/pets", routing::post(echo_request))
        .route("/api/v3/secure", routing::get(bearer))
        .route(
            "/broken.json",
            routing::get(|| async { "{\"swagger\": \"2.0\", oops" }),
        )
        .with_state(fetches.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, fetches)
}

fn openapi(document: String, operation_id: &str, parameters: Value) -> OpenApiRequest {
    OpenApiRequest {
        document,
        operation_id: operation_id.into(),
        parameters,
        output: HttpOutputFormat::Content,
        redirect: false,
        auth: None,
        seal: None,
    }
}

fn petstore(addr: SocketAddr, operation_id: &str, parameters: Value) -> OpenApiRequest {
    openapi(
        format!("http://{addr}/v2/swagger.json"),
        operation_id,
        parameters,
    )
}

fn pets3(addr: SocketAddr, operation_id: &str, parameters: Value) -> OpenApiRequest {
    openapi(
        format!("http://{addr}/docs/openapi.yaml"),
        operation_id,
        parameters,
    )
}

async fn call_ok(c: &HttpConnector, req: &OpenApiRequest) -> Value {
    match c.call(&ctx(), &ActivityCall::OpenApi(req.clone())).await {
        Ok(v) => v,
        Err(e) => panic!("{} failed: {e}", req.operation_id),
    }
}

async fn call_err(c: &HttpConnector, req: &OpenApiRequest) -> WorkflowError {
    match c.call(&ctx(), &ActivityCall::OpenApi(req.clone())).await {
        Ok(v) => panic!("{} succeeded with {v}", req.operation_id),
        Err(e) => e,
    }
}

#[tokio::test]
async fn swagger2_content_output_and_the_document_is_cached() {
    let (addr, fetches) = serve_openapi().await;
    let c = connector();
    let out = call_ok(
        &c,
        &petstore(addr, "findPetsByStatus", json!({"status": "available"})),
    )
    .await;
    assert_eq!(
        out,
        json!([{"id": 1, "name": "rex", "status": "available"}])
    );

    // `collectionFormat: multi` repeats the parameter.
    let out = call_ok(
        &c,
        &petstore(
            addr,
            "findPetsByStatus",
            json!({"status": ["sold", "pending"]}),
        ),
    )
    .await;
    assert_eq!(out.as_array().map(Vec::len), Some(2));
    assert_eq!(out[1]["status"], json!("pending"));

    // A clone shares the cache.
    let out = call_ok(
        &c.clone(),
        &petstore(addr, "getPetById", json!({"petId": 1})),
    )
    .await;
    assert_eq!(out["name"], json!("milou"));
    assert_eq!(fetches.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn swagger2_response_output() {
    let (addr, _) = serve_openapi().await;
    let mut req = petstore(addr, "getPetById", json!({"petId": 1}));
    req.output = HttpOutputFormat::Response;
    let out = call_ok(&connector(), &req).await;
    assert_eq!(out["statusCode"], json!(200));
    assert_eq!(out["request"]["method"], json!("GET"));
    assert_eq!(
        out["request"]["uri"],
        json!(format!("http://{addr}/v2/pet/1"))
    );
    assert_eq!(
        out["request"]["headers"]["idempotency-key"],
        json!("run-1:/do/0/getPet:0")
    );
    assert_eq!(out["content"]["id"], json!(1));
    assert_eq!(out["content"]["status"], json!("available"));
    assert!(out["headers"].is_object(), "{out}");
}

#[tokio::test]
async fn swagger2_path_encoding_headers_and_body() {
    let (addr, _) = serve_openapi().await;
    let req = petstore(
        addr,
        "echoPath",
        json!({"value": "a b/c?d", "X-Note": "hi", "body": {"name": "rex"}}),
    );
    let out = call_ok(&connector(), &req).await;
    assert_eq!(out["method"], json!("POST"));
    assert_eq!(out["uri"], json!("/v2/echo/a%20b%2Fc%3Fd"));
    assert_eq!(out["note"], json!("hi"));
    assert_eq!(out["contentType"], json!("application/json"));
    assert_eq!(out["body"], json!(r#"{"name":"rex"}"#));
    assert_eq!(out["idempotencyKey"], json!("run-1:/do/0/getPet:0"));
}

#[tokio::test]
async fn swagger2_produces_sets_accept_with_json_first() {
    let (addr, _) = serve_openapi().await;
    let mut req = petstore(addr, "findPetsByStatus", json!({"status": "sold"}));
    req.output = HttpOutputFormat::Response;
    let out = call_ok(&connector(), &req).await;
    assert_eq!(
        out["request"]["headers"]["accept"],
        json!("application/json, application/xml")
    );
}

#[tokio::test]
async fn openapi3_yaml_document_with_relative_server() {
    let (addr, _) = serve_openapi().await;
    let c = connector();
    let out = call_ok(
        &c,
        &pets3(
            addr,
            "showPet",
            json!({"petId": 7, "X-Tenant": "acme", "fields": ["name", "tags"]}),
        ),
    )
    .await;
    assert_eq!(out["method"], json!("GET"));
    assert_eq!(out["uri"], json!("/api/v3/pets/7?fields=name&fields=tags"));
    assert_eq!(out["tenant"], json!("acme"));
    assert_eq!(out["accept"], json!("application/json"));

    // The request body: the arguments no parameter consumed.
    let out = call_ok(
        &c,
        &pets3(
            addr,
            "addPet",
            json!({"X-Tenant": "acme", "name": "rex", "age": 3}),
        ),
    )
    .await;
    assert_eq!(out["method"], json!("POST"));
    assert_eq!(out["uri"], json!("/api/v3/pets"));
    assert_eq!(out["contentType"], json!("application/json"));
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"name": "rex", "age": 3}));

    // ... or the `body` argument when given.
    let out = call_ok(
        &c,
        &pets3(addr, "addPet", json!({"X-Tenant": "acme", "body": [1, 2]})),
    )
    .await;
    assert_eq!(out["body"], json!("[1,2]"));
}

#[tokio::test]
async fn openapi3_raw_output_and_authentication() {
    let (addr, _) = serve_openapi().await;
    let c = connector();
    let mut req = pets3(addr, "whoAmI", json!({}));
    let e = call_err(&c, &req).await;
    assert_eq!(e.status, 401);

    req.auth = Some(HttpAuth::BearerSecret {
        secret: "api".into(),
    });
    req.output = HttpOutputFormat::Raw;
    let out = call_ok(&c, &req).await;
    let bytes = BASE64.decode(out.as_str().unwrap()).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        json!({"ok": true})
    );
}

#[tokio::test]
async fn missing_required_parameter_is_a_configuration_error() {
    let (addr, _) = serve_openapi().await;
    let c = connector();
    let e = call_err(&c, &petstore(addr, "getPetById", json!({}))).await;
    assert!(e.is(ErrorKind::Configuration), "{e}");
    assert_eq!(e.status, 400);
    let detail = e.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("\"petId\"") && detail.contains("\"getPetById\""),
        "{detail}"
    );
    assert_eq!(e.instance.as_deref(), Some("/do/0/getPet"));

    let e = call_err(&c, &pets3(addr, "showPet", json!({"petId": 1}))).await;
    let detail = e.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("\"X-Tenant\""), "{detail}");

    let e = call_err(&c, &pets3(addr, "addPet", json!({"X-Tenant": "acme"}))).await;
    let detail = e.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("\"body\"") && detail.contains("\"addPet\""),
        "{detail}"
    );
}

#[tokio::test]
async fn unknown_operation_is_a_configuration_error() {
    let (addr, _) = serve_openapi().await;
    let e = call_err(&connector(), &petstore(addr, "deletePet", json!({}))).await;
    assert!(e.is(ErrorKind::Configuration), "{e}");
    let detail = e.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("\"deletePet\"") && detail.contains("\"findPetsByStatus\""),
        "{detail}"
    );
}

#[tokio::test]
async fn operation_errors_are_those_of_call_http() {
    let (addr, _) = serve_openapi().await;
    let e = call_err(
        &connector(),
        &petstore(addr, "getPetById", json!({"petId": 2})),
    )
    .await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert_eq!(e.status, 404);
    assert_eq!(e.instance.as_deref(), Some("/do/0/getPet"));
}

#[tokio::test]
async fn document_failures() {
    let (addr, fetches) = serve_openapi().await;
    let c = connector();

    let missing = format!("http://{addr}/nope/swagger.json");
    let e = call_err(&c, &openapi(missing.clone(), "getPetById", json!({}))).await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert_eq!(e.status, 404);
    assert!(
        e.detail.as_deref().unwrap_or_default().contains(&missing),
        "{e}"
    );
    assert_eq!(e.instance.as_deref(), Some("/do/0/getPet"));

    let broken = format!("http://{addr}/broken.json");
    let e = call_err(&c, &openapi(broken.clone(), "getPetById", json!({}))).await;
    assert!(e.is(ErrorKind::Configuration), "{e}");
    assert!(
        e.detail.as_deref().unwrap_or_default().contains(&broken),
        "{e}"
    );

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = format!("http://127.0.0.1:{port}/v2/swagger.json");
    let e = call_err(&c, &openapi(refused.clone(), "getPetById", json!({}))).await;
    assert!(e.is(ErrorKind::Communication), "{e}");
    assert_eq!(e.status, 503);
    assert!(
        e.detail.as_deref().unwrap_or_default().contains(&refused),
        "{e}"
    );

    // Failures are not cached.
    assert_eq!(fetches.0.load(Ordering::SeqCst), 0);
}
