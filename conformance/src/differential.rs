//! The differential test: random sequences of operations, run against two brokers,
//! compared observation by observation; proptest shrinks any divergence to a minimum.
//!
//! Operations act on two connections with two channels each, three queues, two
//! exchanges and two routing keys, with valid and invalid arguments alike (unknown
//! delivery tags, missing queues, exclusive queues of the other connection …). Every
//! channel is in confirm mode, and each publish waits for its confirm, so that queue
//! counts are settled; after each operation every open channel is synced and what it
//! received is logged in channel order.
//!
//! The two brokers may imitate different releases (Warren with `--profile 4.3`
//! against a RabbitMQ 3.10): each case then runs in the form both releases treat
//! alike, by Warren's profile table ([`Common`]), so that everything else is
//! still checked equal to the live RabbitMQ.
//!
//! Deliveries to a consumer on another connection travel asynchronously in RabbitMQ,
//! so a sequence may not be reproducible even on RabbitMQ alone: a case that diverges
//! is run against RabbitMQ a second time, and only counts if RabbitMQ repeats itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use warren_broker::{DeprecatedFeature, Profile};

use crate::ctx::{Channel, ConsumeOpts, Ctx, ExchangeOpts, Kind, PublishOpts, QueueOpts};
use crate::driver::{describe, Conn, Fail, Url, R};
use crate::transcript::first_difference;

/// Connections in a case.
const CONNS: u8 = 2;
/// Channels per connection.
const CHANNELS: u8 = 2;
/// How long deliveries between connections get to arrive before the channels sync.
const SETTLE: Duration = Duration::from_millis(15);

/// One operation; `ch` indexes the 4 channels (connection `ch / 2`, channel id
/// `ch % 2 + 1`), `q`, `x` and `key` index small pools of names.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    QueueDeclare {
        ch: u8,
        q: u8,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        passive: bool,
    },
    ExchangeDeclare {
        ch: u8,
        x: u8,
        kind: &'static str,
        passive: bool,
    },
    QueueBind {
        ch: u8,
        q: u8,
        x: u8,
        key: u8,
    },
    QueueUnbind {
        ch: u8,
        q: u8,
        x: u8,
        key: u8,
    },
    /// Binds exchange `dest` to exchange `src` (a RabbitMQ extension).
    ExchangeBind {
        ch: u8,
        dest: u8,
        src: u8,
        key: u8,
    },
    ExchangeUnbind {
        ch: u8,
        dest: u8,
        src: u8,
        key: u8,
    },
    /// `x: None` is the default exchange, with queue `key` as routing key.
    Publish {
        ch: u8,
        x: Option<u8>,
        key: u8,
        mandatory: bool,
    },
    Consume {
        ch: u8,
        q: u8,
        no_ack: bool,
        exclusive: bool,
    },
    Get {
        ch: u8,
        q: u8,
        no_ack: bool,
    },
    Ack {
        ch: u8,
        tag: u8,
        multiple: bool,
    },
    Nack {
        ch: u8,
        tag: u8,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        ch: u8,
        tag: u8,
        requeue: bool,
    },
    /// Cancels the `nth` consumer started in the case (whatever its channel).
    Cancel {
        ch: u8,
        nth: u8,
    },
    Qos {
        ch: u8,
        count: u16,
        global: bool,
    },
    Purge {
        ch: u8,
        q: u8,
    },
    QueueDelete {
        ch: u8,
        q: u8,
        if_unused: bool,
        if_empty: bool,
    },
    ExchangeDelete {
        ch: u8,
        x: u8,
        if_unused: bool,
    },
    Recover {
        ch: u8,
    },
    CloseChannel {
        ch: u8,
    },
    CloseConnection {
        conn: u8,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The strategy for one operation, weighted towards the common ones.
pub fn op() -> impl Strategy<Value = Op> {
    let ch = 0..CONNS * CHANNELS;
    let q = 0u8..3;
    let x = 0u8..2;
    let key = 0u8..3;
    let tag = 0u8..6;
    prop_oneof![
        4 => (ch.clone(), q.clone(), any::<bool>(), prop::bool::weighted(0.3), prop::bool::weighted(0.3), prop::bool::weighted(0.2))
            .prop_map(|(ch, q, durable, exclusive, auto_delete, passive)| Op::QueueDeclare { ch, q, durable, exclusive, auto_delete, passive }),
        2 => (ch.clone(), x.clone(), prop::sample::select(vec!["direct", "fanout", "direct", "fanout", "bogus"]), prop::bool::weighted(0.2))
            .prop_map(|(ch, x, kind, passive)| Op::ExchangeDeclare { ch, x, kind, passive }),
        3 => (ch.clone(), q.clone(), x.clone(), key.clone()).prop_map(|(ch, q, x, key)| Op::QueueBind { ch, q, x, key }),
        1 => (ch.clone(), q.clone(), x.clone(), key.clone()).prop_map(|(ch, q, x, key)| Op::QueueUnbind { ch, q, x, key }),
        1 => (ch.clone(), x.clone(), x.clone(), key.clone())
            .prop_map(|(ch, dest, src, key)| Op::ExchangeBind { ch, dest, src, key }),
        1 => (ch.clone(), x.clone(), x.clone(), key.clone())
            .prop_map(|(ch, dest, src, key)| Op::ExchangeUnbind { ch, dest, src, key }),
        6 => (ch.clone(), prop::option::weighted(0.5, x.clone()), key.clone(), any::<bool>())
            .prop_map(|(ch, x, key, mandatory)| Op::Publish { ch, x, key, mandatory }),
        3 => (ch.clone(), q.clone(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(ch, q, no_ack, exclusive)| Op::Consume { ch, q, no_ack, exclusive }),
        3 => (ch.clone(), q.clone(), any::<bool>()).prop_map(|(ch, q, no_ack)| Op::Get { ch, q, no_ack }),
        3 => (ch.clone(), tag.clone(), any::<bool>()).prop_map(|(ch, tag, multiple)| Op::Ack { ch, tag, multiple }),
        2 => (ch.clone(), tag.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(ch, tag, multiple, requeue)| Op::Nack { ch, tag, multiple, requeue }),
        2 => (ch.clone(), tag, any::<bool>()).prop_map(|(ch, tag, requeue)| Op::Reject { ch, tag, requeue }),
        1 => (ch.clone(), 0u8..4).prop_map(|(ch, nth)| Op::Cancel { ch, nth }),
        1 => (ch.clone(), 0u16..3, any::<bool>()).prop_map(|(ch, count, global)| Op::Qos { ch, count, global }),
        1 => (ch.clone(), q.clone()).prop_map(|(ch, q)| Op::Purge { ch, q }),
        1 => (ch.clone(), q, any::<bool>(), any::<bool>())
            .prop_map(|(ch, q, if_unused, if_empty)| Op::QueueDelete { ch, q, if_unused, if_empty }),
        1 => (ch.clone(), x, any::<bool>()).prop_map(|(ch, x, if_unused)| Op::ExchangeDelete { ch, x, if_unused }),
        1 => ch.clone().prop_map(|ch| Op::Recover { ch }),
        1 => ch.prop_map(|ch| Op::CloseChannel { ch }),
        1 => (0..CONNS).prop_map(|conn| Op::CloseConnection { conn }),
    ]
}

/// What the operations may do so that both brokers' releases answer alike,
/// from Warren's profile table (`warren_broker::Profile`, each row citing
/// RabbitMQ's source): an operation whose outcome differs between the two
/// releases is run in the form whose outcome does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Common {
    /// Both take a queue that is neither durable nor exclusive (4.3 refuses it
    /// with 541, deprecated feature `transient_nonexcl_queues`).
    pub transient_queues: bool,
    /// Both honour `basic.qos` with `global = true` (4.3 takes it as
    /// `global = false`, deprecated feature `global_qos`).
    pub global_qos: bool,
}

impl Common {
    /// What the releases `a` and `b` (with their deprecated-feature settings) share.
    pub fn of(a: &Profile, b: &Profile) -> Common {
        let transient = |p: &Profile| {
            p.deprecated_feature_state(DeprecatedFeature::TransientNonexclQueues)
                .allows()
        };
        Common {
            transient_queues: transient(a) && transient(b),
            global_qos: a.global_qos() && b.global_qos(),
        }
    }

    /// `op` in the form both releases answer alike: a transient non-exclusive
    /// queue declared durable instead (passive ones too, whose durable flag
    /// RabbitMQ does not check), a global qos made per consumer.
    pub fn adapt(self, op: Op) -> Op {
        match op {
            Op::QueueDeclare {
                ch,
                q,
                durable: false,
                exclusive: false,
                auto_delete,
                passive,
            } if !self.transient_queues => Op::QueueDeclare {
                ch,
                q,
                durable: true,
                exclusive: false,
                auto_delete,
                passive,
            },
            Op::Qos {
                ch,
                count,
                global: true,
            } if !self.global_qos => Op::Qos {
                ch,
                count,
                global: false,
            },
            op => op,
        }
    }
}

/// The connections and channels of one run of a case.
struct World {
    cx: Ctx,
    conns: Vec<Option<Conn>>,
    channels: HashMap<u8, Channel>,
    /// Consumer tags started so far, with the channel index they run on.
    consumers: Vec<(u8, String)>,
}

impl World {
    fn q(&self, i: u8) -> String {
        self.cx.name(&format!("q{i}"))
    }

    fn x(&self, i: u8) -> String {
        self.cx.name(&format!("x{i}"))
    }

    /// The channel `ch`, (re)opening its connection and the channel as needed; each
    /// reopening is logged, since it follows from an earlier close.
    async fn channel(&mut self, ch: u8) -> R<Channel> {
        let conn_ix = usize::from(ch / CHANNELS);
        if let Some(existing) = self.channels.get(&ch) {
            if !existing.conn.is_closed().await && !existing.conn.channel_closed(existing.id).await
            {
                return Ok(existing.clone());
            }
        }
        let live = match &self.conns[conn_ix] {
            Some(c) if !c.is_closed().await => c.clone(),
            _ => {
                self.cx.note(format!("connect c{conn_ix}"));
                let c = self.cx.connect().await?;
                self.conns[conn_ix] = Some(c.clone());
                self.channels
                    .retain(|k, _| usize::from(k / CHANNELS) != conn_ix);
                c
            }
        };
        let id = u16::from(ch % CHANNELS) + 1;
        let channel = live.open_channel(id).await?;
        channel.confirm_select().await?;
        self.channels.insert(ch, channel.clone());
        Ok(channel)
    }

    async fn apply(&mut self, op: &Op) -> R {
        match *op {
            Op::QueueDeclare {
                ch,
                q,
                durable,
                exclusive,
                auto_delete,
                passive,
            } => {
                let c = self.channel(ch).await?;
                let opts = QueueOpts {
                    durable,
                    exclusive,
                    auto_delete,
                    passive,
                    ..Default::default()
                };
                c.queue_declare_with(&self.q(q), opts).await.map(drop)
            }
            Op::ExchangeDeclare {
                ch,
                x,
                kind,
                passive,
            } => {
                let c = self.channel(ch).await?;
                let opts = ExchangeOpts {
                    passive,
                    ..Default::default()
                };
                c.exchange_declare_with(&self.x(x), kind, opts).await
            }
            Op::QueueBind { ch, q, x, key } => {
                let c = self.channel(ch).await?;
                c.queue_bind(&self.q(q), &self.x(x), &format!("k{key}"))
                    .await
            }
            Op::QueueUnbind { ch, q, x, key } => {
                let c = self.channel(ch).await?;
                c.queue_unbind(&self.q(q), &self.x(x), &format!("k{key}"))
                    .await
            }
            Op::ExchangeBind { ch, dest, src, key } => {
                let c = self.channel(ch).await?;
                c.exchange_bind(&self.x(dest), &self.x(src), &format!("k{key}"))
                    .await
            }
            Op::ExchangeUnbind { ch, dest, src, key } => {
                let c = self.channel(ch).await?;
                c.exchange_unbind(&self.x(dest), &self.x(src), &format!("k{key}"))
                    .await
            }
            Op::Publish {
                ch,
                x,
                key,
                mandatory,
            } => {
                let c = self.channel(ch).await?;
                let (exchange, rk) = match x {
                    Some(x) => (self.x(x), format!("k{key}")),
                    None => (String::new(), self.q(key)),
                };
                let opts = PublishOpts {
                    mandatory,
                    ..Default::default()
                };
                let seq = c.published();
                c.publish_with(&exchange, &rk, b"m", opts).await?;
                c.wait_confirms(seq, seq + 1).await.map(drop)
            }
            Op::Consume {
                ch,
                q,
                no_ack,
                exclusive,
            } => {
                let c = self.channel(ch).await?;
                let tag = format!("c{}", self.consumers.len());
                let opts = ConsumeOpts {
                    tag: tag.clone(),
                    no_ack,
                    exclusive,
                    ..Default::default()
                };
                c.consume_with(&self.q(q), opts).await?;
                self.consumers.push((ch, tag));
                Ok(())
            }
            Op::Get { ch, q, no_ack } => {
                let c = self.channel(ch).await?;
                c.get(&self.q(q), no_ack).await.map(drop)
            }
            Op::Ack { ch, tag, multiple } => {
                let c = self.channel(ch).await?;
                c.ack(u64::from(tag), multiple).await
            }
            Op::Nack {
                ch,
                tag,
                multiple,
                requeue,
            } => {
                let c = self.channel(ch).await?;
                c.nack(u64::from(tag), multiple, requeue).await
            }
            Op::Reject { ch, tag, requeue } => {
                let c = self.channel(ch).await?;
                c.reject(u64::from(tag), requeue).await
            }
            Op::Cancel { ch, nth } => {
                let c = self.channel(ch).await?;
                let tag = match self.consumers.get(usize::from(nth)) {
                    Some((_, tag)) => tag.clone(),
                    None => format!("c{nth}"),
                };
                c.cancel(&tag).await
            }
            Op::Qos { ch, count, global } => self.channel(ch).await?.qos(count, global).await,
            Op::Purge { ch, q } => {
                let c = self.channel(ch).await?;
                c.queue_purge(&self.q(q)).await.map(drop)
            }
            Op::QueueDelete {
                ch,
                q,
                if_unused,
                if_empty,
            } => {
                let c = self.channel(ch).await?;
                c.queue_delete_with(&self.q(q), if_unused, if_empty)
                    .await
                    .map(drop)
            }
            Op::ExchangeDelete { ch, x, if_unused } => {
                let c = self.channel(ch).await?;
                c.exchange_delete_with(&self.x(x), if_unused).await
            }
            Op::Recover { ch } => self.channel(ch).await?.recover(true).await,
            Op::CloseChannel { ch } => match self.channels.remove(&ch) {
                Some(c) if !c.conn.is_closed().await && !c.conn.channel_closed(c.id).await => {
                    c.close().await
                }
                _ => Ok(()),
            },
            Op::CloseConnection { conn } => match self.conns[usize::from(conn)].take() {
                Some(c) => c.close().await,
                None => Ok(()),
            },
        }
    }

    /// Syncs every open channel and logs what each received, in channel order.
    async fn settle(&mut self) {
        tokio::time::sleep(SETTLE).await;
        let mut keys: Vec<u8> = self.channels.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let Some(c) = self.channels.get(&k).cloned() else {
                continue;
            };
            if c.conn.is_closed().await {
                continue;
            }
            if c.conn.channel_closed(c.id).await {
                // Its close may have arrived while another channel was syncing: log it
                // now, in channel order, as it would have been logged had it come later.
                c.conn.drain(c.id).await;
                continue;
            }
            if let Err(e) = c.sync().await {
                log_failure(&self.cx, &e);
                continue;
            }
            let any = |e: &crate::driver::Event| {
                Kind::Delivery.matches(e) || Kind::Return.matches(e) || Kind::Confirm.matches(e)
            };
            while c.conn.pending(c.id, any).await > 0 {
                match c.conn.next_async(c.id, any, false).await {
                    Ok(e) => self.cx.note(format!("ch{k} {}", describe(&e))),
                    Err(e) => {
                        log_failure(&self.cx, &e);
                        break;
                    }
                }
            }
        }
    }
}

/// Closes are already in the transcript; anything else (a timeout) is logged here.
fn log_failure(cx: &Ctx, fail: &Fail) {
    if let Fail::Other(msg) = fail {
        cx.note(format!("failure: {msg}"));
    }
}

/// Cases that diverged but that RabbitMQ itself did not reproduce.
static IRREPRODUCIBLE: AtomicU32 = AtomicU32::new(0);

/// How many case transcripts to print (for `--verbose`), and how many were.
static SHOW: AtomicU32 = AtomicU32::new(0);
static SHOWN: AtomicU32 = AtomicU32::new(0);

/// Prints the RabbitMQ transcript of the first `n` cases, to see what cases look like.
pub fn show_first(n: u32) {
    SHOW.store(n, Ordering::Relaxed);
}

/// How many diverging cases were dropped because RabbitMQ did not repeat itself.
pub fn irreproducible() -> u32 {
    IRREPRODUCIBLE.load(Ordering::Relaxed)
}

/// What every case starts from, so that random operations meet existing entities:
/// q0 and q1 exist (q2 does not), x0 is direct with q0 bound by k0, x1 is fanout with
/// q1 bound.
fn prelude() -> Vec<Op> {
    vec![
        Op::QueueDeclare {
            ch: 0,
            q: 0,
            durable: false,
            exclusive: false,
            auto_delete: false,
            passive: false,
        },
        Op::QueueDeclare {
            ch: 0,
            q: 1,
            durable: false,
            exclusive: false,
            auto_delete: false,
            passive: false,
        },
        Op::ExchangeDeclare {
            ch: 0,
            x: 0,
            kind: "direct",
            passive: false,
        },
        Op::ExchangeDeclare {
            ch: 0,
            x: 1,
            kind: "fanout",
            passive: false,
        },
        Op::QueueBind {
            ch: 0,
            q: 0,
            x: 0,
            key: 0,
        },
        Op::QueueBind {
            ch: 0,
            q: 1,
            x: 1,
            key: 0,
        },
    ]
}

/// Runs a sequence (after the prelude, in the form `common` allows) against
/// `url`; returns its normalized transcript.
pub async fn run_case(url: &Url, common: Common, ops: &[Op]) -> Vec<String> {
    let cx = Ctx::new(url.clone(), crate::runner::suffix());
    let mut world = World {
        cx: cx.clone(),
        conns: vec![None; usize::from(CONNS)],
        channels: HashMap::new(),
        consumers: Vec::new(),
    };
    let prelude: Vec<Op> = prelude().into_iter().map(|op| common.adapt(op)).collect();
    for op in prelude.iter().chain(ops) {
        cx.note(format!("> {op}"));
        if let Err(e) = world.apply(op).await {
            log_failure(&cx, &e);
        }
        world.settle().await;
    }
    cx.cleanup().await;
    cx.shared().transcript()
}

/// Compares one sequence on both brokers: `Err` describes a reproducible divergence.
pub async fn compare_case(warren: &Url, rabbitmq: &Url, ops: &[Op]) -> Result<(), String> {
    let common = Common::of(&warren.profile, &rabbitmq.profile);
    let w = run_case(warren, common, ops).await;
    let r = run_case(rabbitmq, common, ops).await;
    if SHOWN.fetch_add(1, Ordering::Relaxed) < SHOW.load(Ordering::Relaxed) {
        println!("--- case transcript (RabbitMQ):");
        for line in &r {
            println!("    {line}");
        }
    }
    let Some(diff) = first_difference(&r, &w) else {
        return Ok(());
    };
    // RabbitMQ may not repeat itself (deliveries race between connections); only a
    // divergence from a reproducible RabbitMQ transcript counts.
    if run_case(rabbitmq, common, ops).await != r {
        IRREPRODUCIBLE.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    Err(diff)
}

/// Runs `cases` random sequences against both brokers; returns the minimal failing
/// sequence and its divergence, if any. Blocks: call from a blocking thread.
pub fn run(
    handle: &tokio::runtime::Handle,
    warren: &Url,
    rabbitmq: &Url,
    cases: u32,
    max_len: usize,
    without: &[String],
) -> Result<u32, (Vec<Op>, String)> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 300,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    // Operations whose debug form contains a `without` string (a variant name such as
    // ExchangeDelete, or a field pattern such as "durable: true, exclusive: true") are
    // left out, so that a known divergence does not hide the others.
    let without = without.to_vec();
    // Generated in the form both releases answer alike, so that shrinking
    // works on what actually runs.
    let common = Common::of(&warren.profile, &rabbitmq.profile);
    let op =
        op().prop_map(move |op| common.adapt(op))
            .prop_filter("excluded operation", move |op| {
                let text = format!("{op:?}");
                !without.iter().any(|w| text.contains(w.as_str()))
            });
    let strategy = prop::collection::vec(op, 1..=max_len);
    let result = runner.run(&strategy, |ops| {
        handle
            .block_on(compare_case(warren, rabbitmq, &ops))
            .map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(cases),
        Err(TestError::Fail(reason, ops)) => Err((ops, reason.to_string())),
        Err(TestError::Abort(reason)) => Err((Vec::new(), format!("aborted: {reason}"))),
    }
}

#[cfg(test)]
mod tests {
    use warren_broker::RabbitVersion as V;

    use super::*;

    fn transient(q: u8) -> Op {
        Op::QueueDeclare {
            ch: 0,
            q,
            durable: false,
            exclusive: false,
            auto_delete: false,
            passive: false,
        }
    }

    #[test]
    fn a_4_3_against_a_3_10_runs_only_what_both_answer_alike() {
        let common = Common::of(&Profile::new(V::V4_3), &Profile::new(V::V3_10));
        assert!(!common.transient_queues && !common.global_qos);
        assert_eq!(
            common.adapt(transient(1)),
            Op::QueueDeclare {
                ch: 0,
                q: 1,
                durable: true,
                exclusive: false,
                auto_delete: false,
                passive: false,
            }
        );
        let global = Op::Qos {
            ch: 1,
            count: 2,
            global: true,
        };
        assert_eq!(
            common.adapt(global),
            Op::Qos {
                ch: 1,
                count: 2,
                global: false,
            }
        );
        // An exclusive transient queue is taken by every release.
        let exclusive = Op::QueueDeclare {
            ch: 0,
            q: 2,
            durable: false,
            exclusive: true,
            auto_delete: false,
            passive: false,
        };
        assert_eq!(common.adapt(exclusive.clone()), exclusive);
    }

    #[test]
    fn releases_that_agree_run_every_operation_as_generated() {
        for v in V::ALL {
            let common = Common::of(&Profile::new(v), &Profile::new(v));
            assert_eq!(common.adapt(transient(0)) == transient(0), v < V::V4_3);
        }
        let mut permitted = Profile::new(V::V4_3);
        permitted.set_permitted(DeprecatedFeature::TransientNonexclQueues, true);
        let common = Common::of(&permitted, &Profile::new(V::V3_10));
        assert!(common.transient_queues && !common.global_qos);
    }
}
