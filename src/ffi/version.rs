//! The library version at run time (`dlslime_version`, `dlslime_version_number`), to
//! compare with the `DLSLIME_VERSION_*` macros at the top of this header.
//!
//! `tests/header.rs` and the C tests check that the macros, `Cargo.toml` and these
//! functions agree.

use std::ffi::c_char;

const VERSION_NUL: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version as a static NUL-terminated string, e.g. "0.1.0" (the crate
/// version the library was built from). Never NULL; never free it. Compare with the
/// `DLSLIME_VERSION_*` macros to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn dlslime_version() -> *const c_char {
    ffi_boundary! {
        VERSION_NUL.as_ptr().cast()
    }
}

/// The library version as `(major << 16) | (minor << 8) | patch`, the same composition
/// as `DLSLIME_VERSION_NUMBER`.
#[no_mangle]
pub extern "C" fn dlslime_version_number() -> u32 {
    ffi_boundary! {
        let part = |s: &str| s.parse::<u32>().unwrap_or(0);
        (part(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
            | (part(env!("CARGO_PKG_VERSION_MINOR")) << 8)
            | part(env!("CARGO_PKG_VERSION_PATCH"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_string_and_number() {
        // SAFETY: `dlslime_version` returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(dlslime_version()) }
            .to_str()
            .unwrap();
        assert_eq!(v, crate::VERSION);
        let parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(
            dlslime_version_number(),
            (parts[0] << 16) | (parts[1] << 8) | parts[2]
        );
    }
}
