//! Request and response bodies. Field names, defaults and which fields are required
//! follow the original exactly (spec §1.3): clients send these shapes today. The fields
//! this server adds (`owner_token`, `owned`, `heartbeat_interval_ms`, `address` of
//! `/get_redis_address`, `redis_url` in replies) are optional, so the original's bodies
//! mean what they meant. Each body's field limits are in its `Validate` impl.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::Validate;
use crate::error::AppError;
use crate::limits::{self, ADDRESS_MAX};

fn default_entity_type() -> String {
    "service".to_string()
}
fn default_json_object() -> Value {
    Value::Object(Default::default())
}
fn default_name_prefix() -> String {
    "agent".to_string()
}

#[derive(Debug, Deserialize)]
pub struct RegisterEntityBody {
    #[serde(default = "default_entity_type")]
    pub entity_type: String,
    pub entity_id: String,
    pub kind: String,
    #[serde(default)]
    pub endpoint: Option<Value>,
    #[serde(default = "default_json_object")]
    pub metadata: Value,
    #[serde(default)]
    pub resource: Option<Value>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl Validate for RegisterEntityBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::name("entity_type", &self.entity_type)?;
        limits::name("entity_id", &self.entity_id)?;
        limits::name("kind", &self.kind)?;
        limits::json("endpoint", self.endpoint.as_ref())?;
        limits::json("metadata", Some(&self.metadata))?;
        limits::json("resource", self.resource.as_ref())?;
        limits::scope(self.scope.as_deref())
    }
}

/// `/unregister` and `/get_entity_info`: `entity_type` defaults to "service".
#[derive(Debug, Deserialize)]
pub struct EntityRefBody {
    #[serde(default = "default_entity_type")]
    pub entity_type: String,
    pub entity_id: String,
    #[serde(default)]
    pub scope: Option<String>,
}

impl Validate for EntityRefBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::name("entity_type", &self.entity_type)?;
        limits::name("entity_id", &self.entity_id)?;
        limits::scope(self.scope.as_deref())
    }
}

/// `/heartbeat`: unlike the other entity routes, `entity_type` has no default.
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    pub entity_type: String,
    pub entity_id: String,
    #[serde(default)]
    pub scope: Option<String>,
    /// Required for an owned agent (see `owner.rs`).
    #[serde(default)]
    pub owner_token: Option<String>,
}

impl Validate for HeartbeatBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::name("entity_type", &self.entity_type)?;
        limits::name("entity_id", &self.entity_id)?;
        limits::owner_token(self.owner_token.as_deref())?;
        limits::scope(self.scope.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct ListEntitiesBody {
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl Validate for ListEntitiesBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::opt_text("entity_type", self.entity_type.as_deref(), limits::NAME_MAX)?;
        limits::opt_text("kind", self.kind.as_deref(), limits::NAME_MAX)?;
        limits::scope(self.scope.as_deref())
    }
}

#[derive(Debug, Serialize)]
pub struct StatusMessage {
    pub status: &'static str,
    pub message: String,
}

impl StatusMessage {
    /// `{"status": "ok", "message": message}`.
    pub fn ok(message: String) -> StatusMessage {
        StatusMessage {
            status: "ok",
            message,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EntityInfoResponse {
    pub status: &'static str,
    pub entity_info: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct ListEntitiesResponse {
    pub status: &'static str,
    pub entities: Vec<Value>,
}

#[derive(Debug, Deserialize)]
pub struct StartPeerAgentBody {
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub ib_port: Option<u32>,
    #[serde(default)]
    pub link_type: Option<String>,
    pub address: String,
    #[serde(default = "default_name_prefix")]
    pub name_prefix: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub resource: Option<Value>,
    /// Own the alias with this token (chosen by the caller, e.g. so that a retry of a
    /// registration whose reply was lost is recognised); see `owner.rs`.
    #[serde(default)]
    pub owner_token: Option<String>,
    /// Own the alias with a token NanoCtrl generates (returned in the reply).
    #[serde(default)]
    pub owned: bool,
    /// The caller's heartbeat period, for the liveness of an owned alias (default 15 s).
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
}

impl Validate for StartPeerAgentBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::opt_text("alias", self.alias.as_deref(), limits::NAME_MAX)?;
        limits::opt_text("device", self.device.as_deref(), ADDRESS_MAX)?;
        limits::opt_text("link_type", self.link_type.as_deref(), ADDRESS_MAX)?;
        limits::text("address", &self.address, ADDRESS_MAX)?;
        limits::name("name_prefix", &self.name_prefix)?;
        limits::json("resource", self.resource.as_ref())?;
        limits::owner_token(self.owner_token.as_deref())?;
        limits::scope(self.scope.as_deref())
    }
}

#[derive(Debug, Serialize)]
pub struct StartPeerAgentResponse {
    pub status: &'static str,
    pub name: String,
    /// `host:port`, no scheme (PeerAgent splits it on ':').
    pub redis_address: String,
    /// The same node as a URL with the Redis credentials: only when NanoCtrl requires a
    /// bearer token (so the caller presented it) and has credentials to share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Echoed only when the request carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    /// The alias's owner token, when the registration asked for ownership.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ScopeBody {
    #[serde(default)]
    pub scope: Option<String>,
}

impl Validate for ScopeBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::scope(self.scope.as_deref())
    }
}

/// One element of the bare array `/query` returns.
#[derive(Debug, Serialize)]
pub struct PeerAgentInfo {
    pub name: String,
    pub device: String,
    pub ib_port: u32,
    pub link_type: String,
    pub address: String,
    pub resource: Option<Value>,
    pub memory_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct CleanupBody {
    pub agent_name: String,
    #[serde(default)]
    pub scope: Option<String>,
    /// Required to clean up an owned, live agent.
    #[serde(default)]
    pub owner_token: Option<String>,
}

impl Validate for CleanupBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::name("agent_name", &self.agent_name)?;
        limits::owner_token(self.owner_token.as_deref())?;
        limits::scope(self.scope.as_deref())
    }
}

/// Stored verbatim (re-serialized, without the owner token) at `spec:topology:{agent}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct DesiredTopologySpec {
    pub target_peers: Vec<String>,
    #[serde(default)]
    pub min_bw: Option<String>,
    #[serde(default)]
    pub symmetric: bool,
    #[serde(default)]
    pub scope: Option<String>,
    /// Required for an owned, live agent; never stored.
    #[serde(default, skip_serializing)]
    pub owner_token: Option<String>,
}

impl Validate for DesiredTopologySpec {
    fn validate(&self) -> Result<(), AppError> {
        limits::names("target_peers", &self.target_peers)?;
        limits::opt_text("min_bw", self.min_bw.as_deref(), ADDRESS_MAX)?;
        limits::owner_token(self.owner_token.as_deref())?;
        limits::scope(self.scope.as_deref())
    }
}

#[derive(Debug, Serialize)]
pub struct OkResponse {
    pub status: &'static str,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct MrInfo {
    pub addr: u64,
    pub length: usize,
    pub rkey: u32,
    pub lkey: u32,
}

#[derive(Debug, Deserialize)]
pub struct RegisterMrBody {
    pub agent_name: String,
    pub mr_name: String,
    pub addr: u64,
    pub length: usize,
    pub rkey: u32,
    #[serde(default)]
    pub lkey: u32,
    #[serde(default)]
    pub scope: Option<String>,
    /// Required when `agent_name` is an owned, live agent.
    #[serde(default)]
    pub owner_token: Option<String>,
}

impl Validate for RegisterMrBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::name("agent_name", &self.agent_name)?;
        limits::name("mr_name", &self.mr_name)?;
        limits::owner_token(self.owner_token.as_deref())?;
        limits::scope(self.scope.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct GetMrInfoBody {
    /// Required by the original's schema although unused; kept so the same bodies
    /// are accepted and rejected.
    #[allow(dead_code)]
    pub src: String,
    pub dst: String,
    pub mr_name: String,
    #[serde(default)]
    pub scope: Option<String>,
}

impl Validate for GetMrInfoBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::name("src", &self.src)?;
        limits::name("dst", &self.dst)?;
        limits::name("mr_name", &self.mr_name)?;
        limits::scope(self.scope.as_deref())
    }
}

#[derive(Debug, Serialize)]
pub struct MrInfoResponse {
    pub mr_info: Option<MrInfo>,
}

/// `/get_redis_address` takes a JSON object (an empty body is a 400); the original
/// ignored it. `address`, the caller's host, picks the Redis address that host can
/// reach, as `/start_peer_agent` does.
#[derive(Debug, Deserialize)]
pub struct RedisAddressBody {
    #[serde(default)]
    pub address: Option<String>,
}

impl Validate for RedisAddressBody {
    fn validate(&self) -> Result<(), AppError> {
        limits::opt_text("address", self.address.as_deref(), ADDRESS_MAX)
    }
}

#[derive(Debug, Serialize)]
pub struct RedisAddressResponse {
    pub status: &'static str,
    pub redis_address: String,
}
