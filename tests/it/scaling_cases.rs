//! The failing inputs operators found (`../shared/cases/`, section "Scaling"), each run on
//! the simulated cloud with a virtual clock and checked against the right value, plus the
//! README demo's day. The case files are read where they are; a missing one fails the test.

use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::SimCloud;
use coxswain::controller::{Action, Controller, PassReport};
use coxswain::manifest::{self, Config, TrafficSpec};
use coxswain::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases")
}

/// A case manifest as `coxswain run` reads it, with trace paths taken relative to the
/// case's own folder (the README runs them from there).
fn case(rel: &str) -> Config {
    let path = cases().join(rel);
    assert!(
        path.exists(),
        "case file {} is missing: the shared cases must be beside the repository",
        path.display()
    );
    let mut config = manifest::load_paths(std::slice::from_ref(&path))
        .unwrap_or_else(|e| panic!("{rel} does not load: {e}"));
    let dir = path.parent().expect("case folder").to_path_buf();
    for f in &mut config.fleets {
        if let Some(sim) = f.simulation.as_mut() {
            if let TrafficSpec::Trace(t) = &mut sim.traffic {
                t.path = dir.join(&t.path);
            }
        }
    }
    config
}

struct World {
    clock: Arc<VirtualClock>,
    sim: Arc<SimCloud>,
    controller: Controller,
    poll: Duration,
}

fn world(config: Config) -> World {
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let poll = config.controller.poll_interval.0;
    let store = Arc::new(Store::in_memory().expect("store"));
    let controller = Controller::new(sim.clone(), clock.clone(), config, false)
        .expect("in-memory store")
        .with_store(store);
    World {
        clock,
        sim,
        controller,
        poll,
    }
}

impl World {
    async fn pass(&mut self) -> PassReport {
        let r = self.controller.reconcile_once().await;
        self.clock.advance(self.poll);
        r
    }

    fn live(&self, fleet: &str) -> usize {
        self.sim
            .all_live()
            .iter()
            .filter(|i| i.fleet == fleet)
            .count()
    }
}

fn desired(r: &PassReport, fleet: &str) -> u32 {
    r.fleets
        .iter()
        .find(|f| f.decision.fleet == fleet)
        .map(|f| f.decision.desired)
        .unwrap_or_else(|| panic!("no decision for {fleet}"))
}

/// The README's demo for a whole simulated day (`coxswain run --virtual-clock --duration
/// 24h`): every launch realizes what it asked for, and after each decision the fleet's
/// live capacity reaches it by the second pass after.
#[tokio::test]
async fn the_demo_day_launches_what_it_decides_and_catches_up_within_two_passes() {
    let config = manifest::load_str("demo", coxswain::demo::MANIFEST).expect("demo");
    let fleets: Vec<String> = config.fleets.iter().map(|f| f.name.clone()).collect();
    let mut w = world(config);
    let mut decided: Vec<Vec<u32>> = vec![Vec::new(); fleets.len()];
    let mut live: Vec<Vec<usize>> = vec![Vec::new(); fleets.len()];
    let mut launches = 0;
    let passes = 24 * 3600 / w.poll.as_secs() as usize;
    for pass in 0..passes {
        let r = w.pass().await;
        assert!(
            !r.errors.iter().any(|e| e.contains("launch realized")),
            "pass {pass}: {:?}",
            r.errors
        );
        for a in &r.actions {
            if let Action::Launch { ids, .. } = a {
                assert!(
                    !ids.is_empty(),
                    "pass {pass}: a launch that realized nothing"
                );
                launches += 1;
            }
        }
        for (k, f) in fleets.iter().enumerate() {
            let report = r
                .fleets
                .iter()
                .find(|x| &x.decision.fleet == f)
                .expect("fleet in report");
            assert_eq!(report.shortfall, 0, "pass {pass}: {f} short");
            decided[k].push(report.decision.desired);
            // Live (booting or serving, not retiring) after this pass acted.
            let now_live = w
                .sim
                .all_live()
                .iter()
                .filter(|i| &i.fleet == f && i.retiring_since.is_none())
                .count();
            live[k].push(now_live);
        }
    }
    assert!(
        launches > 20,
        "the demo scales out during the day: {launches}"
    );
    for (k, f) in fleets.iter().enumerate() {
        for p in 0..passes - 2 {
            // A scale-out decided at pass p is live by pass p + 2, unless a later decision
            // already asked for less.
            let wanted = decided[k][p].min(decided[k][p + 1]).min(decided[k][p + 2]);
            assert!(
                live[k][p + 2] as u32 >= wanted,
                "{f}: decided {} at pass {p}, live {} two passes later",
                decided[k][p],
                live[k][p + 2]
            );
        }
    }
}

/// warmup-lag, on the daemon's simulated cloud: demand doubles from 700 to 1400 req/min
/// with a target of 70 per instance, so 20 instances are right. The datapoint read after
/// the scale-out was measured while 10 served; multiplying it by the 15 warm now asked
/// for 30.
#[tokio::test]
async fn a_datapoint_is_divided_by_the_instances_that_served_while_it_was_measured() {
    let mut w = world(case("warmup-lag/warmup-default-run-sim.yaml"));
    let mut most = 0;
    let mut at_high = Vec::new();
    for minute in 0..58 {
        let r = w.pass().await;
        let d = desired(&r, "web");
        most = most.max(d);
        if (40..58).contains(&minute) {
            at_high.push(d);
        }
    }
    assert!(most <= 20, "scaled to {most} where 20 are needed");
    assert!(
        at_high.iter().all(|d| *d == 20),
        "settles at 20 while demand is 1400: {at_high:?}"
    );
}

/// percent-step: a `change: "50%"` step on 10 instances gives 15, whatever the passes
/// during warmup read (the datapoints they read were measured on the 10).
#[tokio::test]
async fn a_percentage_step_is_a_percentage_of_the_capacity_it_is_added_to() {
    let mut w = world(case("percent-step/step-percent-run-sim.yaml"));
    let mut path = vec![10u32];
    for _ in 0..40 {
        let r = w.pass().await;
        let d = desired(&r, "step");
        if path.last() != Some(&d) {
            path.push(d);
        }
    }
    assert_eq!(path, vec![10, 15], "capacity path {path:?}");
    assert_eq!(w.live("step"), 15);
}

/// global-cap: draining instances are billed too. Two fleets under a cap of 10; when
/// alpha's schedule ends and it scales in, beta takes the freed budget only as the
/// drained instances are terminated. At no moment are more than 10 billed.
#[tokio::test]
async fn the_global_cap_counts_every_billed_instance_booting_serving_and_draining() {
    let config = case("global-cap/cap.yaml");
    let cap = config.controller.max_total_instances.expect("cap") as usize;
    // Start on the Monday as the schedule opens at 10:00: alpha (first by name) takes 8.
    let mut w = world(config);
    let start = w.clock.now();
    let ten = start
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .expect("time")
        .and_utc();
    w.clock.advance((ten - start).to_std().expect("forward"));
    let mut beta_most = 0;
    for _ in 0..40 {
        w.controller.reconcile_once().await;
        // Check at fine grain: launches and drains happen inside a pass.
        let billed = w.sim.all_live().len();
        assert!(
            billed <= cap,
            "{billed} instances billed under a cap of {cap}"
        );
        beta_most = beta_most.max(w.live("beta"));
        for _ in 0..6 {
            w.clock.advance(Duration::from_secs(10));
            let billed = w.sim.all_live().len();
            assert!(billed <= cap, "{billed} billed under a cap of {cap}");
        }
    }
    assert_eq!(beta_most, 8, "beta gets the budget alpha freed");
}

/// idle-lb: after a load test the target group serves nothing, and CloudWatch (like the
/// simulator now) publishes no RequestCount. No datapoint is no traffic for a count
/// metric: the fleet returns to its minimum instead of holding its load-test size.
#[tokio::test]
async fn an_idle_load_balancer_lets_the_fleet_return_to_its_minimum() {
    let mut w = world(case("idle-lb/idle.yaml"));
    let mut most = 0;
    let mut last = 0;
    for _ in 0..75 {
        let r = w.pass().await;
        let d = desired(&r, "staging");
        most = most.max(d);
        last = d;
        assert!(
            r.fleets.iter().all(|f| f.decision.warnings.is_empty()),
            "no data is not a missing metric here: {:?}",
            r.fleets[0].decision.warnings
        );
    }
    assert_eq!(most, 8, "the load test needs 8 at 1000/instance");
    assert_eq!(last, 1, "back to capacity.min once idle");
    assert_eq!(w.live("staging"), 1);
}

/// long-period: a 10-minute metric with the default 5-minute staleness is on time for as
/// long as its period says. The policy is never blind and no missing-metrics alert
/// flaps; the fleet follows the morning climb.
#[tokio::test]
async fn a_long_period_metric_is_judged_against_its_own_period() {
    let config = case("long-period/long-period.yaml");
    let per_instance = config.fleets[0]
        .simulation
        .as_ref()
        .map(|s| s.capacity_per_instance)
        .expect("a simulation section");
    let mut w = world(config);
    let mut blind = 0;
    let mut first = None;
    let mut last = 0;
    for minute in 0..6 * 60 {
        let now = w.clock.now();
        let r = w.pass().await;
        let f = &r.fleets[0];
        // Never more than the last half hour's demand needs at the 60% target (plus one
        // for rounding): a datapoint read again on the next pass is divided by the same
        // instances, however many were launched since, even in the first period after a
        // start, when no pass saw who served it (it compounded: 2 -> 4 -> 7 -> 12 -> 20).
        let need = (0..=30)
            .filter_map(|m| {
                w.sim
                    .demand_and_capacity("batch", now - chrono::Duration::minutes(m))
            })
            .map(|(demand, _)| (demand / (per_instance * 0.6)).ceil() as u32)
            .max()
            .expect("demand");
        assert!(
            f.decision.desired <= need.max(2) + 1,
            "minute {minute}: desired {} where the last 30 minutes needed at most {need}: {:?}",
            f.decision.desired,
            f.decision
        );
        // The first datapoint needs one whole period plus the lag.
        if minute > 25 && !f.decision.warnings.is_empty() {
            blind += 1;
        }
        if minute == 25 {
            first = Some(f.decision.desired);
        }
        last = f.decision.desired;
    }
    assert_eq!(blind, 0, "passes without a usable datapoint");
    let first = first.expect("minute 25");
    assert!(last > first, "follows demand up: {first} → {last}");
}

/// validate refuses a cap the fleets' minimums already break, and metric dimensions AWS
/// never publishes (they would read nothing, forever).
#[test]
fn validate_refuses_a_cap_below_the_minimums_and_dimensions_aws_never_sets() {
    let fleet = |name: &str, min: u32, dims: &str| {
        format!("name: {name}\nenvironment: production\nregion: us-east-1\nlaunch: {{ ami: ami-12345678, instance_types: [m6i.large] }}\ncapacity: {{ min: {min}, max: 10 }}\nscaling:\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCountPerTarget, dimensions: {dims}, stat: Sum }}\n        target: 1000\n")
    };
    let ok = "{ TargetGroup: targetgroup/a/1 }";
    let text = format!(
        "kind: Controller\nmax_total_instances: 5\n---\n{}---\n{}",
        fleet("a", 3, ok),
        fleet("b", 3, ok)
    );
    let err = manifest::load_str("cap.yaml", &text)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("below the fleets' capacity.min added up (6 instances)"),
        "{err}"
    );
    let text = format!(
        "kind: Controller\nmax_total_instances: 6\n---\n{}---\n{}",
        fleet("a", 3, ok),
        fleet("b", 3, ok)
    );
    assert!(manifest::load_str("cap.yaml", &text).is_ok());
    let err = manifest::load_str("dims.yaml", &fleet("a", 1, "{ \"coxswain:fleet\": a }"))
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("AWS/ApplicationELB does not publish RequestCountPerTarget by coxswain:fleet"),
        "{err}"
    );
}

/// Metric windows end where the running period starts, on period boundaries.
#[test]
fn metric_windows_are_aligned_to_the_period_and_leave_the_open_one_out() {
    use chrono::TimeZone;
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 1, 5, 9, 17, 42)
        .single()
        .expect("time");
    let (start, end) = coxswain::controller::aligned_window(now, chrono::Duration::minutes(7), 60);
    assert_eq!(end.to_rfc3339(), "2026-01-05T09:17:00+00:00");
    assert_eq!(start.to_rfc3339(), "2026-01-05T09:10:00+00:00");
    let (start, end) =
        coxswain::controller::aligned_window(now, chrono::Duration::minutes(25), 600);
    assert_eq!(end.to_rfc3339(), "2026-01-05T09:10:00+00:00");
    assert_eq!(start.to_rfc3339(), "2026-01-05T08:40:00+00:00");
}

/// A `coxswain:fleet` query on AWS/EC2 is read per instance and put back together with
/// its statistic; other queries pass through in order.
#[test]
fn a_fleet_dimension_is_read_per_instance_and_combined_by_its_statistic() {
    use chrono::TimeZone;
    use coxswain::cloud::{Instance, InstanceState, MetricQuery, MetricSeries};
    use coxswain::controller::{combine_fleet_series, fleet_metric_queries};
    let t0 = chrono::Utc
        .with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
        .single()
        .expect("time");
    let inst = |id: &str, fleet: &str| Instance {
        id: id.into(),
        fleet: fleet.into(),
        build: "b".into(),
        state: InstanceState::Running,
        launched_at: t0,
        instance_type: "m6i.large".into(),
        subnet: None,
        availability_zone: None,
        private_ip: None,
        retiring_since: None,
        market: Default::default(),
        replacing: None,
        weight: 1,
    };
    let q = |dims: &[(&str, &str)], stat: &str| MetricQuery {
        namespace: if dims[0].0 == "TargetGroup" {
            "AWS/ApplicationELB"
        } else {
            "AWS/EC2"
        }
        .into(),
        name: "X".into(),
        dimensions: dims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stat: stat.into(),
        period_secs: 60,
    };
    let avg = q(&[("coxswain:fleet", "api")], "Average");
    let tg = q(&[("TargetGroup", "tg")], "Sum");
    let max = q(&[("coxswain:fleet", "api")], "Maximum");
    let instances = vec![inst("i-1", "api"), inst("i-2", "api"), inst("i-3", "web")];
    let wanted = vec![&avg, &tg, &max];
    let (asked, parts) = fleet_metric_queries(&wanted, &instances);
    assert_eq!(asked.len(), 5, "2 + 1 + 2 queries: {asked:?}");
    assert_eq!(asked[0].dimensions["InstanceId"], "i-1");
    assert_eq!(asked[2].dimensions["TargetGroup"], "tg");
    let t1 = t0 + chrono::Duration::minutes(1);
    let s = |pts: &[(chrono::DateTime<chrono::Utc>, f64)]| MetricSeries {
        points: pts.to_vec(),
    };
    let answered = vec![
        s(&[(t0, 40.0), (t1, 50.0)]),
        s(&[(t0, 80.0)]),
        s(&[(t0, 7.0)]),
        s(&[(t0, 40.0), (t1, 50.0)]),
        s(&[(t0, 80.0)]),
    ];
    let out = combine_fleet_series(&wanted, &parts, answered);
    // The mean of the instances that published; the newest minute, which only one of
    // the two has published so far, is incomplete and left for the next pass.
    assert_eq!(out[0].points, vec![(t0, 60.0)]);
    assert_eq!(out[1].points, vec![(t0, 7.0)]);
    assert_eq!(out[2].points, vec![(t0, 80.0)]);
}

/// warmup-lag through `simulate`: with an 8-minute warmup and a 2-minute scale-in
/// window, instances still warming up were retired and the fleet swung 20 ↔ 15. No
/// scale-in while any instance warms up: once at 20 it stays there while demand is high.
#[test]
fn simulate_never_retires_instances_that_are_still_warming_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let timeline = dir.path().join("timeline.csv");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .arg("simulate")
        .arg("--trace")
        .arg(cases().join("warmup-lag/step-up.csv"))
        .arg("--manifest")
        .arg(cases().join("warmup-lag/warmup-long-short-window.yaml"))
        .args(["--capacity", "100", "--output", "json", "--timeline"])
        .arg(&timeline)
        .output()
        .expect("run coxswain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&timeline).expect("timeline");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert_eq!(
        header,
        "minute,timestamp,demand,capacity_ready,instances_booting,served,instances_spot,spot_usd_per_hour"
    );
    let mut live = Vec::new();
    for l in lines {
        let c: Vec<&str> = l.split(',').collect();
        let n: u32 = c[3].parse::<u32>().expect("ready") + c[4].parse::<u32>().expect("booting");
        live.push((c[0].parse::<usize>().expect("minute"), n));
    }
    assert!(!live.is_empty(), "the manifest policy is in the timeline");
    let top = live.iter().map(|(_, n)| *n).max().unwrap_or(0);
    assert_eq!(top, 20, "demand 1400 at 70 per instance needs 20");
    let reached = live.iter().position(|(_, n)| *n == 20).expect("reaches 20");
    let after: Vec<u32> = live[reached..].iter().map(|(_, n)| *n).collect();
    assert!(
        after.iter().all(|n| *n == 20),
        "no swing after reaching 20: {after:?}"
    );
}

/// A launch whose answer is lost after EC2 acted is sent again under its own token the
/// next time the fleet launches: EC2 answers with the instances already made, nothing is
/// launched twice, and the remembered request is then forgotten.
#[tokio::test]
async fn a_launch_whose_answer_was_lost_is_resent_under_its_token_and_never_doubles() {
    let text = "kind: Controller\ncontroller_id: t\n---\nname: web\nenvironment: production\nregion: us-east-1\nlaunch: { ami: ami-12345678, instance_types: [m6i.large] }\ntarget_group_arn: tg-web\ncapacity: { min: 2, max: 40 }\nscaling:\n  warmup: 2m\n  max_launch_per_cycle: 3\n  policies:\n    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCount, dimensions: { TargetGroup: tg-web }, stat: Sum, kind: total }\n        target: 1000\nsimulation:\n  capacity_per_instance: 1000\n  boot: 2m\n  traffic:\n    synthetic: { base: 9000, peak: 9000, noise: 0 }\n";
    let config = manifest::load_str("lost.yaml", text).expect("valid");
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let store = Arc::new(Store::in_memory().expect("store"));
    let mut c = Controller::new(sim.clone(), clock.clone(), config, false)
        .expect("in-memory store")
        .with_store(store.clone());
    let (launched_before, _) = sim.totals();
    // The first scale-out (2 → 5) is carried out, but its answer is lost, and
    // DescribeInstances lists new instances only 90 s after their launch.
    sim.lose_launch_answers(1);
    sim.set_list_lag(chrono::Duration::seconds(90));
    let r = c.reconcile_once().await;
    assert!(
        r.errors.iter().any(|e| e.contains("answer was lost")),
        "{:?}",
        r.errors
    );
    assert_eq!(
        store.pending_launches("web").expect("read").len(),
        1,
        "remembered"
    );
    let (after_lost, _) = sim.totals();
    assert_eq!(after_lost - launched_before, 3);
    // A minute later the 3 are not listed yet, so the fleet still looks 3 short: the
    // launch is resent under its token and answered with the same 3, nothing new.
    clock.advance(Duration::from_secs(60));
    let r = c.reconcile_once().await;
    let (after_resend, _) = sim.totals();
    assert_eq!(
        after_resend, after_lost,
        "resent, not launched again: {:?}",
        r.actions
    );
    assert!(
        store.pending_launches("web").expect("read").is_empty(),
        "answered now"
    );
    // The following passes resend it (answered with the same 3 instances, already seen)
    // and launch only what is still missing, until 9 run.
    for _ in 0..10 {
        clock.advance(Duration::from_secs(60));
        c.reconcile_once().await;
    }
    let (launched, _) = sim.totals();
    assert_eq!(
        launched - launched_before,
        7,
        "2 → 9: seven launched, none twice"
    );
    assert_eq!(sim.all_live().len(), 9);
    assert!(
        store.pending_launches("web").expect("read").is_empty(),
        "resolved"
    );
}

/// The same fleet on the same traffic, once through `coxswain simulate`'s model and once
/// through the daemon on the simulated cloud (a pass a minute, virtual clock): both read
/// their metrics from one model (`coxswain::cloud::model`), so the fleet follows the same
/// course: the same live count at every minute. (Before the model was shared, simulate
/// retired at once while the daemon drains, and simulate swung 23 ↔ 35 after the burst.)
#[tokio::test]
async fn a_fleet_behaves_the_same_in_simulate_and_on_the_simulated_cloud() {
    use coxswain::simulate::{self, ManifestPolicy, Replay};
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("day.csv");
    let start = coxswain::demo::start();
    let minutes = 360usize;
    // A morning ramp, a burst at 2h, a plateau and a fall, with a quiet stretch at the end
    // (no requests at all, so no request datapoints for a while).
    let demand: Vec<f64> = (0..minutes)
        .map(|m| {
            let m = m as f64;
            let ramp = 2_000.0 + 14_000.0 * (m / 150.0).min(1.0);
            let burst = if (120.0..150.0).contains(&m) {
                1.5
            } else {
                1.0
            };
            let fall = if m > 240.0 {
                (1.0 - (m - 240.0) / 60.0).max(0.0)
            } else {
                1.0
            };
            (ramp * burst * fall).round()
        })
        .collect();
    let mut csv = String::from("timestamp,requests\n");
    for (m, d) in demand.iter().enumerate() {
        let t = start + chrono::Duration::minutes(m as i64);
        csv.push_str(&format!("{},{d}\n", t.format("%Y-%m-%dT%H:%M:%SZ")));
    }
    std::fs::write(&trace, csv).expect("write trace");
    let text = format!(
        "kind: Controller\ncontroller_id: t\npoll_interval: 1m\n---\nname: web\nenvironment: production\nregion: us-east-1\nlaunch: {{ ami: ami-12345678, instance_types: [m6i.large] }}\ntarget_group_arn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123\ncapacity: {{ min: 2, max: 40 }}\nscaling:\n  warmup: 3m\n  scale_in_stabilization: 5m\n  max_launch_per_cycle: 40\n  max_retire_per_cycle: 40\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCountPerTarget, dimensions: {{ TargetGroup: targetgroup/web/0123 }}, stat: Sum, kind: per_instance }}\n        target: 700\nsimulation:\n  capacity_per_instance: 1000\n  boot: 3m\n  traffic:\n    trace: {{ path: {} }}\n",
        trace.display()
    );
    let config = manifest::load_str("parity.yaml", &text).expect("manifest");
    let fleet = config.fleets[0].clone();

    let replay = Replay::contiguous(start, demand.clone());
    let model = simulate::World {
        capacity: 1000.0,
        boot: 3,
        lag: 1,
    };
    let modelled = simulate::run(&mut ManifestPolicy::new(fleet), &replay, model, 2);
    let modelled: Vec<u32> = modelled
        .minutes
        .iter()
        .map(|m| m.ready + m.booting)
        .collect();

    let mut w = world(config);
    let mut daemon = Vec::with_capacity(minutes);
    for _ in 0..minutes {
        w.controller.reconcile_once().await;
        daemon.push(w.live("web") as u32);
        w.clock.advance(Duration::from_secs(60));
    }
    let peak = modelled.iter().copied().max().unwrap_or(0);
    assert!(
        peak >= 20,
        "the traffic needs a real scale-out: {modelled:?}"
    );
    let diverged: Vec<(usize, u32, u32)> = modelled
        .iter()
        .zip(&daemon)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(m, (a, b))| (m, *a, *b))
        .collect();
    assert!(
        diverged.is_empty(),
        "minutes where simulate and the daemon differ (minute, simulate, daemon): {diverged:?}"
    );
    assert_eq!(
        *modelled.last().expect("minutes"),
        2,
        "both return to the minimum once traffic stops"
    );
    assert_eq!(*daemon.last().expect("minutes"), 2);
}
