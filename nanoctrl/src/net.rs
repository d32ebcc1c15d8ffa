//! Address plumbing: which Redis address to hand to clients, this node's IP, and the
//! raw HTTP health check used by `start`/`status`.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// True for the loopback spellings the original recognised (plus `[::1]`).
fn is_local_host(host: &str) -> bool {
    host.starts_with("127.0.0.1")
        || host.starts_with("localhost")
        || host == "[::1]"
        || host == "::1"
}

/// Host and port of a `redis://` URL (port defaults to 6379).
pub fn redis_host_port(url: &str) -> Option<(String, u16)> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.to_string();
    Some((host, u.port().unwrap_or(6379)))
}

/// The local IP the kernel would use to reach `target` (UDP connect sends nothing).
pub fn local_ip_towards(target: &str) -> Option<IpAddr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect((target, 80)).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Default-route IP of this host, else 127.0.0.1.
fn default_route_ip() -> IpAddr {
    local_ip_towards("8.8.8.8").unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The host and port of the Redis node at `redis_url` as `client_address` can reach it.
/// A loopback Redis is useless to a remote agent, so for a client whose address is not
/// loopback answer `$REDIS_PUBLIC_ADDRESS`, else this host's IP toward the client. With
/// no client address (the original `/get_redis_address`): this host's default-route IP
/// for a loopback Redis.
fn public_host_port(redis_url: &str, client_address: Option<&str>) -> (String, u16) {
    let (host, port) = redis_host_port(redis_url).unwrap_or_else(|| ("127.0.0.1".into(), 6379));
    if !is_local_host(&host) {
        return (host, port);
    }
    let Some(client_address) = client_address else {
        return (default_route_ip().to_string(), port);
    };
    if is_local_host(client_address) {
        return (host, port);
    }
    if let Ok(public) = std::env::var("REDIS_PUBLIC_ADDRESS") {
        if let Some((h, p)) = public
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse().ok()?)))
        {
            return (h.trim_matches(|c| c == '[' || c == ']').to_string(), p);
        }
    }
    // A bare IP (v4 or v6) as sent by PeerAgent, else `host:port`.
    let client_ip = if client_address.parse::<IpAddr>().is_ok() {
        client_address
    } else {
        client_address
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(client_address)
    };
    let ip = local_ip_towards(client_ip).unwrap_or_else(|| {
        let ip = default_route_ip();
        if ip.is_loopback() {
            tracing::warn!("no routable local IP found; handing out 127.0.0.1 for Redis");
        }
        ip
    });
    (ip.to_string(), port)
}

/// `host:port` for `/start_peer_agent` (no scheme: the original PeerAgent splits it on
/// ':'; never credentials).
pub fn redis_address_for_client(redis_url: &str, client_address: &str) -> String {
    let (host, port) = public_host_port(redis_url, Some(client_address));
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Redis credentials NanoCtrl hands to authenticated clients with the address.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, ..)", self.user)
    }
}

impl Credentials {
    /// `user:password` or `password` (the default user).
    pub fn parse(s: &str) -> Credentials {
        match s.split_once(':') {
            Some((u, p)) => Credentials {
                user: u.to_string(),
                password: p.to_string(),
            },
            None => Credentials {
                user: String::new(),
                password: s.to_string(),
            },
        }
    }

    /// The credentials in a `redis://user:password@…` URL, if any.
    pub fn of_url(redis_url: &str) -> Option<Credentials> {
        let u = url::Url::parse(redis_url).ok()?;
        let password = u.password().map(percent_decode)?;
        Some(Credentials {
            user: percent_decode(u.username()),
            password,
        })
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The URL of the Redis node at `redis_url` for a client at `client_address` (see
/// [`public_host_port`]): scheme and database of `redis_url`, the host and port the
/// client can reach, and `credentials` or none. NanoCtrl passes credentials only to
/// callers that presented its bearer token, so an open NanoCtrl never leaks them.
pub fn redis_url_for_client(
    redis_url: &str,
    client_address: Option<&str>,
    credentials: Option<&Credentials>,
) -> String {
    let (host, port) = public_host_port(redis_url, client_address);
    let Ok(mut u) = url::Url::parse(redis_url) else {
        return format!("redis://{host}:{port}");
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    if u.set_host(Some(&host)).is_err() || u.set_port(Some(port)).is_err() {
        return format!("redis://{host}:{port}");
    }
    let (user, password) = match credentials {
        Some(c) => (c.user.as_str(), Some(c.password.as_str())),
        None => ("", None),
    };
    let _ = u.set_username(user);
    let _ = u.set_password(password);
    u.to_string()
}

/// `redis_url` with its password replaced by `***`, for logs and error messages.
pub fn redact(redis_url: &str) -> String {
    match url::Url::parse(redis_url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => redis_url.to_string(),
        // unparsable: shown as given unless it may hold credentials
        Err(_) if !redis_url.contains('@') => redis_url.to_string(),
        Err(_) => "<unparsable Redis URL with credentials>".to_string(),
    }
}

/// This node's IP for humans and health checks: `hostname -i`/`-I`, then the default
/// route, then 127.0.0.1 (the original's order).
pub fn local_node_ip() -> String {
    for flag in ["-i", "-I"] {
        if let Ok(out) = std::process::Command::new("hostname").arg(flag).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            for tok in text.split_whitespace() {
                if let Ok(ip) = tok.parse::<IpAddr>() {
                    if !ip.is_unspecified() && !ip.is_loopback() {
                        return ip.to_string();
                    }
                }
            }
        }
    }
    default_route_ip().to_string()
}

/// `GET /` over a plain socket with an overall deadline (with the bearer token, when
/// there is one); Ok when the answer is 200.
pub fn health_check(
    host: &str,
    port: u16,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    match http_get(host, port, "/", token, timeout)? {
        (200, _) => Ok(()),
        (_, head) => Err(format!("unexpected response: {head}")),
    }
}

/// `GET path` over a plain socket with a deadline per socket operation (with the bearer
/// token, when there is one): `(status, body)`, or for a status other than 200 `(status,
/// status line)`. Hand-rolled (a dozen lines) rather than an HTTP client so that the
/// error text is the socket's own ("Connection refused (os error 111)"), as `status`
/// prints it. Reads until the server closes (`Connection: close`), at most 64 MiB.
pub fn http_get(
    host: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    (&mut s)
        .take(64 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let head = text.lines().next().unwrap_or("").to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("unexpected response: {head}"))?;
    if code != 200 {
        return Ok((code, head));
    }
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1);
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_urls() {
        assert_eq!(
            redis_host_port("redis://10.0.0.5:6390"),
            Some(("10.0.0.5".into(), 6390))
        );
        assert_eq!(
            redis_host_port("redis://redis.internal"),
            Some(("redis.internal".into(), 6379))
        );
        assert_eq!(
            redis_host_port("redis://:pw@127.0.0.1:7000/2"),
            Some(("127.0.0.1".into(), 7000))
        );
    }

    #[test]
    fn remote_redis_is_returned_verbatim() {
        assert_eq!(
            redis_address_for_client("redis://10.0.0.5:6390", "10.0.0.9"),
            "10.0.0.5:6390"
        );
        assert_eq!(
            redis_url_for_client("redis://10.0.0.5:6390", None, None),
            "redis://10.0.0.5:6390"
        );
    }

    #[test]
    fn credentials_only_when_given() {
        let url = "redis://admin:s%40cret@10.0.0.5:6390/2";
        assert_eq!(
            redis_url_for_client(url, Some("10.0.0.9"), None),
            "redis://10.0.0.5:6390/2"
        );
        assert_eq!(redis_address_for_client(url, "10.0.0.9"), "10.0.0.5:6390");
        let c = Credentials::of_url(url).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("admin", "s@cret"));
        assert_eq!(
            redis_url_for_client(url, Some("10.0.0.9"), Some(&c)),
            "redis://admin:s%40cret@10.0.0.5:6390/2"
        );
        let c = Credentials::parse("agent:pw");
        assert_eq!(
            redis_url_for_client("redis://127.0.0.1:7000", Some("127.0.0.1"), Some(&c)),
            "redis://agent:pw@127.0.0.1:7000"
        );
        assert_eq!(
            redis_url_for_client(
                "redis://127.0.0.1:7000",
                Some("127.0.0.1"),
                Some(&Credentials::parse("pw"))
            ),
            "redis://:pw@127.0.0.1:7000"
        );
        assert!(Credentials::of_url("redis://127.0.0.1:1").is_none());
        assert_eq!(redact(url), "redis://admin:***@10.0.0.5:6390/2");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn loopback_redis_for_loopback_client_stays_loopback() {
        assert_eq!(
            redis_address_for_client("redis://127.0.0.1:6391", "127.0.0.1"),
            "127.0.0.1:6391"
        );
    }

    #[test]
    fn health_check_reports_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let err = health_check("127.0.0.1", port, None, Duration::from_millis(500)).unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }
}
