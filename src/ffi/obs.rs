//! Observability: the process's counters and latency histograms as one JSON snapshot
//! (`docs/observability.md`). Recording is off unless the environment sets
//! `DLSLIME_OBS=1` or `dlslime_obs_set_enabled(true)` is called.

use std::ffi::c_char;

use super::status::{dlslime_status_t, string_to_c};
use crate::obs;

/// Turns recording on or off for the whole process (overrides `DLSLIME_OBS`).
/// Operations already in flight when it turns on are not counted; counters keep their
/// values. Thread-safe.
#[no_mangle]
pub extern "C" fn dlslime_obs_set_enabled(enabled: bool) {
    ffi_boundary! {
        obs::set_enabled(enabled)
    }
}

/// Whether counters are being recorded.
#[no_mangle]
pub extern "C" fn dlslime_obs_enabled() -> bool {
    ffi_boundary! {
        obs::enabled()
    }
}

/// Writes the snapshot of every counter of the process as a NUL-terminated JSON document
/// to `*out_json` (free it with `dlslime_string_free`): `{"enabled": false}` when
/// recording is off, else `{"enabled": true, "schema_version": 1, "summary", "endpoints",
/// "peers", "rpc", ...}` (`docs/observability.md`). Thread-safe.
///
/// Errors: `DLSLIME_STATUS_NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn dlslime_obs_snapshot(out_json: *mut *mut c_char) -> dlslime_status_t {
    ffi_boundary! {
        let out_json = try_out!(out_json);
        let s = try_res!(string_to_c(obs::snapshot().to_string()));
        out_json.write(s);
        dlslime_status_t::Ok
    }
}
