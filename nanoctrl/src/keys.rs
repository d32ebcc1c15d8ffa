//! Redis key naming: the original's schema, `"{scope}:"`-prefixed when a scope is given.

/// Key prefix for a scope: `"{scope}:"`, or empty for no scope. An empty string is no scope.
pub fn prefix(scope: Option<&str>) -> String {
    match scope {
        Some(s) if !s.is_empty() => format!("{s}:"),
        _ => String::new(),
    }
}

/// Escape glob metacharacters so that a user-supplied scope or alias used inside a
/// SCAN MATCH pattern matches only itself (the original interpolated them raw).
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub fn entity(p: &str, entity_type: &str, entity_id: &str) -> String {
    format!("{p}{entity_type}:{entity_id}")
}
pub fn revision(p: &str, entity_type: &str) -> String {
    format!("{p}nano_meta:{entity_type}_revision")
}
pub fn events(p: &str, entity_type: &str) -> String {
    format!("{p}nano_events:{entity_type}_update")
}
pub fn agent(p: &str, alias: &str) -> String {
    format!("{p}agent:{alias}")
}
pub fn agent_counter(p: &str) -> String {
    format!("{p}agent_name_counter")
}
pub fn spec(p: &str, alias: &str) -> String {
    format!("{p}spec:topology:{alias}")
}
pub fn stream(p: &str, alias: &str) -> String {
    format!("{p}stream:{alias}")
}
pub fn inbox(p: &str, alias: &str) -> String {
    format!("{p}inbox:{alias}")
}
pub fn mr(p: &str, alias: &str, mr_name: &str) -> String {
    format!("{p}mr:{alias}:{mr_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_scope_is_no_scope() {
        assert_eq!(prefix(None), "");
        assert_eq!(prefix(Some("")), "");
        assert_eq!(prefix(Some("job-a")), "job-a:");
        assert_eq!(
            entity(&prefix(Some("s")), "service", "cache:0"),
            "s:service:cache:0"
        );
    }

    #[test]
    fn glob_escape_neutralises_metacharacters() {
        assert_eq!(glob_escape("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\");
        assert_eq!(glob_escape("plain-name_1"), "plain-name_1");
    }
}
