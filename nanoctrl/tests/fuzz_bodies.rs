//! CI's smoke pass of the NanoCtrl request-body fuzz target, on stable: the corpus and a
//! few thousand mutated inputs through the same decoder the libFuzzer target drives
//! (`fuzz/fuzz_targets/nanoctrl_body.rs`; long runs: `make fuzz`).

// The server's request bodies and their checks, compiled here as they are in the server
// (nanoctrl is a binary crate).
#[allow(dead_code, unused_imports)]
#[path = "../src/body.rs"]
mod body;
#[allow(dead_code, unused_imports)]
#[path = "../src/error.rs"]
mod error;
#[allow(dead_code, unused_imports)]
#[path = "../src/limits.rs"]
mod limits;
#[allow(dead_code, unused_imports)]
#[path = "../src/models.rs"]
mod models;
#[allow(dead_code, unused_imports)]
#[path = "../src/throttle.rs"]
mod throttle;

#[path = "fuzz_bodies/decode.rs"]
mod decode;
#[path = "../../fuzz/smoke.rs"]
mod smoke;

use std::path::Path;
use std::time::Duration;

#[test]
fn nanoctrl_body() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/nanoctrl_body");
    let ran = smoke::run(
        "nanoctrl_body",
        &dir,
        20_000,
        Duration::from_secs(10),
        decode::decode,
    );
    assert!(ran > 100, "only {ran} inputs ran");
}
