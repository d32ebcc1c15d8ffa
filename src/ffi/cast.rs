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

/// How a handle holds its object: what C is handed (`Value`) and how `_free` lets go.
pub(crate) trait Owner {
    /// What an export hands to C: the object itself (Box) or one strong reference (Arc).
    type Value<T>;
    fn into_raw<T>(v: Self::Value<T>) -> *const T;
    /// # Safety
    /// `p` came from `into_raw` of this owner and is not used again.
    unsafe fn drop_raw<T>(p: *const T);
}

impl Owner for OwnershipBox {
    type Value<T> = T;
    fn into_raw<T>(v: T) -> *const T {
        Box::into_raw(Box::new(v))
    }
    unsafe fn drop_raw<T>(p: *const T) {
        // SAFETY: `p` came from `Box::into_raw` (`into_raw` above) and, by the caller's
        // contract, is freed once and not used again.
        drop(unsafe { Box::from_raw(p.cast_mut()) });
    }
}

impl Owner for OwnershipArc {
    type Value<T> = Arc<T>;
    fn into_raw<T>(v: Arc<T>) -> *const T {
        Arc::into_raw(v)
    }
    unsafe fn drop_raw<T>(p: *const T) {
        // SAFETY: `p` came from `Arc::into_raw` (`into_raw` above) and holds the caller's
        // reference, which the caller gives up here (it does not use `p` again).
        drop(unsafe { Arc::from_raw(p) });
    }
}

/// Ties an opaque C handle type to the Rust object it points at.
pub(crate) trait Castable {
    type Ownership: Owner;
    type RustType;
}

/// Declares the Rust object an opaque C handle points at and how it is owned:
/// `castable!(dlslime_x_t => Arc<X>)` or `castable!(dlslime_x_t => Box<X>)`.
macro_rules! castable {
    ($c:ty => Box<$rust:ty>) => {
        impl $crate::ffi::cast::Castable for $c {
            type Ownership = $crate::ffi::cast::OwnershipBox;
            type RustType = $rust;
        }
    };
    ($c:ty => Arc<$rust:ty>) => {
        impl $crate::ffi::cast::Castable for $c {
            type Ownership = $crate::ffi::cast::OwnershipArc;
            type RustType = $rust;
        }
    };
}

/// What `into_ptr` takes for handle type `C`: the object (Box) or an `Arc` of it.
pub(crate) type Held<C> = <<C as Castable>::Ownership as Owner>::Value<<C as Castable>::RustType>;

/// Hands an object (Box handles) or one strong reference (Arc handles) to C.
pub(crate) fn into_ptr<C: Castable>(v: Held<C>) -> *mut C {
    C::Ownership::into_raw(v).cast_mut().cast()
}

/// Hands a new boxed object to C.
pub(crate) fn box_into_ptr<C: Castable<Ownership = OwnershipBox>>(v: C::RustType) -> *mut C {
    into_ptr::<C>(v)
}

/// Hands one strong reference to C.
pub(crate) fn arc_into_ptr<C: Castable<Ownership = OwnershipArc>>(v: Arc<C::RustType>) -> *mut C {
    into_ptr::<C>(v)
}

/// Borrows the object behind a handle; `None` for NULL.
///
/// # Safety
/// `p` is NULL or a live handle of type `C` produced by this module.
pub(crate) unsafe fn try_from_ptr<'a, C: Castable>(p: *const C) -> Option<&'a C::RustType> {
    // SAFETY: a live handle of type `C` points at a `C::RustType` (`into_ptr` casts from
    // it), which stays alive while the caller may use the handle, i.e. until its `_free`;
    // NULL gives `None`.
    unsafe { p.cast::<C::RustType>().as_ref() }
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
    // SAFETY: `p` came from `Arc::into_raw` (`into_ptr`) and the caller's reference is
    // still alive, so the count is at least 1; the increment gives the new `Arc` its own
    // reference and leaves the caller's untouched.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

/// Drops the object (Box handles) or the caller's reference (Arc handles) behind a
/// handle; NULL is a no-op.
///
/// # Safety
/// `p` is NULL or a live handle of type `C`, not used again by the caller.
pub(crate) unsafe fn free<C: Castable>(p: *const C) {
    if !p.is_null() {
        // SAFETY: a live handle came from `into_ptr` with this ownership, and the caller
        // gives it up here (this function's contract).
        unsafe { C::Ownership::drop_raw(p.cast::<C::RustType>()) }
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
        // SAFETY: every handle argument of an export is, by the header's contract, NULL
        // or a live handle of its type (not yet freed; `_free` must not race with other
        // calls), which is what `try_from_ptr` requires.
        match unsafe { $crate::ffi::cast::try_from_ptr($p) } {
            Some(r) => r,
            None => null_arg!(stringify!($p)),
        }
    };
}

/// A new `Arc` of the object behind an Arc handle, or return the NULL fallback.
macro_rules! try_arc {
    ($p:ident) => {
        // SAFETY: as in `try_ref!`: the argument is NULL or a live Arc handle of its type.
        match unsafe { $crate::ffi::cast::try_clone_arc($p) } {
            Some(r) => r,
            None => null_arg!(stringify!($p)),
        }
    };
}

/// A non-NULL out-parameter as an `args::Out` (it points at uninitialised memory until
/// written), or return the NULL fallback.
macro_rules! try_out {
    ($p:ident) => {
        // SAFETY: out-parameters of the exports are, by the header's contract, NULL or
        // aligned storage for their type, writable for the duration of the call.
        match unsafe { $crate::ffi::args::Out::new($p) } {
            Some(o) => o,
            None => null_arg!(stringify!($p)),
        }
    };
}

/// An optional out-parameter (NULL: the caller does not want the value) as an
/// `Option<args::Out>`.
macro_rules! opt_out {
    ($p:ident) => {
        // SAFETY: as in `try_out!`: NULL or writable storage for the call.
        unsafe { $crate::ffi::args::Out::new($p) }
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
            // SAFETY: not NULL (checked above), and string arguments are NUL-terminated
            // and stay valid for the call by the header's contract; the borrow does not
            // outlive the export.
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

/// The `len` bytes at buffer argument `p` as a slice for the call: `try_slice!(p, len)`,
/// or `try_slice!(mut p, len)` for a destination. NULL is fine only with `len == 0`;
/// otherwise return the NULL fallback.
macro_rules! try_slice {
    ($p:ident, $len:ident) => {
        match $crate::ffi::args::buffer_ptr($p.cast_mut().cast(), $len) {
            // SAFETY: by the header's contract a buffer argument is `len` readable bytes,
            // valid for the call (`buffer_ptr` is dangling only for `len == 0`).
            Some(p) => unsafe { ::std::slice::from_raw_parts(p as *const u8, $len) },
            None => null_arg!(stringify!($p)),
        }
    };
    (mut $p:ident, $len:ident) => {
        match $crate::ffi::args::buffer_ptr($p.cast(), $len) {
            // SAFETY: as above, and a destination is writable and used by nobody else
            // during the call.
            Some(p) => unsafe { ::std::slice::from_raw_parts_mut(p, $len) },
            None => null_arg!(stringify!($p)),
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
