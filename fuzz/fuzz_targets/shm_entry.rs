#![no_main]
//! See dlslime::fuzz::shm_entry.
libfuzzer_sys::fuzz_target!(|data: &[u8]| dlslime::fuzz::shm_entry(data));
