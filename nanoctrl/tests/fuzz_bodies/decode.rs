//! One NanoCtrl request body from arbitrary bytes: byte 0 picks the route's body type,
//! the rest is the JSON the route's `Body` extractor decodes and checks
//! (serde_json::from_slice as axum's `Json` does, then `Validate` against `limits.rs`).
//! A body that passes has its Redis keys derived as the route does
//! (scope prefix, glob-escaped patterns); the oracle: escaping a user string for a SCAN
//! pattern leaves no unescaped metacharacter, and a topology spec re-serialises to an
//! equal value. Shared by the libFuzzer target (fuzz/fuzz_targets/nanoctrl_body.rs) and
//! the stable smoke test (nanoctrl/tests/fuzz_bodies.rs), which compile the
//! server's own `models.rs`, `body.rs`, `limits.rs`, `error.rs` and `throttle.rs`.

use serde::de::DeserializeOwned;

use crate::body::Validate;
use crate::models::*;

/// What the `Body<T>` extractor hands the route: decoded and validated, or refused.
fn body<T: DeserializeOwned + Validate>(json: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(json).ok()?;
    v.validate().ok()?;
    Some(v)
}

fn escaped_ok(s: &str) {
    let e = dlslime_keys::glob_escape(s);
    let mut chars = e.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => assert!(chars.next().is_some(), "dangling escape in {e:?}"),
            '*' | '?' | '[' | ']' => panic!("unescaped {c:?} in {e:?}"),
            _ => {}
        }
    }
}

fn scope_keys(scope: &Option<String>, name: &str) {
    let p = dlslime_keys::prefix(scope.as_deref());
    let _ = dlslime_keys::agent(&p, name);
    let _ = dlslime_keys::stream(&p, name);
    let _ = dlslime_keys::mr_pattern(&p, name);
    let _ = dlslime_keys::stale_patterns(&p, name);
    escaped_ok(name);
    if let Some(s) = scope {
        escaped_ok(s);
    }
}

pub fn decode(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 11 {
        0 => {
            if let Some(b) = body::<RegisterEntityBody>(json) {
                let p = dlslime_keys::prefix(b.scope.as_deref());
                let _ = dlslime_keys::entity(&p, &b.entity_type, &b.entity_id);
                let _ = dlslime_keys::events(&p, &b.entity_type);
                escaped_ok(&b.entity_type);
            }
        }
        1 => {
            if let Some(b) = body::<EntityRefBody>(json) {
                scope_keys(&b.scope, &b.entity_id);
            }
        }
        2 => {
            if let Some(b) = body::<HeartbeatBody>(json) {
                scope_keys(&b.scope, &b.entity_id);
            }
        }
        3 => {
            if let Some(b) = body::<ListEntitiesBody>(json) {
                let p = dlslime_keys::prefix(b.scope.as_deref());
                let _ = dlslime_keys::entity_pattern(&p, b.entity_type.as_deref());
            }
        }
        4 => {
            if let Some(b) = body::<StartPeerAgentBody>(json) {
                scope_keys(&b.scope, b.alias.as_deref().unwrap_or(&b.name_prefix));
            }
        }
        5 => {
            if let Some(b) = body::<ScopeBody>(json) {
                let p = dlslime_keys::prefix(b.scope.as_deref());
                let _ = dlslime_keys::agent_pattern(&p);
            }
        }
        6 => {
            if let Some(b) = body::<CleanupBody>(json) {
                scope_keys(&b.scope, &b.agent_name);
            }
        }
        7 => {
            if let Some(b) = body::<DesiredTopologySpec>(json) {
                let text = serde_json::to_string(&b).expect("a decoded spec re-serialises");
                let again: DesiredTopologySpec = serde_json::from_str(&text).unwrap();
                assert_eq!(again.target_peers, b.target_peers);
                assert_eq!(again.scope, b.scope);
                for peer in &b.target_peers {
                    scope_keys(&b.scope, peer);
                }
            }
        }
        8 => {
            if let Some(b) = body::<RegisterMrBody>(json) {
                let p = dlslime_keys::prefix(b.scope.as_deref());
                let _ = dlslime_keys::mr(&p, &b.agent_name, &b.mr_name);
            }
        }
        9 => {
            if let Some(b) = body::<GetMrInfoBody>(json) {
                let p = dlslime_keys::prefix(b.scope.as_deref());
                let _ = dlslime_keys::mr(&p, &b.dst, &b.mr_name);
            }
        }
        _ => {
            let _ = body::<RedisAddressBody>(json);
        }
    }
}
