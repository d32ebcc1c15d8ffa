//! A minimal blocking HTTP/1.1 client for NanoCtrl's JSON routes: one connection per
//! request (`Connection: close`), deadlines on connect/read/write, `Content-Length` or
//! chunked bodies. NanoCtrl is the only server it talks to, so this is all it needs, and
//! the core library stays free of an HTTP stack and of tokio.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result, Status};

#[derive(Clone, Debug)]
pub struct Http {
    host: String,
    port: u16,
    timeout: Duration,
}

/// A reply: status code and body (JSON when it parses, else a string value).
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
}

impl Http {
    /// `http://host:port[/]`, `host:port` or `host` (port 80). https is refused.
    pub fn new(url: &str, timeout: Duration) -> Result<Http> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(Error::new(
                Status::Unsupported,
                format!("NanoCtrl URL {url:?}: https is not supported"),
            ));
        } else if url.contains("://") {
            return Err(Error::invalid(format!(
                "NanoCtrl URL {url:?}: want http://host:port"
            )));
        } else {
            url
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(Error::invalid(format!(
                "NanoCtrl URL {url:?}: want http://host:port"
            )));
        }
        let (host, port) = split_host_port(rest, 80)
            .ok_or_else(|| Error::invalid(format!("NanoCtrl URL {url:?}: bad port")))?;
        Ok(Http {
            host,
            port,
            timeout,
        })
    }

    fn addr(&self) -> Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| Error::io(&format!("resolve {}", self.host), e))?
            .next()
            .ok_or_else(|| Error::new(Status::Io, format!("{} does not resolve", self.host)))
    }

    /// The local IP of a connection to NanoCtrl: the address peers on NanoCtrl's side
    /// of the network can reach this host at.
    pub fn local_ip(&self) -> Result<IpAddr> {
        let s = TcpStream::connect_timeout(&self.addr()?, self.timeout).map_err(|e| {
            Error::io(
                &format!("connect to NanoCtrl {}:{}", self.host, self.port),
                e,
            )
        })?;
        Ok(s.local_addr().map_err(|e| Error::io("local_addr", e))?.ip())
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        let ctx = |what: &str| format!("NanoCtrl {}:{} {what} {path}", self.host, self.port);
        let mut s = TcpStream::connect_timeout(&self.addr()?, self.timeout)
            .map_err(|e| Error::io(&ctx("connect for"), e))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(self.timeout))
            .and_then(|_| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| Error::io("set socket timeout", e))?;
        let payload = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            self.host,
            self.port,
            payload.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| Error::io(&ctx("send"), e))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| Error::io(&ctx("read reply of"), e))?;
        parse_reply(&raw)
            .map_err(|m| Error::new(Status::Protocol, ctx(&format!("bad reply ({m}) to"))))
    }
}

fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(r) = s.strip_prefix('[') {
        let (h, rest) = r.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => default_port,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => Some((s.to_string(), default_port)), // bare IPv6
        None => Some((s.to_string(), default_port)),
    }
}

/// `host:port` (as NanoCtrl's `redis_address`, or a `redis://` URL) to a redis URL.
pub fn redis_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("redis://{addr}")
    }
}

fn parse_reply(raw: &[u8]) -> std::result::Result<Reply, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header terminator")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().ok_or("empty reply")?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    let rest = &raw[end + 4..];
    let body: Vec<u8> = if chunked {
        let mut out = Vec::new();
        let mut p = rest;
        loop {
            let nl = p.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
            let size_txt = std::str::from_utf8(&p[..nl]).map_err(|_| "bad chunk size")?;
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| "bad chunk size")?;
            p = &p[nl + 2..];
            if size == 0 {
                break;
            }
            if p.len() < size {
                return Err("truncated chunk".into());
            }
            out.extend_from_slice(&p[..size]);
            p = &p[(size + 2).min(p.len())..];
        }
        out
    } else {
        match length {
            Some(n) if rest.len() >= n => rest[..n].to_vec(),
            Some(_) => return Err("truncated body".into()),
            None => rest.to_vec(),
        }
    };
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(Reply { code, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_replies() {
        let h = Http::new("http://127.0.0.1:3000/", Duration::from_secs(1)).unwrap();
        assert_eq!((h.host.as_str(), h.port), ("127.0.0.1", 3000));
        let h = Http::new("localhost:9", Duration::from_secs(1)).unwrap();
        assert_eq!((h.host.as_str(), h.port), ("localhost", 9));
        let h = Http::new("http://[::1]:7", Duration::from_secs(1)).unwrap();
        assert_eq!((h.host.as_str(), h.port), ("::1", 7));
        assert!(Http::new("https://x", Duration::from_secs(1)).is_err());
        assert!(Http::new("http://x:notaport", Duration::from_secs(1)).is_err());
        assert!(Http::new("http://x/path", Duration::from_secs(1)).is_err());
        let r =
            parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\":true}\n").unwrap();
        assert_eq!(r.code, 200);
        assert_eq!(r.body["a"], true);
        let r = parse_reply(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.code, 409);
        assert_eq!(r.body["a"], 1);
        let r = parse_reply(b"HTTP/1.1 415 X\r\ncontent-length: 4\r\n\r\nnope").unwrap();
        assert_eq!(r.body, Value::String("nope".into()));
        assert!(parse_reply(b"garbage").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab").is_err());
        assert_eq!(redis_url("127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
