#![no_main]
//! NanoCtrl request bodies: see nanoctrl/tests/fuzz_bodies/body.rs.
#[path = "../../nanoctrl/tests/fuzz_bodies/body.rs"]
mod body;
#[allow(dead_code)]
#[path = "../../nanoctrl/src/models.rs"]
mod models;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::decode(data));
