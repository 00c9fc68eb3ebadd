//! Durable state: the build ledger (what was deployed where, and how it ended), approvals,
//! rollouts with their events. SQLite in WAL mode with synchronous commits: a row that was
//! written survives a crash of the process or the machine.
//!
//! This module owns the schema and every query; nothing else writes SQL.

mod fleets;
mod handover;
mod journal;
mod ledger;
mod rollouts;
mod samples;
pub use handover::{HandedRollout, Handover};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds a rollout that does not parse: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// How a deployment of a build to an environment ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InProgress,
    /// Live, every gate green.
    Succeeded,
    /// A gate failed or the rollout timed out; the previous build was restored.
    RolledBack,
    /// Replaced by a newer request before it finished (on_conflict: supersede).
    Superseded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack => "rolled_back",
            Outcome::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "succeeded" => Outcome::Succeeded,
            "rolled_back" => Outcome::RolledBack,
            "superseded" => Outcome::Superseded,
            _ => Outcome::InProgress,
        }
    }
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: i64,
    pub app: String,
    pub env: String,
    pub fleet: String,
    pub build: String,
    pub label: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub app: String,
    pub build: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// One point of a fleet's capacity-against-demand chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplePoint {
    pub at: DateTime<Utc>,
    pub desired: u32,
    pub ready: u32,
    pub booting: u32,
    /// The fleet's first demand metric, if it has one.
    pub demand: Option<f64>,
}

/// A progress line of a rollout, as streamed to the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub message: String,
}

pub struct Store {
    conn: Mutex<Connection>,
    /// Replicas: the ids this database hands out, `[start, start + ID_RANGE)`, so that
    /// rows taken in from other replicas (with their ids) never collide with ours.
    id_start: Mutex<Option<i64>>,
}

/// How many deployment ids each replica's range holds.
pub const ID_RANGE: i64 = 1 << 20;

/// How many finished ledger rows of a fleet travel with it to another replica.
const EXPORTED_LEDGER_ROWS: usize = 50;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL, env TEXT NOT NULL, fleet TEXT NOT NULL,
    build TEXT NOT NULL, label TEXT,
    outcome TEXT NOT NULL, reason TEXT,
    started_at TEXT NOT NULL, finished_at TEXT
);
CREATE INDEX IF NOT EXISTS deployments_by_app ON deployments (app, env, build);
CREATE TABLE IF NOT EXISTS approvals (
    app TEXT NOT NULL, build TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (app, build, by)
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY REFERENCES deployments(id),
    fleet TEXT NOT NULL,
    active INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_active ON rollouts (active, fleet);
CREATE TABLE IF NOT EXISTS events (
    rollout INTEGER NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (rollout, seq)
);
CREATE TABLE IF NOT EXISTS fleet_state (
    fleet TEXT PRIMARY KEY,
    base_desired INTEGER NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_memory (
    fleet TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL, fleet TEXT NOT NULL,
    current INTEGER NOT NULL, desired INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL, fleet TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL,
    outcome TEXT, done_at TEXT
);
CREATE INDEX IF NOT EXISTS actions_open ON actions (done_at);
CREATE TABLE IF NOT EXISTS pending_launches (
    token TEXT PRIMARY KEY,
    fleet TEXT NOT NULL, at TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY, rollout INTEGER NOT NULL, request TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    fleet TEXT NOT NULL, at TEXT NOT NULL,
    desired INTEGER NOT NULL, ready INTEGER NOT NULL, booting INTEGER NOT NULL, demand REAL,
    PRIMARY KEY (fleet, at)
);
";

/// A recorded decision: (when, from, to, reason).
pub type DecisionRow = (DateTime<Utc>, u32, u32, String);

/// One entry of the action journal: written as an intent before the cloud call, completed
/// with its outcome after.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub fleet: String,
    pub action: String,
    pub detail: String,
    pub outcome: Option<String>,
}

/// Fixed width (microseconds, `Z`), so that text order is time order in SQL.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl Store {
    /// Open (creating if needed) the database at `path`; `:memory:` for a throwaway one.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|source| StoreError::Open {
                path: shown.clone(),
                source,
            })?;
        tracing::debug!(journal_mode = %mode, path = %shown, "state database open");
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
            id_start: Mutex::new(None),
        })
    }

    pub fn in_memory() -> Result<Store, StoreError> {
        Self::open(Path::new(":memory:"))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    const DEPLOYMENT_COLUMNS: &'static str =
        "id, app, env, fleet, build, label, outcome, reason, started_at, finished_at";
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(super) fn at(m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 9, m, 0)
            .single()
            .expect("valid")
    }

    pub(super) fn dep(env: &str, build: &str) -> Deployment {
        Deployment {
            id: 0,
            app: "web".into(),
            env: env.into(),
            fleet: format!("web-{env}"),
            build: build.into(),
            label: Some("abc123".into()),
            outcome: Outcome::InProgress,
            reason: None,
            started_at: at(0),
            finished_at: None,
        }
    }

    #[test]
    fn the_ledger_records_outcomes_and_answers_promotion_questions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let s = Store::open(&path).expect("open");
            let id = s
                .begin(&dep("staging", "ami-2"), |_| Ok("{}".into()))
                .expect("begin");
            assert!(!s.passed("web", "staging", "ami-2").expect("query"));
            assert_eq!(s.active_rollouts().expect("active").len(), 1);
            s.finish(id, Outcome::Succeeded, None, at(5), "{\"done\":1}")
                .expect("finish");
            let id2 = s
                .begin(&dep("production", "ami-3"), |_| Ok("{}".into()))
                .expect("begin");
            s.finish(id2, Outcome::RolledBack, Some("5xx over 1%"), at(9), "{}")
                .expect("finish");
            s.approve(&Approval {
                app: "web".into(),
                build: "ami-2".into(),
                by: "ana".into(),
                at: at(6),
            })
            .expect("approve");
        }
        // Reopened: everything is still there.
        let s = Store::open(&path).expect("reopen");
        assert!(s.passed("web", "staging", "ami-2").expect("query"));
        assert!(!s.passed("web", "production", "ami-3").expect("query"));
        assert!(s.active_rollouts().expect("active").is_empty());
        assert_eq!(
            s.live_build("web-staging").expect("live"),
            Some("ami-2".into())
        );
        assert_eq!(s.live_build("web-production").expect("live"), None);
        let h = s.history("web", 10).expect("history");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].outcome, Outcome::RolledBack);
        assert_eq!(h[0].reason.as_deref(), Some("5xx over 1%"));
        assert_eq!(s.approvals("web", "ami-2").expect("approvals").len(), 1);
    }

    #[test]
    fn events_are_numbered_per_rollout() {
        let s = Store::in_memory().expect("open");
        let id = s
            .begin(&dep("staging", "ami-2"), |_| Ok("{}".into()))
            .expect("begin");
        s.add_event(id, at(1), "step 1").expect("event");
        s.add_event(id, at(2), "step 2").expect("event");
        let e = s.events_after(id, 1).expect("events");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].seq, 2);
        assert_eq!(e[0].message, "step 2");
    }
}
