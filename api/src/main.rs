//! The `cairn` command line (`cairn_api::cli`).

/// Counts the process's allocations, so that an expression's memory budget can be enforced
/// (`cairn_core::budget`); the limit itself is the budget's business, not the allocator's.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn main() -> std::process::ExitCode {
    cairn_core::budget::set_memory_probe(|| ALLOC.allocated());
    cairn_api::cli::main()
}
