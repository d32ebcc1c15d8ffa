//! Per-field limits on request bodies: the one place that says how large a name, a scope,
//! an address or an embedded JSON document may be. A body within `--max-body-bytes` can
//! still carry a field that would bloat every Redis key or event built from it; such a
//! field gets 413 with a JSON error naming it (see `body.rs`).

use serde_json::Value;

use crate::error::AppError;

/// Aliases, entity ids and types, kinds, region names, peer names: they become parts of
/// Redis keys and of every event and listing that mentions them.
pub const NAME_MAX: usize = 512;
/// A scope prefixes every key of a job.
pub const SCOPE_MAX: usize = 256;
/// Host addresses, device names, link types, bandwidth hints.
pub const ADDRESS_MAX: usize = 256;
/// Embedded JSON documents (`metadata`, `endpoint`, `resource`), serialized.
pub const JSON_MAX: usize = 256 * 1024;
/// Peers in one desired topology.
pub const TARGETS_MAX: usize = 4096;
/// Owner tokens (see `owner.rs`): long enough to be unguessable, short enough to hash
/// cheaply.
pub const OWNER_TOKEN_MIN: usize = 16;
pub const OWNER_TOKEN_MAX: usize = 256;

fn too_large(field: &str, len: usize, max: usize) -> AppError {
    AppError::TooLarge(format!(
        "field `{field}` is {len} bytes; the limit is {max}"
    ))
}

/// A text field of at most `max` bytes.
pub fn text(field: &str, v: &str, max: usize) -> Result<(), AppError> {
    if v.len() > max {
        return Err(too_large(field, v.len(), max));
    }
    Ok(())
}

pub fn opt_text(field: &str, v: Option<&str>, max: usize) -> Result<(), AppError> {
    v.map_or(Ok(()), |v| text(field, v, max))
}

pub fn name(field: &str, v: &str) -> Result<(), AppError> {
    text(field, v, NAME_MAX)
}

pub fn scope(v: Option<&str>) -> Result<(), AppError> {
    opt_text("scope", v, SCOPE_MAX)
}

/// An embedded JSON document of at most [`JSON_MAX`] bytes once serialized.
pub fn json(field: &str, v: Option<&Value>) -> Result<(), AppError> {
    let Some(v) = v else { return Ok(()) };
    let len = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if len > JSON_MAX {
        return Err(too_large(field, len, JSON_MAX));
    }
    Ok(())
}

/// An owner token: [`OWNER_TOKEN_MIN`]..=[`OWNER_TOKEN_MAX`] bytes of visible ASCII.
pub fn owner_token(v: Option<&str>) -> Result<(), AppError> {
    let Some(t) = v else { return Ok(()) };
    opt_text("owner_token", Some(t), OWNER_TOKEN_MAX)?;
    if t.len() < OWNER_TOKEN_MIN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::Invalid(format!(
            "field `owner_token` must be {OWNER_TOKEN_MIN} to {OWNER_TOKEN_MAX} visible ASCII characters"
        )));
    }
    Ok(())
}

/// A list of names: at most [`TARGETS_MAX`] entries of at most [`NAME_MAX`] bytes each.
pub fn names(field: &str, v: &[String]) -> Result<(), AppError> {
    if v.len() > TARGETS_MAX {
        return Err(AppError::TooLarge(format!(
            "field `{field}` has {} entries; the limit is {TARGETS_MAX}",
            v.len()
        )));
    }
    v.iter().try_for_each(|n| name(field, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(name("a", &"x".repeat(NAME_MAX)).is_ok());
        assert!(matches!(
            name("a", &"x".repeat(NAME_MAX + 1)),
            Err(AppError::TooLarge(m)) if m.contains("`a`")
        ));
        assert!(json("m", Some(&Value::String("x".repeat(JSON_MAX)))).is_err());
        assert!(json("m", Some(&serde_json::json!({"a": 1}))).is_ok());
        assert!(owner_token(Some("short")).is_err());
        assert!(owner_token(Some(&"a".repeat(OWNER_TOKEN_MIN))).is_ok());
        assert!(owner_token(Some(&format!("{} x", "a".repeat(20)))).is_err());
        assert!(names("t", &vec!["p".into(); TARGETS_MAX + 1]).is_err());
    }
}
