//! The dashboard's chart points, kept across restarts.

use super::{parse_ts, ts, SamplePoint, Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::params;

impl Store {
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
}
