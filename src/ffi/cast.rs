//! Handle ownership, fixed once per C type, and the checked casts and NULL checks every
//! export goes through. No export casts a handle pointer with a bare `as`.
//!
//! * `OwnershipArc`: the C pointer is an `Arc::into_raw` of the Rust object. Used for
//!   objects that the library shares internally (memory pool, TCP context): `_free`
//!   drops the caller's reference, the library keeps its own.
//! * `OwnershipBox`: the C pointer is a `Box::into_raw`. Used for endpoints and futures.
//!
//! A type claims exactly one ownership model, so freeing an Arc handle as a Box does not
//! compile.

use std::sync::Arc;

pub(crate) struct OwnershipBox;
pub(crate) struct OwnershipArc;

/// Ties an opaque C handle type to the Rust object it points at.
pub(crate) trait Castable {
    type Ownership;
    type RustType;
}

/// Hands a new boxed object to C.
pub(crate) fn box_into_ptr<C: Castable<Ownership = OwnershipBox>>(v: C::RustType) -> *mut C {
    Box::into_raw(Box::new(v)).cast()
}

/// Hands one strong reference to C.
pub(crate) fn arc_into_ptr<C: Castable<Ownership = OwnershipArc>>(v: Arc<C::RustType>) -> *mut C {
    Arc::into_raw(v).cast_mut().cast()
}

/// Borrows the object behind a handle; `None` for NULL.
///
/// # Safety
/// `p` is NULL or a live handle of type `C` produced by this module.
pub(crate) unsafe fn try_from_ptr<'a, C: Castable>(p: *const C) -> Option<&'a C::RustType> {
    p.cast::<C::RustType>().as_ref()
}

/// A new strong reference to the object behind an Arc handle; `None` for NULL.
///
/// # Safety
/// `p` is NULL or a live Arc handle of type `C`.
pub(crate) unsafe fn try_clone_arc<C: Castable<Ownership = OwnershipArc>>(
    p: *const C,
) -> Option<Arc<C::RustType>> {
    if p.is_null() {
        return None;
    }
    let p = p.cast::<C::RustType>();
    Arc::increment_strong_count(p);
    Some(Arc::from_raw(p))
}

/// Drops a boxed handle; NULL is a no-op.
///
/// # Safety
/// `p` is NULL or a live Box handle of type `C`, not used again.
pub(crate) unsafe fn free_box<C: Castable<Ownership = OwnershipBox>>(p: *mut C) {
    if !p.is_null() {
        drop(Box::from_raw(p.cast::<C::RustType>()));
    }
}

/// Drops the caller's reference behind an Arc handle; NULL is a no-op.
///
/// # Safety
/// `p` is NULL or a live Arc handle of type `C`, not used again by the caller.
pub(crate) unsafe fn free_arc<C: Castable<Ownership = OwnershipArc>>(p: *const C) {
    if !p.is_null() {
        drop(Arc::from_raw(p.cast::<C::RustType>()));
    }
}

/// Records "argument is NULL" and returns the export's NULL fallback.
macro_rules! null_arg {
    ($name:expr) => {{
        $crate::ffi::status::set_last_error_message(format!("argument `{}` is NULL", $name));
        return $crate::ffi::panic::Fallback::null_parameter();
    }};
}

/// `&RustType` behind a handle, or return the NULL fallback.
macro_rules! try_ref {
    ($p:ident) => {
        match unsafe { $crate::ffi::cast::try_from_ptr($p) } {
            Some(r) => r,
            None => null_arg!(stringify!($p)),
        }
    };
}

/// A new `Arc` of the object behind an Arc handle, or return the NULL fallback.
macro_rules! try_arc {
    ($p:ident) => {
        match unsafe { $crate::ffi::cast::try_clone_arc($p) } {
            Some(r) => r,
            None => null_arg!(stringify!($p)),
        }
    };
}

/// A non-NULL out-parameter pointer (still a raw pointer: it points at uninitialised
/// memory until written), or return the NULL fallback.
macro_rules! try_out {
    ($p:ident) => {
        if $p.is_null() {
            null_arg!(stringify!($p))
        } else {
            $p
        }
    };
}

/// A NUL-terminated UTF-8 string argument as `&str`. NULL returns the NULL fallback;
/// invalid UTF-8 fails with `DLSLIME_STATUS_INVALID_ARGUMENT`.
macro_rules! try_str {
    ($p:ident) => {
        match try_opt_str!($p) {
            Some(s) => s,
            None => null_arg!(stringify!($p)),
        }
    };
}

/// Like `try_str!`, but NULL is `None`.
macro_rules! try_opt_str {
    ($p:ident) => {
        if $p.is_null() {
            None
        } else {
            match unsafe { ::std::ffi::CStr::from_ptr($p) }.to_str() {
                Ok(s) => Some(s),
                Err(_) => {
                    return $crate::ffi::status::fail($crate::error::Error::invalid(concat!(
                        "argument `",
                        stringify!($p),
                        "` is not valid UTF-8"
                    )))
                }
            }
        }
    };
}

/// The value of a `Result`, or record the error and return its status.
macro_rules! try_res {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return $crate::ffi::status::fail(err),
        }
    };
}
