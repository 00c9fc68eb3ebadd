//! The action journal: an intent before each change to the cloud, its outcome after.

use super::{parse_ts, ts, ActionRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::params;

impl Store {
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
}
