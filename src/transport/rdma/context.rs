//! One context per NIC port: the domain (device + PD), one completion queue shared by
//! every QP of every endpoint on it, and the completion thread.
//!
//! Who polls the CQ (the waiting threads, or the completion thread while none does) is
//! [`super::progress`]. Completions are routed to their endpoint by QP number; a
//! completion for a QP that is gone is dropped (endpoints drain their QPs before
//! destroying them, so a QP number is never reused while completions for its previous
//! owner are still queued).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use rdma_sys::*;

use super::domain::Domain;
use super::mr::DomainRegistrar;
use super::progress::{self, Progress, POLL_BATCH};
use super::verbs::{self, os_error, verbs};
use super::RdmaConfig;
use crate::engine::ProgressMode;
use crate::error::{Result, Status};
use crate::future::Driver;
use crate::memory::Registrar;
use crate::warn_log;

/// What the poller of the CQ calls (the completion thread or a waiting thread, one at a
/// time, see [`super::progress`]). `tag` is what the handler registered the QP with.
pub trait CompletionHandler: Send + Sync {
    fn on_completion(&self, tag: u32, wc: &ibv_wc);
    /// The device reported a fatal error of QP `tag`, of the CQ or of the device
    /// (`tag == None`): the handler's connection is broken.
    fn on_fatal(&self, tag: Option<u32>, what: &str);
    /// Timers (keepalives); called at least every 100 ms.
    fn tick(&self, now: Instant);
}

pub(super) struct Cq {
    pub(super) domain: Arc<Domain>,
    pub(super) channel: *mut ibv_comp_channel,
    pub(super) cq: *mut ibv_cq,
    depth: u32,
}

// SAFETY: the CQ is polled by one thread at a time (under the poll lock, see
// `progress`); QPs created on other threads just name it (libibverbs is thread-safe for
// that).
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

impl Drop for Cq {
    fn drop(&mut self) {
        if let Ok(v) = verbs() {
            // SAFETY: created in `RdmaContext::open`; every QP on it is destroyed (they
            // hold the context) and every event was acked by the completion thread.
            unsafe {
                (v.ibv_destroy_cq)(self.cq);
                (v.ibv_destroy_comp_channel)(self.channel);
            }
        }
    }
}

type Route = (Weak<dyn CompletionHandler>, u32);

pub(super) struct Shared {
    pub(super) cq: Cq,
    pub(super) config: RdmaConfig,
    routes: RwLock<HashMap<u32, Route>>,
    tickers: Mutex<Vec<Weak<dyn CompletionHandler>>>,
    /// CQ entries the endpoints may need at worst (every request completing with an
    /// error), kept ≤ the CQ's depth so the CQ can never overrun.
    cqes: AtomicU32,
    pub(super) stop: AtomicBool,
    pub(super) progress: Progress,
}

/// A NIC port opened for RDMA. Create endpoints over it; share it between them.
pub struct RdmaContext {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RdmaContext {
    /// Opens `config.device` (the first visible one when unset), checks its port, picks
    /// the GID, and starts the completion thread.
    pub fn open(config: RdmaConfig) -> Result<Arc<RdmaContext>> {
        let v = verbs()?;
        let domain = Arc::new(Domain::open(&config)?);
        // SAFETY: live device context.
        let channel = unsafe { (v.ibv_create_comp_channel)(domain.ctx()) };
        if channel.is_null() {
            return Err(os_error(
                Status::ResourceExhausted,
                "ibv_create_comp_channel",
            ));
        }
        // The thread polls with a timeout; the fd must not block ibv_get_cq_event.
        // SAFETY: a valid fd owned by the channel.
        unsafe {
            let fd = (*channel).fd;
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        // SAFETY: the device's async-event fd, valid while the device is open.
        unsafe {
            let fd = (*domain.ctx()).async_fd;
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let max_cqe = domain.device.attr.max_cqe.max(1) as u32;
        let depth = config.cq_depth.clamp(1, max_cqe);
        // SAFETY: live context and channel.
        let cq = unsafe {
            (v.ibv_create_cq)(domain.ctx(), depth as i32, std::ptr::null_mut(), channel, 0)
        };
        if cq.is_null() {
            let e = os_error(
                Status::ResourceExhausted,
                &format!("ibv_create_cq({depth})"),
            );
            // SAFETY: created above, destroyed once.
            unsafe { (v.ibv_destroy_comp_channel)(channel) };
            return Err(e);
        }
        let shared = Arc::new(Shared {
            cq: Cq {
                domain,
                channel,
                cq,
                depth,
            },
            progress: Progress::new(config.idle_grace),
            config,
            routes: RwLock::new(HashMap::new()),
            tickers: Mutex::new(Vec::new()),
            cqes: AtomicU32::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dlslime-rdma-cq".into())
            .spawn(move || progress::completion_loop(&sh))
            .map_err(|e| crate::error::Error::io("spawn the RDMA completion thread", e))?;
        Ok(Arc::new(RdmaContext {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    pub fn config(&self) -> &RdmaConfig {
        &self.shared.config
    }

    pub fn domain(&self) -> &Arc<Domain> {
        &self.shared.cq.domain
    }

    pub fn device_name(&self) -> &str {
        &self.domain().device.name
    }

    pub fn cq(&self) -> *mut ibv_cq {
        self.shared.cq.cq
    }

    pub fn cq_depth(&self) -> u32 {
        self.shared.cq.depth
    }

    /// What a thread waiting on one of this context's operations drives (it polls the
    /// CQ itself, see [`super::progress`]); `None` in background progress mode.
    pub(super) fn driver(&self) -> Option<Arc<dyn Driver>> {
        (self.shared.config.engine.progress == ProgressMode::Inline)
            .then(|| self.shared.clone() as Arc<dyn Driver>)
    }

    /// Polls the CQ once from this thread, unless another thread is polling it. Returns
    /// whether it handled a completion.
    pub(super) fn poll(&self) -> bool {
        progress::poll(&self.shared) > 0
    }

    /// What registers a memory pool's regions on this context's protection domain.
    pub fn registrar(&self) -> Arc<dyn Registrar> {
        Arc::new(DomainRegistrar(self.domain().clone()))
    }

    /// Reserves `n` completion-queue entries for an endpoint's QPs.
    pub(super) fn reserve_cqes(&self, n: u32) -> Result<()> {
        let depth = self.shared.cq.depth;
        self.shared
            .cqes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c + n <= depth).then_some(c + n)
            })
            .map(|_| ())
            .map_err(|used| {
                crate::error::Error::new(
                    Status::ResourceExhausted,
                    format!(
                        "the completion queue of {} ({depth} entries, {used} in use) has no                          room for another endpoint needing {n}; use fewer or smaller endpoints                          per context, or a larger cq_depth",
                        self.device_name()
                    ),
                )
            })
    }

    pub(super) fn release_cqes(&self, n: u32) {
        self.shared.cqes.fetch_sub(n, Ordering::AcqRel);
    }

    pub(super) fn add_route(&self, qpn: u32, handler: Weak<dyn CompletionHandler>, tag: u32) {
        self.shared.routes.write().insert(qpn, (handler, tag));
    }

    pub(super) fn remove_route(&self, qpn: u32) {
        self.shared.routes.write().remove(&qpn);
    }

    pub(super) fn add_ticker(&self, handler: Weak<dyn CompletionHandler>) {
        let mut t = self.shared.tickers.lock();
        t.retain(|w| w.strong_count() > 0);
        t.push(handler);
    }
}

impl Drop for RdmaContext {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// Consumes every pending completion event (the fd is non-blocking) and acks it.
pub(super) fn ack_events(channel: *mut ibv_comp_channel) {
    let Ok(v) = verbs() else { return };
    loop {
        let mut ev_cq = std::ptr::null_mut();
        let mut ev_ctx = std::ptr::null_mut();
        // SAFETY: live channel; out pointers valid.
        if unsafe { (v.ibv_get_cq_event)(channel, &mut ev_cq, &mut ev_ctx) } != 0 {
            return;
        }
        // SAFETY: the event's CQ is ours; acked once per event.
        unsafe { (v.ibv_ack_cq_events)(ev_cq, 1) };
    }
}

pub(super) fn dispatch(sh: &Shared, wcs: &[ibv_wc]) {
    let mut handlers: [Option<(Arc<dyn CompletionHandler>, u32)>; POLL_BATCH] =
        std::array::from_fn(|_| None);
    {
        let routes = sh.routes.read();
        for (h, wc) in handlers.iter_mut().zip(wcs) {
            *h = routes
                .get(&wc.qp_num)
                .and_then(|(w, tag)| w.upgrade().map(|a| (a, *tag)));
        }
    }
    for (h, wc) in handlers.iter().zip(wcs) {
        if let Some((h, tag)) = h {
            h.on_completion(*tag, wc);
        }
    }
}

/// Handles the device's async events (non-blocking fd): fatal QP, CQ and device errors
/// break the connections concerned; the rest is logged.
pub(super) fn async_events(sh: &Shared) {
    let Ok(v) = verbs() else { return };
    let ctx = sh.cq.domain.ctx();
    loop {
        let mut ev = verbs::AsyncEvent {
            element: std::ptr::null_mut(),
            event_type: 0,
        };
        // SAFETY: live device context; `ev` has the C layout.
        if unsafe { (v.ibv_get_async_event)(ctx, &mut ev) } != 0 {
            return;
        }
        let name = verbs::event_type_str(ev.event_type);
        match ev.event_type {
            verbs::EVENT_QP_FATAL | verbs::EVENT_QP_REQ_ERR | verbs::EVENT_QP_ACCESS_ERR => {
                // SAFETY: for QP events the element is the QP, live until acked.
                let qpn = unsafe { (*(ev.element as *mut ibv_qp)).qp_num };
                let route = sh.routes.read().get(&qpn).cloned();
                if let Some((h, tag)) = route.and_then(|(w, t)| w.upgrade().map(|h| (h, t))) {
                    h.on_fatal(Some(tag), &format!("{name} on QP {qpn}"));
                }
            }
            verbs::EVENT_CQ_ERR | verbs::EVENT_DEVICE_FATAL => {
                warn_log!("RDMA device {}: {name}", sh.cq.domain.device.name);
                let all: Vec<_> = sh
                    .routes
                    .read()
                    .values()
                    .filter_map(|(w, _)| w.upgrade())
                    .collect();
                for h in all {
                    h.on_fatal(None, &name);
                }
            }
            verbs::EVENT_PORT_ERR => {
                warn_log!("RDMA device {}: {name}", sh.cq.domain.device.name)
            }
            _ => crate::info_log!("RDMA device {}: {name}", sh.cq.domain.device.name),
        }
        // SAFETY: acked once, after the last use of the element.
        unsafe { (v.ibv_ack_async_event)(&mut ev) };
    }
}

pub(super) fn tick(sh: &Shared, now: Instant) {
    async_events(sh);
    let tickers: Vec<_> = sh.tickers.lock().iter().filter_map(Weak::upgrade).collect();
    for t in tickers {
        t.tick(now);
    }
}
