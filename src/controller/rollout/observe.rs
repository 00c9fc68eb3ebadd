//! What a rollout observes each pass: the new instances' health (running, status checks,
//! smoke commands in the background, target health) and the fleet gates' readings, judged
//! by `crate::deploy::gates`.

use super::super::{note_error, Controller, PassReport};
use crate::cloud::{Instance, InstanceState, MetricQuery, TargetHealth};
use crate::deploy::gates::{self, CanarySamples, FleetReadings};
use crate::deploy::{self, process, Gates, Rollout};
use crate::manifest::{FleetSpec, MetricSpec};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use tracing::warn;

impl Controller {
    /// New instances that pass the instance gates: running, EC2 status checks, the smoke
    /// command, then target-group health (an instance is registered only once its smoke
    /// passed, so it serves no traffic before).
    /// Target-group health is skipped for instances not meant to be registered yet (the
    /// green set of a blue/green deploy before the switch).
    /// Smoke results are kept under `smoke_fleet` (the fleet's own name, also while a
    /// canary is checked against its canary target group), with `smoke_attempts` tries.
    pub(super) async fn healthy_new(
        &mut self,
        spec: &FleetSpec,
        smoke_fleet: &str,
        smoke_attempts: u32,
        new: &[&Instance],
        check_target: bool,
        report: &mut PassReport,
    ) -> NewHealth {
        let gates = &spec.deploy.gates.instance;
        let mut out = NewHealth::default();
        let mut ok: HashSet<String> = new
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| i.id.clone())
            .collect();
        if ok.is_empty() {
            return out;
        }
        if gates.status_checks {
            let ids: Vec<String> = ok.iter().cloned().collect();
            match self.cloud.instance_status(&ids).await {
                Ok(st) => {
                    let good: HashSet<String> = st
                        .into_iter()
                        .filter(|(_, g)| *g)
                        .map(|(id, _)| id)
                        .collect();
                    ok.retain(|id| good.contains(id));
                }
                Err(e) => {
                    note_error(report, &spec.name, &e);
                    return out;
                }
            }
        }
        if let Some(cmd) = &gates.smoke_command {
            self.smoke(smoke_fleet, cmd, smoke_attempts, new, &ok, &mut out)
                .await;
            let state = self.fleets.entry(smoke_fleet.to_string()).or_default();
            ok.retain(|id| state.smoke_passed.contains(id));
        }
        if ok.is_empty() {
            return out;
        }
        if let (true, true, Some(tg)) = (check_target, gates.target_healthy, &spec.target_group_arn)
        {
            match self.cloud.target_health(tg).await {
                Ok(h) => {
                    let good: HashSet<String> = h
                        .into_iter()
                        .filter(|(_, s)| *s == TargetHealth::Healthy)
                        .map(|(id, _)| id)
                        .collect();
                    ok.retain(|id| good.contains(id));
                }
                Err(e) => {
                    note_error(report, &spec.name, &e);
                    return out;
                }
            }
        }
        out.healthy = ok;
        out
    }

    /// Smoke commands, in the background: collect the ones that ended (a pass, or a
    /// failed try reported at once), start one for each instance `ready` for it that has
    /// neither passed nor run out of tries. Never waits for a command.
    pub(super) async fn smoke(
        &mut self,
        fleet: &str,
        cmd: &[String],
        attempts: u32,
        new: &[&Instance],
        ready: &HashSet<String>,
        out: &mut NewHealth,
    ) {
        let present: HashSet<&str> = new.iter().map(|i| i.id.as_str()).collect();
        // Ended runs of this fleet's instances; runs of instances gone are dropped (which
        // kills them).
        let ended: Vec<String> = self
            .smoke_runs
            .iter()
            .filter(|(id, (f, h))| {
                *f == fleet && (h.is_finished() || !present.contains(id.as_str()))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            let Some((_, handle)) = self.smoke_runs.remove(&id) else {
                continue;
            };
            if !present.contains(id.as_str()) {
                handle.abort();
                continue;
            }
            // Finished: awaiting returns at once.
            let Ok(run) = handle.await else {
                continue;
            };
            let state = self.fleets.entry(fleet.to_string()).or_default();
            if run.success() {
                state.smoke_passed.insert(id.clone());
                state.smoke_failures.remove(&id);
                out.smoke_news.push(format!("smoke passed on {id}"));
                continue;
            }
            let n = state.smoke_failures.entry(id.clone()).or_insert(0);
            *n += 1;
            let line = process::smoke_failure(&run, &id, *n, attempts);
            warn!(fleet = %fleet, instance = %id, "{line}");
            out.smoke_news.push(line.clone());
            if *n >= attempts {
                out.smoke_failed.get_or_insert(line);
            }
        }
        let state = self.fleets.entry(fleet.to_string()).or_default();
        for i in new {
            if !ready.contains(&i.id)
                || state.smoke_passed.contains(&i.id)
                || self.smoke_runs.contains_key(&i.id)
            {
                continue;
            }
            let tries = state.smoke_failures.get(&i.id).copied().unwrap_or(0);
            if tries >= attempts {
                out.smoke_failed
                    .get_or_insert(format!("smoke command failed {tries} time(s) on {}", i.id));
                continue;
            }
            let argv = process::smoke_argv(cmd, &i.id, i.private_ip.as_deref());
            let task = process::spawn_smoke(argv);
            self.smoke_runs
                .insert(i.id.clone(), (fleet.to_string(), task));
        }
    }

    /// Read what the fleet gates judge (alarms, metric conditions, canary analysis) and
    /// judge it with [`gates::fleet_verdict`].
    pub(super) async fn fleet_gates(&self, r: &Rollout, now: DateTime<Utc>) -> Gates {
        let g = &r.deploy.gates;
        let bake = deploy::bake(&r.deploy.strategy);
        let mut readings = FleetReadings::default();
        if !g.alarms.is_empty() {
            readings.alarms = Some(
                self.cloud
                    .alarm_states(&g.alarms)
                    .await
                    .map(|states| states.into_iter().collect())
                    .map_err(|e| e.to_string()),
            );
        }
        for m in &g.metrics {
            let window = gates::metric_window(bake, m);
            let points = self
                .read(&m.metric, &[&r.to.id], now - window, now)
                .await
                .map(|mut p| p.pop().unwrap_or_default());
            readings.metrics.push(points);
        }
        if let Some(c) = &g.canary_analysis {
            let window = gates::canary_window(bake, c);
            let read = self
                .read(&c.metric, &[&r.to.id, &r.from.id], now - window, now)
                .await;
            readings.canary = Some(match read {
                Ok(mut v) if v.len() == 2 => {
                    let baseline = v.pop().unwrap_or_default();
                    let canary = v.pop().unwrap_or_default();
                    Ok(CanarySamples { canary, baseline })
                }
                Ok(_) => Err("canary analysis: incomplete metric answer".into()),
                Err(w) => Err(w),
            });
        }
        gates::fleet_verdict(g, &r.to.id, &readings)
    }

    /// Closed-period datapoints of one query, or why there are none.
    pub(super) async fn read(
        &self,
        m: &MetricSpec,
        builds: &[&str],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Vec<f64>>, String> {
        // One GetMetricData call for every build asked about.
        let queries: Vec<MetricQuery> = builds.iter().map(|b| for_build(m, b)).collect();
        let series = self
            .cloud
            .get_metrics(&queries, start, end)
            .await
            .map_err(|e| format!("cannot read {}: {e}", m.name))?;
        let period = m.period.chrono();
        Ok(series
            .into_iter()
            .map(|s| {
                s.points
                    .into_iter()
                    .filter(|(t, _)| *t + period <= end)
                    .map(|(_, v)| v)
                    .collect()
            })
            .collect())
    }
}

/// The query for a build: `{build}` in dimension values becomes the build id.
fn for_build(m: &MetricSpec, build: &str) -> MetricQuery {
    let mut q = m.query();
    for v in q.dimensions.values_mut() {
        *v = v.replace("{build}", build);
    }
    q
}

/// What the instance gates found for the new build's instances this pass.
#[derive(Debug, Default)]
pub(super) struct NewHealth {
    /// Pass every instance gate (smoke included) and may be counted healthy.
    pub(super) healthy: HashSet<String>,
    /// Smoke results that came in this pass, for the rollout's events.
    pub(super) smoke_news: Vec<String>,
    /// An instance ran out of smoke tries: the gate fails with this.
    pub(super) smoke_failed: Option<String>,
}
