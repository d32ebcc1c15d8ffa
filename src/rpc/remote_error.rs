//! The content of an exception reply ([`RemoteError`]): JSON
//! `{"type","message","traceback"}`, so any language can read it.

use serde_json::{json, Value};

/// An exception reply's content: JSON `{"type","message","traceback"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteError {
    pub type_name: String,
    pub message: String,
    pub traceback: String,
}

impl RemoteError {
    /// Parses an exception payload; undecodable bytes become the message.
    pub fn parse(b: &[u8]) -> RemoteError {
        match serde_json::from_slice::<Value>(b) {
            Ok(v) => {
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                RemoteError {
                    type_name: s("type"),
                    message: s("message"),
                    traceback: s("traceback"),
                }
            }
            Err(e) => RemoteError {
                type_name: "RpcError".into(),
                message: format!("<failed to decode remote exception: {e}>"),
                traceback: String::new(),
            },
        }
    }

    /// JSON bytes; the traceback is replaced by a note when everything would not fit in
    /// `limit` bytes (exception replies never need the bulk path).
    pub fn to_json(&self, limit: usize) -> Vec<u8> {
        let v =
            json!({"type": self.type_name, "message": self.message, "traceback": self.traceback});
        let b = v.to_string().into_bytes();
        if b.len() <= limit {
            return b;
        }
        let mut msg = self.message.clone();
        loop {
            let v = json!({"type": self.type_name, "message": msg, "traceback": "<truncated: traceback exceeds slot size>"});
            let b = v.to_string().into_bytes();
            if b.len() <= limit || msg.is_empty() {
                return b;
            }
            let mut k = msg.len() / 2;
            while !msg.is_char_boundary(k) {
                k -= 1;
            }
            msg.truncate(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_error_json_round_trip_and_truncation() {
        let e = RemoteError {
            type_name: "ValueError".into(),
            message: "bad".into(),
            traceback: "tb".into(),
        };
        assert_eq!(RemoteError::parse(&e.to_json(4096)), e);
        let long = RemoteError {
            type_name: "E".into(),
            message: "é".repeat(3000),
            traceback: "x".repeat(10_000),
        };
        let b = long.to_json(500);
        assert!(b.len() <= 500, "{}", b.len());
        let p = RemoteError::parse(&b);
        assert_eq!(p.type_name, "E");
        assert_eq!(p.traceback, "<truncated: traceback exceeds slot size>");
        assert!(p.message.starts_with("éé") && p.message.len() < 500);
        let bad = RemoteError::parse(b"\xff not json");
        assert!(bad
            .message
            .starts_with("<failed to decode remote exception"));
    }
}
