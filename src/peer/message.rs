//! The control-plane messages an agent reads, decoded and checked without acting on
//! them: stream mailbox entries (`connect_peer`, `qp_ready`, written by NanoCtrl and by
//! peers) and cleanup notices (`{"type":"cleanup","peer":X}`, LPUSHed by NanoCtrl).
//! `control` reads them from Redis, `handshake` reacts to them.

use std::collections::HashMap;

use serde_json::Value;

use super::links::PeerView;
use super::negotiate::{Transport, TransportRequest};

/// A mailbox entry that passed every check.
pub(super) enum Message<'a> {
    ConnectPeer {
        peer: &'a str,
    },
    QpReady {
        peer: &'a str,
        view: PeerView,
        dst_instance: Option<u64>,
        dst_nonce: Option<u64>,
    },
    /// A `qp_ready` of the original DLSlime agent (no `src_instance`/`src_nonce`): well
    /// formed, but its endpoints cannot talk to ours.
    OriginalPeer {
        peer: &'a str,
        /// It offered its TCP endpoint rather than RDMA.
        offers_tcp: bool,
    },
}

/// Decodes one stream entry addressed to agent `alias`; `Err` says why it is malformed.
pub(super) fn parse_message<'a>(
    alias: &str,
    map: &'a HashMap<String, String>,
) -> Result<Message<'a>, String> {
    let kind = map.get("type").ok_or("no \"type\" field")?;
    let peer = map.get("peer").ok_or("no \"peer\" field")?;
    if peer.is_empty() || peer == alias {
        return Err("\"peer\" is empty or this agent itself".into());
    }
    match kind.as_str() {
        "connect_peer" => Ok(Message::ConnectPeer { peer }),
        "qp_ready" => {
            let (Some(qp_info), Some(meta)) = (map.get("qp_info"), map.get("conn_meta")) else {
                return Err("qp_ready without qp_info/conn_meta".into());
            };
            let qp_info: Value = match serde_json::from_str(qp_info) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err("qp_info is not a JSON object".into()),
            };
            let meta: Value = match serde_json::from_str(meta) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err("conn_meta is not a JSON object".into()),
            };
            let (Some(instance), Some(nonce)) = (
                meta.get("src_instance").and_then(Value::as_u64),
                meta.get("src_nonce").and_then(Value::as_u64),
            ) else {
                return Ok(Message::OriginalPeer {
                    peer,
                    offers_tcp: original_offers_tcp(&meta, &qp_info),
                });
            };
            let view = PeerView {
                instance,
                nonce,
                host_id: meta
                    .get("host_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                request: TransportRequest::from_wire(
                    meta.get("transport_request")
                        .and_then(Value::as_str)
                        .unwrap_or("auto"),
                ),
                transport: qp_info
                    .get("transport")
                    .and_then(Value::as_str)
                    .and_then(Transport::parse),
                rdma: meta.get("rdma").and_then(Value::as_bool).unwrap_or(false),
                qp_num: meta.get("qp_num").and_then(Value::as_u64).unwrap_or(0) as usize,
                info: qp_info,
            };
            Ok(Message::QpReady {
                peer,
                view,
                dst_instance: meta.get("dst_instance").and_then(Value::as_u64),
                dst_nonce: meta.get("dst_nonce").and_then(Value::as_u64),
            })
        }
        other => Err(format!("unknown message type {other:?}")),
    }
}

/// Whether an original agent's `qp_ready` offers its TCP endpoint (the 0.1.23 wheel:
/// `conn_meta.transport` "tcp", `qp_info` `{host, port, mr_info}`) rather than RDMA.
fn original_offers_tcp(meta: &Value, qp_info: &Value) -> bool {
    meta.get("transport").and_then(Value::as_str) == Some("tcp")
        || (qp_info.get("host").is_some() && qp_info.get("port").is_some())
}

/// Decodes a cleanup notice: the alias of the peer that shut down.
pub(crate) fn parse_notice(msg: &str) -> Result<String, &'static str> {
    let v: Value = serde_json::from_str(msg).map_err(|_| "notice is not JSON")?;
    match (
        v.get("type").and_then(Value::as_str),
        v.get("peer").and_then(Value::as_str),
    ) {
        (Some("cleanup"), Some(peer)) => Ok(peer.to_string()),
        _ => Err("notice is not {\"type\":\"cleanup\",\"peer\":…}"),
    }
}

/// [`parse_message`] for `crate::fuzz`: the outcome only (the decoded message's types
/// stay private to the agent).
pub(crate) fn check_message(alias: &str, map: &HashMap<String, String>) -> Result<(), String> {
    parse_message(alias, map).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn qp_ready_is_decoded_and_checked() {
        let m = map(&[
            ("type", "qp_ready"),
            ("peer", "b"),
            ("qp_info", r#"{"transport":"tcp"}"#),
            (
                "conn_meta",
                r#"{"src_instance":1,"src_nonce":2,"dst_nonce":3,"host_id":"h"}"#,
            ),
        ]);
        match parse_message("a", &m) {
            Ok(Message::QpReady {
                peer,
                view,
                dst_instance,
                dst_nonce,
            }) => {
                assert_eq!(peer, "b");
                assert_eq!((view.instance, view.nonce), (1, 2));
                assert_eq!(view.transport, Some(Transport::Tcp));
                assert_eq!((dst_instance, dst_nonce), (None, Some(3)));
            }
            _ => panic!("a well-formed qp_ready must decode"),
        }
        assert!(parse_message("b", &m).is_err(), "a message from ourselves");
        let original = map(&[
            ("type", "qp_ready"),
            ("peer", "b"),
            ("qp_info", r#"{"host":"h","port":1}"#),
            ("conn_meta", r#"{"transport":"tcp"}"#),
        ]);
        assert!(matches!(
            parse_message("a", &original),
            Ok(Message::OriginalPeer {
                peer: "b",
                offers_tcp: true
            })
        ));
        let no_meta = map(&[("type", "qp_ready"), ("peer", "b"), ("qp_info", "{}")]);
        assert!(parse_message("a", &no_meta).is_err());
        let array = map(&[
            ("type", "qp_ready"),
            ("peer", "b"),
            ("qp_info", "[]"),
            ("conn_meta", r#"{"src_instance":1,"src_nonce":2}"#),
        ]);
        assert!(parse_message("a", &array).is_err());
        assert!(parse_message("a", &map(&[("type", "x"), ("peer", "b")])).is_err());
    }

    #[test]
    fn cleanup_notice() {
        assert_eq!(
            parse_notice(r#"{"type":"cleanup","peer":"p"}"#),
            Ok("p".into())
        );
        assert!(parse_notice(r#"{"type":"other","peer":"p"}"#).is_err());
        assert!(parse_notice("not json").is_err());
    }
}
