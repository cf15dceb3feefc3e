//! Names the server makes up: `amq.gen-…` queues, `amq.ctag-…` consumer tags, direct
//! reply-to addresses.

/// 22 characters of URL-safe base64 from 128 random bits, as in RabbitMQ's
/// `amq.gen-` and `amq.ctag-` names.
pub fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u128 = 0;
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(bits as u64);
        bits = (bits << 64) | h.finish() as u128;
    }
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}

/// A number in `0..n` (`n > 0`), different from run to run: for choices RabbitMQ
/// makes at random, where nothing needs it to be unpredictable.
pub fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(n);
    (h.finish() % n as u64) as usize
}
