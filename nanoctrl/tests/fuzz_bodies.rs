//! CI's smoke pass of the NanoCtrl request-body fuzz target, on stable: the corpus and a
//! few thousand mutated inputs through the same decoder the libFuzzer target drives
//! (`fuzz/fuzz_targets/nanoctrl_body.rs`; long runs: `make fuzz`).

#[allow(dead_code)]
#[path = "../src/models.rs"]
mod models;

#[path = "fuzz_bodies/body.rs"]
mod body;
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
        body::decode,
    );
    assert!(ran > 100, "only {ran} inputs ran");
}
