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

/// `host:port` for `/start_peer_agent` (no scheme: PeerAgent splits it on ':').
/// A loopback Redis is useless to a remote agent, so for a client whose address is not
/// loopback answer `$REDIS_PUBLIC_ADDRESS`, else this host's IP toward the client.
pub fn redis_address_for_client(redis_url: &str, client_address: &str) -> String {
    let (host, port) = redis_host_port(redis_url).unwrap_or_else(|| ("127.0.0.1".into(), 6379));
    if is_local_host(&host) && !is_local_host(client_address) {
        if let Ok(public) = std::env::var("REDIS_PUBLIC_ADDRESS") {
            if !public.is_empty() {
                return public;
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
        return format!("{ip}:{port}");
    }
    format!("{host}:{port}")
}

/// Full URL for `/get_redis_address` (with scheme, as in the original). A loopback URL is
/// replaced by `$NANOCTRL_REDIS_URL` when that is not loopback, else by this host's IP.
pub fn redis_url_for_clients(redis_url: &str) -> String {
    let Some((host, port)) = redis_host_port(redis_url) else {
        return redis_url.to_string();
    };
    if !is_local_host(&host) {
        return redis_url.to_string();
    }
    if let Ok(env) = std::env::var("NANOCTRL_REDIS_URL") {
        if redis_host_port(&env).is_some_and(|(h, _)| !is_local_host(&h)) {
            return env;
        }
    }
    format!("redis://{}:{port}", default_route_ip())
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

/// `GET /` over a plain socket with an overall deadline; Ok when the answer is 200.
/// Hand-rolled (a dozen lines) rather than an HTTP client so that the error text is the
/// socket's own ("Connection refused (os error 111)"), as `status` prints it.
pub fn health_check(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
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
    let req = format!("GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&buf[..n]);
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "unexpected response: {}",
            head.lines().next().unwrap_or("")
        ))
    }
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
            redis_url_for_clients("redis://10.0.0.5:6390"),
            "redis://10.0.0.5:6390"
        );
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
        let err = health_check("127.0.0.1", port, Duration::from_millis(500)).unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }
}
