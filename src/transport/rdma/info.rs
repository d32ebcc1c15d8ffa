//! The RDMA connection JSON: the envelope common to every transport, plus
//!
//! ```text
//! "io_info":   {"data_channel_info": [QPINFO × num_qp]}        (the original's keys)
//! "ctrl_info": {"qp": QPINFO, "ka_qp": QPINFO,                 (dlslime's own)
//!               "addr": u64, "rkey": u32, "length": u64}
//! "device": "<name>", "link_type": "RoCE" | "IB"
//! QPINFO = {"gid": {"subnet_prefix": u64, "interface_id": u64}, "gidx": i64,
//!           "lid": u16, "qpn": u32, "psn": u64, "mtu": ibv_mtu enum (1=256 … 5=4096)}
//! ```
//!
//! As in the original, `subnet_prefix`/`interface_id` are GID bytes 0–7 and 8–15 read as
//! little-endian u64 (the raw `ibv_gid.global` on a little-endian host), serialised as
//! unsigned numbers (they exceed 2⁶³).

use serde_json::{json, Map, Value};

use super::qp::QpAddr;
use crate::error::Result;
use crate::transport::info::{bad, u64_field};

pub fn qp_to_json(q: &QpAddr) -> Value {
    let lo = u64::from_le_bytes(q.gid[..8].try_into().unwrap());
    let hi = u64::from_le_bytes(q.gid[8..].try_into().unwrap());
    json!({
        "gid": {"subnet_prefix": lo, "interface_id": hi},
        "gidx": q.gidx,
        "lid": q.lid,
        "qpn": q.qpn,
        "psn": q.psn,
        "mtu": q.mtu,
    })
}

pub fn qp_from_json(v: &Value) -> Result<QpAddr> {
    let o = v
        .as_object()
        .ok_or_else(|| bad("a QP entry of the RDMA endpoint info is not an object"))?;
    let gid = o
        .get("gid")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("QP entry lacks \"gid\""))?;
    let lo = u64_field(gid, "subnet_prefix")?;
    let hi = u64_field(gid, "interface_id")?;
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&lo.to_le_bytes());
    g[8..].copy_from_slice(&hi.to_le_bytes());
    let gidx = o
        .get("gidx")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("QP entry lacks a numeric \"gidx\""))?;
    let small = |k: &str, max: u64| -> Result<u64> {
        let x = u64_field(o, k)?;
        if x > max {
            return Err(bad(format!("QP entry field {k:?} = {x} is out of range")));
        }
        Ok(x)
    };
    let mtu = small("mtu", 5)?;
    if mtu == 0 {
        return Err(bad("QP entry \"mtu\" must be an ibv_mtu value 1..5"));
    }
    Ok(QpAddr {
        gid: g,
        gidx: i32::try_from(gidx).map_err(|_| bad("\"gidx\" out of range"))?,
        lid: small("lid", u16::MAX as u64)? as u16,
        qpn: small("qpn", 0xff_ffff)? as u32,
        psn: small("psn", 0xff_ffff)? as u32,
        mtu: mtu as u32,
    })
}

/// The peer's control channel: its message and keepalive QPs and the registered word
/// keepalive writes go to.
pub struct CtrlInfo {
    pub qp: QpAddr,
    pub ka_qp: QpAddr,
    pub addr: u64,
    pub rkey: u32,
}

pub fn ctrl_to_json(c: &CtrlInfo) -> Value {
    json!({
        "qp": qp_to_json(&c.qp),
        "ka_qp": qp_to_json(&c.ka_qp),
        "addr": c.addr,
        "rkey": c.rkey,
        "length": 8,
    })
}

/// Whether a peer's info comes from the original DLSlime: its `io_info`, no envelope
/// (`transport`) and no `ctrl_info`. Such a peer gets one-sided operations only.
pub fn is_original(obj: &Map<String, Value>) -> bool {
    obj.contains_key("io_info") && !obj.contains_key("transport") && !obj.contains_key("ctrl_info")
}

/// `(data QPs, control channel)` of a peer's info object; no control channel for a
/// peer built from the original DLSlime ([`is_original`]).
pub fn parse_peer(obj: &Map<String, Value>) -> Result<(Vec<QpAddr>, Option<CtrlInfo>)> {
    let data = obj
        .get("io_info")
        .and_then(|v| v.get("data_channel_info"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("RDMA endpoint info lacks \"io_info\".\"data_channel_info\""))?
        .iter()
        .map(qp_from_json)
        .collect::<Result<Vec<_>>>()?;
    if is_original(obj) {
        return Ok((data, None));
    }
    let c = obj
        .get("ctrl_info")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("RDMA endpoint info lacks \"ctrl_info\""))?;
    let ctrl = CtrlInfo {
        qp: qp_from_json(c.get("qp").unwrap_or(&Value::Null))?,
        ka_qp: qp_from_json(c.get("ka_qp").unwrap_or(&Value::Null))?,
        addr: u64_field(c, "addr")?,
        rkey: u32::try_from(u64_field(c, "rkey")?).map_err(|_| bad("\"rkey\" out of range"))?,
    };
    Ok((data, Some(ctrl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qpinfo_round_trips_with_big_gid_words() {
        let q = QpAddr {
            gid: [
                0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0xec, 0x91, 0x42, 0xff, 0xfe, 0x08, 0x3b, 0x8c,
            ],
            gidx: 1,
            lid: 0,
            qpn: 0x11,
            psn: 0xe139cb,
            mtu: 3,
        };
        let v = qp_to_json(&q);
        // interface_id's top byte is 0x8c: above 2^63, still an exact unsigned number
        assert!(v["gid"]["interface_id"].as_u64().unwrap() > 1 << 63);
        let text = serde_json::to_string(&v).unwrap();
        let back = qp_from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, q);
        assert_eq!(v["gid"]["subnet_prefix"], 0x80fe);
        let mut broken = v.clone();
        broken["mtu"] = 9.into();
        assert!(qp_from_json(&broken).is_err());
        broken["mtu"] = 3.into();
        broken["qpn"] = (1u64 << 24).into();
        assert!(qp_from_json(&broken).is_err());
    }
}
