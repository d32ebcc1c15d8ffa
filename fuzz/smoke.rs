//! The stable smoke pass of the fuzz targets, run by `cargo test` (tests/fuzz_smoke.rs,
//! nanoctrl/tests/fuzz_bodies.rs): every file of a target's corpus (the committed seeds
//! `seed-*`, including the reproducers of fixed findings, plus whatever `make fuzz` left
//! there), then `n` inputs made by mutating them (bit flips, interesting values,
//! insertions, deletions, splices) or drawn at random, through the same entry point the
//! libFuzzer target calls. Deterministic (seed `FUZZ_SMOKE_SEED`, default 1). An input
//! that panics is written under `target/fuzz-smoke-failures/` before the panic goes on.

use std::path::Path;
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    if rng.below(8) == 0 {
        let n = rng.below(300);
        out.extend((0..n).map(|_| rng.next() as u8));
        return;
    }
    out.extend_from_slice(&corpus[rng.below(corpus.len())]);
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'0', b'9'][rng.below(10)];
            }
            2 if len >= 8 => {
                let i = rng.below(len - 7);
                let v: u64 = [0, 1, u64::MAX, 1 << 63, u32::MAX as u64, 4096, 65536][rng.below(7)];
                out[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(len - i);
                out.drain(i..i + n.min(len - i));
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let cut = rng.below(len + 1);
                out.truncate(cut);
            }
        }
    }
}

fn run_one(name: &str, what: &str, data: &[u8], f: fn(&[u8])) {
    if let Err(p) = std::panic::catch_unwind(|| f(data)) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-smoke-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{name}-{what}"));
        let _ = std::fs::write(&file, data);
        eprintln!(
            "fuzz smoke {name}: {what} panicked; input saved to {}",
            file.display()
        );
        std::panic::resume_unwind(p);
    }
}

/// Runs target `name` over `corpus_dir` and `n` mutated inputs (stopping early after
/// `budget`); returns how many inputs ran.
pub fn run(name: &str, corpus_dir: &Path, n: usize, budget: Duration, f: fn(&[u8])) -> usize {
    let mut corpus = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", corpus_dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for p in files {
        let data = std::fs::read(&p).unwrap();
        let what = p.file_name().unwrap().to_string_lossy().into_owned();
        run_one(name, &what, &data, f);
        corpus.push(data);
    }
    assert!(
        corpus.iter().any(|c| !c.is_empty()),
        "{name}: the corpus at {} has no seed",
        corpus_dir.display()
    );
    let seed = std::env::var("FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1u64);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let start = Instant::now();
    let mut input = Vec::new();
    let mut ran = corpus.len();
    for i in 0..n {
        if i % 256 == 0 && start.elapsed() > budget {
            break;
        }
        mutate(&mut rng, &corpus, &mut input);
        run_one(name, &format!("seed{seed}-input{i}"), &input, f);
        ran += 1;
    }
    eprintln!(
        "fuzz smoke {name}: {ran} inputs ({} corpus files) in {:.2?}",
        corpus.len(),
        start.elapsed()
    );
    ran
}
