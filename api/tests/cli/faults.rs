//! The fault test (issue 4): three `cairn worker` processes share random seeded workflows on a
//! private PostgreSQL server while workers are killed, paused past their lease and resumed, the
//! database is crashed and restarted, and one worker's store loses the replies of appends that
//! committed. A checker then counts what was lost, duplicated, stuck or wrong (all must be 0)
//! and how long the system took to make progress again after each kind of fault.
//!
//! Procedure:
//! 1. a private PostgreSQL (`pgtmp`: `initdb` in a temporary folder, an ephemeral port; never
//!    the shared server, which other tests use while this one restarts its own);
//! 2. a sink on `127.0.0.1:0` applies each `Idempotency-Key` once, records every delivery and
//!    answers `value = run * 1000 + step`; the first attempt (`...:0`) of a call marked `flaky`
//!    gets a 503, whatever the delivery, so the number of attempts never depends on the faults;
//! 3. each run has its own workflow, drawn from the seed: sequences, `switch` branches, `for`
//!    loops, `fork`s, calls retried under `try`, `wait`s (durable timers) and `listen`s for
//!    events that the test delivers from outside with `cairn signal` at random times; every
//!    call, loop item, branch and event appends a known number to `acc`, so the test computes
//!    the output of every run;
//! 4. three workers run with `CAIRN_LEASE_TTL_MS` short; worker slot 0 also has
//!    `CAIRN_CHAOS_APPEND_LOST_REPLY` (see `cairn_runtime::store::faults`). On a seeded
//!    schedule: SIGKILL of a random worker (restarted at once, as a supervisor would), SIGSTOP
//!    of a worker for longer than its lease then SIGCONT, `pg_ctl restart -m immediate`. The
//!    schedule ends with a database restart and no worker restart after it, while runs keep
//!    starting and events keep arriving: the workers that lived through the crash must finish
//!    what was in flight and pick up new work (a fresh worker's start-up recovery would hide a
//!    run that they dropped, or a notification channel they lost);
//! 5. the workers get a deadline to finish every run, then the checker reads every history and
//!    the sink's log.
//!
//! Counted: lost (a run the store does not know, a call that never reached the sink, a step of
//! a completed run never applied), duplicated (a step applied at the sink under two keys, or
//! recorded twice in a history: a call scheduled twice, two results, a task started twice, a
//! timer fired twice, an event received twice, two ends), stuck (not ended by the deadline),
//! wrong (ended otherwise than expected, a timer fired early, a delivery with a key no history
//! knows or with two bodies). Re-deliveries under the same key are allowed (the sink dedupes).
//!
//! Environment: `CAIRN_FAULT_SEED` replays a seed (printed on every run; what the workers do
//! in between is timing and is not replayed); `CAIRN_SOAK=1` runs the long version (600 runs in
//! 5 minutes, 36 kills, 7 database restarts, 8 pauses). PostgreSQL binaries missing: skipped loudly,
//! a failure under `CI=true`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, clip_bytes, int, json_eq, now_ms, seed_from_env, soak, Rng, Sandbox};
use crate::pgtmp::PgTmp;
use crate::sink::{Sink, SinkLog, Threads};

/// Worker processes sharing the runs.
const WORKERS: usize = 3;

/// The lease of every worker (`CAIRN_LEASE_TTL_MS`; the runtime's default is 10 s).
const LEASE_TTL_MS: u64 = 2000;

/// Probability that a committed append of worker slot 0 reports an error.
const LOST_REPLY_PROBABILITY: &str = "0.05";

/// Message that `cairn_runtime::store::faults` logs for every lost reply it injects.
const INJECTED: &str = "injected fault: append committed, reply lost";

#[test]
fn faults() {
    let plan = Plan::from_env();
    let Some(pg) = PgTmp::start("fault test (faults::faults)") else {
        return;
    };
    let sandbox = Sandbox::new();
    FaultTest::new(plan, &sandbox, pg).run();
}

// ----- the plan -------------------------------------------------------------------------------

struct Plan {
    seed: u64,
    soak: bool,
    runs: u64,
    /// Length of the fault phase; runs start in its first part.
    phase: Duration,
    start_window: Duration,
    kills: usize,
    stops: usize,
    pg_restarts: usize,
    /// Time allowed after the fault phase for every run to end.
    deadline: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let soak = soak();
        let seed = seed_from_env("CAIRN_FAULT_SEED");
        if soak {
            Plan {
                seed,
                soak,
                runs: 600,
                phase: Duration::from_secs(300),
                start_window: Duration::from_secs(270),
                kills: 36,
                stops: 8,
                pg_restarts: 7,
                deadline: Duration::from_secs(120),
            }
        } else {
            Plan {
                seed,
                soak,
                runs: 60,
                phase: Duration::from_secs(30),
                start_window: Duration::from_secs(27),
                kills: 5,
                stops: 2,
                pg_restarts: 2,
                deadline: Duration::from_secs(40),
            }
        }
    }
}

// ----- workflows and what they must produce ---------------------------------------------------

/// A piece of a generated workflow. Every effect appends `run * 1000 + x` to `acc`: `x` is the
/// step of a call, or `900 + k` for the event of listen `k`.
#[derive(Debug, Clone)]
enum Node {
    Call {
        step: u64,
        flaky: bool,
    },
    Wait {
        ms: u64,
    },
    /// Calls steps `base + 1 ..= base + items`, one per item, each followed by an optional wait.
    For {
        base: u64,
        items: u64,
        flaky: bool,
        pause: Option<u64>,
    },
    /// One call per branch; the outputs come back in branch order.
    Fork {
        branches: Vec<(u64, bool)>,
    },
    /// Takes arm `run % arms.len()`.
    Switch {
        arms: Vec<Vec<Node>>,
    },
    Listen {
        k: u64,
    },
}

/// What a run does that the checker can see.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Effect {
    Step { step: u64, flaky: bool },
    Event { k: u64 },
}

struct Workflow {
    nodes: Vec<Node>,
    listens: u64,
}

fn generate(rng: &mut Rng) -> Workflow {
    let mut next_step = 1u64;
    let mut listens = 0u64;
    let mut step = |n: u64| {
        let s = next_step;
        next_step += n;
        s
    };
    fn simple(rng: &mut Rng, step: &mut dyn FnMut(u64) -> u64) -> Node {
        match rng.between(0, 9) {
            0..=4 => Node::Call {
                step: step(1),
                flaky: rng.chance(25),
            },
            5..=6 => Node::Wait {
                ms: rng.between(150, 700),
            },
            _ => {
                let items = rng.between(1, 3);
                Node::For {
                    base: step(items + 1) - 1,
                    items,
                    flaky: rng.chance(20),
                    pause: rng.chance(50).then(|| rng.between(50, 150)),
                }
            }
        }
    }
    let mut nodes = vec![Node::Call {
        step: step(1),
        flaky: false,
    }];
    for _ in 0..rng.between(3, 6) {
        let node = match rng.between(0, 9) {
            0..=4 => simple(rng, &mut step),
            5 | 6 => Node::Fork {
                branches: (0..rng.between(2, 3))
                    .map(|_| (step(1), rng.chance(25)))
                    .collect(),
            },
            7 | 8 => Node::Switch {
                arms: (0..rng.between(2, 3))
                    .map(|_| {
                        (0..rng.between(1, 2))
                            .map(|_| simple(rng, &mut step))
                            .collect()
                    })
                    .collect(),
            },
            _ if listens < 2 => {
                listens += 1;
                Node::Listen { k: listens - 1 }
            }
            _ => simple(rng, &mut step),
        };
        nodes.push(node);
    }
    Workflow { nodes, listens }
}

fn effects(nodes: &[Node], run: u64, out: &mut Vec<Effect>) {
    for node in nodes {
        match node {
            Node::Call { step, flaky } => out.push(Effect::Step {
                step: *step,
                flaky: *flaky,
            }),
            Node::Wait { .. } => {}
            Node::For {
                base, items, flaky, ..
            } => out.extend((1..=*items).map(|i| Effect::Step {
                step: base + i,
                flaky: *flaky,
            })),
            Node::Fork { branches } => out.extend(
                branches
                    .iter()
                    .map(|&(step, flaky)| Effect::Step { step, flaky }),
            ),
            Node::Switch { arms } => effects(&arms[(run % arms.len() as u64) as usize], run, out),
            Node::Listen { k } => out.push(Effect::Event { k: *k }),
        }
    }
}

impl Workflow {
    fn effects(&self, run: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        effects(&self.nodes, run, &mut out);
        out
    }

    fn expected_output(&self, run: u64) -> Value {
        let acc: Vec<u64> = self
            .effects(run)
            .iter()
            .map(|e| match e {
                Effect::Step { step, .. } => run * 1000 + step,
                Effect::Event { k } => run * 1000 + 900 + k,
            })
            .collect();
        let total: u64 = acc.iter().sum();
        json!({ "n": run, "acc": acc, "total": total })
    }

    /// The logical steps that change the sink, and the idempotency keys they take (a flaky
    /// call's first attempt fails, so it takes two).
    fn steps_and_keys(&self, run: u64) -> (Vec<u64>, usize) {
        let mut steps = Vec::new();
        let mut keys = 0;
        for e in self.effects(run) {
            if let Effect::Step { step, flaky } = e {
                steps.push(step);
                keys += 1 + usize::from(flaky);
            }
        }
        (steps, keys)
    }

    fn definition(&self, run: u64, sink: &str) -> Value {
        let mut tasks = task_list(&self.nodes, sink);
        tasks.push(json!({ "done": { "set": {
            "n": "${ .n }",
            "acc": "${ .acc }",
            "total": "${ .acc | add }",
        }}}));
        json!({
            "document": {
                "dsl": "1.0.3",
                "namespace": "faults",
                "name": format!("wf-{run}"),
                "version": "0.1.0",
            },
            "do": tasks,
        })
    }
}

/// `acc += [.value]` on the task's input: what every call (and listen, with its event) does.
const APPEND_VALUE: &str = "${ $input + {acc: ($input.acc + [.value])} }";

fn call(sink: &str, step: Value, flaky: bool, append: bool) -> Value {
    let mut body = json!({ "run": "${ .n }", "step": step });
    if flaky {
        body["flaky"] = Value::Bool(true);
    }
    let mut task = json!({
        "call": "http",
        "with": { "method": "post", "endpoint": sink, "body": body },
    });
    if append {
        task["output"] = json!({ "as": APPEND_VALUE });
    }
    if !flaky {
        return task;
    }
    json!({
        "try": [{ "attempt": task }],
        "catch": {
            "errors": { "with": { "status": 503 } },
            "retry": {
                "delay": { "milliseconds": 100 },
                "limit": { "attempt": { "count": 3 } },
            },
        },
    })
}

fn task_list(nodes: &[Node], sink: &str) -> Vec<Value> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let name = format!("t{i}");
            let task = match node {
                Node::Call { step, flaky } => call(sink, json!(step), *flaky, true),
                Node::Wait { ms } => json!({ "wait": { "milliseconds": ms } }),
                Node::For {
                    base,
                    items,
                    flaky,
                    pause,
                } => {
                    let mut body = vec![json!({
                        "item": call(sink, json!(format!("${{ {base} + $item }}")), *flaky, true)
                    })];
                    if let Some(ms) = pause {
                        body.push(json!({ "pause": { "wait": { "milliseconds": ms } } }));
                    }
                    let list: Vec<u64> = (1..=*items).collect();
                    json!({
                        "for": { "each": "item", "in": format!("${{ {} }}", json!(list)) },
                        "do": body,
                    })
                }
                Node::Fork { branches } => json!({
                    "fork": {
                        "branches": branches
                            .iter()
                            .enumerate()
                            .map(|(b, &(step, flaky))| {
                                json!({ format!("b{b}"): call(sink, json!(step), flaky, false) })
                            })
                            .collect::<Vec<_>>(),
                    },
                    "output": { "as": "${ $input + {acc: ($input.acc + map(.value))} }" },
                }),
                Node::Switch { arms } => {
                    let m = arms.len();
                    let cases: Vec<Value> = (0..m)
                        .map(|a| {
                            let mut case = json!({ "then": format!("arm{a}") });
                            if a + 1 < m {
                                case["when"] = json!(format!(".n % {m} == {a}"));
                            }
                            json!({ format!("case{a}"): case })
                        })
                        .collect();
                    let mut list = vec![json!({ "route": { "switch": cases } })];
                    for (a, arm) in arms.iter().enumerate() {
                        let mut t = json!({ "do": task_list(arm, sink) });
                        if a + 1 < m {
                            t["then"] = json!("exit");
                        }
                        list.push(json!({ format!("arm{a}"): t }));
                    }
                    json!({ "do": list })
                }
                Node::Listen { k } => json!({
                    "listen": { "to": { "one": { "with": { "type": format!("cairn.fault.k{k}") } } } },
                    "output": { "as": "${ $input + {acc: ($input.acc + [.[0].v])} }" },
                }),
            };
            json!({ name: task })
        })
        .collect()
}

/// The CloudEvent that listen `k` of run `run` waits for; its id makes a re-delivery a
/// duplicate that the run drops.
fn signal_event(run: u64, k: u64) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("fault-{run}-{k}"),
        "source": "cairn-fault-test",
        "type": format!("cairn.fault.k{k}"),
        "data": { "v": run * 1000 + 900 + k },
    })
}

// ----- worker processes -----------------------------------------------------------------------

/// One life of a worker slot: a `cairn worker` process from spawn to its end.
struct WorkerProc {
    slot: usize,
    life: usize,
    child: Child,
    spawned: i64,
    /// Its stderr, line by line, with the time each line was read.
    log: Arc<Mutex<Vec<(i64, String)>>>,
    reader: Option<JoinHandle<()>>,
    /// Paused (SIGSTOP) until then.
    stopped_until: Option<Instant>,
}

/// A worker life that ended.
struct Life {
    slot: usize,
    life: usize,
    spawned: i64,
    ended: i64,
    /// How it ended: `SIGKILL`, `SIGTERM at the end`, or `exited by itself: ...`.
    how: String,
    log: Vec<(i64, String)>,
}

impl Life {
    fn started(&self) -> bool {
        self.log.iter().any(|(_, l)| l.contains("worker started"))
    }

    fn injected(&self) -> Vec<i64> {
        self.log
            .iter()
            // The injector's own line; the engine's warnings quote the error too and must not
            // count twice
            // (which print it as `store unavailable: injected fault ...`).
            .filter(|(_, l)| l.contains(INJECTED) && !l.contains("store unavailable"))
            .map(|(at, _)| *at)
            .collect()
    }

    fn stderr(&self, max: usize) -> String {
        let all: Vec<&str> = self.log.iter().map(|(_, l)| l.as_str()).collect();
        let all = all.join("\n");
        if all.len() <= max {
            return all;
        }
        let mut start = all.len() - max;
        while !all.is_char_boundary(start) {
            start += 1;
        }
        format!("[...]\n{}", &all[start..])
    }
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ----- the test -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    Stop,
    PgRestart,
    LostReply,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kill => "SIGKILL",
            Kind::Stop => "SIGSTOP",
            Kind::PgRestart => "pg restart",
            Kind::LostReply => "lost reply",
        }
    }
}

#[derive(Debug)]
struct Fault {
    kind: Kind,
    /// When it hit (ms since epoch): the signal, the start of the restart, the injection.
    at: i64,
    detail: String,
}

#[derive(Debug, Clone)]
enum Action {
    Start(u64),
    Signal(u64, u64),
    Fault(Kind),
}

struct FaultTest<'a> {
    plan: Plan,
    sandbox: &'a Sandbox,
    pg: PgTmp,
    sink: Sink,
    rng: Rng,
    workflows: BTreeMap<u64, Workflow>,
    files: BTreeMap<u64, String>,
    ids: BTreeMap<u64, String>,
    workers: Vec<WorkerProc>,
    lives: Vec<Life>,
    faults: Vec<Fault>,
    /// Time the database took to accept connections again, per restart.
    pg_down: Vec<Duration>,
    problems: Vec<String>,
    began: Instant,
}

impl<'a> FaultTest<'a> {
    fn new(plan: Plan, sandbox: &'a Sandbox, pg: PgTmp) -> Self {
        let rng = Rng(plan.seed);
        FaultTest {
            sink: Sink::start(1000, Threads::Multi(2)),
            plan,
            sandbox,
            pg,
            rng,
            workflows: BTreeMap::new(),
            files: BTreeMap::new(),
            ids: BTreeMap::new(),
            workers: Vec::new(),
            lives: Vec::new(),
            faults: Vec::new(),
            pg_down: Vec::new(),
            problems: Vec::new(),
            began: Instant::now(),
        }
    }

    fn run(mut self) {
        let p = &self.plan;
        println!(
            "faults: seed {} (CAIRN_FAULT_SEED={} replays the workflows and the schedule){}, {} runs, \
             {} workers, lease {LEASE_TTL_MS} ms, planned {} SIGKILL, {} SIGSTOP, {} pg restart, \
             lost replies p={LOST_REPLY_PROBABILITY} on worker 0, private postgres on port {}",
            p.seed,
            p.seed,
            if p.soak { " [soak]" } else { "" },
            p.runs,
            WORKERS,
            p.kills,
            p.stops,
            p.pg_restarts,
            self.pg.port,
        );
        let sink = format!("http://127.0.0.1:{}/sink", self.sink.port);
        for n in 1..=self.plan.runs {
            let wf = generate(&mut self.rng);
            let path = self.sandbox.write(
                &format!("wf-{n}.json"),
                &serde_json::to_string_pretty(&wf.definition(n, &sink)).expect("JSON"),
            );
            self.files
                .insert(n, path.to_str().expect("a UTF-8 path").to_string());
            self.workflows.insert(n, wf);
        }
        let schedule = self.schedule();

        // The schema is created by the first client, before any worker races for it.
        let url = self.pg.url.clone();
        self.cairn_retry(&["runs", "--store", &url], "create the schema");
        for slot in 0..WORKERS {
            let w = self.spawn(slot, 0);
            self.workers.push(w);
        }

        self.began = Instant::now();
        let mut next = 0;
        loop {
            let now = self.began.elapsed();
            self.resume_paused(false);
            self.reap_exited(true);
            if next < schedule.len() && schedule[next].0 <= now {
                let action = schedule[next].1.clone();
                next += 1;
                self.act(action);
                continue;
            }
            if next == schedule.len() && self.workers.iter().all(|w| w.stopped_until.is_none()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let phase = self.began.elapsed();

        // Settle: the workers alive now must end every run; none is restarted any more (a fresh
        // worker's start-up recovery would hide a run that the others dropped).
        let deadline = Instant::now() + self.plan.deadline;
        let mut unfinished = self.unfinished();
        while !unfinished.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            self.reap_exited(false);
            unfinished = self.unfinished();
        }
        let settle = self.began.elapsed() - phase;
        self.stop_workers();
        let log = self.sink.take_log();
        for l in &self.lives {
            for at in l.injected() {
                self.faults.push(Fault {
                    kind: Kind::LostReply,
                    at,
                    detail: format!("worker {}.{}", l.slot, l.life),
                });
            }
        }
        self.faults.sort_by_key(|f| f.at);
        let audit = self.audit(&log);
        self.report(&audit, &log, phase, settle);
        self.pg.stop();
    }

    /// The seeded schedule: run starts, signals, faults; the last fault is a database restart.
    fn schedule(&mut self) -> Vec<(Duration, Action)> {
        let phase = self.plan.phase.as_millis() as u64;
        let window = self.plan.start_window.as_millis() as u64;
        let mut s: Vec<(Duration, Action)> = Vec::new();
        for n in 1..=self.plan.runs {
            let at = self.rng.between(0, window);
            s.push((Duration::from_millis(at), Action::Start(n)));
            let listens = self.workflows.get(&n).map_or(0, |w| w.listens);
            for k in 0..listens {
                let later = (at + self.rng.between(1, 5000)).min(phase.saturating_sub(1500));
                s.push((
                    Duration::from_millis(later.max(at + 1)),
                    Action::Signal(n, k),
                ));
            }
        }
        let mut kinds: Vec<Kind> = std::iter::repeat_n(Kind::Kill, self.plan.kills)
            .chain(std::iter::repeat_n(Kind::Stop, self.plan.stops))
            .chain(std::iter::repeat_n(
                Kind::PgRestart,
                self.plan.pg_restarts.saturating_sub(1),
            ))
            .collect();
        for i in (1..kinds.len()).rev() {
            let j = (self.rng.next() % (i as u64 + 1)) as usize;
            kinds.swap(i, j);
        }
        // Evenly spread with jitter before the last restart, leaving room for a last pause to
        // end; runs keep starting after it, so workers must also pick up new work after it.
        let span = phase * 75 / 100 - LEASE_TTL_MS - 2500;
        let slot = span / (kinds.len() as u64 + 1);
        for (i, k) in kinds.into_iter().enumerate() {
            let at = slot * (i as u64 + 1) + self.rng.between(0, slot / 2) - slot / 4;
            s.push((Duration::from_millis(at), Action::Fault(k)));
        }
        if self.plan.pg_restarts > 0 {
            s.push((
                Duration::from_millis(phase * 75 / 100),
                Action::Fault(Kind::PgRestart),
            ));
        }
        // Stable: a run's start comes before its signals scheduled at the same instant.
        s.sort_by_key(|(at, _)| *at);
        s
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Start(n) => {
                let file = self.files[&n].clone();
                let input = json!({ "n": n, "acc": [] }).to_string();
                let url = self.pg.url.clone();
                let o = self.cairn_retry(
                    &["start", &file, "--input", &input, "--store", &url],
                    &format!("start run {n}"),
                );
                let id = o.trim().to_string();
                assert!(!id.is_empty(), "no run id for run {n}");
                self.ids.insert(n, id);
            }
            Action::Signal(n, k) => {
                let id = self.ids[&n].clone();
                let event = signal_event(n, k).to_string();
                let url = self.pg.url.clone();
                self.cairn_retry(
                    &["signal", &id, "--event", &event, "--store", &url],
                    &format!("signal run {n} event {k}"),
                );
            }
            Action::Fault(Kind::Kill) => {
                let Some(i) = self.pick_running() else {
                    return;
                };
                let at = now_ms();
                let w = self.workers.remove(i);
                let (slot, life) = (w.slot, w.life);
                self.end(w, "SIGKILL");
                self.faults.push(Fault {
                    kind: Kind::Kill,
                    at,
                    detail: format!("worker {slot}.{life}"),
                });
                let w = self.spawn(slot, life + 1);
                self.workers.insert(i, w);
            }
            Action::Fault(Kind::Stop) => {
                let Some(i) = self.pick_running() else {
                    return;
                };
                let pause = LEASE_TTL_MS + self.rng.between(1000, 2500);
                let at = now_ms();
                let w = &mut self.workers[i];
                if signal(w.child.id(), "STOP") {
                    w.stopped_until = Some(Instant::now() + Duration::from_millis(pause));
                    self.faults.push(Fault {
                        kind: Kind::Stop,
                        at,
                        detail: format!("worker {}.{} for {pause} ms", w.slot, w.life),
                    });
                }
            }
            Action::Fault(Kind::PgRestart) => {
                let at = now_ms();
                let took = self.pg.restart();
                self.pg_down.push(took);
                self.faults.push(Fault {
                    kind: Kind::PgRestart,
                    at,
                    detail: format!("back after {} ms", took.as_millis()),
                });
            }
            Action::Fault(Kind::LostReply) => {}
        }
    }

    /// A random worker that is not paused.
    fn pick_running(&mut self) -> Option<usize> {
        let running: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].stopped_until.is_none())
            .collect();
        if running.is_empty() {
            return None;
        }
        Some(running[(self.rng.next() % running.len() as u64) as usize])
    }

    /// SIGCONT to paused workers whose pause is over (all of them with `all`).
    fn resume_paused(&mut self, all: bool) {
        for w in &mut self.workers {
            if let Some(until) = w.stopped_until {
                if all || Instant::now() >= until {
                    signal(w.child.id(), "CONT");
                    w.stopped_until = None;
                }
            }
        }
    }

    /// Workers that exited by themselves: recorded, and restarted while `restart` (a
    /// supervisor would), so the test goes on. A worker that got past start-up must never exit.
    fn reap_exited(&mut self, restart: bool) {
        let mut i = 0;
        while i < self.workers.len() {
            let status = self.workers[i].child.try_wait().ok().flatten();
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let w = self.workers.remove(i);
            let (slot, life) = (w.slot, w.life);
            let (started, stderr) = {
                let l = self.end(w, &format!("exited by itself: {status}"));
                (l.started(), l.stderr(3000))
            };
            let phase = if restart { "" } else { " (after the faults)" };
            if started {
                self.problems.push(format!(
                    "worker {slot}.{life} exited by itself{phase} ({status}) after it had \
                     started: a running worker must survive faults\n{stderr}"
                ));
            } else {
                println!(
                    "faults: worker {slot}.{life} exited during start-up ({status}): {}",
                    clip_bytes(&stderr, 400, "[...]").replace('\n', " | ")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
            let w = self.spawn(slot, life + 1);
            self.workers.insert(i, w);
            i += 1;
        }
    }

    fn spawn(&self, slot: usize, life: usize) -> WorkerProc {
        let mut cmd = Command::new(common::bin());
        cmd.args(["worker", "--store", &self.pg.url])
            .current_dir(self.sandbox.path())
            .env_remove("CAIRN_STORE")
            .env_remove("CAIRN_CONFIG")
            .env_remove("CAIRN_SECRETS_FILE")
            .env_remove("CAIRN_CHAOS_APPEND_LOST_REPLY")
            .env_remove("CAIRN_CHAOS_SEED")
            .env_remove("RUST_BACKTRACE")
            .env("CAIRN_LEASE_TTL_MS", LEASE_TTL_MS.to_string())
            // Kills and pauses here are the test's, not the runs': no run is poison.
            .env("CAIRN_MAX_CRASHES", "1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if slot == 0 {
            cmd.env("CAIRN_CHAOS_APPEND_LOST_REPLY", LOST_REPLY_PROBABILITY)
                .env(
                    "CAIRN_CHAOS_SEED",
                    (self.plan.seed ^ (life as u64 + 1).wrapping_mul(0x9E37)).to_string(),
                );
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", common::bin().display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|err| {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = log.lock() {
                        l.push((now_ms(), line));
                    }
                }
            })
        });
        WorkerProc {
            slot,
            life,
            child,
            spawned: now_ms(),
            log,
            reader,
            stopped_until: None,
        }
    }

    /// Kills (SIGKILL) and reaps a worker, keeping its life's record; returns that record.
    fn end(&mut self, mut w: WorkerProc, how: &str) -> &Life {
        if w.stopped_until.is_some() {
            signal(w.child.id(), "CONT");
        }
        let _ = w.child.kill();
        let _ = w.child.wait();
        if let Some(r) = w.reader.take() {
            let _ = r.join();
        }
        let log = match w.log.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        self.lives.push(Life {
            slot: w.slot,
            life: w.life,
            spawned: w.spawned,
            ended: now_ms(),
            how: how.to_string(),
            log,
        });
        self.lives.last().expect("just pushed")
    }

    /// SIGTERM to every worker (a graceful stop), SIGKILL after 10 s.
    fn stop_workers(&mut self) {
        self.resume_paused(true);
        for w in &self.workers {
            signal(w.child.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && self
                .workers
                .iter_mut()
                .any(|w| matches!(w.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for w in std::mem::take(&mut self.workers) {
            self.end(w, "SIGTERM at the end");
        }
    }

    /// `cairn ARGS` until it succeeds (a database restart may be under way); its stdout.
    fn cairn_retry(&self, args: &[&str], what: &str) -> String {
        let mut last = String::new();
        for attempt in 0..40 {
            let o = self.sandbox.cairn(args);
            if o.code == Some(0) && !o.timed_out {
                if attempt > 0 {
                    println!("faults: {what}: succeeded at attempt {}", attempt + 1);
                }
                return o.stdout;
            }
            last = o.describe();
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("cannot {what}: {last}");
    }

    /// Runs (their `n`) that have not ended, from the runs index.
    fn unfinished(&self) -> Vec<u64> {
        let url = self.pg.url.clone();
        let out = self.cairn_retry(
            &["runs", "--store", &url, "--json", "--limit", "1000000"],
            "list runs",
        );
        let ended: BTreeSet<String> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                matches!(
                    v["status"].as_str(),
                    Some("completed" | "faulted" | "cancelled")
                )
            })
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect();
        self.ids
            .iter()
            .filter(|(_, id)| !ended.contains(*id))
            .map(|(n, _)| *n)
            .collect()
    }

    // ----- the checker ------------------------------------------------------------------------

    /// Every run's history (read 4 at a time: one `cairn history` process each).
    fn histories(&self) -> BTreeMap<u64, Option<Vec<Value>>> {
        let ids: Vec<(u64, String)> = self.ids.iter().map(|(n, id)| (*n, id.clone())).collect();
        let (sandbox, url) = (self.sandbox, self.pg.url.as_str());
        let out = Mutex::new(BTreeMap::new());
        let next = Mutex::new(0usize);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| loop {
                    let i = {
                        let mut g = next.lock().expect("lock");
                        *g += 1;
                        *g - 1
                    };
                    let Some((n, id)) = ids.get(i) else { break };
                    let o = sandbox.cairn(&["history", id, "--store", url, "--json"]);
                    let events = if o.code == Some(0) {
                        o.json_lines()
                    } else {
                        None
                    };
                    out.lock().expect("lock").insert(*n, events);
                });
            }
        });
        out.into_inner().expect("lock")
    }

    fn audit(&mut self, log: &SinkLog) -> Audit {
        let mut a = Audit::default();
        let histories = self.histories();
        a.histories = histories
            .iter()
            .filter_map(|(n, h)| h.clone().map(|h| (*n, h)))
            .collect();
        let mut known_keys: BTreeSet<String> = BTreeSet::new();
        for (&n, id) in &self.ids {
            let wf = &self.workflows[&n];
            let Some(Some(events)) = histories.get(&n) else {
                a.lost += 1;
                a.problems
                    .push(format!("run {n} ({id}): the store has no history of it"));
                continue;
            };
            a.run(n, id, wf, events, log, &mut known_keys);
        }
        a.sink(&self.ids, &self.workflows, log, &known_keys);
        a.problems.append(&mut self.problems);
        if a.spanning == 0 && !self.ids.is_empty() {
            a.problems.push(
                "no run was recorded by more than one worker: the faults hit no work, the test \
                 proved nothing"
                    .to_string(),
            );
        }
        a
    }

    fn report(&self, a: &Audit, log: &SinkLog, phase: Duration, settle: Duration) {
        let count = |k: Kind| self.faults.iter().filter(|f| f.kind == k).count();
        let calls: usize = self
            .ids
            .keys()
            .map(|n| self.workflows[n].steps_and_keys(*n).1)
            .sum();
        let t0 = self.lives.iter().map(|l| l.spawned).min().unwrap_or(0);
        let recovery = recovery_times(&self.faults, log, &a.histories, t0);
        let recov: Vec<String> = [Kind::Kill, Kind::Stop, Kind::PgRestart, Kind::LostReply]
            .iter()
            .map(|k| {
                let r = recovery.get(k).cloned().unwrap_or_default();
                format!("{} {}", k.name(), r.describe_takeover())
            })
            .collect();
        let startup_exits = self
            .lives
            .iter()
            .filter(|l| l.how.starts_with("exited") && !l.started())
            .count();
        let progress: Vec<String> = [Kind::Kill, Kind::Stop, Kind::PgRestart, Kind::LostReply]
            .iter()
            .map(|k| {
                let r = recovery.get(k).cloned().unwrap_or_default();
                format!("{} {}", k.name(), stats(&r.progress))
            })
            .collect();
        println!(
            "faults: {} runs, faults: SIGKILL {}, SIGSTOP {}, pg restart {}, lost reply {}; \
             lost {}, duplicated {}, stuck {}, wrong {}; progress again after (median/max ms): {}",
            self.ids.len(),
            count(Kind::Kill),
            count(Kind::Stop),
            count(Kind::PgRestart),
            count(Kind::LostReply),
            a.lost,
            a.duplicated,
            a.stuck,
            a.wrong,
            progress.join(", "),
        );
        println!(
            "faults: takeover (until every run busy at the fault moved again, median/max ms, \
             slowest run): {}",
            recov.join("; ")
        );
        println!(
            "faults: {calls} calls, {} deliveries, {} re-deliveries deduplicated ({} after the \
             call's result was recorded), {} events delivered with `cairn signal`, {} timers \
             fired, {} of {} runs moved between workers; {} worker lives, {startup_exits} exited \
             during start-up; database back after {:?} ms; fault phase {:.1}s, settle {:.1}s, \
             total {:.1}s (seed {})",
            log.deliveries.len(),
            a.redeliveries,
            a.late,
            a.signals,
            a.timers,
            a.spanning,
            self.ids.len(),
            self.lives.len(),
            self.pg_down
                .iter()
                .map(|d| d.as_millis())
                .collect::<Vec<_>>(),
            phase.as_secs_f64(),
            settle.as_secs_f64(),
            self.began.elapsed().as_secs_f64(),
            self.plan.seed,
        );
        let mut timeline: Vec<&String> = recovery.values().flat_map(|r| &r.timeline).collect();
        timeline.sort_by_key(|l| l.split("ms").next().and_then(|t| t.parse::<i64>().ok()));
        println!(
            "faults: timeline (ms from the first worker): {}",
            timeline
                .iter()
                .map(|l| format!("+{l}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let injected = count(Kind::LostReply);
        if injected == 0 {
            println!(
                "faults: WARNING no lost append reply was injected: is CAIRN_CHAOS_APPEND_LOST_REPLY \
                 read where `store::open` opens the store (cairn_runtime::store::faults::wrap_from_env)?"
            );
        }
        if a.lost + a.duplicated + a.stuck + a.wrong > 0 || !a.problems.is_empty() {
            let faults: Vec<String> = self
                .faults
                .iter()
                .map(|f| format!("  +{:>6} ms {:<11} {}", f.at - t0, f.kind.name(), f.detail))
                .collect();
            let lives: Vec<String> = self
                .lives
                .iter()
                .map(|l| {
                    format!(
                        "--- worker {}.{} (+{} .. +{} ms, {}) ---\n{}",
                        l.slot,
                        l.life,
                        l.spawned - t0,
                        l.ended - t0,
                        l.how,
                        l.stderr(1500)
                    )
                })
                .collect();
            panic!(
                "faults (seed {}): lost {}, duplicated {}, stuck {}, wrong {}; {} problems:\n{}\n\
                 --- faults (ms from the first worker) ---\n{}\n{}\n{}",
                self.plan.seed,
                a.lost,
                a.duplicated,
                a.stuck,
                a.wrong,
                a.problems.len(),
                a.problems
                    .iter()
                    .take(60)
                    .map(|p| format!("- {p}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                faults.join("\n"),
                lives.join("\n"),
                self.pg.log_tail(),
            );
        }
    }
}

#[derive(Default)]
struct Audit {
    problems: Vec<String>,
    lost: usize,
    duplicated: usize,
    stuck: usize,
    wrong: usize,
    redeliveries: usize,
    late: usize,
    signals: usize,
    timers: usize,
    /// Runs whose events were recorded by more than one worker.
    spanning: usize,
    histories: BTreeMap<u64, Vec<Value>>,
}

fn recorded_at(e: &Value) -> i64 {
    e["metadata"]["recorded_at"].as_i64().unwrap_or(i64::MAX)
}

impl Audit {
    fn run(
        &mut self,
        n: u64,
        id: &str,
        wf: &Workflow,
        events: &[Value],
        log: &SinkLog,
        known_keys: &mut BTreeSet<String>,
    ) {
        let dup = |a: &mut Audit, p: String| {
            a.duplicated += 1;
            a.problems.push(format!("run {n} ({id}): {p}"));
        };
        for (i, e) in events.iter().enumerate() {
            if int(e, "sequence") != Some(i as i64 + 1) {
                self.wrong += 1;
                self.problems.push(format!(
                    "run {n} ({id}): event {i} has sequence {}, expected {}",
                    e["sequence"],
                    i + 1
                ));
                break;
            }
        }
        let mut scheduled: BTreeMap<i64, String> = BTreeMap::new();
        let mut results: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut started: BTreeMap<i64, usize> = BTreeMap::new();
        let mut completed: BTreeMap<i64, usize> = BTreeMap::new();
        let mut timers: BTreeMap<i64, i64> = BTreeMap::new();
        let mut fired: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        let mut ends: Vec<&Value> = Vec::new();
        // Workers that recorded events after the `cairn start` client that recorded the first.
        let starter = events
            .first()
            .and_then(|e| e["metadata"]["worker"].as_str())
            .unwrap_or_default();
        let workers: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e["metadata"]["worker"].as_str())
            .filter(|w| *w != starter)
            .collect();
        if workers.len() > 1 {
            self.spanning += 1;
        }
        for e in events {
            let d = &e["data"];
            match e["type"].as_str().unwrap_or_default() {
                "ActivityScheduled" => {
                    let frame = int(d, "id").unwrap_or(-1);
                    let key = d["idempotency_key"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    known_keys.insert(key.clone());
                    if scheduled.insert(frame, key).is_some() {
                        dup(self, format!("call {frame} was scheduled twice"));
                    }
                }
                "ActivityCompleted" | "ActivityFailed" => results
                    .entry(int(d, "id").unwrap_or(-1))
                    .or_default()
                    .push(recorded_at(e)),
                "TaskStarted" => *started.entry(int(d, "id").unwrap_or(-1)).or_default() += 1,
                "TaskCompleted" => *completed.entry(int(d, "id").unwrap_or(-1)).or_default() += 1,
                "TimerScheduled" => {
                    let t = int(d, "timer").unwrap_or(-1);
                    if timers
                        .insert(t, int(d, "due_at").unwrap_or(i64::MAX))
                        .is_some()
                    {
                        dup(self, format!("timer {t} was scheduled twice"));
                    }
                }
                "TimerFired" => {
                    self.timers += 1;
                    fired
                        .entry(int(d, "timer").unwrap_or(-1))
                        .or_default()
                        .push((int(d, "at").unwrap_or(i64::MIN), recorded_at(e)))
                }
                "EventReceived" => {
                    self.signals += 1;
                    let key = format!("{}/{}", d["event"]["source"], d["event"]["id"]);
                    *received.entry(key).or_default() += 1;
                }
                "RunCompleted" | "RunFaulted" | "RunCancelled" => ends.push(e),
                _ => {}
            }
        }
        for (frame, c) in started.iter().filter(|(_, c)| **c > 1) {
            dup(self, format!("task {frame} started {c} times"));
        }
        for (frame, c) in completed.iter().filter(|(_, c)| **c > 1) {
            dup(self, format!("task {frame} completed {c} times"));
        }
        for (ev, c) in received.iter().filter(|(_, c)| **c > 1) {
            dup(self, format!("event {ev} received {c} times"));
        }
        for (frame, r) in results.iter().filter(|(_, r)| r.len() > 1) {
            dup(self, format!("call {frame} has {} results", r.len()));
        }
        if ends.len() > 1 {
            dup(self, format!("{} terminal events", ends.len()));
        }
        for (t, due) in &timers {
            match fired.get(t).map(Vec::as_slice) {
                None | Some([]) => {}
                Some([(at, rec)]) => {
                    if at < due || rec < due {
                        self.wrong += 1;
                        self.problems.push(format!(
                            "run {n} ({id}): timer {t} due at {due} fired early: at {at}, \
                             recorded at {rec}"
                        ));
                    }
                }
                Some(more) => dup(self, format!("timer {t} fired {} times", more.len())),
            }
        }
        let Some(end) = ends.first() else {
            self.stuck += 1;
            let last = events.last().map_or(String::new(), |e| {
                format!(
                    "{} {}",
                    e["type"],
                    clip_bytes(&e["data"].to_string(), 200, "[...]")
                )
            });
            self.problems.push(format!(
                "run {n} ({id}): not ended by the deadline ({} events; the last: {last})",
                events.len()
            ));
            return;
        };
        let expected = wf.expected_output(n);
        if end["type"] != "RunCompleted" || !json_eq(&end["data"]["output"], &expected) {
            self.wrong += 1;
            self.problems.push(format!(
                "run {n} ({id}): ended with {} {}; expected RunCompleted with output {expected}",
                end["type"],
                clip_bytes(&end["data"].to_string(), 600, "[...]")
            ));
        }
        // Every call the history scheduled reached the sink.
        let delivered: BTreeSet<&str> = log
            .deliveries
            .iter()
            .filter_map(|d| d.key.as_deref())
            .collect();
        for (frame, key) in &scheduled {
            if !delivered.contains(key.as_str()) {
                self.lost += 1;
                self.problems.push(format!(
                    "run {n} ({id}): call {frame} ({key}) never reached the sink"
                ));
            }
        }
        let (_, keys) = wf.steps_and_keys(n);
        if scheduled.len() != keys && end["type"] == "RunCompleted" {
            self.problems.push(format!(
                "run {n} ({id}): {} calls scheduled; the workflow makes {keys}",
                scheduled.len()
            ));
        }
    }

    /// The sink's side: each step applied under exactly one key, the same body for every
    /// delivery of a key, no key that no history knows.
    fn sink(
        &mut self,
        ids: &BTreeMap<u64, String>,
        workflows: &BTreeMap<u64, Workflow>,
        log: &SinkLog,
        known_keys: &BTreeSet<String>,
    ) {
        let mut seen: HashMap<&str, (&Value, i64)> = HashMap::new();
        for d in &log.deliveries {
            let Some(k) = &d.key else {
                self.wrong += 1;
                self.problems
                    .push(format!("a delivery without Idempotency-Key: {}", d.body));
                continue;
            };
            if d.status == 400 {
                self.wrong += 1;
                self.problems
                    .push(format!("a malformed delivery {k}: {}", d.body));
            }
            match seen.get(k.as_str()) {
                Some((first, _)) => {
                    if *first != &d.body {
                        self.wrong += 1;
                        self.problems.push(format!(
                            "key {k} was sent with two bodies: {first} and {}",
                            d.body
                        ));
                    }
                    if d.status == 200 {
                        self.redeliveries += 1;
                    }
                }
                None => {
                    seen.insert(k, (&d.body, d.at));
                }
            }
            if !known_keys.contains(k) {
                self.wrong += 1;
                self.problems
                    .push(format!("key {k} reached the sink but is in no history"));
            }
        }
        // Deliveries after the call's result was recorded: allowed (same key, deduplicated),
        // but counted, since a worker that lost its run should not be sending its calls.
        let recorded: HashMap<String, i64> = self
            .histories
            .values()
            .flat_map(|h| {
                let keys: HashMap<i64, String> = h
                    .iter()
                    .filter(|e| e["type"] == "ActivityScheduled")
                    .filter_map(|e| {
                        Some((
                            int(&e["data"], "id")?,
                            e["data"]["idempotency_key"].as_str()?.to_string(),
                        ))
                    })
                    .collect();
                h.iter()
                    .filter(|e| {
                        matches!(
                            e["type"].as_str(),
                            Some("ActivityCompleted" | "ActivityFailed")
                        )
                    })
                    .filter_map(|e| {
                        Some((keys.get(&int(&e["data"], "id")?)?.clone(), recorded_at(e)))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        self.late = log
            .deliveries
            .iter()
            .filter(|d| {
                d.key
                    .as_ref()
                    .and_then(|k| recorded.get(k))
                    .is_some_and(|&at| d.at > at)
            })
            .count();
        for (&n, id) in ids {
            let Some(wf) = workflows.get(&n) else {
                continue;
            };
            let ended = self
                .histories
                .get(&n)
                .is_some_and(|h| h.iter().any(|e| e["type"] == "RunCompleted"));
            let (steps, _) = wf.steps_and_keys(n);
            let expected: BTreeSet<i64> = steps.iter().map(|&s| s as i64).collect();
            for ((r, s), under) in log
                .effects
                .range((n as i64, i64::MIN)..=(n as i64, i64::MAX))
            {
                let _ = r;
                if under.len() > 1 {
                    self.duplicated += 1;
                    self.problems.push(format!(
                        "run {n} ({id}) step {s} was applied under {} keys: {}",
                        under.len(),
                        under.join(", ")
                    ));
                }
                if !expected.contains(s) {
                    self.wrong += 1;
                    self.problems.push(format!(
                        "run {n} ({id}) step {s} was applied but the run's path does not take it"
                    ));
                }
            }
            if ended {
                for s in &expected {
                    if !log.effects.contains_key(&(n as i64, *s)) {
                        self.lost += 1;
                        self.problems.push(format!(
                            "run {n} ({id}) step {s} was never applied at the sink"
                        ));
                    }
                }
            }
        }
    }
}

/// Times (ms) from faults of one kind until progress.
#[derive(Default, Clone)]
struct Recovery {
    progress: Vec<i64>,
    /// (time, the slowest run).
    takeover: Vec<(i64, u64)>,
    /// One entry per fault: `+at kind detail: progress P, takeover T (run N), B busy`.
    timeline: Vec<String>,
}

/// `median/max` of `v` (the lower median), or `-`.
fn stats(v: &[i64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    format!("{}/{}", v[(v.len() - 1) / 2], v[v.len() - 1])
}

impl Recovery {
    fn describe_takeover(&self) -> String {
        let times: Vec<i64> = self.takeover.iter().map(|t| t.0).collect();
        match self.takeover.iter().max() {
            Some((_, run)) => format!("{} (run {run})", stats(&times)),
            None => "-".into(),
        }
    }
}

/// For each fault: `progress`, the time until the next first application of a call at the sink
/// or the next run end (for a database restart: the next event written to the database), and
/// `takeover`, the time until every run that was busy at the fault (not waiting for a timer
/// still ahead or for an outside event) recorded an event again.
fn recovery_times(
    faults: &[Fault],
    log: &SinkLog,
    histories: &BTreeMap<u64, Vec<Value>>,
    t0: i64,
) -> BTreeMap<Kind, Recovery> {
    let mut applied: Vec<i64> = log
        .deliveries
        .iter()
        .filter(|d| d.applied)
        .map(|d| d.at)
        .collect();
    let mut written: Vec<i64> = Vec::new();
    for h in histories.values() {
        for e in h {
            written.push(recorded_at(e));
            if e["type"] == "RunCompleted" {
                applied.push(recorded_at(e));
            }
        }
    }
    applied.sort_unstable();
    written.sort_unstable();
    let after = |v: &[i64], t: i64| v.iter().find(|&&x| x > t).map(|x| x - t);
    let mut out: BTreeMap<Kind, Recovery> = BTreeMap::new();
    for f in faults {
        let r = out.entry(f.kind).or_default();
        let p = if f.kind == Kind::PgRestart {
            after(&written, f.at)
        } else {
            after(&applied, f.at)
        };
        if let Some(p) = p {
            r.progress.push(p);
        }
        let mut worst: Option<(i64, u64)> = None;
        let mut busy = 0;
        for (&n, h) in histories {
            let (before, rest): (Vec<&Value>, Vec<&Value>) =
                h.iter().partition(|e| recorded_at(e) <= f.at);
            let Some(next) = rest.first() else { continue };
            if before.is_empty() {
                continue;
            }
            // A run waiting for a timer still ahead, or for an event from outside, was not busy.
            let due: HashMap<i64, i64> = before
                .iter()
                .filter(|e| e["type"] == "TimerScheduled")
                .filter_map(|e| Some((int(&e["data"], "timer")?, int(&e["data"], "due_at")?)))
                .collect();
            let from = match next["type"].as_str() {
                Some("EventReceived") => continue,
                Some("TimerFired") => {
                    let d = int(&next["data"], "timer")
                        .and_then(|t| due.get(&t).copied())
                        .unwrap_or(f.at);
                    d.max(f.at)
                }
                _ => f.at,
            };
            busy += 1;
            let gap = recorded_at(next) - from;
            worst = Some(worst.map_or((gap, n), |w| w.max((gap, n))));
        }
        if let Some(w) = worst {
            r.takeover.push(w);
        }
        r.timeline.push(format!(
            "{}ms {} {}: progress {}, takeover {}, {busy} busy",
            f.at - t0,
            f.kind.name(),
            f.detail,
            p.map_or("-".into(), |p| p.to_string()),
            worst.map_or("-".into(), |(t, n)| format!("{t} (run {n})")),
        ));
    }
    out
}
