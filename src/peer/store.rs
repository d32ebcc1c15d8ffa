//! The PeerAgent's view of Redis: the original key schema (`P` = `"{scope}:"` or empty,
//! from `dlslime_keys`, shared with NanoCtrl) and a synchronous connection that
//! reconnects after Redis restarts and follows the primary when it moves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::streams::StreamReadReply;
use redis::{Connection, ConnectionLike, RedisResult};

use dlslime_keys as keys;

use crate::engine::config::comma_list;
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
    pub fn obs(&self, a: &str) -> String {
        keys::obs_peer(&self.prefix, a)
    }
    pub fn mr(&self, a: &str, name: &str) -> String {
        keys::mr(&self.prefix, a, name)
    }
    /// SCAN pattern of every region `a` published.
    pub fn mrs(&self, a: &str) -> String {
        keys::mr_pattern(&self.prefix, a)
    }
    /// SCAN patterns of this agent's stale keys: its mr keys and the exchange keys of
    /// the original's legacy path, in both directions.
    pub fn stale_patterns(&self, a: &str) -> Vec<String> {
        keys::stale_patterns(&self.prefix, a)
    }
}

/// Where the agent's Redis is: the URL in use, and how to find the primary again after
/// a failover (shared by the agent's connections).
///
/// Sources: a list of URLs configured on the agent (the primary and its replicas: the
/// first that answers `ROLE` with `master` is used), or NanoCtrl (asked again with
/// `/get_redis_address`, which answers with the primary NanoCtrl itself follows). A
/// refresh runs when a connection breaks or Redis answers `READONLY` (the node was
/// demoted), at most once per [`REFRESH_EVERY`].
pub struct RedisTarget {
    current: Mutex<String>,
    candidates: Vec<String>,
    ask: Option<Box<dyn Fn() -> Option<String> + Send + Sync>>,
    last_refresh: Mutex<Option<Instant>>,
}

/// Least time between two refreshes of the Redis address.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

impl RedisTarget {
    /// A fixed list of URLs (comma-separated): the first primary among them.
    pub fn fixed(urls: &str) -> Result<Arc<RedisTarget>> {
        let candidates: Vec<String> = comma_list(urls).map(str::to_string).collect();
        for u in &candidates {
            redis::Client::open(u.as_str())
                .map_err(|e| Error::invalid(format!("bad Redis URL: {e}")))?;
        }
        let first = candidates
            .first()
            .cloned()
            .ok_or_else(|| Error::invalid("no Redis URL given"))?;
        let t = Arc::new(RedisTarget {
            current: Mutex::new(first),
            candidates,
            ask: None,
            last_refresh: Mutex::new(None),
        });
        if t.candidates.len() > 1 {
            t.refresh();
        }
        Ok(t)
    }

    /// `url` for now; `ask` (NanoCtrl) tells where the primary is after a failover.
    pub fn asking(
        url: String,
        ask: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Result<Arc<RedisTarget>> {
        redis::Client::open(url.as_str())
            .map_err(|e| Error::invalid(format!("bad Redis address from NanoCtrl: {e}")))?;
        Ok(Arc::new(RedisTarget {
            current: Mutex::new(url),
            candidates: Vec::new(),
            ask: Some(Box::new(ask)),
            last_refresh: Mutex::new(None),
        }))
    }

    /// The URL in use (with credentials: never log it as is).
    pub fn url(&self) -> String {
        self.current.lock().clone()
    }

    /// Looks the primary up again (rate-limited); true when the URL changed.
    pub fn refresh(&self) -> bool {
        {
            let mut last = self.last_refresh.lock();
            if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let found = match &self.ask {
            Some(ask) => ask(),
            None if self.candidates.len() > 1 => {
                self.candidates.iter().find(|u| is_primary(u)).cloned()
            }
            None => None,
        };
        let Some(url) = found else { return false };
        if redis::Client::open(url.as_str()).is_err() {
            return false;
        }
        let mut cur = self.current.lock();
        if *cur == url {
            return false;
        }
        *cur = url;
        true
    }
}

/// Whether the node at `url` answers `ROLE` with `master` (within a second).
fn is_primary(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let role: RedisResult<Vec<redis::Value>> = redis::cmd("ROLE").query(&mut c);
    matches!(role.ok().as_deref().and_then(<[_]>::first),
        Some(redis::Value::BulkString(b)) if b == b"master")
}

/// One Redis connection, opened lazily and re-opened after an I/O error (at the
/// target's current URL). Every Redis command the PeerAgent sends is one of its methods.
pub struct Store {
    target: Arc<RedisTarget>,
    conn: Mutex<Option<Connection>>,
    read_timeout: Duration,
}

/// One message of a stream: its id and its fields (fields that are not text are left out).
pub struct StreamMessage {
    pub id: String,
    pub fields: HashMap<String, String>,
}

fn rerr(what: &str, e: redis::RedisError) -> Error {
    Error::new(Status::Io, format!("redis {what}: {e}"))
}

/// HSET only while the key exists: HSET on a missing key (Redis restarted, the record
/// expired) would create one without a TTL.
const HSET_EXISTING: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
     redis.call('HSET', KEYS[1], unpack(ARGV)) return 1";

/// `{2, ms}`: milliseconds on Redis's clock since the record KEYS[1] was last beaten
/// (ARGV[1]: the field holding that time); `{0}` when the record is gone, `{1}` when it
/// has no such time.
const BEAT_AGE: &str = "local at = redis.call('HGET', KEYS[1], ARGV[1]) \
     if not at then return {redis.call('EXISTS', KEYS[1])} end \
     local t = redis.call('TIME') \
     return {2, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(at)}";

/// What Redis says of an agent record's last heartbeat ([`Store::beat_age`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeatAge {
    /// The record does not exist (expired, deleted, Redis lost it).
    Gone,
    /// The record exists without a heartbeat time (not owned).
    Unknown,
    /// Milliseconds since the last heartbeat on Redis's clock (negative after Redis's
    /// clock went back).
    Ms(i64),
}

/// XDEL of the given ids unless the stream's owner (KEYS[2]) exists, then DEL of the
/// stream once it is empty.
const WITHDRAW: &str = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end \
     redis.call('XDEL', KEYS[1], unpack(ARGV)) \
     if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end return 1";

impl Store {
    pub fn open(target: Arc<RedisTarget>, read_timeout: Duration) -> Store {
        Store {
            target,
            conn: Mutex::new(None),
            read_timeout,
        }
    }

    pub fn target(&self) -> &Arc<RedisTarget> {
        &self.target
    }

    fn connect(&self) -> RedisResult<Connection> {
        let c = redis::Client::open(self.target.url())?
            .get_connection_with_timeout(Duration::from_secs(2))?;
        c.set_read_timeout(Some(self.read_timeout))?;
        c.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(c)
    }

    /// Runs `f` on the connection; after a connection-level failure reconnects and
    /// tries once more.
    fn with<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut g = self.conn.lock();
        for attempt in 0..2 {
            if g.is_none() {
                match self.connect() {
                    Ok(c) => *g = Some(c),
                    Err(_) if attempt == 0 => {
                        self.target.refresh();
                        continue;
                    }
                    Err(e) => return Err(rerr(what, e)),
                }
            }
            let c = g.as_mut().expect("connection present");
            match f(c) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let demoted = matches!(e.code(), Some("READONLY" | "MASTERDOWN"));
                    let broken = e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout()
                        || !c.is_open();
                    if broken || demoted {
                        *g = None;
                        // the node may be gone for good or demoted: where is the primary?
                        self.target.refresh();
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

    pub fn get(&self, key: &str) -> Result<Option<String>> {
        self.with("GET", |c| redis::cmd("GET").arg(key).query(c))
    }

    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        self.with("SET", |c| redis::cmd("SET").arg(key).arg(value).query(c))
    }

    /// SET with a time to live.
    pub fn set_px(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let ms = ttl.as_millis().max(1) as u64;
        self.with("SET", |c| {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query(c)
        })
    }

    pub fn hget(&self, key: &str, field: &str) -> Result<Option<String>> {
        self.with("HGET", |c| redis::cmd("HGET").arg(key).arg(field).query(c))
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        self.with("EXISTS", |c| {
            redis::cmd("EXISTS").arg(key).query::<i64>(c).map(|n| n > 0)
        })
    }

    /// How long ago, on Redis's own clock, the agent record `key` was last beaten.
    pub fn beat_age(&self, key: &str) -> Result<BeatAge> {
        self.with("EVAL", |c| {
            redis::cmd("EVAL")
                .arg(BEAT_AGE)
                .arg(1)
                .arg(key)
                .arg(keys::AGENT_HEARTBEAT_AT)
                .query::<Vec<i64>>(c)
                .map(|r| match r[..] {
                    [2, ms] => BeatAge::Ms(ms),
                    [0] => BeatAge::Gone,
                    _ => BeatAge::Unknown,
                })
        })
    }

    /// HSET of `fields` on `key` if the key exists; returns whether it did.
    pub fn hset_existing(&self, key: &str, fields: &[(&str, String)]) -> Result<bool> {
        self.with("HSET", |c| {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(HSET_EXISTING).arg(1).arg(key);
            for (f, v) in fields {
                cmd.arg(*f).arg(v);
            }
            cmd.query::<i64>(c).map(|r| r == 1)
        })
    }

    /// DEL of `keys`; returns how many existed.
    pub fn delete(&self, keys: &[String]) -> Result<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.with("DEL", |c| redis::cmd("DEL").arg(keys).query(c))
    }

    /// Every key matching `pattern` (SCAN).
    pub fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.with("SCAN", |c| {
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
        })
    }

    /// The names under `prefix` of the keys matching `pattern`, sorted, without repeats.
    pub fn scan_names(&self, pattern: &str, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .scan(pattern)?
            .iter()
            .filter_map(|k| k.strip_prefix(prefix))
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// SCAN + DEL of every key matching `pattern`; returns how many were deleted.
    pub fn delete_matching(&self, pattern: &str) -> Result<usize> {
        self.delete(&self.scan(pattern)?)
    }

    /// XADD to `stream`, capped at about `max_len` messages; returns the message id.
    pub fn xadd(
        &self,
        stream: &str,
        max_len: usize,
        fields: &[(String, String)],
    ) -> Result<String> {
        self.with("XADD", |c| {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("MAXLEN").arg("~").arg(max_len).arg("*");
            for (k, v) in fields {
                cmd.arg(k).arg(v);
            }
            cmd.query(c)
        })
    }

    /// XREAD of up to `count` messages of `stream` after id `after`, blocking up to
    /// `block` for the first one.
    pub fn xread(
        &self,
        stream: &str,
        after: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamMessage>> {
        let reply = self.with("XREAD", |c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(stream)
                .arg(after)
                .query::<Option<StreamReadReply>>(c)
        })?;
        let ids = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
        Ok(ids
            .map(|m| StreamMessage {
                fields: m
                    .map
                    .iter()
                    .filter_map(|(k, v)| {
                        let v = redis::from_redis_value_ref::<String>(v).ok()?;
                        Some((k.clone(), v))
                    })
                    .collect(),
                id: m.id,
            })
            .collect())
    }

    pub fn rpop(&self, key: &str) -> Result<Option<String>> {
        self.with("RPOP", |c| redis::cmd("RPOP").arg(key).query(c))
    }

    /// Removes the messages `ids` from `stream` unless the key `owner` (the stream
    /// owner's agent record) exists, and the stream too once empty. Returns whether
    /// it did.
    pub fn withdraw(&self, stream: &str, owner: &str, ids: &[String]) -> Result<bool> {
        if ids.is_empty() {
            return Ok(false);
        }
        self.with("XDEL", |c| {
            redis::cmd("EVAL")
                .arg(WITHDRAW)
                .arg(2)
                .arg(stream)
                .arg(owner)
                .arg(ids)
                .query::<i64>(c)
                .map(|r| r == 1)
        })
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
