//! HTTP on a raw socket, as an attacker (or a minimal health check) sends it: shared by
//! the PeerAgent tests (`tests/peer_fixture`) and NanoCtrl's tests (`nanoctrl/tests/common`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::Duration;

/// Sends `request` as is on a new connection to 127.0.0.1:`port` and reads the whole
/// reply; None when the server cannot be reached.
pub fn raw(port: u16, request: &[u8], timeout: Duration) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(request).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `POST path` with `body` as given and extra header lines (`"Name: value\r\n"`…):
/// (status, body text).
pub fn raw_post(port: u16, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let reply = raw(port, &req, Duration::from_secs(10)).expect("server reachable");
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let text = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, text.to_string())
}

/// `GET /` answers 200 with NanoCtrl's text (sending the bearer token, if any).
pub fn nanoctrl_up(port: u16, token: Option<&str>) -> bool {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    raw(port, req.as_bytes(), Duration::from_millis(500))
        .is_some_and(|r| r.starts_with("HTTP/1.1 200") && r.contains("NanoCtrl Server Running"))
}
