//! CI's smoke pass of the fuzz targets (`fuzz/`), on stable: each target's corpus and a
//! few thousand mutated inputs through the same `dlslime::fuzz` entry point libFuzzer
//! drives. The long runs are `make fuzz` (nightly, cargo-fuzz).

#[path = "../fuzz/smoke.rs"]
mod smoke;

use std::path::Path;
use std::time::Duration;

const INPUTS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(10);

fn smoke(name: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let ran = smoke::run(name, &dir, INPUTS, BUDGET, f);
    assert!(ran > 100, "{name}: only {ran} inputs ran");
}

/// One test per fuzz target, named after it (its corpus directory and its entry point).
macro_rules! smoke_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                smoke(stringify!($target), dlslime::fuzz::$target);
            }
        )*
    };
}

smoke_tests!(
    tcp_hello,
    tcp_frames,
    rpc_message,
    rpc_handshake,
    shm_entry,
    peer_mailbox,
    endpoint_info,
);
