//! The PeerAgent's view of Redis: the original key schema (`P` = `"{scope}:"` or empty,
//! from `dlslime_keys`, shared with NanoCtrl) and a synchronous connection that
//! reconnects after Redis restarts.

use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, ConnectionLike, RedisResult};

use dlslime_keys as keys;

use crate::error::{Error, Result, Status};

/// Key names of one scope, as NanoCtrl writes them (the schema itself is `dlslime_keys`).
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(scope: Option<&str>) -> Keys {
        Keys {
            prefix: keys::prefix(scope),
        }
    }
    pub fn agent(&self, a: &str) -> String {
        keys::agent(&self.prefix, a)
    }
    /// SCAN pattern of every agent record of the scope.
    pub fn agents(&self) -> String {
        keys::agent_pattern(&self.prefix)
    }
    pub fn stream(&self, a: &str) -> String {
        keys::stream(&self.prefix, a)
    }
    pub fn inbox(&self, a: &str) -> String {
        keys::inbox(&self.prefix, a)
    }
    pub fn spec(&self, a: &str) -> String {
        keys::spec(&self.prefix, a)
    }
    pub fn mr(&self, a: &str, name: &str) -> String {
        keys::mr(&self.prefix, a, name)
    }
    /// SCAN patterns of this agent's stale keys: its mr keys and the exchange keys of
    /// the original's legacy path, in both directions.
    pub fn stale_patterns(&self, a: &str) -> Vec<String> {
        keys::stale_patterns(&self.prefix, a)
    }
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
        assert_eq!(keys::glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
        assert_eq!(Keys::new(None).stale_patterns("x")[0], "mr:x:*");
    }
}
