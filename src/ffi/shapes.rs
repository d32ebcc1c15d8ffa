//! The export bodies that recur across the objects, each written once: `_options_init`,
//! `_free`, getters that write a string, a value or a new handle to an out-parameter,
//! and calls that hand out a future. An export keeps its own visible signature and doc
//! comment (cbindgen reads those, and does not expand macros); its body is one of these.
//!
//! Each body runs inside `ffi_boundary!` and checks its handle first, then its
//! out-parameter, as a hand-written body would.

/// `_options_init`: fills `*opts` with the defaults (`size` set, every other field
/// zero); NULL is a no-op.
macro_rules! options_init_body {
    ($opts:ident) => {
        ffi_boundary! {
            // SAFETY: `opts` is NULL or writable storage for one options struct (the
            // header's contract), a `repr(C)` struct of integers, booleans and pointers
            // led by `size`.
            unsafe { $crate::ffi::options::init_sized($opts) }
        }
    };
}

/// `_free`: drops the object (Box handles) or the caller's reference (Arc handles);
/// NULL is a no-op.
macro_rules! free_body {
    ($p:ident) => {
        ffi_boundary! {
            // SAFETY: `$p` is NULL or a live handle of its type that the caller does not
            // use again (the header's contract for `_free`).
            unsafe { $crate::ffi::cast::free($p) }
        }
    };
}

/// A getter that writes an owned string (freed with `dlslime_string_free`):
/// `string_getter_body!(handle, out, |obj| text)`, or `|obj| ? result` for a fallible one.
macro_rules! string_getter_body {
    ($h:ident, $out:ident, |$o:ident| ? $e:expr) => {
        ffi_boundary! {
            let $o = try_ref!($h);
            let out = try_out!($out);
            $crate::ffi::args::string_out(try_res!($e), out)
        }
    };
    ($h:ident, $out:ident, |$o:ident| $e:expr) => {
        ffi_boundary! {
            let $o = try_ref!($h);
            let out = try_out!($out);
            $crate::ffi::args::string_out($e, out)
        }
    };
}

/// A getter that writes a value: `value_getter_body!(handle, out, |obj| value)`.
macro_rules! value_getter_body {
    ($h:ident, $out:ident, |$o:ident| $e:expr) => {
        ffi_boundary! {
            let $o = try_ref!($h);
            let out = try_out!($out);
            out.write($e);
            $crate::ffi::status::dlslime_status_t::Ok
        }
    };
}

/// A call that starts an operation and writes its future:
/// `future_call_body!(handle, out, |obj| result_of_a_future)`.
macro_rules! future_call_body {
    ($h:ident, $out:ident, |$o:ident| $e:expr) => {
        ffi_boundary! {
            let $o = try_ref!($h);
            let out = try_out!($out);
            $crate::ffi::args::future_out(try_res!($e), out)
        }
    };
}

/// A call that returns only a status: `status_call_body!(handle, |obj| result)`.
macro_rules! status_call_body {
    ($h:ident, |$o:ident| $e:expr) => {
        ffi_boundary! {
            let $o = try_ref!($h);
            $crate::ffi::status::status_of($e)
        }
    };
}

/// The config an export's `opts` argument asks for (the default for NULL), converted by
/// `convert`, or record the error and return its status.
macro_rules! try_options {
    ($opts:ident, $convert:expr) => {
        // SAFETY: by the header's contract `opts` is NULL or an options struct the caller
        // set up with its `_init` function (`size` readable bytes of integers, booleans
        // and pointers), whose string fields are NULL or NUL-terminated and valid for the
        // call: `config_or_default`'s contract.
        try_res!(unsafe { $crate::ffi::options::config_or_default($opts, $convert) })
    };
}
