#![no_main]
//! See dlslime::fuzz::tcp_frames.
libfuzzer_sys::fuzz_target!(|data: &[u8]| dlslime::fuzz::tcp_frames(data));
