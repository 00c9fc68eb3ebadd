//! A rollout's start and end: pre-deploy hooks before any instance changes, and what a
//! finished rollout leaves (the ledger, the live build, post-deploy hooks).

use super::super::{Controller, PassReport};
use crate::deploy::{self, process, Gates, Phase, Rollout};
use crate::manifest::FleetSpec;
use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

impl Controller {
    /// Pre-deploy hooks: start them (again, after a restart: hooks must be safe to
    /// repeat, like migrations), and when they end, start rolling or give up. An abort
    /// (`rollback`, `abort`, a superseding deploy) or the deploy's deadline stops them at
    /// once: the hook's process group is killed and the rollout ends with nothing changed.
    /// Returns whether the rollout may act on instances this pass.
    pub(super) async fn pre_deploy(
        &mut self,
        r: &Rollout,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> bool {
        if r.phase != Phase::PreDeploy {
            return true;
        }
        // Shown by `status`, the dashboard and metrics like any other phase.
        report.rollouts.push(super::super::RolloutReport {
            id: r.id,
            fleet: r.fleet.clone(),
            from: r.from.id.clone(),
            to: r.to.id.clone(),
            phase: r.phase.name().to_string(),
            step: r.step,
            gates: Gates::Waiting(format!(
                "{} pre-deploy hook(s) running",
                r.deploy.hooks.pre_deploy.len()
            )),
        });
        let stop = match (&r.abort, r.deadline) {
            (Some(why), _) => Some((why.clone(), r.timed_out)),
            (None, Some(t)) if now >= t => Some(("deploy --timeout reached".to_string(), true)),
            _ => None,
        };
        if let Some((why, timed_out)) = stop {
            if let Some(handle) = self.hooks.remove(&r.id) {
                // Dropping the hook's future kills its process group; wait for that.
                handle.abort();
                let _ = handle.await;
            }
            let mut next = r.clone();
            next.abort = None;
            next.timed_out = timed_out;
            let reason = format!(
                "{why} during the pre-deploy hooks: they were stopped (process group killed); no instance changed, {} stays live",
                r.from.id
            );
            self.record(&next, now, &reason);
            next.phase = Phase::RolledBack { reason };
            self.save(&next, now);
            Self::reported_phase(report, &next);
            return false;
        }
        let Some(handle) = self.hooks.get(&r.id) else {
            let (hooks, build, fleet, env) = (
                r.deploy.hooks.pre_deploy.clone(),
                r.to.id.clone(),
                r.fleet.clone(),
                r.env.clone(),
            );
            self.record(
                r,
                now,
                &format!("running {} pre-deploy hook(s)", hooks.len()),
            );
            self.hooks
                .insert(r.id, process::spawn_hooks(hooks, build, fleet, env));
            return false;
        };
        if !handle.is_finished() {
            return false;
        }
        let Some(handle) = self.hooks.remove(&r.id) else {
            return false;
        };
        // Finished: awaiting returns at once.
        let run = match handle.await {
            Ok(run) => run,
            Err(e) => process::HookRun {
                lines: vec![],
                failure: Some(format!("the hook task failed: {e}")),
            },
        };

        for l in &run.lines {
            self.record(r, now, l);
        }
        let mut next = r.clone();
        match run.failure {
            None => {
                next.phase = Phase::Rolling;
                next.step_started = now;
                self.record(&next, now, "pre-deploy hooks done; rolling");
            }
            Some(why) => {
                let reason = format!("pre-deploy hook failed before any instance changed: {why}");
                self.record(&next, now, &reason);
                next.phase = Phase::RolledBack { reason };
            }
        }
        self.save(&next, now);
        Self::reported_phase(report, &next);
        false
    }

    pub(super) fn rollout_finished(&mut self, spec: &FleetSpec, r: &Rollout, now: DateTime<Utc>) {
        if let Some(state) = self.fleets.get_mut(&spec.name) {
            state.smoke_failures.clear();
            state.launch_rejected = None;
        }
        // Smoke tests still running for this fleet end with it.
        let runs: Vec<String> = self
            .smoke_runs
            .iter()
            .filter(|(_, (f, _))| *f == spec.name)
            .map(|(id, _)| id.clone())
            .collect();
        for id in runs {
            if let Some((_, h)) = self.smoke_runs.remove(&id) {
                h.abort();
            }
        }
        match &r.phase {
            Phase::Succeeded => {
                self.current.insert(spec.name.clone(), r.to.clone());
                if !r.deploy.hooks.post_deploy.is_empty() {
                    let (hooks, build, fleet, env, id) = (
                        r.deploy.hooks.post_deploy.clone(),
                        r.to.id.clone(),
                        r.fleet.clone(),
                        r.env.clone(),
                        r.id,
                    );
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        let run = process::run(&hooks, &build, &fleet, &env).await;
                        let at = chrono::Utc::now();
                        for l in run.lines.iter().chain(run.failure.iter()) {
                            info!(fleet = %fleet, rollout = id, "post-deploy: {l}");
                            if let Err(e) = store.add_event(id, at, &format!("post-deploy {l}")) {
                                error!(rollout = id, error = %e, "cannot record rollout event");
                            }
                        }
                        if let Some(f) = run.failure {
                            warn!(fleet = %fleet, rollout = id, "post-deploy hook failed (the build stays live): {f}");
                        }
                    });
                }
                if r.kind == deploy::Kind::Rollback {
                    // The build left is no longer "passed" here (promotion reads it).
                    let store = &self.store;
                    let left = crate::store::Deployment {
                        id: 0,
                        app: r.app.clone(),
                        env: r.env.clone(),
                        fleet: r.fleet.clone(),
                        build: r.from.id.clone(),
                        // The label the build left was deployed with (its commit).
                        label: store.label_of(&r.app, &r.from.id).ok().flatten(),
                        outcome: crate::store::Outcome::RolledBack,
                        reason: None,
                        started_at: r.started,
                        finished_at: None,
                    };
                    let why = format!("rolled back by rollback #{} to {}", r.id, r.to.id);
                    // Its rollout record: from the build restored to the one left.
                    let body = |id: i64| {
                        let mut m = r.clone();
                        m.id = id;
                        m.kind = deploy::Kind::Deploy;
                        m.ledger_only = true;
                        std::mem::swap(&mut m.from, &mut m.to);
                        m.phase = Phase::RolledBack {
                            reason: why.clone(),
                        };
                        Ok(serde_json::to_string(&m)?)
                    };
                    if let Err(e) = store.record_rolled_back(&left, &why, now, body) {
                        warn!(fleet = %spec.name, error = %e, "cannot record in the ledger that {} was rolled back", r.from.id);
                    }
                    self.record(
                        r,
                        now,
                        &format!(
                            "rollback #{} done: {} is live again on {}",
                            r.id, r.to.id, r.fleet
                        ),
                    );
                } else {
                    self.record(
                        r,
                        now,
                        &format!(
                            "rollout #{} succeeded: {} is live on {}",
                            r.id, r.to.id, r.fleet
                        ),
                    );
                }
            }
            Phase::RolledBack { reason } => {
                self.current.insert(spec.name.clone(), r.from.clone());
                warn!(fleet = %spec.name, rollout = r.id, "rollout rolled back: {reason}");
                self.record(r, now, &format!("rollout #{} rolled back: {reason}", r.id));
            }
            _ => {}
        }
    }
}
