//! `erlang:phash2/2`, for the choices RabbitMQ makes by hashing a term (the
//! `x-modulus-hash` exchange), so that Warren picks what RabbitMQ picks.
//!
//! Only the terms RabbitMQ hashes there are covered: a proper list of binaries.
//! The algorithm is Bob Jenkins' lookup2 mix as `make_hash2` in Erlang/OTP's
//! `erts/emulator/beam/erl_term_hashing.c` applies it; the unit tests hold values
//! computed by `erlang:phash2/2` on Erlang/OTP 25.

const GOLDEN: u32 = 0x9e37_79b9;
/// `HCONST * 2`, mixed in for the `[]` that ends a list.
const HCONST_2: u32 = 0x3c6e_f372;
/// `HCONST * 13`, the seed of a binary's block hash.
const HCONST_13: u32 = 0x08d1_2e65;
/// The tag `make_hash2` mixes in for `[]` after other terms.
const NIL_TAG: u32 = 2;
/// `make_hash2` of `[]` alone.
const NIL_ALONE: u32 = 3_468_870_702;

fn mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 13);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 8);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 13);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 16);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 3);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 10);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 15);
    (a, b, c)
}

/// A binary's bytes, twelve at a time, then the rest with the length.
fn block_hash(bytes: &[u8], seed: u32) -> u32 {
    let word = |b: &[u8]| {
        b.iter()
            .enumerate()
            .fold(0u32, |w, (i, &x)| w.wrapping_add(u32::from(x) << (8 * i)))
    };
    let (mut a, mut b, mut c) = (GOLDEN, GOLDEN, seed);
    let mut chunks = bytes.chunks_exact(12);
    for k in &mut chunks {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        (a, b, c) = mix(a, b, c);
    }
    let rest = chunks.remainder();
    // The low byte of `c` is the length's: the tail's bytes 8..11 go above it.
    c = c.wrapping_add(bytes.len() as u32);
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]) << 8);
    }
    mix(a, b, c).2
}

/// `erlang:phash2(Binaries, Range)` for a list of binaries; `range` > 0.
pub fn phash2_binaries<B: AsRef<[u8]>>(binaries: &[B], range: u32) -> u32 {
    let mut hash: u32 = 0;
    for bin in binaries {
        let seed = HCONST_13.wrapping_add(hash);
        let bytes = bin.as_ref();
        hash = if bytes.is_empty() {
            seed
        } else {
            block_hash(bytes, seed)
        };
    }
    let hash = if hash == 0 {
        NIL_ALONE
    } else {
        mix(HCONST_2.wrapping_add(NIL_TAG), HCONST_2, hash).2
    };
    if range.is_power_of_two() {
        hash & (range - 1)
    } else {
        hash % range
    }
}

#[cfg(test)]
mod tests {
    use super::phash2_binaries;

    /// RabbitMQ's range for `x-modulus-hash`, 2^27.
    const RANGE: u32 = 134_217_728;

    #[test]
    fn equals_erlang_phash2_on_lists_of_binaries() {
        // Each value from `erlang:phash2(Term, 134217728)` on Erlang/OTP 25.2.3:
        // empty binaries, the twelve-byte blocks and their tails, several keys.
        let cases: [(&[&[u8]], u32); 10] = [
            (&[b"a"], 53_691_870),
            (&[b""], 38_220_213),
            (&[b"hello world!x"], 40_617_084),
            (&[b"k1", b"cc1"], 73_407_235),
            (&[], 113_427_502),
            (&[b"orders.eu.paris", b"audit", b""], 49_866_619),
            (&[b"key-0"], 124_810_561),
            (&[b"key-1"], 57_358_350),
            (&[b"twelve bytes"], 820_021),
            (&[b"twenty-four bytes long!!"], 16_515_082),
        ];
        for (term, expected) in cases {
            assert_eq!(phash2_binaries(term, RANGE), expected, "{term:?}");
        }
        // A range that is no power of two: erlang:phash2([<<"a">>], 1000).
        assert_eq!(phash2_binaries(&[b"a"], 1000), 798);
    }
}
