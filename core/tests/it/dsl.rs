//! The DSL loader against the spec's material and our own fixtures, and the checked-in schemas.
//!
//! - every example, CTK workflow and invalid file of the spec: our verdict (load and validate)
//!   agrees with the spec's own JSON Schema; what we accept keeps every key when serialised
//!   back (Tier 0 of `conformance.md`) and satisfies our generated schema;
//! - `tests/fixtures/invalid/*.yaml`: each yields a problem at the pointer its `# expect:` lines
//!   name;
//! - `schemas/*.json` equal what the code generates (`CAIRN_UPDATE_SCHEMAS=1` rewrites them).

use cairn_core::dsl::{self, SourceFormat};
use serde_json::Value;

fn spec_schema(spec: &std::path::Path) -> jsonschema::Validator {
    let text = std::fs::read_to_string(spec.join("schema/workflow.yaml")).expect("spec schema");
    let schema: Value = serde_norway::from_str(&text).expect("spec schema is YAML");
    jsonschema::draft202012::new(&schema).expect("spec schema compiles")
}

/// Keys (and scalar values) of `src` missing or different in `out`.
fn lost(src: &Value, out: &Value, pointer: &str, acc: &mut Vec<String>) {
    match (src, out) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{pointer}/{k}");
                match b.get(k) {
                    Some(w) => lost(v, w, &p, acc),
                    None => acc.push(format!("{p} (missing)")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost(v, w, &format!("{pointer}/{i}"), acc);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => acc.push(format!("{pointer}: {a} became {b}")),
    }
}

#[test]
fn spec_corpus_agrees_with_the_spec_schema() {
    let Some(spec) = crate::common::spec_dir() else {
        return;
    };
    let theirs = spec_schema(&spec);
    let ours = jsonschema::draft202012::new(&dsl::json_schema()).expect("our schema compiles");
    let corpora = [
        (
            "examples",
            crate::common::yaml_files(&spec.join("examples"), "examples"),
            true,
        ),
        ("ctk", crate::common::ctk_workflows(&spec), true),
        (
            "invalid",
            crate::common::yaml_files(&spec.join("invalid"), "invalid"),
            false,
        ),
    ];
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for (label, docs, expect_valid) in &corpora {
        let mut agree = 0;
        for doc in docs {
            let value: Option<Value> = serde_norway::from_str(&doc.text).ok();
            let spec_ok = value.as_ref().is_some_and(|v| theirs.is_valid(v));
            let result = dsl::load_str(&doc.text, SourceFormat::Yaml);
            if spec_ok != *expect_valid {
                failures.push(format!(
                    "{}: the spec schema says valid={spec_ok}",
                    doc.name
                ));
            }
            match &result {
                Err(e) if spec_ok => failures.push(format!(
                    "{}: we reject what the spec accepts:\n{e}",
                    doc.name
                )),
                Ok(_) if !spec_ok => {
                    failures.push(format!("{}: we accept what the spec rejects", doc.name))
                }
                _ => agree += 1,
            }
            if let (Ok(w), Some(src)) = (&result, &value) {
                let out = serde_json::to_value(w).expect("serialisable");
                let mut acc = Vec::new();
                lost(src, &out, "", &mut acc);
                if !acc.is_empty() {
                    failures.push(format!("{}: round trip loses data: {acc:?}", doc.name));
                }
                if !ours.is_valid(&out) {
                    let errs: Vec<String> = ours
                        .iter_errors(&out)
                        .take(3)
                        .map(|e| format!("{} at {}", e, e.instance_path()))
                        .collect();
                    failures.push(format!(
                        "{}: our generated schema rejects it: {errs:?}",
                        doc.name
                    ));
                }
            }
            if let Err(e) = &result {
                println!("{} rejected:\n{e}", doc.name);
                // Every problem is located.
                for p in &e.problems {
                    if p.line.is_none() {
                        failures.push(format!("{}: problem without a line: {p}", doc.name));
                    }
                }
            }
        }
        summary.push(format!("{label}: {agree}/{} agree", docs.len()));
    }
    println!("{}", summary.join(", "));
    assert_eq!(corpora[0].1.len(), 66, "examples");
    assert_eq!(corpora[1].1.len(), 21, "ctk workflows");
    assert_eq!(corpora[2].1.len(), 3, "invalid files");
    assert!(
        failures.is_empty(),
        "{} disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn own_invalid_fixtures_report_the_expected_pointer() {
    let dir = crate::common::repo_root().join("tests/fixtures/invalid");
    let docs = crate::common::yaml_files(&dir, "fixtures/invalid");
    assert!(docs.len() >= 5, "fixtures missing in {}", dir.display());
    let mut failures = Vec::new();
    for doc in &docs {
        let expected: Vec<&str> = doc
            .text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::trim)
            .collect();
        assert!(
            !expected.is_empty(),
            "{}: no `# expect: POINTER` line",
            doc.name
        );
        match dsl::load_str(&doc.text, SourceFormat::Yaml) {
            Ok(_) => failures.push(format!("{}: accepted", doc.name)),
            Err(e) => {
                println!("{} rejected:\n{e}", doc.name);
                let got: Vec<&str> = e.problems.iter().map(|p| p.pointer.as_str()).collect();
                for want in &expected {
                    if !got.contains(want) {
                        failures.push(format!("{}: no problem at {want}; got:\n{e}", doc.name));
                    }
                }
                if e.problems.iter().any(|p| p.line.is_none()) {
                    failures.push(format!("{}: a problem has no line:\n{e}", doc.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn checked_in_schemas_are_up_to_date() {
    let dir = crate::common::repo_root().join("schemas");
    let update = std::env::var("CAIRN_UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (file, schema) in cairn_core::schemas::all() {
        let path = dir.join(file);
        let text = serde_json::to_string_pretty(&schema).expect("serialisable") + "\n";
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            if update {
                std::fs::create_dir_all(&dir).expect("schemas dir");
                std::fs::write(&path, text).expect("write schema");
                eprintln!("rewrote {}", path.display());
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run `CAIRN_UPDATE_SCHEMAS=1 cargo test -p cairn-core --test dsl`): {stale:?}"
    );
}
