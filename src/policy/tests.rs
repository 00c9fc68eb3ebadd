//! Unit tests for the policies: warmup, stabilization, caps, missing data, combination.

use super::*;
use crate::manifest::{self, FleetSpec};
use chrono::{TimeZone, Utc};

fn t(min: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
        .single()
        .expect("valid date")
        + chrono::Duration::minutes(min)
}

fn fleet(policies: &str, extra: &str) -> FleetSpec {
    let text = format!(
        "name: web\nenvironment: production\nregion: us-east-1\nlaunch: {{ ami: ami-1, instance_types: [m6i.large] }}\ncapacity: {{ min: 2, max: 20 }}\nscaling:\n  scale_in_stabilization: 10m\n  max_launch_per_cycle: 10\n{extra}  policies:\n{policies}"
    );
    match manifest::load_str("test.yaml", &text) {
        Ok(c) => c.fleets.into_iter().next().expect("one fleet"),
        Err(e) => panic!("test manifest invalid: {e}\n{text}"),
    }
}

const TOTAL_RPM: &str = "    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCount, stat: Sum, kind: total }\n        target: 1000\n";
const CPU: &str = "    - target_tracking:\n        metric: { namespace: AWS/EC2, name: CPUUtilization }\n        target: 60\n";

fn series(at: DateTime<Utc>, v: f64) -> Option<MetricSeries> {
    Some(MetricSeries {
        points: vec![(at, v)],
    })
}

fn obs(now: DateTime<Utc>, current: u32, warm: u32, m: Vec<Option<MetricSeries>>) -> Observation {
    Observation {
        now,
        current,
        warm,
        serving: warm,
        metrics: m,
    }
}

#[test]
fn target_tracking_scales_out_to_load_over_target() {
    let f = fleet(TOTAL_RPM, "");
    let d = decide(
        &f,
        &obs(t(0), 4, 4, vec![series(t(-1), 8200.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 9);
    assert!(d.reason().contains("4 → 9"), "{}", d.reason());
}

#[test]
fn booting_instances_count_toward_capacity_but_not_the_average() {
    let f = fleet(CPU, "");
    // 4 warm at 90% CPU carry 3.6 instances' worth at 100%: at target 60% that is 6.
    // Two more are already booting: they count as capacity, so nothing more is launched.
    let d = decide(
        &f,
        &obs(t(0), 6, 4, vec![series(t(-1), 90.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 6);
    // Had the average been taken over all 6 (booting ones at 0%), it would read 60% and
    // hide the load; with the warm count it still asks for more when load grows.
    let d = decide(
        &f,
        &obs(t(0), 6, 4, vec![series(t(-1), 120.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 8);
}

#[test]
fn per_instance_metric_with_no_warm_instance_holds() {
    let f = fleet(CPU, "");
    let d = decide(
        &f,
        &obs(t(0), 3, 0, vec![series(t(-1), 99.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 3);
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn missing_or_stale_metrics_never_scale_in_and_warn() {
    // An average (CPU) with no data tells nothing: hold and warn.
    let f = fleet(CPU, "");
    let mut m = Memory::default();
    for k in 0..30 {
        m.record(t(k - 30), 2, chrono::Duration::minutes(10));
    }
    for data in [None, Some(MetricSeries::default()), series(t(-20), 10.0)] {
        let d = decide(&f, &obs(t(0), 10, 10, vec![data]), &m);
        assert_eq!(d.desired, 10, "{}", d.reason());
        assert_eq!(d.warnings.len(), 1);
    }
    // The same memory with a fresh low value does scale in.
    let d = decide(&f, &obs(t(0), 10, 10, vec![series(t(-1), 10.0)]), &m);
    assert!(d.desired < 10);
    // A count metric whose read failed holds too.
    let f = fleet(TOTAL_RPM, "");
    let d = decide(&f, &obs(t(0), 10, 10, vec![None]), &m);
    assert_eq!(d.desired, 10, "{}", d.reason());
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn a_count_metric_with_no_datapoint_is_zero_traffic_unless_told_to_hold() {
    // CloudWatch publishes no RequestCount for an idle load balancer: the read succeeds
    // with nothing in it, which is no traffic, and the fleet goes to its minimum.
    let f = fleet(TOTAL_RPM, "");
    let mut m = Memory::default();
    for k in 0..30 {
        m.record(t(k - 30), 2, chrono::Duration::minutes(10));
    }
    let d = decide(
        &f,
        &obs(t(0), 10, 10, vec![Some(MetricSeries::default())]),
        &m,
    );
    // Down to capacity.min, at most max_retire_per_cycle (5) a pass.
    assert_eq!((d.recommended, d.desired), (2, 5), "{}", d.reason());
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    assert!(d.reason().contains("no traffic"), "{}", d.reason());
    // Nothing for long past staleness: no traffic too.
    let d = decide(&f, &obs(t(0), 10, 10, vec![series(t(-20), 9000.0)]), &m);
    assert_eq!((d.recommended, d.desired), (2, 5), "{}", d.reason());
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    // A datapoint just past staleness (6 minutes old) is CloudWatch being late, not
    // idle: the last value stands, without a warning.
    let d = decide(&f, &obs(t(0), 10, 10, vec![series(t(-7), 10_000.0)]), &m);
    assert_eq!(d.desired, 10, "{}", d.reason());
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    // With `missing_data: hold`, the same empty read holds and warns.
    let held = "    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCount, stat: Sum, kind: total, missing_data: hold }\n        target: 1000\n";
    let f = fleet(held, "");
    let d = decide(
        &f,
        &obs(t(0), 10, 10, vec![Some(MetricSeries::default())]),
        &m,
    );
    assert_eq!(d.desired, 10, "{}", d.reason());
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn scale_in_waits_for_the_stabilization_window() {
    let f = fleet(TOTAL_RPM, "");
    let window = chrono::Duration::minutes(10);
    let mut m = Memory::default();
    // A burst needed 10, then load fell to what 3 can carry.
    let mut desired = Vec::new();
    for k in 0..15 {
        let load = if k < 3 { 10_000.0 } else { 3000.0 };
        let d = decide(&f, &obs(t(k), 10, 10, vec![series(t(k - 1), load)]), &m);
        m.record(t(k), d.recommended, window);
        desired.push(d.desired);
    }
    // Held at 10 until the burst's recommendation leaves the 10-minute window (minute 2
    // + 10 = minute 12 is the last held pass); then down, at most 5 per pass.
    assert!(desired[..13].iter().all(|d| *d == 10), "{desired:?}");
    assert_eq!(desired[13], 5, "{desired:?}");
}

#[test]
fn scale_in_needs_every_policy_to_agree() {
    let policies = format!("{TOTAL_RPM}    - step:\n        metric: {{ namespace: AWS/EC2, name: CPUUtilization }}\n        scale_out: [{{ above: 80, change: 2 }}]\n        scale_in: [{{ below: 20, change: 1 }}]\n");
    let f = fleet(&policies, "");
    let mut m = Memory::default();
    for k in 0..20 {
        m.record(t(k - 20), 2, chrono::Duration::minutes(10));
    }
    // Requests say 3 would do, but CPU is so low the step policy says 7: the larger wins.
    let d = decide(
        &f,
        &obs(t(0), 8, 8, vec![series(t(-1), 3000.0), series(t(-1), 10.0)]),
        &m,
    );
    assert_eq!(d.desired, 7, "{}", d.reason());
    // Requests want 10, the CPU step wants 7: scale out to 10.
    let d = decide(
        &f,
        &obs(
            t(0),
            8,
            8,
            vec![series(t(-1), 10_000.0), series(t(-1), 10.0)],
        ),
        &m,
    );
    assert_eq!(d.desired, 10, "{}", d.reason());
    // A policy without data holds, and blocks the other's scale-in.
    let d = decide(&f, &obs(t(0), 8, 8, vec![series(t(-1), 3000.0), None]), &m);
    assert_eq!(d.desired, 8, "{}", d.reason());
    // CPU between the step thresholds: that policy has no opinion, requests decide.
    let d = decide(
        &f,
        &obs(t(0), 8, 8, vec![series(t(-1), 3000.0), series(t(-1), 50.0)]),
        &m,
    );
    assert_eq!(d.desired, 3, "{}", d.reason());
    // CPU high: the largest scale-out wins (8 warm + 2).
    let d = decide(
        &f,
        &obs(t(0), 8, 8, vec![series(t(-1), 3000.0), series(t(-1), 90.0)]),
        &m,
    );
    assert_eq!(d.desired, 10, "{}", d.reason());
}

#[test]
fn step_scale_outs_do_not_stack_while_instances_warm_up() {
    let policies = "    - step:\n        metric: { namespace: AWS/EC2, name: CPUUtilization }\n        scale_out: [{ above: 80, change: 2 }, { above: 95, change: \"50%\" }]\n";
    let f = fleet(policies, "");
    let d = decide(
        &f,
        &obs(t(0), 4, 4, vec![series(t(-1), 85.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 6);
    // Next pass, the two new ones still boot and the alarm still fires: no more.
    let d = decide(
        &f,
        &obs(t(1), 6, 4, vec![series(t(0), 85.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 6);
    // The higher step is a percentage of the capacity it is added to (the 4 that served
    // while the datapoint was measured): 4 + 50% of 4 = 6, already there.
    let d = decide(
        &f,
        &obs(t(1), 6, 4, vec![series(t(0), 99.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 6, "{}", d.reason());
    // Once all 6 serve and it still fires: 6 + 50% of 6 = 9.
    let d = decide(
        &f,
        &obs(t(5), 6, 6, vec![series(t(4), 99.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 9, "{}", d.reason());
    // Between thresholds, a step-only fleet keeps what it has.
    let mut m = Memory::default();
    m.record(t(-30), 6, chrono::Duration::minutes(10));
    let d = decide(&f, &obs(t(1), 6, 6, vec![series(t(0), 40.0)]), &m);
    assert_eq!(d.desired, 6);
}

#[test]
fn min_max_and_the_launch_limit_cap_the_result() {
    let f = fleet(TOTAL_RPM, "");
    let d = decide(
        &f,
        &obs(t(0), 2, 2, vec![series(t(-1), 1e9)]),
        &Memory::default(),
    );
    assert_eq!(d.recommended, 20);
    assert_eq!(d.desired, 12, "launch limit of 10 per pass");
    assert!(d.limits.contains(&Limit::Max) && d.limits.contains(&Limit::LaunchLimit));
    let d = decide(&f, &obs(t(0), 0, 0, vec![None]), &Memory::default());
    assert_eq!(d.desired, 2, "below min launches to min even without data");
}

#[test]
fn global_cap_trims_scale_outs_across_fleets() {
    let f = fleet(TOTAL_RPM, "");
    let mut a = decide(
        &f,
        &obs(t(0), 5, 5, vec![series(t(-1), 9000.0)]),
        &Memory::default(),
    );
    a.fleet = "a".into();
    let mut b = a.clone();
    b.fleet = "b".into();
    let mut ds = vec![b, a];
    apply_global_cap(&mut ds, 0, Some(16));
    let total: u32 = ds.iter().map(|d| d.desired).sum();
    assert_eq!(total, 16);
    // Fleets in name order: a gets its 4, b the 2 left.
    assert_eq!(ds[1].desired, 9);
    assert_eq!(ds[0].desired, 7);
    assert!(ds[0].limits.contains(&Limit::GlobalCap));
}

#[test]
fn scheduled_floor_holds_during_its_window_only() {
    let policies = format!("{TOTAL_RPM}    - scheduled:\n        cron: \"0 9 * * MON\"\n        duration: 2h\n        min: 12\n");
    let f = fleet(&policies, "");
    // 2026-01-05 is a Monday; t(0) is 09:00.
    let d = decide(
        &f,
        &obs(t(30), 4, 4, vec![series(t(29), 1000.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 12);
    let d = decide(
        &f,
        &obs(t(130), 4, 4, vec![series(t(129), 4000.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 4);
}

#[test]
fn within_tolerance_the_fleet_does_not_flap() {
    let f = fleet(TOTAL_RPM, "");
    let mut m = Memory::default();
    for k in 0..20 {
        m.record(t(k - 20), 2, chrono::Duration::minutes(10));
    }
    // 9.5 instances' worth on 10: 95% of target, inside the 10% band.
    let d = decide(&f, &obs(t(0), 10, 10, vec![series(t(-1), 9500.0)]), &m);
    assert_eq!(d.desired, 10);
}

#[test]
fn a_stabilization_window_shorter_than_the_poll_still_scales_in() {
    let f = fleet(TOTAL_RPM, "");
    let mut f = f;
    f.scaling.scale_in_stabilization = crate::manifest::HumanDuration::secs(30);
    let window = f.scaling.scale_in_stabilization.chrono();
    let mut m = Memory::default();
    let d = decide(&f, &obs(t(0), 10, 10, vec![series(t(-1), 3000.0)]), &m);
    m.record(t(0), d.recommended, window);
    assert_eq!(d.desired, 10, "no history yet: hold");
    let d = decide(&f, &obs(t(1), 10, 10, vec![series(t(0), 3000.0)]), &m);
    assert_eq!(d.desired, 5, "one window later: scale in (retire limit 5)");
}

#[test]
fn staleness_counts_from_the_end_of_a_datapoints_period() {
    let policies = "    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCount, stat: Sum, kind: total, period: 5m, missing_data: hold }\n        target: 5000\n";
    let f = fleet(policies, "");
    // The 5-minute period that started 9 minutes ago closed 4 minutes ago: fresh.
    let d = decide(
        &f,
        &obs(t(0), 4, 4, vec![series(t(-9), 40_000.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 8, "{}", d.reason());
    // A 5-minute metric's next datapoint comes 5 minutes after the last: stale after
    // 5m + (5m - 1m) = 9m from the end of its period. Closed 8 minutes ago: on time.
    let d = decide(
        &f,
        &obs(t(0), 4, 4, vec![series(t(-13), 40_000.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 8, "{}", d.reason());
    // Closed 10 minutes ago: stale, hold.
    let d = decide(
        &f,
        &obs(t(0), 4, 4, vec![series(t(-15), 40_000.0)]),
        &Memory::default(),
    );
    assert_eq!(d.desired, 4, "{}", d.reason());
}

#[test]
fn a_long_period_metric_that_arrives_on_time_never_goes_stale() {
    // A 10-minute metric with the default 5-minute staleness, read every minute with
    // CloudWatch's one-minute lag: never stale, so the policy is never blind.
    let policies = "    - target_tracking:\n        metric: { namespace: AWS/EC2, name: CPUUtilization, period: 10m }\n        target: 60\n";
    let f = fleet(policies, "");
    for now in 0..60i64 {
        // The newest complete and published period at minute `now`.
        let closed = ((now - 1).div_euclid(10)) * 10 - 10;
        let d = decide(
            &f,
            &obs(t(now), 4, 4, vec![series(t(closed), 90.0)]),
            &Memory::default(),
        );
        assert!(d.warnings.is_empty(), "minute {now}: {:?}", d.warnings);
        assert_eq!(d.desired, 6, "minute {now}: {}", d.reason());
    }
}

// --- predictive ---------------------------------------------------------------------

const PREDICTIVE: &str = "    - predictive:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCount, stat: Sum, kind: total }\n        capacity_per_instance: 1000\n        boot: 3m\n        loss_budget: \"0.1%\"\n";

/// A daily cycle between 2,000 and 18,000 requests per minute, peaking at 15:00, with
/// deterministic ±4% noise.
fn daily(minute: i64) -> f64 {
    let hour = (minute.rem_euclid(1440)) as f64 / 60.0;
    let shape = (1.0 + ((hour - 15.0) / 24.0 * std::f64::consts::TAU).cos()) / 2.0;
    let noise = ((minute * 7919) % 101) as f64 / 100.0 - 0.5;
    (2_000.0 + 16_000.0 * shape) * (1.0 + 0.08 * noise)
}

fn history(from: i64, to: i64) -> MetricSeries {
    MetricSeries {
        points: (from..to).map(|m| (t(m), daily(m))).collect(),
    }
}

#[test]
fn predictive_holds_without_history_and_when_it_goes_stale() {
    let f = fleet(PREDICTIVE, "");
    let d = decide(&f, &obs(t(0), 4, 4, vec![None]), &Memory::default());
    assert_eq!(d.desired, 4, "{}", d.reason());
    assert!(d.reason().contains("no history"), "{}", d.reason());
    let mut memory = Memory::default();
    let o = obs(t(0), 4, 4, vec![Some(history(-60, -1))]);
    memory.observe(&f, &o);
    let later = obs(t(10), 4, 4, vec![None]);
    let d = decide(&f, &later, &memory);
    assert_eq!(d.desired, 4);
    assert!(d.reason().contains("stale"), "{}", d.reason());
}

#[test]
fn predictive_without_calibration_uses_a_wide_headroom() {
    let f = fleet(PREDICTIVE, "");
    let mut memory = Memory::default();
    // Flat 5,000/min for an hour: forecast 5,000, +50% before calibration → 8 instances.
    let flat = MetricSeries {
        points: (-60..-1).map(|m| (t(m), 5_000.0)).collect(),
    };
    let o = obs(t(0), 4, 4, vec![Some(flat)]);
    memory.observe(&f, &o);
    let d = decide(&f, &o, &memory);
    assert_eq!(d.desired, 8, "{}", d.reason());
}

/// 4,000 requests per minute at night, a ramp to 16,000 between 08:00 and 09:00 (t(0) is
/// 09:00, so the ramp is at minutes -60..0 of each day), flat until 20:00, a ramp down.
fn ramp_day(minute: i64) -> f64 {
    let m = (minute + 9 * 60).rem_euclid(1440);
    match m {
        0..480 => 4_000.0,
        480..540 => 4_000.0 + 200.0 * (m - 480) as f64,
        540..1200 => 16_000.0,
        1200..1260 => 16_000.0 - 200.0 * (m - 1200) as f64,
        _ => 4_000.0,
    }
}

#[test]
fn predictive_sees_the_daily_ramp_before_it_arrives() {
    let f = fleet(PREDICTIVE, "");
    let mut memory = Memory::default();
    // Four days of history, then decide at 07:59: flat for hours, and the ramp starts at
    // 08:00. Only the seasonal estimate knows; by 08:02 demand is 4,400.
    let now = 4 * 1440 - 61;
    let points = (-60..now - 1).map(|m| (t(m), ramp_day(m))).collect();
    let o = obs(t(now), 4, 4, vec![Some(MetricSeries { points })]);
    memory.observe(&f, &o);
    let d = decide(&f, &o, &memory);
    assert!(
        d.reason().contains("forecast 4400/period"),
        "{}",
        d.reason()
    );
    assert!(d.desired >= 5, "{}", d.reason());
}

#[test]
fn predictive_headroom_meets_its_loss_budget_on_what_it_scored() {
    let f = fleet(PREDICTIVE, "");
    let mut memory = Memory::default();
    let now = 5 * 1440;
    let o = obs(t(now), 10, 10, vec![Some(history(0, now - 1))]);
    memory.observe(&f, &o);
    let model = memory.models.get(&0).expect("a model");
    let budget = model.budget();
    let z = model
        .calibrated()
        .expect("calibrated after days of history");
    let (lost, total) = model.replay_loss(z);
    assert!(
        lost <= budget * total * 1.000_001,
        "{lost} > {budget} × {total}"
    );
    // Not much more than needed: half a unit less headroom in both regimes breaks it.
    let (lost_less, _) = model.replay_loss((z.0 - 0.5, z.1 - 0.5));
    assert!(
        lost_less > budget * total,
        "{lost_less} <= {budget} × {total}"
    );
}

#[test]
fn predictive_after_a_restart_decides_as_if_it_had_never_stopped() {
    let f = fleet(PREDICTIVE, "");
    let now = 4 * 1440 + 900;
    // One controller fed minute by minute...
    let mut running = Memory::default();
    for m in (3 * 1440)..now {
        let o = obs(t(m), 10, 10, vec![Some(history(0.max(m - 5), m - 1))]);
        if m == 3 * 1440 {
            running.observe(&f, &obs(t(m), 10, 10, vec![Some(history(0, m - 1))]));
        } else {
            running.observe(&f, &o);
        }
    }
    // ...and one restarted that read the whole history back at once.
    let mut restarted = Memory::default();
    let o = obs(t(now - 1), 10, 10, vec![Some(history(0, now - 2))]);
    restarted.observe(&f, &o);
    let o = obs(t(now - 1), 10, 10, vec![Some(history(now - 10, now - 2))]);
    let a = decide(&f, &o, &running);
    let b = decide(&f, &o, &restarted);
    assert_eq!(a.desired, b.desired, "{} vs {}", a.reason(), b.reason());
}

proptest::proptest! {
    /// Whatever the fleets want, the instances billed after the cap is applied (each fleet
    /// keeps its current count this pass, plus what it may launch, plus what is billed
    /// elsewhere) never exceed the cap, and no fleet is cut below what it has.
    #[test]
    fn the_global_cap_holds_for_any_decisions(
        fleets in proptest::collection::vec((0u32..30, 0u32..60), 1..8),
        elsewhere in 0u32..20,
        spare in 0u32..40,
    ) {
        let f = fleet(TOTAL_RPM, "");
        let billed: u32 = fleets.iter().map(|(c, _)| *c).sum::<u32>() + elsewhere;
        let cap = billed + spare;
        let mut ds: Vec<Decision> = fleets
            .iter()
            .enumerate()
            .map(|(i, (current, desired))| {
                let mut d = decide(&f, &obs(t(0), *current, *current, vec![series(t(-1), 1000.0)]), &Memory::default());
                d.fleet = format!("f{i}");
                d.current = *current;
                d.desired = *desired;
                d
            })
            .collect();
        apply_global_cap(&mut ds, elsewhere, Some(cap));
        let after: u32 = ds.iter().map(|d| d.desired.max(d.current)).sum::<u32>() + elsewhere;
        proptest::prop_assert!(after <= cap, "{after} > {cap}");
        for (d, (current, desired)) in ds.iter().zip(&fleets) {
            proptest::prop_assert!(d.desired >= (*desired).min(*current));
        }
    }
}

fn predictive_spec(f: &FleetSpec) -> &manifest::PredictiveSpec {
    match f.scaling.policies.first() {
        Some(manifest::PolicySpec::Predictive(p)) => p,
        other => panic!("not predictive: {other:?}"),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Bounded: whatever the traffic (bursts up to 60× the base, steps, quiet spells),
    /// the predictive policy never asks for more than the peak of the last 7 days (the
    /// newest minute included) plus `PEAK_MARGIN`, so it never costs more than a static
    /// fleet sized for that peak.
    #[test]
    fn predictive_never_asks_for_more_than_the_recent_peak_plus_its_margin(
        base in 50.0f64..5_000.0,
        days in 1i64..4,
        bursts in proptest::collection::vec((0i64..5_760, 2.0f64..60.0, 1i64..20), 0..12),
        step in proptest::option::of((0i64..5_760, 0.2f64..5.0)),
    ) {
        let f = fleet(PREDICTIVE, "");
        let spec = predictive_spec(&f);
        let demand = |m: i64| -> f64 {
            let mut v = base * (1.0 + 0.5 * ((m as f64) / 1440.0 * std::f64::consts::TAU).sin());
            if let Some((at, k)) = step {
                if m >= at { v *= k; }
            }
            for &(at, k, len) in &bursts {
                if m >= at && m < at + len { v *= k; }
            }
            v
        };
        let end = days * 1440;
        let mut model = DemandModel::new(spec, 1_000.0);
        // Everything but the last 3 hours at once (a restart reading history back), then
        // minute by minute with a decision each minute.
        model.ingest(&MetricSeries { points: (0..end - 180).map(|m| (t(m), demand(m))).collect() });
        for now in (end - 180)..end {
            model.ingest(&MetricSeries { points: vec![(t(now - 1), demand(now - 1))] });
            let peak = ((now - 7 * 1440).max(0)..now).map(demand).fold(0.0, f64::max);
            let o = obs(t(now), 2, 2, vec![None]);
            let (v, why) = predictive::vote(spec, &f, &o, Some(&model), chrono::Duration::minutes(5));
            if let Vote::Capacity(n) = v {
                let most = ceil_count(peak * (1.0 + predictive::PEAK_MARGIN) / 1_000.0);
                proptest::prop_assert!(n <= most, "minute {now}: wants {n}, peak {peak:.0} allows {most}: {why}");
            }
        }
    }
}

#[test]
fn predictive_says_when_its_loss_budget_cannot_be_met() {
    // Demand that jumps between 1,000 and 20,000 at random each minute: no forecast can
    // keep 0.1% of requests within the headroom cap.
    let f = fleet(PREDICTIVE, "");
    let spec = predictive_spec(&f);
    let wild = |m: i64| {
        if (m * 7919 + 13) % 11 < 3 {
            20_000.0
        } else {
            1_000.0
        }
    };
    let mut model = DemandModel::new(spec, 1_000.0);
    let now = 2 * 1440;
    model.ingest(&MetricSeries {
        points: (0..now - 1).map(|m| (t(m), wild(m))).collect(),
    });
    let lost = model.budget_unmet().expect("the budget cannot be met here");
    assert!(lost > 0.001, "{lost}");
    let (_, why) = predictive::vote(
        spec,
        &f,
        &obs(t(now), 2, 2, vec![None]),
        Some(&model),
        chrono::Duration::minutes(5),
    );
    assert!(why.contains("cannot be met at a sane cost"), "{why}");
    // A calm daily cycle meets it, and says nothing.
    let mut calm = DemandModel::new(spec, 1_000.0);
    calm.ingest(&history(0, 5 * 1440 - 1));
    assert_eq!(calm.budget_unmet(), None);
}

/// Every two hours a 10-minute surge to 8× (classes changing over) on the first three
/// days, then none (term ended): what earlier days say about the coming minutes is wrong.
fn faded(minute: i64) -> f64 {
    let surge = minute < 3 * 1440 && minute.rem_euclid(120) < 10;
    let noise = ((minute * 7919) % 101) as f64 / 100.0 - 0.5;
    5_000.0 * if surge { 8.0 } else { 1.0 } * (1.0 + 0.08 * noise)
}

#[test]
fn predictive_uses_the_daily_pattern_only_where_it_holds_up() {
    let f = fleet(PREDICTIVE, "");
    let spec = predictive_spec(&f);
    let now = 5 * 1440;
    // A daily cycle: the seasonal estimate earns its place, and the decision says so.
    let mut cyclic = DemandModel::new(spec, 1_000.0);
    cyclic.ingest(&MetricSeries {
        points: (0..now - 1).map(|m| (t(m), ramp_day(m))).collect(),
    });
    assert!(cyclic.seasonal_in_use());
    let o = obs(t(now), 4, 4, vec![None]);
    let (_, why) = predictive::vote(spec, &f, &o, Some(&cyclic), chrono::Duration::minutes(5));
    assert!(why.contains("with the daily pattern"), "{why}");
    // Less than a day of the same traffic: nothing to compare yet, so it stays out.
    let mut young = DemandModel::new(spec, 1_000.0);
    young.ingest(&MetricSeries {
        points: (0..1_300).map(|m| (t(m), ramp_day(m))).collect(),
    });
    assert!(!young.seasonal_in_use());
    // The days it learns from stopped being like today: once the scored window holds
    // only the days after the surges ended, its false surges cost ~10% more than going
    // without it, and it is out.
    let after = 6 * 1440 + 12 * 60;
    let mut faded_model = DemandModel::new(spec, 1_000.0);
    faded_model.ingest(&MetricSeries {
        points: (0..after - 1).map(|m| (t(m), faded(m))).collect(),
    });
    assert!(!faded_model.seasonal_in_use());
    let o = obs(t(after), 4, 4, vec![None]);
    let (_, why) = predictive::vote(
        spec,
        &f,
        &o,
        Some(&faded_model),
        chrono::Duration::minutes(5),
    );
    assert!(!why.contains("daily pattern"), "{why}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// From a cold start (no history, too little to calibrate on), the policy asks for at
    /// least what target tracking at a 2/3 target would on the newest minute, and more
    /// when the trend points up: never less safe than a moderate target-tracking policy.
    #[test]
    fn predictive_from_a_cold_start_asks_at_least_what_target_tracking_at_two_thirds_would(
        start in 100.0f64..20_000.0,
        steps in proptest::collection::vec(-0.2f64..0.3, 10..300),
    ) {
        let f = fleet(PREDICTIVE, "");
        let spec = predictive_spec(&f);
        let mut v = start;
        let mut points = Vec::new();
        for (m, s) in steps.iter().enumerate() {
            v = (v * (1.0 + s)).max(1.0);
            points.push((t(m as i64), v));
        }
        let now = steps.len() as i64 + 1;
        let mut model = DemandModel::new(spec, 1_000.0);
        model.ingest(&MetricSeries { points });
        let o = obs(t(now), 2, 2, vec![None]);
        let (vote, why) = predictive::vote(spec, &f, &o, Some(&model), chrono::Duration::minutes(5));
        // Target tracking at 2/3: v / (2/3) = 1.5 v.
        let tracking = ceil_count(v * 1.5 / 1_000.0);
        match vote {
            Vote::Capacity(n) => proptest::prop_assert!(n >= tracking, "wants {n} < {tracking}: {why}"),
            // Too few recent datapoints for a level (under 5 minutes of history).
            Vote::Hold => proptest::prop_assert!(steps.len() < 10, "{why}"),
            other => proptest::prop_assert!(false, "{other:?}: {why}"),
        }
    }
}

/// A datapoint measured before the first pass since a start (no pass saw who served it)
/// is divided by the first pass's count on every pass that reads it: the instances
/// launched in answer to it must not multiply it again (it compounded 2 → 4 → 7 → 12 →
/// 20 on one 10-minute datapoint).
#[test]
fn a_datapoint_from_before_the_start_is_not_multiplied_by_what_it_launched() {
    let f = fleet(
        "    - target_tracking:\n        metric: { namespace: AWS/EC2, name: CPUUtilization, period: 10m }\n        target: 60\n",
        "",
    );
    let mut memory = Memory::default();
    let mut current = 2;
    // One closed 10-minute datapoint, [08:40, 08:50), read from 09:00 to 09:09.
    for minute in 0..10 {
        let mut o = obs(t(minute), current, current, vec![series(t(-20), 100.0)]);
        o.serving = current;
        memory.observe(&f, &o);
        let d = decide(&f, &o, &memory);
        // 100% on the 2 that served then is 200 points of load: 4 at 60%.
        assert_eq!(d.desired, 4, "minute {minute}: {}", d.reason());
        memory.record(
            o.now,
            d.recommended,
            f.scaling.scale_in_stabilization.chrono(),
        );
        current = d.desired;
    }
    // With no pass at all, the count in service now is all there is.
    assert_eq!(
        Memory::default().serving_during(t(-20), chrono::Duration::minutes(10), 3),
        3.0
    );
}
