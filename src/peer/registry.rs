//! This agent's identity and its presence in the control plane: registration with
//! NanoCtrl (retries, taking an alias over from a dead holder), the resource record and
//! the fields of the agent hash, the desired topology, and the clean-up at the end.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::agent::Inner;
use super::http::Http;
use super::options::PeerAgentOptions;
use super::owner;
use super::store::BeatAge;
use crate::error::{Error, Result, Status};
use crate::transport::shm::ShmConfig;
use crate::{info_log, warn_log};

/// This host's identity as the shared-memory transport sees it (boot id + host name,
/// or `DLSLIME_SHM_HOST_ID`): the agent's shared-memory endpoints compare it with the
/// peer's.
pub fn host_id(shm: &ShmConfig) -> String {
    shm.host_id_override
        .clone()
        .unwrap_or_else(crate::host::identity)
}

/// A new incarnation id: microseconds since the epoch, shifted, plus random bits, so a
/// restarted agent has a larger one.
pub(super) fn new_instance() -> u64 {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    (us << 8) | (rand::random::<u8>() as u64)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn check_alias(a: &str) -> Result<()> {
    if a.is_empty() {
        return Err(Error::invalid("alias is empty"));
    }
    if a.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!(
            "alias {a:?} contains whitespace or control characters"
        )));
    }
    Ok(())
}

/// What NanoCtrl handed out at registration.
pub(super) struct Registration {
    /// The alias (the one asked for, or a generated one).
    pub alias: String,
    /// `host:port` of Redis (the original's field).
    pub redis_address: String,
    /// The same with credentials, when NanoCtrl shares them (it requires a token).
    pub redis_url: Option<String>,
    /// This host's address on the route to NanoCtrl.
    pub address: String,
    /// The alias's owner token (ours, echoed).
    pub owner_token: String,
}

/// What a registration sends besides the alias and scope.
pub(super) struct Claim<'a> {
    pub address: &'a str,
    pub host_id: &'a str,
    pub hb_interval: Duration,
    /// This incarnation's owner token (see `owner`).
    pub owner_token: &'a str,
    /// The resource record's `nics` (see `nic`).
    pub nics: &'a Value,
}

/// Registers with NanoCtrl, retrying transport errors and 5xx with doubling backoff
/// (with the same owner token, so a registration whose reply was lost is recognised as
/// ours). An alias held by a dead agent is taken over once (that retry is not counted as
/// an attempt).
pub(super) fn register(
    http: &Http,
    alias: Option<&str>,
    scope: Option<&str>,
    host_id: &str,
    nics: &Value,
    opts: &PeerAgentOptions,
    owner_token: &str,
) -> Result<Registration> {
    let attempts = opts.register_attempts.max(1);
    let mut attempt = 1;
    let mut delay = opts.register_backoff;
    let mut took_over = false;
    loop {
        let mut address = String::new();
        let r = http.local_ip().and_then(|ip| {
            address = ip.to_string();
            let claim = Claim {
                address: &address,
                host_id,
                hb_interval: opts.heartbeat_interval,
                owner_token,
                nics,
            };
            register_once(http, alias, scope, &claim)
        });
        let e = match r {
            Ok(mut reg) => {
                reg.address = address;
                return Ok(reg);
            }
            Err(e) => e,
        };
        match e.status() {
            Status::NameConflict if !took_over => {
                let a = alias.expect("conflicts need an explicit alias");
                match stale_holder(http, a, host_id, scope) {
                    Ok(true) => took_over = true,
                    Ok(false) => return Err(e),
                    Err(why) => {
                        return Err(Error::new(
                            Status::NameConflict,
                            format!(
                                "{} (could not check whether the holder is alive: {why})",
                                e.message()
                            ),
                        ))
                    }
                }
            }
            Status::NameConflict | Status::InvalidArgument | Status::PermissionDenied => {
                return Err(e)
            }
            _ if attempt >= attempts => {
                return Err(Error::new(
                    e.status(),
                    format!(
                        "PeerAgent registration failed after {attempt} attempts: {}",
                        e.message()
                    ),
                ))
            }
            _ => {
                warn_log!(
                    "PeerAgent registration attempt {attempt} failed ({e}); retrying in {delay:?}"
                );
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

/// POST /start_peer_agent once (`address` of the result is the claim's).
pub(super) fn register_once(
    http: &Http,
    alias: Option<&str>,
    scope: Option<&str>,
    claim: &Claim<'_>,
) -> Result<Registration> {
    let resource = resource_record(
        claim.host_id,
        claim.address,
        Vec::new(),
        claim.nics,
        claim.hb_interval,
    );
    let mut body = json!({"alias": alias, "address": claim.address, "resource": resource,
                          "owner_token": claim.owner_token,
                          "heartbeat_interval_ms": claim.hb_interval.as_millis() as u64});
    if let Some(s) = scope {
        body["scope"] = s.into();
    }
    let r = http.post("/start_peer_agent", &body)?;
    match r.code {
        200 => {
            let name = r.body.get("name").and_then(Value::as_str);
            let redis = r.body.get("redis_address").and_then(Value::as_str);
            match (name, redis) {
                (Some(n), Some(a)) => Ok(Registration {
                    alias: n.to_string(),
                    redis_address: a.to_string(),
                    redis_url: r
                        .body
                        .get("redis_url")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    address: claim.address.to_string(),
                    owner_token: claim.owner_token.to_string(),
                }),
                _ => Err(Error::new(
                    Status::Protocol,
                    format!(
                        "NanoCtrl /start_peer_agent reply lacks name/redis_address: {}",
                        r.body
                    ),
                )),
            }
        }
        409 => Err(Error::new(
            Status::NameConflict,
            format!(
                "PeerAgent '{}' registration conflict: {}",
                alias.unwrap_or(""),
                r.body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("alias exists in this scope")
            ),
        )),
        401 => Err(unauthorized(&r.body)),
        c if c >= 500 => Err(Error::new(
            Status::Io,
            format!("NanoCtrl /start_peer_agent answered {c}: {}", r.body),
        )),
        c => Err(Error::invalid(format!(
            "NanoCtrl /start_peer_agent answered {c}: {}",
            r.body
        ))),
    }
}

/// Undoes a registration whose agent could not start (POST /cleanup as its owner).
pub(super) fn withdraw(http: &Http, scope: Option<&str>, reg: &Registration) {
    let mut body = json!({"agent_name": reg.alias, "owner_token": reg.owner_token});
    if let Some(s) = scope {
        body["scope"] = s.into();
    }
    let _ = http.post("/cleanup", &body);
    owner::forget(scope, &reg.alias, &reg.owner_token);
}

/// NanoCtrl refused the request for want of its bearer token.
fn unauthorized(body: &Value) -> Error {
    Error::new(
        Status::PermissionDenied,
        format!(
            "NanoCtrl requires a token (PeerAgentOptions::nanoctrl_token or NANOCTRL_TOKEN): {}",
            body.get("message").and_then(Value::as_str).unwrap_or("401")
        ),
    )
}

/// Asks NanoCtrl where Redis is now (after a failover): `/get_redis_address` for a
/// client at `address`. None when NanoCtrl cannot say.
pub(super) fn ask_redis_url(http: &Http, address: &str) -> Option<String> {
    let r = http
        .post("/get_redis_address", &json!({"address": address}))
        .ok()?;
    if r.code != 200 {
        return None;
    }
    r.body
        .get("redis_address")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether the agent record holding `alias` belongs to a dead agent: one of this host
/// whose process is gone, or one whose heartbeats stopped. If so it is cleaned up
/// through NanoCtrl (its peers get the cleanup notice) and `true` is returned. NanoCtrl
/// has the last word for an owned record: it cleans up a live-looking one only for the
/// holder of its owner token, which a predecessor on this host left in its file (see
/// `owner`), presented only when that predecessor's process is gone; otherwise it judges
/// the heartbeats itself, on Redis's clock (`false` until they have stopped). Wall clocks
/// of different hosts are never compared here: they differ, and they jump (a holder
/// whose clock stepped back would look silent although it beats).
fn stale_holder(http: &Http, alias: &str, my_host: &str, scope: Option<&str>) -> Result<bool> {
    // Read the holder's record through NanoCtrl (/query), which needs no Redis access.
    let r = http.post(
        "/query",
        &match scope {
            Some(s) => json!({"scope": s}),
            None => json!({}),
        },
    )?;
    let rec = r
        .body
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(alias))
        })
        .and_then(|e| e.get("resource"))
        .cloned()
        .unwrap_or(Value::Null);
    let host = &rec["host"];
    let same_host = host.get("host_id").and_then(Value::as_str) == Some(my_host);
    let dead_pid = same_host
        && host
            .get("pid")
            .and_then(Value::as_i64)
            .is_some_and(|p| p as u32 != std::process::id() && !owner::pid_alive(p));
    // an agent of this implementation (it beats with an owner token, so NanoCtrl can tell
    // whether it is silent); an original agent's record is never taken over
    let beats = rec.get("heartbeat_interval_ms").is_some();
    let fields = rec.as_object().cloned().unwrap_or_default();
    if fields.is_empty() || !(dead_pid || beats) {
        return Ok(false);
    }
    let mut body = json!({"agent_name": alias});
    if let Some(s) = scope {
        body["scope"] = s.into();
    }
    if dead_pid {
        if let Some(t) = owner::predecessor(scope, alias) {
            body["owner_token"] = t.into();
        }
    }
    let r = http.post("/cleanup", &body)?;
    match r.code {
        200 => {
            warn_log!(
                "PeerAgent alias '{alias}' was held by a dead agent ({}); cleaned it up, taking over",
                if dead_pid {
                    "its process is gone"
                } else {
                    "its heartbeats stopped"
                }
            );
            Ok(true)
        }
        // a live holder
        403 if !dead_pid => Ok(false),
        403 => {
            warn_log!(
                "PeerAgent alias '{alias}': NanoCtrl keeps it for its owner until its heartbeats stop ({})",
                r.body.get("message").and_then(Value::as_str).unwrap_or("403")
            );
            Ok(false)
        }
        401 => Err(unauthorized(&r.body)),
        c => Err(Error::new(
            Status::Io,
            format!("NanoCtrl /cleanup answered {c}: {}", r.body),
        )),
    }
}

/// The resource record: the original's shape (`nics` lists the agent's RDMA NIC port,
/// see `nic`) plus what a successor needs to tell a dead holder of an alias from a live
/// one (host id, pid, last heartbeat), refreshed by every heartbeat.
pub(super) fn resource_record(
    host_id: &str,
    address: &str,
    memory_keys: Vec<String>,
    nics: &Value,
    hb_interval: Duration,
) -> Value {
    let mut transports = vec!["shm", "tcp"];
    if nics.as_array().is_some_and(|a| !a.is_empty()) {
        transports.push("rdma");
    }
    json!({
        "schema_version": 1,
        "host": {"hostname": crate::host::name(), "address": address, "host_id": host_id,
                 "pid": std::process::id()},
        "nics": nics, "accelerators": [], "memory_keys": memory_keys,
        "transports": transports,
        "topology_epoch": 0, "topology_backends": {},
        "heartbeat_at_ms": now_ms(),
        "heartbeat_interval_ms": hb_interval.as_millis() as u64,
    })
}

impl Inner {
    /// The `nics` of the resource record: the agent's NIC port, if it has one.
    pub(super) fn nics_record(&self) -> Value {
        Value::Array(self.nic.iter().map(|n| n.record()).collect())
    }

    /// `v` with this agent's scope and owner token: the fields of every request NanoCtrl
    /// takes on this agent's behalf.
    pub(super) fn scope_body(&self, mut v: Value) -> Value {
        if let Some(s) = &self.scope {
            v["scope"] = s.clone().into();
        }
        v["owner_token"] = self.owner_token.clone().into();
        v
    }

    /// What a new agent does before its control thread starts: publish its record,
    /// remove the stale keys of its alias and empty its inbox. The stream is kept: a
    /// peer may have dialled before this agent existed.
    pub(super) fn announce(&self) -> Result<()> {
        self.publish_record()?;
        for pat in self.keys.stale_patterns(&self.alias) {
            let n = self.store.delete_matching(&pat)?;
            if n > 0 {
                info_log!(
                    "PeerAgent {}: removed {n} stale keys matching {pat}",
                    self.alias
                );
            }
        }
        self.store.delete(&[self.keys.inbox(&self.alias)])?;
        Ok(())
    }

    /// HSETs this agent's fields on its record (the hash NanoCtrl created), only while
    /// the record exists: a missing one is re-created by the heartbeat.
    pub(super) fn publish_record(&self) -> Result<()> {
        let resource = resource_record(
            &self.host_id,
            &self.address,
            self.regions.lock().keys().cloned().collect(),
            &self.nics_record(),
            self.opts.heartbeat_interval,
        )
        .to_string();
        let fields = [
            ("addr", self.address.clone()),
            ("resource", resource.clone()),
            ("topology", resource),
            ("memory_keys", self.memory_keys_json()),
            ("updated_at", (now_ms() / 1000).to_string()),
            ("host_id", self.host_id.clone()),
            ("pid", std::process::id().to_string()),
            ("instance", self.instance.to_string()),
        ];
        self.store
            .hset_existing(&self.keys.agent(&self.alias), &fields)?;
        Ok(())
    }

    /// POST the desired topology: every peer this agent dialled (not just the last one,
    /// which limited the original's cleanup fan-out). NanoCtrl writes `connect_peer` to
    /// this agent's stream for each; the mailbox ignores those already handled.
    pub(super) fn post_topology(&self) {
        let targets: Vec<String> = self.desired.lock().iter().cloned().collect();
        let body = self.scope_body(json!({"target_peers": targets}));
        self.post_or_warn(&format!("/v1/desired_topology/{}", self.alias), &body);
    }

    /// POSTs `body` to `path`; anything but a 200 is logged, not returned.
    fn post_or_warn(&self, path: &str, body: &Value) {
        match self.http.post(path, body) {
            Ok(r) if r.code == 200 => {}
            Ok(r) => warn_log!(
                "PeerAgent {}: {path} answered {}: {}",
                self.alias,
                r.code,
                r.body
            ),
            Err(e) => warn_log!("PeerAgent {}: {path} failed: {e}", self.alias),
        }
    }

    /// The Redis side of shutdown: withdraws the `qp_ready` messages left in the streams
    /// of peers that never registered (`outboxes`: peer -> message ids), deletes this
    /// agent's stream, spec and stale keys.
    pub(super) fn remove_own_keys(&self, outboxes: Vec<(String, Vec<String>)>) {
        for (peer, ids) in outboxes {
            let (stream, agent) = (self.keys.stream(&peer), self.keys.agent(&peer));
            if let Err(e) = self.store.withdraw(&stream, &agent, &ids) {
                warn_log!(
                    "PeerAgent {}: could not withdraw messages to {peer}: {e}",
                    self.alias
                );
            }
        }
        let a = &self.alias;
        if let Err(e) = self.store.delete(&[self.keys.stream(a), self.keys.spec(a)]) {
            warn_log!("PeerAgent {a}: shutdown could not delete its keys: {e}");
        }
        for pat in self.keys.stale_patterns(a) {
            if let Err(e) = self.store.delete_matching(&pat) {
                warn_log!("PeerAgent {a}: shutdown could not delete {pat}: {e}");
            }
        }
    }

    /// POST /cleanup: NanoCtrl deletes the agent hash and inbox and notifies the peers.
    /// Then the owner-token file goes: the alias is free.
    pub(super) fn unregister_best_effort(&self) {
        let body = self.scope_body(json!({"agent_name": self.alias}));
        self.post_or_warn("/cleanup", &body);
        owner::forget(self.scope.as_deref(), &self.alias, &self.owner_token);
    }
}

/// How often the control loop compares Redis's view of the agent's record with its
/// own heartbeats ([`Inner::record_contradicts`]): the longest a Redis clock jump
/// leaves the record missing, or the agent looking dead. One small script per period.
pub(super) const RECORD_CHECK: Duration = Duration::from_secs(1);

/// Redis's clock may run this much ahead of ours between two checks before the agent
/// beats early (clock rates differ; a beat sent early is harmless).
const CLOCK_SLACK: Duration = Duration::from_secs(1);

impl Inner {
    /// Whether Redis's view of this agent's record contradicts its heartbeats, which
    /// run on the monotonic clock (`since_beat`: since the last accepted one was sent):
    /// the record is gone (its TTL ran out because Redis's clock jumped forward, or
    /// Redis lost it), or Redis's clock counts far more time since that beat (it jumped
    /// forward less than the TTL, and a successor would judge this agent dead). A
    /// heartbeat repairs either at once (registering again if the record is gone), so
    /// the control loop asks every [`RECORD_CHECK`] rather than waiting a whole
    /// heartbeat period. Errors count as no: outages are the heartbeat's to report.
    pub(super) fn record_contradicts(&self, since_beat: Duration) -> bool {
        match self.store.beat_age(&self.keys.agent(&self.alias)) {
            Ok(BeatAge::Gone) => true,
            Ok(BeatAge::Ms(ms)) => ms > (since_beat + CLOCK_SLACK).as_millis() as i64,
            Ok(BeatAge::Unknown) | Err(_) => false,
        }
    }

    /// One heartbeat (`POST /heartbeat`): refreshes the record on success, registers
    /// again when NanoCtrl lost it, logs one line per outage otherwise. True when the
    /// record is fresh afterwards (beaten, or registered again).
    pub(super) fn heartbeat(&self, failing: &mut bool) -> bool {
        let body = self.scope_body(json!({"entity_type": "agent", "entity_id": self.alias}));
        let r = self.http.post("/heartbeat", &body);
        let status = r.as_ref().ok().and_then(|r| {
            r.body
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        match (&r, status.as_deref()) {
            (Ok(r), Some("ok")) if r.code == 200 => {
                if std::mem::take(failing) {
                    info_log!("PeerAgent {}: heartbeats succeed again", self.alias);
                }
                // refresh the liveness fields a successor checks (see stale_holder)
                let _ = self.publish_record();
                true
            }
            (Ok(_), Some("not_found")) => {
                warn_log!(
                    "PeerAgent {}: NanoCtrl lost this agent's record; registering again",
                    self.alias
                );
                self.reregister()
            }
            (Ok(r), _) if r.code == 403 => {
                // our heartbeats stopped long enough for another agent to take the
                // alias over: it is theirs now; connections keep working
                if !std::mem::replace(failing, true) {
                    warn_log!(
                        "PeerAgent {}: NanoCtrl refused the heartbeat, another agent owns this alias now: {}",
                        self.alias,
                        r.body
                    );
                }
                false
            }
            _ => {
                // one line per outage, not one per beat
                if !std::mem::replace(failing, true) {
                    match r {
                        Ok(r) => warn_log!(
                            "PeerAgent {}: heartbeat answered {}: {} (retrying every {:?})",
                            self.alias,
                            r.code,
                            r.body,
                            self.opts.heartbeat_interval
                        ),
                        Err(e) => warn_log!(
                            "PeerAgent {}: heartbeat failed: {e} (retrying every {:?})",
                            self.alias,
                            self.opts.heartbeat_interval
                        ),
                    }
                }
                false
            }
        }
    }

    /// Registers again under the same alias (Redis lost the record, or it expired) and
    /// republishes the resource record, every memory region and the desired topology.
    /// Connections are kept: endpoints do not depend on Redis.
    fn reregister(&self) -> bool {
        let nics = self.nics_record();
        let claim = Claim {
            address: &self.address,
            host_id: &self.host_id,
            hb_interval: self.opts.heartbeat_interval,
            owner_token: &self.owner_token,
            nics: &nics,
        };
        if let Err(e) = register_once(&self.http, Some(&self.alias), self.scope.as_deref(), &claim)
        {
            warn_log!("PeerAgent {}: re-registration failed: {e}", self.alias);
            return false;
        }
        self.stats.reregistrations.fetch_add(1, Ordering::Relaxed);
        let mut ok = self.publish_record().is_ok();
        ok &= self.publish_regions();
        if !self.desired.lock().is_empty() {
            self.post_topology();
        }
        if ok {
            info_log!("PeerAgent {}: registered again", self.alias);
        }
        true
    }
}
