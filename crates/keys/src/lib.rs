//! The Redis key schema of the DLSlime control plane, the one source for NanoCtrl (which
//! creates and cleans up the keys) and the PeerAgent (which publishes and reads them).
//!
//! Every key starts with the scope prefix `P`: `"{scope}:"`, or empty for no scope
//! ([`prefix`]). Functions that take `p` expect that prefix; the `*_pattern` functions
//! return SCAN MATCH patterns with the user-supplied parts glob-escaped.

/// Key prefix for a scope: `"{scope}:"`, or empty for no scope. An empty string is no scope.
pub fn prefix(scope: Option<&str>) -> String {
    match scope {
        Some(s) if !s.is_empty() => format!("{s}:"),
        _ => String::new(),
    }
}

/// Escapes glob metacharacters, so that a user-supplied scope or alias used inside a
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

/// An entity's hash: `{P}{entity_type}:{entity_id}`.
pub fn entity(p: &str, entity_type: &str, entity_id: &str) -> String {
    format!("{p}{entity_type}:{entity_id}")
}

/// Entities of one type, or of every type (`None`): `{P}{type}:*` / `{P}*:*`.
pub fn entity_pattern(p: &str, entity_type: Option<&str>) -> String {
    match entity_type {
        Some(t) => format!("{}{}:*", glob_escape(p), glob_escape(t)),
        None => format!("{}*:*", glob_escape(p)),
    }
}

pub fn revision(p: &str, entity_type: &str) -> String {
    format!("{p}nano_meta:{entity_type}_revision")
}

pub fn events(p: &str, entity_type: &str) -> String {
    format!("{p}nano_events:{entity_type}_update")
}

/// A PeerAgent's record (a hash with a TTL, created by NanoCtrl).
pub fn agent(p: &str, alias: &str) -> String {
    format!("{p}agent:{alias}")
}

/// The field of an owned agent's record holding Redis's time (ms) of its last
/// registration or heartbeat (written by NanoCtrl's `owner.lua`, which judges liveness
/// by it).
pub const AGENT_HEARTBEAT_AT: &str = "hb_at_ms";

/// Every agent record of a scope.
pub fn agent_pattern(p: &str) -> String {
    format!("{}*", glob_escape(&agent(p, "")))
}

/// The counter behind generated agent names.
pub fn agent_counter(p: &str) -> String {
    format!("{p}agent_name_counter")
}

/// An agent's desired topology (the peers it dialled).
pub fn spec(p: &str, alias: &str) -> String {
    format!("{p}spec:topology:{alias}")
}

/// Every desired topology of a scope.
pub fn spec_pattern(p: &str) -> String {
    format!("{}*", glob_escape(&spec(p, "")))
}

/// An agent's stream mailbox (`connect_peer`, `qp_ready`).
pub fn stream(p: &str, alias: &str) -> String {
    format!("{p}stream:{alias}")
}

/// An agent's cleanup inbox (a list of notices).
pub fn inbox(p: &str, alias: &str) -> String {
    format!("{p}inbox:{alias}")
}

/// `:inbox:{alias}`: where the original's PeerAgent listens when it has no scope (it
/// always wrote the `:` separator); NanoCtrl notifies it there too.
pub fn legacy_inbox(alias: &str) -> String {
    format!(":inbox:{alias}")
}

/// A published memory region.
pub fn mr(p: &str, alias: &str, mr_name: &str) -> String {
    format!("{p}mr:{alias}:{mr_name}")
}

/// Every memory region an agent published.
pub fn mr_pattern(p: &str, alias: &str) -> String {
    format!("{}mr:{}:*", glob_escape(p), glob_escape(alias))
}

/// `{P}exchange:`, the prefix of the original's legacy exchange keys
/// (`exchange:{agent}:{peer}[:{conn_id}]`).
pub fn exchange_prefix(p: &str) -> String {
    format!("{p}exchange:")
}

/// The exchange keys that may involve an agent, in both directions:
/// `exchange:{a}:*`, `exchange:*:{a}` and `exchange:*:{a}:*` (the last one also matches
/// keys of two other agents whose conn_id contains `:{a}:`).
pub fn exchange_patterns(p: &str, alias: &str) -> [String; 3] {
    let (p, a) = (glob_escape(p), glob_escape(alias));
    [
        format!("{p}exchange:{a}:*"),
        format!("{p}exchange:*:{a}"),
        format!("{p}exchange:*:{a}:*"),
    ]
}

/// An agent's observability snapshot (string JSON with a TTL, `SET PX`; the original's
/// `obs:peer:{alias}`).
pub fn obs_peer(p: &str, alias: &str) -> String {
    format!("{p}obs:peer:{alias}")
}

/// Every observability snapshot of a scope.
pub fn obs_peer_pattern(p: &str) -> String {
    format!("{}*", glob_escape(&obs_peer(p, "")))
}

/// Every observability snapshot of every scope (NanoCtrl's `/metrics`): the scope is
/// read from the snapshot's `scope` field, not from the key.
pub const OBS_PEER_ANY_SCOPE: &str = "*obs:peer:*";

/// What an agent that is gone leaves behind, besides its record, stream, spec and
/// inbox: its memory regions and the legacy exchange keys.
pub fn stale_patterns(p: &str, alias: &str) -> Vec<String> {
    let mut v = vec![mr_pattern(p, alias)];
    v.extend(exchange_patterns(p, alias));
    v
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
    fn the_schema() {
        let p = prefix(Some("job"));
        assert_eq!(agent(&p, "a"), "job:agent:a");
        assert_eq!(stream(&p, "a"), "job:stream:a");
        assert_eq!(inbox(&p, "a"), "job:inbox:a");
        assert_eq!(mr(&p, "a", "kv"), "job:mr:a:kv");
        assert_eq!(spec(&p, "a"), "job:spec:topology:a");
        assert_eq!(agent_counter(&p), "job:agent_name_counter");
        assert_eq!(revision(&p, "service"), "job:nano_meta:service_revision");
        assert_eq!(events(&p, "service"), "job:nano_events:service_update");
        assert_eq!(legacy_inbox("a"), ":inbox:a");
        assert_eq!(inbox("", "a"), "inbox:a");
        assert_eq!(stream("", "b"), "stream:b");
    }

    #[test]
    fn patterns_escape_user_parts() {
        assert_eq!(agent_pattern("j*:"), "j\\*:agent:*");
        assert_eq!(spec_pattern(""), "spec:topology:*");
        assert_eq!(entity_pattern("s:", Some("a?")), "s:a\\?:*");
        assert_eq!(entity_pattern("", None), "*:*");
        assert_eq!(
            stale_patterns("", "x"),
            ["mr:x:*", "exchange:x:*", "exchange:*:x", "exchange:*:x:*"]
        );
        assert_eq!(mr_pattern("s[1]:", "a*"), "s\\[1\\]:mr:a\\*:*");
    }

    #[test]
    fn glob_escape_neutralises_metacharacters() {
        assert_eq!(glob_escape("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\");
        assert_eq!(glob_escape("plain-name_1"), "plain-name_1");
    }
}
