//! The calls that change something (deploy, approve, rollback, abort): the body checked
//! against the document, then handed to the controller.

use super::types::{Approved, DeployRequest};
use super::{ask, bad_path, error, ApiError, ApiState, Command, Reply};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

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

pub(super) async fn deploy(
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

pub(super) async fn approve(
    State(st): State<ApiState>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    handle(&st, body, Command::Approve, |()| {
        (StatusCode::OK, Json(Approved { approved: true })).into_response()
    })
    .await
}

pub(super) async fn rollback(
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
#[serde(deny_unknown_fields)]
struct AbortBody {
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn abort(
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
