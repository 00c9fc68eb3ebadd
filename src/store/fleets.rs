//! What the controller keeps per fleet: its base desired capacity, rollout memory,
//! launches whose answer was lost (resent under their token) and recent decisions.

use super::{parse_ts, ts, DecisionRow, Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

impl Store {
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
}
