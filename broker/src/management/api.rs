//! RabbitMQ's management API, the subset tests and tools use: overview, users,
//! vhosts, queues, exchanges, bindings, connections, channels, consumers,
//! definitions and health checks, with RabbitMQ 3.10's paths, field names,
//! value types, status codes and error bodies.
//!
//! Counters are exact at the moment of the request (RabbitMQ's lag by up to
//! its 5-second statistics interval), and the fields only a real node has
//! (Erlang process statistics, rates, node names) are left out.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::warren::{connection_name, queue_type};
use super::{json as j, ApiError, App, User};
use crate::commands::{Command, ConnInfo};
use crate::inspect::QueueSnapshot;
use crate::shared::Shared;

fn vhost_names(s: &Shared) -> Vec<String> {
    s.vhosts.names()
}

fn check_vhost(s: &Shared, vhost: &str) -> Result<(), ApiError> {
    if s.vhosts.contains_key(vhost) {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

// ---- overview, whoami, vhosts ----------------------------------------------------

pub async fn overview(State(app): State<App>) -> Json<Value> {
    let snap = app.shared.snapshot();
    let ready: usize = snap.queues.iter().map(|q| q.messages.len()).sum();
    let unacked: usize = snap.queues.iter().map(|q| q.unacked.len()).sum();
    let consumers: usize = snap.queues.iter().map(|q| q.consumers.len()).sum();
    let channels: usize = snap.connections.iter().map(|c| c.channels.len()).sum();
    let listeners: Vec<Value> = app
        .amqp
        .iter()
        .map(|a| listener("amqp", a))
        .chain(std::iter::once(listener("http", &app.addr)))
        .collect();
    // The release the broker imitates, as connection.start says (its profile).
    let profile = &app.shared.config.profile;
    let version = profile.release();
    Json(json!({
        "management_version": version,
        "rabbitmq_version": version,
        "product_name": profile.product_name(),
        "product_version": version,
        "warren_version": env!("CARGO_PKG_VERSION"),
        "cluster_name": "warren",
        "node": "warren@localhost",
        "object_totals": {
            "channels": channels,
            "connections": snap.connections.len(),
            "consumers": consumers,
            "exchanges": snap.exchanges.len(),
            "queues": snap.queues.len(),
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
        },
        "listeners": listeners,
    }))
}

fn listener(protocol: &str, addr: &std::net::SocketAddr) -> Value {
    json!({"node": "warren@localhost", "protocol": protocol,
           "ip_address": addr.ip().to_string(), "port": addr.port()})
}

pub async fn whoami(Extension(User(user)): Extension<User>) -> Json<Value> {
    Json(json!({"name": user.name, "tags": user.tags}))
}

fn vhost_json(s: &Shared, name: &str, queues: &[QueueSnapshot]) -> Value {
    let ready: usize = queues
        .iter()
        .filter(|q| q.vhost == name)
        .map(|q| q.messages.len())
        .sum();
    let unacked: usize = queues
        .iter()
        .filter(|q| q.vhost == name)
        .map(|q| q.unacked.len())
        .sum();
    let description = if name == "/" {
        "Default virtual host"
    } else {
        ""
    };
    let _ = s;
    json!({
        "name": name,
        "description": description,
        "tags": [],
        "metadata": {"description": description, "tags": []},
        "default_queue_type": "undefined",
        "tracing": false,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

pub async fn vhosts(State(app): State<App>) -> Json<Value> {
    let queues = app.shared.snapshot().queues;
    Json(Value::Array(
        vhost_names(&app.shared)
            .iter()
            .map(|v| vhost_json(&app.shared, v, &queues))
            .collect(),
    ))
}

pub async fn vhost(
    State(app): State<App>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_vhost(&app.shared, &vhost)?;
    let queues = app.shared.snapshot().queues;
    Ok(Json(vhost_json(&app.shared, &vhost, &queues)))
}

// ---- queues ----------------------------------------------------------------------

/// A queue as `GET /api/queues/{vhost}/{name}` shows it.
pub fn queue_json(q: &QueueSnapshot) -> Value {
    let bytes = |ms: &mut dyn Iterator<Item = usize>| ms.sum::<usize>();
    let ready_bytes = bytes(&mut q.messages.iter().map(|m| m.body.len()));
    let unacked_bytes = bytes(&mut q.unacked.iter().map(|u| u.message.body.len()));
    let exclusive_tag = q
        .consumers
        .iter()
        .find(|c| c.exclusive)
        .map(|c| c.tag.clone());
    json!({
        "name": q.name,
        "vhost": q.vhost,
        "type": queue_type(q),
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": j::table(&q.arguments),
        "state": "running",
        "node": "warren@localhost",
        "policy": null,
        "operator_policy": null,
        "effective_policy_definition": {},
        "exclusive_consumer_tag": exclusive_tag,
        "consumers": q.consumers.len(),
        "messages": q.messages.len() + q.unacked.len(),
        "messages_ready": q.messages.len(),
        "messages_unacknowledged": q.unacked.len(),
        "message_bytes": ready_bytes + unacked_bytes,
        "message_bytes_ready": ready_bytes,
        "message_bytes_unacknowledged": unacked_bytes,
    })
}

fn all_queues(s: &Shared, vhost: Option<&str>) -> Vec<Value> {
    s.snapshot()
        .queues
        .iter()
        .filter(|q| vhost.is_none_or(|v| q.vhost == v))
        .map(queue_json)
        .collect()
}

pub async fn queues(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(all_queues(&app.shared, None)))
}

pub async fn queues_in(
    State(app): State<App>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_vhost(&app.shared, &vhost)?;
    Ok(Json(Value::Array(all_queues(&app.shared, Some(&vhost)))))
}

/// The queue, copied under its vhost's lock.
pub fn find_queue(s: &Shared, vhost: &str, name: &str) -> Result<QueueSnapshot, ApiError> {
    let v = s.vhosts.get(vhost).ok_or_else(ApiError::not_found)?;
    let q = v.lock().queue_snapshot(name);
    q.ok_or_else(ApiError::not_found)
}

pub async fn queue(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let q = find_queue(&app.shared, &vhost, &name)?;
    let mut v = queue_json(&q);
    v["consumer_details"] = Value::Array(consumer_details(&app.shared, &q));
    Ok(Json(v))
}

// ---- exchanges and bindings ------------------------------------------------------

fn exchanges_json(s: &Shared, vhost: Option<&str>, name: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    // The default exchange is listed under the name "", as RabbitMQ does.
    for v in vhost_names(s) {
        if vhost.is_some_and(|x| x != v) {
            continue;
        }
        if name.is_none_or(|n| n.is_empty() || n == "amq.default") {
            out.push(
                json!({"name": "", "vhost": v, "type": "direct", "durable": true,
                            "auto_delete": false, "internal": false, "arguments": {},
                            "user_who_performed_action": "rmq-internal"}),
            );
        }
    }
    for e in s.snapshot().exchanges {
        if vhost.is_some_and(|x| x != e.vhost) || name.is_some_and(|n| n != e.name) {
            continue;
        }
        let who = if e.name.starts_with("amq.") {
            "rmq-internal"
        } else {
            "guest"
        };
        out.push(json!({"name": e.name, "vhost": e.vhost, "type": e.kind,
                        "durable": e.durable, "auto_delete": e.auto_delete,
                        "internal": e.internal, "arguments": j::table(&e.arguments),
                        "user_who_performed_action": who}));
    }
    out
}

pub async fn exchanges(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(exchanges_json(&app.shared, None, None)))
}

pub async fn exchanges_in(
    State(app): State<App>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_vhost(&app.shared, &vhost)?;
    Ok(Json(Value::Array(exchanges_json(
        &app.shared,
        Some(&vhost),
        None,
    ))))
}

pub async fn exchange(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_vhost(&app.shared, &vhost)?;
    let mut found = exchanges_json(&app.shared, Some(&vhost), Some(&name));
    found.pop().map(Json).ok_or_else(ApiError::not_found)
}

/// RabbitMQ's `properties_key` for a binding: the routing key as
/// `quote_plus` writes it ("~" when empty), then `~` and a hash of the
/// arguments when there are any. RabbitMQ hashes the Erlang term
/// (`erlang:phash2`), which Warren cannot reproduce: its hash differs, but
/// stays stable for one binding, which is all a client that lists bindings
/// and deletes one by its key needs.
pub fn properties_key_of(routing_key: &str, arguments: &Value) -> String {
    let key = if routing_key.is_empty() {
        "~".to_owned()
    } else {
        let mut out = String::new();
        for b in routing_key.bytes() {
            match b {
                b' ' => out.push('+'),
                b if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) => out.push(b as char),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    match arguments.as_object() {
        Some(m) if !m.is_empty() => {
            let text = serde_json::to_string(arguments).unwrap_or_default();
            let mut h: u32 = 0x811c_9dc5;
            for b in text.bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            format!("{key}~{h:08x}")
        }
        _ => key,
    }
}

/// A path segment percent-encoded (as in a `Location` header).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bindings from `source` to one destination, as `GET
/// /api/bindings/{vhost}/e/{source}/q/{destination}` lists them; 404 when
/// the vhost, the source or the destination is not there.
pub fn bindings_between(
    s: &Shared,
    vhost: &str,
    source: &str,
    destination: &str,
    to_exchange: bool,
) -> Result<Vec<Value>, ApiError> {
    let v = s.vhosts.get(vhost).ok_or_else(ApiError::not_found)?;
    {
        let state = v.lock();
        let has_exchange =
            |n: &str| n.is_empty() || state.exchange_snapshots().iter().any(|e| e.name == n);
        let dest_there = if to_exchange {
            has_exchange(destination)
        } else {
            state.queue_snapshot(destination).is_some()
        };
        if !has_exchange(source) || !dest_there {
            return Err(ApiError::not_found());
        }
    }
    Ok(bindings_json(s, Some(vhost))
        .into_iter()
        .filter(|b| {
            b["source"] == source
                && b["destination"] == destination
                && b["destination_type"] == if to_exchange { "exchange" } else { "queue" }
        })
        .collect())
}

fn bindings_json(s: &Shared, vhost: Option<&str>) -> Vec<Value> {
    let snap = s.snapshot();
    let mut out = Vec::new();
    // Every queue is bound to the default exchange by its name.
    for q in snap
        .queues
        .iter()
        .filter(|q| vhost.is_none_or(|v| q.vhost == v))
    {
        out.push(
            json!({"source": "", "vhost": q.vhost, "destination": q.name,
                        "destination_type": "queue", "routing_key": q.name,
                        "arguments": {}, "properties_key": percent_encode(&q.name)}),
        );
    }
    for b in snap
        .bindings
        .iter()
        .filter(|b| vhost.is_none_or(|v| b.vhost == v))
    {
        let args = j::table(&b.arguments);
        out.push(
            json!({"source": b.source, "vhost": b.vhost, "destination": b.destination,
                        "destination_type": if b.to_exchange { "exchange" } else { "queue" },
                        "routing_key": b.routing_key,
                        "properties_key": properties_key_of(&b.routing_key, &args),
                        "arguments": args}),
        );
    }
    out
}

pub async fn bindings(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(bindings_json(&app.shared, None)))
}

pub async fn bindings_in(
    State(app): State<App>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_vhost(&app.shared, &vhost)?;
    Ok(Json(Value::Array(bindings_json(&app.shared, Some(&vhost)))))
}

// ---- connections, channels, consumers ----------------------------------------------

fn split_addr(a: &str) -> (String, Value) {
    match a.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), json!(a.port())),
        Err(_) => (a.to_owned(), Value::Null),
    }
}

fn connection_json(s: &Shared, info: &ConnInfo) -> Value {
    let vhost = info.vhost.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let channels = vhost
        .as_ref()
        .and_then(|v| s.vhosts.get(v))
        .map_or(0, |v| v.lock().channels_of(info.id).len());
    let client = info.client.get();
    let (peer_host, peer_port) = split_addr(&info.peer);
    let (host, port) = info
        .local
        .get()
        .map_or((String::new(), Value::Null), |l| split_addr(l));
    json!({
        "name": connection_name(info),
        "node": "warren@localhost",
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": "running",
        "user": client.map(|c| c.user.as_str()),
        "user_who_performed_action": client.map(|c| c.user.as_str()),
        "vhost": vhost,
        "channels": channels,
        "host": host,
        "port": port,
        "peer_host": peer_host,
        "peer_port": peer_port,
        "ssl": false,
        "auth_mechanism": "PLAIN",
        "channel_max": s.config.channel_max,
        "frame_max": s.config.frame_max,
        "timeout": s.config.heartbeat,
        "connected_at": client.map(|c| c.connected_at),
        "client_properties": client.map_or(json!({}), |c| j::table(&c.properties)),
    })
}

/// Connections that finished their handshake, as RabbitMQ lists only those.
fn open_connections(s: &Shared) -> Vec<std::sync::Arc<ConnInfo>> {
    s.connection_infos()
        .into_iter()
        .filter(|c| c.client.get().is_some())
        .collect()
}

pub async fn connections(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(
        open_connections(&app.shared)
            .iter()
            .map(|c| connection_json(&app.shared, c))
            .collect(),
    ))
}

fn find_connection(s: &Shared, name: &str) -> Result<std::sync::Arc<ConnInfo>, ApiError> {
    open_connections(s)
        .into_iter()
        .find(|c| connection_name(c) == name)
        .ok_or_else(ApiError::not_found)
}

pub async fn connection(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = find_connection(&app.shared, &name)?;
    Ok(Json(connection_json(&app.shared, &info)))
}

/// RabbitMQ closes the connection with 320 CONNECTION_FORCED, the `X-Reason`
/// header (or "Closed via management plugin") as its text.
pub async fn close_connection(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let info = find_connection(&app.shared, &name)?;
    let reason = headers
        .get("x-reason")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("Closed via management plugin");
    info.command(Command::CloseConnection {
        code: 320,
        text: reason.to_owned(),
    });
    Ok(StatusCode::NO_CONTENT)
}

fn channel_name(info: &ConnInfo, n: u16) -> String {
    format!("{} ({n})", connection_name(info))
}

pub async fn channels(State(app): State<App>) -> Json<Value> {
    let s = &app.shared;
    let mut out = Vec::new();
    for info in open_connections(s) {
        let vhost = info.vhost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(v) = vhost.as_ref().and_then(|v| s.vhosts.get(v)) else {
            continue;
        };
        let chans = v.lock().channel_infos();
        let user = info.client.get().map(|c| c.user.clone());
        let (peer_host, peer_port) = split_addr(&info.peer);
        for c in chans.iter().filter(|c| c.connection == info.id) {
            out.push(json!({
                "name": channel_name(&info, c.number),
                "number": c.number,
                "node": "warren@localhost",
                "vhost": vhost,
                "user": user,
                "user_who_performed_action": user,
                "state": "running",
                "connection_details": {"name": connection_name(&info),
                                       "peer_host": peer_host, "peer_port": peer_port},
                "consumer_count": c.consumer_count,
                "messages_unacknowledged": c.messages_unacknowledged,
                "prefetch_count": c.prefetch_count,
                "global_prefetch_count": c.global_prefetch_count,
            }));
        }
    }
    Json(Value::Array(out))
}

fn consumer_details(s: &Shared, q: &QueueSnapshot) -> Vec<Value> {
    let infos = s.connection_infos();
    q.consumers
        .iter()
        .map(|c| {
            let info = infos.iter().find(|i| i.id == c.connection);
            let (cname, peer_host, peer_port) = info.map_or((String::new(), String::new(), Value::Null), |i| {
                let (h, p) = split_addr(&i.peer);
                (connection_name(i), h, p)
            });
            json!({
                "consumer_tag": c.tag,
                "queue": {"name": q.name, "vhost": q.vhost},
                "channel_details": {"connection_name": cname,
                                    "name": format!("{cname} ({})", c.channel),
                                    "node": "warren@localhost", "number": c.channel,
                                    "peer_host": peer_host, "peer_port": peer_port,
                                    "user": info.and_then(|i| i.client.get()).map(|c| c.user.clone())},
                "ack_required": !c.no_ack,
                "exclusive": c.exclusive,
                "prefetch_count": c.prefetch,
                "active": true,
                "activity_status": "up",
                "arguments": {},
            })
        })
        .collect()
}

fn consumers_json(s: &Shared, vhost: Option<&str>) -> Vec<Value> {
    s.snapshot()
        .queues
        .iter()
        .filter(|q| vhost.is_none_or(|v| q.vhost == v))
        .flat_map(|q| consumer_details(s, q))
        .collect()
}

pub async fn consumers(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(consumers_json(&app.shared, None)))
}

pub async fn consumers_in(
    State(app): State<App>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_vhost(&app.shared, &vhost)?;
    Ok(Json(Value::Array(consumers_json(
        &app.shared,
        Some(&vhost),
    ))))
}

// ---- health --------------------------------------------------------------------

pub async fn aliveness(
    State(app): State<App>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_vhost(&app.shared, &vhost)?;
    Ok(Json(json!({"status": "ok"})))
}

/// RabbitMQ's answer when a resource alarm is in effect is a 503 listing it.
pub async fn health_alarms(State(app): State<App>) -> Response {
    if *app.shared.gauge.subscribe().borrow() {
        let body = json!({"status": "failed", "reason": "resource alarm(s) in effect in the cluster",
                          "alarms": [{"node": "warren@localhost", "resource": "memory"}]});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

pub async fn health_ok() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn health_port(State(app): State<App>, Path(port): Path<String>) -> Response {
    let listening: Vec<u16> = app
        .amqp
        .iter()
        .map(|a| a.port())
        .chain(std::iter::once(app.addr.port()))
        .collect();
    match port.parse::<u16>() {
        Ok(p) if listening.contains(&p) => Json(json!({"status": "ok", "port": p})).into_response(),
        Ok(p) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "No active listener",
                        "port": p, "missing": p, "ports": listening})),
        )
            .into_response(),
        Err(_) => ApiError::bad_request("Invalid port").into_response(),
    }
}
