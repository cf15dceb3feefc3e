//! Model-based testing of the broker: sequences of client operations on two
//! connections (two channels each) run against `testing::Core` and against a small
//! reference model (queues as VecDeques, bindings as lists, consumers, unacked maps,
//! prefetch, redelivered flags). After every step, what each connection received
//! must equal what the model predicts, frame for frame on each channel.
//!
//! The model follows RabbitMQ's rules (round-robin dispatch, requeue to the original
//! position marked redelivered, prefetch per consumer and per channel, unacked
//! deliveries back to their queues when their channel closes); where RabbitMQ leaves
//! an order open (which of several queues is served first after one ack), it takes
//! Warren's deterministic choice: queues in name order.
//!
//! Each channel has at most one consumer at a time, so that no step's outcome
//! depends on the iteration order of a hash map.

use std::collections::{BTreeMap, VecDeque};

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use proptest::prelude::*;
use warren_broker::testing::{Core, CoreConnection};
use warren_broker::Config;
use warren_fuzz::targets::{self, Watch};
use warren_fuzz::wire::{self, Event};

const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const KEYS: [&str; 2] = ["k0", "k1"];
const CONNS: usize = 2;
const CHANNELS: [u16; 2] = [1, 2];

/// Where a publish goes, or what a binding binds to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// The default exchange, routing key = queue name.
    Default(usize),
    /// `amq.direct` with one of KEYS.
    Direct(usize),
    /// `amq.fanout`.
    Fanout,
    /// `amq.topic`: binds with TOPIC_PATTERNS[n % len], publishes with
    /// TOPIC_KEYS[n % len].
    Topic(usize),
    /// `x`, a fanout exchange the steps declare and delete, and which they bind
    /// to `amq.direct` (exchange-to-exchange).
    X,
}

const TOPIC_PATTERNS: [&str; 10] = [
    "#", "*", "a.*", "a.#", "#.b", "*.b", "a.b", "a.*.c", "#.#", "",
];
const TOPIC_KEYS: [&str; 7] = ["a", "a.b", "a.b.c", "b", "x.b", "", "a..b"];

fn topic_pattern(n: usize) -> &'static str {
    TOPIC_PATTERNS[n % TOPIC_PATTERNS.len()]
}

fn topic_key(n: usize) -> &'static str {
    TOPIC_KEYS[n % TOPIC_KEYS.len()]
}

/// RabbitMQ's topic matching, by its definition: `*` is exactly one word, `#`
/// zero or more; words are split on dots, and an empty key has no words.
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn words(s: &str) -> Vec<&str> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split('.').collect()
        }
    }
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(w), Some(x)) if w == x => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    go(&words(pattern), &words(key))
}

/// Which delivery tag an ack, nack or reject names.
#[derive(Debug, Clone, Copy)]
enum Tag {
    /// The n-th unacked delivery of the channel (mod their number); unknown when
    /// there are none.
    Held(usize),
    /// A tag the channel never handed out: a channel error.
    Unknown,
    /// Tag 0 with multiple: everything.
    All,
}

#[derive(Debug, Clone)]
enum Op {
    /// `queue.declare` of a queue, with `auto_delete`.
    Declare(usize, bool),
    Bind(usize, Route),
    Unbind(usize, Route),
    /// Publish, with `mandatory`.
    Publish(Route, bool),
    /// `confirm.select`: every publish on the channel is then acked.
    Confirm,
    Get(usize, bool),
    /// `basic.consume` with `no_ack` and `exclusive`.
    Consume(usize, bool, bool),
    Cancel,
    Ack(Tag, bool),
    Nack(Tag, bool, bool),
    Reject(Tag, bool),
    Qos(u16, bool),
    Recover,
    Purge(usize),
    Delete(usize, bool, bool),
    CloseChannel,
    CloseConnection,
    /// `exchange.declare` of `x` (fanout).
    XDeclare,
    XDelete,
    /// `exchange.bind` of `x` to `amq.direct` with KEYS[n], and its unbind.
    XBind(usize),
    XUnbind(usize),
}

/// An operation done by one connection on one of its channels.
#[derive(Debug, Clone)]
struct Step {
    conn: usize,
    ch: u16,
    op: Op,
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        (0..QUEUES.len()).prop_map(Route::Default),
        (0..KEYS.len()).prop_map(Route::Direct),
        Just(Route::Fanout),
        (0..TOPIC_PATTERNS.len()).prop_map(Route::Topic),
        Just(Route::X),
    ]
}

fn tag() -> impl Strategy<Value = Tag> {
    prop_oneof![
        8 => any::<usize>().prop_map(Tag::Held),
        1 => Just(Tag::Unknown),
        1 => Just(Tag::All),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let q = || 0..QUEUES.len();
    prop_oneof![
        4 => (q(), prop::bool::weighted(0.2)).prop_map(|(q, a)| Op::Declare(q, a)),
        3 => (q(), route()).prop_map(|(q, r)| Op::Bind(q, r)),
        1 => (q(), route()).prop_map(|(q, r)| Op::Unbind(q, r)),
        8 => (route(), prop::bool::weighted(0.3)).prop_map(|(r, m)| Op::Publish(r, m)),
        1 => Just(Op::Confirm),
        3 => (q(), any::<bool>()).prop_map(|(q, n)| Op::Get(q, n)),
        4 => (q(), prop::bool::weighted(0.2), prop::bool::weighted(0.15))
            .prop_map(|(q, n, e)| Op::Consume(q, n, e)),
        1 => Just(Op::Cancel),
        5 => (tag(), any::<bool>()).prop_map(|(t, m)| Op::Ack(t, m)),
        2 => (tag(), any::<bool>(), any::<bool>()).prop_map(|(t, m, r)| Op::Nack(t, m, r)),
        2 => (tag(), any::<bool>()).prop_map(|(t, r)| Op::Reject(t, r)),
        2 => (0u16..4, prop::bool::weighted(0.3)).prop_map(|(n, g)| Op::Qos(n, g)),
        1 => Just(Op::Recover),
        1 => q().prop_map(Op::Purge),
        1 => (q(), any::<bool>(), any::<bool>()).prop_map(|(q, u, e)| Op::Delete(q, u, e)),
        1 => Just(Op::CloseChannel),
        1 => Just(Op::CloseConnection),
        1 => Just(Op::XDeclare),
        1 => Just(Op::XDelete),
        1 => (0..KEYS.len()).prop_map(Op::XBind),
        1 => (0..KEYS.len()).prop_map(Op::XUnbind),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (0..CONNS, prop::sample::select(CHANNELS.to_vec()), op()).prop_map(|(conn, ch, op)| Step {
        conn,
        ch,
        op,
    })
}

// ---- the model ------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Msg {
    body: Vec<u8>,
    /// Position in its queue's publish order.
    seq: u64,
    redelivered: bool,
    exchange: &'static str,
    routing_key: String,
}

#[derive(Debug, Clone)]
struct Consumer {
    conn: usize,
    ch: u16,
    tag: String,
    no_ack: bool,
    exclusive: bool,
    prefetch: u16,
    unacked: u32,
}

#[derive(Debug, Clone)]
struct Queue {
    /// Tells a queue from a later one of the same name.
    incarnation: u64,
    ready: VecDeque<Msg>,
    next_seq: u64,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    auto_delete: bool,
    /// Auto-delete applies only to a queue that has had a consumer.
    had_consumer: bool,
}

#[derive(Debug, Clone)]
struct Unacked {
    queue: usize,
    incarnation: u64,
    msg: Msg,
    consumer: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Chan {
    next_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    consumer_prefetch: u16,
    channel_prefetch: u16,
    consumer_unacked: u32,
    /// The channel's one consumer: its tag and queue.
    consumer: Option<(String, usize)>,
    /// In confirm mode: the sequence number of the last publish.
    confirms: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    queues: [Option<Queue>; 3],
    /// Bindings per exchange, in binding order: (key, queue), queue, (pattern, queue).
    direct: Vec<(usize, usize)>,
    fanout: Vec<usize>,
    topic: Vec<(usize, usize)>,
    /// Whether `x` exists, its queues, and the keys binding it to `amq.direct`.
    x: bool,
    x_queues: Vec<usize>,
    x_keys: Vec<usize>,
    chans: BTreeMap<(usize, u16), Chan>,
    incarnations: u64,
    published: u64,
    consumers_made: u64,
    /// What each connection is expected to receive in the current step.
    out: [Vec<Event>; CONNS],
    /// Cancels that wait for the reply of the `queue.delete` that caused them.
    deferred: Vec<Event>,
    /// The order in which a closing connection's channels give back their
    /// unacked messages.
    close_order: [u16; 2],
}

fn m(ch: u16, class: AMQPClass) -> Event {
    Event::Method(ch, class)
}

fn channel_close(ch: u16, code: u16, text: String, class_id: u16, method_id: u16) -> Event {
    m(
        ch,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: code,
            reply_text: text.into(),
            class_id,
            method_id,
        })),
    )
}

impl Model {
    fn new() -> Self {
        let mut model = Model {
            close_order: CHANNELS,
            ..Model::default()
        };
        for conn in 0..CONNS {
            model.open_channels(conn);
        }
        model
    }

    fn open_channels(&mut self, conn: usize) {
        for ch in CHANNELS {
            self.chans.insert(
                (conn, ch),
                Chan {
                    next_tag: 1,
                    ..Default::default()
                },
            );
        }
    }

    fn emit(&mut self, conn: usize, e: Event) {
        self.out[conn].push(e);
    }

    fn route(&self, r: Route) -> (&'static str, String, Vec<usize>) {
        match r {
            Route::Default(q) => (
                "",
                QUEUES[q].to_owned(),
                self.queues[q].as_ref().map(|_| q).into_iter().collect(),
            ),
            Route::Direct(k) => {
                let mut targets: Vec<usize> = self
                    .direct
                    .iter()
                    .filter(|(key, _)| *key == k)
                    .map(|(_, q)| *q)
                    .collect();
                if self.x && self.x_keys.contains(&k) {
                    targets.extend(&self.x_queues);
                }
                ("amq.direct", KEYS[k].to_owned(), targets)
            }
            Route::X => ("x", "any".to_owned(), self.x_queues.clone()),
            Route::Fanout => ("amq.fanout", "any".to_owned(), self.fanout.clone()),
            Route::Topic(k) => (
                "amq.topic",
                topic_key(k).to_owned(),
                self.topic
                    .iter()
                    .filter(|(p, _)| topic_matches(topic_pattern(*p), topic_key(k)))
                    .map(|(_, q)| *q)
                    .collect(),
            ),
        }
    }

    fn publish(&mut self, conn: usize, ch: u16, r: Route, mandatory: bool) {
        self.published += 1;
        let body = format!("m{}", self.published).into_bytes();
        let (exchange, routing_key, targets) = self.route(r);
        if targets.is_empty() && mandatory {
            let ret = basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: exchange.into(),
                routing_key: routing_key.as_str().into(),
            };
            let event = Event::Content {
                channel: ch,
                method: AMQPClass::Basic(basic::AMQPMethod::Return(ret)),
                properties: AMQPProperties::default(),
                body: body.clone(),
            };
            self.emit(conn, event);
        }
        let mut seen = Vec::new();
        for q in targets {
            if seen.contains(&q) {
                continue;
            }
            seen.push(q);
            let queue = self.queues[q].as_mut().expect("bindings lead to queues");
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.ready.push_back(Msg {
                body: body.clone(),
                seq,
                redelivered: false,
                exchange,
                routing_key: routing_key.clone(),
            });
            self.dispatch(q);
        }
        // The confirm goes out once the message is in its queues (or returned).
        let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
        if let Some(n) = st.confirms.as_mut() {
            *n += 1;
            let ack = basic::Ack {
                delivery_tag: *n,
                multiple: false,
            };
            self.emit(conn, m(ch, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))));
        }
    }

    /// Round-robin delivery to consumers with room, as RabbitMQ's queue does.
    fn dispatch(&mut self, q: usize) {
        loop {
            let Some(queue) = self.queues[q].as_mut() else {
                return;
            };
            if queue.ready.is_empty() || queue.consumers.is_empty() {
                return;
            }
            let n = queue.consumers.len();
            let chosen = (0..n).map(|i| (queue.next_consumer + i) % n).find(|&idx| {
                let c = &queue.consumers[idx];
                let st = &self.chans[&(c.conn, c.ch)];
                c.no_ack
                    || ((c.prefetch == 0 || c.unacked < u32::from(c.prefetch))
                        && (st.channel_prefetch == 0
                            || st.consumer_unacked < u32::from(st.channel_prefetch)))
            });
            let Some(idx) = chosen else { return };
            queue.next_consumer = (idx + 1) % n;
            let msg = queue.ready.pop_front().expect("not empty");
            let incarnation = queue.incarnation;
            let c = &mut queue.consumers[idx];
            let st = self.chans.get_mut(&(c.conn, c.ch)).expect("open channel");
            let tag = st.next_tag;
            st.next_tag += 1;
            if !c.no_ack {
                c.unacked += 1;
                st.consumer_unacked += 1;
                st.unacked.insert(
                    tag,
                    Unacked {
                        queue: q,
                        incarnation,
                        msg: msg.clone(),
                        consumer: Some(c.tag.clone()),
                    },
                );
            }
            let event = Event::Content {
                channel: c.ch,
                method: AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: c.tag.as_str().into(),
                    delivery_tag: tag,
                    redelivered: msg.redelivered,
                    exchange: msg.exchange.into(),
                    routing_key: msg.routing_key.as_str().into(),
                })),
                properties: AMQPProperties::default(),
                body: msg.body,
            };
            let conn = c.conn;
            self.emit(conn, event);
        }
    }

    fn requeue(&mut self, u: Unacked) {
        if let Some(queue) = self.queues[u.queue].as_mut() {
            if queue.incarnation == u.incarnation {
                let at = queue.ready.partition_point(|m| m.seq < u.msg.seq);
                let mut msg = u.msg;
                msg.redelivered = true;
                queue.ready.insert(at, msg);
            }
        }
    }

    fn remove_consumer(&mut self, q: usize, conn: usize, ch: u16) {
        if let Some(queue) = self.queues[q].as_mut() {
            if let Some(i) = queue
                .consumers
                .iter()
                .position(|c| c.conn == conn && c.ch == ch)
            {
                queue.consumers.remove(i);
                if queue.next_consumer > i {
                    queue.next_consumer -= 1;
                }
                if queue.next_consumer >= queue.consumers.len() {
                    queue.next_consumer = 0;
                }
            }
        }
    }

    /// A channel goes away: its consumer is cancelled, its unacked deliveries go
    /// back to their queues, and those queues serve their other consumers.
    fn close_channel(&mut self, conn: usize, ch: u16) {
        let Some(st) = self.chans.remove(&(conn, ch)) else {
            return;
        };
        let mut touched = Vec::new();
        if let Some((_, q)) = st.consumer {
            self.remove_consumer(q, conn, ch);
            touched.push(q);
        }
        for (_, u) in st.unacked {
            let q = u.queue;
            let live = self.queues[q]
                .as_ref()
                .is_some_and(|x| x.incarnation == u.incarnation);
            self.requeue(u);
            if live {
                touched.push(q);
            }
        }
        touched.sort();
        touched.dedup();
        for q in touched {
            self.auto_delete_if_unused(q);
            self.dispatch(q);
        }
    }

    /// An auto-delete queue goes when its last consumer does.
    fn auto_delete_if_unused(&mut self, q: usize) {
        if self.queues[q]
            .as_ref()
            .is_some_and(|x| x.auto_delete && x.had_consumer && x.consumers.is_empty())
        {
            self.delete_queue(q, None);
        }
    }

    /// Removes a queue with its bindings; its consumers are told with
    /// `basic.cancel` (the client announced consumer_cancel_notify), those of the
    /// `deleter` channel after its reply (kept in `deferred`). Returns how many
    /// ready messages it held.
    fn delete_queue(&mut self, q: usize, deleter: Option<(usize, u16)>) -> u32 {
        let queue = self.queues[q].take().expect("checked by the caller");
        for c in &queue.consumers {
            if let Some(st) = self.chans.get_mut(&(c.conn, c.ch)) {
                st.consumer = None;
            }
            let cancel = basic::Cancel {
                consumer_tag: c.tag.as_str().into(),
                nowait: true,
            };
            let e = m(c.ch, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)));
            if deleter == Some((c.conn, c.ch)) {
                self.deferred.push(e);
            } else {
                self.emit(c.conn, e);
            }
        }
        self.direct.retain(|(_, b)| *b != q);
        self.fanout.retain(|b| *b != q);
        self.topic.retain(|(_, b)| *b != q);
        self.x_queues.retain(|b| *b != q);
        queue.ready.len() as u32
    }

    /// A channel error: the channel closes (as above), then `channel.close`.
    fn fail(&mut self, conn: usize, ch: u16, code: u16, text: String, ids: (u16, u16)) {
        self.close_channel(conn, ch);
        self.emit(conn, channel_close(ch, code, text, ids.0, ids.1));
    }

    fn not_found(&mut self, conn: usize, ch: u16, q: usize, ids: (u16, u16)) {
        self.fail(
            conn,
            ch,
            404,
            format!("NOT_FOUND - no queue '{}' in vhost '/'", QUEUES[q]),
            ids,
        );
    }

    fn settle(
        &mut self,
        conn: usize,
        ch: u16,
        tag: Tag,
        multiple: bool,
        requeue: Option<bool>,
        ids: (u16, u16),
    ) {
        let st = &self.chans[&(conn, ch)];
        let tag = match tag {
            Tag::Held(i) if !st.unacked.is_empty() => *st
                .unacked
                .keys()
                .nth(i % st.unacked.len())
                .expect("in range"),
            Tag::All if multiple => 0,
            _ => st.next_tag + 1000,
        };
        let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
        let settled: Vec<Unacked> = if tag == 0 {
            std::mem::take(&mut st.unacked).into_values().collect()
        } else if !st.unacked.contains_key(&tag) {
            let text = format!("PRECONDITION_FAILED - unknown delivery tag {tag}");
            return self.fail(conn, ch, 406, text, ids);
        } else if multiple {
            let keep = st.unacked.split_off(&(tag + 1));
            std::mem::replace(&mut st.unacked, keep)
                .into_values()
                .collect()
        } else {
            vec![st.unacked.remove(&tag).expect("checked")]
        };
        let mut touched = Vec::new();
        for u in settled {
            if let Some(ctag) = &u.consumer {
                let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
                st.consumer_unacked -= 1;
                if let Some(queue) = self.queues[u.queue].as_mut() {
                    if let Some(c) = queue.consumers.iter_mut().find(|c| &c.tag == ctag) {
                        c.unacked -= 1;
                    }
                }
            }
            touched.push(u.queue);
            if requeue == Some(true) {
                self.requeue(u);
            }
        }
        touched.sort();
        touched.dedup();
        for q in touched {
            self.dispatch(q);
        }
    }

    /// Applies one step; returns false when the step does not apply (a second
    /// consumer on a channel), in which case nothing is sent.
    fn apply(&mut self, s: &Step) -> bool {
        let (conn, ch) = (s.conn, s.ch);
        let reply = |class| m(ch, class);
        match &s.op {
            Op::Declare(q, auto_delete) => {
                let (q, auto_delete) = (*q, *auto_delete);
                match &self.queues[q] {
                    None => {
                        self.incarnations += 1;
                        self.queues[q] = Some(Queue {
                            incarnation: self.incarnations,
                            ready: VecDeque::new(),
                            next_seq: 0,
                            consumers: Vec::new(),
                            next_consumer: 0,
                            auto_delete,
                            had_consumer: false,
                        });
                    }
                    Some(queue) if queue.auto_delete != auto_delete => {
                        let text = format!(
                            "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{}' \
                             in vhost '/': received '{auto_delete}' but current is '{}'",
                            QUEUES[q], queue.auto_delete
                        );
                        self.fail(conn, ch, 406, text, (50, 10));
                        return true;
                    }
                    Some(_) => {}
                }
                let queue = self.queues[q].as_ref().expect("declared");
                let ok = queue::DeclareOk {
                    queue: QUEUES[q].into(),
                    message_count: queue.ready.len() as u32,
                    consumer_count: queue.consumers.len() as u32,
                };
                self.emit(
                    conn,
                    reply(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))),
                );
            }
            Op::Bind(q, r) | Op::Unbind(q, r) => {
                let (q, bind) = (*q, matches!(s.op, Op::Bind(..)));
                let ids = if bind { (50, 20) } else { (50, 50) };
                if let Route::Default(_) = r {
                    let text = "ACCESS_REFUSED - operation not permitted on the default exchange";
                    self.fail(conn, ch, 403, text.to_owned(), ids);
                    return true;
                }
                // As RabbitMQ 3.10 answers: a bind names the missing exchange
                // before the missing queue; an unbind of what is not there is ok.
                if *r == Route::X && !self.x && bind {
                    let text = "NOT_FOUND - no exchange 'x' in vhost '/'".to_owned();
                    self.fail(conn, ch, 404, text, ids);
                    return true;
                }
                if bind && self.queues[q].is_none() {
                    self.not_found(conn, ch, q, ids);
                    return true;
                }
                match (r, bind) {
                    (Route::Direct(k), true) => {
                        if !self.direct.contains(&(*k, q)) {
                            self.direct.push((*k, q));
                        }
                    }
                    (Route::Direct(k), false) => self.direct.retain(|b| *b != (*k, q)),
                    (Route::Fanout, true) => {
                        if !self.fanout.contains(&q) {
                            self.fanout.push(q);
                        }
                    }
                    (Route::Fanout, false) => self.fanout.retain(|b| *b != q),
                    (Route::Topic(p), true) => {
                        let p = p % TOPIC_PATTERNS.len();
                        if !self.topic.contains(&(p, q)) {
                            self.topic.push((p, q));
                        }
                    }
                    (Route::Topic(p), false) => {
                        let p = p % TOPIC_PATTERNS.len();
                        self.topic.retain(|b| *b != (p, q))
                    }
                    (Route::X, true) => {
                        if !self.x_queues.contains(&q) {
                            self.x_queues.push(q);
                        }
                    }
                    (Route::X, false) => self.x_queues.retain(|b| *b != q),
                    (Route::Default(_), _) => unreachable!(),
                }
                let ok = if bind {
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {}))
                } else {
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}))
                };
                self.emit(conn, reply(ok));
            }
            Op::Publish(Route::X, _) if !self.x => {
                self.published += 1;
                let text = "NOT_FOUND - no exchange 'x' in vhost '/'".to_owned();
                self.fail(conn, ch, 404, text, (60, 40));
            }
            Op::Publish(r, mandatory) => self.publish(conn, ch, *r, *mandatory),
            Op::XDeclare => {
                self.x = true;
                let ok = exchange::DeclareOk {};
                self.emit(
                    conn,
                    reply(AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(ok))),
                );
            }
            Op::XDelete => {
                self.x = false;
                self.x_queues.clear();
                self.x_keys.clear();
                let ok = exchange::DeleteOk {};
                self.emit(
                    conn,
                    reply(AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(ok))),
                );
            }
            Op::XBind(_) if !self.x => {
                let text = "NOT_FOUND - no exchange 'x' in vhost '/'".to_owned();
                self.fail(conn, ch, 404, text, (40, 30));
            }
            Op::XBind(k) | Op::XUnbind(k) => {
                let ok = if matches!(s.op, Op::XBind(_)) {
                    if !self.x_keys.contains(k) {
                        self.x_keys.push(*k);
                    }
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {}))
                } else {
                    self.x_keys.retain(|b| b != k);
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}))
                };
                self.emit(conn, reply(ok));
            }
            Op::Confirm => {
                let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
                st.confirms.get_or_insert(0);
                let ok = confirm::SelectOk {};
                self.emit(
                    conn,
                    reply(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(ok))),
                );
            }
            Op::Get(q, no_ack) => {
                let q = *q;
                let Some(queue) = self.queues[q].as_mut() else {
                    self.not_found(conn, ch, q, (60, 70));
                    return true;
                };
                let Some(msg) = queue.ready.pop_front() else {
                    let empty = basic::GetEmpty {};
                    self.emit(
                        conn,
                        reply(AMQPClass::Basic(basic::AMQPMethod::GetEmpty(empty))),
                    );
                    return true;
                };
                let remaining = queue.ready.len() as u32;
                let incarnation = queue.incarnation;
                let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
                let tag = st.next_tag;
                st.next_tag += 1;
                if !no_ack {
                    st.unacked.insert(
                        tag,
                        Unacked {
                            queue: q,
                            incarnation,
                            msg: msg.clone(),
                            consumer: None,
                        },
                    );
                }
                let event = Event::Content {
                    channel: ch,
                    method: AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                        delivery_tag: tag,
                        redelivered: msg.redelivered,
                        exchange: msg.exchange.into(),
                        routing_key: msg.routing_key.as_str().into(),
                        message_count: remaining,
                    })),
                    properties: AMQPProperties::default(),
                    body: msg.body,
                };
                self.emit(conn, event);
            }
            Op::Consume(q, no_ack, exclusive) => {
                let q = *q;
                if self.chans[&(conn, ch)].consumer.is_some() {
                    return false;
                }
                let Some(queue) = &self.queues[q] else {
                    self.not_found(conn, ch, q, (60, 20));
                    return true;
                };
                if *exclusive && !queue.consumers.is_empty()
                    || queue.consumers.iter().any(|c| c.exclusive)
                {
                    let text = format!(
                        "ACCESS_REFUSED - queue '{}' in vhost '/' in exclusive use",
                        QUEUES[q]
                    );
                    self.fail(conn, ch, 403, text, (60, 20));
                    return true;
                }
                self.consumers_made += 1;
                let tag = format!("c{}", self.consumers_made);
                let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
                st.consumer = Some((tag.clone(), q));
                let prefetch = st.consumer_prefetch;
                let ok = basic::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                };
                self.emit(
                    conn,
                    reply(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok))),
                );
                let queue = self.queues[q].as_mut().expect("checked");
                queue.had_consumer = true;
                queue.consumers.push(Consumer {
                    conn,
                    ch,
                    tag,
                    no_ack: *no_ack,
                    exclusive: *exclusive,
                    prefetch,
                    unacked: 0,
                });
                self.dispatch(q);
            }
            Op::Cancel => {
                let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
                let tag = match st.consumer.take() {
                    Some((tag, q)) => {
                        self.remove_consumer(q, conn, ch);
                        self.auto_delete_if_unused(q);
                        tag
                    }
                    None => "nobody".to_owned(),
                };
                let ok = basic::CancelOk {
                    consumer_tag: tag.into(),
                };
                self.emit(
                    conn,
                    reply(AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok))),
                );
            }
            Op::Ack(t, multiple) => self.settle(conn, ch, *t, *multiple, None, (60, 80)),
            Op::Nack(t, multiple, requeue) => {
                self.settle(conn, ch, *t, *multiple, Some(*requeue), (60, 120))
            }
            Op::Reject(t, requeue) => {
                if let Tag::All = t {
                    // Reject has no multiple: tag 0 is simply unknown.
                    self.settle(conn, ch, Tag::Unknown, false, Some(*requeue), (60, 90));
                } else {
                    self.settle(conn, ch, *t, false, Some(*requeue), (60, 90));
                }
            }
            Op::Qos(n, global) => {
                let st = self.chans.get_mut(&(conn, ch)).expect("open channel");
                if *global {
                    st.channel_prefetch = *n;
                } else {
                    st.consumer_prefetch = *n;
                }
                let consumer = st.consumer.clone();
                // As RabbitMQ: qos-ok, then what the new limit lets through.
                self.emit(
                    conn,
                    reply(AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {}))),
                );
                if let Some((_, q)) = consumer {
                    self.dispatch(q);
                }
            }
            Op::Recover => {
                self.emit(
                    conn,
                    reply(AMQPClass::Basic(basic::AMQPMethod::RecoverOk(
                        basic::RecoverOk {},
                    ))),
                );
                self.settle(conn, ch, Tag::All, true, Some(true), (60, 110));
            }
            Op::Purge(q) => {
                let q = *q;
                let Some(queue) = self.queues[q].as_mut() else {
                    self.not_found(conn, ch, q, (50, 30));
                    return true;
                };
                let n = queue.ready.len() as u32;
                queue.ready.clear();
                let ok = queue::PurgeOk { message_count: n };
                self.emit(
                    conn,
                    reply(AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok))),
                );
            }
            Op::Delete(q, if_unused, if_empty) => {
                let q = *q;
                let count = match self.queues[q].as_ref() {
                    None => 0,
                    Some(queue) if *if_unused && !queue.consumers.is_empty() => {
                        let text = format!(
                            "PRECONDITION_FAILED - queue '{}' in vhost '/' in use",
                            QUEUES[q]
                        );
                        self.fail(conn, ch, 406, text, (50, 40));
                        return true;
                    }
                    Some(queue) if *if_empty && !queue.ready.is_empty() => {
                        let text = format!(
                            "PRECONDITION_FAILED - queue '{}' in vhost '/' not empty",
                            QUEUES[q]
                        );
                        self.fail(conn, ch, 406, text, (50, 40));
                        return true;
                    }
                    Some(_) => self.delete_queue(q, Some((conn, ch))),
                };
                let ok = queue::DeleteOk {
                    message_count: count,
                };
                self.emit(
                    conn,
                    reply(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok))),
                );
                // The deleting channel's own consumer hears of it after delete-ok.
                for e in std::mem::take(&mut self.deferred) {
                    self.emit(conn, e);
                }
            }
            Op::CloseChannel => {
                self.close_channel(conn, ch);
                self.emit(
                    conn,
                    reply(AMQPClass::Channel(channel::AMQPMethod::CloseOk(
                        channel::CloseOk {},
                    ))),
                );
            }
            Op::CloseConnection => {
                self.emit(
                    conn,
                    m(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    ),
                );
                // Every consumer of the connection goes first, so that nothing is
                // handed to a channel that is closing; then each channel's unacked
                // messages go back, channel after channel, in an order RabbitMQ
                // leaves open (so does Warren): `close_order`.
                for c in CHANNELS {
                    let st = self.chans.get_mut(&(conn, c)).expect("open channel");
                    if let Some((_, q)) = st.consumer.take() {
                        self.remove_consumer(q, conn, c);
                        self.auto_delete_if_unused(q);
                    }
                }
                for c in self.close_order {
                    self.close_channel(conn, c);
                }
            }
        }
        true
    }
}

// ---- the system under test --------------------------------------------------------

struct System {
    core: Core,
    conns: Vec<CoreConnection>,
}

impl System {
    fn new() -> Self {
        let core = Core::new(Config::default());
        let conns = (0..CONNS).map(|_| open(&core)).collect();
        Self { core, conns }
    }

    fn bytes(s: &Step, model: &Model) -> Vec<u8> {
        let ch = s.ch;
        let method = |class| wire::method(ch, class);
        let q = |i: usize| QUEUES[i].into();
        // The exchange and the binding key (for a bind) or routing key (publish).
        let target = |r: &Route| -> (&'static str, String) {
            let bind = matches!(s.op, Op::Bind(..) | Op::Unbind(..));
            match r {
                Route::Default(q) => ("", QUEUES[*q].to_owned()),
                Route::Direct(k) => ("amq.direct", KEYS[*k].to_owned()),
                Route::Fanout => ("amq.fanout", "any".to_owned()),
                Route::Topic(n) if bind => ("amq.topic", topic_pattern(*n).to_owned()),
                Route::Topic(n) => ("amq.topic", topic_key(*n).to_owned()),
                Route::X => ("x", "any".to_owned()),
            }
        };
        let st = model.chans.get(&(s.conn, ch));
        let tag_of = |t: &Tag, multiple: bool| -> u64 {
            let st = st.expect("open channel");
            match t {
                Tag::Held(i) if !st.unacked.is_empty() => *st
                    .unacked
                    .keys()
                    .nth(i % st.unacked.len())
                    .expect("in range"),
                Tag::All if multiple => 0,
                _ => st.next_tag + 1000,
            }
        };
        match &s.op {
            Op::Declare(i, auto_delete) => method(AMQPClass::Queue(queue::AMQPMethod::Declare(
                queue::Declare {
                    queue: q(*i),
                    passive: false,
                    durable: false,
                    exclusive: false,
                    auto_delete: *auto_delete,
                    nowait: false,
                    arguments: Default::default(),
                },
            ))),
            Op::Bind(i, r) => {
                let (exchange, key) = target(r);
                method(AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: q(*i),
                    exchange: exchange.into(),
                    routing_key: key.into(),
                    nowait: false,
                    arguments: Default::default(),
                })))
            }
            Op::Unbind(i, r) => {
                let (exchange, key) = target(r);
                method(AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                    queue: q(*i),
                    exchange: exchange.into(),
                    routing_key: key.into(),
                    arguments: Default::default(),
                })))
            }
            Op::Publish(r, mandatory) => {
                let (exchange, key) = target(r);
                let body = format!("m{}", model.published + 1);
                let mut out = method(AMQPClass::Basic(basic::AMQPMethod::Publish(
                    basic::Publish {
                        exchange: exchange.into(),
                        routing_key: key.into(),
                        mandatory: *mandatory,
                        immediate: false,
                    },
                )));
                out.extend(wire::content(
                    ch,
                    AMQPProperties::default(),
                    body.as_bytes(),
                    wire::FRAME_MAX,
                ));
                out
            }
            Op::Confirm => method(AMQPClass::Confirm(confirm::AMQPMethod::Select(
                confirm::Select { nowait: false },
            ))),
            Op::Get(i, no_ack) => method(AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: q(*i),
                no_ack: *no_ack,
            }))),
            Op::Consume(i, no_ack, exclusive) => method(AMQPClass::Basic(
                basic::AMQPMethod::Consume(basic::Consume {
                    queue: q(*i),
                    consumer_tag: format!("c{}", model.consumers_made + 1).into(),
                    no_local: false,
                    no_ack: *no_ack,
                    exclusive: *exclusive,
                    nowait: false,
                    arguments: Default::default(),
                }),
            )),
            Op::Cancel => {
                let tag = st
                    .and_then(|st| st.consumer.as_ref())
                    .map_or("nobody".to_owned(), |(t, _)| t.clone());
                method(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: tag.into(),
                    nowait: false,
                })))
            }
            Op::Ack(t, multiple) => method(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: tag_of(t, *multiple),
                multiple: *multiple,
            }))),
            Op::Nack(t, multiple, requeue) => {
                method(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                    delivery_tag: tag_of(t, *multiple),
                    multiple: *multiple,
                    requeue: *requeue,
                })))
            }
            Op::Reject(t, requeue) => {
                method(AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                    delivery_tag: tag_of(t, false),
                    requeue: *requeue,
                })))
            }
            Op::Qos(n, global) => method(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: *n,
                global: *global,
            }))),
            Op::Recover => method(AMQPClass::Basic(basic::AMQPMethod::Recover(
                basic::Recover { requeue: true },
            ))),
            Op::Purge(i) => method(AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: q(*i),
                nowait: false,
            }))),
            Op::Delete(i, if_unused, if_empty) => {
                method(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                    queue: q(*i),
                    if_unused: *if_unused,
                    if_empty: *if_empty,
                    nowait: false,
                })))
            }
            Op::CloseChannel => method(AMQPClass::Channel(channel::AMQPMethod::Close(
                channel::Close {
                    reply_code: 200,
                    reply_text: "bye".into(),
                    class_id: 0,
                    method_id: 0,
                },
            ))),
            Op::XDeclare => method(AMQPClass::Exchange(exchange::AMQPMethod::Declare(
                exchange::Declare {
                    exchange: "x".into(),
                    kind: "fanout".into(),
                    passive: false,
                    durable: false,
                    auto_delete: false,
                    internal: false,
                    nowait: false,
                    arguments: Default::default(),
                },
            ))),
            Op::XDelete => method(AMQPClass::Exchange(exchange::AMQPMethod::Delete(
                exchange::Delete {
                    exchange: "x".into(),
                    if_unused: false,
                    nowait: false,
                },
            ))),
            Op::XBind(k) => method(AMQPClass::Exchange(exchange::AMQPMethod::Bind(
                exchange::Bind {
                    destination: "x".into(),
                    source: "amq.direct".into(),
                    routing_key: KEYS[*k].into(),
                    nowait: false,
                    arguments: Default::default(),
                },
            ))),
            Op::XUnbind(k) => method(AMQPClass::Exchange(exchange::AMQPMethod::Unbind(
                exchange::Unbind {
                    destination: "x".into(),
                    source: "amq.direct".into(),
                    routing_key: KEYS[*k].into(),
                    nowait: false,
                    arguments: Default::default(),
                },
            ))),
            Op::CloseConnection => wire::connection_close("bye"),
        }
    }
}

/// A connection through the handshake with both channels open.
fn open(core: &Core) -> CoreConnection {
    let mut conn = targets::open_connection(core);
    conn.feed(&wire::channel_open(2));
    let out = Watch::default().take(&mut conn);
    assert!(
        matches!(
            out.as_slice(),
            [Event::Method(
                2,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
            )]
        ),
        "{out:?}"
    );
    conn
}

/// Events grouped by channel, in order within each: RabbitMQ orders what one
/// channel sends, but not how the frames of different channels interleave (nor
/// which of several queues a message routed to all of them reaches first).
fn by_channel(events: &[Event]) -> BTreeMap<u16, Vec<&Event>> {
    let mut out: BTreeMap<u16, Vec<&Event>> = BTreeMap::new();
    for e in events {
        let ch = match e {
            Event::Method(ch, _) => *ch,
            Event::Content { channel, .. } => *channel,
            Event::Heartbeat | Event::ProtocolHeader => 0,
        };
        out.entry(ch).or_default().push(e);
    }
    out
}

/// Runs the steps against Warren and the model, comparing after every step.
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::new();
    let mut sys = System::new();
    let mut watches: Vec<Watch> = (0..CONNS).map(|_| Watch::default()).collect();
    for (i, s) in steps.iter().enumerate() {
        let bytes = System::bytes(s, &model);
        let before = model.clone();
        if !model.apply(s) {
            model = before;
            continue;
        }
        // A connection's close may give back its channels' messages in either
        // order: the model follows both and keeps the one Warren took.
        let mut alternatives = Vec::new();
        if matches!(s.op, Op::CloseConnection) {
            let mut other = before.clone();
            other.close_order.reverse();
            other.apply(s);
            alternatives.push(other);
        }
        sys.conns[s.conn].feed(&bytes);
        let got: Vec<Vec<Event>> = watches
            .iter_mut()
            .zip(sys.conns.iter_mut())
            .map(|(watch, conn)| watch.take(conn))
            .collect();
        let matches = |m: &Model| (0..CONNS).all(|c| by_channel(&got[c]) == by_channel(&m.out[c]));
        if !matches(&model) {
            if let Some(other) = alternatives.into_iter().find(|m| matches(m)) {
                model = other;
            }
        }
        for (c, got) in got.iter().enumerate() {
            let want = std::mem::take(&mut model.out[c]);
            prop_assert_eq!(
                by_channel(got),
                by_channel(&want),
                "step {} {:?}: connection {} got what the model did not predict",
                i,
                s,
                c
            );
        }
        model.close_order = CHANNELS;
        // Channel errors: the client answers close-ok and opens the channel again.
        for (c, watch) in watches.iter_mut().enumerate() {
            for ch in CHANNELS {
                if model.chans.contains_key(&(c, ch)) {
                    continue;
                }
                if matches!(s.op, Op::CloseConnection) && c == s.conn {
                    continue;
                }
                let mut bytes = Vec::new();
                if !matches!(s.op, Op::CloseChannel) || c != s.conn {
                    bytes.extend(wire::method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    ));
                }
                bytes.extend(wire::channel_open(ch));
                sys.conns[c].feed(&bytes);
                let got = watch.take(&mut sys.conns[c]);
                prop_assert!(
                    matches!(
                        got.as_slice(),
                        [Event::Method(
                            _,
                            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
                        )]
                    ),
                    "reopening channel {} of connection {}: {:?}",
                    ch,
                    c,
                    got
                );
                model.chans.insert(
                    (c, ch),
                    Chan {
                        next_tag: 1,
                        ..Default::default()
                    },
                );
            }
        }
        if matches!(s.op, Op::CloseConnection) {
            // The broker waits for the client to hang up after close-ok.
            let c = &sys.conns[s.conn];
            prop_assert!(
                c.is_closing() || c.is_closed(),
                "not closing after close-ok"
            );
            sys.conns[s.conn] = open(&sys.core);
            watches[s.conn] = Watch::default();
            model.open_channels(s.conn);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Bounded for CI (a few seconds); PROPTEST_CASES raises it for a deep run.
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn broker_matches_the_model(steps in prop::collection::vec(step(), 1..40)) {
        run(&steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Longer histories: queues that fill up, prefetch limits that bite, and
    /// requeues of requeued messages.
    #[test]
    fn broker_matches_the_model_over_long_histories(
        steps in prop::collection::vec(step(), 100..160),
    ) {
        run(&steps)?;
    }
}
