//! The bounds on evaluating one expression: steps, memory and stack.
//!
//! Expressions come from definitions, and definitions may be hostile: `def f: f; f` never ends,
//! `[range(1e12)]` grows without end, `def f: [f]; f` recurses until the stack overflows, which
//! aborts the whole process. Every evaluation therefore runs under a [`Budget`]:
//!
//! - **steps**: the jq interpreter calls back into its data for every term it evaluates
//!   (`expr::Meter`); each call is a step, and the number of steps per evaluation is capped;
//! - **memory**: the growth of the process's allocated bytes since the evaluation began, read
//!   from a probe the binary installs ([`set_memory_probe`]; `cairn` counts its allocations
//!   with the `cap` allocator). Without a probe only the step budget bounds memory;
//! - **stack**: evaluation runs on a stack segment of its own ([`EVAL_STACK`]) and stops when
//!   its recursion has used [`MAX_RECURSION_STACK`] of it, so deep recursion faults instead of
//!   aborting the process.
//!
//! A budget that runs out unwinds out of the interpreter ([`std::panic::resume_unwind`], which
//! runs no panic hook and prints nothing) to [`metered`], which turns it into an [`Exceeded`].
//! This module reads no clock and does no I/O: the probe is a plain function pointer.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Default step budget of one evaluation: a few seconds of the interpreter at most, far more
/// than any reasonable data transformation needs.
pub const DEFAULT_MAX_STEPS: u64 = 10_000_000;

/// Default memory budget of one evaluation, in bytes (256 MiB).
pub const DEFAULT_MAX_MEMORY: u64 = 256 << 20;

/// The stack segment every evaluation runs on. Only the pages an evaluation touches are ever
/// backed by memory, so the size costs address space, not RAM. Most of it is headroom beyond
/// [`MAX_RECURSION_STACK`] for what recurses over a value without taking interpreter steps:
/// native functions (comparisons, `tojson`) and dropping what was built, once per level of
/// nesting. A value `reduce range(n) as $i (null; [.])` nests as deep as the budgets allow,
/// and only the memory budget bounds that depth.
pub const EVAL_STACK: usize = 1 << 30;

/// How much stack the interpreter's own recursion may use before the evaluation is stopped:
/// far more than any sane expression needs, and what a hostile one can make a process touch.
pub const MAX_RECURSION_STACK: usize = 64 << 20;

/// The bounds of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most interpreter steps one evaluation may take (setting `expr_max_steps`).
    pub max_steps: u64,
    /// Most bytes one evaluation may allocate beyond what the process held when it began
    /// (setting `expr_max_memory`).
    pub max_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: DEFAULT_MAX_STEPS,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

static MAX_STEPS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_STEPS);
static MAX_MEMORY: AtomicU64 = AtomicU64::new(DEFAULT_MAX_MEMORY);
static PROBE: OnceLock<fn() -> usize> = OnceLock::new();

thread_local! {
    /// Limits that replace the process's on this thread ([`with_limits`]).
    static OVERRIDE: Cell<Option<Limits>> = const { Cell::new(None) };
    /// Steps taken by every evaluation on this thread so far ([`steps_spent`]).
    static SPENT: Cell<u64> = const { Cell::new(0) };
}

/// The interpreter steps every evaluation on this thread has taken so far (a running total):
/// the difference between two readings is what the evaluations in between cost, which is how
/// the decider bounds a whole batch of them.
pub fn steps_spent() -> u64 {
    SPENT.with(Cell::get)
}

/// Sets the limits of every evaluation in this process (a worker's or a server's settings).
/// Every process that evaluates a run's expressions should use the same limits, or a run could
/// fault on one worker and not on another.
pub fn set_limits(limits: Limits) {
    MAX_STEPS.store(limits.max_steps, Ordering::Relaxed);
    MAX_MEMORY.store(limits.max_memory, Ordering::Relaxed);
}

/// The limits evaluations on this thread run under.
pub fn limits() -> Limits {
    OVERRIDE.with(Cell::get).unwrap_or_else(|| Limits {
        max_steps: MAX_STEPS.load(Ordering::Relaxed),
        max_memory: MAX_MEMORY.load(Ordering::Relaxed),
    })
}

/// Runs `f` with `limits` in place of the process's for the evaluations it makes on this
/// thread (tests, and embedders that evaluate on behalf of different tenants).
pub fn with_limits<R>(limits: Limits, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Limits>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(limits))));
    f()
}

/// Installs the function that tells how many bytes the process has allocated (a counting
/// global allocator's total). It can be set once per process; returns whether this call set it.
pub fn set_memory_probe(probe: fn() -> usize) -> bool {
    PROBE.set(probe).is_ok()
}

/// Which bound an evaluation ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    /// It took more steps than its budget.
    #[error("exceeded its budget of {0} steps (setting expr_max_steps)")]
    Steps(u64),
    /// It allocated more memory than its budget.
    #[error("exceeded its memory budget of {} (setting expr_max_memory)", bytes(*.0))]
    Memory(u64),
    /// Its recursion would have exhausted the stack.
    #[error("is nested or recursive too deeply (its evaluation would exhaust the stack)")]
    Stack,
}

/// What one evaluation has spent so far.
pub(crate) struct Budget {
    steps: Cell<u64>,
    limits: Limits,
    probe: Option<fn() -> usize>,
    base: usize,
}

impl Budget {
    fn new(limits: Limits) -> Self {
        let probe = PROBE.get().copied();
        Budget {
            steps: Cell::new(0),
            limits,
            probe,
            base: probe.map_or(0, |p| p()),
        }
    }

    /// One step of the interpreter; stops the evaluation when a bound is reached.
    pub(crate) fn tick(&self) {
        let steps = self.steps.get() + 1;
        self.steps.set(steps);
        if steps > self.limits.max_steps {
            trip(Exceeded::Steps(self.limits.max_steps));
        }
        self.check_memory(0);
        if stacker::remaining_stack()
            .is_some_and(|left| left < EVAL_STACK.saturating_sub(MAX_RECURSION_STACK))
        {
            trip(Exceeded::Stack);
        }
    }

    /// Stops the evaluation when the memory it allocated, plus `extra` bytes about to be, is
    /// over budget.
    pub(crate) fn check_memory(&self, extra: u64) {
        let grown = self
            .probe
            .map_or(0, |p| p().saturating_sub(self.base) as u64);
        if grown.saturating_add(extra) > self.limits.max_memory {
            trip(Exceeded::Memory(self.limits.max_memory));
        }
    }

    /// The memory budget, for conversions that charge an estimate of what they build.
    pub(crate) fn max_memory(&self) -> u64 {
        self.limits.max_memory
    }
}

/// Unwinds to [`metered`], without running the panic hook.
fn trip(e: Exceeded) -> ! {
    resume_unwind(Box::new(e))
}

/// Why [`metered`] did not return a value.
#[derive(Debug)]
pub(crate) enum Stopped {
    /// A bound was reached.
    Exceeded(Exceeded),
    /// The evaluation panicked: a bug of the interpreter, reported rather than let crash the
    /// process.
    Panicked(String),
}

/// Runs `f` under a fresh budget with this thread's [`limits`], on a stack segment of
/// [`EVAL_STACK`] bytes.
pub(crate) fn metered<R>(f: impl FnOnce(&Budget) -> R) -> Result<R, Stopped> {
    let budget = Budget::new(limits());
    // Outside `grow` too: the new segment's mmap can fail, and stacker panics then.
    let r = catch_unwind(AssertUnwindSafe(|| {
        stacker::grow(EVAL_STACK, || catch_unwind(AssertUnwindSafe(|| f(&budget))))
    }));
    SPENT.with(|s| s.set(s.get().saturating_add(budget.steps.get())));
    r.and_then(|inner| inner)
        .map_err(|payload| match payload.downcast::<Exceeded>() {
            Ok(e) => Stopped::Exceeded(*e),
            Err(other) => Stopped::Panicked(panic_message(other.as_ref())),
        })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_string())
}

/// `n` bytes for people: `256 MiB`, `1.5 GiB`, `512 bytes`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return if n % size == 0 {
                format!("{} {unit}", n / size)
            } else {
                format!("{:.1} {unit}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} bytes")
}

/// Parses a size as the settings take it: a number of bytes, or one with a `KiB`, `MiB` or
/// `GiB` suffix (`256MiB`, `1 GiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{s}` is not a size: expected bytes, or a number with KiB, MiB or GiB")
    })?;
    let scale: u64 = match unit.trim() {
        "" | "B" | "bytes" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`: use KiB, MiB or GiB (or plain bytes)"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_or_without_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size(" 1 GiB ").unwrap(), 1 << 30);
        assert!(parse_size("12MB")
            .unwrap_err()
            .contains("unknown unit `MB`"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(bytes(256 << 20), "256 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(bytes(100), "100 bytes");
    }

    #[test]
    fn limits_can_be_replaced_on_one_thread() {
        let small = Limits {
            max_steps: 5,
            max_memory: 1,
        };
        let seen = with_limits(small, limits);
        assert_eq!(seen, small);
        assert_ne!(limits(), small);
    }

    #[test]
    fn a_budget_stops_the_evaluation_with_what_ran_out() {
        let small = Limits {
            max_steps: 3,
            max_memory: DEFAULT_MAX_MEMORY,
        };
        let r = with_limits(small, || {
            metered(|b| {
                for _ in 0..10 {
                    b.tick();
                }
            })
        });
        assert!(matches!(r, Err(Stopped::Exceeded(Exceeded::Steps(3)))));
        let ok = metered(|b| {
            b.tick();
            7
        });
        assert_eq!(ok.unwrap(), 7);
    }

    #[test]
    fn deep_recursion_is_stopped_not_aborted() {
        #[allow(unconditional_recursion)]
        fn down(b: &Budget, n: u64) -> u64 {
            b.tick();
            let pad = [n; 64];
            down(b, n + 1) + pad[(n % 64) as usize]
        }
        let r = with_limits(
            Limits {
                max_steps: u64::MAX,
                max_memory: u64::MAX,
            },
            || metered(|b| down(b, 0)),
        );
        assert!(matches!(r, Err(Stopped::Exceeded(Exceeded::Stack))));
    }

    #[test]
    fn a_panic_inside_is_reported() {
        let r: Result<(), _> = metered(|_| panic!("interpreter bug"));
        match r {
            Err(Stopped::Panicked(m)) => assert_eq!(m, "interpreter bug"),
            other => panic!("{other:?}"),
        }
    }
}
