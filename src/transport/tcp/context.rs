//! A TCP context: its identity (the key its connections authenticate with), the
//! listener that serves peers, the pool of outgoing connections shared by its endpoints,
//! its endpoints as targets, the accepted connections, and the janitor that closes idle
//! connections.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::accepted::Accepted;
use super::config::TcpConfig;
use super::handshake;
use super::pool::ConnPool;
use super::server::{self, ServerCtx};
use super::target::Targets;
use crate::error::{Error, Result, Status};
use crate::transport::auth::{Identity, PublicKey};
use crate::{info_log, warn_log};

pub struct TcpContext {
    id: u64,
    identity: Arc<Identity>,
    config: TcpConfig,
    local_addr: SocketAddr,
    advertise: String,
    listener_fd: i32,
    targets: Arc<Targets>,
    accepted: Arc<Accepted>,
    server: Arc<ServerCtx>,
    pool: Arc<ConnPool>,
    stop: AtomicBool,
    stop_tx: Mutex<Option<crossbeam_channel::Sender<()>>>,
    _listener: TcpListener,
}

impl TcpContext {
    pub fn new(config: TcpConfig) -> Result<Arc<TcpContext>> {
        config.validate()?;
        let listener = TcpListener::bind(config.bind)
            .map_err(|e| Error::io(&format!("bind {}", config.bind), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))?;
        let advertise = config
            .advertise_host
            .clone()
            .unwrap_or_else(|| advertise_ip(local_addr.ip()).to_string());
        let id = loop {
            let v: u64 = rand::random();
            if v != 0 {
                break v;
            }
        };
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let targets = Arc::new(Targets::default());
        let t = Arc::downgrade(&targets);
        let on_lost = Arc::new(move |addr: SocketAddr, key: PublicKey| {
            if let Some(t) = t.upgrade() {
                t.peer_lost((addr, key));
            }
        });
        let identity = Arc::new(Identity::generate());
        let ctx = Arc::new(TcpContext {
            id,
            pool: Arc::new(ConnPool::new(
                config.lanes,
                identity.clone(),
                id,
                Duration::from_secs(10),
                on_lost,
            )),
            accepted: Accepted::new(config.max_connections, config.max_connections_per_ip),
            server: Arc::new(ServerCtx {
                identity: identity.clone(),
                context_id: id,
                handshake_timeout: config.handshake_timeout,
                connect_grace: config.connect_grace,
            }),
            identity,
            config,
            local_addr,
            advertise,
            listener_fd: listener.as_raw_fd(),
            targets,
            stop: AtomicBool::new(false),
            stop_tx: Mutex::new(Some(stop_tx)),
            _listener: listener.try_clone().expect("clone listener"),
        });
        let weak = Arc::downgrade(&ctx);
        std::thread::Builder::new()
            .name("dlslime-tcp-accept".into())
            .spawn(move || accept_loop(weak, listener))
            .map_err(|e| Error::io("spawn listener thread", e))?;
        let weak = Arc::downgrade(&ctx);
        let period = (ctx.config.idle_timeout / 4).max(Duration::from_millis(50));
        std::thread::Builder::new()
            .name("dlslime-tcp-janitor".into())
            .spawn(move || loop {
                if stop_rx.recv_timeout(period) != Err(crossbeam_channel::RecvTimeoutError::Timeout)
                {
                    return;
                }
                let Some(c) = weak.upgrade() else { return };
                c.pool.evict_idle(c.config.idle_timeout);
                c.accepted
                    .sweep_idle(c.config.idle_timeout, |k| c.targets.serves(k));
            })
            .map_err(|e| Error::io("spawn janitor thread", e))?;
        Ok(ctx)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The key this context's connections authenticate with (`auth_key` in
    /// `endpoint_info`).
    pub fn public_key(&self) -> PublicKey {
        self.identity.public()
    }

    /// Accepted connections currently open (in their handshake or serving).
    pub fn accepted_connections(&self) -> usize {
        self.accepted.len()
    }

    /// The address the listener is bound to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The host published in `endpoint_info`.
    pub fn advertise_host(&self) -> &str {
        &self.advertise
    }

    pub fn config(&self) -> &TcpConfig {
        &self.config
    }

    pub(super) fn pool(&self) -> &Arc<ConnPool> {
        &self.pool
    }

    pub(super) fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Closes every pooled connection to `addr` as if it had died while idle; the next
    /// operation must transparently dial a new one. For tests and operators.
    pub fn drop_pooled_connections(&self, addr: SocketAddr) {
        self.pool.close_peer(addr);
    }
}

impl Drop for TcpContext {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.stop_tx.lock().take();
        // SAFETY: shutting down our own listening socket wakes the accept() call.
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
        self.pool.close_all();
        self.accepted.close_all();
    }
}

fn accept_loop(ctx: Weak<TcpContext>, listener: TcpListener) {
    for stream in listener.incoming() {
        let Some(c) = ctx.upgrade() else { return };
        if c.stop.load(Ordering::Acquire) {
            return;
        }
        let targets = Arc::downgrade(&c.targets);
        let sctx = c.server.clone();
        match stream {
            Ok(s) => {
                // Never blocks: the registry makes room or refuses, logging is queued.
                let Some(ticket) = c.accepted.admit(&s, |k| c.targets.serves(k)) else {
                    drop(c);
                    info_log!("refusing a connection: too many open connections");
                    let _ = s.set_nonblocking(true);
                    let _ = (&s).write(&handshake::refusal(Status::ResourceExhausted));
                    continue;
                };
                drop(c);
                if let Err(e) = std::thread::Builder::new()
                    .name("dlslime-tcp-serve".into())
                    .spawn(move || server::serve(targets, sctx, ticket, s))
                {
                    warn_log!("cannot start a server thread: {e}");
                }
            }
            Err(e) => {
                drop(c);
                warn_log!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The bind IP, or for a wildcard bind the first non-loopback IPv4 address that is up
/// (never publish a loopback address to peers on other hosts unless it is all we have).
fn advertise_ip(bound: IpAddr) -> IpAddr {
    if !bound.is_unspecified() {
        return bound;
    }
    let mut found = None;
    // SAFETY: getifaddrs/freeifaddrs used as documented; we only read the list.
    unsafe {
        let mut ifa: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifa) == 0 {
            let mut cur = ifa;
            while !cur.is_null() {
                let i = &*cur;
                let up = i.ifa_flags & libc::IFF_UP as u32 != 0;
                let lo = i.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
                if up
                    && !lo
                    && !i.ifa_addr.is_null()
                    && (*i.ifa_addr).sa_family as i32 == libc::AF_INET
                {
                    let sin = &*(i.ifa_addr as *const libc::sockaddr_in);
                    found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                    break;
                }
                cur = i.ifa_next;
            }
            libc::freeifaddrs(ifa);
        }
    }
    found.unwrap_or_else(|| {
        warn_log!("no non-loopback IPv4 address found; advertising 127.0.0.1 (set advertise_host for other hosts)");
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    })
}
