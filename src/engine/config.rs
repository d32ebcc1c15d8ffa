//! Engine knobs, with defaults that suit a 2-core machine, overridable from the
//! environment when the first context is created.

use std::time::Duration;

/// Who drives completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Transport threads complete operations; waiters spin briefly, then park.
    Background,
    /// The default: the thread that waits on a future drives the transport itself (no
    /// hand-off between threads on the fast path); the transport's background thread
    /// serves only while no thread waits. Transports that cannot be driven by a waiter
    /// (TCP) work as in Background.
    Inline,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// How long a waiter spins before parking.
    pub spin: Duration,
    /// Deadline applied to every operation that does not name its own.
    pub default_timeout: Duration,
    pub progress: ProgressMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            spin: Duration::from_micros(50),
            default_timeout: Duration::from_secs(30),
            progress: ProgressMode::Inline,
        }
    }
}

impl Config {
    /// Defaults, then `DLSLIME_SPIN_US`, `DLSLIME_TIMEOUT_MS` and `DLSLIME_PROGRESS`
    /// (`background` or `inline`). Malformed values are ignored with a warning rather
    /// than aborting, unlike the original's static initialisers.
    pub fn from_env() -> Config {
        let mut c = Config::default();
        if let Some(d) = env_micros("DLSLIME_SPIN_US") {
            c.spin = d;
        }
        if let Some(ms) = env_u64("DLSLIME_TIMEOUT_MS") {
            c.default_timeout = Duration::from_millis(ms.max(1));
        }
        match std::env::var("DLSLIME_PROGRESS").as_deref() {
            Ok("background") => c.progress = ProgressMode::Background,
            Ok("inline") | Err(_) => {}
            Ok(other) => {
                crate::warn_log!("ignoring DLSLIME_PROGRESS={other:?} (want background|inline)")
            }
        }
        c
    }
}

/// The items of a comma-separated list (URLs, device names), trimmed, empty ones skipped.
pub fn comma_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// A duration in µs from the environment variable `name` (malformed: ignored, with a
/// warning).
pub fn env_micros(name: &str) -> Option<Duration> {
    env_u64(name).map(Duration::from_micros)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            crate::warn_log!("ignoring {name}={v:?} (not a number)");
            None
        }
    }
}
