//! Fuzz target: One connection's protocol state machine fed raw bytes from its first byte (see `warren_fuzz::targets::connection`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::targets::connection(data));
