//! Fuzz target: Warren's frame decoder on arbitrary bytes (see `warren_fuzz::targets::frame_decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::targets::frame_decode(data));
