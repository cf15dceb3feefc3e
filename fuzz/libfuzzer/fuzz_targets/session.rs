//! Fuzz target: Two open connections on one broker fed interleaved records (see `warren_fuzz::targets::session`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::targets::session(data));
