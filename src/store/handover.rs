//! What a fleet's owner hands to the next replica: exported after each pass (with a
//! fenced write, see `crate::replica`), taken in when a replica takes the fleet's lease.

use super::{ts, Deployment, Outcome, Store, StoreError, EXPORTED_LEDGER_ROWS};
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// Everything another replica needs to carry on with a fleet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Handover {
    /// The fleet's base desired capacity (what its policies last decided).
    #[serde(default)]
    pub base_desired: Option<u32>,
    /// The fleet's rollout memory, as stored (JSON text).
    #[serde(default)]
    pub memory: Option<String>,
    /// Every active rollout of the fleet: the running one and any queued behind it.
    #[serde(default)]
    pub rollouts: Vec<HandedRollout>,
    /// One rollout, as replicas wrote it before queued ones were handed over too; read,
    /// never written.
    #[serde(default, skip_serializing)]
    pub rollout: Option<HandedRollout>,
    /// The fleet's most recent finished ledger rows (its live build among them).
    #[serde(default)]
    pub recent: Vec<Deployment>,
}

/// An active rollout with its ledger row. It keeps its id on the next replica (the API and
/// the CLI follow it by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedRollout {
    pub id: i64,
    pub app: String,
    pub env: String,
    pub fleet: String,
    pub build: String,
    #[serde(default)]
    pub label: Option<String>,
    pub started_at: DateTime<Utc>,
    /// The rollout's state, as stored (JSON text).
    pub body: String,
}

impl Store {
    /// Everything another replica needs to carry on with `fleet`: the desired capacity,
    /// the rollout memory, the active rollouts with their ledger rows, and the fleet's
    /// recent finished ledger rows.
    pub fn export_fleet(&self, fleet: &str) -> Result<Handover, StoreError> {
        let recent: Vec<Deployment> = self
            .fleet_history(fleet, EXPORTED_LEDGER_ROWS)?
            .into_iter()
            .filter(|d| d.outcome != Outcome::InProgress)
            .collect();
        let mut rollouts = Vec::new();
        for (id, body) in self.active_rollouts()? {
            if let Some(d) = self.deployment(id)? {
                if d.fleet == fleet {
                    rollouts.push(HandedRollout {
                        id: d.id,
                        app: d.app,
                        env: d.env,
                        fleet: d.fleet,
                        build: d.build,
                        label: d.label,
                        started_at: d.started_at,
                        body,
                    });
                }
            }
        }
        Ok(Handover {
            base_desired: self.base_desired(fleet)?,
            memory: self.fleet_memory(fleet)?,
            rollouts,
            rollout: None,
            recent,
        })
    }

    /// Take in what [`Store::export_fleet`] wrote on another replica.
    pub fn import_fleet(
        &self,
        fleet: &str,
        h: &Handover,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(b) = h.base_desired {
            self.set_base_desired(fleet, b, at)?;
        }
        if let Some(m) = &h.memory {
            self.set_fleet_memory(fleet, m)?;
        }
        // The ledger as the previous owner left it: finished rows (the live build among
        // them). A rollout this database still has open for the fleet, other than the ones
        // handed over, finished elsewhere: close it, with its outcome when it is known.
        for d in &h.recent {
            self.upsert_deployment(d)?;
        }
        let handed: Vec<&HandedRollout> = h.rollouts.iter().chain(h.rollout.iter()).collect();
        let handed_over: Vec<i64> = handed.iter().map(|r| r.id).collect();
        for (id, _) in self.active_rollouts()? {
            let Some(d) = self.deployment(id)? else {
                continue;
            };
            if d.fleet != fleet || handed_over.contains(&id) {
                continue;
            }
            let conn = self.conn();
            if d.outcome == Outcome::InProgress {
                conn.execute(
                    "UPDATE deployments SET outcome = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1",
                    params![
                        id,
                        Outcome::Superseded.as_str(),
                        "left behind when the fleet moved to another replica",
                        ts(at)
                    ],
                )?;
            }
            conn.execute("UPDATE rollouts SET active = 0 WHERE id = ?1", [id])?;
        }
        for r in handed {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO deployments (id, app, env, fleet, build, label, outcome, reason, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)
                 ON CONFLICT(id) DO UPDATE SET outcome = excluded.outcome",
                params![
                    r.id,
                    r.app,
                    r.env,
                    r.fleet,
                    r.build,
                    r.label,
                    Outcome::InProgress.as_str(),
                    ts(r.started_at)
                ],
            )?;
            tx.execute(
                "INSERT INTO rollouts (id, fleet, active, body) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT(id) DO UPDATE SET active = 1, body = excluded.body",
                params![r.id, fleet, r.body],
            )?;
            tx.commit()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, dep};
    use super::super::ID_RANGE;
    use super::*;

    /// Replica A ran a staging rollout, B took the fleet over and finished it, then went
    /// on to roll back another; A takes the fleet back. A must not resume its stale copy of
    /// the first rollout, and must know the live build B left.
    #[test]
    fn a_fleet_taken_back_closes_rollouts_finished_elsewhere_and_knows_the_live_build() {
        let a = Store::in_memory().expect("a");
        let b = Store::in_memory().expect("b");
        b.start_ids_at(1_000_000).expect("ids");
        let id = a
            .begin(&dep("staging", "ami-2"), |_| Ok("{\"step\":1}".into()))
            .expect("begin");
        // B takes over mid-rollout and finishes it.
        b.import_fleet(
            "web-staging",
            &a.export_fleet("web-staging").expect("export"),
            at(2),
        )
        .expect("import");
        assert_eq!(b.active_rollouts().expect("active").len(), 1);
        b.finish(id, Outcome::Succeeded, None, at(5), "{\"done\":1}")
            .expect("finish");
        let id2 = b
            .begin(&dep("staging", "ami-3"), |_| Ok("{}".into()))
            .expect("begin");
        b.finish(id2, Outcome::RolledBack, Some("gate failed"), at(8), "{}")
            .expect("finish");
        // A, whose database still has the first rollout open, takes the fleet back.
        assert_eq!(a.active_rollouts().expect("active").len(), 1);
        a.import_fleet(
            "web-staging",
            &b.export_fleet("web-staging").expect("export"),
            at(9),
        )
        .expect("import");
        assert!(a.active_rollouts().expect("active").is_empty());
        assert_eq!(
            a.live_build("web-staging").expect("live"),
            Some("ami-2".into())
        );
        assert!(a.passed("web", "staging", "ami-2").expect("passed"));
        let h = a.history("web-staging", 10).expect("history");
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[0].id, id2);
        assert_eq!(h[0].outcome, Outcome::RolledBack);
        assert_eq!(h[1].outcome, Outcome::Succeeded);
    }
    /// A rollout left open here that the exporter never saw finish is closed, not resumed.
    #[test]
    fn an_unknown_open_rollout_is_closed_as_left_behind_on_takeover() {
        let a = Store::in_memory().expect("a");
        let b = Store::in_memory().expect("b");
        let id = a
            .begin(&dep("staging", "ami-2"), |_| Ok("{}".into()))
            .expect("begin");
        a.import_fleet(
            "web-staging",
            &b.export_fleet("web-staging").expect("export"),
            at(3),
        )
        .expect("import");
        assert!(a.active_rollouts().expect("active").is_empty());
        let d = a.deployment(id).expect("read").expect("row");
        assert_eq!(d.outcome, Outcome::Superseded);
        assert!(d
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("another replica"));
    }
    /// Rows taken in from another replica keep their ids; this database's own ids stay in
    /// its range, and "live" means the success that finished last, not the highest id.
    #[test]
    fn ids_stay_in_the_replicas_range_and_the_live_build_is_the_latest_success() {
        let a = Store::in_memory().expect("a");
        let b = Store::in_memory().expect("b");
        a.start_ids_at(1).expect("ids");
        b.start_ids_at(1 + ID_RANGE).expect("ids");
        let on = |s: &Store, build: &str, start: u32, end: u32| {
            let mut d = dep("staging", build);
            d.started_at = at(start);
            let id = s.begin(&d, |_| Ok("{}".into())).expect("begin");
            s.finish(id, Outcome::Succeeded, None, at(end), "{}")
                .expect("finish");
            id
        };
        // B ran the fleet first (high ids), then A took it and deployed a newer build.
        let b1 = on(&b, "ami-2", 1, 2);
        a.import_fleet(
            "web-staging",
            &b.export_fleet("web-staging").expect("export"),
            at(3),
        )
        .expect("import");
        let a1 = on(&a, "ami-3", 4, 5);
        assert!(
            a1 < ID_RANGE,
            "A's own id {a1} is in A's range, not after B's {b1}"
        );
        assert_eq!(
            a.live_build("web-staging").expect("live"),
            Some("ami-3".into())
        );
        // B takes it back: it learns A's newer build even though A's id is lower.
        b.import_fleet(
            "web-staging",
            &a.export_fleet("web-staging").expect("export"),
            at(6),
        )
        .expect("import");
        assert_eq!(
            b.live_build("web-staging").expect("live"),
            Some("ami-3".into())
        );
        let b2 = on(&b, "ami-4", 7, 8);
        assert_eq!(b2, b1 + 1, "B's next id follows its own, not A's");
        let h = b.fleet_history("web-staging", 10).expect("history");
        let builds: Vec<&str> = h.iter().map(|d| d.build.as_str()).collect();
        assert_eq!(
            builds,
            vec!["ami-4", "ami-3", "ami-2"],
            "newest first by time"
        );
    }
    /// A queued rollout behind the running one travels with it.
    #[test]
    fn every_active_rollout_of_the_fleet_is_handed_over() {
        let a = Store::in_memory().expect("a");
        let b = Store::in_memory().expect("b");
        let running = a
            .begin(&dep("staging", "ami-2"), |_| Ok("{\"running\":1}".into()))
            .expect("begin");
        let queued = a
            .begin(&dep("staging", "ami-3"), |_| Ok("{\"queued\":1}".into()))
            .expect("begin");
        b.import_fleet(
            "web-staging",
            &a.export_fleet("web-staging").expect("export"),
            at(1),
        )
        .expect("import");
        let ids: Vec<i64> = b
            .active_rollouts()
            .expect("active")
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(ids, vec![running, queued]);
    }

    /// A handover written by an older replica (one `rollout`, timestamps as text) is read.
    #[test]
    fn a_handover_in_the_older_shape_is_read() {
        let text = r#"{"base_desired": 4, "memory": null, "recent": [],
            "rollout": {"id": 7, "app": "web", "env": "staging", "fleet": "web-staging",
                        "build": "ami-2", "label": null,
                        "started_at": "2026-01-05T09:00:00.000000Z", "body": "{}"}}"#;
        let h: Handover = serde_json::from_str(text).expect("parses");
        let b = Store::in_memory().expect("b");
        b.import_fleet("web-staging", &h, at(1)).expect("import");
        assert_eq!(b.base_desired("web-staging").expect("read"), Some(4));
        let ids: Vec<i64> = b
            .active_rollouts()
            .expect("active")
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(ids, vec![7]);
        // And what is written now round-trips.
        let again: Handover = serde_json::from_str(
            &serde_json::to_string(&b.export_fleet("web-staging").expect("export")).expect("json"),
        )
        .expect("parses");
        assert_eq!(again.rollouts.len(), 1);
        assert_eq!(again.rollouts[0].started_at, at(0));
    }
}
