#![no_main]
//! See dlslime::fuzz::peer_mailbox.
libfuzzer_sys::fuzz_target!(|data: &[u8]| dlslime::fuzz::peer_mailbox(data));
