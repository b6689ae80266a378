//! `cairn-bench`: figures (not assertions) for Cairn, outside the product. Progress goes to
//! stderr, results to stdout; exit 0, 2 on bad usage, 4 when the store or the runtime failed.
//!
//! - no subcommand (`engine`): the runtime on one store, beside the raw append rate of that
//!   store (docs/benchmarks.md);
//! - `subscribers`: the GraphQL server under WebSocket subscribers (docs/benchmarks-server.md);
//! - `snapshots`: loading a long run from its snapshot against folding every event;
//! - `cluster`: runs distributed over `cairn worker` processes on one PostgreSQL;
//! - `check`: the deploy-time replay check on many unfinished runs, beside loading them.
//!
//! Built only on what a user of Cairn has: `cairn_runtime`, `cairn_connectors`, `cairn_core`
//! and `cairn_api`'s library (the server as a component, the command line for the workers).

mod check;
mod cluster;
mod engine;
mod snapshots;
mod subscribers;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

/// Counts allocations as `cairn` does, so that expressions meet the same memory budget here
/// and in the `cairn worker` processes this executable becomes (`worker`).
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

#[derive(Parser)]
#[command(
    name = "cairn-bench",
    version,
    about = "Measure the runtime on a store: latency, runs/s at several concurrencies, and the \
             raw append rate of the same store for comparison (figures on stdout, progress on \
             stderr); or, with a subcommand, the server, snapshots or a cluster of workers"
)]
struct Cli {
    #[command(flatten)]
    expr: cairn_api::options::ExprArg,
    #[command(flatten)]
    bench: engine::BenchArgs,
}

fn main() -> ExitCode {
    cairn_core::budget::set_memory_probe(|| ALLOC.allocated());
    // `cairn-bench worker ...` is `cairn worker ...`: the cluster bench's worker processes.
    let mut args = std::env::args_os();
    let program = args.next();
    let rest: Vec<_> = args.collect();
    if rest.first().is_some_and(|a| a == "worker") {
        return cairn_api::cli::main_from(std::iter::once("cairn".into()).chain(rest));
    }
    let parsed = Cli::command()
        .try_get_matches_from(program.into_iter().chain(rest))
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    cairn_core::budget::set_limits(cli.expr.limits());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    match rt.block_on(engine::run(cli.bench)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
