//! Every cron a fleet has (scheduled policies, freeze windows, simulated bursts) is a
//! 5-field schedule that can fire, reported at the cron's own value.

use super::Report;
use crate::manifest::{CronSchedule, FleetSpec, PolicySpec, SimulationSpec, TrafficSpec};

pub(super) fn schedules(f: &FleetSpec, r: &mut Report) {
    let scheduled = f.scaling.policies.iter().filter_map(|p| match p {
        PolicySpec::Scheduled(s) => Some(s),
        _ => None,
    });
    for (i, sc) in scheduled.enumerate() {
        if let Err(e) = CronSchedule::parse(&sc.cron) {
            r.at_nth(
                &["scaling", "policies", "scheduled", "cron"],
                i,
                e.to_string(),
            );
        }
    }
    for (i, fr) in f.deploy.freeze.iter().enumerate() {
        if let Err(e) = CronSchedule::parse(&fr.cron) {
            r.at_nth(&["deploy", "freeze", "cron"], i, format!("freeze {e}"));
        }
    }
    if let Some(SimulationSpec {
        traffic: TrafficSpec::Synthetic(t),
        ..
    }) = &f.simulation
    {
        for (i, b) in t.bursts.iter().enumerate() {
            if let Err(e) = CronSchedule::parse(&b.cron) {
                r.at_nth(
                    &["simulation", "traffic", "synthetic", "bursts", "cron"],
                    i,
                    format!("burst {e}"),
                );
            }
        }
    }
}
