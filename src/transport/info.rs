//! The `endpoint_info` envelope common to every transport:
//! `{"transport", "version", "mr_info", ...transport fields}`.

use serde_json::{Map, Value};

use crate::error::{Error, Result, Status};
use crate::memory::RemotePool;

/// Bumped whenever any transport's wire format changes incompatibly.
pub const PROTOCOL_VERSION: u64 = 1;

/// Builds the envelope around a transport's own fields.
pub fn envelope(transport: &str, mr_info: Value, fields: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("transport".into(), transport.into());
    m.insert("version".into(), PROTOCOL_VERSION.into());
    m.insert("mr_info".into(), mr_info);
    m.extend(fields);
    Value::Object(m)
}

/// Checks the envelope of a peer's info and returns its object.
pub fn check_envelope<'a>(info: &'a Value, transport: &str) -> Result<&'a Map<String, Value>> {
    let obj = info
        .as_object()
        .ok_or_else(|| bad("endpoint info is not a JSON object"))?;
    match obj.get("transport").and_then(Value::as_str) {
        Some(t) if t == transport => {}
        Some(t) => {
            return Err(bad(format!(
                "endpoint info is for transport {t:?}, this endpoint is {transport:?}"
            )))
        }
        None => return Err(bad("endpoint info lacks \"transport\"")),
    }
    match obj.get("version").and_then(Value::as_u64) {
        Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(Error::new(
                Status::VersionMismatch,
                format!("peer speaks protocol version {v}, this library speaks {PROTOCOL_VERSION}"),
            ))
        }
        None => return Err(bad("endpoint info lacks a numeric \"version\"")),
    }
    Ok(obj)
}

/// Parses JSON text into a value, with a clear error.
pub fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| bad(format!("endpoint info is not valid JSON: {e}")))
}

/// Registers the peer's published regions sorted by handle, as the original does, so
/// remote handles equal the peer's local handles when this side registered none before.
/// Everything is validated before anything is registered.
pub fn register_peer_regions(remote: &RemotePool, info: &Map<String, Value>) -> Result<()> {
    let mrs = match info.get("mr_info") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("\"mr_info\" is not an object")),
    };
    let mut entries = Vec::with_capacity(mrs.len());
    for (name, v) in mrs {
        let region = crate::memory::RemoteRegion::from_json(v)?;
        let handle = v.get("handle").and_then(Value::as_u64).unwrap_or(u64::MAX);
        entries.push((handle, name.as_str(), region));
    }
    entries.sort_by_key(|(h, n, _)| (*h, *n));
    for (_, name, region) in entries {
        remote.register(name, region)?;
    }
    Ok(())
}

pub(crate) fn bad(msg: impl Into<String>) -> Error {
    Error::new(Status::InvalidEndpointInfo, msg)
}

/// Reads a required string field.
pub fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("endpoint info lacks string field {key:?}")))
}

/// Reads a required unsigned field.
pub fn u64_field(obj: &Map<String, Value>, key: &str) -> Result<u64> {
    obj.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(format!("endpoint info lacks numeric field {key:?}")))
}

/// A peer's label for the counters ([`crate::obs`]) until something better (a PeerAgent
/// alias) replaces it: `host:port` (TCP), `pid N` (shared memory), else the transport.
pub fn peer_label(info: &Value) -> String {
    let host = info.get("host").and_then(Value::as_str);
    let port = info.get("port").and_then(Value::as_u64);
    let pid = info.get("pid").and_then(Value::as_u64);
    match (host, port, pid) {
        (Some(h), Some(p), _) => format!("{h}:{p}"),
        (_, _, Some(pid)) => format!("pid {pid}"),
        _ => info
            .get("transport")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_checks() {
        let v = envelope("tcp", json!({}), Map::new());
        assert!(check_envelope(&v, "tcp").is_ok());
        assert_eq!(
            check_envelope(&v, "shm").unwrap_err().status(),
            Status::InvalidEndpointInfo
        );
        let old = json!({"transport": "tcp", "version": 99});
        assert_eq!(
            check_envelope(&old, "tcp").unwrap_err().status(),
            Status::VersionMismatch
        );
        assert_eq!(
            check_envelope(&json!([1]), "tcp").unwrap_err().status(),
            Status::InvalidEndpointInfo
        );
        assert_eq!(
            parse("{nope").unwrap_err().status(),
            Status::InvalidEndpointInfo
        );
    }

    #[test]
    fn peer_regions_sorted_by_handle() {
        let remote = RemotePool::default();
        let info = json!({"mr_info": {
            "b": {"handle": 1, "addr": 200, "rkey": 2, "length": 10},
            "a": {"handle": 0, "addr": 100, "rkey": 1, "length": 10}}});
        register_peer_regions(&remote, info.as_object().unwrap()).unwrap();
        assert_eq!(remote.handle("a"), Some(0));
        assert_eq!(remote.handle("b"), Some(1));
        let broken = json!({"mr_info": {"x": {"addr": 1}}});
        assert!(
            register_peer_regions(&RemotePool::default(), broken.as_object().unwrap()).is_err()
        );
    }
}
