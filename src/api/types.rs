//! The API's vocabulary: every request and answer body, shared by the daemon that answers
//! (`api/reads.rs`, `api/writes.rs`) and the CLI that asks (`cli/deploy.rs`), so the two
//! cannot drift apart. The OpenAPI document (`src/openapi.json`, served at
//! `/v1/openapi.json`) describes the same shapes under the schema names given below;
//! `tests/it/api_schema.rs` holds the server to it with schemathesis.

use crate::controller::RolloutReport;
use crate::deploy::{Kind, Rollout};
use crate::store::{Approval, Deployment, Event, Outcome, SamplePoint};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::controller::requests::{
    Accepted, ApproveRequest, DeployRequest, Refusal, RollbackRequest,
};

/// An error answer, 4xx or 5xx (schema `Error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The request is valid but policy refuses it (the CLI exits 2).
    #[serde(default)]
    pub refused: bool,
}

/// The answer to an approval (`POST /v1/approvals`): `approved` is always true (a refusal
/// is an [`ErrorBody`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approved {
    pub approved: bool,
}

/// A rollout's state as the CLI sees it (schema `Rollout`; `GET /v1/rollouts/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutView {
    pub id: i64,
    pub fleet: String,
    pub env: String,
    /// The build it rolls to.
    pub build: String,
    /// The build it rolls from.
    pub from: String,
    /// [`crate::deploy::Phase::name`].
    pub phase: String,
    pub finished: bool,
    /// The ledger's outcome (`in_progress` while it runs).
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub timed_out: bool,
    /// Restoring (rolling back, or a rollback) past `gates.timeout`: it goes on, and the
    /// CLI stops waiting and says so.
    #[serde(default)]
    pub overdue: bool,
    /// `deploy` or `rollback` (the emergency path back to a build live before).
    #[serde(default)]
    pub kind: Kind,
}

impl RolloutView {
    /// The view of `r`, whose row says whether it still runs (`active`) and whose ledger
    /// line (`line`) has its outcome.
    pub fn of(r: Rollout, active: bool, line: Option<Deployment>) -> RolloutView {
        RolloutView {
            id: r.id,
            phase: r.phase.name().into(),
            finished: !active,
            outcome: line.as_ref().map(|d| d.outcome),
            reason: line.and_then(|d| d.reason),
            timed_out: r.timed_out,
            overdue: r.overdue && !r.phase.is_finished(),
            kind: r.kind,
            fleet: r.fleet,
            env: r.env,
            build: r.to.id,
            from: r.from.id,
        }
    }

    /// The build a restore brings back: a rollback's target, a deploy's previous build.
    pub fn restoring(&self) -> &str {
        match self.kind {
            Kind::Rollback => &self.build,
            Kind::Deploy => &self.from,
        }
    }
}

/// Events after a point, with the rollout's state (schema `RolloutEvents`;
/// `GET /v1/rollouts/{id}/events`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutEvents {
    pub rollout: RolloutView,
    /// Oldest first; `seq` grows by one per event of the rollout.
    pub events: Vec<Event>,
}

/// What a line of the history is (from its rollout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Deploy,
    Rollback,
    /// The record that a rollback took this build away.
    Left,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Deploy => "deploy",
            LineKind::Rollback => "rollback",
            LineKind::Left => "left",
        }
    }
}

/// One line of an app's history: a ledger line and its kind (schema `Deployment`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryLine {
    #[serde(flatten)]
    pub deployment: Deployment,
    pub kind: LineKind,
}

/// An app's (or fleet's) deployments, newest first, and the approvals of their builds
/// (schema `History`; `GET /v1/history/{app}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct History {
    pub app: String,
    pub deployments: Vec<HistoryLine>,
    pub approvals: Vec<Approval>,
}

/// How a fleet's last finished deployment ended (schema `LastDeploy`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastDeploy {
    pub id: i64,
    pub build: String,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The rollout a fleet runs, as the last pass saw it (schema `RunningRollout`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunningRollout {
    pub id: i64,
    pub from: String,
    pub to: String,
    /// [`crate::deploy::Phase::name`].
    pub phase: String,
    pub step: usize,
    /// [`crate::deploy::Gates::name`]: `green`, `fail`, `waiting`, ...
    pub gate: String,
    /// [`crate::deploy::Gates::reason`] (empty when green).
    pub gate_reason: String,
    /// Its latest events, oldest first (empty on the dashboard, which shows no event text).
    pub events: Vec<Event>,
}

impl RunningRollout {
    pub fn of(r: &RolloutReport, events: Vec<Event>) -> RunningRollout {
        RunningRollout {
            id: r.id,
            from: r.from.clone(),
            to: r.to.clone(),
            phase: r.phase.clone(),
            step: r.step,
            gate: r.gates.name().into(),
            gate_reason: r.gates.reason().to_string(),
            events,
        }
    }
}

/// A rollout waiting its turn (schema `QueuedRollout`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueuedRollout {
    pub id: i64,
    pub to: String,
    pub kind: Kind,
    pub phase: String,
}

/// One capacity decision of the ledger (schema `Decision`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionLine {
    pub at: DateTime<Utc>,
    pub current: u32,
    pub desired: u32,
    pub reason: String,
}

/// A fleet as the last pass saw it, with its builds, rollout, decisions and chart
/// (schema `Fleet`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetStatus {
    pub fleet: String,
    pub environment: String,
    pub app: String,
    /// Capacity counted (live, of every build): instances, or with instance weights
    /// (`weighted_capacity`) the units they count for.
    pub current: u32,
    /// The decision after every cap.
    pub desired: u32,
    /// Warm and serving.
    pub ready: u32,
    pub booting: u32,
    pub retiring: u32,
    /// Of `current`, the capacity bought on Spot (the rest is On-Demand).
    #[serde(default)]
    pub spot: u32,
    /// The instances behind `current` (equal to it without instance weights).
    #[serde(default)]
    pub instances: u32,
    /// A cap (`max`, `max_total_instances`) held the decision down.
    pub capped: bool,
    /// Instances below the decision for more than two passes (0: none).
    pub shortfall: u32,
    pub reason: String,
    pub warnings: Vec<String>,
    pub demand_metric: Option<String>,
    pub demand_unit: Option<String>,
    pub live_build: String,
    pub previous_build: Option<String>,
    pub last_deploy: Option<LastDeploy>,
    pub rollout: Option<RunningRollout>,
    pub queued: Vec<QueuedRollout>,
    /// The newest first.
    pub decisions: Vec<DecisionLine>,
    /// The chart, oldest first.
    pub series: Vec<SamplePoint>,
}

/// Every fleet of the daemon (schema `Status`, `GET /v1/status`; and schema
/// `DashboardData`, `/dashboard/data`, which has no error text and no event lines).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The daemon's clock at its last pass; `None` before the first.
    pub at: Option<DateTime<Utc>>,
    pub passes: u64,
    /// The errors of the last pass as text (`None` on the dashboard, which has only
    /// their count).
    pub last_pass_errors: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pass_error_count: Option<usize>,
    pub fleets: Vec<FleetStatus>,
}

impl Status {
    /// What the dashboard may show without a token: no error text (it may name account
    /// details) and no event lines (hook output among them).
    pub fn for_dashboard(mut self) -> Status {
        self.last_pass_error_count = Some(self.last_pass_errors.take().map_or(0, |e| e.len()));
        for f in &mut self.fleets {
            if let Some(r) = &mut f.rollout {
                r.events.clear();
            }
        }
        self
    }
}
