//! A structural diff of two definitions by task path: which tasks were added, removed, changed
//! or moved, rather than which lines of text differ.
//!
//! A task is known by the names on its way down from the root (`checkout` then `charge`), its
//! path is the JSON pointer runs record for it (`/do/1/checkout/do/0/charge`, the form of
//! `TaskStarted.position`). A task whose own settings differ (its nested task lists aside,
//! which are compared task by task) is *changed*. Within one list, the tasks both versions have
//! keep their relative order except those that are *moved* (everything outside a longest common
//! subsequence of the two orders), so adding a task in front does not mark every later one as
//! moved. A task that disappears under one parent and appears with the same name and the same
//! settings under another is *moved* too, not removed and added.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Workflow;

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// Only in the new version.
    Added,
    /// Only in the old version.
    Removed,
    /// In both, with other settings.
    Changed,
    /// In both, at another place.
    Moved,
}

impl ChangeKind {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
            ChangeKind::Moved => "moved",
        }
    }
}

/// One task's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskChange {
    /// What happened.
    pub kind: ChangeKind,
    /// The task's path in the new version (in the old one for a removed task).
    pub path: String,
    /// The task's path in the old version, for a moved or changed task whose path differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The task's settings that differ (top-level keys of the task), for a changed task.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// The diff of two definitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionDiff {
    /// Task changes, removed ones first (by old path), then the others (by new path).
    pub tasks: Vec<TaskChange>,
    /// Top-level settings of the workflow that differ (`input`, `use`, `timeout`, ...; the
    /// document's `version` is left out, it always differs).
    pub workflow: Vec<String>,
}

impl DefinitionDiff {
    /// Whether the two versions do the same thing.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.workflow.is_empty()
    }
}

/// The diff from `old` to `new`.
pub fn diff(old: &Workflow, new: &Workflow) -> DefinitionDiff {
    let to = |w: &Workflow| serde_json::to_value(w).unwrap_or(Value::Null);
    diff_json(&to(old), &to(new))
}

/// [`diff`] of two definitions in their canonical JSON (as stored).
pub fn diff_json(old: &Value, new: &Value) -> DefinitionDiff {
    let mut out = DefinitionDiff {
        workflow: workflow_changes(old, new),
        ..Default::default()
    };
    let (a, b) = (flatten(old), flatten(new));
    let key = |t: &Flat| t.names.clone();
    let in_b: std::collections::HashMap<Vec<String>, &Flat> =
        b.iter().map(|t| (key(t), t)).collect();
    let in_a: std::collections::HashMap<Vec<String>, &Flat> =
        a.iter().map(|t| (key(t), t)).collect();
    let moved_in_list = reordered(&a, &b);

    let mut removed: Vec<&Flat> = a.iter().filter(|t| !in_b.contains_key(&t.names)).collect();
    let mut added: Vec<&Flat> = b.iter().filter(|t| !in_a.contains_key(&t.names)).collect();
    // Moves across parents: a removed and an added task with the same name and settings.
    let mut across = Vec::new();
    removed.retain(|r| {
        match added
            .iter()
            .position(|x| x.names.last() == r.names.last() && x.own == r.own)
        {
            Some(i) => {
                let x = added.remove(i);
                across.push(TaskChange {
                    kind: ChangeKind::Moved,
                    path: x.path.clone(),
                    from: Some(r.path.clone()),
                    fields: Vec::new(),
                });
                false
            }
            None => true,
        }
    });
    for r in removed {
        out.tasks.push(TaskChange {
            kind: ChangeKind::Removed,
            path: r.path.clone(),
            from: None,
            fields: Vec::new(),
        });
    }
    let mut rest = across;
    for t in &b {
        let Some(old) = in_a.get(&t.names) else {
            if added.iter().any(|x| x.path == t.path) {
                rest.push(TaskChange {
                    kind: ChangeKind::Added,
                    path: t.path.clone(),
                    from: None,
                    fields: Vec::new(),
                });
            }
            continue;
        };
        let from = (old.path != t.path).then(|| old.path.clone());
        if old.own != t.own {
            rest.push(TaskChange {
                kind: ChangeKind::Changed,
                path: t.path.clone(),
                from: from.clone(),
                fields: changed_keys(&old.own, &t.own),
            });
        }
        if moved_in_list.contains(&t.names) {
            rest.push(TaskChange {
                kind: ChangeKind::Moved,
                path: t.path.clone(),
                from,
                fields: Vec::new(),
            });
        }
    }
    rest.sort_by(|x, y| {
        x.path
            .cmp(&y.path)
            .then(x.kind.as_str().cmp(y.kind.as_str()))
    });
    out.tasks.extend(rest);
    out
}

/// A task with where it is and its own settings.
struct Flat {
    /// The names from the root down to it.
    names: Vec<String>,
    /// Its JSON pointer.
    path: String,
    /// Its settings without its nested task lists.
    own: Value,
    /// The names of its parent (the key of the list it is in) and its kind of list.
    list: (Vec<String>, &'static str),
}

/// The nested task lists of a task: the key path to each and its name in pointers.
const NESTED: &[(&[&str], &str)] = &[
    (&["do"], "do"),
    (&["try"], "try"),
    (&["catch", "do"], "catch/do"),
    (&["fork", "branches"], "fork/branches"),
];

fn flatten(def: &Value) -> Vec<Flat> {
    let mut out = Vec::new();
    if let Some(list) = def.get("do") {
        walk(list, "/do", &[], "do", &mut out);
    }
    out
}

fn walk(list: &Value, ptr: &str, parent: &[String], kind: &'static str, out: &mut Vec<Flat>) {
    let Some(items) = list.as_array() else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let Some((name, task)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let path = format!("{ptr}/{i}/{}", escape(name));
        let mut names = parent.to_vec();
        names.push(name.clone());
        let mut own = task.clone();
        let mut nested = Vec::new();
        for (keys, seg) in NESTED {
            if let Some(sub) = take_list(&mut own, keys) {
                nested.push((sub, *seg));
            }
        }
        out.push(Flat {
            names: names.clone(),
            path: path.clone(),
            own,
            list: (parent.to_vec(), kind),
        });
        for (sub, seg) in nested {
            walk(&sub, &format!("{path}/{seg}"), &names, seg, out);
        }
    }
}

/// Removes the task list at `keys` from `task` (an array of single-key objects) and returns it.
fn take_list(task: &mut Value, keys: &[&str]) -> Option<Value> {
    let (last, init) = keys.split_last()?;
    let mut cur = task;
    for k in init {
        cur = cur.get_mut(*k)?;
    }
    let obj = cur.as_object_mut()?;
    if !obj.get(*last)?.is_array() {
        return None;
    }
    obj.remove(*last)
}

/// The names of tasks kept in their list but out of their relative order.
fn reordered(a: &[Flat], b: &[Flat]) -> std::collections::HashSet<Vec<String>> {
    use std::collections::{BTreeMap, HashSet};
    /// The names in one list, in the old order and in the new one.
    type Orders<'a> = (Vec<&'a Vec<String>>, Vec<&'a Vec<String>>);
    let mut lists: BTreeMap<(Vec<String>, &str), Orders> = BTreeMap::new();
    for t in a {
        lists.entry(t.list.clone()).or_default().0.push(&t.names);
    }
    for t in b {
        lists.entry(t.list.clone()).or_default().1.push(&t.names);
    }
    let mut out = HashSet::new();
    for (x, y) in lists.values() {
        let ys: HashSet<_> = y.iter().collect();
        let xs: HashSet<_> = x.iter().collect();
        let x: Vec<_> = x.iter().filter(|n| ys.contains(n)).collect();
        let y: Vec<_> = y.iter().filter(|n| xs.contains(n)).collect();
        let kept = lcs(&x, &y);
        out.extend(
            x.iter()
                .filter(|n| !kept.contains(**n))
                .map(|n| (**n).clone()),
        );
    }
    out
}

/// The elements of a longest common subsequence of `x` and `y`.
fn lcs<T: Eq + std::hash::Hash + Clone>(x: &[T], y: &[T]) -> std::collections::HashSet<T> {
    let (n, m) = (x.len(), y.len());
    let mut t = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if x[i] == y[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, std::collections::HashSet::new());
    while i < n && j < m {
        if x[i] == y[j] {
            out.insert(x[i].clone());
            i += 1;
            j += 1;
        } else if t[i + 1][j] >= t[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let empty = Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn workflow_changes(a: &Value, b: &Value) -> Vec<String> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("do");
            if let Some(d) = o.get_mut("document").and_then(Value::as_object_mut) {
                d.remove("version");
            }
        }
        v
    };
    changed_keys(&strip(a), &strip(b))
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic on failure

    use serde_json::json;

    use super::*;

    fn wf(version: &str, tasks: Value) -> Value {
        json!({
            "document": {"dsl": "1.0.3", "namespace": "default", "name": "wf", "version": version},
            "do": tasks
        })
    }

    fn kinds(d: &DefinitionDiff) -> Vec<(String, String)> {
        d.tasks
            .iter()
            .map(|c| (c.kind.as_str().to_string(), c.path.clone()))
            .collect()
    }

    #[test]
    fn identical_definitions_have_no_diff() {
        let a = wf("1.0.0", json!([{"a": {"set": {"x": 1}}}]));
        let b = wf("2.0.0", json!([{"a": {"set": {"x": 1}}}]));
        assert!(diff_json(&a, &b).is_empty());
    }

    #[test]
    fn added_removed_changed() {
        let a = wf(
            "1.0.0",
            json!([{"a": {"set": {"x": 1}}}, {"b": {"set": {"y": 1}}}]),
        );
        let b = wf(
            "2.0.0",
            json!([{"a": {"set": {"x": 2}}}, {"c": {"wait": {"seconds": 1}}}]),
        );
        let d = diff_json(&a, &b);
        assert_eq!(
            kinds(&d),
            vec![
                ("removed".into(), "/do/1/b".into()),
                ("changed".into(), "/do/0/a".into()),
                ("added".into(), "/do/1/c".into()),
            ]
        );
        assert_eq!(d.tasks[1].fields, vec!["set".to_string()]);
    }

    #[test]
    fn inserting_in_front_moves_nothing_but_swapping_does() {
        let a = wf("1", json!([{"a": {"set": {}}}, {"b": {"set": {}}}]));
        let b = wf(
            "2",
            json!([{"n": {"set": {}}}, {"a": {"set": {}}}, {"b": {"set": {}}}]),
        );
        assert_eq!(
            kinds(&diff_json(&a, &b)),
            vec![("added".into(), "/do/0/n".into())]
        );
        let c = wf("3", json!([{"b": {"set": {}}}, {"a": {"set": {}}}]));
        let d = diff_json(&a, &c);
        assert_eq!(d.tasks.len(), 1);
        assert_eq!(d.tasks[0].kind, ChangeKind::Moved);
    }

    #[test]
    fn nested_lists_and_moves_across_parents() {
        let a = wf(
            "1",
            json!([
                {"outer": {"do": [{"inner": {"set": {"v": 1}}}]}},
                {"f": {"fork": {"branches": [{"x": {"set": {}}}], "compete": false}}},
                {"t": {"try": [{"p": {"set": {}}}], "catch": {"do": [{"h": {"set": {}}}]}}}
            ]),
        );
        let b = wf(
            "2",
            json!([
                {"outer": {"do": []}},
                {"f": {"fork": {"branches": [{"x": {"set": {"z": 1}}}], "compete": false}}},
                {"t": {"try": [{"p": {"set": {}}}], "catch": {"do": [{"h": {"set": {}}}, {"inner": {"set": {"v": 1}}}]}}}
            ]),
        );
        let d = diff_json(&a, &b);
        assert_eq!(
            d.tasks,
            vec![
                TaskChange {
                    kind: ChangeKind::Changed,
                    path: "/do/1/f/fork/branches/0/x".into(),
                    from: None,
                    fields: vec!["set".into()],
                },
                TaskChange {
                    kind: ChangeKind::Moved,
                    path: "/do/2/t/catch/do/1/inner".into(),
                    from: Some("/do/0/outer/do/0/inner".into()),
                    fields: Vec::new(),
                },
            ]
        );
    }

    #[test]
    fn workflow_settings_are_listed() {
        let a = wf("1", json!([]));
        let mut b = wf("2", json!([]));
        b["timeout"] = json!({"after": {"seconds": 5}});
        assert_eq!(diff_json(&a, &b).workflow, vec!["timeout".to_string()]);
    }
}
