//! Table-driven cases for the gate verdicts.

use super::*;
use crate::manifest::{CanaryAnalysisSpec, GatesSpec, MetricGate};

fn inputs(phase: &Phase) -> InstanceGateInputs<'_> {
    InstanceGateInputs {
        phase,
        build: "ami-new",
        desired: 4,
        new_live: 2,
        new_healthy: 1,
        launch_rejected: None,
        smoke_failed: None,
        green_unswitched: false,
    }
}

fn kind(g: &Option<Gates>) -> &'static str {
    match g {
        None => "fleet",
        Some(Gates::Pass(_)) => "pass",
        Some(Gates::Waiting(_)) => "wait",
        Some(Gates::Fail(_)) => "fail",
    }
}

#[test]
fn the_new_instances_decide_alone_only_when_they_can() {
    let rolling = Phase::Rolling;
    let promoting = Phase::Promoting;
    let back = Phase::RollingBack { reason: "x".into() };
    let base = inputs(&rolling);
    let cases: Vec<(InstanceGateInputs, &str)> = vec![
        // Healthy instances, nothing wrong: the fleet gates decide.
        (base, "fleet"),
        // A build EC2 cannot launch, a failed smoke test: fail now, not at the timeout.
        (
            InstanceGateInputs {
                launch_rejected: Some("InvalidAMIID.NotFound"),
                ..base
            },
            "fail",
        ),
        (
            InstanceGateInputs {
                smoke_failed: Some("smoke exited 1"),
                ..base
            },
            "fail",
        ),
        // Nothing healthy yet: wait.
        (
            InstanceGateInputs {
                new_healthy: 0,
                ..base
            },
            "wait",
        ),
        // Blue/green before the switch: its instance gates are all that count.
        (
            InstanceGateInputs {
                green_unswitched: true,
                ..base
            },
            "pass",
        ),
        // Promoting: every new instance healthy in the main group, for all of desired.
        (
            InstanceGateInputs {
                new_live: 4,
                new_healthy: 4,
                ..inputs(&promoting)
            },
            "pass",
        ),
        (
            InstanceGateInputs {
                new_live: 4,
                new_healthy: 3,
                ..inputs(&promoting)
            },
            "wait",
        ),
        // The fleet grew: 4 healthy of desired 5 is not done.
        (
            InstanceGateInputs {
                new_live: 4,
                new_healthy: 4,
                desired: 5,
                ..inputs(&promoting)
            },
            "wait",
        ),
        // Rolling back, a launch or smoke failure of the build being left is no verdict.
        (
            InstanceGateInputs {
                launch_rejected: Some("gone"),
                smoke_failed: Some("smoke exited 1"),
                new_healthy: 0,
                ..inputs(&back)
            },
            "fleet",
        ),
    ];
    for (i, (input, want)) in cases.iter().enumerate() {
        let got = instance_verdict(input);
        assert_eq!(kind(&got), *want, "case {i}: {input:?} -> {got:?}");
    }
    // The reason reaches CI as it was.
    let got = instance_verdict(&InstanceGateInputs {
        smoke_failed: Some("smoke exited 1: connection refused"),
        ..base
    });
    assert_eq!(
        got,
        Some(Gates::Fail("smoke exited 1: connection refused".into()))
    );
}

fn metric_gate(yaml: &str) -> MetricGate {
    serde_yaml::from_str(yaml).expect("metric gate")
}

fn spec(
    alarms: &[&str],
    metrics: Vec<MetricGate>,
    canary: Option<CanaryAnalysisSpec>,
) -> GatesSpec {
    GatesSpec {
        alarms: alarms.iter().map(|a| a.to_string()).collect(),
        metrics,
        canary_analysis: canary,
        ..GatesSpec::default()
    }
}

fn verdict_kind(g: &Gates) -> &'static str {
    kind(&Some(g.clone()))
}

#[test]
fn alarms_fail_in_alarm_and_wait_without_data() {
    let g = spec(&["errors", "latency"], vec![], None);
    let states = |a: AlarmState, b: Option<AlarmState>| FleetReadings {
        alarms: Some(Ok([("errors".to_string(), a)]
            .into_iter()
            .chain(b.map(|b| ("latency".to_string(), b)))
            .collect())),
        ..FleetReadings::default()
    };
    let cases = [
        (states(AlarmState::Ok, Some(AlarmState::Ok)), "pass"),
        (states(AlarmState::Ok, Some(AlarmState::Alarm)), "fail"),
        (
            states(AlarmState::InsufficientData, Some(AlarmState::Ok)),
            "wait",
        ),
        // An alarm that does not exist is not a pass.
        (states(AlarmState::Ok, None), "wait"),
        (
            FleetReadings {
                alarms: Some(Err("throttled".into())),
                ..FleetReadings::default()
            },
            "wait",
        ),
    ];
    for (i, (r, want)) in cases.iter().enumerate() {
        let got = fleet_verdict(&g, "ami-new", r);
        assert_eq!(verdict_kind(&got), *want, "case {i}: {got:?}");
    }
    assert_eq!(
        fleet_verdict(
            &g,
            "ami-new",
            &states(AlarmState::Ok, Some(AlarmState::Alarm))
        ),
        Gates::Fail("alarm latency is in ALARM".into())
    );
}

#[test]
fn metric_conditions_hold_on_every_datapoint_of_the_window() {
    let below = metric_gate("metric: {namespace: App, name: ErrorRate, period: 1m}\nbelow: 0.05");
    let above = metric_gate("metric: {namespace: App, name: Throughput, period: 1m}\nabove: 100");
    let g = spec(&[], vec![below, above], None);
    let read = |a: Vec<f64>, b: Vec<f64>| FleetReadings {
        metrics: vec![Ok(a), Ok(b)],
        ..FleetReadings::default()
    };
    let cases = [
        (read(vec![0.01, 0.02], vec![150.0]), "pass"),
        // One datapoint at the limit fails (below means strictly below).
        (read(vec![0.01, 0.05], vec![150.0]), "fail"),
        (read(vec![0.01], vec![100.0]), "fail"),
        // No data is not a pass.
        (read(vec![], vec![150.0]), "wait"),
        (
            FleetReadings {
                metrics: vec![Err("GetMetricData throttled".into()), Ok(vec![150.0])],
                ..FleetReadings::default()
            },
            "wait",
        ),
        // A reading missing altogether is not a pass either.
        (
            FleetReadings {
                metrics: vec![Ok(vec![0.01])],
                ..FleetReadings::default()
            },
            "wait",
        ),
    ];
    for (i, (r, want)) in cases.iter().enumerate() {
        let got = fleet_verdict(&g, "ami-new", r);
        assert_eq!(verdict_kind(&got), *want, "case {i}: {got:?}");
    }
    // Nothing configured: the instance gates were the gates.
    assert_eq!(
        fleet_verdict(
            &spec(&[], vec![], None),
            "ami-new",
            &FleetReadings::default()
        ),
        Gates::Pass("instance gates".into())
    );
}

#[test]
fn canary_analysis_fails_a_canary_significantly_worse_than_its_baseline() {
    let c: CanaryAnalysisSpec = serde_yaml::from_str(
        "metric: {namespace: App, name: Latency, period: 1m}\nmin_samples: 5\nalpha: 0.05",
    )
    .expect("canary spec");
    let g = spec(&[], vec![], Some(c));
    let read = |canary: Vec<f64>, baseline: Vec<f64>| FleetReadings {
        canary: Some(Ok(CanarySamples { canary, baseline })),
        ..FleetReadings::default()
    };
    let base = vec![100.0, 101.0, 99.0, 102.0, 98.0, 100.5, 99.5];
    let worse: Vec<f64> = base.iter().map(|v| v * 1.5).collect();
    let cases = [
        (read(base.clone(), base.clone()), "pass"),
        (read(worse.clone(), base.clone()), "fail"),
        // Better than the baseline is not worse.
        (read(base.clone(), worse.clone()), "pass"),
        // Too few samples on a side: wait.
        (read(worse[..4].to_vec(), base.clone()), "wait"),
        (read(worse.clone(), vec![]), "wait"),
        (read(vec![f64::NAN; 6], base.clone()), "wait"),
        (
            FleetReadings {
                canary: Some(Err("no data".into())),
                ..FleetReadings::default()
            },
            "wait",
        ),
    ];
    for (i, (r, want)) in cases.iter().enumerate() {
        let got = fleet_verdict(&g, "ami-new", r);
        assert_eq!(verdict_kind(&got), *want, "case {i}: {got:?}");
    }
}

#[test]
fn gate_windows_cover_the_bake_and_whole_periods() {
    let m = metric_gate("metric: {namespace: App, name: ErrorRate, period: 5m}\nbelow: 1");
    let min = chrono::Duration::minutes;
    assert_eq!(metric_window(min(0), &m), min(15));
    assert_eq!(metric_window(min(30), &m), min(35));
    let c: CanaryAnalysisSpec =
        serde_yaml::from_str("metric: {namespace: App, name: Latency, period: 1m}\nmin_samples: 5")
            .expect("canary spec");
    assert_eq!(canary_window(min(0), &c), min(6));
    assert_eq!(canary_window(min(10), &c), min(10));
}
