//! Rollbacks by hand: the emergency path back to a build live on the fleet before. Which
//! build it restores is judged from the fleet's ledger by pure functions
//! ([`restorable`], [`taken_off`]).

use super::{Accepted, DeployRequest, Refusal, RollbackRequest};
use crate::controller::Controller;
use crate::deploy::{admit, Build, Kind, Phase};
use crate::store::{Deployment, Outcome};
use chrono::{DateTime, Utc};

impl Controller {
    /// Roll back by hand: abort the running rollout, or roll to an earlier build. Deploys
    /// queued for the fleet are cancelled: the way out of an incident is not followed by
    /// the next build in line.
    pub fn request_rollback(
        &mut self,
        req: &RollbackRequest,
        now: DateTime<Utc>,
    ) -> Result<Accepted, Refusal> {
        let answer = self.rollback_inner(req, now)?;
        // Only a new rollback cancels: a retried one must not cancel deploys queued after
        // the rollback began (the fix for the incident, say).
        if let Accepted::Started {
            id,
            fleet,
            existing: false,
            ..
        } = &answer
        {
            if let Err(e) = self.cancel_queued_deploys(fleet, *id, now) {
                // The rollback itself is under way: say so, and what was not cancelled.
                tracing::error!(fleet = %fleet, rollback = id, error = ?e, "rollback started, but queued deploys could not all be cancelled; cancel them with abort");
            }
        }
        Ok(answer)
    }

    fn cancel_queued_deploys(
        &mut self,
        fleet: &str,
        rollback: i64,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let store = self.store.clone();
        for r in self.rollouts_of(fleet)? {
            if r.phase != Phase::Queued || r.kind != Kind::Deploy || r.id == rollback {
                continue;
            }
            let why = format!(
                "cancelled by rollback #{rollback}: a deploy queued before a rollback does not start after it (deploy it again once the incident is over)"
            );
            let body = serde_json::to_string(&r).map_err(|e| Refusal::Internal(e.to_string()))?;
            store
                .finish(r.id, Outcome::Superseded, Some(&why), now, &body)
                .map_err(|e| Refusal::Internal(e.to_string()))?;
            let _ = store.add_event(r.id, now, &why);
            tracing::warn!(fleet = %fleet, rollout = r.id, build = %r.to.id, "{why}");
        }
        Ok(())
    }

    fn rollback_inner(
        &mut self,
        req: &RollbackRequest,
        now: DateTime<Utc>,
    ) -> Result<Accepted, Refusal> {
        let store = self.store.clone();
        let spec = admit::find_fleet(&self.config, &req.fleet, &req.env)
            .map_err(Refusal::NotFound)?
            .clone();
        self.check_owned(&spec.name)?;
        let active = self.rollouts_of(&spec.name)?;
        let wanted = match &req.to {
            Some(b) => Some(Build::parse(&spec, b, None).map_err(Refusal::Refused)?.id),
            None => None,
        };
        // A rollback already under way (CI retried, two people pressed the button):
        // the same rollout, never a rollback of the rollback.
        if let Some(r) = active
            .iter()
            .find(|r| r.kind == Kind::Rollback && wanted.as_ref().is_none_or(|w| *w == r.to.id))
        {
            return Ok(Accepted::Started {
                id: r.id,
                fleet: spec.name.clone(),
                queued_behind: None,
                existing: true,
            });
        }
        if let Some(mut r) = active.into_iter().find(|r| r.phase != Phase::Queued) {
            if wanted.is_none() || wanted.as_deref() == Some(r.from.id.as_str()) {
                if r.abort.is_some() || matches!(r.phase, Phase::RollingBack { .. }) {
                    // Already on its way back: the same rollback, asked again.
                    return Ok(Accepted::Started {
                        id: r.id,
                        fleet: spec.name.clone(),
                        queued_behind: None,
                        existing: true,
                    });
                }
                r.abort = Some("rollback requested by hand".into());
                let body =
                    serde_json::to_string(&r).map_err(|e| Refusal::Internal(e.to_string()))?;
                store
                    .save_rollout(r.id, true, &body)
                    .map_err(|e| Refusal::Internal(e.to_string()))?;
                return Ok(Accepted::Started {
                    id: r.id,
                    fleet: spec.name.clone(),
                    queued_behind: None,
                    existing: false,
                });
            }
        }
        let current = self.current_build(&spec);
        // The fleet's finished ledger lines, newest first: read once, judged below.
        let finished: Vec<Deployment> = store
            .fleet_history(&spec.name, 200)
            .map_err(|e| Refusal::Internal(e.to_string()))?
            .into_iter()
            .filter(|d| matches!(d.outcome, Outcome::Succeeded | Outcome::RolledBack))
            .collect();
        let restorable = restorable(&finished, &Build::from_manifest(&spec).id);
        let to = match &wanted {
            Some(b) => {
                let before = store
                    .went_live(spec.app(), &spec.environment, b)
                    .map_err(|e| Refusal::Internal(e.to_string()))?
                    || *b == Build::from_manifest(&spec).id;
                if !before {
                    return Err(Refusal::Refused(format!(
                        "build {b} was never live in {env}: a rollback goes only to a build that was live there before ({live}). To ship {b}, deploy it: coxswain deploy {app} --env {env} --build {arg} (its promotion rules apply)",
                        env = spec.environment,
                        app = spec.app(),
                        arg = req.to.as_deref().unwrap_or(b),
                        live = restorable.join(", "),
                    )));
                }
                if *b != current.id && taken_off(&finished, b) {
                    return Err(Refusal::Refused(format!(
                        "build {b} was taken off {fleet} by a rollback (or its latest deploy there failed): a rollback does not bring it back ({live} can be restored). If it is fixed, deploy it: coxswain deploy {app} --env {env} --build {arg} (its promotion rules apply)",
                        fleet = spec.name,
                        env = spec.environment,
                        app = spec.app(),
                        arg = req.to.as_deref().unwrap_or(b),
                        live = restorable.join(", "),
                    )));
                }
                if *b == current.id {
                    return Ok(Accepted::AlreadyLive {
                        fleet: spec.name.clone(),
                        build: b.clone(),
                    });
                }
                b.clone()
            }
            None => {
                // Right after a way back (a rollback that finished, or a deploy that
                // ended rolled back), a rollback without --to is that request again: a
                // CI retry, a second engineer. Nothing to do; going further back takes
                // --to.
                let way_back = finished.first().is_some_and(|d| {
                    d.outcome == Outcome::RolledBack
                        || store
                            .rollout_state(d.id)
                            .ok()
                            .flatten()
                            .is_some_and(|r| r.kind == Kind::Rollback)
                });
                if way_back {
                    return Ok(Accepted::AlreadyLive {
                        fleet: spec.name.clone(),
                        build: current.id,
                    });
                }
                // The newest build that can be restored, never one a rollback took off
                // (restoring it again would undo the fix). None before the live one: it
                // stays, and nothing is started (not a rollout to the build already live).
                let Some(to) = restorable.into_iter().find(|b| *b != current.id) else {
                    return Ok(Accepted::AlreadyLive {
                        fleet: spec.name.clone(),
                        build: current.id,
                    });
                };
                to
            }
        };
        let deploy = DeployRequest {
            fleet: spec.name.clone(),
            env: req.env.clone(),
            // The label the restored build was deployed with (its commit); the ledger
            // marks the line a rollback by its rollout's kind.
            label: self.store.label_of(spec.app(), &to).ok().flatten(),
            build: to,
            timeout_secs: None,
            idempotency_key: None,
        };
        // A rollback is the way out of trouble: it skips promotion and approval checks
        // (the build was live here before) and every step.
        self.start_rollout(&deploy, now, Kind::Rollback)
    }
}

/// Builds a rollback may restore, newest first, from a fleet's finished ledger lines
/// (succeeded or rolled back, newest first): those whose newest line says it went live.
/// A build a rollback took off (its newest line is the "left" record), or whose latest
/// deploy failed, is not one. The manifest's build comes last, unless it was taken off.
fn restorable(finished: &[Deployment], manifest: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for d in finished {
        if seen.insert(d.build.as_str()) && d.outcome == Outcome::Succeeded {
            out.push(d.build.clone());
        }
    }
    if seen.insert(manifest) {
        out.push(manifest.to_string());
    }
    out
}

/// Whether `build`'s newest finished line says a rollback took it off (or its latest
/// deploy failed). A build with no line on the fleet is not "taken off".
fn taken_off(finished: &[Deployment], build: &str) -> bool {
    finished
        .iter()
        .find(|d| d.build == build)
        .is_some_and(|d| d.outcome == Outcome::RolledBack)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ledger lines, newest first, as (build, outcome).
    fn lines(rows: &[(&str, Outcome)]) -> Vec<Deployment> {
        rows.iter()
            .enumerate()
            .map(|(i, (build, outcome))| Deployment {
                id: (rows.len() - i) as i64,
                app: "web".into(),
                env: "production".into(),
                fleet: "web".into(),
                build: (*build).into(),
                label: None,
                outcome: *outcome,
                reason: None,
                started_at: chrono::DateTime::UNIX_EPOCH,
                finished_at: None,
            })
            .collect()
    }

    #[test]
    fn a_build_a_rollback_took_off_is_never_restorable_and_the_rest_are_newest_first() {
        use Outcome::{RolledBack, Succeeded};
        // 3 went live, then a rollback took it off (its "left" record) and restored 2;
        // 4's deploy failed; 1 was live long ago.
        let l = lines(&[
            ("2", Succeeded),
            ("3", RolledBack),
            ("4", RolledBack),
            ("3", Succeeded),
            ("2", Succeeded),
            ("1", Succeeded),
        ]);
        assert_eq!(restorable(&l, "0"), vec!["2", "1", "0"]);
        assert!(taken_off(&l, "3"));
        assert!(taken_off(&l, "4"));
        assert!(!taken_off(&l, "2"));
        assert!(!taken_off(&l, "9"), "no line on the fleet: not taken off");
        // The manifest's build is restorable last, unless a rollback took it off.
        let l = lines(&[("5", Succeeded), ("0", RolledBack)]);
        assert_eq!(restorable(&l, "0"), vec!["5"]);
        assert_eq!(restorable(&[], "0"), vec!["0"]);
    }
}
