//! Durable state: the build ledger (what was deployed where, and how it ended), approvals,
//! rollouts with their events. SQLite in WAL mode with synchronous commits: a row that was
//! written survives a crash of the process or the machine.
//!
//! This module owns the schema and every query; nothing else writes SQL.

mod handover;
pub use handover::{HandedRollout, Handover};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
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

    /// Start a deployment and its rollout in one transaction. The rollout's body is made
    /// from the new id, so it is stored whole or not at all. Returns the id.
    pub fn begin(
        &self,
        d: &Deployment,
        rollout_body: impl FnOnce(i64) -> Result<String, StoreError>,
    ) -> Result<i64, StoreError> {
        self.begin_keyed(d, None, rollout_body)
    }

    /// [`Store::begin`], and in the same transaction an idempotency key `(key, request)`:
    /// a retry with that key finds this rollout ([`Store::idempotency_key`]).
    pub fn begin_keyed(
        &self,
        d: &Deployment,
        key: Option<(&str, &str)>,
        rollout_body: impl FnOnce(i64) -> Result<String, StoreError>,
    ) -> Result<i64, StoreError> {
        let start = self.id_start.lock().ok().and_then(|s| *s);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // In a replica's own range: the next id after the highest one it handed out.
        let explicit: Option<i64> = match start {
            Some(start) => Some(tx.query_row(
                "SELECT COALESCE(MAX(id) + 1, ?1) FROM deployments WHERE id >= ?1 AND id < ?2",
                params![start, start + ID_RANGE],
                |r| r.get(0),
            )?),
            None => None,
        };
        tx.execute(
            "INSERT INTO deployments (id, app, env, fleet, build, label, outcome, reason, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
            params![
                explicit,
                d.app,
                d.env,
                d.fleet,
                d.build,
                d.label,
                Outcome::InProgress.as_str(),
                ts(d.started_at)
            ],
        )?;
        let id = tx.last_insert_rowid();
        let body = rollout_body(id)?;
        tx.execute(
            "INSERT INTO rollouts (id, fleet, active, body) VALUES (?1, ?2, 1, ?3)",
            params![id, d.fleet, body],
        )?;
        if let Some((key, request)) = key {
            tx.execute(
                "INSERT INTO idempotency_keys (key, rollout, request, at) VALUES (?1, ?2, ?3, ?4)",
                params![key, id, request, ts(d.started_at)],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Record that idempotency key `key` (for `request`) names rollout `id`, unless the
    /// key is already taken.
    pub fn remember_idempotency_key(
        &self,
        key: &str,
        id: i64,
        request: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO idempotency_keys (key, rollout, request, at) VALUES (?1, ?2, ?3, ?4)",
            params![key, id, request, ts(at)],
        )?;
        Ok(())
    }

    /// The rollout an idempotency key started, and the request it was given for
    /// (`"fleet env build"`), if the key was used.
    pub fn idempotency_key(&self, key: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT rollout, request FROM idempotency_keys WHERE key = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Save a rollout's state (and whether it still runs).
    pub fn save_rollout(&self, id: i64, active: bool, body: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE rollouts SET active = ?2, body = ?3 WHERE id = ?1",
            params![id, active as i64, body],
        )?;
        Ok(())
    }

    /// Record how a deployment ended, and its rollout's final state, together.
    pub fn finish(
        &self,
        id: i64,
        outcome: Outcome,
        reason: Option<&str>,
        at: DateTime<Utc>,
        rollout_body: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE deployments SET outcome = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, outcome.as_str(), reason, ts(at)],
        )?;
        tx.execute(
            "UPDATE rollouts SET active = 0, body = ?2 WHERE id = ?1",
            params![id, rollout_body],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Bodies of rollouts still running, oldest first.
    pub fn active_rollouts(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, body FROM rollouts WHERE active = 1 ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn rollout(&self, id: i64) -> Result<Option<(bool, String)>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT active, body FROM rollouts WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)),
            )
            .optional()?)
    }

    /// Rollout `id`'s state, parsed (None if there is no such rollout).
    pub fn rollout_state(&self, id: i64) -> Result<Option<crate::deploy::Rollout>, StoreError> {
        match self.rollout(id)? {
            Some((_, body)) => Ok(Some(serde_json::from_str(&body)?)),
            None => Ok(None),
        }
    }

    /// The desired capacity the policy set last for `fleet` (rollouts size against it).
    pub fn base_desired(&self, fleet: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT base_desired FROM fleet_state WHERE fleet = ?1",
                [fleet],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .and_then(|v| u32::try_from(v).ok()))
    }

    pub fn set_base_desired(
        &self,
        fleet: &str,
        desired: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO fleet_state (fleet, base_desired, at) VALUES (?1, ?2, ?3)
             ON CONFLICT(fleet) DO UPDATE SET base_desired = excluded.base_desired, at = excluded.at",
            params![fleet, i64::from(desired), ts(at)],
        )?;
        Ok(())
    }

    /// Start this database's deployment ids at `from` or later, so replicas never hand out
    /// the same id.
    pub fn start_ids_at(&self, from: i64) -> Result<(), StoreError> {
        if let Ok(mut start) = self.id_start.lock() {
            *start = Some(from);
        }
        let conn = self.conn();
        let max: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM deployments", [], |r| {
            r.get(0)
        })?;
        if max < from {
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'deployments'", [])?;
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('deployments', ?1)",
                [from - 1],
            )?;
        }
        Ok(())
    }

    /// What a fleet's rollout state in memory was at the end of the last pass (JSON).
    pub fn fleet_memory(&self, fleet: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT body FROM fleet_memory WHERE fleet = ?1",
                [fleet],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_fleet_memory(&self, fleet: &str, body: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO fleet_memory (fleet, body) VALUES (?1, ?2)
             ON CONFLICT(fleet) DO UPDATE SET body = excluded.body",
            params![fleet, body],
        )?;
        Ok(())
    }

    /// Write a launch request before RunInstances is called with its ClientToken. It stays
    /// until the answer is known ([`Store::forget_launch`]): a daemon that stopped, or a
    /// call that failed without telling whether EC2 acted, sends the same request again
    /// under the same token, so a retry never launches twice.
    pub fn remember_launch(
        &self,
        token: &str,
        fleet: &str,
        at: DateTime<Utc>,
        body: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO pending_launches (token, fleet, at, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(token) DO UPDATE SET body = excluded.body",
            params![token, fleet, ts(at), body],
        )?;
        Ok(())
    }

    /// The answer to a launch is known: it no longer needs to be sent again.
    pub fn forget_launch(&self, token: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM pending_launches WHERE token = ?1", [token])?;
        Ok(())
    }

    /// Launches of `fleet` whose answer is not known, oldest first: (token, written at, body).
    pub fn pending_launches(
        &self,
        fleet: &str,
    ) -> Result<Vec<(String, DateTime<Utc>, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT token, at, body FROM pending_launches WHERE fleet = ?1 ORDER BY at, token",
        )?;
        let rows = stmt.query_map([fleet], |r| {
            Ok((
                r.get::<_, String>(0)?,
                parse_ts(&r.get::<_, String>(1)?),
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Record a scaling decision that changes capacity, with its reason (the audit log).
    pub fn record_decision(
        &self,
        at: DateTime<Utc>,
        fleet: &str,
        current: u32,
        desired: u32,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO decisions (at, fleet, current, desired, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(at), fleet, i64::from(current), i64::from(desired), reason],
        )?;
        Ok(())
    }

    /// The newest `limit` decisions of `fleet`, oldest first: (at, current, desired, reason).
    pub fn decisions(&self, fleet: &str, limit: usize) -> Result<Vec<DecisionRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at, current, desired, reason FROM decisions WHERE fleet = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![fleet, limit as i64], |r| {
            Ok((
                parse_ts(&r.get::<_, String>(0)?),
                u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                u32::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        out.reverse();
        Ok(out)
    }

    /// Record an intent before acting; returns its id for [`Store::action_done`].
    pub fn action_intent(
        &self,
        at: DateTime<Utc>,
        fleet: &str,
        action: &str,
        detail: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO actions (at, fleet, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![ts(at), fleet, action, detail],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Record how an intent ended ("ok: ...", "failed: ...").
    pub fn action_done(&self, id: i64, at: DateTime<Utc>, outcome: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE actions SET outcome = ?2, done_at = ?3 WHERE id = ?1",
            params![id, outcome, ts(at)],
        )?;
        Ok(())
    }

    /// Intents without an outcome: what was in flight when the daemon last stopped.
    pub fn unfinished_actions(&self) -> Result<Vec<ActionRecord>, StoreError> {
        self.actions_where("done_at IS NULL", 1000)
    }

    /// The newest `limit` journal entries, oldest first.
    pub fn recent_actions(&self, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        let mut v = self.actions_where("1 = 1", limit)?;
        v.reverse();
        Ok(v)
    }

    fn actions_where(&self, cond: &str, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, at, fleet, action, detail, outcome FROM actions WHERE {cond} ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(ActionRecord {
                id: r.get(0)?,
                at: parse_ts(&r.get::<_, String>(1)?),
                fleet: r.get(2)?,
                action: r.get(3)?,
                detail: r.get(4)?,
                outcome: r.get(5)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Mark intents left open by a crash as interrupted (after they were reported).
    pub fn close_interrupted(&self, at: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE actions SET outcome = 'interrupted: the daemon stopped before the outcome was known; reconciled by tags on restart', done_at = ?1 WHERE done_at IS NULL",
            params![ts(at)],
        )?)
    }

    pub fn add_event(
        &self,
        rollout: i64,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        let seq: i64 = conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE rollout = ?1",
            [rollout],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO events (rollout, seq, at, message) VALUES (?1, ?2, ?3, ?4)",
            params![rollout, seq, ts(at), message],
        )?;
        Ok(seq)
    }

    pub fn events_after(&self, rollout: i64, after: i64) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at, message FROM events WHERE rollout = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![rollout, after], |r| {
            Ok(Event {
                seq: r.get(0)?,
                at: parse_ts(&r.get::<_, String>(1)?),
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn deployment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
        Ok(Deployment {
            id: r.get(0)?,
            app: r.get(1)?,
            env: r.get(2)?,
            fleet: r.get(3)?,
            build: r.get(4)?,
            label: r.get(5)?,
            outcome: Outcome::parse(&r.get::<_, String>(6)?),
            reason: r.get(7)?,
            started_at: parse_ts(&r.get::<_, String>(8)?),
            finished_at: r.get::<_, Option<String>>(9)?.map(|s| parse_ts(&s)),
        })
    }

    const DEPLOYMENT_COLUMNS: &'static str =
        "id, app, env, fleet, build, label, outcome, reason, started_at, finished_at";

    pub fn deployment(&self, id: i64) -> Result<Option<Deployment>, StoreError> {
        let sql = format!(
            "SELECT {} FROM deployments WHERE id = ?1",
            Self::DEPLOYMENT_COLUMNS
        );
        Ok(self
            .conn()
            .query_row(&sql, [id], Self::deployment_from_row)
            .optional()?)
    }

    /// The ledger of an app (or of one fleet, by its name), newest first (by start time:
    /// ids from different replicas are not in time order).
    pub fn history(&self, app: &str, limit: usize) -> Result<Vec<Deployment>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {} FROM deployments WHERE app = ?1 OR fleet = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2",
            Self::DEPLOYMENT_COLUMNS
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![app, limit as i64], Self::deployment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One fleet's ledger alone, newest first.
    pub fn fleet_history(&self, fleet: &str, limit: usize) -> Result<Vec<Deployment>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {} FROM deployments WHERE fleet = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2",
            Self::DEPLOYMENT_COLUMNS
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![fleet, limit as i64], Self::deployment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deployments started or finished at `since` or later, oldest first.
    pub fn deployments_since(&self, since: DateTime<Utc>) -> Result<Vec<Deployment>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {} FROM deployments WHERE started_at >= ?1 OR finished_at >= ?1 ORDER BY started_at, id",
            Self::DEPLOYMENT_COLUMNS
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([ts(since)], Self::deployment_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether `build` of `app` passed `env`, for promotion: it went live there with every
    /// gate green, and was not rolled back there since (its last finished deployment
    /// there succeeded).
    pub fn passed(&self, app: &str, env: &str, build: &str) -> Result<bool, StoreError> {
        let last: Option<String> = self
            .conn()
            .query_row(
                "SELECT outcome FROM deployments WHERE app = ?1 AND env = ?2 AND build = ?3 AND outcome != 'in_progress' AND outcome != 'superseded' ORDER BY finished_at DESC, id DESC LIMIT 1",
                params![app, env, build],
                |r| r.get(0),
            )
            .optional()?;
        Ok(last.as_deref() == Some(Outcome::Succeeded.as_str()))
    }

    /// The label (commit, version) `build` of `app` was last deployed with, if any.
    pub fn label_of(&self, app: &str, build: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT label FROM deployments WHERE app = ?1 AND build = ?2 AND label IS NOT NULL AND label NOT IN ('rollback', 'rolled back') ORDER BY id DESC LIMIT 1",
                params![app, build],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Whether `build` of `app` was ever live in `env` (a rollback may go back to it).
    pub fn went_live(&self, app: &str, env: &str, build: &str) -> Result<bool, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM deployments WHERE app = ?1 AND env = ?2 AND build = ?3 AND outcome = 'succeeded'",
            params![app, env, build],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Record that `build` was rolled back in `env` (a rollback left it): a finished
    /// ledger row, so it no longer counts as passed there.
    pub fn record_rolled_back(
        &self,
        d: &Deployment,
        reason: &str,
        at: DateTime<Utc>,
        rollout_body: impl Fn(i64) -> Result<String, StoreError>,
    ) -> Result<i64, StoreError> {
        let id = self.begin(d, &rollout_body)?;
        self.finish(
            id,
            Outcome::RolledBack,
            Some(reason),
            at,
            &rollout_body(id)?,
        )?;
        Ok(id)
    }

    /// The build last made live in an environment for a fleet.
    pub fn live_build(&self, fleet: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT build FROM deployments WHERE fleet = ?1 AND outcome = 'succeeded' ORDER BY finished_at DESC, id DESC LIMIT 1",
                [fleet],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Write a ledger row as another replica recorded it (same id), or bring a row this
    /// database has up to date with it. Rollout bodies are not touched.
    pub fn upsert_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO deployments (id, app, env, fleet, build, label, outcome, reason, started_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(id) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason,
                 finished_at = excluded.finished_at",
            params![
                d.id,
                d.app,
                d.env,
                d.fleet,
                d.build,
                d.label,
                d.outcome.as_str(),
                d.reason,
                ts(d.started_at),
                d.finished_at.map(ts)
            ],
        )?;
        Ok(())
    }

    /// One point of a fleet's chart (the dashboard's history survives restarts). Points
    /// older than a day before it are deleted.
    pub fn add_sample(&self, fleet: &str, p: &SamplePoint) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM samples WHERE fleet = ?1 AND at < ?2",
            params![fleet, ts(p.at - chrono::Duration::days(1))],
        )?;
        conn.execute(
            "INSERT OR REPLACE INTO samples (fleet, at, desired, ready, booting, demand)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                fleet,
                ts(p.at),
                i64::from(p.desired),
                i64::from(p.ready),
                i64::from(p.booting),
                p.demand
            ],
        )?;
        Ok(())
    }

    /// Chart points since `since`, oldest first, by fleet; older ones are deleted.
    pub fn samples_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, SamplePoint)>, StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM samples WHERE at < ?1", [ts(since)])?;
        let mut stmt = conn.prepare(
            "SELECT fleet, at, desired, ready, booting, demand FROM samples ORDER BY fleet, at",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                SamplePoint {
                    at: parse_ts(&r.get::<_, String>(1)?),
                    desired: r.get(2)?,
                    ready: r.get(3)?,
                    booting: r.get(4)?,
                    demand: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn approve(&self, a: &Approval) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO approvals (app, build, by, at) VALUES (?1, ?2, ?3, ?4)",
            params![a.app, a.build, a.by, ts(a.at)],
        )?;
        Ok(())
    }

    pub fn approvals(&self, app: &str, build: &str) -> Result<Vec<Approval>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT app, build, by, at FROM approvals WHERE app = ?1 AND build = ?2 ORDER BY at",
        )?;
        let rows = stmt.query_map(params![app, build], |r| {
            Ok(Approval {
                app: r.get(0)?,
                build: r.get(1)?,
                by: r.get(2)?,
                at: parse_ts(&r.get::<_, String>(3)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
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
