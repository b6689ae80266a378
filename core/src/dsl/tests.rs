//! The loader and the checks together, from text to problems with their locations.

use serde_json::Value;

use super::*;

const HEAD: &str = "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: t\n  version: '0.1.0'\n";

fn problems(body: &str) -> Vec<Problem> {
    match load_str(&format!("{HEAD}{body}"), SourceFormat::Yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

fn pointers(body: &str) -> Vec<String> {
    problems(body).into_iter().map(|p| p.pointer).collect()
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    for (text, format) in [
        ("[".repeat(100_000), SourceFormat::Yaml),
        ("{a: ".repeat(100_000), SourceFormat::Yaml),
        ("{\"a\":".repeat(50_000), SourceFormat::Json),
        (format!("{}1", "- ".repeat(100_000)), SourceFormat::Yaml),
    ] {
        let e = load_str(&text, format).expect_err("too deep");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(e.problems[0].message.contains("nested deeper"), "{e}");
        assert_eq!(e.problems[0].line, Some(1), "{e}");
    }
    // Brackets in quotes and comments do not count; 100 real levels are fine.
    let deep_ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert!(check_nesting(&deep_ok).is_ok());
    let quoted = format!(
        "a: '{}'\nb: \"{}\" # {}\n",
        "[".repeat(500),
        "{".repeat(500),
        "[".repeat(500)
    );
    assert!(check_nesting(&quoted).is_ok());
    assert!(check_nesting(&format!("- {}x", "- ".repeat(MAX_NESTING))).is_err());
}

#[test]
fn valid_definition_loads() {
    let body =
        "do:\n  - a:\n      set:\n        x: ${ .y }\n      then: b\n  - b:\n      wait: PT1S\n";
    assert_eq!(problems(body), Vec::new());
}

#[test]
fn unknown_field_has_pointer_and_line() {
    let p = problems("do:\n  - a:\n      set:\n        x: 1\n      sett: 2\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].pointer, "/do/0/a/sett");
    assert_eq!(p[0].line, Some(10));
    assert!(
        p[0].message.contains("unknown field `sett`"),
        "{}",
        p[0].message
    );
}

#[test]
fn call_argument_error_points_inside_with() {
    let p = problems("do:\n  - a:\n      call: http\n      with:\n        method: get\n        endpoint: https://x.example\n        foo: 1\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].pointer, "/do/0/a/with/foo");
    assert_eq!(p[0].line, Some(12));
}

#[test]
fn two_tasks_in_one_item_is_rejected() {
    let p = pointers("do:\n  - a:\n      set: {x: 1}\n    b:\n      set: {x: 2}\n");
    assert_eq!(p, vec!["/do/0"]);
}

#[test]
fn all_semantic_problems_are_collected() {
    let body = "do:\n  - a:\n      set: {x: 1}\n      then: nowhere\n  - a:\n      raise:\n        error: missing\n  - c:\n      switch:\n        - one:\n            when: .x ==\n            then: gone\n";
    let p = pointers(body);
    assert!(p.contains(&"/do/0/a/then".to_string()), "{p:?}");
    assert!(p.contains(&"/do/1/a".to_string()), "{p:?}");
    assert!(p.contains(&"/do/1/a/raise/error".to_string()), "{p:?}");
    assert!(
        p.contains(&"/do/2/c/switch/0/one/then".to_string()),
        "{p:?}"
    );
}

#[test]
fn unsupported_dsl_version() {
    let text = "document:\n  dsl: '0.8'\n  namespace: test\n  name: t\n  version: '0.1.0'\ndo:\n  - a:\n      wait: PT1S\n";
    let e = load_str(text, SourceFormat::Yaml)
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].pointer, "/document/dsl");
    assert_eq!(e[0].line, Some(2));
    assert!(e[0].message.contains("unsupported dsl version `0.8`"));
}

#[test]
fn references_into_use() {
    let body = "do:\n  - a:\n      call: http\n      with:\n        method: get\n        endpoint:\n          uri: https://x.example\n          authentication:\n            use: nope\n      timeout: slow\n  - b:\n      call: log:1.0.0@nocat\n  - c:\n      call: myRustFunction\n";
    let p = pointers(body);
    assert_eq!(
        p,
        vec![
            "/do/0/a/with/endpoint/authentication/use",
            "/do/0/a/timeout",
            "/do/1/b/call"
        ],
    );
}

#[test]
fn oneof_rules() {
    let body = "do:\n  - a:\n      call: http\n      with:\n        method: get\n        endpoint:\n          uri: https://x.example\n          authentication:\n            basic: {username: u, password: p}\n            bearer: {token: t}\n  - b:\n      run:\n        shell: {command: ls}\n        script: {language: js, code: x}\n  - c:\n      listen:\n        to:\n          one: {with: {type: t}}\n          any: []\n";
    let p = pointers(body);
    assert_eq!(
        p,
        vec![
            "/do/0/a/with/endpoint/authentication",
            "/do/1/b/run",
            "/do/2/c/listen/to"
        ]
    );
}

#[test]
fn durations_are_checked() {
    let p = pointers(
        "do:\n  - a:\n      wait: PT1X\n  - b:\n      wait: ${ .d }\n  - c:\n      wait: {}\n",
    );
    assert_eq!(p, vec!["/do/0/a/wait", "/do/2/c/wait"]);
}

#[test]
fn json_source_has_positions() {
    let text = r#"{"document": {"dsl": "1.0.3", "namespace": "t", "name": "t", "version": "1.0.0"},
 "do": [{"a": {"set": {"x": 1}, "then": "zz"}}]}"#;
    let e = load_str(text, SourceFormat::Json)
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].pointer, "/do/0/a/then");
    assert_eq!(e[0].line, Some(2));
}

#[test]
fn duplicate_keys_are_reported() {
    let p = pointers("do:\n  - a:\n      wait: PT1S\ndo:\n  - b:\n      wait: PT1S\n");
    assert!(!p.is_empty());
}

#[test]
fn task_shape_errors() {
    let p = problems("do:\n  - a:\n      set: {x: 1}\n      wait: PT1S\n");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].pointer, "/do/0/a");
    assert!(
        p[0].message.contains("exactly one kind"),
        "{}",
        p[0].message
    );
    let p = problems("do:\n  - a:\n      set: {x: 1}\n      while: .x\n");
    assert!(p[0]
        .message
        .contains("`while` is only allowed in a `for` task"));
    // An explicit null is not the same as an absent field.
    assert_eq!(
        pointers("do:\n  - a:\n      set: {x: 1}\n      input: null\n"),
        vec!["/do/0/a/input"]
    );
}

#[test]
fn for_variables_are_in_scope_only_in_the_body() {
    let body = "do:\n  - loop:\n      for: {each: color, in: .colors}\n      do:\n        - paint:\n            set: {c: '${ $color }'}\n  - after:\n      set: {c: '${ $color }'}\n";
    assert_eq!(pointers(body), vec!["/do/1/after/set/c"]);
}

#[test]
fn round_trip_keeps_the_task_kind() {
    let text = format!("{HEAD}do:\n  - loop:\n      for: {{in: .xs}}\n      while: .ok\n      do:\n        - a:\n            wait: {{seconds: 1}}\n");
    let w = load_str(&text, SourceFormat::Yaml).expect("valid");
    let v = serde_json::to_value(&w).expect("serialisable");
    assert_eq!(
        v.pointer("/do/0/loop/while"),
        Some(&Value::String(".ok".into()))
    );
    let again: Workflow = serde_json::from_value(v).expect("decodes again");
    assert_eq!(again, w);
}
