//! Logging to stderr that never blocks the caller. `DLSLIME_LOG_LEVEL`: 0 errors only,
//! 1 (default) warnings, 2 info, 3 debug. Read once.
//!
//! A message is formatted by the caller and handed to one writer thread through a bounded
//! queue. When stderr is not drained (a pipe nobody reads) or a flood of messages arrives
//! (an attack on a listener), the caller still returns at once: at most [`RATE`] messages
//! a second are queued, at most [`QUEUE`] wait, and the rest are dropped and counted; the
//! writer reports the count with its next line. Messages still queued when the process
//! exits are lost.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crossbeam_channel::{bounded, Sender, TrySendError};

/// Messages queued per second at most; more are dropped.
pub const RATE: u64 = 50;
/// Messages waiting for the writer at most.
pub const QUEUE: usize = 256;

pub fn level() -> u8 {
    static LEVEL: OnceLock<u8> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        std::env::var("DLSLIME_LOG_LEVEL")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
    })
}

struct Logger {
    tx: Option<Sender<String>>,
    epoch: Instant,
    /// `second << 32 | messages queued in that second`.
    window: AtomicU64,
    dropped: AtomicU64,
}

fn logger() -> &'static Logger {
    static L: OnceLock<Logger> = OnceLock::new();
    L.get_or_init(|| {
        let (tx, rx) = bounded::<String>(QUEUE);
        let tx = std::thread::Builder::new()
            .name("dlslime-log".into())
            .spawn(move || {
                let mut err = std::io::stderr();
                for line in rx {
                    let lost = logger().dropped.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let _ = writeln!(err, "dlslime warning: {lost} log messages dropped");
                    }
                    let _ = writeln!(err, "{line}");
                }
            })
            .ok()
            .map(|_| tx);
        Logger {
            tx,
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    })
}

impl Logger {
    /// Whether one more message fits this second's budget.
    fn admit(&self) -> bool {
        let sec = self.epoch.elapsed().as_secs();
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 == sec {
                if cur & 0xffff_ffff >= RATE {
                    return false;
                }
                cur + 1
            } else {
                sec << 32 | 1
            };
            match self
                .window
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }
}

/// Queues one line for stderr; never blocks.
pub fn emit(line: String) {
    let l = logger();
    let queued = l.admit()
        && match &l.tx {
            Some(tx) => !matches!(
                tx.try_send(line),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
            ),
            None => false,
        };
    if !queued {
        l.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[macro_export]
#[doc(hidden)]
macro_rules! log_at {
    ($lvl:expr, $tag:expr, $($arg:tt)*) => {
        if $crate::log::level() >= $lvl {
            $crate::log::emit(format!("dlslime {}: {}", $tag, format_args!($($arg)*)));
        }
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! warn_log {
    ($($arg:tt)*) => { $crate::log_at!(1, "warning", $($arg)*) };
}

#[macro_export]
#[doc(hidden)]
macro_rules! info_log {
    ($($arg:tt)*) => { $crate::log_at!(2, "info", $($arg)*) };
}
