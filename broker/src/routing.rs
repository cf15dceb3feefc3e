//! Which queues an exchange sends a message to: direct, fanout, topic and headers
//! matching over an exchange's bindings, with an index (a hash for direct keys, a
//! trie of words for topic patterns) so that thousands of bindings stay fast.

use rustc_hash::FxHashMap as HashMap;

use amq_protocol::types::{AMQPValue, FieldTable};

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// RabbitMQ 4.0's `x-local-random`: one of the bound queues, at random
    /// (rabbit_exchange_type_local_random.erl:45-55 at v4.3.5; on one node every
    /// queue is local).
    LocalRandom,
    /// RabbitMQ 4.3's `x-modulus-hash`: one destination, chosen by the hash of
    /// the message's routing keys among the bindings in order of destination
    /// (rabbit_exchange_type_modulus_hash.erl:41-52 at v4.3.5).
    ModulusHash,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => Self::Direct,
            "fanout" => Self::Fanout,
            "topic" => Self::Topic,
            "headers" => Self::Headers,
            "x-local-random" => Self::LocalRandom,
            "x-modulus-hash" => Self::ModulusHash,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::LocalRandom => "x-local-random",
            Self::ModulusHash => "x-modulus-hash",
        }
    }
}

#[derive(Debug)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// Bindings with this exchange as their source.
    pub bindings: Vec<Binding>,
    /// `bindings` arranged for routing; reset whenever they change.
    pub(crate) index: OnceLock<Index>,
}

impl Exchange {
    pub(crate) fn bindings_changed(&mut self) {
        self.index = OnceLock::new();
    }

    /// The bindings that take a message.
    pub(crate) fn matching(&self, routing_key: &str, headers: Option<&FieldTable>) -> Vec<usize> {
        self.index
            .get_or_init(|| Index::build(self.kind, &self.bindings))
            .matching(self.kind, &self.bindings, routing_key, headers)
    }
}

/// Where a binding leads: a queue, or another exchange (exchange-to-exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// An exchange's bindings arranged for lookup; rebuilt when they change.
#[derive(Debug, Default)]
pub struct Index {
    direct: HashMap<String, Vec<usize>>,
    topic: TrieNode,
}

/// One word position of topic patterns.
#[derive(Debug, Default)]
struct TrieNode {
    words: HashMap<String, TrieNode>,
    star: Option<Box<TrieNode>>,
    hash: Option<Box<TrieNode>>,
    /// Bindings whose pattern ends here.
    ends: Vec<usize>,
}

impl Index {
    pub fn build(kind: ExchangeKind, bindings: &[Binding]) -> Index {
        let mut index = Index::default();
        for (i, b) in bindings.iter().enumerate() {
            match kind {
                ExchangeKind::Direct => index
                    .direct
                    .entry(b.routing_key.clone())
                    .or_default()
                    .push(i),
                ExchangeKind::Topic => {
                    let mut node = &mut index.topic;
                    for word in words(&b.routing_key) {
                        node = match word {
                            "*" => node.star.get_or_insert_with(Default::default),
                            "#" => node.hash.get_or_insert_with(Default::default),
                            w => node.words.entry(w.to_owned()).or_default(),
                        };
                    }
                    node.ends.push(i);
                }
                ExchangeKind::Fanout
                | ExchangeKind::Headers
                | ExchangeKind::LocalRandom
                | ExchangeKind::ModulusHash => {}
            }
        }
        index
    }

    /// Indexes of the bindings that take a message, in binding order, each once.
    pub fn matching(
        &self,
        kind: ExchangeKind,
        bindings: &[Binding],
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<usize> {
        match kind {
            ExchangeKind::Direct => self.direct.get(routing_key).cloned().unwrap_or_default(),
            ExchangeKind::Fanout => (0..bindings.len()).collect(),
            // Its bindings all have the empty key (`validate_binding/2`); the
            // message's routing key plays no part.
            ExchangeKind::LocalRandom => match bindings.len() {
                0 => Vec::new(),
                n => vec![crate::names::random_below(n)],
            },
            ExchangeKind::ModulusHash => modulus_hash(bindings, routing_key, headers)
                .into_iter()
                .collect(),
            ExchangeKind::Headers => (0..bindings.len())
                .filter(|&i| headers_match(&bindings[i].arguments, headers))
                .collect(),
            ExchangeKind::Topic => {
                let words: Vec<&str> = words(routing_key).collect();
                let mut out = Vec::new();
                self.topic.collect(&words, &mut out);
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }
}

/// The binding an `x-modulus-hash` exchange routes a message by: every binding
/// counts, whatever its key (`match_routing_key(Name, ['_'])`), sorted as
/// Erlang sorts their destinations (`#resource{}`: exchanges before queues,
/// then by name), and the one at `phash2(RoutingKeys, 2^27) rem Count`. The
/// routing keys are the message's and its `CC` and `BCC` headers' strings
/// (`mc_amqpl:message/4`, `rabbit_basic:header_routes/1`).
fn modulus_hash(
    bindings: &[Binding],
    routing_key: &str,
    headers: Option<&FieldTable>,
) -> Option<usize> {
    if bindings.is_empty() {
        return None;
    }
    let mut keys: Vec<&[u8]> = vec![routing_key.as_bytes()];
    for header in ["CC", "BCC"] {
        if let Some(AMQPValue::FieldArray(routes)) = headers.and_then(|h| h.inner().get(header)) {
            keys.extend(routes.as_slice().iter().filter_map(|v| match v {
                AMQPValue::LongString(s) => Some(s.as_bytes()),
                _ => None,
            }));
        }
    }
    let mut order: Vec<usize> = (0..bindings.len()).collect();
    fn rank(d: &Destination) -> (u8, &[u8]) {
        match d {
            Destination::Exchange(name) => (0, name.as_bytes()),
            Destination::Queue(name) => (1, name.as_bytes()),
        }
    }
    order.sort_by(|&a, &b| rank(&bindings[a].destination).cmp(&rank(&bindings[b].destination)));
    let hash = crate::erlang_hash::phash2_binaries(&keys, 1 << 27);
    Some(order[hash as usize % order.len()])
}

/// The words of a topic key or pattern: "" has none, "a..b" has an empty one.
fn words(key: &str) -> impl Iterator<Item = &str> {
    key.split('.').filter(move |_| !key.is_empty())
}

impl TrieNode {
    fn collect(&self, words: &[&str], out: &mut Vec<usize>) {
        if let Some(hash) = &self.hash {
            // `#` takes zero or more words.
            for skip in 0..=words.len() {
                hash.collect(&words[skip..], out);
            }
        }
        match words.split_first() {
            None => out.extend_from_slice(&self.ends),
            Some((word, rest)) => {
                if let Some(next) = self.words.get(*word) {
                    next.collect(rest, out);
                }
                if let Some(star) = &self.star {
                    star.collect(rest, out);
                }
            }
        }
    }
}

/// Headers matching: `x-match` all (default) or any, and RabbitMQ's `all-with-x` /
/// `any-with-x`, which also compare arguments starting with `x-`.
pub fn headers_match(binding: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = match binding.inner().get("x-match") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "all".to_owned(),
    };
    let (any, with_x) = match mode.as_str() {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut considered = binding
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")));
    let hit = |(k, v): (&amq_protocol::types::ShortString, &AMQPValue)| match headers.get(k) {
        None => false,
        Some(h) => matches!(v, AMQPValue::Void) || crate::table::same_value(h, v),
    };
    if any {
        considered.any(hit)
    } else {
        considered.all(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The plain definition the index must agree with.
    /// Whether a binding of an exchange of `kind` takes a message.
    fn matches(
        kind: ExchangeKind,
        binding: &Binding,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> bool {
        match kind {
            ExchangeKind::Direct => binding.routing_key == routing_key,
            ExchangeKind::Fanout | ExchangeKind::LocalRandom | ExchangeKind::ModulusHash => true,
            ExchangeKind::Topic => topic_matches(&binding.routing_key, routing_key),
            ExchangeKind::Headers => headers_match(&binding.arguments, headers),
        }
    }

    /// AMQP topic matching: words separated by `.`, `*` matches exactly one word and
    /// `#` zero or more.
    fn topic_matches(pattern: &str, key: &str) -> bool {
        let p: Vec<&str> = words(pattern).collect();
        let k: Vec<&str> = words(key).collect();
        matches_words(&p, &k)
    }

    fn matches_words(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| matches_words(rest, &k[i..])),
            Some((&w, rest)) => match k.split_first() {
                Some((&kw, krest)) => (w == "*" || w == kw) && matches_words(rest, krest),
                None => false,
            },
        }
    }

    #[test]
    fn topic_wildcards() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("a.b", "a.b.c"));
        assert!(topic_matches("", ""));
        assert!(topic_matches("a..b", "a..b"));
        assert!(topic_matches("a.*.b", "a..b"));
        assert!(!topic_matches("*", ""));
    }

    #[test]
    fn headers_all_and_any() {
        let mut b = FieldTable::default();
        b.insert("a".into(), AMQPValue::LongString("1".into()));
        b.insert("b".into(), AMQPValue::LongString("2".into()));
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongString("1".into()));
        assert!(!headers_match(&b, Some(&h)));
        b.insert("x-match".into(), AMQPValue::LongString("any".into()));
        assert!(headers_match(&b, Some(&h)));
        assert!(!headers_match(&b, None));
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("".to_owned()),
            Just("cc".to_owned())
        ]
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_owned()), Just("#".to_owned())]
    }

    proptest! {
        #[test]
        fn topic_index_agrees_with_the_definition(
            patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 1..5), 0..12),
            key in proptest::collection::vec(word(), 1..6),
        ) {
            let bindings: Vec<Binding> = patterns
                .iter()
                .map(|p| Binding {
                    destination: crate::vhost::Destination::Queue("q".into()),
                    routing_key: p.join("."),
                    arguments: FieldTable::default(),
                })
                .collect();
            let key = key.join(".");
            let index = Index::build(ExchangeKind::Topic, &bindings);
            let got = index.matching(ExchangeKind::Topic, &bindings, &key, None);
            let want: Vec<usize> = (0..bindings.len())
                .filter(|&i| matches(ExchangeKind::Topic, &bindings[i], &key, None))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
