//! What the ring benchmarks add to the two-process harness of `tests/common` (which
//! they share): lines to the parent from any thread, the parent's lines, and the
//! deterministic payload of a generation.
#![allow(dead_code)]

use std::io::Write;

/// Child side: a line to the parent (the harness's `@@ ` prefix), from any thread.
pub fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@ {msg}");
    let _ = out.flush();
}

/// Child side: the parent's lines (ends when the parent closes stdin or dies).
pub fn commands() -> impl Iterator<Item = String> {
    std::io::stdin().lines().map_while(Result::ok)
}

/// Deterministic content of the payload of generation `gen`.
pub fn fill(buf: &mut [u8], gen: u64) {
    let mut x = gen.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Whether `buf` holds the payload of generation `gen`.
pub fn check(buf: &[u8], gen: u64) -> bool {
    let mut want = vec![0u8; buf.len()];
    fill(&mut want, gen);
    want == buf
}

/// The text after `prefix` of the peer's next message that has it (other messages are
/// skipped), waiting at most the harness's answer timeout.
pub fn expect_prefix(p: &mut super::common::Peer, prefix: &str) -> String {
    loop {
        if let Some(rest) = p.recv().strip_prefix(prefix) {
            return rest.trim_start().to_string();
        }
    }
}
