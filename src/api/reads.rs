//! The calls that only read: a rollout and its events, status, history, readiness, metrics
//! and the dashboard. They go to the state database and telemetry directly.

use super::types::{
    DecisionLine, FleetStatus, History, HistoryLine, LastDeploy, LineKind, QueuedRollout,
    RolloutEvents, RolloutView, RunningRollout, Status,
};
use super::{bad_path, error, ApiError, ApiState, MAX_WAIT};
use crate::deploy::Rollout;
use crate::store::{Outcome, Store};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::time::Duration;

fn view(store: &Store, id: i64) -> Result<Option<RolloutView>, ApiError> {
    let internal = |e: crate::store::StoreError| {
        error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), false)
    };
    let Some((active, r)) = store.rollout(id).map_err(internal)? else {
        return Ok(None);
    };
    let line = store.deployment(id).map_err(internal)?;
    Ok(Some(RolloutView::of(r, active, line)))
}

pub(super) async fn rollout(
    State(st): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> Response {
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
pub(super) struct EventsQuery {
    #[serde(default)]
    after: i64,
    /// Seconds to wait for something new (long poll).
    #[serde(default)]
    wait: u64,
}

/// Events after `after`; waits up to `wait` seconds when there are none and the rollout
/// still runs.
pub(super) async fn events(
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
            return Json(RolloutEvents {
                rollout: v,
                events: evs,
            })
            .into_response();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ready: the control loop has finished a pass recently (503 with the reason if not).
pub(super) async fn readyz(State(st): State<ApiState>) -> Response {
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
pub(super) async fn metrics(State(st): State<ApiState>, headers: HeaderMap) -> Response {
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

const DASHBOARD: &str = include_str!("../dashboard.html");

pub(super) async fn dashboard() -> Response {
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
pub(super) async fn dashboard_data(State(st): State<ApiState>) -> Response {
    match status_of(&st) {
        Ok(v) => Json(v.for_dashboard()).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e, false).into_response(),
    }
}

pub(super) async fn status(State(st): State<ApiState>) -> Response {
    match status_of(&st) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e, false).into_response(),
    }
}

/// Every fleet as the last pass saw it, with its builds, running rollout (gate verdict
/// and latest events), recent decisions and chart: what `status` and the dashboard show.
pub fn status_of(st: &ApiState) -> Result<Status, String> {
    let snap = st.telemetry.snapshot();
    let queued_rollouts: Vec<Rollout> = st
        .store
        .running_rollouts()
        .map_err(|e| e.to_string())?
        .into_iter()
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
            r.fleet == f.fleet && !matches!(st.store.rollout_active(r.id), Ok(Some(false)))
        });
        let rollout = match running {
            Some(r) => {
                let events = st.store.events_after(r.id, 0).map_err(|e| e.to_string())?;
                let tail = events[events.len().saturating_sub(8)..].to_vec();
                Some(RunningRollout::of(r, tail))
            }
            None => None,
        };
        // Rollouts waiting their turn (behind the running one, or a freeze): phase `queued`.
        let queued = queued_rollouts
            .iter()
            .filter(|r| r.fleet == f.fleet)
            .map(|r| QueuedRollout {
                id: r.id,
                to: r.to.id.clone(),
                kind: r.kind,
                phase: r.phase.name().into(),
            })
            .collect();
        let decisions = st
            .store
            .decisions(&f.fleet, 10)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(at, current, desired, reason)| DecisionLine {
                at,
                current,
                desired,
                reason,
            })
            .collect();
        fleets.push(FleetStatus {
            fleet: f.fleet.clone(),
            environment: f.environment.clone(),
            app: f.app.clone(),
            current: f.current,
            desired: f.desired,
            ready: f.ready,
            booting: f.booting,
            retiring: f.retiring,
            spot: f.spot,
            instances: f.instances,
            capped: f.capped,
            shortfall: f.shortfall,
            reason: f.reason.clone(),
            warnings: f.warnings.clone(),
            demand_metric: f.demand_metric.clone(),
            demand_unit: f.demand_unit.clone(),
            live_build: live,
            previous_build: previous,
            last_deploy: last.map(|d| LastDeploy {
                id: d.id,
                build: d.build.clone(),
                outcome: d.outcome,
                reason: d.reason.clone(),
                finished_at: d.finished_at,
            }),
            rollout,
            queued,
            decisions,
            series: snap.series.get(&f.fleet).cloned().unwrap_or_default(),
        });
    }
    Ok(Status {
        at: snap.at,
        passes: snap.passes,
        last_pass_errors: Some(snap.last_pass_errors),
        last_pass_error_count: None,
        fleets,
    })
}

/// Whether the last pass knew no fleet or app by this name (false before any pass).
fn unknown_fleet(st: &ApiState, name: &str) -> bool {
    let snap = st.telemetry.snapshot();
    snap.passes > 0 && !snap.fleets.iter().any(|f| f.fleet == name || f.app == name)
}

pub(super) async fn history(
    State(st): State<ApiState>,
    app: Result<Path<String>, PathRejection>,
) -> Response {
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
            let deployments =
                h.into_iter()
                    .map(|d| {
                        let kind = st.store.rollout_state(d.id).ok().flatten().map_or(
                            LineKind::Deploy,
                            |r| match r.kind {
                                _ if r.ledger_only => LineKind::Left,
                                crate::deploy::Kind::Rollback => LineKind::Rollback,
                                crate::deploy::Kind::Deploy => LineKind::Deploy,
                            },
                        );
                        HistoryLine {
                            deployment: d,
                            kind,
                        }
                    })
                    .collect();
            Json(History {
                app,
                deployments,
                approvals,
            })
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), false).into_response(),
    }
}
