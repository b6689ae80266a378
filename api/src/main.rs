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

/// Counts the process's allocations, so that an expression's memory budget can be enforced
/// (`cairn_core::budget`); the limit itself is the budget's business, not the allocator's.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn main() -> std::process::ExitCode {
    cairn_core::budget::set_memory_probe(|| ALLOC.allocated());
    cli::main()
}
