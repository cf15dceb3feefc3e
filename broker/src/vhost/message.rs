//! A published message as queues hold it, laid out for a queue of a million
//! small messages: see `bench/PROFILE.md`, "Memory per queued message".

use std::sync::Arc;

use amq_protocol::protocol::basic;
use amq_protocol::types::AMQPValue;
use bytes::Bytes;

use crate::codec;
use crate::memory::Gauge;

/// Properties and body up to this size are copied out of the frames they came
/// in: a slice would keep the whole read buffer alive (frame overhead, the
/// publish method, neighbouring messages) for as long as the message is queued.
/// Larger bodies stay zero-copy slices; the pinned overhead is small beside them.
pub const INLINE_MAX: usize = 1024;

/// The content header payload starts with class id, weight and body size; only
/// what follows (property flags and list) is kept, the rest is rebuilt on the way
/// out (weight 0, as RabbitMQ sends it).
const HEADER_PREFIX: usize = 12;

/// Where a message was published, and the gauge its body counts against.
///
/// A publisher's consecutive messages usually share exchange and routing key:
/// they share one `Route` (see `RouteCache`) instead of a string allocation each.
#[derive(Debug)]
pub struct Route {
    exchange: Box<str>,
    routing_key: Box<str>,
    gauge: Arc<Gauge>,
}

impl Route {
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    pub fn new(exchange: &str, routing_key: &str, gauge: &Arc<Gauge>) -> Arc<Route> {
        Arc::new(Route {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            gauge: gauge.clone(),
        })
    }
}

/// The last route a connection published with, reused while it stays the same.
/// One per connection, so always for the same broker's gauge.
#[derive(Debug, Default)]
pub struct RouteCache(Option<Arc<Route>>);

impl RouteCache {
    pub fn get(&mut self, exchange: &str, routing_key: &str, gauge: &Arc<Gauge>) -> Arc<Route> {
        self.get_raw(exchange.as_bytes(), routing_key.as_bytes(), gauge)
    }

    /// Names as a frame brought them, already checked to be UTF-8: while they
    /// match the last route, they are compared as bytes and not converted again.
    pub fn get_raw(
        &mut self,
        exchange: &[u8],
        routing_key: &[u8],
        gauge: &Arc<Gauge>,
    ) -> Arc<Route> {
        match &self.0 {
            Some(r)
                if r.routing_key.as_bytes() == routing_key && r.exchange.as_bytes() == exchange =>
            {
                r.clone()
            }
            _ => {
                let text = |b| std::str::from_utf8(b).expect("names are checked when decoded");
                let r = Route::new(text(exchange), text(routing_key), gauge);
                self.0 = Some(r.clone());
                r
            }
        }
    }
}

#[derive(Debug)]
enum Content {
    /// Property bytes, then the body, in one exact-size allocation.
    Inline(Box<[u8]>),
    /// A large message: both stay slices of the frames they arrived in.
    Split(Box<Split>),
}

#[derive(Debug)]
struct Split {
    props: Bytes,
    body: Bytes,
}

/// What few messages have; boxed so that the rest do not pay 32 bytes for it.
#[derive(Debug, Default)]
struct Extra {
    expiration: Option<u64>,
    persist_id: Option<u64>,
}

/// A published message; shared by every queue it was routed to.
///
/// Only the properties the broker acts on are kept decoded; the rest stay in the
/// content header's property bytes, decoded when asked for
/// ([`Message::properties`]). Its body counts against the memory high watermark
/// from creation until it is dropped.
#[derive(Debug)]
pub struct Message {
    route: Arc<Route>,
    content: Content,
    /// Where the properties end in `Content::Inline`.
    props_len: u32,
    delivery_mode: u8,
    /// The `priority` property; 4.3's quorum queues tell 0 from none.
    priority: Option<u8>,
    /// The `x-death` in its headers is the broker's own history: it was
    /// dead-lettered, not published with that header by a client. From 4.0
    /// RabbitMQ reads only its own (`vhost/deadletter.rs`).
    dead_lettered: bool,
    extra: Option<Box<Extra>>,
}

impl Message {
    /// A message with these properties, content header payload (as received, or
    /// encoded by the broker from `properties`) and body.
    pub fn new(
        route: Arc<Route>,
        properties: &basic::AMQPProperties,
        header: Bytes,
        body: Bytes,
    ) -> Message {
        let start = HEADER_PREFIX.min(header.len());
        let props = &header[start..];
        let (content, props_len) = if props.len() + body.len() <= INLINE_MAX {
            let mut both = Vec::with_capacity(props.len() + body.len());
            both.extend_from_slice(props);
            both.extend_from_slice(&body);
            (Content::Inline(both.into_boxed_slice()), props.len() as u32)
        } else {
            let props = header.slice(start..);
            (Content::Split(Box::new(Split { props, body })), 0)
        };
        let expiration = properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse().ok());
        let msg = Message {
            route,
            content,
            props_len,
            delivery_mode: properties.delivery_mode().unwrap_or(1),
            priority: *properties.priority(),
            dead_lettered: false,
            extra: expiration.map(|e| {
                Box::new(Extra {
                    expiration: Some(e),
                    persist_id: None,
                })
            }),
        };
        msg.route.gauge.add(msg.body().len());
        msg
    }

    pub fn exchange(&self) -> &str {
        &self.route.exchange
    }

    pub fn routing_key(&self) -> &str {
        &self.route.routing_key
    }

    /// The content header's property flags and list, as the publisher sent them.
    pub fn props(&self) -> &[u8] {
        match &self.content {
            Content::Inline(b) => &b[..self.props_len as usize],
            Content::Split(s) => &s.props,
        }
    }

    pub fn body(&self) -> &[u8] {
        match &self.content {
            Content::Inline(b) => &b[self.props_len as usize..],
            Content::Split(s) => &s.body,
        }
    }

    /// The body as `Bytes`: shared when it is a frame's slice, else a copy.
    pub fn body_bytes(&self) -> Bytes {
        match &self.content {
            Content::Inline(_) => Bytes::copy_from_slice(self.body()),
            Content::Split(s) => s.body.clone(),
        }
    }

    /// What a content header payload has before the properties: class id,
    /// weight, body size.
    pub fn header_prefix(&self) -> [u8; HEADER_PREFIX] {
        let mut h = [0; HEADER_PREFIX];
        h[..2].copy_from_slice(&60u16.to_be_bytes());
        h[4..].copy_from_slice(&(self.body().len() as u64).to_be_bytes());
        h
    }

    /// The property bytes of a delivery that adds `key` to the publisher's
    /// headers, as RabbitMQ does for `x-delivery-count` and `x-stream-offset`.
    pub fn props_with_header(&self, key: &str, value: AMQPValue) -> Vec<u8> {
        self.props_with_headers([(key, value)])
    }

    /// The same with several headers added.
    pub fn props_with_headers<'a>(
        &self,
        added: impl IntoIterator<Item = (&'a str, AMQPValue)>,
    ) -> Vec<u8> {
        let properties = self.properties();
        let mut headers = properties.headers().clone().unwrap_or_default();
        for (key, value) in added {
            headers.insert(key.into(), value);
        }
        let properties = properties.with_headers(headers);
        codec::encode_header(self.body().len() as u64, &properties)[HEADER_PREFIX..].to_vec()
    }

    /// The whole content header payload, as a content header frame carries it.
    pub fn header(&self) -> Bytes {
        [&self.header_prefix()[..], self.props()].concat().into()
    }

    pub fn priority(&self) -> u8 {
        self.priority.unwrap_or(0)
    }

    /// The `priority` property as published: `None` when absent.
    pub fn priority_property(&self) -> Option<u8> {
        self.priority
    }

    pub fn persistent(&self) -> bool {
        self.delivery_mode == 2
    }

    /// Header and body bytes, as the store counts them.
    pub(crate) fn size(&self) -> usize {
        HEADER_PREFIX + self.props().len() + self.body().len()
    }

    /// The per-message TTL from the `expiration` property (checked at publish).
    pub(crate) fn expiration_ms(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.expiration)
    }

    /// Its id in the store, when it was written there (persistent, routed to a
    /// durable queue, with a data directory).
    pub(crate) fn persist_id(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.persist_id)
    }

    pub(crate) fn set_persist_id(&mut self, id: u64) {
        self.extra.get_or_insert_with(Default::default).persist_id = Some(id);
    }

    /// Whether its `x-death` header was written by the broker (see the field).
    pub(crate) fn dead_lettered(&self) -> bool {
        self.dead_lettered
    }

    pub(crate) fn set_dead_lettered(&mut self, own: bool) {
        self.dead_lettered = own;
    }

    /// All the properties, decoded from the content header.
    pub fn properties(&self) -> basic::AMQPProperties {
        codec::parse_properties(self.props()).unwrap_or_default()
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        let n = self.body().len();
        self.route.gauge.sub(n);
    }
}

/// When a queued message expires, in the broker clock's milliseconds: a `u64`
/// with a sentinel for "never" is half the size of an `Option<u64>`, and a queue
/// holds one per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(u64);

impl Deadline {
    pub const NEVER: Deadline = Deadline(u64::MAX);

    /// `ttl` ms after `now`; a deadline beyond the clock's range is never.
    pub fn after(now: u64, ttl: Option<u64>) -> Deadline {
        ttl.map_or(Self::NEVER, |t| Deadline(now.saturating_add(t)))
    }

    pub fn is_set(self) -> bool {
        self != Self::NEVER
    }

    pub fn passed(self, now: u64) -> bool {
        self.is_set() && self.0 <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_stay_small() {
        // 40 bytes + the Arc's counts: one 64-byte glibc chunk. See PROFILE.md.
        assert!(std::mem::size_of::<Message>() <= 40);
        assert_eq!(std::mem::size_of::<Deadline>(), 8);
        // A queue's entry per message.
        assert_eq!(std::mem::size_of::<crate::vhost::Queued>(), 32);
    }

    #[test]
    fn header_round_trips() {
        let gauge = Gauge::new(0);
        let props = basic::AMQPProperties::default()
            .with_priority(3)
            .with_expiration("100".into());
        for size in [0, 16, INLINE_MAX, INLINE_MAX + 1] {
            let body = Bytes::from(vec![7u8; size]);
            let header = codec::encode_header(size as u64, &props);
            let m = Message::new(
                Route::new("x", "k", &gauge),
                &props,
                header.clone(),
                body.clone(),
            );
            assert_eq!(m.header(), header);
            assert_eq!(m.body(), &body[..]);
            assert_eq!(m.priority(), 3);
            assert_eq!(m.expiration_ms(), Some(100));
            assert_eq!(m.properties().priority(), &Some(3));
            assert_eq!(gauge.bytes(), size);
            drop(m);
            assert_eq!(gauge.bytes(), 0);
        }
    }
}
