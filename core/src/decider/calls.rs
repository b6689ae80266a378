//! Calls: building a call's fully resolved request (HTTP, OpenAPI, functions, sub-workflows),
//! with secrets sealed, before it is recorded and sent.

use super::*;

impl Decider {
    pub(super) fn begin_call(
        &self,
        s: &mut RunState,
        f: &Frame,
        call: &CallTask,
        vars: &Vars,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) -> Result<(), WorkflowError> {
        let activity = if self.call_mentions_secrets(f) {
            self.sealed_call(f, call, vars, inp)?
        } else {
            self.build_call(f, call, vars)?
        };
        let attempt = self.attempt_of(s, f.parent);
        let idempotency_key = match s.compensation.as_ref().and_then(|c| c.current) {
            // A compensation's call is keyed by the activation it compensates, so the service
            // can tie the undo to what it undoes.
            Some((top, entry)) => {
                let task = s.compensable.get(entry).map_or(f.id, |e| e.task);
                if top == f.id {
                    format!("{}:compensate:{task}:{attempt}", s.run_id)
                } else {
                    format!("{}:compensate:{task}:{}:{attempt}", s.run_id, f.id)
                }
            }
            None => format!("{}:{}:{}", s.run_id, f.id, attempt),
        };
        Self::emit(
            s,
            out,
            RunEvent::ActivityScheduled {
                id: f.id,
                attempt,
                idempotency_key,
                call: activity,
            },
        );
        Ok(())
    }

    /// Whether a call task's arguments, or the authentication it refers to, may read
    /// `$secrets` (a task's position is its JSON pointer in the definition).
    pub(super) fn call_mentions_secrets(&self, f: &Frame) -> bool {
        self.auths_mention_secrets
            || self
                .def_value
                .pointer(&f.position)
                .is_none_or(|task| sealed::mentions_secrets(&task.to_string()))
    }

    /// A call whose arguments read `$secrets`, built so that no secret value is recorded
    /// ([`crate::sealed`]): the arguments are built once with placeholders for the secrets
    /// (what is recorded) and once with their values (to check that revealing the placeholders
    /// gives exactly that). A secret transformed by an expression cannot be revealed later, so
    /// the call faults instead of recording the transformed value. Errors come from the
    /// placeholder build, which holds no secret, never from the real one.
    pub(super) fn sealed_call(
        &self,
        f: &Frame,
        call: &CallTask,
        vars: &Vars,
        inp: &mut DecideInput<'_>,
    ) -> Result<ActivityCall, WorkflowError> {
        let seal = sealed::seal_from((inp.entropy)());
        let mut masked_vars = vars.clone();
        masked_vars.insert(
            "secrets".into(),
            Value::Object(sealed::placeholders(inp.secrets, &seal)),
        );
        let mut masked = self.build_call(f, call, &masked_vars)?;
        let real = self.build_call(f, call, vars).map_err(|_| {
            WorkflowError::new(
                ErrorKind::Expression,
                "building the call's arguments with the values of the secrets failed (the \
                 message is withheld: it could quote a secret)",
            )
            .with_title("Secret used in an unsupported way")
        })?;
        if masked == real {
            // The secrets it mentions do not reach the arguments.
            return Ok(real);
        }
        match &mut masked {
            ActivityCall::Http(r) => r.seal = Some(seal.clone()),
            ActivityCall::OpenApi(r) => r.seal = Some(seal.clone()),
            ActivityCall::Function { seal: sl, .. } => *sl = Some(seal.clone()),
        }
        let revealed = sealed::Revealer::new(Some(&seal), inp.secrets).call(&masked);
        if revealed.as_ref() != Ok(&real) {
            return Err(WorkflowError::new(
                ErrorKind::Configuration,
                "an argument of this call is derived from $secrets by an expression that \
                 changes the secret (e.g. ascii_downcase, length, @base64, a comparison); \
                 secret values are never recorded, so they can only be used as they are: \
                 as a whole value, or inserted into a string",
            )
            .with_title("Secret used in an unsupported way"));
        }
        Ok(masked)
    }

    pub(super) fn build_call(
        &self,
        f: &Frame,
        call: &CallTask,
        vars: &Vars,
    ) -> Result<ActivityCall, WorkflowError> {
        Ok(match call {
            CallTask::Http(args) => ActivityCall::Http(self.http_request(args, &f.input, vars)?),
            CallTask::OpenApi(args) => {
                let raw_uri = args.document.endpoint.uri();
                let document = match expr::eval_string(raw_uri, &f.input, vars)? {
                    Value::String(u) => u,
                    other => {
                        return Err(WorkflowError::new(
                            ErrorKind::Expression,
                            format!("openapi document expression must yield a string, got {other}"),
                        ))
                    }
                };
                let parameters = match &args.parameters {
                    Some(p) => expr::eval_value(&Value::Object(p.clone()), &f.input, vars)?,
                    None => Value::Object(Map::new()),
                };
                let auth = match args
                    .authentication
                    .as_ref()
                    .or(args.document.endpoint.authentication())
                {
                    Some(a) => Some(self.http_auth(a, &f.input, vars)?),
                    None => None,
                };
                ActivityCall::OpenApi(crate::events::OpenApiRequest {
                    document,
                    operation_id: args.operation_id.clone(),
                    parameters,
                    output: args.output.unwrap_or_default(),
                    redirect: args.redirect.unwrap_or(false),
                    auth,
                    seal: None,
                })
            }
            CallTask::Function { name, with } => {
                if self
                    .def
                    .use_
                    .as_ref()
                    .and_then(|u| u.functions.as_ref())
                    .is_some_and(|m| m.contains_key(name))
                {
                    return Err(not_supported("functions from use.functions", &f.position));
                }
                if name.contains('@') {
                    return Err(not_supported("functions from catalogs", &f.position));
                }
                let arguments = match with {
                    Some(w) => expr::eval_value(&Value::Object(w.clone()), &f.input, vars)?,
                    None => Value::Object(Map::new()),
                };
                ActivityCall::Function {
                    name: name.clone(),
                    arguments,
                    input: f.input.clone(),
                    seal: None,
                }
            }
            other => {
                return Err(not_supported(
                    &format!("call: {}", other.name()),
                    &f.position,
                ))
            }
        })
    }

    /// A sub-workflow's input. It is recorded twice (`ChildRunRequested`, the child's
    /// `RunStarted`) and the child is a run of its own, so it may not carry anything derived
    /// from `$secrets`: the child reads `$secrets` itself. Checked by evaluating it with
    /// placeholders for the secrets, which must give the same input.
    pub(super) fn child_input(
        &self,
        input_expr: &Value,
        task_input: &Value,
        vars: &Vars,
        inp: &DecideInput<'_>,
    ) -> Result<Value, WorkflowError> {
        if !sealed::mentions_secrets(&input_expr.to_string()) {
            return Ok(expr::eval_value(input_expr, task_input, vars)?);
        }
        // Nothing sealed is recorded here, so any seal does.
        let seal = sealed::seal_from(0);
        let mut masked_vars = vars.clone();
        masked_vars.insert(
            "secrets".into(),
            Value::Object(sealed::placeholders(inp.secrets, &seal)),
        );
        let masked = expr::eval_value(input_expr, task_input, &masked_vars)?;
        let real = expr::eval_value(input_expr, task_input, vars).ok();
        if sealed::value_has_placeholder(&masked, &seal) || real.as_ref() != Some(&masked) {
            return Err(WorkflowError::new(
                ErrorKind::Configuration,
                "the input of a sub-workflow must not be derived from $secrets: it is \
                 recorded in both runs' histories, which secrets never enter; the \
                 sub-workflow can read $secrets itself",
            )
            .with_title("Secret used in an unsupported way"));
        }
        Ok(masked)
    }

    pub(super) fn http_request(
        &self,
        args: &dsl::HttpArgs,
        input: &Value,
        vars: &Vars,
    ) -> Result<HttpRequest, WorkflowError> {
        let raw_uri = args.endpoint.uri();
        let uri = if expr::is_expression(raw_uri) {
            match expr::eval_string(raw_uri, input, vars)? {
                Value::String(u) => u,
                other => {
                    return Err(WorkflowError::new(
                        ErrorKind::Expression,
                        format!("endpoint expression must yield a string, got {other}"),
                    ))
                }
            }
        } else {
            crate::uri::expand_template(raw_uri, input).map_err(|e| {
                WorkflowError::new(
                    ErrorKind::Configuration,
                    format!("endpoint `{raw_uri}`: {e}"),
                )
            })?
        };
        let pairs =
            |v: &Option<Value>, what: &str| -> Result<Vec<(String, String)>, WorkflowError> {
                let Some(v) = v else { return Ok(Vec::new()) };
                let v = match v {
                    Value::String(src) => expr::eval_bare(src, input, vars)?,
                    other => expr::eval_value(other, input, vars)?,
                };
                match v {
                    Value::Object(o) => Ok(o
                        .into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k, scalar_text(&v)))
                        .collect()),
                    Value::Null => Ok(Vec::new()),
                    other => Err(WorkflowError::new(
                        ErrorKind::Expression,
                        format!("{what} must be an object, got {other}"),
                    )),
                }
            };
        let headers = pairs(&args.headers, "headers")?;
        let query = pairs(&args.query, "query")?;
        let body = match &args.body {
            Some(b) => Some(expr::eval_value(b, input, vars)?),
            None => None,
        };
        let auth = match args.endpoint.authentication() {
            Some(a) => Some(self.http_auth(a, input, vars)?),
            None => None,
        };
        Ok(HttpRequest {
            method: args.method.to_uppercase(),
            uri,
            headers,
            query,
            body,
            output: args.output.unwrap_or_default(),
            redirect: args.redirect.unwrap_or(false),
            auth,
            seal: None,
        })
    }

    pub(super) fn http_auth(
        &self,
        a: &AuthenticationPolicy,
        input: &Value,
        vars: &Vars,
    ) -> Result<HttpAuth, WorkflowError> {
        let policy = match &a.use_ {
            Some(name) => self
                .def
                .use_
                .as_ref()
                .and_then(|u| u.authentications.as_ref())
                .and_then(|m| m.get(name))
                .ok_or_else(|| {
                    WorkflowError::new(
                        ErrorKind::Configuration,
                        format!("authentication `{name}` is not defined in use.authentications"),
                    )
                })?,
            None => a,
        };
        let text = |v: &Option<String>| -> Result<String, WorkflowError> {
            match v {
                Some(s) => Ok(scalar_text(&expr::eval_string(s, input, vars)?)),
                None => Ok(String::new()),
            }
        };
        if let Some(b) = &policy.basic {
            return Ok(match &b.use_ {
                Some(secret) => HttpAuth::BasicSecret {
                    secret: secret.clone(),
                },
                None => HttpAuth::Basic {
                    username: text(&b.username)?,
                    password: text(&b.password)?,
                },
            });
        }
        if let Some(b) = &policy.bearer {
            return Ok(match &b.use_ {
                Some(secret) => HttpAuth::BearerSecret {
                    secret: secret.clone(),
                },
                None => HttpAuth::Bearer {
                    token: text(&b.token)?,
                },
            });
        }
        let scheme = if policy.digest.is_some() {
            "digest"
        } else if policy.oauth2.is_some() {
            "oauth2"
        } else if policy.oidc.is_some() {
            "oidc"
        } else {
            "empty"
        };
        Err(WorkflowError::new(
            ErrorKind::Configuration,
            format!("{scheme} authentication is not supported yet"),
        )
        .with_title("Not supported"))
    }
}
