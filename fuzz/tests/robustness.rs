//! Robustness: arbitrary and mutated byte streams fed to connections always end in a
//! defined outcome (replies, a close with a valid code, or the socket closed), never
//! a panic or input buffered past frame_max, and the broker keeps serving others.
//! The checks live in `warren_fuzz::targets`, shared with the libFuzzer targets.

use proptest::prelude::*;
use warren_broker::testing::Core;
use warren_broker::Config;
use warren_fuzz::targets::{self, Watch};
use warren_fuzz::{seeds, wire};

/// One edit of a byte stream, as a mutating fuzzer makes them.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// Copies a span elsewhere: duplicated frames and frames cut in odd places.
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), 1usize..64, any::<usize>())
            .prop_map(|(from, n, to)| Mutation::Splice(from, n, to)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        if data.is_empty() {
            break;
        }
        let at = |i: usize| i % data.len();
        match edit {
            Mutation::Flip(i, x) => {
                let i = at(*i);
                data[i] ^= x;
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i);
                data.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let i = at(*i);
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
            Mutation::Truncate(n) => data.truncate(at(*n)),
            Mutation::Splice(from, n, to) => {
                let from = at(*from);
                let span: Vec<u8> = data[from..(from + n).min(data.len())].to_vec();
                let to = at(*to);
                data.splice(to..to, span);
            }
        }
    }
    data
}

/// Client traffic recorded from pika and lapin against Warren (see fuzz/record/).
const RECORDED: [&[u8]; 2] = [
    include_bytes!("../seeds/connection/pika-0"),
    include_bytes!("../seeds/connection/lapin-0"),
];

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::all()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, bytes)| bytes)
        .collect();
    if target == "connection" {
        out.extend(RECORDED.iter().map(|r| r.to_vec()));
    }
    out
}

fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds_of(target);
    (0..seeds.len(), prop::collection::vec(mutation(), 1..6))
        .prop_map(move |(i, edits)| apply(seeds[i].clone(), &edits))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        // Shrunk failures become named regression tests, not a seed file.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_from_the_first_byte(data in prop::collection::vec(any::<u8>(), 0..512)) {
        targets::connection(&data);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_handshake(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = wire::handshake();
        bytes.extend(wire::channel_open(1));
        bytes.extend(data);
        targets::connection(&bytes);
    }

    #[test]
    fn mutated_client_traffic(data in mutated("connection")) {
        targets::connection(&data);
    }

    #[test]
    fn mutated_traffic_on_two_connections(data in mutated("session")) {
        targets::session(&data);
    }

    #[test]
    fn arbitrary_records_on_two_connections(data in prop::collection::vec(any::<u8>(), 0..512)) {
        targets::session(&data);
    }

    #[test]
    fn frame_decoder_on_mutated_frames(data in mutated("frame_decode")) {
        targets::frame_decode(&data);
    }

    #[test]
    fn frame_decoder_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        targets::frame_decode(&data);
    }

    /// A frame header announcing more than frame_max is refused from its header,
    /// before the payload arrives: nothing is kept waiting for it.
    #[test]
    fn oversized_frame_is_refused_from_its_header(
        channel in 0u16..4,
        kind in prop::sample::select(vec![1u8, 2, 3]),
        excess in 1u32..1_000_000,
    ) {
        let core = Core::new(Config::default());
        let mut conn = core.connect();
        let mut watch = Watch::default();
        let mut bytes = wire::handshake();
        bytes.extend(wire::channel_open(1));
        bytes.push(kind);
        bytes.extend(channel.to_be_bytes());
        bytes.extend((wire::FRAME_MAX + excess).to_be_bytes());
        targets::feed(&mut conn, &mut watch, &bytes);
        prop_assert!(conn.buffered_input() < 16, "{} bytes held", conn.buffered_input());
        prop_assert!(watch.close_sent, "no connection.close: {:?}", watch.events);
        targets::check_healthy(&core);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 100,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// With a smaller frame_max negotiated, a frame beyond it is refused from its
    /// header (501), and a partial frame within it is held, never more.
    #[test]
    fn negotiated_frame_max_bounds_what_is_held(
        frame_max in 4096u32..=wire::FRAME_MAX,
        excess in 1u32..100_000,
        held in 0u32..4096,
    ) {
        use amq_protocol::protocol::{connection, AMQPClass};
        let tune_ok = |frame_max| wire::method(0, AMQPClass::Connection(
            connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max,
                heartbeat: 0,
            }),
        ));
        // The client's handshake, with its tune-ok swapped for one naming frame_max.
        let standard = wire::handshake();
        let at = standard
            .windows(tune_ok(wire::FRAME_MAX).len())
            .position(|w| w == tune_ok(wire::FRAME_MAX).as_slice())
            .expect("tune-ok in the handshake");
        let mut bytes = standard[..at].to_vec();
        bytes.extend(tune_ok(frame_max));
        bytes.extend(&standard[at + tune_ok(wire::FRAME_MAX).len()..]);
        bytes.extend(wire::channel_open(1));

        let core = Core::new(Config::default());
        // A body frame cut short: held while it may still complete.
        let mut conn = core.connect();
        let mut watch = Watch::default();
        let mut partial = bytes.clone();
        partial.extend([3, 0, 1]);
        partial.extend(frame_max.to_be_bytes());
        partial.extend(vec![0u8; held as usize]);
        targets::feed(&mut conn, &mut watch, &partial);
        prop_assert!(!watch.close_sent, "{:?}", watch.events);
        prop_assert!(conn.buffered_input() <= frame_max as usize + 8);

        // A frame announced beyond frame_max: refused at once.
        let mut conn = core.connect();
        let mut watch = Watch::default();
        bytes.extend([3, 0, 1]);
        bytes.extend((frame_max + excess).to_be_bytes());
        targets::feed(&mut conn, &mut watch, &bytes);
        prop_assert!(conn.buffered_input() < 16, "{} bytes held", conn.buffered_input());
        let closed_with_501 = watch.events.iter().any(|e| matches!(
            e,
            wire::Event::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))
                if c.reply_code == 501
        ));
        prop_assert!(closed_with_501, "{:?}", watch.events);
        targets::check_healthy(&core);
    }
}

#[test]
fn recorded_client_traffic_runs_clean() {
    for bytes in RECORDED {
        targets::connection(bytes);
    }
}

#[test]
fn every_seed_runs_clean() {
    for (target, name, bytes) in seeds::all() {
        match target {
            "connection" => targets::connection(&bytes),
            "session" => targets::session(&bytes),
            "frame_decode" => targets::frame_decode(&bytes),
            other => panic!("seed {name} for unknown target {other}"),
        }
    }
}
