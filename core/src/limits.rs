//! What a run accepts from outside: the size of its input, and the CloudEvents delivered to it.
//!
//! Checked where data enters (`Runtime::start_run`, `Runtime::signal`, and so the CLI and the
//! GraphQL API alike), before anything is recorded: whatever is accepted here lives in the event
//! log for good, is folded on every load and is sent to every viewer who reads the run.

use serde_json::Value;

/// The largest input a run may start with: its JSON text, compact, in bytes (1 MiB).
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// The largest CloudEvent that can be delivered to a run: its JSON text, compact, in bytes
/// (256 KiB). The CloudEvents spec asks intermediaries to forward events of 64 KiB at least.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The most characters of an error's `detail` that are kept; the rest is replaced by a note of
/// how much was cut. Details often quote the value that failed (a schema check, a jq error), and
/// that value can be as large as a run's input.
pub const MAX_DETAIL_CHARS: usize = 2048;

/// Data from outside that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Larger than its limit.
    #[error("{what} is {size} bytes of JSON, more than the limit of {limit} bytes")]
    TooLarge {
        /// What was measured (`the input`, `the event`).
        what: &'static str,
        /// Its size; counting stops a little past the limit.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid CloudEvent 1.0 (JSON format).
    #[error("not a valid CloudEvent (JSON format, specversion 1.0): {0}")]
    NotCloudEvent(String),
}

/// The size of `v` as compact JSON, counted without building the text; counting stops once it
/// passes `stop_after`, so an enormous value costs no more than the limit.
pub fn json_size(v: &Value, stop_after: usize) -> usize {
    struct Counter {
        n: usize,
        stop: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.stop {
                // Ends the serialisation early; the count so far is the answer.
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter {
        n: 0,
        stop: stop_after,
    };
    let _ = serde_json::to_writer(&mut c, v);
    c.n
}

/// Refuses a run input larger than [`MAX_INPUT_BYTES`].
pub fn check_input(input: &Value) -> Result<(), InputError> {
    let size = json_size(input, MAX_INPUT_BYTES);
    if size > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge {
            what: "the input",
            size,
            limit: MAX_INPUT_BYTES,
        });
    }
    Ok(())
}

/// The context attributes the CloudEvents 1.0 spec defines whose values, when present, are
/// strings; `time` is also checked to be an RFC 3339 timestamp.
const STRING_ATTRIBUTES: [&str; 4] = ["datacontenttype", "dataschema", "subject", "time"];

/// Checks that `event` is a CloudEvent 1.0 in the JSON format and at most [`MAX_EVENT_BYTES`]:
/// an object whose `specversion` is `"1.0"` and whose `id`, `source` and `type` are non-empty
/// strings; optional attributes (`datacontenttype`, `dataschema`, `subject`, `time`) strings
/// when present, `time` an RFC 3339 timestamp; attribute names lower-case ASCII letters and
/// digits; extension attributes scalars (string, number, boolean, null); not both `data` and
/// `data_base64`. The message names the first problem, never the event's content.
pub fn check_cloud_event(event: &Value) -> Result<(), InputError> {
    let size = json_size(event, MAX_EVENT_BYTES);
    if size > MAX_EVENT_BYTES {
        return Err(InputError::TooLarge {
            what: "the event",
            size,
            limit: MAX_EVENT_BYTES,
        });
    }
    let bad = |m: String| Err(InputError::NotCloudEvent(m));
    let Some(o) = event.as_object() else {
        return bad(format!(
            "an event must be a JSON object, not {}",
            kind(event)
        ));
    };
    match o.get("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::String(v)) => {
            return bad(format!(
                "`specversion` must be \"1.0\", not {:?}",
                clip(v, 40)
            ))
        }
        Some(other) => {
            return bad(format!(
                "`specversion` must be the string \"1.0\", not {}",
                kind(other)
            ))
        }
        None => return bad("`specversion` is required (\"1.0\")".into()),
    }
    for required in ["id", "source", "type"] {
        match o.get(required) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => return bad(format!("`{required}` must not be empty")),
            Some(other) => {
                return bad(format!(
                    "`{required}` must be a string, not {}",
                    kind(other)
                ))
            }
            None => return bad(format!("`{required}` is required")),
        }
    }
    if o.contains_key("data") && o.contains_key("data_base64") {
        return bad("an event has `data` or `data_base64`, not both".into());
    }
    for (name, value) in o {
        if name == "data" || name == "data_base64" {
            if name == "data_base64" && !value.is_string() {
                return bad(format!(
                    "`data_base64` must be a string, not {}",
                    kind(value)
                ));
            }
            continue;
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return bad(format!(
                "attribute name {:?} must consist of lower-case ASCII letters and digits",
                clip(name, 40)
            ));
        }
        if STRING_ATTRIBUTES.contains(&name.as_str()) {
            match value {
                Value::String(s) if name == "time" && !is_rfc3339(s) => {
                    return bad(format!(
                        "`time` must be an RFC 3339 timestamp, not {:?}",
                        clip(s, 40)
                    ))
                }
                Value::String(_) | Value::Null => {}
                other => return bad(format!("`{name}` must be a string, not {}", kind(other))),
            }
        } else if value.is_array() || value.is_object() {
            return bad(format!(
                "extension attribute `{name}` must be a string, number or boolean, not {}",
                kind(value)
            ));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` cut to at most `max` characters, with `...` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push_str("...");
    t
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)` (`t`/`z` and a space
/// for `T` allowed, as the RFC does), with field ranges checked.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return false;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len()
                && b.get(i + 3) == Some(&b':')
                && digits(i + 1..i + 3).is_some_and(|h| h <= 23)
                && digits(i + 4..i + 6).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// `detail` cut to [`MAX_DETAIL_CHARS`] characters, with a note of how many were cut.
pub fn clip_detail(detail: String) -> String {
    let count = detail.chars().count();
    if count <= MAX_DETAIL_CHARS {
        return detail;
    }
    let mut t: String = detail.chars().take(MAX_DETAIL_CHARS).collect();
    t.push_str(&format!(
        "... ({} more characters cut)",
        count - MAX_DETAIL_CHARS
    ));
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic on failure

    use serde_json::json;

    use super::*;

    fn ok() -> Value {
        json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t"})
    }

    #[test]
    fn cloud_events_are_checked() {
        assert!(check_cloud_event(&ok()).is_ok());
        let mut full = ok();
        full["time"] = json!("2026-01-02T03:04:05.123+01:00");
        full["subject"] = json!("x");
        full["data"] = json!({"any": [1, 2]});
        full["traceparent"] = json!("00-abc");
        full["count"] = json!(3);
        assert!(check_cloud_event(&full).is_ok(), "{full}");
        for bad in [
            json!({}),
            json!([]),
            json!({"id": "1", "source": "s", "type": "t"}),
            json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}),
            json!({"specversion": "1.0", "id": "", "source": "s", "type": "t"}),
            json!({"specversion": "1.0", "id": 1, "source": "s", "type": "t"}),
            json!({"specversion": "1.0", "id": "1", "type": "t"}),
            json!({"specversion": "1.0", "id": "1", "source": "s"}),
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "yesterday"}),
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "Bad": "x"}),
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "ext": {"a": 1}}),
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": 1, "data_base64": "AA=="}),
        ] {
            assert!(check_cloud_event(&bad).is_err(), "{bad} should be refused");
        }
        let mut big = ok();
        big["data"] = json!("x".repeat(MAX_EVENT_BYTES));
        assert!(matches!(
            check_cloud_event(&big),
            Err(InputError::TooLarge { .. })
        ));
    }

    #[test]
    fn sizes_are_counted_up_to_the_limit() {
        assert_eq!(json_size(&json!({"a": [1, 2]}), 100), 11);
        assert!(json_size(&json!("x".repeat(1000)), 10) <= 1002);
        assert!(check_input(&json!("x".repeat(MAX_INPUT_BYTES))).is_err());
        assert!(check_input(&json!("x".repeat(MAX_INPUT_BYTES - 2))).is_ok());
    }

    #[test]
    fn long_details_are_clipped() {
        let d = clip_detail("é".repeat(MAX_DETAIL_CHARS + 5));
        assert!(d.ends_with("... (5 more characters cut)"), "{d}");
        assert_eq!(clip_detail("short".into()), "short");
    }
}
