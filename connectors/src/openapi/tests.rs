//! The OpenAPI request builder and document parsing, without a network.

use super::request::*;
use super::*;
use cairn_core::dsl::HttpOutputFormat;
use cairn_core::events::HttpRequest;
use serde_json::json;

fn request(operation_id: &str, parameters: Value) -> OpenApiRequest {
    OpenApiRequest {
        document: "http://docs.example/api/openapi.json".into(),
        operation_id: operation_id.into(),
        parameters,
        output: HttpOutputFormat::Content,
        redirect: false,
        auth: None,
        seal: None,
    }
}

fn doc_uri() -> Url {
    Url::parse("http://docs.example/api/openapi.json").unwrap_or_else(|e| panic!("{e}"))
}

fn build(doc: &Value, op: &str, params: Value) -> Result<HttpRequest, WorkflowError> {
    build_request(doc, &doc_uri(), &request(op, params))
}

fn oas3() -> Value {
    json!({
        "openapi": "3.0.3",
        "servers": [{"url": "/{version}", "variables": {"version": {"default": "v3"}}}],
        "components": {
            "parameters": {
                "Trace": {"name": "X-Trace", "in": "header", "required": true}
            }
        },
        "paths": {
            "/items/{id}/{tags}": {
                "parameters": [
                    {"name": "id", "in": "path", "required": true},
                    {"$ref": "#/components/parameters/Trace"}
                ],
                "put": {
                    "operationId": "putItem",
                    "parameters": [
                        {"name": "tags", "in": "path", "required": true},
                        {"name": "filter", "in": "query",
                         "style": "deepObject", "explode": true},
                        {"name": "ids", "in": "query", "explode": false},
                        {"name": "session", "in": "cookie"}
                    ],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {}}
                    },
                    "responses": {"200": {"content": {"application/json": {}}}}
                }
            }
        }
    })
}

#[test]
fn openapi3_request_is_built_from_the_operation() {
    let req = build(
        &oas3(),
        "putItem",
        json!({
            "id": "a b/c", "tags": ["x", "y"], "X-Trace": "t1",
            "filter": {"color": "red"}, "ids": [1, 2], "session": "s",
            "name": "widget", "size": 3
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(req.method, "PUT");
    assert_eq!(req.uri, "http://docs.example/v3/items/a%20b%2Fc/x,y");
    assert_eq!(
        req.query,
        vec![
            ("filter[color]".to_string(), "red".to_string()),
            ("ids".to_string(), "1,2".to_string())
        ]
    );
    assert!(req.headers.contains(&("X-Trace".into(), "t1".into())));
    assert!(req.headers.contains(&("Cookie".into(), "session=s".into())));
    assert!(req
        .headers
        .contains(&("Content-Type".into(), "application/json".into())));
    assert_eq!(req.body, Some(json!({"name": "widget", "size": 3})));
}

#[test]
fn openapi3_body_argument_wins_and_required_body_is_checked() {
    let params = json!({"id": 1, "tags": "t", "X-Trace": "t", "body": {"a": 1}, "b": 2});
    let req = build(&oas3(), "putItem", params).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(req.body, Some(json!({"a": 1})));

    let e = build(
        &oas3(),
        "putItem",
        json!({"id": 1, "tags": "t", "X-Trace": "t"}),
    )
    .err()
    .unwrap_or_else(|| panic!("a missing body must fail"));
    assert!(e.is(ErrorKind::Configuration), "{e}");
    assert!(e.detail.unwrap_or_default().contains("\"body\""));
}

#[test]
fn missing_path_parameter_and_unknown_operation() {
    let e = build(&oas3(), "putItem", json!({"tags": "t", "X-Trace": "t"}))
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    let detail = e.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("\"id\"") && detail.contains("putItem"),
        "{detail}"
    );
    assert_eq!(e.status, 400);

    let e = build(&oas3(), "nope", json!({}))
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    let detail = e.detail.unwrap_or_default();
    assert!(
        detail.contains("\"nope\"") && detail.contains("\"putItem\""),
        "{detail}"
    );
}

#[test]
fn swagger2_base_url_and_collection_formats() {
    let doc = json!({
        "swagger": "2.0",
        "basePath": "/v2/",
        "schemes": ["https", "http"],
        "consumes": ["application/x-www-form-urlencoded"],
        "paths": {
            "/pet/{petId}": {
                "post": {
                    "operationId": "updatePetWithForm",
                    "parameters": [
                        {"name": "petId", "in": "path", "required": true, "type": "integer"},
                        {"name": "name", "in": "formData", "type": "string"},
                        {"name": "tags", "in": "query", "type": "array",
                         "collectionFormat": "pipes"},
                        {"name": "ids", "in": "query", "type": "array",
                         "collectionFormat": "multi"}
                    ]
                }
            }
        }
    });
    let req = build(
        &doc,
        "updatePetWithForm",
        json!({"petId": 7, "name": "rex", "tags": ["a", "b"], "ids": [1, 2]}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // No host: the document's own; its scheme is listed, so it is kept.
    assert_eq!(req.uri, "http://docs.example/v2/pet/7");
    assert_eq!(
        req.query,
        vec![
            ("tags".to_string(), "a|b".to_string()),
            ("ids".to_string(), "1".to_string()),
            ("ids".to_string(), "2".to_string())
        ]
    );
    assert_eq!(req.body, Some(json!({"name": "rex"})));
    assert!(req.headers.contains(&(
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into()
    )));
}

#[test]
fn external_refs_and_unknown_versions_are_configuration_errors() {
    let doc = json!({"openapi": "3.1.0", "paths": {"/a": {"get": {
        "operationId": "a", "parameters": [{"$ref": "other.json#/p"}]}}}});
    let e = build(&doc, "a", json!({}))
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert!(e.detail.unwrap_or_default().contains("other.json"));

    let e = build(&json!({"openapi": "4.0"}), "a", json!({}))
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert!(e.is(ErrorKind::Configuration));
}

#[test]
fn yaml_documents_parse_with_numeric_keys() {
    let doc = parse_document(b"openapi: 3.0.0\npaths:\n  /a:\n    get:\n      responses:\n        200:\n          description: ok\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        doc["paths"]["/a"]["get"]["responses"]["200"]["description"],
        "ok"
    );
    assert!(parse_document(b"{not json").is_err());
    let deep = format!(
        "openapi: 3.0.0\nx: {}1{}\n",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let e = parse_document(deep.as_bytes()).err().unwrap_or_default();
    assert!(e.contains("nested deeper than 128 levels (line 2,"), "{e}");
}

#[test]
fn cache_is_bounded() {
    let cache = DocumentCache::default();
    for i in 0..DOCUMENT_CACHE_CAPACITY + 5 {
        cache.insert(&format!("http://x/{i}"), Arc::new(json!({})));
    }
    let len = cache.entries.lock().map(|e| e.len()).unwrap_or_default();
    assert_eq!(len, DOCUMENT_CACHE_CAPACITY);
    assert!(cache.get("http://x/0").is_none());
    assert!(cache
        .get(&format!("http://x/{}", DOCUMENT_CACHE_CAPACITY + 4))
        .is_some());
}
