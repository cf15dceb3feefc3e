//! The management listener (`--management-bind`): the subset of RabbitMQ's
//! management HTTP API that tests and tools use, Warren's own test-double
//! endpoints under `/api/warren/` (docs/control-plane.md), and a page at `/`.
//!
//! Handlers read the broker's state the way the inspection API does: they take
//! a vhost's lock, copy what they need, and let go before any `.await`.
//!
//! # Layout
//! - `mod.rs`: the listener, the router, authentication, errors, request bodies.
//! - `api`: RabbitMQ's paths that read; `entities`: those that change things.
//! - `definitions`: RabbitMQ's definitions export and import.
//! - `warren`: `/api/warren/…`.
//! - `json`: AMQP tables, properties and bodies in the management API's JSON.

mod api;
mod definitions;
mod entities;
mod json;
mod warren;

use definitions as defs;
use entities as e;
pub use warren::trace_file;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shared::Shared;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler gets.
#[derive(Clone, Debug)]
pub struct App {
    pub shared: Arc<Shared>,
    /// Set when the broker stops: long polls give up at once, so that a
    /// graceful shutdown does not wait for their timeouts.
    pub stop: watch::Receiver<bool>,
    /// The management listener's own address, for `/api/overview`'s listeners.
    pub addr: SocketAddr,
    /// The AMQP listeners' addresses.
    pub amqp: Vec<SocketAddr>,
}

/// Serves the management API on `listener` until `stop` is set, then finishes
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    amqp: Vec<SocketAddr>,
    stop: watch::Receiver<bool>,
) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let app = App {
        shared,
        stop: stop.clone(),
        addr,
        amqp,
    };
    let mut stop = stop;
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "management listener failed");
    }
}

/// Every route of the listener: the `/api` routes behind basic auth, the
/// page in front of it.
pub fn router(app: App) -> Router {
    let api = rabbitmq_routes()
        .merge(warren::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_login,
        ));
    Router::new()
        .route("/", get(page))
        .nest("/api", api)
        .fallback(not_found)
        .with_state(app)
}

/// RabbitMQ's paths: reads in `api`, changes in `entities`, definitions.
fn rabbitmq_routes() -> Router<App> {
    Router::new()
        .route("/overview", get(api::overview))
        .route("/whoami", get(api::whoami))
        .route("/vhosts", get(api::vhosts))
        .route(
            "/vhosts/{vhost}",
            get(api::vhost).put(e::put_vhost).delete(e::delete_vhost),
        )
        .route("/queues", get(api::queues))
        .route("/queues/{vhost}", get(api::queues_in))
        .route(
            "/queues/{vhost}/{name}",
            get(api::queue).put(e::put_queue).delete(e::delete_queue),
        )
        .route("/queues/{vhost}/{name}/contents", delete(e::purge_queue))
        .route("/queues/{vhost}/{name}/get", post(e::get_messages))
        .route("/exchanges", get(api::exchanges))
        .route("/exchanges/{vhost}", get(api::exchanges_in))
        .route(
            "/exchanges/{vhost}/{name}",
            get(api::exchange)
                .put(e::put_exchange)
                .delete(e::delete_exchange),
        )
        .route("/exchanges/{vhost}/{name}/publish", post(e::publish))
        .route("/bindings", get(api::bindings))
        .route("/bindings/{vhost}", get(api::bindings_in))
        .route(
            "/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(e::list_between).post(e::post_binding),
        )
        .route(
            "/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(e::get_binding).delete(e::delete_binding),
        )
        .route("/connections", get(api::connections))
        .route(
            "/connections/{name}",
            get(api::connection).delete(api::close_connection),
        )
        .route("/channels", get(api::channels))
        .route("/consumers", get(api::consumers))
        .route("/consumers/{vhost}", get(api::consumers_in))
        .route("/definitions", get(defs::export).post(defs::import))
        .route("/aliveness-test/{vhost}", get(api::aliveness))
        .route("/health/checks/alarms", get(api::health_alarms))
        .route("/health/checks/virtual-hosts", get(api::health_ok))
        .route("/health/checks/port-listener/{port}", get(api::health_port))
}

/// The page to watch a run (`broker/src/page/`). On a loopback listener it
/// comes with the broker's own credentials, so that a developer's browser opens
/// it without a login; on any other address it asks for a user.
async fn page(State(app): State<App>) -> Html<String> {
    let auth = app.addr.ip().is_loopback().then(|| {
        let c = &app.shared.config;
        let pair = format!("{}:{}", c.user, c.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });
    Html(crate::page::live(auth.as_deref()))
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

// ---- authentication ------------------------------------------------------------

/// The user a request's basic-auth credentials log in as, if they do. The one
/// place the management listener checks a password.
pub fn authenticate(shared: &Shared, user: &str, password: &str) -> Option<crate::auth::User> {
    shared.users.authenticate(user, password)
}

/// The tags that give a user access to the management API, as in RabbitMQ.
const MANAGEMENT_TAGS: [&str; 4] = ["management", "monitoring", "policymaker", "administrator"];

/// The logged-in user, put in a request's extensions by `require_login`.
#[derive(Clone, Debug)]
pub struct User(pub crate::auth::User);

async fn require_login(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some(given) = given else {
        // RabbitMQ answers a request without credentials with an empty 401.
        return unauthorised(None);
    };
    let (user, password) = given.split_once(':').unwrap_or((&given, ""));
    match authenticate(&app.shared, user, password) {
        // RabbitMQ lets in only users tagged for the management plugin.
        Some(user) if !MANAGEMENT_TAGS.iter().any(|t| user.has_tag(t)) => unauthorised(Some(
            json!({"error": "not_authorised", "reason": "Not management user"}),
        )),
        Some(user) => {
            req.extensions_mut().insert(User(user));
            next.run(req).await
        }
        None => unauthorised(Some(
            json!({"error": "not_authorized", "reason": "Login failed"}),
        )),
    }
}

fn unauthorised(body: Option<Value>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
    );
    match body {
        Some(body) => (StatusCode::UNAUTHORIZED, headers, axum::Json(body)).into_response(),
        None => (StatusCode::UNAUTHORIZED, headers).into_response(),
    }
}

// ---- errors and bodies -----------------------------------------------------------

/// An error answer in RabbitMQ's shape: `{"error": …, "reason": …}`, plus any
/// fields a Warren endpoint adds (a timed-out wait shows the queue).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({"error": error, "reason": reason.into()}),
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// A request body of at most [`BODY_LIMIT`] bytes; a larger one is a 413.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map(RawBody)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "bad_request",
                    format!("request body larger than {BODY_LIMIT} bytes"),
                )
            })
    }
}

/// A request body parsed as JSON, at most [`BODY_LIMIT`] bytes. An empty body
/// reads as `{}`, so that a POST whose fields are all optional needs none.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("not_json"))
}

impl JsonBody {
    /// A typed view of the body; a field of the wrong type is a 400.
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
        serde_json::from_value(self.0).map_err(|e| ApiError::bad_request(e.to_string()))
    }
}
