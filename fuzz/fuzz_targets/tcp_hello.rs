#![no_main]
//! See dlslime::fuzz::tcp_hello.
libfuzzer_sys::fuzz_target!(|data: &[u8]| dlslime::fuzz::tcp_hello(data));
