//! Helpers shared by the CLI tests: the `cairn` binary, run with a timeout in a sandbox folder
//! with its own SQLite store, and the spec folder (CTK, examples).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Time allowed to one `cairn run` (or any other short command).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The `cairn` binary that cargo built for this test binary.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

/// What a finished (or killed) `cairn` process left.
#[derive(Debug)]
pub struct Outcome {
    /// The exit status; `None` when killed by a signal (a timeout included).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// The command line, for messages.
    pub command: String,
}

impl Outcome {
    /// stdout parsed as one JSON document.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.stdout.trim()).ok()
    }

    /// stdout parsed as JSON lines (blank lines skipped); `None` if a line is not JSON.
    pub fn json_lines(&self) -> Option<Vec<Value>> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A short account of the process, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` -> exit {}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none (killed)".into()),
            if self.timed_out { " (TIMED OUT)" } else { "" },
            clip(&self.stdout, 3000),
            clip(&self.stderr, 3000),
        )
    }

    /// True when the process crashed: a panic message, or no exit status at all.
    pub fn panicked(&self) -> bool {
        self.stderr.contains("panicked") || self.stdout.contains("panicked")
    }

    /// Asserts the exit status and that nothing panicked; returns `self` for more checks.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert!(!self.timed_out, "timed out: {}", self.describe());
        assert!(!self.panicked(), "the CLI panicked: {}", self.describe());
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit status: {}",
            self.describe()
        );
        self
    }

    /// Asserts that stderr or stdout contains `needle` (case-insensitive).
    #[track_caller]
    pub fn expect_message(&self, needle: &str) -> &Self {
        let all = format!("{}\n{}", self.stderr, self.stdout).to_lowercase();
        assert!(
            all.contains(&needle.to_lowercase()),
            "expected the output to mention `{needle}`: {}",
            self.describe()
        );
        self
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push_str("\n[...]");
        t
    }
}

/// A `cairn` process that runs in the background; killed when dropped.
pub struct Running {
    child: Option<Child>,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
    command: String,
}

fn reader(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

impl Running {
    /// Whether the process has not exited yet.
    pub fn still_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM (a graceful stop) and waits for the exit, killing it after `timeout`.
    pub fn terminate(self, timeout: Duration) -> Outcome {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        self.finish(timeout)
    }

    /// Kills the process with SIGKILL (a crash, as the OOM killer would) and reaps it.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit, killing it after `timeout`.
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut child = self
            .child
            .take()
            .expect("the process is there until finished");
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break None,
            }
        };
        let stdout = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Outcome {
            code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            stdout,
            stderr,
            timed_out,
            command: self.command.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `cairn ARGS` in `cwd` with piped output and no inherited store settings.
pub fn spawn_in(cwd: &Path, args: &[&str]) -> Running {
    spawn_in_env(cwd, args, &[])
}

/// [`spawn_in`] with these environment variables set.
pub fn spawn_in_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("CAIRN_STORE")
        .env_remove("CAIRN_SECRETS_FILE")
        .env_remove("CAIRN_CONFIG")
        .env_remove("CAIRN_ALLOW_OUTBOUND")
        .env_remove("CAIRN_EXPR_MAX_STEPS")
        .env_remove("CAIRN_EXPR_MAX_MEMORY")
        .env_remove("CAIRN_MAX_CRASHES")
        .env_remove("CAIRN_LEASE_TTL_MS")
        .env_remove("CAIRN_WORKER_NAME")
        .envs(env.iter().copied())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    Running {
        child: Some(child),
        out,
        err,
        command: format!("cairn {}", args.join(" ")),
    }
}

/// A temporary folder with its own SQLite store; `cairn` runs with it as working directory, so
/// even a command without `--store` never touches the repository.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("cairn-cli-")
                .tempdir()
                .expect("a temporary folder"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `sqlite://<dir>/<name>.db`, a store private to this sandbox.
    pub fn store_named(&self, name: &str) -> String {
        format!("sqlite://{}/{name}.db", self.dir.path().display())
    }

    /// The sandbox's default store.
    pub fn store(&self) -> String {
        self.store_named("x")
    }

    /// Writes a file into the sandbox and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }

    /// Runs `cairn ARGS` to the end (or [`TIMEOUT`]).
    pub fn cairn(&self, args: &[&str]) -> Outcome {
        spawn_in(self.path(), args).finish(TIMEOUT)
    }

    /// Runs `cairn ARGS` to the end with these environment variables set.
    pub fn cairn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        spawn_in_env(self.path(), args, env).finish(TIMEOUT)
    }

    /// Starts `cairn ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Running {
        spawn_in(self.path(), args)
    }
}

/// The Serverless Workflow spec folder (CTK, examples): `$CAIRN_SPEC_DIR`, or
/// `shared/spec/serverless-workflow` beside the repository. When it is missing the caller
/// skips with a loud message; under `CI=true` a missing folder is a failure.
pub fn spec_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("CAIRN_SPEC_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/serverless-workflow"),
    };
    if dir.join("ctk/features").is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "the Serverless Workflow spec folder is missing: {} (set CAIRN_SPEC_DIR)",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n************************************************************");
    eprintln!("SKIPPED: {msg}");
    eprintln!("************************************************************\n");
    println!("SKIPPED: {msg}");
    None
}

/// Deep JSON equality with numbers compared by value (`1` == `1.0`); object key order ignored.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Is `needle` (by [`json_eq`]) somewhere inside `hay`, `hay` itself included?
pub fn json_contains(hay: &Value, needle: &Value) -> bool {
    if json_eq(hay, needle) {
        return true;
    }
    match hay {
        Value::Array(a) => a.iter().any(|v| json_contains(v, needle)),
        Value::Object(o) => o.values().any(|v| json_contains(v, needle)),
        _ => false,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The integer `field` of a JSON object.
pub fn int(v: &Value, field: &str) -> Option<i64> {
    v.get(field).and_then(Value::as_i64)
}

/// Whether `CAIRN_SOAK` asks for the long version of a test.
pub fn soak() -> bool {
    std::env::var("CAIRN_SOAK").is_ok_and(|v| v == "1" || v == "true")
}

/// The seed in the environment variable `var`, else one drawn from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{var} `{s}` is not a u64: {e}")),
        Err(_) => now_ms() as u64,
    }
}

/// SplitMix64: a small seeded generator, so a printed seed replays what was drawn from it.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The PostgreSQL server of the tests: `CAIRN_TEST_POSTGRES_URL`, else
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("CAIRN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// `url` with its database replaced by `db` (query string kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// Says loudly that `what` is skipped because `why`; under `CI=true` it fails instead.
pub fn skip(what: &str, why: &str) {
    let msg = format!("SKIPPED {what}: {why}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("\n************************************************************");
    eprintln!("{msg}");
    eprintln!("************************************************************\n");
    println!("{msg}");
}

/// `s` cut to at most `max` bytes (at a character boundary), with `marker` after the cut.
pub fn clip_bytes(s: &str, max: usize, marker: &str) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &s[..end])
}
