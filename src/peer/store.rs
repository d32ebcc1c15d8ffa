//! The PeerAgent's view of Redis: the original key schema (`P` = `"{scope}:"` or empty)
//! and a synchronous connection that reconnects after Redis restarts.

use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, ConnectionLike, RedisResult};

use crate::error::{Error, Result, Status};

/// Key names, scope-prefixed as NanoCtrl writes them.
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(scope: Option<&str>) -> Keys {
        Keys {
            prefix: match scope {
                Some(s) if !s.is_empty() => format!("{s}:"),
                _ => String::new(),
            },
        }
    }
    pub fn agent(&self, a: &str) -> String {
        format!("{}agent:{a}", self.prefix)
    }
    pub fn stream(&self, a: &str) -> String {
        format!("{}stream:{a}", self.prefix)
    }
    pub fn inbox(&self, a: &str) -> String {
        format!("{}inbox:{a}", self.prefix)
    }
    pub fn spec(&self, a: &str) -> String {
        format!("{}spec:topology:{a}", self.prefix)
    }
    pub fn mr(&self, a: &str, name: &str) -> String {
        format!("{}mr:{a}:{name}", self.prefix)
    }
    /// SCAN patterns of this agent's stale keys: its mr keys and the exchange keys of
    /// the original's legacy path, in both directions.
    pub fn stale_patterns(&self, a: &str) -> Vec<String> {
        let (p, a) = (glob_escape(&self.prefix), glob_escape(a));
        vec![
            format!("{p}mr:{a}:*"),
            format!("{p}exchange:{a}:*"),
            format!("{p}exchange:*:{a}"),
            format!("{p}exchange:*:{a}:*"),
        ]
    }
}

/// Escapes Redis glob metacharacters.
pub fn glob_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// One Redis connection, opened lazily and re-opened after an I/O error.
pub struct Store {
    client: redis::Client,
    url: String,
    conn: Mutex<Option<Connection>>,
    read_timeout: Duration,
}

pub fn rerr(what: &str, e: redis::RedisError) -> Error {
    Error::new(Status::Io, format!("redis {what}: {e}"))
}

impl Store {
    pub fn open(url: &str, read_timeout: Duration) -> Result<Store> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::invalid(format!("bad Redis address {url:?}: {e}")))?;
        Ok(Store {
            client,
            url: url.to_string(),
            conn: Mutex::new(None),
            read_timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect(&self) -> RedisResult<Connection> {
        let c = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))?;
        c.set_read_timeout(Some(self.read_timeout))?;
        c.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(c)
    }

    /// Runs `f` on the connection; after a connection-level failure reconnects and
    /// tries once more.
    pub fn with<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut g = self.conn.lock();
        for attempt in 0..2 {
            if g.is_none() {
                match self.connect() {
                    Ok(c) => *g = Some(c),
                    Err(e) if attempt == 0 => {
                        let _ = e;
                        continue;
                    }
                    Err(e) => return Err(rerr(what, e)),
                }
            }
            let c = g.as_mut().expect("connection present");
            match f(c) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let broken = e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout()
                        || !c.is_open();
                    if broken {
                        *g = None;
                        if attempt == 0 {
                            continue;
                        }
                    }
                    return Err(rerr(what, e));
                }
            }
        }
        Err(Error::new(
            Status::Io,
            format!("redis {what}: not connected"),
        ))
    }

    /// Drops the connection (the next call reconnects).
    pub fn reset(&self) {
        *self.conn.lock() = None;
    }

    /// SCAN + DEL of every key matching `pattern`; returns how many were deleted.
    pub fn delete_matching(&self, pattern: &str) -> Result<usize> {
        let keys: Vec<String> = self.with("SCAN", |c| {
            let mut out = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query(c)?;
                out.extend(batch);
                if next == 0 {
                    return Ok(out);
                }
                cursor = next;
            }
        })?;
        if keys.is_empty() {
            return Ok(0);
        }
        self.with("DEL", |c| redis::cmd("DEL").arg(&keys).query::<usize>(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_escaping() {
        let k = Keys::new(Some("job"));
        assert_eq!(k.agent("a"), "job:agent:a");
        assert_eq!(k.stream("a"), "job:stream:a");
        assert_eq!(k.inbox("a"), "job:inbox:a");
        assert_eq!(k.mr("a", "kv"), "job:mr:a:kv");
        assert_eq!(k.spec("a"), "job:spec:topology:a");
        let k = Keys::new(Some(""));
        assert_eq!(k.inbox("a"), "inbox:a");
        assert_eq!(Keys::new(None).stream("b"), "stream:b");
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
        assert_eq!(Keys::new(None).stale_patterns("x")[0], "mr:x:*");
    }
}
