//! Hand-written serde: the DSL tells task kinds, flow directives and list items apart by
//! their keys or values, which derived (`untagged`) impls do badly (they lose the real error).

use std::fmt;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::{self, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::*;

/// Deserializes a present field as `Some`, so that an explicit `null` is an error rather than
/// the same as an absent field.
pub(super) fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Implements `Deserialize` for an enum that is either a string or an object, decoding the object
/// through the same deserializer so that error paths are kept.
macro_rules! string_or_object {
    ($ty:ident, $str_variant:ident, $obj_variant:ident, $inner:ty, $what:literal) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: ::serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                        Ok($ty::$str_variant(s.to_owned()))
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        m: A,
                    ) -> Result<$ty, A::Error> {
                        <$inner as ::serde::Deserialize>::deserialize(
                            ::serde::de::value::MapAccessDeserializer::new(m),
                        )
                        .map($ty::$obj_variant)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
pub(super) use string_or_object;

impl Serialize for FlowDirective {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            FlowDirective::Continue => "continue",
            FlowDirective::Exit => "exit",
            FlowDirective::End => "end",
            FlowDirective::Goto(t) => t,
        })
    }
}

impl<'de> Deserialize<'de> for FlowDirective {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "continue" => FlowDirective::Continue,
            "exit" => FlowDirective::Exit,
            "end" => FlowDirective::End,
            _ => FlowDirective::Goto(s),
        })
    }
}

impl Serialize for TaskList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in &self.0 {
            let mut m = IndexMap::new();
            m.insert(item.name.as_str(), &item.task);
            seq.serialize_element(&m)?;
        }
        seq.end()
    }
}

/// A map with exactly one entry, as the items of task lists, switches and extensions are written.
struct SingleEntry<T>(String, T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for SingleEntry<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = SingleEntry<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with exactly one key, the name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let Some(name) = m.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "an item must have exactly one key (its name), found none",
                    ));
                };
                let value = m.next_value::<T>()?;
                if let Some(other) = m.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "an item must have exactly one key (its name), found `{name}` and `{other}`"
                    )));
                }
                Ok(SingleEntry(name, value))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for TaskList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of named tasks")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<TaskList, A::Error> {
                let mut out = Vec::new();
                while let Some(SingleEntry(name, task)) = s.next_element::<SingleEntry<Task>>()? {
                    out.push(NamedTask { name, task });
                }
                Ok(TaskList(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Every key a task may have, decoded in one pass so that errors keep their path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    #[serde(default, deserialize_with = "some", rename = "if")]
    if_: Option<String>,
    #[serde(default, deserialize_with = "some")]
    input: Option<Input>,
    #[serde(default, deserialize_with = "some")]
    output: Option<Output>,
    #[serde(default, deserialize_with = "some")]
    export: Option<Export>,
    #[serde(default, deserialize_with = "some")]
    timeout: Option<TimeoutOrRef>,
    #[serde(default, deserialize_with = "some")]
    then: Option<FlowDirective>,
    #[serde(default, deserialize_with = "some")]
    metadata: Option<Object>,
    #[serde(default, deserialize_with = "some")]
    call: Option<String>,
    #[serde(default, deserialize_with = "some")]
    with: Option<Value>,
    #[serde(default, deserialize_with = "some", rename = "do")]
    do_: Option<TaskList>,
    #[serde(default, deserialize_with = "some")]
    fork: Option<Fork>,
    #[serde(default, deserialize_with = "some")]
    emit: Option<Emit>,
    #[serde(default, deserialize_with = "some", rename = "for")]
    for_: Option<ForSpec>,
    #[serde(default, deserialize_with = "some", rename = "while")]
    while_: Option<String>,
    #[serde(default, deserialize_with = "some")]
    listen: Option<ListenSpec>,
    #[serde(default, deserialize_with = "some")]
    foreach: Option<SubscriptionIterator>,
    #[serde(default, deserialize_with = "some")]
    raise: Option<Raise>,
    #[serde(default, deserialize_with = "some")]
    run: Option<RunTask>,
    #[serde(default, deserialize_with = "some")]
    set: Option<Value>,
    #[serde(default, deserialize_with = "some")]
    switch: Option<Vec<SingleEntry<SwitchCaseBody>>>,
    #[serde(default, deserialize_with = "some", rename = "try")]
    try_: Option<TaskList>,
    #[serde(default, deserialize_with = "some")]
    catch: Option<Catch>,
    #[serde(default, deserialize_with = "some")]
    wait: Option<Duration>,
}

const KINDS: &str = "call, do, emit, for, fork, listen, raise, run, set, switch, try, wait";

impl RawTask {
    fn into_task<E: de::Error>(self) -> Result<Task, E> {
        let base = TaskBase {
            if_: self.if_,
            input: self.input,
            output: self.output,
            export: self.export,
            timeout: self.timeout,
            then: self.then,
            metadata: self.metadata,
        };
        let mut kinds: Vec<&str> = Vec::new();
        let present = [
            ("call", self.call.is_some()),
            ("emit", self.emit.is_some()),
            ("for", self.for_.is_some()),
            ("fork", self.fork.is_some()),
            ("listen", self.listen.is_some()),
            ("raise", self.raise.is_some()),
            ("run", self.run.is_some()),
            ("set", self.set.is_some()),
            ("switch", self.switch.is_some()),
            ("try", self.try_.is_some()),
            ("wait", self.wait.is_some()),
        ];
        kinds.extend(present.iter().filter(|(_, p)| *p).map(|(k, _)| *k));
        if kinds.is_empty() && self.do_.is_some() {
            kinds.push("do");
        }
        let kind = match kinds.as_slice() {
            [] => {
                return Err(E::custom(format!(
                    "not a task: expected exactly one of {KINDS}"
                )));
            }
            [one] => *one,
            [first, second, ..] => {
                return Err(E::custom(format!(
                    "a task has exactly one kind, found both `{first}` and `{second}`"
                )));
            }
        };
        let only = |field: &str, present: bool, owner: &str| -> Result<(), E> {
            if present && kind != owner {
                Err(E::custom(format!(
                    "`{field}` is only allowed in a `{owner}` task"
                )))
            } else {
                Ok(())
            }
        };
        only("with", self.with.is_some(), "call")?;
        only("while", self.while_.is_some(), "for")?;
        only("foreach", self.foreach.is_some(), "listen")?;
        only("catch", self.catch.is_some(), "try")?;
        if self.do_.is_some() && !matches!(kind, "do" | "for") {
            return Err(E::custom(format!("`do` is not allowed in a `{kind}` task")));
        }
        let kind = match kind {
            "call" => {
                let call = self.call.unwrap_or_default();
                TaskKind::Call(CallTask::decode(call, self.with).map_err(|(_, m)| E::custom(m))?)
            }
            "do" => TaskKind::Do(self.do_.unwrap_or_default()),
            "emit" => TaskKind::Emit(self.emit.ok_or_else(|| E::custom("missing `emit`"))?),
            "for" => TaskKind::For(ForTask {
                for_: self.for_.ok_or_else(|| E::custom("missing `for`"))?,
                while_: self.while_,
                do_: self
                    .do_
                    .ok_or_else(|| E::custom("a `for` task needs `do`"))?,
            }),
            "fork" => TaskKind::Fork(self.fork.ok_or_else(|| E::custom("missing `fork`"))?),
            "listen" => TaskKind::Listen(Listen {
                listen: self.listen.ok_or_else(|| E::custom("missing `listen`"))?,
                foreach: self.foreach,
            }),
            "raise" => TaskKind::Raise(self.raise.ok_or_else(|| E::custom("missing `raise`"))?),
            "run" => TaskKind::Run(self.run.ok_or_else(|| E::custom("missing `run`"))?),
            "set" => {
                let v = self.set.unwrap_or(Value::Null);
                match &v {
                    Value::Object(o) if !o.is_empty() => {}
                    Value::String(_) => {}
                    _ => {
                        return Err(E::custom(
                            "`set` must be a non-empty object or a runtime expression string",
                        ))
                    }
                }
                TaskKind::Set(v)
            }
            "switch" => {
                let items = self.switch.unwrap_or_default();
                if items.is_empty() {
                    return Err(E::custom("`switch` needs at least one case"));
                }
                TaskKind::Switch(
                    items
                        .into_iter()
                        .map(|SingleEntry(name, b)| SwitchCase {
                            name,
                            when: b.when,
                            then: b.then,
                        })
                        .collect(),
                )
            }
            "try" => TaskKind::Try(TryTask {
                try_: self.try_.unwrap_or_default(),
                catch: self
                    .catch
                    .ok_or_else(|| E::custom("a `try` task needs `catch`"))?,
            }),
            _ => TaskKind::Wait(self.wait.ok_or_else(|| E::custom("missing `wait`"))?),
        };
        Ok(Task { base, kind })
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawTask::deserialize(d)?.into_task()
    }
}

/// Where inside `with` a `call` task's arguments fail to decode: the JSON pointer relative to
/// `with` and the message. `None` when `task` is not a `call` task or its arguments decode.
pub(crate) fn locate_call_error(task: &Value) -> Option<(String, String)> {
    let call = task.get("call")?.as_str()?;
    CallTask::decode(call.to_string(), task.get("with").cloned()).err()
}

impl Serialize for Task {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut out = match serde_json::to_value(&self.base).map_err(S::Error::custom)? {
            Value::Object(o) => o,
            _ => Object::new(),
        };
        let mut put = |k: &str, v: Result<Value, serde_json::Error>| -> Result<(), S::Error> {
            out.insert(k.to_string(), v.map_err(S::Error::custom)?);
            Ok(())
        };
        match &self.kind {
            TaskKind::Call(c) => {
                let (call, with) = c.encode().map_err(S::Error::custom)?;
                put("call", Ok(Value::String(call)))?;
                if let Some(w) = with {
                    put("with", Ok(w))?;
                }
            }
            TaskKind::Do(l) => put("do", serde_json::to_value(l))?,
            TaskKind::Fork(f) => put("fork", serde_json::to_value(f))?,
            TaskKind::Emit(e) => put("emit", serde_json::to_value(e))?,
            TaskKind::For(f) => {
                if let Value::Object(o) = serde_json::to_value(f).map_err(S::Error::custom)? {
                    out.extend(o);
                }
            }
            TaskKind::Listen(l) => {
                if let Value::Object(o) = serde_json::to_value(l).map_err(S::Error::custom)? {
                    out.extend(o);
                }
            }
            TaskKind::Raise(r) => put("raise", serde_json::to_value(r))?,
            TaskKind::Run(r) => put("run", serde_json::to_value(r))?,
            TaskKind::Set(v) => put("set", Ok(v.clone()))?,
            TaskKind::Switch(cases) => {
                let mut items = Vec::with_capacity(cases.len());
                for c in cases {
                    let mut body = Object::new();
                    if let Some(w) = &c.when {
                        body.insert("when".into(), Value::String(w.clone()));
                    }
                    body.insert(
                        "then".into(),
                        serde_json::to_value(&c.then).map_err(S::Error::custom)?,
                    );
                    let mut m = Object::new();
                    m.insert(c.name.clone(), Value::Object(body));
                    items.push(Value::Object(m));
                }
                put("switch", Ok(Value::Array(items)))?
            }
            TaskKind::Try(t) => {
                if let Value::Object(o) = serde_json::to_value(t).map_err(S::Error::custom)? {
                    out.extend(o);
                }
            }
            TaskKind::Wait(w) => put("wait", serde_json::to_value(w))?,
        }
        out.serialize(s)
    }
}

/// The body of a switch case, as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SwitchCase")]
pub(super) struct SwitchCaseBody {
    /// Condition (a runtime expression, `${ }` optional); a case without one is the default.
    #[serde(default, deserialize_with = "some")]
    pub(super) when: Option<String>,
    /// Where to go when the case matches.
    pub(super) then: FlowDirective,
}
