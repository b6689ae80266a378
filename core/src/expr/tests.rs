//! The evaluator against the spec's examples, hostile expressions and the budgets.

use super::*;
use serde_json::json;

fn vars(pairs: &[(&str, Value)]) -> Vars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn run(src: &str, input: Value) -> Value {
    eval(src, &input, &Vars::new()).unwrap()
}

#[test]
fn ctk_array_append() {
    assert_eq!(
        run(".colors + [\"red\"]", json!({"colors": ["blue"]})),
        json!(["blue", "red"])
    );
    // `null + [..]`: the CTK starts from an empty input
    assert_eq!(run(".colors + [ \"blue\" ]", json!({})), json!(["blue"]));
}

#[test]
fn ctk_for_loop_accumulator() {
    let src =
        "{ colors: (.processed.colors + [ $color ]), indexes: (.processed.indexes + [ $index ])}";
    let v = vars(&[("color", json!("red")), ("index", json!(0))]);
    let out = eval(src, &json!({}), &v).unwrap();
    assert_eq!(out, json!({"colors": ["red"], "indexes": [0]}));
    let v = vars(&[("color", json!("green")), ("index", json!(1))]);
    let out = eval(src, &json!({"processed": out}), &v).unwrap();
    assert_eq!(out, json!({"colors": ["red", "green"], "indexes": [0, 1]}));
}

#[test]
fn ctk_paths_and_variables() {
    let input = json!({"user": {"claims": {"subject": "alice"}}});
    assert_eq!(run(".user.claims.subject", input), json!("alice"));
    let v = vars(&[("input", json!({"color": "red"})), ("context", json!({}))]);
    assert_eq!(
        eval(".colors + [ $input.color ]", &json!({"colors": []}), &v).unwrap(),
        json!(["red"])
    );
    let v = vars(&[("input", json!(7))]);
    assert_eq!(
        eval("{ ids: [ $input, .id ] }", &json!({"id": 8}), &v).unwrap(),
        json!({"ids": [7, 8]})
    );
    assert_eq!(
        run(".color == \"red\"", json!({"color": "red"})),
        json!(true)
    );
    assert_eq!(
        run(".color == \"red\"", json!({"color": "blue"})),
        json!(false)
    );
}

#[test]
fn variables_bind_by_name_whatever_the_order() {
    let v = vars(&[("z", json!(1)), ("a", json!(2)), ("m", json!(3))]);
    assert_eq!(
        eval("[$a, $m, $z]", &Value::Null, &v).unwrap(),
        json!([2, 3, 1])
    );
    // the same program declared with other names is compiled separately
    let v = vars(&[
        ("a", json!(5)),
        ("b", json!(6)),
        ("m", json!(7)),
        ("z", json!(8)),
    ]);
    assert_eq!(
        eval("[$a, $m, $z]", &Value::Null, &v).unwrap(),
        json!([5, 7, 8])
    );
}

#[test]
fn names_written_with_a_dollar_still_bind() {
    let v = vars(&[("$z", json!(1)), ("a", json!(2))]);
    assert_eq!(eval("[$a, $z]", &Value::Null, &v).unwrap(), json!([2, 1]));
}

#[test]
fn string_interpolation() {
    let input = json!({"user": {"firstName": "John", "lastName": "Doe"}});
    let src = "\"Hello \\(.user.firstName) \\(.user.lastName)!\"";
    assert_eq!(run(src, input), json!("Hello John Doe!"));
    assert_eq!(
        run("\"n=\\(.n) o=\\(.o)\"", json!({"n": 1, "o": {"a": [1]}})),
        json!("n=1 o={\"a\":[1]}")
    );
}

#[test]
fn std_and_json_functions() {
    assert_eq!(run("length", json!([1, 2, 3])), json!(3));
    assert_eq!(run("length", json!("héllo")), json!(5));
    assert_eq!(run("@base64", json!("hello")), json!("aGVsbG8="));
    assert_eq!(run("@base64d", json!("aGVsbG8=")), json!("hello"));
    assert_eq!(
        run("tojson", json!({"a": [1, "x"]})),
        json!("{\"a\":[1,\"x\"]}")
    );
    assert_eq!(run("fromjson", json!("{\"a\":1}")), json!({"a": 1}));
    assert_eq!(run("map(. * 2)", json!([1, 2])), json!([2, 4]));
    assert_eq!(run("select(.a > 1)", json!({"a": 0})), Value::Null);
    assert_eq!(
        run("[.[] | select(startswith(\"a\"))]", json!(["ab", "b"])),
        json!(["ab"])
    );
    assert_eq!(run("test(\"^a.c$\")", json!("abc")), json!(true));
    assert_eq!(run("gsub(\"-\"; \"_\")", json!("a-b-c")), json!("a_b_c"));
    assert_eq!(run("split(\",\")", json!("a,b")), json!(["a", "b"]));
    assert_eq!(
        run("\"2015-03-05T23:51:47Z\" | fromdateiso8601", Value::Null),
        json!(1425599507)
    );
    assert_eq!(
        run("1425599507 | todate", Value::Null),
        json!("2015-03-05T23:51:47Z")
    );
    assert_eq!(run("[limit(2; .[])]", json!([1, 2, 3])), json!([1, 2]));
    assert_eq!(
        run("getpath([\"a\", \"b\"])", json!({"a": {"b": 4}})),
        json!(4)
    );
    assert_eq!(run("[paths]", json!({"a": [1]})), json!([["a"], ["a", 0]]));
    assert_eq!(
        run("to_entries", json!({"k": 1})),
        json!([{"key": "k", "value": 1}])
    );
    assert!(run("now", Value::Null).is_number());
}

#[test]
fn process_environment_is_not_exposed() {
    assert_eq!(run("env", Value::Null), json!({}));
    assert_eq!(run("env.PATH", Value::Null), Value::Null);
    assert_eq!(run("1 | stderr", Value::Null), json!(1));
    assert_eq!(run("1 | debug | debug(\"x\")", Value::Null), json!(1));
}

/// Small limits, so that hostile expressions stop quickly; unit tests install no memory
/// probe, so nothing here may allocate much in one step (`core/tests/it/budget.rs` does).
fn bounded<R>(f: impl FnOnce() -> R) -> R {
    crate::budget::with_limits(
        crate::budget::Limits {
            max_steps: 200_000,
            max_memory: 32 << 20,
        },
        f,
    )
}

#[test]
fn endless_expressions_run_out_of_steps() {
    for src in [
        "def f: f; f",
        "last(range(1e10))",
        "[range(1e12)]",
        "[repeat(.)]",
        "[limit(1e9; repeat(1))]",
        "last(range(0; 1; 0))",
        "until(false; .)",
    ] {
        let e = bounded(|| eval(src, &json!(1), &Vars::new())).unwrap_err();
        assert_eq!(e.expression, src);
        assert_eq!(
            e.message, "exceeded its budget of 200000 steps (setting expr_max_steps)",
            "{src}"
        );
    }
}

#[test]
fn deep_recursion_is_an_error_not_an_abort() {
    // `def f(x): f([x]); f(.)` recurses in tail position and runs out of memory instead
    // (`core/tests/it/budget.rs`).
    for src in ["def f: [f]; f", "def f: 1 + f; f", "[def f: f + 1; f]"] {
        let e = crate::budget::with_limits(
            crate::budget::Limits {
                max_steps: u64::MAX,
                max_memory: u64::MAX,
            },
            || eval(src, &json!(1), &Vars::new()),
        )
        .unwrap_err();
        assert!(e.message.contains("too deeply"), "{src}: {}", e.message);
    }
}

#[test]
fn long_pipes_evaluate_on_the_evaluation_stack() {
    let src = format!("1{}", " | .".repeat(1000));
    assert_eq!(eval(&src, &Value::Null, &Vars::new()).unwrap(), json!(1));
    let longest = format!("1{}", " | .".repeat((MAX_SOURCE_LEN - 1) / 4));
    assert!(longest.len() <= MAX_SOURCE_LEN);
    // Whatever it answers, it answers: no abort.
    let _ = eval(&longest, &Value::Null, &Vars::new());
    check(&longest, &[]).unwrap();
}

#[test]
fn text_too_long_or_nested_too_deeply_is_refused_before_parsing() {
    let long = format!("\"{}\"", "a".repeat(MAX_SOURCE_LEN));
    let e = check(&long, &[]).unwrap_err();
    assert!(e.message.contains("at most 65536"), "{}", e.message);
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    for e in [
        check(&deep, &[]).unwrap_err(),
        eval(&deep, &Value::Null, &Vars::new()).unwrap_err(),
    ] {
        assert!(
            e.message
                .contains("nested more than 256 levels deep (at offset 256)"),
            "{}",
            e.message
        );
    }
    // Brackets inside a string are text; an interpolation inside one is code again.
    let text = format!("\"{}\"", "[".repeat(300));
    assert_eq!(
        eval(&text, &Value::Null, &Vars::new()).unwrap(),
        json!("[".repeat(300))
    );
    let interpolated = format!("\"\\({}1{})\"", "(".repeat(300), ")".repeat(300));
    assert!(check(&interpolated, &[]).is_err());
    // Just under the limit is fine.
    let fine = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    check(&fine, &[]).unwrap();
}

#[test]
fn results_that_share_parts_are_charged_for_every_node() {
    let e = bounded(|| {
        eval(
            "reduce range(40) as $i ([1]; [., .])",
            &Value::Null,
            &Vars::new(),
        )
    })
    .unwrap_err();
    assert_eq!(
        e.message,
        "its result exceeded its memory budget of 32 MiB (setting expr_max_memory)"
    );
}

#[test]
fn a_budget_error_faults_like_an_expression_error() {
    let e = bounded(|| eval("def f: f; f", &Value::Null, &Vars::new())).unwrap_err();
    let w = WorkflowError::from(e);
    assert!(w.type_.ends_with("/expression"), "{}", w.type_);
    assert!(w
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("`def f: f; f`") && d.contains("expr_max_steps")));
}

#[test]
fn first_output_or_null() {
    assert_eq!(run(".[]", json!([1, 2])), json!(1));
    assert_eq!(run("empty", json!(1)), Value::Null);
    assert_eq!(
        eval_all(".[]", &json!([1, 2]), &Vars::new()).unwrap(),
        vec![json!(1), json!(2)]
    );
}

#[test]
fn null_input() {
    assert_eq!(run(".", Value::Null), Value::Null);
    assert_eq!(run(".a.b", Value::Null), Value::Null);
    assert_eq!(run(".a + [1]", Value::Null), json!([1]));
}

#[test]
fn numbers_keep_their_kind() {
    assert_eq!(run(".", json!(1)).to_string(), "1");
    assert_eq!(run(". + 1", json!(1)).to_string(), "2");
    assert_eq!(run(".", json!(1.5)).to_string(), "1.5");
    assert_eq!(run(". * 2", json!(0.25)).to_string(), "0.5");
    assert_eq!(run("10 / 4", Value::Null).to_string(), "2.5");
    // jq prints integral results without a fraction; durations need integers
    assert_eq!(run("10 / 2", Value::Null).to_string(), "5");
    assert_eq!(run("1.5 * 2", Value::Null).to_string(), "3");
    assert_eq!(run(".", json!(-7)).to_string(), "-7");
    assert_eq!(run(".", json!(i64::MAX)), json!(i64::MAX));
    assert_eq!(run(".", json!(u64::MAX)), json!(u64::MAX));
    assert_eq!(
        run(". + 1", json!(i64::MAX)),
        json!(9_223_372_036_854_775_808_u64)
    );
    assert_eq!(run(".", json!(1e300)), json!(1e300));
    assert_eq!(run("100000000000000000000000000", Value::Null), json!(1e26));
    assert_eq!(run("nan", Value::Null), Value::Null);
    assert_eq!(run("infinite", Value::Null), json!(f64::MAX));
}

#[test]
fn objects_keep_key_order() {
    let input = json!({"z": 1, "a": 2, "m": {"y": 1, "b": 2}});
    let out = run(".", input.clone());
    assert_eq!(
        serde_json::to_string(&out).unwrap(),
        serde_json::to_string(&input).unwrap()
    );
    let out = run("{z: 1, a: 2} + {b: 3}", Value::Null);
    assert_eq!(
        serde_json::to_string(&out).unwrap(),
        r#"{"z":1,"a":2,"b":3}"#
    );
}

#[test]
fn undeclared_variable_is_a_compile_error() {
    let e = eval("$missing", &Value::Null, &Vars::new()).unwrap_err();
    assert_eq!(e.expression, "$missing");
    assert!(
        e.message.contains("undefined variable `$missing`"),
        "{}",
        e.message
    );
    assert!(check("$missing", &["context"]).is_err());
    assert!(check("$context.a", &["context"]).is_ok());
    assert!(check("$context.a", &["$context"]).is_ok());
    let e = check("nosuchfn(1)", &[]).unwrap_err();
    assert!(
        e.message.contains("undefined filter `nosuchfn/1`"),
        "{}",
        e.message
    );
}

#[test]
fn syntax_errors_are_reported() {
    for src in [
        "{ a: ",
        ".a +",
        "(.a",
        "[1, 2",
        "\"abc",
        ".a ]",
        "if . then 1",
    ] {
        let e = check(src, &[]).unwrap_err();
        assert!(
            e.message.starts_with("syntax error: expected"),
            "{src}: {}",
            e.message
        );
        assert!(eval(src, &Value::Null, &Vars::new()).is_err());
    }
    let e = check("(.a", &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "expression `(.a`: syntax error: expected closing parenthesis at end of input"
    );
}

#[test]
fn runtime_errors_are_reported() {
    let e = run_err("1 + \"a\"", Value::Null);
    assert_eq!(e, "cannot calculate 1 + \"a\"");
    assert_eq!(run_err("error(\"Boom\")", Value::Null), "Boom");
    assert_eq!(run_err("error({code: 1})", Value::Null), "{\"code\":1}");
    assert!(run_err(".a", json!([1])).starts_with("cannot index"));
    assert_eq!(
        run_err("halt_error(3)", json!("x")),
        "program halted with exit code 3"
    );
    // an error after the first output is not reached
    assert_eq!(run("1, error(\"late\")", Value::Null), json!(1));
    assert_eq!(run("try error(\"x\") catch .", Value::Null), json!("x"));
}

fn run_err(src: &str, input: Value) -> String {
    eval(src, &input, &Vars::new()).unwrap_err().message
}

#[test]
fn results_nested_too_deep_are_refused() {
    let ok = format!("reduce range({}) as $i (0; [.])", MAX_DEPTH);
    let v = run(&ok, Value::Null);
    let text = serde_json::to_string(&v).unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_ok(),
        "the event log must read it back"
    );
    let deep = format!("reduce range({}) as $i (0; [.])", MAX_DEPTH + 1);
    assert!(run_err(&deep, Value::Null).contains("nested deeper"));
}

#[test]
fn non_string_keys_are_refused() {
    assert!(run_err("{(1): 2}", Value::Null).contains("is not a string"));
}

#[test]
fn dollar_brace_handling() {
    let input = json!({"petId": 3, "name": "rex"});
    assert_eq!(
        eval_string("${ .petId }", &input, &Vars::new()).unwrap(),
        json!(3)
    );
    assert_eq!(
        eval_string("plain", &input, &Vars::new()).unwrap(),
        json!("plain")
    );
    assert_eq!(
        eval_bare(".name", &input, &Vars::new()).unwrap(),
        json!("rex")
    );
    assert_eq!(
        eval_bare("${.name}", &input, &Vars::new()).unwrap(),
        json!("rex")
    );
    let tpl = json!({"id": "${ .petId }", "tag": "pet-${ .petId }", "list": ["${ .name }", 1]});
    let out = eval_value(&tpl, &input, &Vars::new()).unwrap();
    assert_eq!(
        out,
        json!({"id": 3, "tag": "pet-${ .petId }", "list": ["rex", 1]})
    );
    assert!(eval_condition("${ .petId > 2 }", &input, &Vars::new()).unwrap());
    assert!(!eval_condition(".missing", &input, &Vars::new()).unwrap());
    assert!(eval_condition(".name", &input, &Vars::new()).unwrap());
}

#[test]
fn expression_error_maps_to_workflow_error() {
    let e: WorkflowError = eval("1 + \"a\"", &Value::Null, &Vars::new())
        .unwrap_err()
        .into();
    assert_eq!(e.status, 400);
    assert!(e.type_.ends_with("/expression"), "{}", e.type_);
}
