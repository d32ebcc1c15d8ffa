//! A small typed-free dispatcher for native servers: methods registered by name get tags
//! by sorted name (the original's rule, so a Python `proxy` of a class with the same
//! method names talks to it), and `serve` answers requests until the session ends.

use std::sync::Arc;
use std::time::Duration;

use super::request::Request;
use super::session::RpcSession;
use crate::error::{Result, Status};
use crate::obs::{self, MethodStats};

/// What a handler returns on failure: the exception's type name and message.
#[derive(Clone, Debug)]
pub struct HandlerError {
    pub type_name: String,
    pub message: String,
}

impl HandlerError {
    pub fn new(type_name: &str, message: impl Into<String>) -> HandlerError {
        HandlerError {
            type_name: type_name.into(),
            message: message.into(),
        }
    }
}

type Handler = Arc<dyn Fn(&[u8]) -> std::result::Result<Vec<u8>, HandlerError> + Send + Sync>;
type InplaceHandler =
    Arc<dyn Fn(&mut [u8]) -> std::result::Result<usize, HandlerError> + Send + Sync>;

#[derive(Clone)]
enum Method {
    Copy(Handler),
    /// Rewrites the request buffer and answers with its first N bytes (zero-copy for
    /// bulk payloads).
    InPlace(InplaceHandler),
}

/// Methods by name. Build with [`Service::method`], then [`Service::serve`].
#[derive(Clone, Default)]
pub struct Service {
    methods: Vec<(String, Method, Arc<MethodStats>)>,
}

impl Service {
    pub fn new() -> Service {
        Service::default()
    }

    /// Adds (or replaces) a method.
    pub fn method(
        self,
        name: &str,
        f: impl Fn(&[u8]) -> std::result::Result<Vec<u8>, HandlerError> + Send + Sync + 'static,
    ) -> Service {
        self.add(name, Method::Copy(Arc::new(f)))
    }

    /// Adds a method that rewrites the request payload in place and returns how many of
    /// its bytes are the reply (no copy of a bulk payload either way).
    pub fn inplace_method(
        self,
        name: &str,
        f: impl Fn(&mut [u8]) -> std::result::Result<usize, HandlerError> + Send + Sync + 'static,
    ) -> Service {
        self.add(name, Method::InPlace(Arc::new(f)))
    }

    fn add(mut self, name: &str, m: Method) -> Service {
        self.methods.retain(|(n, _, _)| n != name);
        let stats = obs::method("server", name);
        self.methods.push((name.to_string(), m, stats));
        self.methods.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }

    /// The tag of a method: its index in sorted name order.
    pub fn tag(&self, name: &str) -> Option<u32> {
        self.methods
            .iter()
            .position(|(n, _, _)| n == name)
            .map(|i| i as u32)
    }

    pub fn names(&self) -> Vec<&str> {
        self.methods.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    /// Answers one request.
    pub fn handle(&self, mut req: Request) -> Result<()> {
        let tag = req.tag() as usize;
        let Some((_, m, stats)) = self.methods.get(tag) else {
            let msg = format!("Unknown RPC tag {tag} on remote service");
            return req.reply_error("RuntimeError", &msg, "");
        };
        let start = if obs::enabled() { obs::now_ns() } else { 0 };
        let mut handler_ok = true;
        let r = match m {
            Method::Copy(h) => match h(req.payload()) {
                Ok(v) => req.reply(&v),
                Err(e) => {
                    handler_ok = false;
                    req.reply_error(&e.type_name, &e.message, "")
                }
            },
            Method::InPlace(h) => match h(req.payload_mut()) {
                Ok(n) => req.reply_from_payload(n),
                Err(e) => {
                    handler_ok = false;
                    req.reply_error(&e.type_name, &e.message, "")
                }
            },
        };
        if start != 0 {
            let ok = handler_ok && r.is_ok();
            stats.record(ok, obs::now_ns().saturating_sub(start));
        }
        r
    }

    /// Handles one request if one arrives within `timeout`; returns whether one did.
    pub fn serve_once(&self, sess: &RpcSession, timeout: Option<Duration>) -> Result<bool> {
        match sess.poll_request(timeout)? {
            Some(r) => {
                self.handle(r)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Answers requests until the session closes (`Ok`) or the peer goes away
    /// (`Err(PeerDisconnected)`). Failures to answer one request are logged and serving
    /// goes on.
    pub fn serve(&self, sess: &RpcSession) -> Result<()> {
        loop {
            match sess.poll_request(Some(Duration::from_secs(3600))) {
                Ok(Some(r)) => {
                    if let Err(e) = self.handle(r) {
                        // A session that ended shows in the next poll_request.
                        if !sess.is_closed() {
                            crate::warn_log!("RPC serve: could not answer a request: {e}");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) if e.status() == Status::ShutDown => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
