#![no_main]
//! See dlslime::fuzz::rpc_message.
libfuzzer_sys::fuzz_target!(|data: &[u8]| dlslime::fuzz::rpc_message(data));
