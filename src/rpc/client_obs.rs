//! The client side's per-method counters ([`crate::obs`]): each call counted once when
//! it ends (a reply, an exception reply, a failure, or dropped before its reply), each
//! wait that timed out, and the time from the request to the reply. Methods are named
//! by [`RpcSession::set_method_names`](super::RpcSession::set_method_names) (the
//! service's sorted names, index = tag), else `tag:N`.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::obs::{self, MethodStats};

/// A session's method names and the counters of the tags it called.
#[derive(Default)]
pub(super) struct ClientObs {
    names: Mutex<Vec<String>>,
    by_tag: Mutex<Vec<(u32, Arc<MethodStats>)>>,
}

/// Method names a session keeps at most (the C ABI refuses more; the process keeps at
/// most 1024 method rows anyway, later ones share `"(other)"`).
pub const MAX_METHOD_NAMES: usize = 65536;

impl ClientObs {
    /// Beyond [`MAX_METHOD_NAMES`], names are ignored (those tags count as `tag:N`).
    pub fn set_names(&self, names: &[&str]) {
        let names = &names[..names.len().min(MAX_METHOD_NAMES)];
        *self.names.lock() = names.iter().map(|n| n.to_string()).collect();
        self.by_tag.lock().clear();
    }

    /// The counters of `tag`.
    fn method(&self, tag: u32) -> Arc<MethodStats> {
        let mut v = self.by_tag.lock();
        if let Some((_, m)) = v.iter().find(|e| e.0 == tag) {
            return m.clone();
        }
        let name = self
            .names
            .lock()
            .get(tag as usize)
            .cloned()
            .unwrap_or_else(|| format!("tag:{tag}"));
        let m = obs::method("client", &name);
        v.push((tag, m.clone()));
        m
    }

    /// A call of `tag` starts now (`None` when recording is off).
    pub fn start(&self, tag: u32) -> Option<CallObs> {
        obs::enabled().then(|| CallObs {
            stats: self.method(tag),
            start_ns: obs::now_ns(),
        })
    }
}

/// One call's counters, recorded once by [`CallObs::end`].
pub(super) struct CallObs {
    stats: Arc<MethodStats>,
    start_ns: u64,
}

impl CallObs {
    /// A wait for its reply timed out (the call stays pending).
    pub fn timed_out(&self) {
        self.stats.timed_out();
    }

    /// The call ended: `ok` false for a failure or an exception reply.
    pub fn end(self, ok: bool) {
        self.stats
            .record(ok, obs::now_ns().saturating_sub(self.start_ns));
    }
}
