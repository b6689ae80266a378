//! A private PostgreSQL server for one test: `initdb` into a temporary folder, started with
//! `pg_ctl` on an ephemeral 127.0.0.1 port, restartable (`pg_ctl restart -m immediate`, a crash
//! as the clients see it), stopped and deleted when dropped.
//!
//! A test that restarts a database must own it: the shared server on 127.0.0.1:5432 serves other
//! tests at the same time, so it is never touched here.
//!
//! The binaries are those of the machine's PostgreSQL install: `pg_config --bindir`, else the
//! highest `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root, so under euid 0 every
//! PostgreSQL binary runs as the `postgres` OS user (`runuser -u postgres --`), in a folder
//! chowned to it. Without the binaries the test is skipped loudly (a failure under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::skip;

/// How long `pg_ctl` may take to start or restart the server.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A private PostgreSQL server, stopped and deleted when dropped.
pub struct PgTmp {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    pub port: u16,
    bindir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Run the binaries as the `postgres` OS user (we are root).
    as_postgres: bool,
    stopped: bool,
    // Last, so that the folder goes after the server has stopped.
    dir: tempfile::TempDir,
}

impl PgTmp {
    /// Starts a fresh server. `None` after a loud "SKIPPED" message when no PostgreSQL install
    /// is found (a panic under `CI=true`); `what` names the test in that message.
    pub fn start(what: &str) -> Option<PgTmp> {
        let Some(bindir) = find_bindir() else {
            skip(
                what,
                "no PostgreSQL binaries (initdb, pg_ctl) found: neither `pg_config --bindir` nor \
                 /usr/lib/postgresql/*/bin has them. To run it, install the server \
                 (e.g. `apt-get install postgresql`) or put its `pg_config` on PATH",
            );
            return None;
        };
        let as_postgres = euid() == Some(0);
        if as_postgres && !user_exists("postgres") {
            skip(
                what,
                "running as root, and initdb refuses root, but there is no `postgres` OS user to \
                 run it as. To run it, create that user (`useradd -r postgres`) or run the tests \
                 as a normal user",
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .expect("a temporary folder");
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).expect("a socket folder");
        if as_postgres {
            let out = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .output()
                .expect("chown");
            assert!(
                out.status.success(),
                "chown -R postgres: {}: {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut pg = PgTmp {
            url: String::new(),
            port: 0,
            log: dir.path().join("server.log"),
            bindir,
            data,
            as_postgres,
            stopped: true,
            dir,
        };
        let init = pg
            .pg("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb");
        assert_ok("initdb", &init);

        // The port is free when we look and may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            // A crash of the server process is what `restart -m immediate` simulates, not a
            // power loss: the page cache survives it, so fsync buys nothing here but time.
            let opts = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
                 -c max_connections=300 -c fsync=off -c full_page_writes=off \
                 -c shared_buffers=32MB",
                sock.display()
            );
            let out = pg
                .pg("pg_ctl")
                .arg("-D")
                .arg(&pg.data)
                .arg("-l")
                .arg(&pg.log)
                .args(["-w", "-t"])
                .arg(START_TIMEOUT.as_secs().to_string())
                .args(["-o", &opts, "start"])
                .output()
                .expect("pg_ctl start");
            if out.status.success() {
                pg.port = port;
                pg.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                pg.stopped = false;
                pg.wait_ready(START_TIMEOUT);
                return Some(pg);
            }
            last = format!("{}\n{}", describe(&out), pg.log_tail());
            if !last.contains("already in use") && !last.contains("could not bind") {
                break;
            }
        }
        panic!("cannot start a private PostgreSQL server: {last}");
    }

    /// `pg_ctl restart -m immediate`: every backend is killed without a checkpoint (a crash as
    /// clients and the data folder see it), then the server recovers and starts on the same
    /// port. Returns once it accepts connections again.
    pub fn restart(&self) -> Duration {
        let began = Instant::now();
        let out = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t"])
            .arg(START_TIMEOUT.as_secs().to_string())
            .args(["-m", "immediate", "restart"])
            .output()
            .expect("pg_ctl restart");
        if !out.status.success() {
            panic!(
                "pg_ctl restart failed: {}\n{}",
                describe(&out),
                self.log_tail()
            );
        }
        self.wait_ready(START_TIMEOUT);
        began.elapsed()
    }

    /// Stops the server (fast shutdown: sessions are ended, a checkpoint is written).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let out = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-m", "fast", "stop"])
            .output();
        match out {
            Ok(o) if o.status.success() => self.stopped = true,
            Ok(o) => eprintln!("warning: pg_ctl stop: {}", describe(&o)),
            Err(e) => eprintln!("warning: pg_ctl stop: {e}"),
        }
        // Whatever went wrong, leave no server behind on a folder about to be deleted.
        self.stop_immediately();
    }

    /// `pg_ctl stop -m immediate`, once; errors are ignored (the folder goes next anyway).
    fn stop_immediately(&mut self) {
        if !self.stopped {
            let _ = self
                .pg("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "30", "-m", "immediate", "stop"])
                .output();
            self.stopped = true;
        }
    }

    /// The server log's last lines, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- {} (last lines) ---\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// A PostgreSQL binary as a command, run as the `postgres` user when we are root.
    fn pg(&self, name: &str) -> Command {
        let bin = self.bindir.join(name);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        // pg_ctl's server inherits these; it must not hold the test's pipes open.
        c.stdin(Stdio::null())
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        c
    }

    /// Waits until a TCP client gets an answer from `pg_isready` (`-w` of pg_ctl already waits;
    /// this checks the TCP listener the workers use, not only the socket).
    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .pg("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "2"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the private PostgreSQL server on port {} does not accept connections \
                     after {timeout:?}\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgTmp {
    fn drop(&mut self) {
        // Immediate: whatever the test did, the folder is deleted right after.
        self.stop_immediately();
        // `dir` (a TempDir) removes the folder; root may delete files the postgres user owns.
    }
}

/// The folder of `initdb` and `pg_ctl`.
fn find_bindir() -> Option<PathBuf> {
    let has = |d: &Path| {
        ["initdb", "pg_ctl", "pg_isready", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        if o.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if has(&d) {
                return Some(d);
            }
        }
    }
    // Debian's layout: one folder per major version; the highest wins.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let d = e.path().join("bin");
            has(&d).then_some((v, d))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, d)| d)
}

/// The effective user id, from `id -u` (no `unsafe` libc call in this workspace).
fn euid() -> Option<u32> {
    let o = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port that was free a moment ago (the caller retries on a clash).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port on 127.0.0.1")
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_ok(what: &str, o: &Output) {
    assert!(o.status.success(), "{what} failed: {}", describe(o));
}
