//! The build ledger: deployments and how they ended, idempotency keys, approvals, and
//! the questions promotion asks (did this build pass that environment? what is live?).

use super::{parse_ts, ts, Approval, Deployment, Outcome, Store, StoreError, ID_RANGE};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

impl Store {
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
