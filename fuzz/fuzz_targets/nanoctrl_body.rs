#![no_main]
//! NanoCtrl request bodies: see nanoctrl/tests/fuzz_bodies/body.rs.
#[allow(dead_code)]
#[path = "../../nanoctrl/src/models.rs"]
mod models;
#[path = "../../nanoctrl/tests/fuzz_bodies/body.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::decode(data));
