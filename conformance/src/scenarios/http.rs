//! RabbitMQ's management HTTP API: the same calls against each broker's
//! management listener, with status codes, field names and the values that do
//! not depend on timing (RabbitMQ's counters lag by its statistics interval,
//! so message counts are read through `/get`, not from a queue's fields).

use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::driver::{Fail, R};

/// True (with a note) when the target has no management URL: `--target`
/// names only an AMQP URL.
fn skipped(cx: &Ctx) -> bool {
    if cx.url().management.is_some() {
        return false;
    }
    cx.note("skipped: no management URL for this broker");
    true
}

/// One HTTP call to the target's management API, logged in with the AMQP
/// URL's credentials: `(status, body)`, the body `null` when empty.
async fn call(cx: &Ctx, method: &str, path: &str, body: Option<Value>) -> R<(u16, Value)> {
    let base = cx
        .url()
        .management
        .clone()
        .ok_or_else(|| Fail::msg("no management URL for this broker"))?;
    let method =
        reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| Fail::msg(e.to_string()))?;
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .basic_auth(&cx.url().user, Some(&cx.url().password));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Fail::msg(format!("{path}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| Fail::msg(e.to_string()))?;
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

/// Calls, and puts the status and body in the transcript.
async fn logged(cx: &Ctx, method: &str, path: &str, body: Option<Value>) -> R<(u16, Value)> {
    let (status, value) = call(cx, method, path, body).await?;
    cx.note(format!("{method} {} -> {status} {value}", strip(cx, path)));
    Ok((status, value))
}

/// The path as the transcript shows it: without the run's unique suffix.
fn strip(cx: &Ctx, s: &str) -> String {
    s.replace(&cx.name(""), "")
}

/// Notes which of `keys` the object has, and their values.
fn note_fields(cx: &Ctx, what: &str, v: &Value, keys: &[&str]) {
    let shown: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{k}={}",
                v.get(*k).map_or("(absent)".to_owned(), Value::to_string)
            )
        })
        .collect();
    cx.note(strip(cx, &format!("{what}: {}", shown.join(" "))));
}

pub async fn queue_lifecycle(cx: Ctx) -> R {
    if skipped(&cx) {
        return Ok(());
    }
    let q = cx.name("hq");
    let path = format!("/api/queues/%2F/{q}");
    logged(
        &cx,
        "PUT",
        &path,
        Some(json!({"durable": false, "arguments": {"x-max-length": 10}})),
    )
    .await?;
    logged(
        &cx,
        "PUT",
        &path,
        Some(json!({"durable": false, "arguments": {"x-max-length": 10}})),
    )
    .await?;
    logged(&cx, "PUT", &path, Some(json!({"durable": true}))).await?;
    let (_, got) = call(&cx, "GET", &path, None).await?;
    note_fields(
        &cx,
        "queue",
        &got,
        &[
            "name",
            "vhost",
            "durable",
            "auto_delete",
            "exclusive",
            "arguments",
            "type",
        ],
    );
    let publish = json!({"properties": {"content_type": "text/plain", "headers": {"n": 1}},
                         "routing_key": q, "payload": "one", "payload_encoding": "string"});
    let (_, routed) = call(
        &cx,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        Some(publish),
    )
    .await?;
    cx.note(format!("publish -> {routed}"));
    let get = json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"});
    logged(&cx, "POST", &format!("{path}/get"), Some(get.clone())).await?;
    // Requeued by the first get: the second sees it redelivered.
    logged(&cx, "POST", &format!("{path}/get"), Some(get)).await?;
    logged(&cx, "DELETE", &format!("{path}?if-empty=true"), None).await?;
    logged(&cx, "DELETE", &format!("{path}/contents"), None).await?;
    let get = json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"});
    logged(&cx, "POST", &format!("{path}/get"), Some(get)).await?;
    logged(&cx, "DELETE", &path, None).await?;
    logged(&cx, "DELETE", &path, None).await?;
    logged(&cx, "GET", &path, None).await?;
    Ok(())
}

pub async fn exchanges_bindings_and_publish(cx: Ctx) -> R {
    if skipped(&cx) {
        return Ok(());
    }
    let (x, q) = (cx.name("hx"), cx.name("hbq"));
    let xp = format!("/api/exchanges/%2F/{x}");
    let qp = format!("/api/queues/%2F/{q}");
    logged(
        &cx,
        "PUT",
        &xp,
        Some(json!({"type": "topic", "durable": false})),
    )
    .await?;
    logged(
        &cx,
        "PUT",
        &xp,
        Some(json!({"type": "topic", "durable": false})),
    )
    .await?;
    logged(
        &cx,
        "PUT",
        &format!("{xp}2"),
        Some(json!({"type": "nonsense"})),
    )
    .await?;
    let (_, got) = call(&cx, "GET", &xp, None).await?;
    note_fields(
        &cx,
        "exchange",
        &got,
        &[
            "name",
            "vhost",
            "type",
            "durable",
            "auto_delete",
            "internal",
            "arguments",
        ],
    );
    call(&cx, "PUT", &qp, Some(json!({}))).await?;
    let between = format!("/api/bindings/%2F/e/{x}/q/{q}");
    logged(&cx, "POST", &between, Some(json!({"routing_key": "a.*"}))).await?;
    let (_, list) = logged(&cx, "GET", &between, None).await?;
    let key = list
        .get(0)
        .and_then(|b| b["properties_key"].as_str())
        .unwrap_or_default()
        .to_owned();
    let publish = |key: &str| json!({"properties": {}, "routing_key": key, "payload": "p", "payload_encoding": "string"});
    logged(&cx, "POST", &format!("{xp}/publish"), Some(publish("a.b"))).await?;
    logged(&cx, "POST", &format!("{xp}/publish"), Some(publish("b.b"))).await?;
    logged(
        &cx,
        "POST",
        "/api/exchanges/%2F/no-such-exchange/publish",
        Some(publish("k")),
    )
    .await?;
    logged(&cx, "DELETE", &format!("{between}/{key}"), None).await?;
    logged(&cx, "DELETE", &format!("{between}/{key}"), None).await?;
    logged(&cx, "DELETE", "/api/exchanges/%2F/amq.direct", None).await?;
    logged(&cx, "DELETE", &qp, None).await?;
    logged(&cx, "DELETE", &xp, None).await?;
    logged(&cx, "DELETE", &xp, None).await?;
    Ok(())
}

pub async fn vhosts_and_identity(cx: Ctx) -> R {
    if skipped(&cx) {
        return Ok(());
    }
    let v = cx.name("hv");
    let path = format!("/api/vhosts/{v}");
    logged(&cx, "PUT", &path, None).await?;
    logged(&cx, "PUT", &path, None).await?;
    let (_, got) = call(&cx, "GET", &path, None).await?;
    note_fields(&cx, "vhost", &got, &["name", "tracing"]);
    logged(&cx, "GET", &format!("/api/aliveness-test/{v}"), None).await?;
    logged(&cx, "DELETE", &path, None).await?;
    logged(&cx, "DELETE", &path, None).await?;
    logged(&cx, "GET", &format!("/api/aliveness-test/{v}"), None).await?;
    logged(&cx, "GET", "/api/whoami", None).await?;
    let (_, overview) = call(&cx, "GET", "/api/overview", None).await?;
    note_fields(&cx, "overview", &overview, &["product_name"]);
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    cx.note(format!(
        "object_totals keys {:?}",
        keys(&overview["object_totals"])
    ));
    logged(&cx, "GET", "/api/health/checks/alarms", None).await?;
    logged(&cx, "GET", "/api/health/checks/virtual-hosts", None).await?;
    logged(
        &cx,
        "GET",
        "/api/health/checks/port-listener/notaport",
        None,
    )
    .await?;
    Ok(())
}

pub async fn errors_in_rabbitmq_shape(cx: Ctx) -> R {
    if skipped(&cx) {
        return Ok(());
    }
    logged(&cx, "GET", "/api/queues/no-such-vhost", None).await?;
    logged(&cx, "GET", "/api/exchanges/%2F/no-such-exchange", None).await?;
    logged(&cx, "GET", "/api/no/such/path", None).await?;
    logged(&cx, "PUT", "/api/queues/no-such-vhost/q", Some(json!({}))).await?;
    logged(
        &cx,
        "PUT",
        &format!("/api/queues/%2F/{}", cx.name("hbad")),
        Some(json!({"durable": "x"})),
    )
    .await?;
    logged(&cx, "PUT", "/api/queues/%2F/amq.reserved", Some(json!({}))).await?;
    let q = cx.name("hget");
    call(&cx, "PUT", &format!("/api/queues/%2F/{q}"), Some(json!({}))).await?;
    logged(
        &cx,
        "POST",
        &format!("/api/queues/%2F/{q}/get"),
        Some(json!({"count": 1})),
    )
    .await?;
    logged(&cx, "DELETE", &format!("/api/queues/%2F/{q}"), None).await?;
    // Malformed JSON, and no or wrong credentials.
    let base = cx.url().management.clone().unwrap_or_default();
    let http = reqwest::Client::new();
    let url = format!("{base}/api/queues/%2F/{}", cx.name("hjson"));
    let resp = http
        .put(&url)
        .basic_auth(&cx.url().user, Some(&cx.url().password))
        .body("{not json")
        .send()
        .await
        .map_err(|e| Fail::msg(e.to_string()))?;
    cx.note(format!(
        "malformed JSON -> {} {}",
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default()
    ));
    let resp = http
        .get(format!("{base}/api/overview"))
        .send()
        .await
        .map_err(|e| Fail::msg(e.to_string()))?;
    cx.note(format!(
        "no credentials -> {} {:?}",
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default()
    ));
    let resp = http
        .get(format!("{base}/api/overview"))
        .basic_auth(&cx.url().user, Some("wrong password"))
        .send()
        .await
        .map_err(|e| Fail::msg(e.to_string()))?;
    cx.note(format!(
        "wrong password -> {} {}",
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default()
    ));
    Ok(())
}
