//! Every Redis operation NanoCtrl performs. Handlers never build commands themselves.
//!
//! One `ConnectionManager` (a multiplexed connection that reconnects on its own) is shared
//! by all requests: requests are pipelined on one socket, and when Redis goes away and
//! comes back the next request reconnects, with no restart. Scripts are loaded once at
//! startup and invoked with EVALSHA; `redis::Script` reloads them if Redis lost its script
//! cache (a restarted Redis), so a NOSCRIPT never reaches a client.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};
use serde_json::Value;

use crate::models::*;
use dlslime_keys as keys;

/// Entity and agent TTL. Clients beat every 15 s, so four missed beats are tolerated.
pub const ENTITY_TTL_SECS: u64 = 60;
/// SCAN batch hint: large enough to keep round trips few, small enough not to stall Redis.
const SCAN_COUNT: usize = 500;

struct Scripts {
    register_entity: Script,
    unregister_entity: Script,
    heartbeat: Script,
    register_agent: Script,
    desired_topology: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            register_entity: Script::new(include_str!("scripts/register_entity.lua")),
            unregister_entity: Script::new(include_str!("scripts/unregister_entity.lua")),
            heartbeat: Script::new(include_str!("scripts/heartbeat.lua")),
            register_agent: Script::new(include_str!("scripts/register_agent.lua")),
            desired_topology: Script::new(include_str!("scripts/desired_topology.lua")),
        }
    }
    fn all(&self) -> [&Script; 5] {
        [
            &self.register_entity,
            &self.unregister_entity,
            &self.heartbeat,
            &self.register_agent,
            &self.desired_topology,
        ]
    }
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs.frac`, the shape Python's `time.time()` gives (the original's stream timestamps).
fn now_secs_frac() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    format!("{secs}")
}

impl Store {
    /// Connect, PING and load the scripts. Fails (rather than retrying forever) so that
    /// `nanoctrl server` can exit with a clear message when Redis is unreachable.
    pub async fn connect(url: &str) -> RedisResult<Self> {
        // TCP_NODELAY: many requests share one pipelined socket; Nagle would hold back
        // a command while an earlier one is unacknowledged.
        let info = redis::IntoConnectionInfo::into_connection_info(url)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            // Fail requests fast while Redis is down instead of queueing them for long:
            // one quick reconnect attempt per request, bounded by these timeouts.
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let mut conn = ConnectionManager::new_with_config(client, config).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        let scripts = Scripts::new();
        for s in scripts.all() {
            s.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(Self {
            conn,
            scripts: std::sync::Arc::new(scripts),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// All keys matching `pattern` (optionally of one Redis type), via SCAN so that a
    /// large keyspace never blocks Redis the way the original's KEYS did.
    async fn scan(&self, pattern: &str, key_type: Option<&str>) -> RedisResult<Vec<String>> {
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut out = BTreeSet::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            if let Some(t) = key_type {
                cmd.arg("TYPE").arg(t);
            }
            let (next, batch): (u64, Vec<String>) = cmd.query_async(&mut conn).await?;
            // SCAN may return a key twice across iterations; the set dedups.
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(out.into_iter().collect())
    }

    // ───────────────────────────── entities ─────────────────────────────

    pub async fn register_entity(&self, b: &RegisterEntityBody) -> RedisResult<i64> {
        let p = keys::prefix(b.scope.as_deref());
        let info = serde_json::json!({
            "entity_type": b.entity_type,
            "entity_id": b.entity_id,
            "id": b.entity_id,
            "kind": b.kind,
            "endpoint": b.endpoint,
            "metadata": b.metadata,
            "resource": b.resource,
        });
        let opt_json = |v: &Option<Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
        self.scripts
            .register_entity
            .key(keys::entity(&p, &b.entity_type, &b.entity_id))
            .key(keys::revision(&p, &b.entity_type))
            .key(keys::events(&p, &b.entity_type))
            .arg(&b.entity_type)
            .arg(&b.entity_id)
            .arg(&b.kind)
            .arg(opt_json(&b.endpoint))
            .arg(b.metadata.to_string())
            .arg(opt_json(&b.resource))
            .arg(info.to_string())
            .arg(ENTITY_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await
    }

    /// Returns the new revision, or 0 when there was nothing to remove.
    pub async fn unregister_entity(
        &self,
        scope: Option<&str>,
        ty: &str,
        id: &str,
    ) -> RedisResult<i64> {
        let p = keys::prefix(scope);
        self.scripts
            .unregister_entity
            .key(keys::entity(&p, ty, id))
            .key(keys::revision(&p, ty))
            .key(keys::events(&p, ty))
            .arg(ty)
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
    }

    /// True when the key existed and its TTL was reset.
    pub async fn heartbeat(&self, scope: Option<&str>, ty: &str, id: &str) -> RedisResult<bool> {
        let p = keys::prefix(scope);
        let r: i64 = self
            .scripts
            .heartbeat
            .key(keys::entity(&p, ty, id))
            .arg(ENTITY_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(r == 1)
    }

    pub async fn get_entity_info(
        &self,
        scope: Option<&str>,
        ty: &str,
        id: &str,
    ) -> RedisResult<Option<Value>> {
        let p = keys::prefix(scope);
        let raw: Option<String> = redis::cmd("HGET")
            .arg(keys::entity(&p, ty, id))
            .arg("info")
            .query_async(&mut self.conn())
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Entities of one scope, optionally of one type and kind, sorted by key.
    ///
    /// The original matched `*:*` for "all types", which also matched every *scoped*
    /// key (`job-a:service:x`), leaking entities across scopes. A key `service:a:b` could
    /// be type `service` id `a:b` or scope `service` type `a` id `b`, so the pattern
    /// alone cannot tell; instead each hit is kept only if its key is exactly the key
    /// its own `info` maps to in the requested scope.
    pub async fn list_entities(&self, b: &ListEntitiesBody) -> RedisResult<Vec<Value>> {
        let p = keys::prefix(b.scope.as_deref());
        let ty = b.entity_type.as_deref().filter(|t| !t.is_empty());
        let found = self
            .scan(&keys::entity_pattern(&p, ty), Some("hash"))
            .await?;
        let mut out = Vec::new();
        for chunk in found.chunks(256) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("HGET").arg(k).arg("info");
            }
            let infos: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
            for (key, info) in chunk.iter().zip(infos) {
                let Some(info) = info.and_then(|s| serde_json::from_str::<Value>(&s).ok()) else {
                    continue;
                };
                let (Some(et), Some(eid)) =
                    (info["entity_type"].as_str(), info["entity_id"].as_str())
                else {
                    continue;
                };
                if *key != keys::entity(&p, et, eid) {
                    continue; // belongs to another scope
                }
                if let Some(kind) = b.kind.as_deref() {
                    if info["kind"].as_str() != Some(kind) {
                        continue;
                    }
                }
                out.push(info);
            }
        }
        Ok(out)
    }

    // ───────────────────────────── peer agents ─────────────────────────────

    /// Next generated agent name in this scope: `{prefix}-{counter in hex}`.
    pub async fn next_agent_name(
        &self,
        scope: Option<&str>,
        name_prefix: &str,
    ) -> RedisResult<String> {
        let p = keys::prefix(scope);
        let n: i64 = redis::cmd("INCR")
            .arg(keys::agent_counter(&p))
            .query_async(&mut self.conn())
            .await?;
        Ok(format!("{name_prefix}-{n:x}"))
    }

    /// Writes the agent hash. Returns false when `reject_existing` and the alias is taken.
    pub async fn register_agent(
        &self,
        scope: Option<&str>,
        name: &str,
        reject_existing: bool,
        b: &StartPeerAgentBody,
    ) -> RedisResult<bool> {
        let p = keys::prefix(scope);
        let mut fields: Vec<(&str, String)> = vec![
            ("addr", b.address.clone()),
            ("updated_at", now_secs().to_string()),
            ("memory_keys", "[]".to_string()),
        ];
        if let Some(d) = &b.device {
            fields.push(("device", d.clone()));
        }
        if let Some(port) = b.ib_port {
            fields.push(("ib_port", port.to_string()));
        }
        if let Some(l) = &b.link_type {
            fields.push(("link_type", l.clone()));
        }
        if let Some(r) = &b.resource {
            // The original stores the same JSON under both names; PeerAgent reads either.
            let json = r.to_string();
            fields.push(("resource", json.clone()));
            fields.push(("topology", json));
        }
        let mut inv = self.scripts.register_agent.key(keys::agent(&p, name));
        inv.arg(ENTITY_TTL_SECS)
            .arg(if reject_existing { "1" } else { "0" });
        for (f, v) in &fields {
            inv.arg(*f).arg(v);
        }
        let r: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(r == 1)
    }

    /// All agents of one scope with an `addr`, sorted by name.
    pub async fn query_agents(&self, scope: Option<&str>) -> RedisResult<Vec<PeerAgentInfo>> {
        let p = keys::prefix(scope);
        let agent_prefix = keys::agent(&p, "");
        let found = self.scan(&keys::agent_pattern(&p), Some("hash")).await?;
        let mut out = Vec::new();
        for chunk in found.chunks(256) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("HGETALL").arg(k);
            }
            let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn()).await?;
            for (key, h) in chunk.iter().zip(hashes) {
                let Some(addr) = h.get("addr") else { continue };
                out.push(PeerAgentInfo {
                    name: key.strip_prefix(&agent_prefix).unwrap_or(key).to_string(),
                    device: h.get("device").cloned().unwrap_or_default(),
                    ib_port: h.get("ib_port").and_then(|s| s.parse().ok()).unwrap_or(1),
                    link_type: h.get("link_type").cloned().unwrap_or_default(),
                    address: addr.clone(),
                    resource: h.get("resource").and_then(|s| serde_json::from_str(s).ok()),
                    memory_keys: h
                        .get("memory_keys")
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    pub async fn set_desired_topology(
        &self,
        agent: &str,
        spec: &DesiredTopologySpec,
    ) -> RedisResult<()> {
        let p = keys::prefix(spec.scope.as_deref());
        let mut inv = self.scripts.desired_topology.key(keys::spec(&p, agent));
        inv.key(keys::stream(&p, agent));
        if spec.symmetric {
            for t in &spec.target_peers {
                inv.key(keys::spec(&p, t)).key(keys::stream(&p, t));
            }
        }
        let scope_json = serde_json::to_string(&spec.scope).unwrap_or_else(|_| "null".into());
        inv.arg(serde_json::to_string(spec).unwrap_or_default())
            .arg(agent)
            .arg(now_secs_frac())
            .arg(if spec.symmetric { "1" } else { "0" })
            .arg(scope_json);
        for t in &spec.target_peers {
            inv.arg(t);
        }
        inv.invoke_async::<i64>(&mut self.conn()).await.map(|_| ())
    }

    /// Remove everything an agent left behind and notify the peers it was linked to.
    /// Returns the notified peers (sorted).
    ///
    /// Differences from the original, each deliberate:
    /// - SCAN instead of KEYS;
    /// - the agent's stream is deleted too (the original left it, so a successor with
    ///   the same alias replayed stale connect_peer/qp_ready messages);
    /// - exchange keys written by peers (`exchange:{peer}:{agent}:{conn_id}`) are found,
    ///   not only the un-suffixed legacy form;
    /// - for an unscoped agent the notice is pushed to both `inbox:{peer}` (the
    ///   documented key) and `:inbox:{peer}` (where HEAD's PeerAgent actually listens
    ///   when it has no scope), so notices are not lost;
    /// - deletions and notices go in one MULTI/EXEC, so a reader never sees half a cleanup.
    pub async fn cleanup_agent(
        &self,
        scope: Option<&str>,
        agent: &str,
    ) -> RedisResult<Vec<String>> {
        let p = keys::prefix(scope);
        let mut conn = self.conn();

        // 1. Peers to notify: the agent's own targets, plus every agent whose spec names it.
        let own_spec_key = keys::spec(&p, agent);
        let spec_prefix = keys::spec(&p, "");
        let spec_keys = self.scan(&keys::spec_pattern(&p), Some("string")).await?;
        let mut peers = BTreeSet::new();
        if !spec_keys.is_empty() {
            let raws: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&spec_keys)
                .query_async(&mut conn)
                .await?;
            for (key, raw) in spec_keys.iter().zip(raws) {
                let Some(spec) =
                    raw.and_then(|s| serde_json::from_str::<DesiredTopologySpec>(&s).ok())
                else {
                    continue;
                };
                if *key == own_spec_key {
                    peers.extend(spec.target_peers);
                } else if spec.target_peers.iter().any(|t| t == agent) {
                    if let Some(other) = key.strip_prefix(&spec_prefix) {
                        peers.insert(other.to_string());
                    }
                }
            }
        }
        peers.remove(agent);

        // 2. Keys to delete.
        let mut doomed: BTreeSet<String> = BTreeSet::new();
        doomed.insert(keys::agent(&p, agent));
        doomed.insert(own_spec_key);
        doomed.insert(keys::inbox(&p, agent));
        doomed.insert(keys::stream(&p, agent));
        if p.is_empty() {
            doomed.insert(keys::legacy_inbox(agent));
        }
        let [mine, to_me, via_me] = keys::exchange_patterns(&p, agent);
        doomed.extend(self.scan(&mine, None).await?);
        doomed.extend(self.scan(&to_me, None).await?);
        let exchange_prefix = keys::exchange_prefix(&p);
        for k in self.scan(&via_me, None).await? {
            if let Some(rest) = k.strip_prefix(&exchange_prefix) {
                if is_peer_exchange_key(rest, agent) {
                    doomed.insert(k);
                }
            }
        }
        doomed.extend(self.scan(&keys::mr_pattern(&p, agent), None).await?);

        // 3. Delete and notify atomically.
        let notice = serde_json::json!({ "type": "cleanup", "peer": agent }).to_string();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let doomed: Vec<String> = doomed.into_iter().collect();
        for chunk in doomed.chunks(512) {
            pipe.cmd("DEL").arg(chunk).ignore();
        }
        for peer in &peers {
            pipe.cmd("LPUSH")
                .arg(keys::inbox(&p, peer))
                .arg(&notice)
                .ignore();
            if p.is_empty() {
                pipe.cmd("LPUSH")
                    .arg(keys::legacy_inbox(peer))
                    .arg(&notice)
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(peers.into_iter().collect())
    }

    // ───────────────────────────── memory regions ─────────────────────────────

    pub async fn register_mr(&self, b: &RegisterMrBody) -> RedisResult<()> {
        let p = keys::prefix(b.scope.as_deref());
        let info = MrInfo {
            addr: b.addr,
            length: b.length,
            rkey: b.rkey,
            lkey: b.lkey,
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        redis::cmd("SET")
            .arg(keys::mr(&p, &b.agent_name, &b.mr_name))
            .arg(json)
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// None when absent or when any of addr/length/rkey/lkey is missing or malformed.
    pub async fn get_mr_info(
        &self,
        scope: Option<&str>,
        dst: &str,
        mr_name: &str,
    ) -> RedisResult<Option<MrInfo>> {
        let p = keys::prefix(scope);
        let raw: Option<String> = redis::cmd("GET")
            .arg(keys::mr(&p, dst, mr_name))
            .query_async(&mut self.conn())
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str::<MrInfo>(&s).ok()))
    }
}

/// Is `rest` (an exchange key minus `{P}exchange:`) of the form `{peer}:{agent}:{conn_id}`,
/// where `conn_id` is the writer's own, i.e. starts with `{peer}:`? This keeps
/// `exchange:*:{agent}:*` from deleting keys of two other agents whose conn_id merely
/// contains `:{agent}:` somewhere.
fn is_peer_exchange_key(rest: &str, agent: &str) -> bool {
    let needle = format!(":{agent}:");
    let mut from = 0;
    while let Some(i) = rest[from..].find(&needle) {
        let at = from + i;
        let peer = &rest[..at];
        let conn_id = &rest[at + needle.len()..];
        if !peer.is_empty() && conn_id.starts_with(&format!("{peer}:")) {
            return true;
        }
        from = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::is_peer_exchange_key;

    #[test]
    fn peer_exchange_keys() {
        assert!(is_peer_exchange_key(
            "alice:bob:alice:mlx5_0:port1->bob:mlx5_0:port1#qp1",
            "bob"
        ));
        assert!(!is_peer_exchange_key(
            "bob:alice:bob:mlx5_0:port1->alice:mlx5_0:port1#qp1",
            "carol"
        ));
        // carol->dave whose device happens to be named "bob": not bob's key.
        assert!(!is_peer_exchange_key(
            "carol:dave:carol:bob:port1->dave:x:port1#qp1",
            "bob"
        ));
    }
}
