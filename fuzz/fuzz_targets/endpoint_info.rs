#![no_main]
//! See dlslime::fuzz::endpoint_info.
libfuzzer_sys::fuzz_target!(|data: &[u8]| dlslime::fuzz::endpoint_info(data));
