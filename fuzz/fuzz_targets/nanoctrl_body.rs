#![no_main]
//! NanoCtrl request bodies: see nanoctrl/tests/fuzz_bodies/decode.rs.

// The server's request bodies and their checks, compiled here as they are in the server
// (nanoctrl is a binary crate).
#[allow(dead_code, unused_imports)]
#[path = "../../nanoctrl/src/body.rs"]
mod body;
#[allow(dead_code, unused_imports)]
#[path = "../../nanoctrl/src/error.rs"]
mod error;
#[allow(dead_code, unused_imports)]
#[path = "../../nanoctrl/src/limits.rs"]
mod limits;
#[allow(dead_code, unused_imports)]
#[path = "../../nanoctrl/src/models.rs"]
mod models;
#[allow(dead_code, unused_imports)]
#[path = "../../nanoctrl/src/throttle.rs"]
mod throttle;
#[path = "../../nanoctrl/tests/fuzz_bodies/decode.rs"]
mod decode;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decode::decode(data));
