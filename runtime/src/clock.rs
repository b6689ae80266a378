//! The runtime's one clock.
//!
//! A module of its own so that the stores (which judge claims and leases by it) need not reach
//! into the engine: the dependency runs `engine -> store -> clock`, never back.

use cairn_core::events::Millis;

/// Milliseconds since the Unix epoch, from the system clock. The only clock read of a run's
/// life: what it returns is recorded in events before anything depends on it.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
