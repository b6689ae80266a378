//! Helpers of the bench tests: the `cairn-bench` binary cargo built for them, run with a
//! deadline in a temporary folder of its own.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Time allowed to a command that is refused at once.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The `cairn-bench` binary of this crate.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn-bench"))
}

/// What a finished (or killed) process left.
pub struct Outcome {
    /// The exit status; `None` when killed by a signal (a timeout included).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub command: String,
}

impl Outcome {
    /// stdout parsed as one JSON document.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.stdout.trim()).ok()
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
            clip(&self.stdout),
            clip(&self.stderr),
        )
    }

    /// Asserts the exit status and that nothing panicked.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert!(!self.timed_out, "timed out: {}", self.describe());
        assert!(
            !self.stderr.contains("panicked"),
            "it panicked: {}",
            self.describe()
        );
        assert_eq!(self.code, Some(code), "exit status: {}", self.describe());
        self
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 3000;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push_str("\n[...]");
        t
    }
}

fn reader(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A temporary folder, the working directory of every command it runs, with SQLite stores
/// of its own.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("cairn-bench-test-")
                .tempdir()
                .expect("a temporary folder"),
        }
    }

    /// `sqlite://<dir>/<name>.db`, a store private to this sandbox.
    pub fn store_named(&self, name: &str) -> String {
        format!("sqlite://{}/{name}.db", self.dir.path().display())
    }

    /// The sandbox's default store.
    pub fn store(&self) -> String {
        self.store_named("x")
    }

    /// Runs `cairn-bench ARGS` to the end, killing it after `timeout`.
    pub fn bench_within(&self, args: &[&str], timeout: Duration) -> Outcome {
        let mut child: Child = Command::new(bin())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("CAIRN_STORE")
            .env_remove("CAIRN_CONFIG")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
        let out = child.stdout.take().map(reader);
        let err = child.stderr.take().map(reader);
        let deadline = Instant::now() + timeout;
        let (code, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status.code(), false),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break (None, true);
                }
            }
        };
        let text =
            |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        Outcome {
            code,
            stdout: text(out),
            stderr: text(err),
            timed_out,
            command: format!("cairn-bench {}", args.join(" ")),
        }
    }

    /// Runs `cairn-bench ARGS`, which must end within [`TIMEOUT`].
    pub fn bench(&self, args: &[&str]) -> Outcome {
        self.bench_within(args, TIMEOUT)
    }
}

/// The PostgreSQL server of the tests: `CAIRN_TEST_POSTGRES_URL`, else
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("CAIRN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
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
