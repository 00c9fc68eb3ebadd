//! Rollouts' stored state (the body `deploy::advance` works on) and their events.

use super::{parse_ts, ts, Event, Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Save a rollout's state (and whether it still runs).
    pub fn save_rollout(&self, id: i64, active: bool, body: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE rollouts SET active = ?2, body = ?3 WHERE id = ?1",
            params![id, active as i64, body],
        )?;
        Ok(())
    }

    /// Rollouts still running (queued ones too), parsed, oldest first. A body that does
    /// not parse is logged and left out, so that one bad row does not stop the others.
    pub fn running_rollouts(&self) -> Result<Vec<crate::deploy::Rollout>, StoreError> {
        let mut out = Vec::new();
        for (id, body) in self.active_rollouts()? {
            match serde_json::from_str(&body) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::error!(rollout = id, error = %e, "rollout in the state database does not parse; ignoring it")
                }
            }
        }
        Ok(out)
    }

    /// Raw bodies of rollouts still running, oldest first (a handover moves them as they
    /// are; everything else reads [`Store::running_rollouts`]).
    pub fn active_rollouts(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, body FROM rollouts WHERE active = 1 ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rollout `id`, parsed, and whether it still runs (None: no such rollout).
    pub fn rollout(&self, id: i64) -> Result<Option<(bool, crate::deploy::Rollout)>, StoreError> {
        match self.rollout_row(id)? {
            Some((active, body)) => Ok(Some((active, serde_json::from_str(&body)?))),
            None => Ok(None),
        }
    }

    /// Whether rollout `id` still runs, without reading its body (None: no such rollout).
    pub fn rollout_active(&self, id: i64) -> Result<Option<bool>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT active FROM rollouts WHERE id = ?1", [id], |r| {
                Ok(r.get::<_, i64>(0)? != 0)
            })
            .optional()?)
    }

    fn rollout_row(&self, id: i64) -> Result<Option<(bool, String)>, StoreError> {
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
        Ok(self.rollout(id)?.map(|(_, r)| r))
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
}
