//! Warren's own endpoints, `/api/warren/…`: the Rust test-double API (snapshot,
//! waits, faults, clock, restart, crash, seeding, the trace) for any language.
//! docs/control-plane.md is their contract.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{json as j, ApiError, App, JsonBody};
use crate::commands::Command;
use crate::faults::{Action, ArmedFault, Fault, Trigger};
use crate::inspect::QueueSnapshot;
use crate::shared::Shared;
use crate::trace::TraceEntry;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/warren/snapshot", get(snapshot))
        .route("/warren/queues/{vhost}/{name}", get(queue))
        .route("/warren/wait/idle", post(wait_idle))
        .route("/warren/wait/queue/{vhost}/{name}", post(wait_queue))
        .route(
            "/warren/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/warren/faults/{id}", delete(remove_fault))
        .route("/warren/connections/{id}/close", post(close_connection))
        .route(
            "/warren/connections/{id}/channels/{n}/close",
            post(close_channel),
        )
        .route("/warren/connections/{id}/drop", post(drop_connection))
        .route("/warren/connections/{id}/cut", post(cut_connection))
        .route("/warren/consumers/cancel", post(cancel_consumer))
        .route("/warren/memory-alarm", post(memory_alarm))
        .route("/warren/clock", get(clock))
        .route("/warren/clock/advance", post(advance))
        .route("/warren/restart", post(restart))
        .route("/warren/crash", post(crash))
        .route("/warren/storage/stall", post(stall_storage))
        .route("/warren/seed", post(seed))
        .route("/warren/trace", get(trace).post(set_trace))
        .route("/warren/trace.html", get(trace_html))
        .route("/warren/trace.mmd", get(trace_mermaid))
}

// ---- snapshot ------------------------------------------------------------------

#[derive(Deserialize)]
struct VhostFilter {
    vhost: Option<String>,
}

async fn snapshot(State(app): State<App>, Query(f): Query<VhostFilter>) -> Json<Value> {
    Json(snapshot_json(&app.shared, f.vhost.as_deref()))
}

/// The snapshot in the contract's shape, of one vhost or all: for the API and
/// for the trace file (`Broker::trace_html`).
pub fn snapshot_json(s: &Shared, vhost: Option<&str>) -> Value {
    let snap = s.snapshot();
    let only = vhost;
    let keep = |v: &str| only.is_none_or(|x| x == v);
    let vhosts: Vec<String> = s.vhosts.names().into_iter().filter(|v| keep(v)).collect();
    let connections: Vec<Value> = s
        .connection_infos()
        .iter()
        .filter_map(|info| {
            let c = snap.connections.iter().find(|c| c.id == info.id)?;
            let vhost = c.vhost.as_deref();
            if only.is_some() && vhost.is_none_or(|v| !keep(v)) {
                return None;
            }
            let client = info.client.get();
            Some(json!({
                "id": c.id,
                "name": connection_name(info),
                "peer": c.peer,
                "user": client.map(|c| c.user.as_str()),
                "vhost": vhost,
                "channels": c.channels,
                "client_properties": client.map_or(json!({}), |c| j::table(&c.properties)),
            }))
        })
        .collect();
    json!({
        "clock": clock_json(s),
        "vhosts": vhosts,
        "queues": snap.queues.iter().filter(|q| keep(&q.vhost)).map(queue_json).collect::<Vec<_>>(),
        "exchanges": snap.exchanges.iter().filter(|e| keep(&e.vhost)).map(|e| json!({
            "vhost": e.vhost, "name": e.name, "type": e.kind, "durable": e.durable,
            "auto_delete": e.auto_delete, "internal": e.internal,
            "arguments": j::table(&e.arguments),
        })).collect::<Vec<_>>(),
        "bindings": snap.bindings.iter().filter(|b| keep(&b.vhost)).map(|b| json!({
            "vhost": b.vhost, "source": b.source, "destination": b.destination,
            "destination_type": if b.to_exchange { "exchange" } else { "queue" },
            "routing_key": b.routing_key, "arguments": j::table(&b.arguments),
        })).collect::<Vec<_>>(),
        "connections": connections,
        "faults": s.rules.list().iter().map(fault_json).collect::<Vec<_>>(),
    })
}

/// RabbitMQ's name for a connection: `peer -> listener`.
pub fn connection_name(info: &crate::commands::ConnInfo) -> String {
    match info.local.get() {
        Some(local) => format!("{} -> {local}", info.peer),
        None => info.peer.clone(),
    }
}

/// The queue's type as RabbitMQ names it.
pub fn queue_type(q: &QueueSnapshot) -> String {
    match q.arguments.inner().get("x-queue-type") {
        Some(amq_protocol::types::AMQPValue::LongString(s)) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        Some(amq_protocol::types::AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "classic".to_owned(),
    }
}

fn queue_json(q: &QueueSnapshot) -> Value {
    let unacked: Vec<Value> = q
        .unacked
        .iter()
        .map(|u| {
            let mut m = j::message(&u.message);
            m.insert("connection".into(), json!(u.connection));
            m.insert("channel".into(), json!(u.channel));
            m.insert("delivery_tag".into(), json!(u.delivery_tag));
            m.insert("consumer_tag".into(), json!(u.consumer_tag));
            Value::Object(m)
        })
        .collect();
    json!({
        "vhost": q.vhost, "name": q.name, "type": queue_type(q),
        "durable": q.durable, "exclusive": q.exclusive_owner.is_some(),
        "auto_delete": q.auto_delete, "arguments": j::table(&q.arguments),
        "messages": q.messages.len() + q.unacked.len(),
        "messages_ready": q.messages.len(),
        "messages_unacknowledged": q.unacked.len(),
        "consumers": q.consumers.len(),
        "ready": q.messages.iter().map(|m| Value::Object(j::message(m))).collect::<Vec<_>>(),
        "unacked": unacked,
        "consumer_details": q.consumers.iter().map(|c| json!({
            "consumer_tag": c.tag, "connection": c.connection, "channel": c.channel,
            "ack_required": !c.no_ack, "exclusive": c.exclusive,
            "prefetch_count": c.prefetch, "unacked": c.unacked, "priority": c.priority,
        })).collect::<Vec<_>>(),
    })
}

fn find_queue(s: &Shared, vhost: &str, name: &str) -> Result<Option<QueueSnapshot>, ApiError> {
    let v = s.vhosts.get(vhost).ok_or_else(ApiError::not_found)?;
    let q = v.lock().queue_snapshot(name);
    Ok(q)
}

async fn queue(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let q = find_queue(&app.shared, &vhost, &name)?.ok_or_else(ApiError::not_found)?;
    Ok(Json(queue_json(&q)))
}

// ---- waits -----------------------------------------------------------------------

/// The longest a wait may be asked to take; longer asks are cut to this.
const MAX_WAIT: Duration = Duration::from_secs(600);

fn wait_time(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(5000)).min(MAX_WAIT)
}

fn timed_out(reason: &str, extra: Option<(&str, Value)>) -> ApiError {
    let mut e = ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", reason);
    if let (Some((k, v)), Value::Object(m)) = (extra, &mut e.body) {
        m.insert(k.into(), v);
    }
    e
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitIdle {
    timeout_ms: Option<u64>,
}

async fn wait_idle(State(app): State<App>, body: JsonBody) -> Result<Json<Value>, ApiError> {
    let w: WaitIdle = body.parse()?;
    let mut stop = app.stop.clone();
    tokio::select! {
        r = tokio::time::timeout(wait_time(w.timeout_ms), app.shared.wait_until_idle()) => match r {
            Ok(()) => Ok(Json(json!({"idle": true}))),
            Err(_) => Err(timed_out("the broker did not become idle in time", None)),
        },
        _ = stop.wait_for(|s| *s) => Err(timed_out("the broker is shutting down", None)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQueue {
    timeout_ms: Option<u64>,
    messages: Option<usize>,
    empty: Option<bool>,
    no_unacked: Option<bool>,
    consumers: Option<usize>,
}

impl WaitQueue {
    fn holds(&self, q: &QueueSnapshot) -> bool {
        self.messages
            .is_none_or(|n| q.messages.len() + q.unacked.len() == n)
            && self
                .empty
                .is_none_or(|e| e == (q.messages.is_empty() && q.unacked.is_empty()))
            && self.no_unacked.is_none_or(|e| e == q.unacked.is_empty())
            && self.consumers.is_none_or(|n| q.consumers.len() == n)
    }
}

async fn wait_queue(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let w: WaitQueue = body.parse()?;
    let deadline = tokio::time::Instant::now() + wait_time(w.timeout_ms);
    loop {
        let q = find_queue(&app.shared, &vhost, &name)?;
        if let Some(q) = q.as_ref().filter(|q| w.holds(q)) {
            return Ok(Json(queue_json(q)));
        }
        if tokio::time::Instant::now() >= deadline || *app.stop.borrow() {
            let shown = q.as_ref().map_or(Value::Null, queue_json);
            return Err(timed_out(
                &format!("queue '{name}' in vhost '{vhost}' did not reach the state asked for"),
                Some(("queue", shown)),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---- faults ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    on: String,
    exchange: Option<String>,
    queue: Option<String>,
    channel: Option<u16>,
    connection: Option<u64>,
    nth: Option<u64>,
    times: Option<u64>,
    action: ActionRequest,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ActionRequest {
    CloseChannel { code: u16, text: String },
    CloseConnection { code: u16, text: String },
    NackConfirm,
    WithholdConfirm,
}

impl FaultRequest {
    fn fault(self) -> Result<Fault, ApiError> {
        let need = |what: Option<String>, field: &str| {
            what.ok_or_else(|| {
                ApiError::bad_request(format!("\"on\": \"{}\" needs \"{field}\"", self.on))
            })
        };
        let mut f = match self.on.as_str() {
            "publish_to" => Fault::on_publish_to(&need(self.exchange.clone(), "exchange")?),
            "publish_routed_to" => Fault::on_publish_routed_to(&need(self.queue.clone(), "queue")?),
            "any_publish" => Fault::on_any_publish(),
            "ack" => Fault::on_ack(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown \"on\": {other:?} (publish_to, publish_routed_to, any_publish, ack)"
                )))
            }
        };
        if let Some(c) = self.channel {
            f = f.on_channel(c);
        }
        if let Some(c) = self.connection {
            f = f.on_connection(c);
        }
        if let Some(n) = self.nth {
            f = f.nth(n);
        }
        if let Some(n) = self.times {
            f = f.times(n);
        }
        Ok(match self.action {
            ActionRequest::CloseChannel { code, text } => f.close_channel(code, &text),
            ActionRequest::CloseConnection { code, text } => f.close_connection(code, &text),
            ActionRequest::NackConfirm => f.nack_confirm(),
            ActionRequest::WithholdConfirm => f.withhold_confirm(),
        })
    }
}

fn fault_json(a: &ArmedFault) -> Value {
    let f = &a.fault;
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    let on = match (f.trigger, &f.exchange, &f.queue) {
        (Trigger::Settle, _, _) => "ack",
        (Trigger::Publish, Some(x), _) => {
            m.insert("exchange".into(), json!(x));
            "publish_to"
        }
        (Trigger::Publish, None, Some(q)) => {
            m.insert("queue".into(), json!(q));
            "publish_routed_to"
        }
        (Trigger::Publish, None, None) => "any_publish",
    };
    m.insert("on".into(), json!(on));
    if let Some(c) = f.channel {
        m.insert("channel".into(), json!(c));
    }
    if let Some(c) = f.connection {
        m.insert("connection".into(), json!(c));
    }
    // `nth(n)` is "from n, once": shown as `nth` alone.
    if f.from > 1 {
        m.insert("nth".into(), json!(f.from));
    }
    if let Some(t) = f.times.filter(|t| f.from == 1 || *t != 1) {
        m.insert("times".into(), json!(t));
    }
    let action = match &f.action {
        Some(Action::CloseChannel { code, text }) => {
            json!({"type": "close_channel", "code": code, "text": text})
        }
        Some(Action::CloseConnection { code, text }) => {
            json!({"type": "close_connection", "code": code, "text": text})
        }
        Some(Action::NackConfirm) => json!({"type": "nack_confirm"}),
        Some(Action::WithholdConfirm) => json!({"type": "withhold_confirm"}),
        None => Value::Null,
    };
    m.insert("action".into(), action);
    m.insert("fired".into(), json!(a.fired));
    Value::Object(m)
}

async fn add_fault(State(app): State<App>, body: JsonBody) -> Result<Response, ApiError> {
    let fault = body.parse::<FaultRequest>()?.fault()?;
    let id = app.shared.rules.add(fault);
    let armed = app.shared.rules.list().into_iter().find(|a| a.id == id);
    let shown = armed.as_ref().map_or(Value::Null, fault_json);
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

async fn list_faults(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(
        app.shared.rules.list().iter().map(fault_json).collect(),
    ))
}

async fn remove_fault(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::not_found())?;
    if app.shared.rules.remove(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

async fn clear_faults(State(app): State<App>) -> StatusCode {
    app.shared.rules.clear();
    StatusCode::NO_CONTENT
}

// ---- connections, channels, consumers ---------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    code: Option<u16>,
    text: Option<String>,
}

fn id_of(s: &str) -> Result<u64, ApiError> {
    s.parse().map_err(|_| ApiError::not_found())
}

fn done(found: bool) -> Result<StatusCode, ApiError> {
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

async fn close_connection(
    State(app): State<App>,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<StatusCode, ApiError> {
    let c: CloseRequest = body.parse()?;
    done(
        app.shared.command(
            id_of(&id)?,
            Command::CloseConnection {
                code: c.code.unwrap_or(320),
                text: c
                    .text
                    .unwrap_or_else(|| "broker forced connection closure".into()),
            },
        ),
    )
}

async fn close_channel(
    State(app): State<App>,
    Path((id, n)): Path<(String, String)>,
    body: JsonBody,
) -> Result<StatusCode, ApiError> {
    let c: CloseRequest = body.parse()?;
    let id = id_of(&id)?;
    let channel: u16 = n.parse().map_err(|_| ApiError::not_found())?;
    let open = app
        .shared
        .snapshot()
        .connections
        .iter()
        .any(|c| c.id == id && c.channels.contains(&channel));
    if !open {
        return Err(ApiError::not_found());
    }
    done(app.shared.command(
        id,
        Command::CloseChannel {
            channel,
            code: c.code.unwrap_or(406),
            text: c.text.unwrap_or_else(|| "closed by the test".into()),
        },
    ))
}

async fn drop_connection(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    done(app.shared.command(id_of(&id)?, Command::Drop))
}

async fn cut_connection(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    done(app.shared.command(id_of(&id)?, Command::CutMidFrame))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default = "default_vhost")]
    vhost: String,
    queue: String,
    consumer_tag: String,
}

fn default_vhost() -> String {
    "/".into()
}

async fn cancel_consumer(State(app): State<App>, body: JsonBody) -> Result<StatusCode, ApiError> {
    let c: CancelRequest = body.parse()?;
    let v = app
        .shared
        .vhosts
        .get(&c.vhost)
        .ok_or_else(ApiError::not_found)?;
    let found = v.lock().cancel_consumer(&c.queue, &c.consumer_tag);
    done(found)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnOff {
    on: bool,
}

async fn memory_alarm(State(app): State<App>, body: JsonBody) -> Result<StatusCode, ApiError> {
    let o: OnOff = body.parse()?;
    app.shared.gauge.force(o.on);
    Ok(StatusCode::NO_CONTENT)
}

// ---- clock, restart, crash, storage -------------------------------------------------

fn clock_json(s: &Shared) -> Value {
    json!({"virtual": s.clock.is_virtual(), "now_ms": s.clock.now_ms()})
}

async fn clock(State(app): State<App>) -> Json<Value> {
    Json(clock_json(&app.shared))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    ms: u64,
}

async fn advance(State(app): State<App>, body: JsonBody) -> Result<Json<Value>, ApiError> {
    let a: Advance = body.parse()?;
    if !app.shared.clock.is_virtual() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the broker does not run a virtual clock",
        ));
    }
    app.shared.advance(Duration::from_millis(a.ms));
    Ok(Json(clock_json(&app.shared)))
}

fn storage_error(e: std::io::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        format!("cannot recover the data directory: {e}"),
    )
}

async fn restart(State(app): State<App>) -> Result<StatusCode, ApiError> {
    app.shared.restart().await.map_err(storage_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn crash(State(app): State<App>) -> Result<StatusCode, ApiError> {
    app.shared.crash().await.map_err(storage_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stall_storage(State(app): State<App>, body: JsonBody) -> Result<StatusCode, ApiError> {
    let o: OnOff = body.parse()?;
    if let Some(store) = &app.shared.store {
        store.stall(o.on);
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- seeding ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    #[serde(default = "default_vhost")]
    vhost: String,
    queue: String,
    #[serde(default)]
    body: String,
    body_encoding: Option<String>,
    #[serde(default)]
    properties: Value,
}

async fn seed(State(app): State<App>, body: JsonBody) -> Result<StatusCode, ApiError> {
    let s: SeedRequest = body.parse()?;
    let bytes = j::to_body(&s.body, s.body_encoding.as_deref()).map_err(ApiError::bad_request)?;
    let props = j::to_properties(&s.properties).map_err(ApiError::bad_request)?;
    let v = app
        .shared
        .vhosts
        .get(&s.vhost)
        .ok_or_else(ApiError::not_found)?;
    let seeded = v.lock().seed(&s.queue, bytes.into(), props);
    seeded.map_err(|_| ApiError::not_found())?;
    Ok(StatusCode::CREATED)
}

// ---- the frame trace ---------------------------------------------------------------

async fn set_trace(State(app): State<App>, body: JsonBody) -> Result<StatusCode, ApiError> {
    let o: OnOff = body.parse()?;
    app.shared.tracer.set(o.on);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct TraceQuery {
    connection: Option<u64>,
    format: Option<String>,
    /// Only the entries after this seq: what a page that polls has not seen.
    since: Option<u64>,
}

async fn trace(State(app): State<App>, Query(q): Query<TraceQuery>) -> Result<Response, ApiError> {
    if q.format.as_deref() == Some("text") {
        return Ok(app.shared.trace_dump().into_response());
    }
    if let Some(f) = q.format.as_deref().filter(|f| *f != "json") {
        return Err(ApiError::bad_request(format!(
            "unknown format {f:?} (json, text)"
        )));
    }
    let entries = app
        .shared
        .tracer
        .entries_after(q.connection, q.since.unwrap_or(0));
    Ok(Json(Value::Array(
        entries.iter().map(TraceEntry::to_json).collect(),
    ))
    .into_response())
}

/// The trace file of a broker as it is now: the page with its trace and its
/// snapshot inside (`Broker::trace_html` writes it).
pub fn trace_file(s: &Shared) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    crate::page::trace_file(snapshot_json(s, None), &s.tracer.entries(None), now)
}

async fn trace_html(State(app): State<App>) -> Response {
    axum::response::Html(trace_file(&app.shared)).into_response()
}

/// The trace as Mermaid text.
async fn trace_mermaid(State(app): State<App>) -> Response {
    crate::page::mermaid_named(&app.shared.tracer.entries(None)).into_response()
}
