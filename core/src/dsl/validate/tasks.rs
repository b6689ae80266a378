//! The checks of tasks: task lists (names, `then` targets), each kind of task, and the
//! arguments of calls and `run`.

use super::*;

impl Checker<'_> {
    pub(super) fn list(&mut self, list: &TaskList, pointer: &str, scope: &Scope) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, nt) in list.0.iter().enumerate() {
            if let Some(j) = first.get(nt.name.as_str()) {
                self.problem(
                    format!("{pointer}/{i}/{}", escape(&nt.name)),
                    format!(
                        "duplicate task name `{}`: already used by task {j} of this list",
                        nt.name
                    ),
                );
            } else {
                first.insert(&nt.name, i);
            }
        }
        for (i, nt) in list.0.iter().enumerate() {
            let p = format!("{pointer}/{i}/{}", escape(&nt.name));
            if let Some(FlowDirective::Goto(target)) = &nt.task.base.then {
                if !first.contains_key(target.as_str()) {
                    self.problem(
                        format!("{p}/then"),
                        format!("`then` refers to `{target}`, which is not a task of this list"),
                    );
                }
            }
            if let TaskKind::Switch(cases) = &nt.task.kind {
                for (j, c) in cases.iter().enumerate() {
                    if let FlowDirective::Goto(target) = &c.then {
                        if !first.contains_key(target.as_str()) {
                            self.problem(
                                format!("{p}/switch/{j}/{}/then", escape(&c.name)),
                                format!(
                                    "`then` refers to `{target}`, which is not a task of this list"
                                ),
                            );
                        }
                    }
                }
            }
            self.task(&nt.task, &p, scope);
        }
    }

    pub(super) fn task(&mut self, t: &Task, pointer: &str, scope: &Scope) {
        let b = &t.base;
        self.opt_expr(&b.if_, &format!("{pointer}/if"), scope, true);
        if let Some(i) = &b.input {
            self.input(i, &format!("{pointer}/input"), scope);
        }
        if let Some(o) = &b.output {
            self.output(o, &format!("{pointer}/output"), scope);
        }
        if let Some(o) = &b.export {
            self.output(o, &format!("{pointer}/export"), scope);
        }
        if let Some(to) = &b.timeout {
            self.timeout(to, &format!("{pointer}/timeout"), scope);
        }
        self.compensation(b, pointer);
        match &t.kind {
            TaskKind::Call(c) => self.call(c, pointer, scope),
            TaskKind::Do(l) => self.list(l, &format!("{pointer}/do"), scope),
            TaskKind::Fork(f) => self.list(&f.branches, &format!("{pointer}/fork/branches"), scope),
            TaskKind::Emit(e) => self.event_props(
                &e.event.with,
                &format!("{pointer}/emit/event/with"),
                scope,
                true,
            ),
            TaskKind::For(f) => {
                self.expr(&f.for_.in_, &format!("{pointer}/for/in"), scope, true);
                let inner = scope.with(&[
                    f.for_.each.as_deref().unwrap_or("item"),
                    f.for_.at.as_deref().unwrap_or("index"),
                ]);
                self.opt_expr(&f.while_, &format!("{pointer}/while"), &inner, true);
                self.list(&f.do_, &format!("{pointer}/do"), &inner);
            }
            TaskKind::Listen(l) => {
                self.strategy(&l.listen.to, &format!("{pointer}/listen/to"), scope);
                if let Some(it) = &l.foreach {
                    self.iterator(it, &format!("{pointer}/foreach"), scope);
                }
            }
            TaskKind::Raise(r) => {
                let p = format!("{pointer}/raise/error");
                match &r.error {
                    ErrorOrRef::Ref(name) => {
                        self.reference(name, &p, "error", "errors", |u| u.errors.as_ref())
                    }
                    ErrorOrRef::Inline(e) => self.error_def(e, &p, scope),
                }
            }
            TaskKind::Run(r) => self.run(r, &format!("{pointer}/run"), scope),
            TaskKind::Set(v) => self.values(v, &format!("{pointer}/set"), scope),
            TaskKind::Switch(cases) => {
                for (j, c) in cases.iter().enumerate() {
                    let p = format!("{pointer}/switch/{j}/{}/when", escape(&c.name));
                    self.opt_expr(&c.when, &p, scope, true);
                }
            }
            TaskKind::Try(t) => {
                self.list(&t.try_, &format!("{pointer}/try"), scope);
                let c = &t.catch;
                let p = format!("{pointer}/catch");
                let inner = scope.with(&[c.as_.as_deref().unwrap_or("error")]);
                if let Some(with) = c.errors.as_ref().and_then(|e| e.with.as_ref()) {
                    self.error_filter(with, &format!("{p}/errors/with"));
                }
                self.opt_expr(&c.when, &format!("{p}/when"), &inner, true);
                self.opt_expr(&c.except_when, &format!("{p}/exceptWhen"), &inner, true);
                match &c.retry {
                    Some(RetryOrRef::Ref(name)) => self.reference(
                        name,
                        &format!("{p}/retry"),
                        "retry policy",
                        "retries",
                        |u| u.retries.as_ref(),
                    ),
                    Some(RetryOrRef::Inline(r)) => self.retry(r, &format!("{p}/retry"), &inner),
                    None => {}
                }
                if let Some(l) = &c.do_ {
                    self.list(l, &format!("{p}/do"), &inner);
                }
            }
            TaskKind::Wait(d) => self.duration(d, &format!("{pointer}/wait"), scope),
        }
    }

    pub(super) fn error_filter(&mut self, with: &Object, pointer: &str) {
        if with.is_empty() {
            self.problem(pointer, "an error filter needs at least one property");
        }
        for (k, v) in with {
            let ok = match k.as_str() {
                "status" => is_integer(v),
                "type" | "instance" | "title" | "details" => v.is_string(),
                _ => true,
            };
            if !ok {
                let want = if k == "status" {
                    "an integer"
                } else {
                    "a string"
                };
                self.problem(
                    format!("{pointer}/{}", escape(k)),
                    format!("`{k}` must be {want}"),
                );
            }
        }
    }

    pub(super) fn string_map_or_expr(
        &mut self,
        v: &Option<Value>,
        pointer: &str,
        scope: &Scope,
        field: &str,
    ) {
        match v {
            None => {}
            Some(Value::String(s)) if expr::is_expression(s) => self.expr(s, pointer, scope, false),
            Some(Value::Object(o)) => {
                for (k, x) in o {
                    let p = format!("{pointer}/{}", escape(k));
                    match x {
                        Value::String(s) => self.expr(s, &p, scope, false),
                        _ => self.problem(p, format!("the values of `{field}` must be strings")),
                    }
                }
            }
            Some(_) => self.problem(
                pointer,
                format!("`{field}` must be an object of strings or a runtime expression"),
            ),
        }
    }

    pub(super) fn call(&mut self, c: &CallTask, pointer: &str, scope: &Scope) {
        let w = format!("{pointer}/with");
        match c {
            CallTask::Http(a) => {
                self.endpoint(&a.endpoint, &format!("{w}/endpoint"), scope);
                self.expr(&a.method, &format!("{w}/method"), scope, false);
                self.string_map_or_expr(&a.headers, &format!("{w}/headers"), scope, "headers");
                self.string_map_or_expr(&a.query, &format!("{w}/query"), scope, "query");
                if let Some(body) = &a.body {
                    self.values(body, &format!("{w}/body"), scope);
                }
            }
            CallTask::OpenApi(a) => {
                self.resource(&a.document, &format!("{w}/document"), scope);
                self.object_values(&a.parameters, &format!("{w}/parameters"), scope);
                if let Some(au) = &a.authentication {
                    self.auth(au, &format!("{w}/authentication"), scope);
                }
            }
            CallTask::Grpc(a) => {
                self.resource(&a.proto, &format!("{w}/proto"), scope);
                let host = &a.service.host;
                let host_ok = !host.is_empty()
                    && host.len() <= 63
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && host.as_bytes()[0].is_ascii_alphanumeric()
                    && host.as_bytes()[host.len() - 1].is_ascii_alphanumeric();
                if !host_ok {
                    self.problem(
                        format!("{w}/service/host"),
                        format!("invalid host `{host}`"),
                    );
                }
                if let Some(au) = &a.service.authentication {
                    self.auth(au, &format!("{w}/service/authentication"), scope);
                }
                self.object_values(&a.arguments, &format!("{w}/arguments"), scope);
            }
            CallTask::AsyncApi(a) => {
                self.resource(&a.document, &format!("{w}/document"), scope);
                if a.operation.is_some() == a.channel.is_some() {
                    self.problem(
                        &w,
                        "`call: asyncapi` has exactly one of `operation` and `channel`",
                    );
                }
                if a.message.is_some() == a.subscription.is_some() {
                    self.problem(
                        &w,
                        "`call: asyncapi` has exactly one of `message` and `subscription`",
                    );
                }
                if let Some(s) = &a.server {
                    self.object_values(&s.variables, &format!("{w}/server/variables"), scope);
                }
                if let Some(m) = &a.message {
                    self.object_values(&m.payload, &format!("{w}/message/payload"), scope);
                    self.object_values(&m.headers, &format!("{w}/message/headers"), scope);
                }
                if let Some(s) = &a.subscription {
                    let p = format!("{w}/subscription");
                    self.runtime_expression(&s.filter, &format!("{p}/filter"), scope);
                    let c = &s.consume;
                    let n = [c.amount.is_some(), c.while_.is_some(), c.until.is_some()]
                        .iter()
                        .filter(|x| **x)
                        .count();
                    if n != 1 {
                        self.problem(
                            format!("{p}/consume"),
                            "`consume` has exactly one of amount, while, until",
                        );
                    }
                    self.opt_duration(&c.for_, &format!("{p}/consume/for"), scope);
                    self.runtime_expression(&c.while_, &format!("{p}/consume/while"), scope);
                    self.runtime_expression(&c.until, &format!("{p}/consume/until"), scope);
                    if let Some(it) = &s.foreach {
                        self.iterator(it, &format!("{p}/foreach"), scope);
                    }
                }
                if let Some(au) = &a.authentication {
                    self.auth(au, &format!("{w}/authentication"), scope);
                }
            }
            CallTask::Mcp(a) => {
                match &a.parameters {
                    None => {}
                    Some(Value::String(s)) => {
                        self.expr(s, &format!("{w}/parameters"), scope, false)
                    }
                    Some(v @ Value::Object(_)) => self.values(v, &format!("{w}/parameters"), scope),
                    Some(_) => self.problem(
                        format!("{w}/parameters"),
                        "`parameters` must be an object or a runtime expression",
                    ),
                }
                self.opt_duration(&a.timeout, &format!("{w}/timeout"), scope);
                let t = &a.transport;
                if t.http.is_some() == t.stdio.is_some() {
                    self.problem(
                        format!("{w}/transport"),
                        "`transport` has exactly one of `http` and `stdio`",
                    );
                }
                if let Some(h) = &t.http {
                    self.endpoint(&h.endpoint, &format!("{w}/transport/http/endpoint"), scope);
                }
                if let Some(s) = &t.stdio {
                    self.strings(
                        &s.arguments,
                        &format!("{w}/transport/stdio/arguments"),
                        scope,
                    );
                }
            }
            CallTask::A2a(a) => {
                if let Some(r) = &a.agent_card {
                    self.resource(r, &format!("{w}/agentCard"), scope);
                }
                if let Some(e) = &a.server {
                    self.endpoint(e, &format!("{w}/server"), scope);
                }
                match &a.parameters {
                    None => {}
                    Some(Value::String(s)) => {
                        self.expr(s, &format!("{w}/parameters"), scope, false)
                    }
                    Some(Value::Object(o)) if !o.is_empty() => {
                        if let Some(v) = &a.parameters {
                            self.values(v, &format!("{w}/parameters"), scope);
                        }
                    }
                    Some(_) => self.problem(
                        format!("{w}/parameters"),
                        "`parameters` must be a non-empty object or a runtime expression",
                    ),
                }
            }
            CallTask::Function { name, with } => {
                self.object_values(with, &w, scope);
                self.function_exists(name, &format!("{pointer}/call"));
                // `name:version@catalog` names a function of a catalog, which must be declared.
                if !name.contains("://") {
                    if let Some((function, catalog)) = name.rsplit_once('@') {
                        if function.contains(':') {
                            self.reference(
                                catalog,
                                &format!("{pointer}/call"),
                                "catalog",
                                "catalogs",
                                |u| u.catalogs.as_ref(),
                            );
                        }
                    }
                }
            }
        }
    }

    /// A field whose string must be written as `${ ... }`.
    pub(super) fn runtime_expression(&mut self, s: &Option<String>, pointer: &str, scope: &Scope) {
        if let Some(s) = s {
            if expr::is_expression(s) {
                self.expr(s, pointer, scope, false);
            } else {
                self.problem(
                    pointer,
                    "expected a runtime expression written as `${ ... }`",
                );
            }
        }
    }

    pub(super) fn run(&mut self, r: &RunTask, pointer: &str, scope: &Scope) {
        if let Some(ret) = &r.return_ {
            if !PROCESS_RETURN_TYPES.contains(&ret.as_str()) {
                self.problem(
                    format!("{pointer}/return"),
                    format!(
                        "unknown return type `{ret}`: expected one of {}",
                        PROCESS_RETURN_TYPES.join(", ")
                    ),
                );
            }
        }
        let n = [
            r.container.is_some(),
            r.script.is_some(),
            r.shell.is_some(),
            r.workflow.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if n != 1 {
            self.problem(
                pointer,
                "`run` has exactly one of container, script, shell, workflow",
            );
        }
        if let Some(c) = &r.container {
            let p = format!("{pointer}/container");
            self.opt_expr(&c.name, &format!("{p}/name"), scope, false);
            self.opt_expr(&c.command, &format!("{p}/command"), scope, false);
            self.opt_expr(&c.stdin, &format!("{p}/stdin"), scope, false);
            self.strings(&c.arguments, &format!("{p}/arguments"), scope);
            self.object_values(&c.environment, &format!("{p}/environment"), scope);
            if let Some(l) = &c.lifetime {
                let lp = format!("{p}/lifetime");
                match (l.cleanup, &l.after) {
                    (ContainerCleanup::Eventually, Some(d)) => {
                        self.duration(d, &format!("{lp}/after"), scope)
                    }
                    (ContainerCleanup::Eventually, None) => {
                        self.problem(lp, "`cleanup: eventually` needs `after`")
                    }
                    (_, Some(_)) => self.problem(
                        format!("{lp}/after"),
                        "`after` is only allowed with `cleanup: eventually`",
                    ),
                    (_, None) => {}
                }
            }
        }
        if let Some(s) = &r.script {
            let p = format!("{pointer}/script");
            match (&s.code, &s.source) {
                (Some(_), None) => {}
                (None, Some(src)) => self.resource(src, &format!("{p}/source"), scope),
                _ => self.problem(&p, "`script` has exactly one of `code` and `source`"),
            }
            self.opt_expr(&s.stdin, &format!("{p}/stdin"), scope, false);
            self.strings(&s.arguments, &format!("{p}/arguments"), scope);
            self.object_values(&s.environment, &format!("{p}/environment"), scope);
        }
        if let Some(s) = &r.shell {
            let p = format!("{pointer}/shell");
            self.expr(&s.command, &format!("{p}/command"), scope, false);
            self.opt_expr(&s.stdin, &format!("{p}/stdin"), scope, false);
            self.strings(&s.arguments, &format!("{p}/arguments"), scope);
            self.object_values(&s.environment, &format!("{p}/environment"), scope);
        }
        if let Some(w) = &r.workflow {
            let p = format!("{pointer}/workflow");
            match &w.input {
                None => {}
                Some(v @ Value::Object(_)) => self.values(v, &format!("{p}/input"), scope),
                Some(_) => self.problem(format!("{p}/input"), "`input` must be an object"),
            }
        }
    }

    /// `metadata."cairn.compensate"`, Cairn's compensation extension (docs/compensation.md): it
    /// names a task of `use.functions`, and only the tasks of the workflow's `do` declare one
    /// (a compensation that declared its own would have nothing to run it).
    fn compensation(&mut self, b: &TaskBase, pointer: &str) {
        let Some(v) = b.metadata.as_ref().and_then(|m| m.get(COMPENSATE_KEY)) else {
            return;
        };
        let p = format!("{pointer}/metadata/{}", escape(COMPENSATE_KEY));
        let Some(name) = v.as_str() else {
            return self.problem(
                p,
                format!(
                    "`{COMPENSATE_KEY}` must be the name of a task of `use.functions`, not {v}"
                ),
            );
        };
        if !pointer.starts_with("/do/") {
            return self.problem(
                p,
                format!(
                    "only the tasks of the workflow's `do` may declare a compensation; this task \
                     is outside it (`{COMPENSATE_KEY}: {name}`)"
                ),
            );
        }
        let declared = self
            .use_
            .and_then(|u| u.functions.as_ref())
            .is_some_and(|m| m.contains_key(name));
        if !declared {
            self.problem(
                p,
                format!(
                    "unknown compensation `{name}`: `{COMPENSATE_KEY}` names a task of \
                     `use.functions`, and `use.functions` has no `{name}`"
                ),
            );
        }
    }
}
