//! Versioned option structs: every `dlslime_*_options_t` starts with `size_t size`, set by
//! its `_init` function to the `sizeof` the caller was compiled with. Newer library
//! versions only append fields, so an older caller's struct is read as far as it goes and
//! a newer caller's unknown tail is accepted only when it is all zero (its defaults).

use std::mem::size_of;
use std::time::Duration;

use crate::error::{Error, Status};

/// Reads an options struct whose first field is `size: usize`, honouring that size.
///
/// # Safety
/// `opts` is non-NULL and points at `opts->size` readable bytes; `T` is a `#[repr(C)]`
/// options struct whose first field is `size: usize` and whose fields are all integers
/// or raw pointers (so any bytes are a valid `T`).
pub unsafe fn read_sized<T>(opts: *const T, type_name: &str) -> crate::Result<T> {
    // SAFETY: `opts` is non-NULL and its first field is a `usize` (this function's
    // contract); `read_unaligned` needs no alignment from a C caller's pointer.
    let size = unsafe { opts.cast::<usize>().read_unaligned() };
    let ours = size_of::<T>();
    if size < ours {
        return Err(Error::invalid(format!(
            "{type_name}.size is {size}, expected at least {ours}; initialise it with the matching _init function"
        )));
    }
    if size > ours {
        // SAFETY: the caller compiled a larger struct: `size` bytes are readable from
        // `opts` (this function's contract), so the `size - ours` bytes after ours are.
        let extra = unsafe { std::slice::from_raw_parts(opts.cast::<u8>().add(ours), size - ours) };
        if extra.iter().any(|b| *b != 0) {
            return Err(Error::new(
                Status::Unsupported,
                format!("{type_name} sets fields this library version does not know"),
            ));
        }
    }
    // SAFETY: `size >= size_of::<T>()` bytes are readable (checked above and the
    // contract), and any bytes are a valid `T` (integers and raw pointers only). The
    // caller's struct may be under-aligned for `T` only if it was not a `T`, which the
    // contract rules out.
    Ok(unsafe { opts.read() })
}

/// What every `_options_init` writes to a non-NULL `opts`: the struct all zero (0,
/// false, NULL: the defaults) but `size`, the `sizeof` this library was built with.
///
/// # Safety
/// `opts` is NULL or aligned, writable storage for one `T`; `T` is a `#[repr(C)]`
/// options struct whose first field is `size: usize` and whose fields are all valid as
/// zero bytes (integers, booleans, raw pointers).
pub unsafe fn init_sized<T>(opts: *mut T) {
    if opts.is_null() {
        return;
    }
    // SAFETY: writable storage for one `T`, and zero bytes are a valid `T` (this
    // function's contract); its first field is a `usize` at offset 0 (`repr(C)`).
    unsafe {
        opts.write_bytes(0, 1);
        opts.cast::<usize>().write(size_of::<T>());
    }
}

/// The config an export's optional options struct asks for: `C::default()` for NULL,
/// else the struct read at its own size (`read_sized`, errors naming the struct's C type)
/// and converted by `convert`. Exports call it through `try_options!`.
///
/// # Safety
/// `opts` is NULL or meets `read_sized`'s contract for `T`, and the struct meets
/// `convert`'s contract (string fields NULL or NUL-terminated and valid for the call).
pub unsafe fn config_or_default<T, C: Default>(
    opts: *const T,
    convert: unsafe fn(&T) -> crate::Result<C>,
) -> crate::Result<C> {
    if opts.is_null() {
        return Ok(C::default());
    }
    let full = std::any::type_name::<T>();
    let type_name = full.rsplit("::").next().unwrap_or(full);
    // SAFETY: not NULL (checked above), so `read_sized`'s contract holds (this
    // function's contract).
    let o = unsafe { read_sized(opts, type_name) }?;
    // SAFETY: the struct meets `convert`'s contract (this function's contract).
    unsafe { convert(&o) }
}

/// A duration field in milliseconds of an options struct: 0 keeps `default`.
pub fn ms(v: u64, default: Duration) -> Duration {
    if v == 0 {
        default
    } else {
        Duration::from_millis(v)
    }
}
