//! The daemon's HTTP API, used by `coxswain deploy`, `approve`, `rollback`, `history` and
//! `status`; and what operators read without a token: `/healthz`, `/readyz`, `/metrics`
//! (Prometheus) and the dashboard (`/`, `/dashboard/data`), all read-only.
//!
//! Every `/v1` call needs `Authorization: Bearer TOKEN`, compared in constant time.
//! Request bodies are limited to 16 KiB; bad input gets a 4xx with a JSON `error`.
//! Requests that change something are handed to the controller (which owns the config and
//! the state database) over a channel; reads go to the state database directly.

use crate::controller::requests::{
    Accepted, ApproveRequest, DeployRequest, Refusal, RollbackRequest,
};
use crate::deploy::Rollout;
use crate::store::{Outcome, Store};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

/// Largest request body accepted.
const BODY_LIMIT: usize = 16 * 1024;
/// Longest a client may wait for new events in one request.
const MAX_WAIT: Duration = Duration::from_secs(25);

/// A request for the controller, with where to send its answer.
#[derive(Debug)]
pub enum Command {
    Deploy(DeployRequest, Reply<Accepted>),
    Approve(ApproveRequest, Reply<()>),
    Rollback(RollbackRequest, Reply<Accepted>),
    Abort(i64, String, Reply<()>),
}

const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// Where the controller answers a request, and who owns it: the controller takes it
/// ([`Reply::take`]) before acting, or the API gives up on it first (too long in the
/// queue) and answers 503. Never both, so a 503 (CLI exit 4) means nothing was done.
#[derive(Debug)]
pub struct Reply<T> {
    tx: oneshot::Sender<Result<T, Refusal>>,
    claim: Arc<AtomicU8>,
}

impl<T> Reply<T> {
    /// A reply and the receiver of its answer (for callers without the API's timeout).
    pub fn channel() -> (Reply<T>, oneshot::Receiver<Result<T, Refusal>>) {
        let (tx, rx) = oneshot::channel();
        let claim = Arc::new(AtomicU8::new(PENDING));
        (Reply { tx, claim }, rx)
    }

    /// Claim the request for the controller. False if the client already gave up on it:
    /// then it must not be acted on.
    pub fn take(&self) -> bool {
        self.claim
            .compare_exchange(PENDING, TAKEN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    pub fn send(self, answer: Result<T, Refusal>) {
        let _ = self.tx.send(answer);
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub commands: mpsc::Sender<Command>,
    pub store: Arc<Store>,
    pub token: Arc<String>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    error: String,
    /// The request is valid but policy refuses it (the CLI exits 2).
    refused: bool,
}

/// An error answer: status and a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn error(status: StatusCode, msg: impl Into<String>, refused: bool) -> ApiError {
    ApiError {
        status,
        body: ErrorBody {
            error: msg.into(),
            refused,
        },
    }
}

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Refused(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m, true),
        Refusal::NotFound(m) => error(StatusCode::NOT_FOUND, m, true),
        Refusal::Internal(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m, false),
    }
}

async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool = given.as_bytes().ct_eq(st.token.as_bytes()).into();
    if !ok || st.token.is_empty() {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid bearer token",
            false,
        )
        .into_response();
    }
    next.run(req).await
}

/// The API's OpenAPI 3.0 document (`/v1/openapi.json`, no token); schemathesis checks the
/// daemon against it in CI (`tests/tools/schemathesis.sh`).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such path".to_string(), false).into_response()
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path".to_string(),
        false,
    )
    .into_response()
}

/// A path that does not parse (a rollout id that is not a number): 400 with the JSON error.
fn bad_path(e: PathRejection) -> Response {
    error(e.status(), format!("bad path: {}", e.body_text()), false).into_response()
}

/// The router; `serve` binds it.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/deploys", post(deploy))
        .route("/v1/rollouts/{id}", get(rollout))
        .route("/v1/rollouts/{id}/events", get(events))
        .route("/v1/rollouts/{id}/abort", post(abort))
        .route("/v1/approvals", post(approve))
        .route("/v1/rollbacks", post(rollback))
        .route("/v1/history/{app}", get(history))
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .route("/dashboard/data", get(dashboard_data))
        .route("/v1/openapi.json", get(openapi))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serve on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serve HTTPS on `listener` until `shutdown` resolves.
pub async fn serve_tls(
    listener: crate::tls::TlsListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long a request may wait for the controller to take it (it is between passes, or
/// a pass is running) before the API answers 503 with nothing done.
const TAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once taken, how long the controller may take to answer (admission: a few database
/// writes, and the shared table for replicas).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

async fn ask<T>(st: &ApiState, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
    let (reply, mut rx) = Reply::channel();
    let claim = reply.claim.clone();
    let until = tokio::time::Instant::now() + TAKE_TIMEOUT;
    match tokio::time::timeout_at(until, st.commands.send(make(reply))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the controller is shutting down; nothing was done",
                false,
            ))
        }
        Err(_) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the controller's queue stayed full for {}s; nothing was done: send it again",
                    TAKE_TIMEOUT.as_secs()
                ),
                false,
            ))
        }
    }
    let answer = match tokio::time::timeout_at(until, &mut rx).await {
        Ok(a) => a,
        Err(_) => {
            if claim
                .compare_exchange(PENDING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the controller did not take the request within {}s; nothing was done: send it again",
                        TAKE_TIMEOUT.as_secs()
                    ),
                    false,
                ));
            }
            // The controller took it just now: its answer is the truth.
            match tokio::time::timeout(ANSWER_TIMEOUT, &mut rx).await {
                Ok(a) => a,
                Err(_) => {
                    return Err(error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the controller took the request but has not answered: see `coxswain status` before sending it again",
                        false,
                    ))
                }
            }
        }
    };
    match answer {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(r)) => Err(refusal(r)),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller stopped before answering; see `coxswain status` before sending it again",
            false,
        )),
    }
}

/// The request body as `T`, which the API documents as a JSON object: anything else (an
/// array, a number, a string; serde would read a struct from an array) is a 400, as is
/// malformed JSON or a missing field. Unknown fields are ignored.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    // The rejection knows its status: 413 past the size limit, 415 without JSON, 400/422
    // for bad JSON.
    let value = body.map(|Json(v)| v).map_err(|e| {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        error(
            status,
            format!("bad request body: {}", e.body_text()),
            false,
        )
    })?;
    object_as(value)
}

/// `value` as `T` if it is a JSON object, else a 400 that says what was wrong.
fn object_as<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "bad request body: expected a JSON object, got {}",
                json_kind(&value)
            ),
            false,
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {e}"),
            false,
        )
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Blank as the OpenAPI document's `pattern: [^\s\u0085]` says: empty, or only Unicode
/// white space (Rust's `char::is_whitespace`) and U+FEFF (white space to ECMAScript's
/// `\s`, which JSON Schema patterns use, but not to Unicode).
fn blank(s: &str) -> bool {
    s.chars().all(|c| c.is_whitespace() || c == '\u{feff}')
}

async fn deploy(
    State(st): State<ApiState>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req: DeployRequest = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if blank(&req.build) || blank(&req.env) || blank(&req.fleet) {
        return error(
            StatusCode::BAD_REQUEST,
            "fleet, env and build are required",
            false,
        )
        .into_response();
    }
    match ask(&st, |tx| Command::Deploy(req, tx)).await {
        Ok(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn approve(
    State(st): State<ApiState>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    handle(&st, body, Command::Approve, |()| {
        (StatusCode::OK, Json(serde_json::json!({"approved": true}))).into_response()
    })
    .await
}

async fn rollback(
    State(st): State<ApiState>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    handle(&st, body, Command::Rollback, |a| {
        (StatusCode::ACCEPTED, Json(a)).into_response()
    })
    .await
}

/// Parse a JSON body, hand it to the controller, and answer with `ok` or the refusal.
async fn handle<B: serde::de::DeserializeOwned, T>(
    st: &ApiState,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
    make: impl FnOnce(B, Reply<T>) -> Command,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match ask(st, |tx| make(req, tx)).await {
        Ok(v) => ok(v),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct AbortBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn abort(
    State(st): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return bad_path(e),
    };
    // No body (or only whitespace) takes the default reason; a body that is there must be
    // the JSON object the API documents, or nothing is aborted.
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                e.status(),
                format!("bad request body: {}", e.body_text()),
                false,
            )
            .into_response()
        }
    };
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed = serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("bad request body: {e}"),
                    false,
                )
            })
            .and_then(object_as::<AbortBody>);
        match parsed {
            Ok(b) => b.reason,
            Err(e) => return e.into_response(),
        }
    };
    let reason = reason.unwrap_or_else(|| "aborted by request".into());
    match ask(&st, |tx| Command::Abort(id, reason, tx)).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"aborting": id})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A rollout's state as the CLI sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutView {
    pub id: i64,
    pub fleet: String,
    pub env: String,
    pub build: String,
    pub from: String,
    pub phase: String,
    pub finished: bool,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub timed_out: bool,
    /// Restoring (rolling back, or a rollback) past `gates.timeout`: it goes on, and the
    /// CLI stops waiting and says so.
    #[serde(default)]
    pub overdue: bool,
    /// `deploy` or `rollback` (the emergency path back to a build live before).
    #[serde(default)]
    pub kind: crate::deploy::Kind,
}

fn view(store: &Store, id: i64) -> Result<Option<RolloutView>, ApiError> {
    let internal = |e: crate::store::StoreError| {
        error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), false)
    };
    let Some((active, body)) = store.rollout(id).map_err(internal)? else {
        return Ok(None);
    };
    let r: Rollout = serde_json::from_str(&body)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), false))?;
    let d = store.deployment(id).map_err(internal)?;
    let phase = r.phase.name();
    Ok(Some(RolloutView {
        id,
        fleet: r.fleet,
        env: r.env,
        build: r.to.id,
        from: r.from.id,
        phase: phase.into(),
        finished: !active,
        outcome: d.as_ref().map(|d| d.outcome),
        reason: d.and_then(|d| d.reason),
        timed_out: r.timed_out,
        overdue: r.overdue && !r.phase.is_finished(),
        kind: r.kind,
    }))
}

async fn rollout(State(st): State<ApiState>, id: Result<Path<i64>, PathRejection>) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return bad_path(e),
    };
    match view(&st.store, id) {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => {
            error(StatusCode::NOT_FOUND, format!("no rollout #{id}"), false).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    /// Seconds to wait for something new (long poll).
    #[serde(default)]
    wait: u64,
}

/// Events after `after`; waits up to `wait` seconds when there are none and the rollout
/// still runs.
async fn events(
    State(st): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return bad_path(e),
    };
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(e.status(), format!("bad query: {}", e.body_text()), false)
                .into_response()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait).min(MAX_WAIT);
    loop {
        let v = match view(&st.store, id) {
            Ok(Some(v)) => v,
            Ok(None) => {
                return error(StatusCode::NOT_FOUND, format!("no rollout #{id}"), false)
                    .into_response()
            }
            Err(e) => return e.into_response(),
        };
        let evs = match st.store.events_after(id, q.after) {
            Ok(e) => e,
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), false)
                    .into_response()
            }
        };
        if !evs.is_empty() || v.finished || tokio::time::Instant::now() >= deadline {
            return Json(serde_json::json!({ "rollout": v, "events": evs })).into_response();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ready: the control loop has finished a pass recently (503 with the reason if not).
async fn readyz(State(st): State<ApiState>) -> Response {
    match st.telemetry.ready() {
        Ok(passes) => {
            Json(serde_json::json!({"status": "ready", "passes": passes})).into_response()
        }
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reason": why})),
        )
            .into_response(),
    }
}

/// `/metrics`: OpenMetrics when the scraper's `Accept` asks for it (Prometheus does), else
/// the Prometheus text format 0.0.4; the content type always matches the body.
async fn metrics(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::telemetry::accepts_openmetrics);
    let content_type = if openmetrics {
        crate::telemetry::OPENMETRICS_CONTENT_TYPE
    } else {
        crate::telemetry::METRICS_CONTENT_TYPE
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        st.telemetry.encode(openmetrics),
    )
        .into_response()
}

const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// The dashboard's data, without a token: everything `status` has except what may hold
/// secrets or account details, the rollout's event lines (pre-deploy hook output among
/// them) and the AWS errors of the last pass (only their count).
async fn dashboard_data(State(st): State<ApiState>) -> Response {
    match status_of(&st) {
        Ok(mut v) => {
            let errors = v["last_pass_errors"].as_array().map_or(0, Vec::len);
            v["last_pass_errors"] = serde_json::Value::Null;
            v["last_pass_error_count"] = errors.into();
            if let Some(fleets) = v["fleets"].as_array_mut() {
                for f in fleets {
                    if f["rollout"].is_object() {
                        f["rollout"]["events"] = serde_json::Value::Array(Vec::new());
                    }
                }
            }
            Json(v).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e, false).into_response(),
    }
}

async fn status(State(st): State<ApiState>) -> Response {
    match status_of(&st) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e, false).into_response(),
    }
}

/// Every fleet as the last pass saw it, with its builds, running rollout (gate verdict
/// and latest events), recent decisions and chart: what `status` and the dashboard show.
pub fn status_of(st: &ApiState) -> Result<serde_json::Value, String> {
    let snap = st.telemetry.snapshot();
    let queued_rollouts: Vec<Rollout> = st
        .store
        .active_rollouts()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(_, body)| serde_json::from_str::<Rollout>(&body).ok())
        .filter(|r| r.phase == crate::deploy::Phase::Queued)
        .collect();
    let mut fleets = Vec::new();
    for f in &snap.fleets {
        let history = st
            .store
            .fleet_history(&f.fleet, 50)
            .map_err(|e| e.to_string())?;
        // Newest success first (by when it went live).
        let mut wins: Vec<_> = history
            .iter()
            .filter(|d| d.outcome == Outcome::Succeeded)
            .collect();
        wins.sort_by_key(|d| std::cmp::Reverse(d.finished_at));
        let mut succeeded = wins.iter().map(|d| d.build.clone());
        let live = succeeded.next();
        let previous = match &live {
            Some(l) => succeeded
                .find(|b| b != l)
                .or(Some(f.manifest_build.clone())),
            None => None,
        }
        .filter(|p| Some(p) != live.as_ref());
        let live = live.unwrap_or_else(|| f.manifest_build.clone());
        let last = history
            .iter()
            .filter(|d| d.outcome != Outcome::InProgress)
            .max_by_key(|d| d.finished_at);
        // The last pass's view, unless the ledger already says it ended (`deploy --wait`
        // returns as soon as it does; the next pass would say so a poll later).
        let running = snap.rollouts.iter().find(|r| {
            r.fleet == f.fleet && !matches!(st.store.rollout(r.id), Ok(Some((false, _))))
        });
        let rollout = match running {
            Some(r) => {
                let events = st.store.events_after(r.id, 0).map_err(|e| e.to_string())?;
                let tail: Vec<_> = events.iter().rev().take(8).rev().collect();
                serde_json::json!({
                    "id": r.id, "from": r.from, "to": r.to, "phase": r.phase, "step": r.step,
                    "gate": r.gate, "gate_reason": r.gate_reason, "events": tail,
                })
            }
            None => serde_json::Value::Null,
        };
        // Rollouts waiting their turn (behind the running one, or a freeze): phase `queued`.
        let queued: Vec<serde_json::Value> = queued_rollouts
            .iter()
            .filter(|r| r.fleet == f.fleet)
            .map(|r| serde_json::json!({"id": r.id, "to": r.to.id, "kind": r.kind, "phase": r.phase.name()}))
            .collect();
        let decisions: Vec<serde_json::Value> = st
            .store
            .decisions(&f.fleet, 10)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(at, current, desired, reason)| {
                serde_json::json!({"at": at, "current": current, "desired": desired, "reason": reason})
            })
            .collect();
        fleets.push(serde_json::json!({
            "fleet": f.fleet, "environment": f.environment, "app": f.app,
            "current": f.current, "desired": f.desired, "ready": f.ready,
            "booting": f.booting, "retiring": f.retiring, "capped": f.capped, "shortfall": f.shortfall,
            "reason": f.reason, "warnings": f.warnings, "demand_metric": f.demand_metric, "demand_unit": f.demand_unit,
            "live_build": live, "previous_build": previous,
            "last_deploy": last.map(|d| serde_json::json!({
                "id": d.id, "build": d.build, "outcome": d.outcome, "reason": d.reason,
                "finished_at": d.finished_at,
            })),
            "rollout": rollout,
            "queued": queued,
            "decisions": decisions,
            "series": snap.series.get(&f.fleet).cloned().unwrap_or_default(),
        }));
    }
    Ok(serde_json::json!({
        "at": snap.at,
        "passes": snap.passes,
        "last_pass_errors": snap.last_pass_errors,
        "fleets": fleets,
    }))
}

/// Whether the last pass knew no fleet or app by this name (false before any pass).
fn unknown_fleet(st: &ApiState, name: &str) -> bool {
    let snap = st.telemetry.snapshot();
    snap.passes > 0 && !snap.fleets.iter().any(|f| f.fleet == name || f.app == name)
}

async fn history(State(st): State<ApiState>, app: Result<Path<String>, PathRejection>) -> Response {
    let app = match app {
        Ok(Path(app)) => app,
        Err(e) => return bad_path(e),
    };
    match st.store.history(&app, 100) {
        // Unknown to the daemon (once a pass has listed its fleets): a refusal, as for
        // `status` and `deploy`, not an empty ledger.
        Ok(h) if h.is_empty() && unknown_fleet(&st, &app) => error(
            StatusCode::NOT_FOUND,
            format!("no fleet or app named '{app}' on this daemon"),
            true,
        )
        .into_response(),
        Ok(h) => {
            let mut approvals = Vec::new();
            let mut builds: Vec<&str> = h.iter().map(|d| d.build.as_str()).collect();
            builds.sort_unstable();
            builds.dedup();
            // Approvals are kept per app: asked by fleet name, look under its app.
            let approvals_app = st
                .telemetry
                .snapshot()
                .fleets
                .iter()
                .find(|f| f.fleet == app && !f.app.is_empty())
                .map_or_else(|| app.clone(), |f| f.app.clone());
            for b in builds {
                if let Ok(a) = st.store.approvals(&approvals_app, b) {
                    approvals.extend(a);
                }
            }
            // Each line says whether it was a deploy or a rollback (from its rollout), or
            // the record that a rollback left a build (`left`).
            let deployments: Vec<serde_json::Value> =
                h.iter()
                    .map(|d| {
                        let kind = st.store.rollout_state(d.id).ok().flatten().map_or(
                            "deploy",
                            |r| match r.kind {
                                _ if r.ledger_only => "left",
                                crate::deploy::Kind::Rollback => "rollback",
                                crate::deploy::Kind::Deploy => "deploy",
                            },
                        );
                        let mut v = serde_json::to_value(d).unwrap_or_default();
                        if let Some(o) = v.as_object_mut() {
                            o.insert("kind".into(), kind.into());
                        }
                        v
                    })
                    .collect();
            Json(serde_json::json!({ "app": app, "deployments": deployments, "approvals": approvals }))
                .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), false).into_response(),
    }
}
