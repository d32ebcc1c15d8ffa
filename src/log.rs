//! Minimal logging to stderr. `DLSLIME_LOG_LEVEL`: 0 errors only, 1 (default) warnings,
//! 2 info, 3 debug. Read once.

use std::sync::OnceLock;

pub fn level() -> u8 {
    static LEVEL: OnceLock<u8> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        std::env::var("DLSLIME_LOG_LEVEL")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
    })
}

#[macro_export]
#[doc(hidden)]
macro_rules! log_at {
    ($lvl:expr, $tag:expr, $($arg:tt)*) => {
        if $crate::log::level() >= $lvl {
            eprintln!("dlslime {}: {}", $tag, format_args!($($arg)*));
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
