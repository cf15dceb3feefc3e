//! Routing as RabbitMQ routes: the default exchange, direct bindings (one copy per
//! queue however many bindings match), fanout, topic wildcards and headers matching.
//! Each test publishes numbered messages and reads back which queue got which.
//! Expectations are RabbitMQ 3.10's, checked with `RAW_TARGET` (see `common`).

mod common;

use amq_protocol::protocol::queue;
use amq_protocol::types::{AMQPValue, FieldTable};
use common::{drain, lstr as s, open1, route, table, unique, Target};

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.publish(1, "", &q, b"via ''").await;
    c.publish(1, "", &unique("nobody"), b"lost").await;
    assert_eq!(drain(&mut c, &q).await, ["via ''"]);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn direct_routes_one_copy_per_queue() {
    let got = route(
        "direct",
        &[
            &[
                ("black", FieldTable::default()),
                ("green", FieldTable::default()),
            ],
            &[("green", FieldTable::default())],
            &[("orange", FieldTable::default())],
        ],
        &[
            ("black", None),
            ("green", None),
            ("orange", None),
            ("blue", None),
            ("Green", None),
        ],
    )
    .await;
    assert_eq!(got, [vec!["0", "1"], vec!["1"], vec!["2"]]);
}

#[tokio::test]
async fn same_key_bound_twice_delivers_once() {
    let got = route(
        "direct",
        &[&[("k", FieldTable::default()), ("k", FieldTable::default())]],
        &[("k", None)],
    )
    .await;
    assert_eq!(got, [vec!["0"]]);
}

#[tokio::test]
async fn fanout_ignores_the_routing_key() {
    let got = route(
        "fanout",
        &[
            &[("", FieldTable::default())],
            &[("anything", FieldTable::default())],
        ],
        &[("", None), ("x.y", None)],
    )
    .await;
    assert_eq!(got, [vec!["0", "1"], vec!["0", "1"]]);
}

#[tokio::test]
async fn topic_wildcards_match_words() {
    // The tutorial's animals, and the edge cases of '#'.
    let got = route(
        "topic",
        &[
            &[("*.orange.*", FieldTable::default())],
            &[
                ("*.*.rabbit", FieldTable::default()),
                ("lazy.#", FieldTable::default()),
            ],
            &[("#", FieldTable::default())],
            &[("#.end", FieldTable::default())],
        ],
        &[
            ("quick.orange.rabbit", None),      // 0: q0 q1 q2
            ("lazy.orange.elephant", None),     // 1: q0 q1 q2
            ("quick.orange.fox", None),         // 2: q0 q2
            ("lazy.brown.fox", None),           // 3: q1 q2
            ("lazy.pink.rabbit", None),         // 4: q1 (once) q2
            ("quick.brown.fox", None),          // 5: q2
            ("orange", None),                   // 6: q2
            ("quick.orange.male.rabbit", None), // 7: q2
            ("lazy", None),                     // 8: q1 q2
            ("", None),                         // 9: q2
            ("end", None),                      // 10: q2 q3
            ("a.b.end", None),                  // 11: q2 q3
            ("a.end.b", None),                  // 12: q2
        ],
    )
    .await;
    assert_eq!(got[0], ["0", "1", "2"]);
    assert_eq!(got[1], ["0", "1", "3", "4", "8"]);
    assert_eq!(
        got[2],
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
    );
    assert_eq!(got[3], ["10", "11"]);
}

#[tokio::test]
async fn headers_all_and_any() {
    let all = table(&[
        ("x-match", s("all")),
        ("format", s("pdf")),
        ("type", s("report")),
    ]);
    let any = table(&[
        ("x-match", s("any")),
        ("format", s("pdf")),
        ("type", s("log")),
    ]);
    let default_is_all = table(&[("format", s("pdf")), ("type", s("report"))]);
    let got = route(
        "headers",
        &[&[("", all)], &[("", any)], &[("", default_is_all)]],
        &[
            (
                "",
                Some(table(&[("format", s("pdf")), ("type", s("report"))])),
            ),
            ("", Some(table(&[("format", s("pdf"))]))),
            ("", Some(table(&[("type", s("log"))]))),
            ("", Some(table(&[("format", s("zip")), ("type", s("x"))]))),
            ("", None),
            (
                "",
                Some(table(&[
                    ("format", s("pdf")),
                    ("type", s("report")),
                    ("extra", s("ignored")),
                ])),
            ),
        ],
    )
    .await;
    assert_eq!(got[0], ["0", "5"]);
    assert_eq!(got[1], ["0", "1", "2", "5"]);
    assert_eq!(got[2], ["0", "5"]);
}

#[tokio::test]
async fn headers_binding_without_arguments_matches_everything() {
    let got = route(
        "headers",
        &[&[("", FieldTable::default())]],
        &[("", None), ("", Some(table(&[("a", s("b"))])))],
    )
    .await;
    assert_eq!(got[0], ["0", "1"]);
}

#[tokio::test]
async fn headers_void_binding_value_matches_presence() {
    let got = route(
        "headers",
        &[&[("", table(&[("flag", AMQPValue::Void)]))]],
        &[
            ("", Some(table(&[("flag", s("anything"))]))),
            ("", Some(table(&[("flag", AMQPValue::LongInt(3))]))),
            ("", Some(table(&[("other", s("x"))]))),
        ],
    )
    .await;
    assert_eq!(got[0], ["0", "1"]);
}

#[tokio::test]
async fn headers_any_ignores_x_arguments_unless_asked() {
    let any = table(&[("x-match", s("any")), ("x-custom", s("1"))]);
    let any_with_x = table(&[("x-match", s("any-with-x")), ("x-custom", s("1"))]);
    let got = route(
        "headers",
        &[&[("", any)], &[("", any_with_x)]],
        &[("", Some(table(&[("x-custom", s("1"))])))],
    )
    .await;
    assert_eq!(got[0], Vec::<String>::new());
    assert_eq!(got[1], ["0"]);
}

#[tokio::test]
async fn unbind_stops_routing() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("q");
    c.declare_exclusive(1, &q).await;
    c.bind_queue(1, &q, "amq.direct", &q).await;
    c.publish(1, "amq.direct", &q, b"bound").await;
    let unbind = queue::Unbind {
        queue: q.as_str().into(),
        exchange: "amq.direct".into(),
        routing_key: q.as_str().into(),
        ..Default::default()
    };
    c.call(1, unbind).await;
    c.publish(1, "amq.direct", &q, b"unbound").await;
    assert_eq!(drain(&mut c, &q).await, ["bound"]);
    c.close().await;
    t.stop().await;
}

#[tokio::test]
async fn headers_compare_numbers_by_value_whatever_their_width() {
    let got = route(
        "headers",
        &[&[("", table(&[("n", AMQPValue::LongInt(1))]))]],
        &[
            ("", Some(table(&[("n", AMQPValue::LongInt(1))]))),
            ("", Some(table(&[("n", AMQPValue::LongLongInt(1))]))),
            ("", Some(table(&[("n", AMQPValue::ShortShortUInt(1))]))),
            ("", Some(table(&[("n", s("1"))]))),
            ("", Some(table(&[("n", AMQPValue::LongInt(2))]))),
        ],
    )
    .await;
    assert_eq!(got[0], ["0", "1", "2"]);
}

#[tokio::test]
async fn topic_star_matches_exactly_one_word_even_an_empty_one() {
    // "a..b" has an empty middle word; "" has no word at all.
    let got = route(
        "topic",
        &[
            &[("a.*.b", FieldTable::default())],
            &[("*", FieldTable::default())],
        ],
        &[
            ("a.x.b", None),
            ("a..b", None),
            ("a.b", None),
            ("", None),
            ("x", None),
        ],
    )
    .await;
    assert_eq!(got[0], ["0", "1"]);
    assert_eq!(got[1], ["4"]);
}
