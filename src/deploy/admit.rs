//! Whether a deploy request may go ahead: the fleet exists in that environment, the build
//! fits the fleet, no freeze window is open, it passed the environments it must pass
//! first, and it has the approvals it needs. A refusal is a sentence saying what is
//! missing (the CLI exits 2 with it).

use super::Build;
use crate::manifest::{Config, CronSchedule, FleetSpec};
use crate::store::Store;
use chrono::{DateTime, Utc};

/// The fleet a request names: by fleet name or by app, in the given environment.
pub fn find_fleet<'a>(
    config: &'a Config,
    fleet_or_app: &str,
    env: &str,
) -> Result<&'a FleetSpec, String> {
    config
        .fleets
        .iter()
        .find(|f| f.environment == env && (f.name == fleet_or_app || f.app() == fleet_or_app))
        .ok_or_else(|| {
            let envs: Vec<&str> = config
                .fleets
                .iter()
                .filter(|f| f.name == fleet_or_app || f.app() == fleet_or_app)
                .map(|f| f.environment.as_str())
                .collect();
            if envs.is_empty() {
                format!("no fleet or app named '{fleet_or_app}' in the manifests")
            } else {
                format!(
                    "'{fleet_or_app}' has no fleet in environment '{env}' (it has: {})",
                    envs.join(", ")
                )
            }
        })
}

/// The freeze window open at `now`, if any, as a sentence. Each window's cron is read in
/// its time zone; the end is given in UTC, and in that zone too when it has one.
pub fn frozen(spec: &FleetSpec, now: DateTime<Utc>) -> Option<String> {
    spec.deploy.freeze.iter().find_map(|f| {
        let schedule = CronSchedule::new(&f.cron, f.timezone).ok()?;
        let start = schedule.window_start(now, f.duration.chrono())?;
        let end = start.checked_add_signed(f.duration.chrono())?;
        let local = f
            .timezone
            .map(|z| {
                format!(
                    ", {} {}",
                    end.with_timezone(&z).format("%Y-%m-%d %H:%M"),
                    z.name()
                )
            })
            .unwrap_or_default();
        Some(format!(
            "deploys to {} are frozen until {} UTC{local}{}",
            spec.name,
            end.format("%Y-%m-%d %H:%M"),
            f.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ))
    })
}

/// Check promotion and approval for `build` on `spec`. Err is the refusal sentence.
pub fn check(
    spec: &FleetSpec,
    build: &Build,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if let Some(why) = frozen(spec, now) {
        return Err(why);
    }
    let app = spec.app();
    for env in &spec.deploy.promotion.requires {
        let passed = store
            .passed(app, env, &build.id)
            .map_err(|e| e.to_string())?;
        if !passed
            && store
                .went_live(app, env, &build.id)
                .map_err(|e| e.to_string())?
        {
            return Err(format!(
                "build {} of {app} was rolled back in {env} after it went live there: it has not passed {env}. Deploy a fixed build there first",
                build.id
            ));
        }
        if !passed {
            return Err(format!(
                "build {} of {app} has not passed {env}: deploy it there first (coxswain deploy {app} --env {env} --build {}) and let every gate go green",
                build.id, build.id
            ));
        }
    }
    if spec.deploy.promotion.approval {
        let approvals = store.approvals(app, &build.id).map_err(|e| e.to_string())?;
        if approvals.is_empty() {
            return Err(format!(
                "build {} of {app} needs a sign-off before {}: coxswain approve {app} --build {} --by NAME",
                build.id, spec.environment, build.id
            ));
        }
    }
    Ok(())
}
