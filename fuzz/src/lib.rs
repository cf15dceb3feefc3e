//! Warren hammered by generated input: helpers shared by the property tests in
//! `tests/` and the coverage-guided fuzz targets in `libfuzzer/`.
//!
//! # Layout
//! - [`wire`]: the client's side of the wire, written and parsed with amq-protocol.
//! - [`targets`]: the bodies of the fuzz targets; each panics when an invariant
//!   breaks, so libFuzzer and proptest both see a failure as a crash.
//! - [`seeds`]: seed inputs built from real method sequences, and the dictionary of
//!   AMQP method ids and names handed to libFuzzer.

pub mod seeds;
pub mod targets;
pub mod wire;
