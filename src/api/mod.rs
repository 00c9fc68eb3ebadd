//! The daemon's HTTP API, used by `coxswain deploy`, `approve`, `rollback`, `history` and
//! `status`; and what operators read without a token: `/healthz`, `/readyz`, `/metrics`
//! (Prometheus) and the dashboard (`/`, `/dashboard/data`), all read-only.
//!
//! Every `/v1` call needs `Authorization: Bearer TOKEN`, compared in constant time.
//! Request bodies are limited to 16 KiB; bad input gets a 4xx with a JSON `error`.
//! Requests that change something are handed to the controller (which owns the config and
//! the state database) over a channel; reads go to the state database directly.

use crate::store::Store;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

mod reads;
pub mod types;
mod writes;

pub use reads::status_of;
use reads::{dashboard, dashboard_data, events, history, metrics, readyz, rollout, status};
pub use types::*;
use writes::{abort, approve, deploy, rollback};

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
pub const OPENAPI: &str = include_str!("../openapi.json");

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

/// Serve on `listener` (plain TCP, or TLS: `crate::tls::TlsListener`) until `shutdown`
/// resolves.
pub async fn serve<L>(
    listener: L,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
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
