//! The scenario context and channel helpers: one line per AMQP operation.
//!
//! Every helper sends the exact method, waits (bounded) for the exact reply, writes what
//! it saw to the transcript and returns it. A refusal comes back as `Err(Fail::Closed)`,
//! which scenarios turn into an expectation with [`Expect::channel_closed`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amq_protocol::protocol::{
    basic, channel, confirm, exchange, queue, tx, AMQPClass, BasicProperties,
};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::driver::{unexpected, Close, Conn, ConnectOpts, Content, Event, Fail, Url, R};
use crate::transcript::Shared;

/// Fails the scenario with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Fail::msg(format!($($fmt)+)));
        }
    };
}

/// Fails unless `got == expected`, saying `expected WHAT X, got Y`.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, expected: T) -> R<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Fail::msg(format!(
            "expected {what} {expected:?}, got {got:?}"
        )))
    }
}

/// What a scenario runs with: the target URL, a unique suffix, the transcript.
#[derive(Clone)]
pub struct Ctx {
    url: Url,
    shared: Arc<Shared>,
    // std Mutex: only pushed to and drained, never held across an await.
    conns: Arc<Mutex<Vec<Conn>>>,
    /// Users the scenario added, deleted at cleanup (same kind of Mutex).
    users: Arc<Mutex<Vec<String>>>,
}

impl Ctx {
    /// A context for one run of one scenario against `url`.
    pub fn new(url: Url, suffix: String) -> Ctx {
        Ctx {
            url,
            shared: Arc::new(Shared::new(suffix)),
            conns: Arc::default(),
            users: Arc::default(),
        }
    }

    /// Adds a user named `{prefix}-{suffix}` with password `password` and, when
    /// given, (configure, write, read) permissions in the URL's vhost; it is
    /// deleted at cleanup, whatever the scenario's outcome.
    pub async fn add_user(
        &self,
        prefix: &str,
        password: &str,
        permissions: Option<(&str, &str, &str)>,
    ) -> R<String> {
        let name = self.name(prefix);
        lock(&self.users).push(name.clone());
        crate::admin::put_user(&self.url, &name, password, permissions).await?;
        Ok(name)
    }

    /// The URL under test.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The RabbitMQ release the target is or imitates.
    pub fn version(&self) -> warren_broker::RabbitVersion {
        self.url.profile.version()
    }

    /// Whether the target was told to permit (`Some(true)`) or deny
    /// (`Some(false)`) a deprecated feature; `None`: the version's default.
    pub fn permitted(&self, feature: warren_broker::DeprecatedFeature) -> Option<bool> {
        self.url
            .profile
            .overrides()
            .find(|(f, _)| *f == feature)
            .map(|(_, p)| p)
    }

    /// The transcript and cleanup registry.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A name unique to this run: `{prefix}-{suffix}`; the suffix is stripped from
    /// transcripts.
    pub fn name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.shared.suffix)
    }

    /// Adds a line of the scenario's own to the transcript.
    pub fn note(&self, line: impl Into<String>) {
        self.shared.log(line.into());
    }

    /// Opens a connection with the URL's credentials and vhost.
    pub async fn connect(&self) -> R<Conn> {
        self.connect_with(ConnectOpts::default()).await
    }

    /// Opens a connection with other credentials, vhost or tuning.
    pub async fn connect_with(&self, opts: ConnectOpts) -> R<Conn> {
        let mut conn = self.raw().await?;
        conn.handshake(&self.url, &opts).await?;
        Ok(conn)
    }

    /// A TCP connection on which nothing was sent yet.
    pub async fn raw(&self) -> R<Conn> {
        let conn = Conn::tcp(&self.url, self.shared.clone()).await?;
        lock(&self.conns).push(conn.clone());
        Ok(conn)
    }

    /// Closes every connection the scenario opened and deletes what it declared.
    pub async fn cleanup(&self) {
        let conns: Vec<Conn> = lock(&self.conns).drain(..).collect();
        for conn in conns {
            let _ = conn.close().await;
        }
        let users: Vec<String> = lock(&self.users).drain(..).collect();
        for user in users {
            let _ = crate::admin::delete_user(&self.url, &user).await;
        }
        let (queues, exchanges) = self.shared.created();
        if queues.is_empty() && exchanges.is_empty() {
            return;
        }
        // A fresh context, so that cleanup never shows in the scenario's transcript.
        let quiet = Ctx::new(self.url.clone(), String::new());
        let Ok(conn) = quiet.connect().await else {
            return;
        };
        let mut ch = conn.channel().await.ok();
        for q in &queues {
            if let Some(c) = &ch {
                if c.queue_delete(q).await.is_err() {
                    ch = conn.channel().await.ok();
                }
            }
        }
        for x in &exchanges {
            if let Some(c) = &ch {
                if c.exchange_delete(x).await.is_err() {
                    ch = conn.channel().await.ok();
                }
            }
        }
        let _ = conn.close().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    /// Opens the next unused channel.
    pub async fn channel(&self) -> R<Channel> {
        let id = self.next_channel.fetch_add(1, Ordering::Relaxed);
        self.open_channel(id).await
    }

    /// Opens channel `id` (which may be anything, to test the limits).
    pub async fn open_channel(&self, id: u16) -> R<Channel> {
        let ch = self.unopened(id);
        match ch
            .call(AMQPClass::Channel(channel::AMQPMethod::Open(
                channel::Open {},
            )))
            .await?
        {
            Event::Method(AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => Ok(ch),
            other => Err(unexpected("channel.open-ok", &other)),
        }
    }

    /// A handle on channel `id` without opening it, to send methods on unopened channels.
    pub fn unopened(&self, id: u16) -> Channel {
        Channel {
            conn: self.clone(),
            id,
            state: Arc::default(),
        }
    }
}

/// Flags for `queue.declare`.
#[derive(Clone, Debug, Default)]
pub struct QueueOpts {
    /// passive
    pub passive: bool,
    /// durable
    pub durable: bool,
    /// exclusive
    pub exclusive: bool,
    /// auto-delete
    pub auto_delete: bool,
    /// no-wait
    pub nowait: bool,
    /// arguments
    pub args: FieldTable,
}

impl QueueOpts {
    /// Sets passive.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }
    /// Sets durable.
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }
    /// Sets exclusive.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }
    /// Sets auto-delete.
    pub fn auto_delete(mut self) -> Self {
        self.auto_delete = true;
        self
    }
    /// Sets no-wait.
    pub fn nowait(mut self) -> Self {
        self.nowait = true;
        self
    }
    /// Adds an argument.
    pub fn arg(mut self, key: &str, value: amq_protocol::types::AMQPValue) -> Self {
        self.args.insert(key.into(), value);
        self
    }
}

/// Flags for `exchange.declare`.
#[derive(Clone, Debug, Default)]
pub struct ExchangeOpts {
    /// passive
    pub passive: bool,
    /// durable
    pub durable: bool,
    /// auto-delete
    pub auto_delete: bool,
    /// internal
    pub internal: bool,
    /// no-wait
    pub nowait: bool,
    /// arguments
    pub args: FieldTable,
}

impl ExchangeOpts {
    /// Sets passive.
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }
    /// Sets durable.
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }
    /// Sets auto-delete.
    pub fn auto_delete(mut self) -> Self {
        self.auto_delete = true;
        self
    }
    /// Sets internal.
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }
}

/// Flags for `basic.consume`.
#[derive(Clone, Debug, Default)]
pub struct ConsumeOpts {
    /// consumer-tag; empty lets the server choose.
    pub tag: String,
    /// no-local
    pub no_local: bool,
    /// no-ack
    pub no_ack: bool,
    /// exclusive
    pub exclusive: bool,
    /// no-wait
    pub nowait: bool,
    /// arguments
    pub args: FieldTable,
}

impl ConsumeOpts {
    /// Sets the consumer tag.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_string();
        self
    }
    /// Sets no-ack (automatic acknowledgement).
    pub fn no_ack(mut self) -> Self {
        self.no_ack = true;
        self
    }
    /// Sets exclusive.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }
}

/// Flags and properties for `basic.publish`.
#[derive(Clone, Debug, Default)]
pub struct PublishOpts {
    /// mandatory
    pub mandatory: bool,
    /// immediate
    pub immediate: bool,
    /// content properties
    pub props: BasicProperties,
}

impl PublishOpts {
    /// Sets mandatory.
    pub fn mandatory(mut self) -> Self {
        self.mandatory = true;
        self
    }
    /// Sets immediate.
    pub fn immediate(mut self) -> Self {
        self.immediate = true;
        self
    }
    /// Sets the properties.
    pub fn props(mut self, props: BasicProperties) -> Self {
        self.props = props;
        self
    }
}

/// The reply to `queue.declare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclareOk {
    /// The queue name (the server's choice when declared with an empty name).
    pub queue: String,
    /// Messages ready in the queue.
    pub messages: u32,
    /// Consumers on the queue.
    pub consumers: u32,
}

/// A message from `basic.deliver` or `basic.get-ok`.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The consumer tag (empty for basic.get).
    pub consumer_tag: String,
    /// The delivery tag.
    pub delivery_tag: u64,
    /// The redelivered flag.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// For basic.get-ok: messages left in the queue.
    pub message_count: u32,
    /// The body as text (scenarios use text bodies).
    pub body: String,
    /// The content properties.
    pub props: BasicProperties,
}

/// A message handed back by `basic.return`.
#[derive(Clone, Debug, PartialEq)]
pub struct Returned {
    /// The reply code, e.g. 312.
    pub code: u16,
    /// The reply text, e.g. NO_ROUTE.
    pub text: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// The body as text.
    pub body: String,
}

/// Which asynchronous events a wait is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// basic.deliver, and basic.cancel sent by the server.
    Delivery,
    /// basic.return
    Return,
    /// basic.ack and basic.nack from publisher confirms.
    Confirm,
}

impl Kind {
    /// Whether `event` is of this kind.
    pub fn matches(self, event: &Event) -> bool {
        use basic::AMQPMethod as B;
        matches!(
            (self, event.method()),
            (
                Kind::Delivery,
                AMQPClass::Basic(B::Deliver(_) | B::Cancel(_))
            ) | (Kind::Return, AMQPClass::Basic(B::Return(_)))
                | (Kind::Confirm, AMQPClass::Basic(B::Ack(_) | B::Nack(_)))
        )
    }
}

/// An open (or deliberately unopened) channel.
#[derive(Clone, Debug)]
pub struct Channel {
    /// Its connection.
    pub conn: Conn,
    /// Its id.
    pub id: u16,
    state: Arc<ChannelState>,
}

/// Publisher-confirm bookkeeping, so that `settle` knows what to wait for.
#[derive(Debug, Default)]
struct ChannelState {
    confirm: AtomicBool,
    published: AtomicU64,
    settled: AtomicU64,
}

fn text(content: &Content) -> String {
    String::from_utf8_lossy(&content.body).into_owned()
}

impl Channel {
    /// Sends a method and waits for the reply (or a close naming it).
    pub async fn call(&self, method: AMQPClass) -> R<Event> {
        let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
        self.conn.send(self.id, method).await?;
        self.conn.call_reply(self.id, Some(ids), true).await
    }

    /// Sends a method without waiting for anything.
    pub async fn send(&self, method: AMQPClass) -> R<()> {
        self.conn.send(self.id, method).await
    }

    /// A round trip that changes nothing: every event the server sent before its
    /// reply is then in the inbox. Not logged, so that it can be used anywhere.
    pub async fn sync(&self) -> R<()> {
        let m = AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: "amq.direct".into(),
            kind: "direct".into(),
            passive: true,
            ..Default::default()
        }));
        self.conn.send(self.id, m).await?;
        match self.conn.call_reply(self.id, Some((40, 10)), false).await? {
            Event::Method(AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_))) => Ok(()),
            other => Err(unexpected("exchange.declare-ok (sync)", &other)),
        }
    }

    /// Closes the channel from the client side.
    pub async fn close(&self) -> R<()> {
        let m = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => Ok(()),
            other => Err(unexpected("channel.close-ok", &other)),
        }
    }

    /// Waits for the server to close this channel (after an asynchronous error).
    pub async fn wait_close(&self) -> R<Close> {
        loop {
            match self.conn.next_async(self.id, |_| false, true).await {
                Err(Fail::Closed { close, .. }) => return Ok(close),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
    }

    // ---- exchange ----

    /// Declares an exchange of `kind` with default flags.
    pub async fn exchange_declare(&self, name: &str, kind: &str) -> R<()> {
        self.exchange_declare_with(name, kind, ExchangeOpts::default())
            .await
    }

    /// Declares an exchange with explicit flags.
    pub async fn exchange_declare_with(&self, name: &str, kind: &str, o: ExchangeOpts) -> R<()> {
        if !o.passive {
            self.conn.shared().created_exchange(name);
        }
        let m = AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: name.into(),
            kind: kind.into(),
            passive: o.passive,
            durable: o.durable,
            auto_delete: o.auto_delete,
            internal: o.internal,
            nowait: o.nowait,
            arguments: o.args,
        }));
        if o.nowait {
            return self.send(m).await;
        }
        match self.call(m).await? {
            Event::Method(AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_))) => Ok(()),
            other => Err(unexpected("exchange.declare-ok", &other)),
        }
    }

    /// Checks that an exchange exists (passive declare).
    pub async fn exchange_exists(&self, name: &str) -> R<()> {
        self.exchange_declare_with(name, "direct", ExchangeOpts::default().passive())
            .await
    }

    /// Deletes an exchange.
    pub async fn exchange_delete(&self, name: &str) -> R<()> {
        self.exchange_delete_with(name, false).await
    }

    /// Deletes an exchange, optionally only if unused.
    pub async fn exchange_delete_with(&self, name: &str, if_unused: bool) -> R<()> {
        let m = AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
            exchange: name.into(),
            if_unused,
            nowait: false,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(_))) => Ok(()),
            other => Err(unexpected("exchange.delete-ok", &other)),
        }
    }

    /// Binds exchange `dest` to exchange `source`.
    pub async fn exchange_bind(&self, dest: &str, source: &str, key: &str) -> R<()> {
        let m = AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
            destination: dest.into(),
            source: source.into(),
            routing_key: key.into(),
            nowait: false,
            arguments: FieldTable::default(),
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Exchange(exchange::AMQPMethod::BindOk(_))) => Ok(()),
            other => Err(unexpected("exchange.bind-ok", &other)),
        }
    }

    /// Unbinds exchange `dest` from exchange `source`.
    pub async fn exchange_unbind(&self, dest: &str, source: &str, key: &str) -> R<()> {
        let m = AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
            destination: dest.into(),
            source: source.into(),
            routing_key: key.into(),
            nowait: false,
            arguments: FieldTable::default(),
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(_))) => Ok(()),
            other => Err(unexpected("exchange.unbind-ok", &other)),
        }
    }

    // ---- queue ----

    /// Declares a queue with default flags.
    pub async fn queue_declare(&self, name: &str) -> R<DeclareOk> {
        self.queue_declare_with(name, QueueOpts::default()).await
    }

    /// Declares a queue with explicit flags.
    pub async fn queue_declare_with(&self, name: &str, o: QueueOpts) -> R<DeclareOk> {
        if !o.passive {
            self.conn.shared().created_queue(name);
        }
        let (passive, exclusive, nowait) = (o.passive, o.exclusive, o.nowait);
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: o.passive,
            durable: o.durable,
            exclusive: o.exclusive,
            auto_delete: o.auto_delete,
            nowait: o.nowait,
            arguments: o.args,
        }));
        if nowait {
            self.send(m).await?;
            return Ok(DeclareOk {
                queue: name.to_string(),
                messages: 0,
                consumers: 0,
            });
        }
        match self.call(m).await? {
            Event::Method(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(d))) => {
                if !passive && !exclusive {
                    self.conn.shared().created_queue(d.queue.as_str());
                }
                Ok(DeclareOk {
                    queue: d.queue.to_string(),
                    messages: d.message_count,
                    consumers: d.consumer_count,
                })
            }
            other => Err(unexpected("queue.declare-ok", &other)),
        }
    }

    /// Passive declare: the queue's counts, or a 404 close.
    pub async fn queue_passive(&self, name: &str) -> R<DeclareOk> {
        self.queue_declare_with(name, QueueOpts::default().passive())
            .await
    }

    /// Binds a queue.
    pub async fn queue_bind(&self, q: &str, x: &str, key: &str) -> R<()> {
        self.queue_bind_args(q, x, key, FieldTable::default()).await
    }

    /// Binds a queue with arguments.
    pub async fn queue_bind_args(&self, q: &str, x: &str, key: &str, args: FieldTable) -> R<()> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: q.into(),
            exchange: x.into(),
            routing_key: key.into(),
            nowait: false,
            arguments: args,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Queue(queue::AMQPMethod::BindOk(_))) => Ok(()),
            other => Err(unexpected("queue.bind-ok", &other)),
        }
    }

    /// Unbinds a queue.
    pub async fn queue_unbind(&self, q: &str, x: &str, key: &str) -> R<()> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
            queue: q.into(),
            exchange: x.into(),
            routing_key: key.into(),
            arguments: FieldTable::default(),
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(_))) => Ok(()),
            other => Err(unexpected("queue.unbind-ok", &other)),
        }
    }

    /// Purges a queue, returning how many messages went.
    pub async fn queue_purge(&self, q: &str) -> R<u32> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: q.into(),
            nowait: false,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Queue(queue::AMQPMethod::PurgeOk(p))) => Ok(p.message_count),
            other => Err(unexpected("queue.purge-ok", &other)),
        }
    }

    /// Deletes a queue, returning how many messages went with it.
    pub async fn queue_delete(&self, q: &str) -> R<u32> {
        self.queue_delete_with(q, false, false).await
    }

    /// Deletes a queue with if-unused / if-empty.
    pub async fn queue_delete_with(&self, q: &str, if_unused: bool, if_empty: bool) -> R<u32> {
        let m = AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: q.into(),
            if_unused,
            if_empty,
            nowait: false,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(d))) => Ok(d.message_count),
            other => Err(unexpected("queue.delete-ok", &other)),
        }
    }

    // ---- basic ----

    /// Sets prefetch (count only; RabbitMQ refuses a size).
    pub async fn qos(&self, count: u16, global: bool) -> R<()> {
        let m = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: count,
            global,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::QosOk(_))) => Ok(()),
            other => Err(unexpected("basic.qos-ok", &other)),
        }
    }

    /// Publishes a text body.
    pub async fn publish(&self, x: &str, key: &str, body: &str) -> R<()> {
        self.publish_with(x, key, body.as_bytes(), PublishOpts::default())
            .await
    }

    /// Publishes with flags and properties.
    pub async fn publish_with(&self, x: &str, key: &str, body: &[u8], o: PublishOpts) -> R<()> {
        let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: x.into(),
            routing_key: key.into(),
            mandatory: o.mandatory,
            immediate: o.immediate,
        }));
        if self.state.confirm.load(Ordering::Relaxed) {
            self.state.published.fetch_add(1, Ordering::Relaxed);
        }
        self.conn.send_content(self.id, m, o.props, body).await
    }

    /// Waits until every message published so far in confirm mode is confirmed: the
    /// only reliable point after which queue counts include them (RabbitMQ answers a
    /// passive declare ahead of messages still on their way to the queue). Not logged.
    pub async fn settle(&self) -> R<()> {
        ensure!(
            self.state.confirm.load(Ordering::Relaxed),
            "settle needs confirm mode"
        );
        let from = self.state.settled.load(Ordering::Relaxed);
        let upto = self.state.published.load(Ordering::Relaxed);
        self.collect_confirms(from, upto).await?;
        Ok(())
    }

    /// The number of messages published since confirm.select.
    pub fn published(&self) -> u64 {
        self.state.published.load(Ordering::Relaxed)
    }

    /// Starts a consumer with a server-chosen tag and manual acks; returns the tag.
    pub async fn consume(&self, q: &str) -> R<String> {
        self.consume_with(q, ConsumeOpts::default()).await
    }

    /// Starts a consumer with explicit flags; returns the tag.
    pub async fn consume_with(&self, q: &str, o: ConsumeOpts) -> R<String> {
        let nowait = o.nowait;
        let tag = o.tag.clone();
        let m = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: q.into(),
            consumer_tag: o.tag.into(),
            no_local: o.no_local,
            no_ack: o.no_ack,
            exclusive: o.exclusive,
            nowait: o.nowait,
            arguments: o.args,
        }));
        if nowait {
            self.send(m).await?;
            return Ok(tag);
        }
        match self.call(m).await? {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(c))) => {
                Ok(c.consumer_tag.to_string())
            }
            other => Err(unexpected("basic.consume-ok", &other)),
        }
    }

    /// Cancels a consumer.
    pub async fn cancel(&self, tag: &str) -> R<()> {
        let m = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: tag.into(),
            nowait: false,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::CancelOk(_))) => Ok(()),
            other => Err(unexpected("basic.cancel-ok", &other)),
        }
    }

    /// `basic.get`: `None` for get-empty.
    pub async fn get(&self, q: &str, no_ack: bool) -> R<Option<Delivery>> {
        self.get_logged(q, no_ack, true).await
    }

    /// `basic.get` as [`Channel::get`], logged only when `log`.
    async fn get_logged(&self, q: &str, no_ack: bool, log: bool) -> R<Option<Delivery>> {
        let m = AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: q.into(),
            no_ack,
        }));
        self.conn.send(self.id, m).await?;
        match self.conn.call_reply(self.id, Some((60, 70)), log).await? {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_))) => Ok(None),
            Event::Content(AMQPClass::Basic(basic::AMQPMethod::GetOk(g)), c) => {
                Ok(Some(Delivery {
                    consumer_tag: String::new(),
                    delivery_tag: g.delivery_tag,
                    redelivered: g.redelivered,
                    exchange: g.exchange.to_string(),
                    routing_key: g.routing_key.to_string(),
                    message_count: g.message_count,
                    body: text(&c),
                    props: c.props,
                }))
            }
            other => Err(unexpected("basic.get-ok or get-empty", &other)),
        }
    }

    /// Polls `basic.get` every 10 ms (for at most 5 s) until `q` yields a message, for
    /// waits on a broker timer (TTL, expiry). The empty polls depend on timing and stay
    /// out of the transcript; the message found is logged as `basic.get-ok` would be.
    pub async fn poll_get(&self, q: &str, no_ack: bool) -> R<Delivery> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(d) = self.get_logged(q, no_ack, false).await? {
                self.conn.shared().log(format!(
                    "ch{} polled get-ok delivery_tag={} redelivered={} exchange={} routing_key={} body={:?} headers={:?} expiration={:?}",
                    self.id,
                    d.delivery_tag,
                    d.redelivered,
                    d.exchange,
                    d.routing_key,
                    d.body,
                    d.props.headers().as_ref().map(crate::driver::fmt_table),
                    d.props.expiration().as_ref().map(|e| e.to_string()),
                ));
                return Ok(d);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "no message in {q} within 5 s of polling"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Polls a passive declare every 10 ms (for at most 5 s) until `q` holds `messages`
    /// ready messages, for waits on a broker timer. Logs one line when it does.
    pub async fn poll_count(&self, q: &str, messages: u32) -> R<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: q.into(),
                passive: true,
                ..Default::default()
            }));
            self.conn.send(self.id, m).await?;
            let got = match self.conn.call_reply(self.id, Some((50, 10)), false).await? {
                Event::Method(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(d))) => d.message_count,
                other => return Err(unexpected("queue.declare-ok", &other)),
            };
            if got == messages {
                self.conn
                    .shared()
                    .log(format!("ch{} polled {q} messages={messages}", self.id));
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{q} still holds {got} messages after 5 s, expected {messages}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Polls `queue.bind` of `q` to the exchange `x` every 10 ms (for at most 5 s) until
    /// `q` is gone (404), which closes this channel. Logs one line when it is. A bind,
    /// unlike a passive declare or basic.get, does not renew an `x-expires` lease.
    pub async fn poll_gone(&self, q: &str, x: &str) -> R<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let m = AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: q.into(),
                exchange: x.into(),
                routing_key: "".into(),
                nowait: false,
                arguments: FieldTable::default(),
            }));
            self.conn.send(self.id, m).await?;
            match self.conn.call_reply(self.id, Some((50, 20)), false).await {
                Ok(_) => {}
                Err(Fail::Closed { close, .. }) if close.code == 404 => {
                    self.conn
                        .shared()
                        .log(format!("ch{} polled {q} gone", self.id));
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{q} still exists after 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// `basic.get` that must return a message with `body`.
    pub async fn get_expect(&self, q: &str, no_ack: bool, body: &str) -> R<Delivery> {
        match self.get(q, no_ack).await? {
            Some(d) if d.body == body => Ok(d),
            Some(d) => Err(Fail::msg(format!(
                "expected get-ok {body:?}, got {:?}",
                d.body
            ))),
            None => Err(Fail::msg(format!(
                "expected get-ok {body:?}, got get-empty"
            ))),
        }
    }

    /// `basic.get` that must find the queue empty.
    pub async fn get_empty(&self, q: &str) -> R<()> {
        match self.get(q, true).await? {
            None => Ok(()),
            Some(d) => Err(Fail::msg(format!("expected get-empty, got {:?}", d.body))),
        }
    }

    /// Acknowledges.
    pub async fn ack(&self, tag: u64, multiple: bool) -> R<()> {
        self.send(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple,
        })))
        .await
    }

    /// Negatively acknowledges.
    pub async fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> R<()> {
        self.send(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: tag,
            multiple,
            requeue,
        })))
        .await
    }

    /// Rejects.
    pub async fn reject(&self, tag: u64, requeue: bool) -> R<()> {
        self.send(AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag: tag,
            requeue,
        })))
        .await
    }

    /// `basic.recover` (synchronous).
    pub async fn recover(&self, requeue: bool) -> R<()> {
        let m = AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::RecoverOk(_))) => Ok(()),
            other => Err(unexpected("basic.recover-ok", &other)),
        }
    }

    /// Puts the channel in confirm mode.
    pub async fn confirm_select(&self) -> R<()> {
        let m = AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        }));
        match self.call(m).await? {
            Event::Method(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))) => {
                self.state.confirm.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => Err(unexpected("confirm.select-ok", &other)),
        }
    }

    /// Puts the channel in transaction mode.
    pub async fn tx_select(&self) -> R<()> {
        let m = AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}));
        match self.call(m).await? {
            Event::Method(AMQPClass::Tx(tx::AMQPMethod::SelectOk(_))) => Ok(()),
            other => Err(unexpected("tx.select-ok", &other)),
        }
    }

    /// Commits the transaction.
    pub async fn tx_commit(&self) -> R<()> {
        let m = AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}));
        match self.call(m).await? {
            Event::Method(AMQPClass::Tx(tx::AMQPMethod::CommitOk(_))) => Ok(()),
            other => Err(unexpected("tx.commit-ok", &other)),
        }
    }

    /// Rolls the transaction back.
    pub async fn tx_rollback(&self) -> R<()> {
        let m = AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}));
        match self.call(m).await? {
            Event::Method(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(_))) => Ok(()),
            other => Err(unexpected("tx.rollback-ok", &other)),
        }
    }

    // ---- asynchronous events ----

    /// The next delivery on this channel. A server-sent basic.cancel or a close fails.
    pub async fn deliver(&self) -> R<Delivery> {
        match self
            .conn
            .next_async(self.id, |e| Kind::Delivery.matches(e), true)
            .await?
        {
            Event::Content(AMQPClass::Basic(basic::AMQPMethod::Deliver(d)), c) => Ok(Delivery {
                consumer_tag: d.consumer_tag.to_string(),
                delivery_tag: d.delivery_tag,
                redelivered: d.redelivered,
                exchange: d.exchange.to_string(),
                routing_key: d.routing_key.to_string(),
                message_count: 0,
                body: text(&c),
                props: c.props,
            }),
            other => Err(unexpected("basic.deliver", &other)),
        }
    }

    /// The next delivery, which must carry `body`.
    pub async fn expect_deliver(&self, body: &str) -> R<Delivery> {
        let d = self.deliver().await?;
        expect_eq("delivery", d.body.as_str(), body)?;
        Ok(d)
    }

    /// The next deliveries, which must carry `bodies` in this order.
    pub async fn expect_bodies(&self, bodies: &[&str]) -> R<Vec<Delivery>> {
        let mut out = Vec::new();
        for b in bodies {
            out.push(self.expect_deliver(b).await?);
        }
        Ok(out)
    }

    /// A server-sent `basic.cancel` for a consumer; returns its tag.
    pub async fn expect_server_cancel(&self) -> R<String> {
        match self
            .conn
            .next_async(self.id, |e| Kind::Delivery.matches(e), true)
            .await?
        {
            Event::Method(AMQPClass::Basic(basic::AMQPMethod::Cancel(c))) => {
                Ok(c.consumer_tag.to_string())
            }
            other => Err(unexpected("basic.cancel from the server", &other)),
        }
    }

    /// Fails if a delivery arrived or arrives before a round trip completes.
    pub async fn expect_no_delivery(&self) -> R<()> {
        self.sync().await?;
        if self
            .conn
            .pending(self.id, |e| Kind::Delivery.matches(e))
            .await
            > 0
        {
            let d = self
                .conn
                .next_async(self.id, |e| Kind::Delivery.matches(e), true)
                .await?;
            return Err(unexpected("no delivery", &d));
        }
        Ok(())
    }

    /// The next `basic.return`.
    pub async fn returned(&self) -> R<Returned> {
        match self
            .conn
            .next_async(self.id, |e| Kind::Return.matches(e), true)
            .await?
        {
            Event::Content(AMQPClass::Basic(basic::AMQPMethod::Return(r)), c) => Ok(Returned {
                code: r.reply_code,
                text: r.reply_text.to_string(),
                exchange: r.exchange.to_string(),
                routing_key: r.routing_key.to_string(),
                body: text(&c),
            }),
            other => Err(unexpected("basic.return", &other)),
        }
    }

    /// Fails if a return arrived or arrives before a round trip completes.
    pub async fn expect_no_return(&self) -> R<()> {
        self.sync().await?;
        if self
            .conn
            .pending(self.id, |e| Kind::Return.matches(e))
            .await
            > 0
        {
            let r = self
                .conn
                .next_async(self.id, |e| Kind::Return.matches(e), true)
                .await?;
            return Err(unexpected("no basic.return", &r));
        }
        Ok(())
    }

    /// Collects publisher confirms until every sequence number `1..=upto` (after the
    /// ones already seen, `from`) is settled exactly once. Returns the nacked numbers.
    /// Logs one summary line, since how the server batches with `multiple` is its choice.
    pub async fn wait_confirms(&self, from: u64, upto: u64) -> R<Vec<u64>> {
        let nacked = self.collect_confirms(from, upto).await?;
        self.conn.shared().log(format!(
            "ch{} confirms {}..={} acked={} nacked={:?}",
            self.id,
            from + 1,
            upto,
            upto - from - nacked.len() as u64,
            nacked
        ));
        Ok(nacked)
    }

    async fn collect_confirms(&self, from: u64, upto: u64) -> R<Vec<u64>> {
        let mut settled = vec![None::<bool>; (upto + 1) as usize];
        let mut next = from + 1;
        while next <= upto {
            let (tag, multiple, ok) = match self
                .conn
                .next_async(self.id, |e| Kind::Confirm.matches(e), false)
                .await?
            {
                Event::Method(AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                    (a.delivery_tag, a.multiple, true)
                }
                Event::Method(AMQPClass::Basic(basic::AMQPMethod::Nack(n))) => {
                    (n.delivery_tag, n.multiple, false)
                }
                other => return Err(unexpected("basic.ack or basic.nack", &other)),
            };
            ensure!(
                tag <= upto && tag > from,
                "confirm for unknown sequence number {tag} (published {from}+1..={upto})"
            );
            let lo = if multiple { from + 1 } else { tag };
            for seq in lo..=tag {
                match settled[seq as usize] {
                    Some(_) if !multiple || seq == tag => {
                        return Err(Fail::msg(format!("sequence number {seq} confirmed twice")))
                    }
                    Some(_) => {}
                    None => settled[seq as usize] = Some(ok),
                }
            }
            while next <= upto && settled[next as usize].is_some() {
                next += 1;
            }
        }
        let nacked: Vec<u64> = (from + 1..=upto)
            .filter(|s| settled[*s as usize] == Some(false))
            .collect();
        self.state.settled.fetch_max(upto, Ordering::Relaxed);
        Ok(nacked)
    }

    /// Fails if a confirm arrived or arrives before a round trip completes.
    pub async fn expect_no_confirm(&self) -> R<()> {
        self.sync().await?;
        if self
            .conn
            .pending(self.id, |e| Kind::Confirm.matches(e))
            .await
            > 0
        {
            let c = self
                .conn
                .next_async(self.id, |e| Kind::Confirm.matches(e), true)
                .await?;
            return Err(unexpected("no confirm", &c));
        }
        Ok(())
    }
}

/// The release the broker names in `connection.start`'s `version`, as a
/// profile's version; an error names a release no profile covers.
pub async fn detect_version(url: &Url) -> R<warren_broker::RabbitVersion> {
    let cx = Ctx::new(url.clone(), "detect".into());
    let conn = cx.connect().await?;
    let release = conn
        .start
        .as_ref()
        .and_then(|s| match s.server_properties.inner().get("version") {
            Some(AMQPValue::LongString(v)) => {
                Some(String::from_utf8_lossy(v.as_bytes()).into_owned())
            }
            _ => None,
        })
        .unwrap_or_default();
    let _ = conn.close().await;
    warren_broker::RabbitVersion::from_release(&release).ok_or_else(|| {
        Fail::msg(format!(
            "{} says it is version {release:?}, which no profile covers (known: {})",
            url.addr,
            warren_broker::RabbitVersion::ALL
                .map(|v| v.series())
                .join(", ")
        ))
    })
}
