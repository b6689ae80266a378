//! Durations of the DSL: inline objects and ISO 8601 literals, to milliseconds.
//!
//! ISO 8601 literals follow the DSL schema's pattern
//! `^P(?!$)(\d+(?:\.\d+)?Y)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?W)?(\d+(?:\.\d+)?D)?(T(?=\d)(\d+(?:\.\d+)?H)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?S)?)?$`:
//! every component may carry a decimal fraction and weeks may be combined with days. The
//! parser is written here because the `iso8601` crate accepts neither (it allows a fraction on
//! seconds only and weeks only alone) and cannot tell `P0Y` from no year at all.

use crate::dsl::DurationInline;

/// A duration could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration `{text}`: {message}")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What is wrong.
    pub message: String,
}

/// Milliseconds of an inline duration.
pub fn inline_millis(d: &DurationInline) -> u64 {
    let f = |v: Option<u64>, m: u64| v.unwrap_or(0).saturating_mul(m);
    f(d.days, 86_400_000)
        .saturating_add(f(d.hours, 3_600_000))
        .saturating_add(f(d.minutes, 60_000))
        .saturating_add(f(d.seconds, 1_000))
        .saturating_add(f(d.milliseconds, 1))
}

/// Milliseconds of an ISO 8601 duration such as `PT1H30M` or `P2DT0.5S`. Years and months are
/// rejected: their length depends on the calendar. Fractions of a millisecond are rounded to the
/// nearest millisecond; durations beyond `u64::MAX` milliseconds saturate.
pub fn iso8601_millis(text: &str) -> Result<u64, DurationError> {
    let err = |message: &str| DurationError {
        text: text.to_string(),
        message: message.to_string(),
    };
    let rest = text
        .strip_prefix('P')
        .ok_or_else(|| err("must start with `P`"))?;
    if rest.is_empty() {
        return Err(err("has no components"));
    }
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(err("`T` must be followed by a time component")),
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    // Designators in the order the pattern requires, with each one's length in milliseconds;
    // `None` marks the calendar-dependent ones.
    const DATE: [(char, Option<u64>); 4] = [
        ('Y', None),
        ('M', None),
        ('W', Some(7 * 86_400_000)),
        ('D', Some(86_400_000)),
    ];
    const TIME: [(char, Option<u64>); 3] = [
        ('H', Some(3_600_000)),
        ('M', Some(60_000)),
        ('S', Some(1_000)),
    ];
    // Milliseconds times `SCALE`, so fractions of any unit add up exactly.
    let mut total: u128 = 0;
    for (part, units) in [(date, &DATE[..]), (time.unwrap_or(""), &TIME[..])] {
        let mut next_unit = 0;
        let mut remaining = part;
        while !remaining.is_empty() {
            let end = remaining
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("a number must be followed by a unit designator"))?;
            let (number, after) = remaining.split_at(end);
            let mut chars = after.chars();
            let designator = chars.next().unwrap_or_default();
            remaining = chars.as_str();
            let offset = units[next_unit..]
                .iter()
                .position(|(d, _)| *d == designator)
                .ok_or_else(|| {
                    err(&format!(
                        "unexpected `{designator}`: components are Y, M, W, D, then T and H, M, S, \
                         each at most once and in that order"
                    ))
                })?;
            let (_, unit_millis) = units[next_unit + offset];
            next_unit += offset + 1;
            let unit_millis = unit_millis.ok_or_else(|| {
                err("years and months are not supported: their length depends on the calendar")
            })?;
            if number.is_empty() {
                return Err(err(&format!("`{designator}` must follow a number")));
            }
            let scaled = parse_scaled(number).ok_or_else(|| {
                err(&format!(
                    "`{number}` is not a number (digits, optionally `.` and more digits)"
                ))
            })?;
            total = total.saturating_add(scaled.saturating_mul(u128::from(unit_millis)));
        }
    }
    // Round the sub-millisecond remainder half up.
    let millis = total.saturating_add(SCALE / 2) / SCALE;
    Ok(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// Fixed-point scale of parsed numbers: nine decimals keep any fraction exact to well under a
/// millisecond even for weeks (1e-9 week is 0.6 ms).
const SCALE: u128 = 1_000_000_000;

/// `number` (`\d+(\.\d+)?`) times [`SCALE`]; `None` when it does not match that pattern.
fn parse_scaled(number: &str) -> Option<u128> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    // Saturate rather than fail: a duration this long is "forever" for any timer.
    let whole: u128 = whole.parse().unwrap_or(u128::MAX);
    let mut scaled = whole.saturating_mul(SCALE);
    if let Some(f) = fraction {
        let digits: String = f.chars().chain("000000000".chars()).take(9).collect();
        scaled = scaled.saturating_add(digits.parse::<u128>().unwrap_or(0));
    }
    Some(scaled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        iso8601_millis(text).unwrap()
    }

    fn message(text: &str) -> String {
        let e = iso8601_millis(text).unwrap_err();
        assert_eq!(e.text, text);
        e.message
    }

    #[test]
    fn dsl_examples() {
        assert_eq!(ms("PT30S"), 30_000);
        assert_eq!(ms("PT1H30M"), 5_400_000);
        assert_eq!(ms("P2D"), 172_800_000);
        assert_eq!(ms("PT0.5S"), 500);
        assert_eq!(ms("P1W"), 604_800_000);
        assert_eq!(ms("P1DT2H"), 93_600_000);
    }

    #[test]
    fn every_component_and_fractions() {
        assert_eq!(
            ms("P1W2DT3H4M5.006S"),
            604_800_000 + 172_800_000 + 10_800_000 + 240_000 + 5_006
        );
        assert_eq!(ms("PT1.5H"), 5_400_000);
        assert_eq!(ms("PT0.25M"), 15_000);
        assert_eq!(ms("P0.5D"), 43_200_000);
        assert_eq!(ms("PT0.0004S"), 0);
        assert_eq!(ms("PT0.0005S"), 1);
        assert_eq!(ms("PT0.123456789S"), 123);
        assert_eq!(ms("PT0S"), 0);
        assert_eq!(ms("PT10M"), 600_000);
        assert_eq!(ms("PT90S"), 90_000);
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(ms("P99999999999999999999999999999W"), u64::MAX);
    }

    #[test]
    fn years_and_months_are_rejected() {
        assert!(message("P1Y").contains("years and months are not supported"));
        assert!(message("P2M").contains("years and months are not supported"));
        assert!(message("P1Y2M3D").contains("calendar"));
        // `M` after `T` is minutes
        assert_eq!(ms("PT2M"), 120_000);
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for text in [
            "", "P", "PT", "T1H", "1H", "pt1h", "P1DT", "PT1D", "P1H", "PT1S1M", "P1D1W", "PT1",
            "PT.5S", "PT1.S", "PT-1S", "PT1,5S", "PT1H1H", "P1D T1H", " PT1S", "PT1S ", "P1DT1H2D",
            "PTS", "PD", "P1DTT1H", "P0.5Y",
        ] {
            assert!(iso8601_millis(text).is_err(), "{text:?} should be rejected");
        }
        assert_eq!(message("1H"), "must start with `P`");
        assert_eq!(message("P"), "has no components");
        assert_eq!(message("P1DT"), "`T` must be followed by a time component");
        assert!(message("PT1S1M").starts_with("unexpected `M`: components are"));
        assert_eq!(message("PTS"), "`S` must follow a number");
        assert_eq!(
            message("PT1.2.3S"),
            "`1.2.3` is not a number (digits, optionally `.` and more digits)"
        );
    }

    #[test]
    fn inline_durations() {
        let d = DurationInline {
            days: Some(1),
            hours: Some(1),
            minutes: Some(1),
            seconds: Some(1),
            milliseconds: Some(1),
        };
        assert_eq!(
            inline_millis(&d),
            86_400_000 + 3_600_000 + 60_000 + 1_000 + 1
        );
    }
}
