//! Every Redis operation NanoCtrl performs. Handlers never build commands themselves.
//!
//! Connections come from `redis_conn` (one multiplexed connection that reconnects on its
//! own and follows the primary). Scripts are loaded once at startup and invoked with
//! EVALSHA; `redis::Script` reloads them if Redis lost its script cache (a restarted or
//! promoted Redis), so a NOSCRIPT never reaches a client.

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{RedisResult, Script};
use serde_json::Value;

use crate::models::*;
use crate::owner;
use crate::redis_conn::{Conn, RedisNodes};
use dlslime_keys as keys;

/// Entity and agent TTL. Clients beat every 15 s, so four missed beats are tolerated.
pub const ENTITY_TTL_SECS: u64 = 60;
/// The heartbeat period assumed for an owned agent that did not say.
const DEFAULT_HEARTBEAT_MS: u64 = 15_000;
/// SCAN batch hint: large enough to keep round trips few, small enough not to stall Redis.
const SCAN_COUNT: usize = 500;
/// Generated agent names tried before giving up with 409 (a name is skipped when an
/// owned agent holds it).
const GENERATED_NAME_TRIES: usize = 16;

/// A script that acts on an agent's behalf: the owner-check prelude, then the body.
macro_rules! owner_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("scripts/owner.lua"),
            include_str!($file)
        ))
    };
}

struct Scripts {
    register_entity: Script,
    unregister_entity: Script,
    heartbeat: Script,
    register_agent: Script,
    desired_topology: Script,
    cleanup_agent: Script,
    register_mr: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            register_entity: Script::new(include_str!("scripts/register_entity.lua")),
            unregister_entity: Script::new(include_str!("scripts/unregister_entity.lua")),
            heartbeat: owner_script!("scripts/heartbeat.lua"),
            register_agent: owner_script!("scripts/register_agent.lua"),
            desired_topology: owner_script!("scripts/desired_topology.lua"),
            cleanup_agent: owner_script!("scripts/cleanup_agent.lua"),
            register_mr: owner_script!("scripts/register_mr.lua"),
        }
    }
    fn all(&self) -> [&Script; 7] {
        [
            &self.register_entity,
            &self.unregister_entity,
            &self.heartbeat,
            &self.register_agent,
            &self.desired_topology,
            &self.cleanup_agent,
            &self.register_mr,
        ]
    }
}

#[derive(Clone)]
pub struct Store {
    nodes: RedisNodes,
    scripts: std::sync::Arc<Scripts>,
}

/// What an owner-checked write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Owned<T> {
    Done(T),
    /// The agent is owned, live, and the caller did not present its token.
    Refused,
}

impl<T> Owned<T> {
    /// The outcome of an owner-checked script, whose reply is negative when it refused.
    fn of_reply(reply: i64, done: T) -> Owned<T> {
        if reply < 0 {
            Owned::Refused
        } else {
            Owned::Done(done)
        }
    }
}

/// A heartbeat's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    Ok,
    NotFound,
    Refused,
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
    /// Connect (to the primary, when several URLs are given), PING and load the scripts.
    /// Fails (rather than retrying forever) so that `nanoctrl server` can exit with a
    /// clear message when Redis is unreachable.
    pub async fn connect(urls: Vec<String>) -> RedisResult<Self> {
        let nodes = RedisNodes::connect(urls).await?;
        let scripts = Scripts::new();
        let mut conn = nodes.conn();
        for s in scripts.all() {
            s.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(Self {
            nodes,
            scripts: std::sync::Arc::new(scripts),
        })
    }

    fn conn(&self) -> Conn {
        self.nodes.conn()
    }

    /// The URL of the Redis node in use (with credentials: never log it as is).
    pub fn url(&self) -> String {
        self.nodes.url()
    }

    /// PING: whether Redis answers (for `/health`).
    pub async fn ping(&self) -> RedisResult<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(|_| ())
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

    /// Resets the TTL of an existing entity or agent (`owner_token`: see `owner.rs`).
    pub async fn heartbeat(
        &self,
        scope: Option<&str>,
        ty: &str,
        id: &str,
        owner_token: Option<&str>,
    ) -> RedisResult<Beat> {
        let p = keys::prefix(scope);
        let r: i64 = self
            .scripts
            .heartbeat
            .key(keys::entity(&p, ty, id))
            .arg(ENTITY_TTL_SECS)
            .arg(owner::hash(owner_token))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match r {
            1 => Beat::Ok,
            -1 => Beat::Refused,
            _ => Beat::NotFound,
        })
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

    /// Registers an agent under `b.alias`, or under the next generated name that is free
    /// (an owned agent's name is skipped). Returns the name, or None when the alias is
    /// taken (see `scripts/register_agent.lua`). `owner_token`: see `owner.rs`.
    pub async fn register_agent(
        &self,
        scope: Option<&str>,
        b: &StartPeerAgentBody,
        owner_token: Option<&str>,
    ) -> RedisResult<Option<String>> {
        if let Some(alias) = &b.alias {
            let ok = self
                .register_agent_as(scope, alias, true, b, owner_token)
                .await?;
            return Ok(ok.then(|| alias.clone()));
        }
        for _ in 0..GENERATED_NAME_TRIES {
            let name = self.next_agent_name(scope, &b.name_prefix).await?;
            if self
                .register_agent_as(scope, &name, false, b, owner_token)
                .await?
            {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Writes the agent hash. Returns false when the name is taken.
    async fn register_agent_as(
        &self,
        scope: Option<&str>,
        name: &str,
        reject_existing: bool,
        b: &StartPeerAgentBody,
        owner_token: Option<&str>,
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
            .arg(if reject_existing { "1" } else { "0" })
            .arg(owner::hash(owner_token))
            .arg(
                b.heartbeat_interval_ms
                    .unwrap_or(DEFAULT_HEARTBEAT_MS)
                    .clamp(1, ENTITY_TTL_SECS * 1000),
            );
        for (f, v) in &fields {
            inv.arg(*f).arg(v);
        }
        let r: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(r == 1)
    }

    /// The agents' observability snapshots (`obs:peer:*`, PeerAgents write them with a
    /// TTL) of one scope, or of every scope with `None`; unparsable ones are skipped.
    /// Sorted by key.
    pub async fn obs_snapshots(&self, scope: Option<&str>) -> RedisResult<Vec<Value>> {
        let pattern = match scope {
            Some(s) => keys::obs_peer_pattern(&keys::prefix(Some(s))),
            None => keys::OBS_PEER_ANY_SCOPE.to_string(),
        };
        let found = self.scan(&pattern, Some("string")).await?;
        let mut out = Vec::new();
        for chunk in found.chunks(256) {
            let texts: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut self.conn())
                .await?;
            out.extend(
                texts
                    .into_iter()
                    .flatten()
                    .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
                    .filter(Value::is_object),
            );
        }
        Ok(out)
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
    ) -> RedisResult<Owned<()>> {
        let p = keys::prefix(spec.scope.as_deref());
        let mut inv = self.scripts.desired_topology.key(keys::agent(&p, agent));
        inv.key(keys::spec(&p, agent)).key(keys::stream(&p, agent));
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
            .arg(scope_json)
            .arg(owner::hash(spec.owner_token.as_deref()));
        for t in &spec.target_peers {
            inv.arg(t);
        }
        let r: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(Owned::of_reply(r, ()))
    }

    /// Remove everything an agent left behind and notify the peers it was linked to.
    /// Returns the notified peers (sorted). Refused for an owned, live agent without
    /// its `owner_token`.
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
    /// - deletions and notices go in one script, with the owner check, so a reader never
    ///   sees half a cleanup and an owner re-registering meanwhile is not swept away.
    pub async fn cleanup_agent(
        &self,
        scope: Option<&str>,
        agent: &str,
        owner_token: Option<&str>,
    ) -> RedisResult<Owned<Vec<String>>> {
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

        // 2. Keys to delete (besides the agent hash).
        let agent_key = keys::agent(&p, agent);
        let mut doomed: BTreeSet<String> = BTreeSet::new();
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

        doomed.remove(&agent_key);

        // 3. Check the owner, delete and notify, atomically.
        let notice = serde_json::json!({ "type": "cleanup", "peer": agent }).to_string();
        let mut inv = self.scripts.cleanup_agent.key(&agent_key);
        for k in &doomed {
            inv.key(k);
        }
        for peer in &peers {
            inv.key(keys::inbox(&p, peer));
            if p.is_empty() {
                inv.key(keys::legacy_inbox(peer));
            }
        }
        inv.arg(owner::hash(owner_token))
            .arg(doomed.len())
            .arg(&notice);
        let r: i64 = inv.invoke_async(&mut conn).await?;
        Ok(Owned::of_reply(r, peers.into_iter().collect()))
    }

    // ───────────────────────────── memory regions ─────────────────────────────

    pub async fn register_mr(&self, b: &RegisterMrBody) -> RedisResult<Owned<()>> {
        let p = keys::prefix(b.scope.as_deref());
        let info = MrInfo {
            addr: b.addr,
            length: b.length,
            rkey: b.rkey,
            lkey: b.lkey,
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        let r: i64 = self
            .scripts
            .register_mr
            .key(keys::agent(&p, &b.agent_name))
            .key(keys::mr(&p, &b.agent_name, &b.mr_name))
            .arg(owner::hash(b.owner_token.as_deref()))
            .arg(json)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Owned::of_reply(r, ()))
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
