//! Small helpers shared by the SQL stores.

use std::cmp::Ordering;

use super::{Result, StoreError};

/// An error of `store` (`sqlite`/`postgres`) during `op`, as [`StoreError::Unavailable`].
/// sqlx error texts carry no credentials, but they go through [`redact_url`] anyway.
pub(crate) fn unavailable(store: &str, op: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{store} {op}: {}", redact_url(&err.to_string())))
}

/// Whether a sqlx error is a unique-constraint violation (a racing writer).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A `u64` for a bind parameter; values beyond `i64::MAX` saturate (they name "nothing further").
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored integer as `u64`; negative values mean the row was not written by Cairn.
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}: {v}")))
}

/// Replaces the password of every `scheme://user:password@host` in `text` with `***`.
pub(crate) fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A parsed semantic version: numeric core plus pre-release identifiers.
struct SemVer<'a> {
    core: [u64; 3],
    pre: Vec<&'a str>,
}

fn parse_semver(v: &str) -> Option<SemVer<'_>> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = v.split('+').next().unwrap_or(v);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) if !p.is_empty() => (c, p.split('.').collect()),
        Some(_) => return None,
        None => (v, Vec::new()),
    };
    let mut nums = core.split('.');
    let mut parsed = [0u64; 3];
    for slot in &mut parsed {
        let part = nums.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if nums.next().is_some() {
        return None;
    }
    Some(SemVer { core: parsed, pre })
}

fn compare_pre(a: &[&str], b: &[&str]) -> Ordering {
    // A release outranks its pre-releases.
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    for (x, y) in a.iter().zip(b.iter()) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// See [`super::compare_versions`].
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    match (parse_semver(a), parse_semver(b)) {
        (Some(x), Some(y)) => x
            .core
            .cmp(&y.core)
            .then_with(|| compare_pre(&x.pre, &y.pre)),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

/// The definition with the highest version among `defs` (given in registration order); among
/// equal versions the one registered last wins.
pub(crate) fn pick_latest(defs: Vec<super::StoredDefinition>) -> Option<super::StoredDefinition> {
    defs.into_iter().reduce(|best, d| {
        if compare_versions(&d.version, &best.version) == Ordering::Less {
            best
        } else {
            d
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_order() {
        assert_eq!(compare_versions("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0-rc.1", "1.0.0"), Ordering::Less);
        assert_eq!(
            compare_versions("1.0.0-rc.2", "1.0.0-rc.10"),
            Ordering::Less
        );
        assert_eq!(compare_versions("1.0.0+b1", "1.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("draft", "0.0.1"), Ordering::Less);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("cannot reach postgres://u:secret@h:5432/db now"),
            "cannot reach postgres://u:***@h:5432/db now"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}

/// One numbered schema migration of a store (`store/*/migrations/NNNN_*.sql`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Its number in `schema_version`.
    pub version: i64,
    /// The statements, run in the migration's transaction.
    pub sql: &'static str,
    /// Whether it only writes down, with `IF NOT EXISTS`, what older builds created outside the
    /// numbered migrations at every open: a store those builds wrote has all of it already, so
    /// a reader does not refuse a store for lacking this migration (an older build's store
    /// stays readable by a read-only command of this one, and the other way round).
    pub catch_up: bool,
}

impl Migration {
    pub(crate) const fn new(version: i64, sql: &'static str) -> Migration {
        Migration {
            version,
            sql,
            catch_up: false,
        }
    }

    pub(crate) const fn catch_up(version: i64, sql: &'static str) -> Migration {
        Migration {
            version,
            sql,
            catch_up: true,
        }
    }
}

/// The schema version a reader needs: that of the last migration that is no catch-up.
pub(crate) fn readers_need(migrations: &[Migration]) -> i64 {
    migrations
        .iter()
        .filter(|m| !m.catch_up)
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}
