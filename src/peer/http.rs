//! A minimal blocking HTTP/1.1 client for NanoCtrl's JSON routes: one connection per
//! request (`Connection: close`), deadlines on connect/read/write, `Content-Length` or
//! chunked bodies. NanoCtrl is the only server it talks to, so this is all it needs, and
//! the core library stays free of an HTTP stack and of tokio.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::config::comma_list;
use crate::error::{Error, Result, Status};

/// NanoCtrl replicas (one or more; they share one Redis and hold no state of their own,
/// so any of them can answer any request) and the bearer token they require.
///
/// A request goes to the replica that answered last; when it cannot be reached, or
/// answers 5xx, the next one is tried, so one replica dying costs one failed connect.
#[derive(Clone)]
pub struct Http {
    targets: Arc<[Target]>,
    /// Index of the replica that answered last (shared by clones).
    current: Arc<AtomicUsize>,
    token: Option<Arc<str>>,
    timeout: Duration,
}

#[derive(Clone, Debug)]
struct Target {
    host: String,
    port: u16,
    /// A token given in the URL (`http://:<token>@host:port`).
    token: Option<String>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.host, t.port))
            .collect();
        f.debug_struct("Http")
            .field("urls", &urls)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The largest reply read from NanoCtrl (a `/query` of a large cluster stays far below).
const MAX_REPLY: usize = 64 << 20;

/// A reply: status code and body (JSON when it parses, else a string value).
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
}

fn parse_url(url: &str) -> Result<Target> {
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
    // `user:token@` or `token@`: the token in the URL (what Basic-auth clients send)
    let (token, rest) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let t = match userinfo.split_once(':') {
                Some((_, pass)) if !pass.is_empty() => pass,
                Some((user, _)) => user,
                None => userinfo,
            };
            ((!t.is_empty()).then(|| t.to_string()), hostport)
        }
        None => (None, rest),
    };
    // never echo the token in an error
    let shown = if token.is_some() {
        format!("http://…@{rest}")
    } else {
        url.to_string()
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::invalid(format!(
            "NanoCtrl URL {shown:?}: want http://host:port"
        )));
    }
    let (host, port) = split_host_port(rest, 80)
        .ok_or_else(|| Error::invalid(format!("NanoCtrl URL {shown:?}: bad port")))?;
    Ok(Target { host, port, token })
}

impl Http {
    /// `urls`: one NanoCtrl URL or several separated by commas, each `http://host:port[/]`,
    /// `host:port` or `host` (port 80), optionally with the token as user info
    /// (`http://:<token>@host:port`). https is refused.
    pub fn new(urls: &str, timeout: Duration) -> Result<Http> {
        Http::with_token(urls, None, timeout)
    }

    /// As [`Http::new`], sending `Authorization: Bearer <token>` with every request.
    pub fn with_token(urls: &str, token: Option<&str>, timeout: Duration) -> Result<Http> {
        let targets: Vec<Target> = comma_list(urls).map(parse_url).collect::<Result<_>>()?;
        if targets.is_empty() {
            return Err(Error::invalid("no NanoCtrl URL given"));
        }
        if let Some(t) = token {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::invalid(
                    "the NanoCtrl token must be visible ASCII characters",
                ));
            }
        }
        Ok(Http {
            targets: targets.into(),
            current: Arc::new(AtomicUsize::new(0)),
            token: token.map(Into::into),
            timeout,
        })
    }

    fn addr(t: &Target) -> Result<SocketAddr> {
        (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|e| Error::io(&format!("resolve {}", t.host), e))?
            .next()
            .ok_or_else(|| Error::new(Status::Io, format!("{} does not resolve", t.host)))
    }

    /// The replicas in the order to try them: the one that answered last first.
    fn order(&self) -> impl Iterator<Item = usize> {
        let n = self.targets.len();
        let start = self.current.load(Ordering::Relaxed);
        (0..n).map(move |k| (start + k) % n)
    }

    fn connect(&self, t: &Target) -> Result<TcpStream> {
        TcpStream::connect_timeout(&Self::addr(t)?, self.timeout)
            .map_err(|e| Error::io(&format!("connect to NanoCtrl {}:{}", t.host, t.port), e))
    }

    /// The local IP of a connection to NanoCtrl: the address peers on NanoCtrl's side
    /// of the network can reach this host at.
    pub fn local_ip(&self) -> Result<IpAddr> {
        let mut last = None;
        for i in self.order() {
            match self.connect(&self.targets[i]) {
                Ok(s) => return Ok(s.local_addr().map_err(|e| Error::io("local_addr", e))?.ip()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one NanoCtrl URL"))
    }

    /// POSTs `body` to `path` on the replica that answered last, else on the next ones
    /// (a replica that cannot be reached or answers 5xx is skipped). Returns the first
    /// reply below 500, else the last 5xx reply, else the last error.
    pub fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        let mut last: Option<Result<Reply>> = None;
        for i in self.order() {
            let r = self.post_to(&self.targets[i], path, body);
            match &r {
                Ok(reply) if reply.code < 500 => {
                    self.current.store(i, Ordering::Relaxed);
                    return r;
                }
                Ok(_) => last = Some(r),
                Err(_) if !matches!(last, Some(Ok(_))) => last = Some(r),
                Err(_) => {}
            }
        }
        last.expect("at least one NanoCtrl URL")
    }

    fn post_to(&self, t: &Target, path: &str, body: &Value) -> Result<Reply> {
        let ctx = |what: &str| format!("NanoCtrl {}:{} {what} {path}", t.host, t.port);
        let mut s = self.connect(t)?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(self.timeout))
            .and_then(|_| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| Error::io("set socket timeout", e))?;
        let payload = body.to_string();
        let auth = match self.token.as_deref().or(t.token.as_deref()) {
            Some(tok) => format!("Authorization: Bearer {tok}\r\n"),
            None => String::new(),
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\n{auth}Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            t.host,
            t.port,
            payload.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| Error::io(&ctx("send"), e))?;
        let raw = read_reply(&mut s, Instant::now() + self.timeout)
            .map_err(|e| Error::io(&ctx("read reply of"), e))?;
        parse_reply(&raw)
            .map_err(|m| Error::new(Status::Protocol, ctx(&format!("bad reply ({m}) to"))))
    }
}

/// Reads a whole reply (the server closes the connection) within `deadline` and at most
/// [`MAX_REPLY`] bytes: a NanoCtrl that trickles or never stops cannot hold the agent's
/// control thread or its memory.
fn read_reply(s: &mut TcpStream, deadline: Instant) -> std::io::Result<Vec<u8>> {
    use std::io::{Error as IoError, ErrorKind};
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(IoError::new(
                ErrorKind::TimedOut,
                "no complete reply in time",
            ));
        }
        s.set_read_timeout(Some(left))?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(raw);
        }
        if raw.len() + n > MAX_REPLY {
            return Err(IoError::new(
                ErrorKind::InvalidData,
                format!("reply over {} MiB", MAX_REPLY >> 20),
            ));
        }
        raw.extend_from_slice(&buf[..n]);
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
        let one = |u: &str| {
            let h = Http::new(u, Duration::from_secs(1)).unwrap();
            let t = h.targets[0].clone();
            (t.host, t.port, t.token)
        };
        assert_eq!(
            one("http://127.0.0.1:3000/"),
            ("127.0.0.1".into(), 3000, None)
        );
        assert_eq!(one("localhost:9"), ("localhost".into(), 9, None));
        assert_eq!(one("http://[::1]:7"), ("::1".into(), 7, None));
        assert_eq!(
            one("http://nanoctrl:s3cret@h:1"),
            ("h".into(), 1, Some("s3cret".into()))
        );
        assert_eq!(
            one("http://s3cret@h:1"),
            ("h".into(), 1, Some("s3cret".into()))
        );
        assert!(Http::new("https://x", Duration::from_secs(1)).is_err());
        assert!(Http::new("http://x:notaport", Duration::from_secs(1)).is_err());
        assert!(Http::new("http://x/path", Duration::from_secs(1)).is_err());
        assert!(Http::new(" , ", Duration::from_secs(1)).is_err());
        let e = Http::new("http://:tok@x/p", Duration::from_secs(1)).unwrap_err();
        assert!(!e.message().contains("tok"), "{e}");
        let h =
            Http::with_token("http://a:1, b:2,", Some("sekrit"), Duration::from_secs(1)).unwrap();
        assert_eq!(h.targets.len(), 2);
        assert!(!format!("{h:?}").contains("sekrit"));
        assert!(Http::with_token("a:1", Some("a b"), Duration::from_secs(1)).is_err());
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

    /// A hostile or broken NanoCtrl on a raw socket: a reply that never ends and one that
    /// trickles a byte at a time both fail the request in bounded memory and time.
    #[test]
    fn endless_and_trickled_replies_are_bounded() {
        use std::net::TcpListener;
        fn serve(each: impl Fn(&mut TcpStream) + Send + 'static) -> String {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", l.local_addr().unwrap());
            std::thread::spawn(move || {
                if let Ok((mut s, _)) = l.accept() {
                    let mut req = [0u8; 4096];
                    let _ = s.read(&mut req);
                    each(&mut s);
                }
            });
            url
        }
        let endless = serve(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[");
            let chunk = vec![b' '; 1 << 20];
            while s.write_all(&chunk).is_ok() {}
        });
        let h = Http::new(&endless, Duration::from_secs(20)).unwrap();
        let e = h.post("/query", &serde_json::json!({})).unwrap_err();
        assert!(e.message().contains("reply over 64 MiB"), "{e}");

        let trickle = serve(|s| {
            for _ in 0..200 {
                if s.write_all(b"H").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let h = Http::new(&trickle, Duration::from_millis(500)).unwrap();
        let t = Instant::now();
        let e = h.post("/query", &serde_json::json!({})).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{:?}: {e}",
            t.elapsed()
        );
        assert_eq!(e.status(), Status::Io, "{e}");
    }
}
