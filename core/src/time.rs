//! Points in time as the DSL and the API write them. Times are milliseconds since the Unix epoch
//! ([`Millis`]), given to core by its callers: core never reads the clock.

use serde_json::{json, Value};

use crate::events::Millis;

/// The spec's date-time descriptor of a time.
pub fn datetime(ms: Millis) -> Value {
    json!({
        "iso8601": iso8601(ms),
        "epoch": { "seconds": ms.div_euclid(1000), "milliseconds": ms },
    })
}

/// RFC 3339 text of a time in UTC with milliseconds, e.g. `2026-11-27T16:22:10.123Z`.
pub fn iso8601(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant), valid for the whole i64 range we can meet.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
