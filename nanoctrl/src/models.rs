//! Request and response bodies. Field names, defaults and which fields are required
//! follow the original exactly (spec §1.3): clients send these shapes today.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// `/unregister` and `/get_entity_info`: `entity_type` defaults to "service".
#[derive(Debug, Deserialize)]
pub struct EntityRefBody {
    #[serde(default = "default_entity_type")]
    pub entity_type: String,
    pub entity_id: String,
    #[serde(default)]
    pub scope: Option<String>,
}

/// `/heartbeat`: unlike the other entity routes, `entity_type` has no default.
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    pub entity_type: String,
    pub entity_id: String,
    #[serde(default)]
    pub scope: Option<String>,
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

#[derive(Debug, Serialize)]
pub struct StatusMessage {
    pub status: &'static str,
    pub message: String,
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
}

#[derive(Debug, Serialize)]
pub struct StartPeerAgentResponse {
    pub status: &'static str,
    pub name: String,
    /// `host:port`, no scheme (PeerAgent splits it on ':').
    pub redis_address: String,
    /// Echoed only when the request carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ScopeBody {
    #[serde(default)]
    pub scope: Option<String>,
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
}

/// Stored verbatim (re-serialized) at `spec:topology:{agent}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct DesiredTopologySpec {
    pub target_peers: Vec<String>,
    #[serde(default)]
    pub min_bw: Option<String>,
    #[serde(default)]
    pub symmetric: bool,
    #[serde(default)]
    pub scope: Option<String>,
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

#[derive(Debug, Serialize)]
pub struct MrInfoResponse {
    pub mr_info: Option<MrInfo>,
}

/// `/get_redis_address` takes an (ignored) JSON object; an empty body is a 400.
#[derive(Debug, Deserialize)]
pub struct EmptyBody {}

#[derive(Debug, Serialize)]
pub struct RedisAddressResponse {
    pub status: &'static str,
    pub redis_address: String,
}
