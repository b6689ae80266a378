//! The `cairn` command line.
//!
//! Data goes to stdout, progress and diagnostics to stderr. Exit codes are a contract:
//! 0 success (a run completed), 1 a run faulted (stdout holds the error JSON), 2 bad usage,
//! invalid definition or bad input, 3 a run was cancelled, 4 the store or the runtime failed.

mod bench;
mod bench_cluster;
mod bench_snapshots;
mod bench_ws;
mod cli;
mod projections;
mod secrets;
mod server;

fn main() -> std::process::ExitCode {
    cli::main()
}
