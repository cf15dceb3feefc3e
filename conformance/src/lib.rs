//! Warren's conformance suite: scenarios written once, run against any AMQP URL.
//!
//! The same scenario runs against Warren and against a real RabbitMQ; each asserts its
//! own expectations and yields a normalized transcript of everything it observed, and
//! the runner reports every scenario where the two brokers disagree.
//!
//! # Layout
//! - [`driver`]: a frame-level AMQP client over amq-protocol's codec, so that scenarios
//!   see exact replies (delivery tags, redelivered flags, close codes with class/method).
//! - [`ctx`]: the scenario context and one helper per AMQP operation.
//! - [`admin`]: users and permissions on the broker under test (the access scenarios).
//! - [`transcript`]: normalization of observations and comparison.
//! - [`scenarios`]: the scenarios, one module per area, listed in one table.
//! - [`runner`]: runs scenarios against a URL and reports the comparison.
//! - [`differential`]: random operation sequences compared between two brokers.
//!
//! # Running
//! - `cargo test -p warren-conformance`: every scenario against an embedded Warren.
//! - `cargo xtask conformance [--rabbitmq URL]` (or `AMQP_URL`): against an embedded
//!   Warren and RabbitMQ, a table and the line `conformance: warren P/N, rabbitmq P/N,
//!   divergent D`; non-zero exit when anything fails or diverges. The `http::`
//!   scenarios compare the management APIs: Warren's embedded listener and
//!   `--rabbitmq-management URL` (default `http://127.0.0.1:15672`, logged in
//!   with the AMQP URL's credentials). `--only SUBSTRING`
//!   filters, `--target URL` runs against one URL only, `--verbose` prints transcripts
//!   of failing or diverging scenarios.
//! - `cargo xtask conformance --rabbitmq URL --differential --cases N`: random
//!   operation sequences on both brokers, shrunk to a minimal divergence;
//!   `--profile X.Y` runs Warren as another release than the RabbitMQ's, on the
//!   operations both releases answer alike.
//!
//! # Adding a scenario
//! Write `pub async fn name(cx: Ctx) -> R` in the right module of `scenarios/` and add
//! its name to the table in `scenarios/mod.rs`.

pub mod admin;
pub mod ctx;
pub mod differential;
pub mod driver;
pub mod embedded;
pub mod runner;
pub mod scenarios;
pub mod transcript;

pub use ctx::{
    expect_eq, Channel, ConsumeOpts, Ctx, Delivery, ExchangeOpts, PublishOpts, QueueOpts,
};
pub use driver::{Close, Conn, ConnectOpts, Expect, Fail, Url, R};
pub use scenarios::{all, Scenario};
