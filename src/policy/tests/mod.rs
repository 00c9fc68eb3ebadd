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

    /// With instance weights the cap still counts instances: a fleet's decision is in
    /// units, what it bills now is its instances, and a scale-out of N units is charged
    /// N over its lightest weight (the most instances EC2 could launch for it). The
    /// instances billed after the cap never exceed it, and a fleet is trimmed only when
    /// the cap is short: a scale-out it fully grants keeps every unit.
    #[test]
    fn the_global_cap_counts_instances_for_weighted_fleets(
        fleets in proptest::collection::vec((0u32..15, 1u32..5, 0u32..80), 1..6),
        elsewhere in 0u32..10,
        spare in 0u32..40,
    ) {
        let f = fleet(TOTAL_RPM, "");
        // (instances, lightest weight, desired units): current units = instances × weight.
        let shapes: Vec<CapShape> = fleets
            .iter()
            .map(|(n, w, _)| CapShape { instances: *n, min_weight: *w })
            .collect();
        let billed: u32 = fleets.iter().map(|(n, _, _)| *n).sum::<u32>() + elsewhere;
        let cap = billed + spare;
        let mut ds: Vec<Decision> = fleets
            .iter()
            .enumerate()
            .map(|(i, (n, w, desired))| {
                let mut d = decide(&f, &obs(t(0), 1, 1, vec![series(t(-1), 1000.0)]), &Memory::default());
                d.fleet = format!("f{i}");
                d.current = n * w;
                d.desired = *desired;
                d
            })
            .collect();
        let wanted: Vec<u32> = ds.iter().map(|d| d.desired).collect();
        apply_global_cap_weighted(&mut ds, &shapes, elsewhere, Some(cap));
        let launched: u32 = ds
            .iter()
            .zip(&shapes)
            .map(|(d, s)| d.desired.saturating_sub(d.current).div_ceil(s.min_weight))
            .sum();
        proptest::prop_assert!(billed + launched <= cap, "{} > {cap}", billed + launched);
        for (d, want) in ds.iter().zip(&wanted) {
            proptest::prop_assert!(d.desired >= (*want).min(d.current));
            if !d.limits.contains(&crate::policy::Limit::GlobalCap) {
                proptest::prop_assert_eq!(d.desired, *want);
            }
        }
    }
}

/// Ten 2-unit instances fit a cap of 10 instances: 20 units, not 10.
#[test]
fn a_cap_of_instances_holds_twice_the_units_of_two_unit_instances() {
    let f = fleet(TOTAL_RPM, "");
    let mut d = decide(
        &f,
        &obs(t(0), 1, 1, vec![series(t(-1), 1000.0)]),
        &Memory::default(),
    );
    d.fleet = "web".into();
    d.current = 10;
    d.desired = 40;
    let mut ds = vec![d];
    let shapes = [CapShape {
        instances: 5,
        min_weight: 2,
    }];
    apply_global_cap_weighted(&mut ds, &shapes, 0, Some(10));
    assert_eq!(ds[0].desired, 20, "{:?}", ds[0].limits);
    assert!(ds[0].limits.contains(&crate::policy::Limit::GlobalCap));
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

mod predictive;
