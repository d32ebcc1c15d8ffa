//! The panic boundary. Every export runs its body inside `ffi_boundary!`, so a Rust panic
//! never unwinds into C: the export returns `DLSLIME_STATUS_PANIC` (or NULL / 0 / false
//! for exports that return no status) and the panic message becomes the thread's last
//! error.

use std::any::Any;
use std::ffi::c_char;

use super::status::{dlslime_status_t, set_last_error_message};

/// What an export returns when an argument is NULL or its body panicked.
pub(crate) trait Fallback {
    fn null_parameter() -> Self;
    fn panicked() -> Self;
}

impl Fallback for dlslime_status_t {
    fn null_parameter() -> Self {
        dlslime_status_t::NullParameter
    }
    fn panicked() -> Self {
        dlslime_status_t::Panic
    }
}

macro_rules! fallback_default {
    ($($t:ty => $v:expr),* $(,)?) => {$(
        impl Fallback for $t {
            fn null_parameter() -> Self { $v }
            fn panicked() -> Self { $v }
        }
    )*};
}

fallback_default! {
    () => (),
    bool => false,
    i32 => 0,
    u32 => 0,
    u64 => 0,
    usize => 0,
    *const c_char => std::ptr::null(),
}

/// Records a caught panic as the thread's last error.
pub(crate) fn record_panic(payload: Box<dyn Any + Send>) {
    let what = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    set_last_error_message(format!("panic inside libdlslime: {what}"));
}

/// Runs an export's body under `catch_unwind`. The body's type decides the fallback
/// value (see [`Fallback`]). `return` inside the body returns from the export.
macro_rules! ffi_boundary {
    ($($body:tt)*) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(v) => v,
            Err(payload) => {
                $crate::ffi::panic::record_panic(payload);
                $crate::ffi::panic::Fallback::panicked()
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::super::status::{dlslime_last_error_message, dlslime_status_t};

    fn panicking(flag: bool) -> dlslime_status_t {
        ffi_boundary! {
            if flag {
                panic!("boom {}", 7);
            }
            dlslime_status_t::Ok
        }
    }

    fn panicking_u64() -> u64 {
        ffi_boundary! {
            let v: Vec<u64> = Vec::new();
            v[3]
        }
    }

    #[test]
    fn panics_become_status_and_message() {
        assert_eq!(panicking(false), dlslime_status_t::Ok);
        assert_eq!(panicking(true), dlslime_status_t::Panic);
        let mut buf = [0 as std::ffi::c_char; 128];
        let mut n = 0usize;
        assert_eq!(
            dlslime_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n),
            dlslime_status_t::Ok
        );
        // SAFETY: `dlslime_last_error_message` NUL-terminated the message within `buf`.
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("boom 7"), "{msg}");
        assert_eq!(msg.len(), n);
        assert_eq!(panicking_u64(), 0);
    }
}
