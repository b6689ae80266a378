#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/ from the project's own
files (examples/, tests/fixtures/, the GraphQL documents in api/tests/). The checked-in corpus
(fuzz/corpus/<target>/) is these seeds plus what the fuzzer found, minimised with
`cargo fuzz cmin`; see docs/security/fuzzing.md. Needs PyYAML. Run from anywhere:
    python3 fuzz/seed.py
"""
import hashlib
import json
import pathlib
import re
import shutil

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
SAMPLE_INPUT = {"order": {"qty": 3, "unit": 5, "customer": "ada"}, "items": [1, 2, 3], "s": "a,b"}


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def definitions():
    files = sorted(ROOT.glob("examples/*.yaml")) + sorted(ROOT.glob("tests/fixtures/**/*.yaml"))
    for f in files:
        yield f, f.read_text()


def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            if k in ("if", "when", "except", "from", "as", "in", "while", "until") and isinstance(x, str):
                yield "${ " + x + " }" if not x.strip().startswith("${") else x
            else:
                yield from strings(x)


# jq programs using the builtins a definition is likely to use, and some hostile shapes that
# terminate (the ones that do not are recorded in docs/security/fuzzing.md).
EXPRESSIONS = [
    ".", ".order.qty * .order.unit", "[.items[] | select(. > 1)] | length",
    "reduce .items[] as $i (0; . + $i)", "[foreach .items[] as $i (0; . + $i)]",
    "to_entries | map({(.key): .value}) | add", "paths | tostring", "[paths(type == \"number\")]",
    ".s | split(\",\") | join(\"-\")", ".s | test(\"a.b\")", ".s | sub(\"a\"; \"b\")",
    ".s | gsub(\"[ab]\"; \"x\")", "@base64 \"\\(.s)\" | @base64d", "tojson | fromjson",
    "[limit(3; range(10))]", "first(range(5))", "try error(\"x\") catch .",
    "label $out | .items[] | if . > 1 then ., break $out else . end",
    "path(..)", "getpath([\"order\", \"qty\"])", "setpath([\"a\", 0]; 1)", "del(.order)",
    "[splits(\",\")]", "ascii_downcase", "@uri \"\\(.s)\"", "@csv \"\\(.items)\"", "@sh \"\\(.s)\"",
    "@html \"<\\(.s)>\"", "group_by(.) | unique_by(length)", "$input.order", "$context",
    "$secrets.api.token", "$workflow.id", "$task.name", "$runtime", "$item.id + $index",
    "$error.status", "{a: 1} * {a: {b: 2}}", "[.[]?]", ".. |= .", "def f(x): x * 2; f(3)",
    "[range(0; 10; 3)]", "todate", "1e308 * 10", "-(1e308) * 10", "nan | isnan", "infinite",
    "[.items[] | tostring | tonumber]", "ltrimstr(\"a\")", "indices(1)", "inside([1,2,3])",
    "with_entries(.value |= tostring)", "env", "input_line_number?", "$__loc__", "ltrimstr(\"x\")",
    "tostream", "fromstream(tostream)", "getpath([\"a\"]) = 3", "splits(\"a\"; \"g\")",
    "[.[] | numbers]", "min_by(.), max_by(.)", "combinations", "walk(.)", "@json", "@text",
    "if . then 1 elif . == null then 2 else 3 end", "[.items[] as [$a] | $a]",
    ". as {order: {qty: $q}} | $q", "?// ", "implode", "explode", "ascii", "tojson | length",
    "strptime(\"%Y\")", "mktime", "now | type", "input", "halt_error", "$ENV", "splits",
    "{(\"a\",\"b\"): (1,2)}", "reduce range(3) as $i (\"ab\"; . + .)", "[repeat(.; . * 2)] | first",
    # One mutation away from the hangs, blow-ups and overflows of issue 8 (`def f: f; f`,
    # `last(range(1e10))`, `[repeat(.)]`, `def f: [f]; f`): the expression budget must hold them.
    "def f: 1; f", "def f: [1]; f", "last(range(10))", "[limit(3; repeat(.))]",
    "[limit(5; recurse(. + 1))]", "reduce range(4) as $i (\"ab\"; . + .)", "[[[[[[[[1]]]]]]]]",
]

GRAPHQL = [
    "{ run(id: \"r\") { id status input events(first: 2) { position eventType data } parent { id parent { id } } } }",
    "query Q($f: RunsFilter) { runs(first: 3, filter: $f, order: DESC) { id status } }",
    "mutation($k: DefinitionKey, $i: JSON) { startRun(definition: $k, input: $i) { id } }",
    "mutation { signalRun(id: \"r\", event: {specversion: \"1.0\", id: \"1\", source: \"s\", type: \"t\"}) { id } }",
    "fragment F on Run { id parent { ...F } } { run(id: \"r\") { ...F } }",
    "query { __schema { types { name fields { name args { name type { name kind ofType { name } } } } } } }",
    "{ __type(name: \"Run\") { name fields { name } } }",
    "{ a: run(id: \"1\") { id } b: run(id: \"2\") { id } ... on Query { definition(namespace: \"n\", name: \"m\") } }",
    "query ($skip: Boolean!) { run(id: \"r\") @skip(if: $skip) { id @include(if: true) } }",
    "subscription { runEvents(id: \"r\") { position } }",
]


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    exprs = set(EXPRESSIONS)
    for f, text in definitions():
        put("dsl_yaml", text)
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        put("dsl_json", json.dumps(doc, indent=2))
        for s in strings(doc):
            t = s.strip()
            if t.startswith("${") and t.endswith("}"):
                exprs.add(t[2:-1].strip())
    for f in sorted(ROOT.glob("examples/*.json")):
        put("dsl_json", f.read_text())
    for e in sorted(exprs):
        put("expr", e.encode() + b"\0" + json.dumps(SAMPLE_INPUT).encode())
    for f in sorted(ROOT.glob("tests/fixtures/runs/*.history.json")):
        events = json.loads(f.read_text())["events"]
        rows = [{"type": e["type"], "version": "1", "data": e.get("data")} for e in events]
        put("events", json.dumps(rows))
    for q in GRAPHQL:
        put("graphql_request", q)
        put("graphql_request", json.dumps({"query": q, "variables": {"f": {"status": ["RUNNING"], "not": {"namespace": "n"}}, "k": {"namespace": "n", "name": "m"}, "i": {"x": [1, 2]}, "skip": False}}))
    # The documents the server tests send, as bodies (they name the real schema's fields, which
    # the stand-in refuses at validation: they seed the parser and the validator).
    for f in sorted(ROOT.glob("api/tests/**/*.rs")):
        for m in re.finditer(r'"((?:query|mutation|subscription)\b(?:[^"\\]|\\.)*)"', f.read_text()):
            try:
                q = json.loads('"' + m.group(1) + '"')
            except json.JSONDecodeError:
                continue
            put("graphql_request", json.dumps({"query": q, "variables": {}}))


if __name__ == "__main__":
    main()
