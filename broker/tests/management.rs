//! The management listener over real HTTP: Warren's `/api/warren/` endpoints
//! (docs/control-plane.md) and RabbitMQ's management API subset, including the
//! bad input each must refuse in RabbitMQ's shape without harm to the broker.

mod common;

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_broker::Broker;

/// A broker with a management listener, and an HTTP client logged in to it.
struct Api {
    broker: Broker,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        Self::with(Broker::builder()).await
    }

    async fn with(builder: warren_broker::BrokerBuilder) -> Api {
        let broker = builder
            .management("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let base = broker.management_url().expect("management listener");
        Api {
            broker,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth("guest", Some("guest"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn amqp(&self) -> Connection {
        Connection::connect(&self.broker.url(), ConnectionProperties::default())
            .await
            .unwrap()
    }
}

fn not_found() -> Value {
    json!({"error": "Object Not Found", "reason": "Not Found"})
}

#[tokio::test]
async fn every_api_call_needs_the_brokers_credentials() {
    let api = Api::start().await;
    let url = format!("{}/api/warren/snapshot", api.base);
    let none = api.http.get(&url).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.headers().contains_key("www-authenticate"));
    let wrong = api
        .http
        .get(&url)
        .basic_auth("guest", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "not_authorized", "reason": "Login failed"})
    );
    let (status, who) = api.get("/api/whoami").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["name"], "guest");
    // The page needs no login.
    let page = api.http.get(format!("{}/", api.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn seeded_messages_show_in_the_snapshot_and_the_queue_endpoints() {
    let api = Api::start().await;
    let conn = api.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "tasks".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (status, _) = api
        .post(
            "/api/warren/seed",
            json!({"queue": "tasks", "body": "resize 1.png",
                   "properties": {"delivery_mode": 2, "headers": {"try": 1}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .post(
            "/api/warren/seed",
            json!({"queue": "tasks", "body": "/w==", "body_encoding": "base64"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, q) = api.get("/api/warren/queues/%2F/tasks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["messages"], 2);
    assert_eq!(q["ready"][0]["body"], "resize 1.png");
    assert_eq!(q["ready"][0]["properties"]["delivery_mode"], 2);
    assert_eq!(q["ready"][0]["properties"]["headers"]["try"], 1);
    assert_eq!(q["ready"][1]["body"], "/w==");
    assert_eq!(q["ready"][1]["body_encoding"], "base64");

    let (_, snap) = api.get("/api/warren/snapshot").await;
    assert_eq!(snap["vhosts"], json!(["/"]));
    assert_eq!(snap["queues"][0]["name"], "tasks");
    let c = &snap["connections"][0];
    assert_eq!(c["user"], "guest");
    assert_eq!(c["channels"], json!([1]));
    assert!(c["name"].as_str().unwrap().contains(" -> "));

    let (status, q) = api.get("/api/queues/%2F/tasks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (q["messages"].clone(), q["messages_ready"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(q["type"], "classic");
    assert_eq!(
        api.get("/api/queues/%2F/none").await,
        (StatusCode::NOT_FOUND, not_found())
    );
    assert_eq!(
        api.get("/api/queues/nohost").await,
        (StatusCode::NOT_FOUND, not_found())
    );
    let (status, _) = api
        .post("/api/warren/seed", json!({"queue": "none", "body": "x"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_fault_rule_nacks_the_third_confirm_and_counts_its_firing() {
    let api = Api::start().await;
    let (status, rule) = api
        .post(
            "/api/warren/faults",
            json!({"on": "publish_routed_to", "queue": "orders", "nth": 3,
                   "action": {"type": "nack_confirm"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(rule["id"], 1);
    assert_eq!(rule["fired"], 0);
    let conn = api.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "orders".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut acked = Vec::new();
    for i in 0..4 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "orders".into(),
                BasicPublishOptions::default(),
                format!("order {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        acked.push(confirm.is_ack());
    }
    assert_eq!(acked, [true, true, false, true]);
    let (_, rules) = api.get("/api/warren/faults").await;
    assert_eq!(rules[0]["fired"], 1);
    assert_eq!(rules[0]["on"], "publish_routed_to");
    assert_eq!(
        api.call(Method::DELETE, "/api/warren/faults/1", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, "/api/warren/faults/1", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get("/api/warren/faults").await.1, json!([]));
}

#[tokio::test]
async fn the_virtual_clock_moves_over_http_and_a_real_one_refuses() {
    let api = Api::with(Broker::builder().virtual_clock()).await;
    let conn = api.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-message-ttl".into(),
        lapin::types::AMQPValue::LongInt(60_000),
    );
    ch.queue_declare("ttl".into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    api.post(
        "/api/warren/seed",
        json!({"queue": "ttl", "body": "soon gone"}),
    )
    .await;
    let (status, clock) = api
        .post("/api/warren/clock/advance", json!({"ms": 60_001}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(clock, json!({"virtual": true, "now_ms": 60_001}));
    let (status, q) = api
        .post(
            "/api/warren/wait/queue/%2F/ttl",
            json!({"empty": true, "timeout_ms": 5000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["messages"], 0);

    let real = Api::start().await;
    let (status, body) = real
        .post("/api/warren/clock/advance", json!({"ms": 1}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "conflict");
}

#[tokio::test]
async fn a_wait_that_is_not_met_times_out_with_the_queue_as_it_was() {
    let api = Api::start().await;
    let conn = api.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (status, body) = api
        .post(
            "/api/warren/wait/queue/%2F/q",
            json!({"messages": 1, "timeout_ms": 20}),
        )
        .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body["error"], "timeout");
    assert_eq!(body["queue"]["messages"], 0);
    let (status, body) = api
        .post("/api/warren/wait/idle", json!({"timeout_ms": 5000}))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"idle": true})));
}

#[tokio::test]
async fn restart_and_crash_over_http_keep_durable_queues_and_end_connections() {
    let api = Api::start().await;
    let conn = api.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("kept".into(), durable, FieldTable::default())
        .await
        .unwrap();
    ch.queue_declare(
        "gone".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (status, _) = api.post("/api/warren/restart", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!conn.status().connected());
    let (_, snap) = api.get("/api/warren/snapshot").await;
    let names: Vec<&str> = snap["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);
    let (status, _) = api.post("/api/warren/crash", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/api/warren/queues/%2F/kept").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_trace_is_switched_on_and_read_as_json_and_text() {
    let api = Api::start().await;
    assert_eq!(
        api.post("/api/warren/trace", json!({"on": true})).await.0,
        StatusCode::NO_CONTENT
    );
    let conn = api.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "traced".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (_, entries) = api.get("/api/warren/trace").await;
    let methods: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert!(methods.contains(&"queue.declare"), "{methods:?}");
    assert!(methods.contains(&"queue.declare-ok"), "{methods:?}");
    let (_, text) = api.get("/api/warren/trace?format=text").await;
    assert!(text.as_str().unwrap().contains("C->S"));
}

#[tokio::test]
async fn bad_input_gets_rabbitmq_shaped_errors_and_the_broker_carries_on() {
    let api = Api::start().await;
    let url = format!("{}/api/warren/faults", api.base);
    let malformed = api
        .http
        .post(&url)
        .basic_auth("guest", Some("guest"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body, json!({"error": "bad_request", "reason": "not_json"}));

    let huge = api
        .http
        .post(&url)
        .basic_auth("guest", Some("guest"))
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let (status, body) = api
        .post("/api/warren/faults", json!({"on": "sometimes"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    assert_eq!(
        api.get("/api/no/such/path").await,
        (StatusCode::NOT_FOUND, not_found())
    );
    assert_eq!(
        api.call(Method::PATCH, "/api/warren/faults", None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Names with a slash or outside ASCII are percent-encoded in the path.
    assert_eq!(
        api.get("/api/warren/queues/%2F/caf%C3%A9%2Fq").await,
        (StatusCode::NOT_FOUND, not_found())
    );
    assert_eq!(
        api.get("/api/aliveness-test/%2F").await.1,
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn the_management_listener_stops_with_the_broker() {
    let api = Api::start().await;
    let base = api.base.clone();
    api.broker.shutdown().await;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::Client::new()
            .get(format!("{base}/api/overview"))
            .send(),
    )
    .await
    .unwrap();
    assert!(refused.is_err());
}

#[tokio::test]
async fn rabbitmq_paths_declare_publish_get_bind_and_delete() {
    let api = Api::start().await;
    let put = |path: &'static str, body: Value| api.call(Method::PUT, path, Some(body));
    assert_eq!(
        put("/api/queues/%2F/caf%C3%A9%2Fq", json!({"durable": true}))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        put("/api/queues/%2F/caf%C3%A9%2Fq", json!({"durable": true}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = put("/api/queues/%2F/caf%C3%A9%2Fq", json!({"durable": false})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("inequivalent arg 'durable'"),
        "{body}"
    );
    assert!(api.broker.try_queue("café/q").is_some_and(|q| q.durable));
    assert_eq!(
        put("/api/queues/nohost/q", json!({})).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "reason": "vhost_not_found"})
        )
    );
    assert_eq!(
        put("/api/exchanges/%2F/fan", json!({"type": "fanout"}))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, _) = api
        .post(
            "/api/bindings/%2F/e/fan/q/caf%C3%A9%2Fq",
            json!({"routing_key": "k k"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let publish = json!({"properties": {"delivery_mode": 2}, "routing_key": "any",
                         "payload": "hi", "payload_encoding": "string"});
    let (status, routed) = api
        .post("/api/exchanges/%2F/fan/publish", publish.clone())
        .await;
    assert_eq!((status, routed), (StatusCode::OK, json!({"routed": true})));
    let (_, unrouted) = api
        .post("/api/exchanges/%2F/amq.direct/publish", publish)
        .await;
    assert_eq!(unrouted, json!({"routed": false}));

    let get = json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"});
    let (status, got) = api
        .post("/api/queues/%2F/caf%C3%A9%2Fq/get", get.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got[0]["payload"], "hi");
    assert_eq!(got[0]["properties"]["delivery_mode"], 2);
    assert_eq!(got[0]["message_count"], 0);
    // Requeued: still there, now redelivered.
    let (_, again) = api.post("/api/queues/%2F/caf%C3%A9%2Fq/get", get).await;
    assert_eq!(again[0]["redelivered"], true);

    let (status, body) = api
        .call(
            Method::DELETE,
            "/api/queues/%2F/caf%C3%A9%2Fq?if-empty=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["reason"], "queue 'café/q' in vhost '/' not empty");
    assert_eq!(
        api.call(
            Method::DELETE,
            "/api/queues/%2F/caf%C3%A9%2Fq/contents",
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    api.broker.queue("café/q").assert_empty();

    let (_, bindings) = api.get("/api/bindings/%2F/e/fan/q/caf%C3%A9%2Fq").await;
    let key = bindings[0]["properties_key"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    assert_eq!(key, "k%2Bk");
    let path = format!("/api/bindings/%2F/e/fan/q/caf%C3%A9%2Fq/{key}");
    assert_eq!(
        api.call(Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::DELETE, "/api/exchanges/%2F/amq.direct", None)
            .await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "not_authorised", "reason": "Access refused."})
        )
    );
}

#[tokio::test]
async fn vhosts_come_and_go_at_runtime_and_definitions_round_trip() {
    let api = Api::start().await;
    assert_eq!(
        api.call(Method::PUT, "/api/vhosts/staging", None).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.call(Method::PUT, "/api/vhosts/staging", None).await.0,
        StatusCode::NO_CONTENT
    );
    let url = api.broker.url().replace("%2f", "staging");
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("orders".into(), durable, FieldTable::default())
        .await
        .unwrap();
    let (_, defs) = api.get("/api/definitions").await;
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["vhost"] == "staging"));

    assert_eq!(
        api.call(Method::DELETE, "/api/vhosts/staging", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, "/api/vhosts/staging", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    api.broker
        .wait_for(Duration::from_secs(5), |s| s.connections.is_empty())
        .await
        .expect("its connections are closed");
    assert!(api.broker.queue_in("staging", "orders").is_none());

    let (status, _) = api.post("/api/definitions", defs).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(api
        .broker
        .queue_in("staging", "orders")
        .is_some_and(|q| q.durable));
}

#[tokio::test]
async fn deleting_a_connection_closes_it_with_320_and_the_x_reason_text() {
    let api = Api::start().await;
    let mut raw = common::open1(&common::Target::at(&api.broker.url())).await;
    let (_, list) = api.get("/api/connections").await;
    let name = list[0]["name"].as_str().unwrap().to_owned();
    assert!(list[0]["client_properties"].is_object());
    let path = name.replace(' ', "%20").replace('>', "%3E");
    let resp = api
        .http
        .delete(format!("{}/api/connections/{path}", api.base))
        .basic_auth("guest", Some("guest"))
        .header("X-Reason", "maintenance window")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    raw.expect_connection_close(320, (0, 0), "CONNECTION_FORCED - maintenance window")
        .await;
}
