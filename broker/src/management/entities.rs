//! RabbitMQ's management API, the calls that change things: vhosts, queues
//! (declare, delete, purge, get), exchanges (declare, delete, publish) and
//! bindings, each going through the same vhost methods as the AMQP methods
//! they stand for, so that their checks and errors are the same.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{bindings_between, properties_key_of};
use super::{json as j, ApiError, App, JsonBody, User};
use crate::error::{code, AmqpError};
use crate::shared::Shared;
use crate::vhost::{ApiGet, QueueDeclare, Vhost};

/// An AMQP error as RabbitMQ's management plugin answers it.
pub fn amqp_error(e: AmqpError) -> ApiError {
    match e.code {
        code::NOT_FOUND => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.text),
        code::ACCESS_REFUSED => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not_authorised",
            "Access refused.",
        ),
        _ => ApiError::bad_request(e.text),
    }
}

fn vhost_of(s: &Shared, name: &str) -> Result<std::sync::Arc<Vhost>, ApiError> {
    s.vhosts.get(name).ok_or_else(ApiError::not_found)
}

/// Like `vhost_of`, for a PUT: RabbitMQ says which object is missing.
fn vhost_for_put(s: &Shared, name: &str) -> Result<std::sync::Arc<Vhost>, ApiError> {
    s.vhosts
        .get(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "vhost_not_found"))
}

fn created(new: bool) -> StatusCode {
    if new {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

/// A boolean field as RabbitMQ reads it: a JSON boolean or "true"/"false".
fn flag(body: &Value, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({"error": "bad_request", "reason": ["not_boolean", shown]}),
            })
        }
    }
}

// ---- vhosts ----------------------------------------------------------------------

pub async fn put_vhost(
    State(app): State<App>,
    Extension(User(user)): Extension<User>,
    Path(name): Path<String>,
    _body: JsonBody,
) -> Result<StatusCode, ApiError> {
    let new = app.shared.add_vhost(&name);
    if new {
        // RabbitMQ gives the user who created a vhost full permissions in it.
        let _ =
            app.shared
                .users
                .set_permissions(&user.name, &name, crate::auth::Permissions::full());
    }
    Ok(created(new))
}

pub async fn delete_vhost(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.shared.delete_vhost(&name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

// ---- queues ----------------------------------------------------------------------

pub async fn put_queue(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let v = vhost_for_put(&app.shared, &vhost)?;
    let d = QueueDeclare {
        name: name.clone(),
        passive: false,
        durable: flag(&body, "durable")?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete")?,
        arguments: j::to_table(body.get("arguments").unwrap_or(&Value::Null))
            .map_err(ApiError::bad_request)?,
    };
    if name.starts_with("amq.") {
        return Err(amqp_error(AmqpError::access_refused(String::new())));
    }
    let mut state = v.lock();
    let new = state.queue_snapshot(&name).is_none();
    state.declare_queue(0, d).map_err(amqp_error)?;
    Ok(created(new))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
}

pub async fn delete_queue(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let v = vhost_of(&app.shared, &vhost)?;
    let mut state = v.lock();
    if state.queue_snapshot(&name).is_none() {
        return Err(ApiError::not_found());
    }
    let yes = |o: &Option<String>| o.as_deref() == Some("true");
    state
        .delete_queue(0, &name, yes(&q.if_unused), yes(&q.if_empty))
        .map_err(amqp_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn purge_queue(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = vhost_of(&app.shared, &vhost)?;
    let mut state = v.lock();
    if state.queue_snapshot(&name).is_none() {
        return Err(ApiError::not_found());
    }
    state.purge_queue(0, &name).map_err(amqp_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// RabbitMQ's 400 for required fields left out: `[{key_missing,NAME},…]`.
fn require(body: &Value, keys: &[&str]) -> Result<(), ApiError> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| body.get(**k).is_none())
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("[{}]", missing.join(","))))
    }
}

pub async fn get_messages(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&app.shared, &vhost)?;
    require(&body, &["count", "ackmode", "encoding"])?;
    let count = body["count"]
        .as_u64()
        .or_else(|| body["count"].as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ApiError::bad_request("count must be a number"))?;
    let mode = match body["ackmode"].as_str() {
        Some("ack_requeue_true" | "reject_requeue_true") => ApiGet::Requeue,
        Some("ack_requeue_false" | "reject_requeue_false") => ApiGet::Remove,
        _ => return Err(ApiError::bad_request("Unknown ackmode")),
    };
    let base64 = match body["encoding"].as_str() {
        Some("auto") => false,
        Some("base64") => true,
        _ => return Err(ApiError::bad_request("Unknown encoding")),
    };
    let truncate = body.get("truncate").and_then(Value::as_u64);
    let taken = {
        let mut state = v.lock();
        if state.queue_snapshot(&name).is_none() {
            return Err(ApiError::not_found());
        }
        state
            .get_for_api(&name, count as usize, mode)
            .map_err(amqp_error)?
    };
    let out = taken
        .iter()
        .map(|(m, left)| {
            let bytes = match truncate {
                Some(t) => &m.body[..m.body.len().min(t as usize)],
                None => &m.body[..],
            };
            let (payload, encoding) = if base64 {
                use base64::Engine;
                (
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                    "base64",
                )
            } else {
                j::body(bytes)
            };
            json!({
                "payload_bytes": m.body.len(),
                "redelivered": m.redelivered,
                "exchange": m.exchange,
                "routing_key": m.routing_key,
                "message_count": left,
                "properties": properties_or_empty_list(&m.properties),
                "payload": payload,
                "payload_encoding": encoding,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// RabbitMQ writes a message without properties as `[]` (an empty Erlang
/// proplist), not `{}`.
fn properties_or_empty_list(p: &amq_protocol::protocol::BasicProperties) -> Value {
    match j::properties(p) {
        Value::Object(m) if m.is_empty() => json!([]),
        v => v,
    }
}

// ---- exchanges -------------------------------------------------------------------

fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

pub async fn put_exchange(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let v = vhost_for_put(&app.shared, &vhost)?;
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("direct");
    let arguments = j::to_table(body.get("arguments").unwrap_or(&Value::Null))
        .map_err(ApiError::bad_request)?;
    let (durable, auto_delete, internal) = (
        flag(&body, "durable")?,
        flag(&body, "auto_delete")?,
        flag(&body, "internal")?,
    );
    if name.starts_with("amq.") {
        return Err(amqp_error(AmqpError::access_refused(String::new())));
    }
    let mut state = v.lock();
    let new = !state.exchange_snapshots().iter().any(|e| e.name == name);
    state
        .declare_exchange(
            &name,
            kind,
            false,
            durable,
            auto_delete,
            internal,
            &arguments,
        )
        .map_err(|e| match e.text.strip_prefix("invalid exchange type") {
            Some(_) => ApiError::bad_request(format!("unknown exchange type '{kind}'")),
            None if e.text.starts_with("unknown exchange type") => {
                ApiError::bad_request(format!("unknown exchange type '{kind}'"))
            }
            None => amqp_error(e),
        })?;
    Ok(created(new))
}

pub async fn delete_exchange(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let v = vhost_of(&app.shared, &vhost)?;
    let mut state = v.lock();
    if !state.exchange_snapshots().iter().any(|e| e.name == name) {
        return Err(ApiError::not_found());
    }
    state
        .delete_exchange(&name, q.if_unused.as_deref() == Some("true"))
        .map_err(amqp_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn publish(
    State(app): State<App>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&app.shared, &vhost)?;
    require(
        &body,
        &["routing_key", "properties", "payload", "payload_encoding"],
    )?;
    let routing_key = body["routing_key"].as_str().unwrap_or_default();
    let encoding = body["payload_encoding"].as_str();
    let payload = body["payload"].as_str().unwrap_or_default();
    let bytes = j::to_body(payload, encoding).map_err(ApiError::bad_request)?;
    // RabbitMQ's form for "no properties" is `[]` as often as `{}`.
    let props = match &body["properties"] {
        Value::Array(a) if a.is_empty() => Value::Null,
        p => p.clone(),
    };
    let props = j::to_properties(&props).map_err(ApiError::bad_request)?;
    let routed = v
        .lock()
        .publish_for_api(exchange_name(&name), routing_key, bytes.into(), props)
        .map_err(|e| ApiError::bad_request(format!("{} {}", e.code, e.reply_text())))?;
    Ok(Json(json!({"routed": routed})))
}

/// Whether a path's `{props}` segment, which the router percent-decoded,
/// names the binding with this `properties_key` (itself percent-encoded).
fn same_key(key: &str, decoded: &str) -> bool {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out == decoded.as_bytes()
}

// ---- bindings --------------------------------------------------------------------

/// `e` or `q`: what a binding path's destination is.
fn to_exchange(kind: &str) -> Result<bool, ApiError> {
    match kind {
        "q" => Ok(false),
        "e" => Ok(true),
        _ => Err(ApiError::not_found()),
    }
}

pub async fn list_between(
    State(app): State<App>,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let dest_is_exchange = to_exchange(&kind)?;
    Ok(Json(Value::Array(bindings_between(
        &app.shared,
        &vhost,
        &source,
        &destination,
        dest_is_exchange,
    )?)))
}

pub async fn post_binding(
    State(app): State<App>,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let dest_is_exchange = to_exchange(&kind)?;
    let v = vhost_of(&app.shared, &vhost)?;
    let routing_key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let args_json = body.get("arguments").cloned().unwrap_or(json!({}));
    let arguments = j::to_table(&args_json).map_err(ApiError::bad_request)?;
    {
        let mut state = v.lock();
        let bound = if dest_is_exchange {
            state.bind_exchange(&destination, &source, &routing_key, &arguments, true)
        } else {
            state.bind_queue(0, &destination, &source, &routing_key, &arguments)
        };
        bound.map_err(amqp_error)?;
    }
    let key = properties_key_of(&routing_key, &j::table(&arguments));
    let location = format!(
        "{}/{}",
        super::api::percent_encode(&destination),
        super::api::percent_encode(&key)
    );
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

pub async fn get_binding(
    State(app): State<App>,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let dest_is_exchange = to_exchange(&kind)?;
    bindings_between(&app.shared, &vhost, &source, &destination, dest_is_exchange)?
        .into_iter()
        .find(|b| same_key(b["properties_key"].as_str().unwrap_or_default(), &props))
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

pub async fn delete_binding(
    State(app): State<App>,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let dest_is_exchange = to_exchange(&kind)?;
    // 404 unless the vhost, source and destination are there.
    bindings_between(&app.shared, &vhost, &source, &destination, dest_is_exchange)?;
    let v = vhost_of(&app.shared, &vhost)?;
    let mut state = v.lock();
    // The binding's own arguments, not a copy through JSON: their AMQP types
    // are part of what makes it that binding.
    let found = state.binding_snapshots().into_iter().find(|b| {
        b.source == source
            && b.destination == destination
            && b.to_exchange == dest_is_exchange
            && same_key(
                &properties_key_of(&b.routing_key, &j::table(&b.arguments)),
                &props,
            )
    });
    let Some(b) = found else {
        return Err(ApiError::not_found());
    };
    let unbound = if dest_is_exchange {
        state.bind_exchange(&destination, &source, &b.routing_key, &b.arguments, false)
    } else {
        state.unbind_queue(0, &destination, &source, &b.routing_key, &b.arguments)
    };
    unbound.map_err(amqp_error)?;
    Ok(StatusCode::NO_CONTENT)
}
