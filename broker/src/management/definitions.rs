//! `GET`/`POST /api/definitions`: the broker's topology in RabbitMQ's
//! definitions format, so that a team can load what it exported from
//! production, and export what a test built.
//!
//! Users are exported with their tags but no `password_hash` (Warren keeps
//! passwords in clear and does not compute RabbitMQ's salted hash); on import
//! a user with a `password` is added, one with only a `password_hash` is
//! skipped with a log line, since its password cannot be known.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::entities::amqp_error;
use super::{json as j, ApiError, App, RawBody};
use crate::auth::{Permissions, User};
use crate::vhost::QueueDeclare;

pub async fn export(State(app): State<App>) -> Json<Value> {
    let s = &app.shared;
    let snap = s.snapshot();
    let users: Vec<Value> = s
        .users
        .users()
        .iter()
        .map(|u| json!({"name": u.name, "tags": u.tags, "limits": {}}))
        .collect();
    let permissions: Vec<Value> = s
        .users
        .permissions()
        .iter()
        .map(|(user, vhost, p)| {
            json!({"user": user, "vhost": vhost, "configure": p.configure,
                   "write": p.write, "read": p.read})
        })
        .collect();
    let queues: Vec<Value> = snap
        .queues
        .iter()
        .filter(|q| q.exclusive_owner.is_none())
        .map(|q| {
            json!({"name": q.name, "vhost": q.vhost, "durable": q.durable,
                   "auto_delete": q.auto_delete, "arguments": j::table(&q.arguments)})
        })
        .collect();
    let exchanges: Vec<Value> = snap
        .exchanges
        .iter()
        .filter(|e| !e.name.starts_with("amq."))
        .map(|e| {
            json!({"name": e.name, "vhost": e.vhost, "type": e.kind, "durable": e.durable,
                   "auto_delete": e.auto_delete, "internal": e.internal,
                   "arguments": j::table(&e.arguments)})
        })
        .collect();
    let bindings: Vec<Value> = snap
        .bindings
        .iter()
        .map(|b| {
            json!({"source": b.source, "vhost": b.vhost, "destination": b.destination,
                   "destination_type": if b.to_exchange { "exchange" } else { "queue" },
                   "routing_key": b.routing_key, "arguments": j::table(&b.arguments)})
        })
        .collect();
    let vhosts: Vec<Value> = s
        .vhosts
        .names()
        .iter()
        .map(|v| json!({"name": v}))
        .collect();
    let version = s.config.profile.release();
    Json(json!({
        "rabbit_version": version,
        "rabbitmq_version": version,
        "product_name": s.config.profile.product_name(),
        "product_version": version,
        "users": users,
        "vhosts": vhosts,
        "permissions": permissions,
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }))
}

fn list<'a>(d: &'a Value, key: &str) -> &'a [Value] {
    d.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn yes(v: &Value, key: &str) -> bool {
    matches!(v.get(key), Some(Value::Bool(true)))
}

/// Imports in RabbitMQ's order: users, vhosts, permissions, queues,
/// exchanges, bindings. The first refusal stops it with a 400.
pub async fn import(
    State(app): State<App>,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    let d: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("failed_to_parse_json"))?;
    let s = &app.shared;
    for u in list(&d, "users") {
        match u.get("password").and_then(Value::as_str) {
            Some(pw) => {
                let tags: Vec<&str> = match u.get("tags") {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                    Some(Value::String(t)) => t.split(',').filter(|t| !t.is_empty()).collect(),
                    _ => Vec::new(),
                };
                s.users.put_user(User::new(text(u, "name"), pw, &tags));
            }
            None => tracing::warn!(
                user = text(u, "name"),
                "definitions: user without a clear-text password skipped"
            ),
        }
    }
    for v in list(&d, "vhosts") {
        s.add_vhost(text(v, "name"));
    }
    for p in list(&d, "permissions") {
        let perms = Permissions::new(text(p, "configure"), text(p, "write"), text(p, "read"));
        s.users
            .set_permissions(text(p, "user"), text(p, "vhost"), perms)
            .map_err(ApiError::bad_request)?;
    }
    let vhost = |v: &Value| {
        s.vhosts
            .get(text(v, "vhost"))
            .ok_or_else(|| ApiError::bad_request(format!("vhost '{}' not found", text(v, "vhost"))))
    };
    let args = |v: &Value| j::to_table(v.get("arguments").unwrap_or(&Value::Null));
    for q in list(&d, "queues") {
        let decl = QueueDeclare {
            name: text(q, "name").to_owned(),
            passive: false,
            durable: yes(q, "durable"),
            exclusive: false,
            auto_delete: yes(q, "auto_delete"),
            arguments: args(q).map_err(ApiError::bad_request)?,
        };
        let v = vhost(q)?;
        let declared = v.lock().declare_queue(0, decl);
        declared.map_err(amqp_error)?;
    }
    for e in list(&d, "exchanges") {
        let arguments = args(e).map_err(ApiError::bad_request)?;
        let v = vhost(e)?;
        let declared = v.lock().declare_exchange(
            text(e, "name"),
            text(e, "type"),
            false,
            yes(e, "durable"),
            yes(e, "auto_delete"),
            yes(e, "internal"),
            &arguments,
        );
        declared.map_err(amqp_error)?;
    }
    for b in list(&d, "bindings") {
        let arguments = args(b).map_err(ApiError::bad_request)?;
        let v = vhost(b)?;
        let mut state = v.lock();
        let (source, dest, key) = (
            text(b, "source"),
            text(b, "destination"),
            text(b, "routing_key"),
        );
        let bound = if text(b, "destination_type") == "exchange" {
            state.bind_exchange(dest, source, key, &arguments, true)
        } else {
            state.bind_queue(0, dest, source, key, &arguments)
        };
        bound.map_err(amqp_error)?;
    }
    Ok(StatusCode::NO_CONTENT)
}
