use super::*;
use crate::controller::{FleetReport, RolloutReport};
use crate::deploy::Gates;
use crate::policy::{Decision, Limit};
use crate::store::Deployment;

fn fleet(name: &str, current: u32, desired: u32) -> FleetReport {
    FleetReport {
        decision: Decision {
            fleet: name.into(),
            current,
            desired,
            recommended: desired,
            votes: Vec::new(),
            limits: Vec::new(),
            warnings: Vec::new(),
        },
        metrics: Vec::new(),
        booting: 0,
        retiring: 0,
        live: current,
        serving: current,
        shortfall: 0,
        spot: 0,
        instances: current,
        billed: current,
    }
}

fn rollout(id: i64) -> RolloutReport {
    RolloutReport {
        id,
        fleet: "web".into(),
        from: "v1".into(),
        to: "v2".into(),
        phase: "rolling".into(),
        step: 0,
        gates: Gates::Waiting("booting".into()),
    }
}

fn events(notes: &[Note]) -> Vec<NotifyEvent> {
    notes.iter().map(|n| n.event).collect()
}

#[test]
fn a_rollout_is_announced_when_it_starts_and_once_when_it_ends_with_its_outcome() {
    let store = Store::in_memory().expect("store");
    let dep = |build: &str| Deployment {
        id: 0,
        app: "web".into(),
        env: "production".into(),
        fleet: "web".into(),
        build: build.into(),
        label: None,
        outcome: Outcome::InProgress,
        reason: None,
        started_at: chrono::Utc::now(),
        finished_at: None,
    };
    let t0 = chrono::Utc::now();
    let ok = store.begin(&dep("v2"), |_| Ok("{}".into())).expect("begin");
    let bad = store.begin(&dep("v3"), |_| Ok("{}".into())).expect("begin");
    let mut w = Watch::new(t0);
    let pass = |ids: &[i64]| PassReport {
        rollouts: ids.iter().map(|i| rollout(*i)).collect(),
        ..Default::default()
    };
    assert_eq!(
        events(&w.news(&pass(&[ok]), &store, 5)),
        vec![NotifyEvent::RolloutStarted]
    );
    assert!(w.news(&pass(&[ok]), &store, 5).is_empty(), "told once");
    // A pass that could not see the fleet (no rollouts in it) ends nothing.
    assert!(w.news(&pass(&[]), &store, 5).is_empty());
    store
        .finish(ok, Outcome::Succeeded, None, chrono::Utc::now(), "{}")
        .expect("finish");
    let n = w.news(&pass(&[bad]), &store, 5);
    assert_eq!(
        events(&n),
        vec![NotifyEvent::RolloutStarted, NotifyEvent::RolloutSucceeded]
    );
    store
        .finish(
            bad,
            Outcome::RolledBack,
            Some("5xx rate 4% over 1%"),
            chrono::Utc::now(),
            "{}",
        )
        .expect("finish");
    let n = w.news(&pass(&[]), &store, 5);
    assert_eq!(events(&n), vec![NotifyEvent::RolloutRolledBack]);
    assert_eq!(n[0].severity, Severity::Critical);
    assert!(n[0].detail.contains("5xx rate"), "{:?}", n[0]);
    assert!(w.news(&pass(&[]), &store, 5).is_empty());

    // A rollback in a pre-deploy hook never shows as running; it is still told.
    let hook = store.begin(&dep("v4"), |_| Ok("{}".into())).expect("begin");
    store
        .finish(
            hook,
            Outcome::RolledBack,
            Some("pre-deploy hook failed"),
            chrono::Utc::now(),
            "{}",
        )
        .expect("finish");
    let n = w.news(&pass(&[]), &store, 5);
    assert_eq!(events(&n), vec![NotifyEvent::RolloutRolledBack]);
    assert!(n[0].title.contains("v4"), "{}", n[0].title);

    // After a restart: nothing that ended before it is told again, and a rollout still
    // running from before it is not "started" again.
    let running = store.begin(&dep("v5"), |_| Ok("{}".into())).expect("begin");
    let mut after = Watch::new(chrono::Utc::now() + chrono::Duration::seconds(1));
    assert!(after.news(&pass(&[running]), &store, 5).is_empty());
}

#[test]
fn rollouts_taken_over_from_another_replica_are_not_told_twice() {
    let store = Store::in_memory().expect("store");
    let t0 = chrono::Utc::now();
    let d = |build: &str, outcome: Outcome| Deployment {
        id: 0,
        app: "web".into(),
        env: "production".into(),
        fleet: "web".into(),
        build: build.into(),
        label: None,
        outcome,
        reason: None,
        started_at: chrono::Utc::now(),
        finished_at: None,
    };
    let done = store
        .begin(&d("v2", Outcome::InProgress), |_| Ok("{}".into()))
        .expect("begin");
    store
        .finish(done, Outcome::Succeeded, None, chrono::Utc::now(), "{}")
        .expect("finish");
    let live = store
        .begin(&d("v3", Outcome::InProgress), |_| Ok("{}".into()))
        .expect("begin");
    let mut w = Watch::new(t0);
    w.mark_told(&store.fleet_history("web", 10).expect("history"));
    let pass = PassReport {
        rollouts: vec![rollout(live)],
        ..Default::default()
    };
    assert!(w.news(&pass, &store, 5).is_empty(), "both were told");
    // The one it finishes itself is told here.
    store
        .finish(live, Outcome::Succeeded, None, chrono::Utc::now(), "{}")
        .expect("finish");
    let n = w.news(&PassReport::default(), &store, 5);
    assert_eq!(events(&n), vec![NotifyEvent::RolloutSucceeded]);
}

#[test]
fn scale_events_need_the_threshold_and_cap_and_missing_metrics_are_edge_triggered() {
    let store = Store::in_memory().expect("store");
    let mut w = Watch::new(chrono::Utc::now());
    let pass = |f: FleetReport| PassReport {
        fleets: vec![f],
        ..Default::default()
    };
    assert!(w.news(&pass(fleet("web", 10, 14)), &store, 5).is_empty());
    let n = w.news(&pass(fleet("web", 10, 15)), &store, 5);
    assert_eq!(events(&n), vec![NotifyEvent::Scale]);
    assert!(n[0].title.contains("scaling out by 5"), "{}", n[0].title);
    // The same decision again (a dry run, a launch that keeps failing): told once.
    assert!(w.news(&pass(fleet("web", 10, 15)), &store, 5).is_empty());
    assert_eq!(
        events(&w.news(&pass(fleet("web", 20, 12)), &store, 8)),
        vec![NotifyEvent::Scale]
    );

    let mut capped = fleet("web", 40, 40);
    capped.decision.recommended = 55;
    capped.decision.limits = vec![Limit::Max];
    let n = w.news(&pass(capped.clone()), &store, 100);
    assert_eq!(events(&n), vec![NotifyEvent::CostCap]);
    assert!(n[0].title.contains("want 55"), "{}", n[0].title);
    assert!(
        w.news(&pass(capped.clone()), &store, 100).is_empty(),
        "once"
    );
    // Hovering at the cap is one incident: a pass or two below it clears nothing.
    assert!(w.news(&pass(fleet("web", 40, 40)), &store, 100).is_empty());
    assert!(w.news(&pass(capped.clone()), &store, 100).is_empty());
    for _ in 0..CAP_CLEARS_AFTER {
        assert!(w.news(&pass(fleet("web", 40, 40)), &store, 100).is_empty());
    }
    assert_eq!(
        events(&w.news(&pass(capped), &store, 100)),
        vec![NotifyEvent::CostCap],
        "again once it was off the cap long enough"
    );

    let mut blind = fleet("api", 4, 4);
    blind.decision.warnings = vec!["CPUUtilization: no datapoint in 10m".into()];
    let n = w.news(&pass(blind.clone()), &store, 100);
    assert_eq!(events(&n), vec![NotifyEvent::MetricsMissing]);
    assert_eq!(n[0].severity, Severity::Critical);
    assert!(w.news(&pass(blind), &store, 100).is_empty());
    let n = w.news(&pass(fleet("api", 4, 4)), &store, 100);
    assert_eq!(events(&n), vec![NotifyEvent::MetricsMissing]);
    assert_eq!(n[0].severity, Severity::Info, "recovered");
}

#[test]
fn bodies_have_the_shapes_slack_and_opsgenie_expect() {
    let note = Note {
        event: NotifyEvent::RolloutRolledBack,
        severity: Severity::Critical,
        fleet: "web".into(),
        title: "x".repeat(200),
        detail: "gate failed".into(),
        alias: "coxswain-rollout-7".into(),
        resolves: false,
    };
    let slack = Target::Slack {
        url: "https://hooks.example/1".into(),
    }
    .body(&note, "prod");
    assert!(slack["text"]
        .as_str()
        .is_some_and(|t| t.contains("gate failed")));
    let og = Target::Opsgenie {
        url: "https://api.example/v2/alerts".into(),
        key: "k".into(),
    }
    .body(&note, "prod");
    assert_eq!(og["message"].as_str().map(|m| m.chars().count()), Some(130));
    assert_eq!(og["alias"], "coxswain-rollout-7");
    assert_eq!(og["priority"], "P2");
    assert_eq!(og["entity"], "web");
    assert_eq!(og["source"], "coxswain/prod");
    assert!(
        og.to_string().find("\"k\"").is_none(),
        "the key is a header, not in the body"
    );
}

#[test]
fn opsgenie_closes_a_resolved_incident_by_its_alias() {
    let og = Target::Opsgenie {
        url: "https://api.example/v2/alerts".into(),
        key: "k".into(),
    };
    let back = Note {
        event: NotifyEvent::MetricsMissing,
        severity: Severity::Info,
        fleet: "api".into(),
        title: "api: metrics are back".into(),
        detail: String::new(),
        alias: "coxswain-metrics-api".into(),
        resolves: true,
    };
    assert_eq!(
        og.url(&back),
        "https://api.example/v2/alerts/coxswain-metrics-api/close?identifierType=alias"
    );
    assert_eq!(og.body(&back, "prod")["note"], "api: metrics are back");
    let open = Note {
        resolves: false,
        ..back
    };
    assert_eq!(og.url(&open), "https://api.example/v2/alerts");
}

#[test]
fn a_halted_repair_is_told_once_and_its_resumption_closes_the_alert() {
    let store = Store::in_memory().expect("store");
    let mut w = Watch::new(chrono::Utc::now());
    let pass = |halted: bool, unhealthy: u32| PassReport {
        repairs: vec![crate::controller::RepairReport {
            fleet: "web".into(),
            unhealthy,
            instances: 6,
            limit: 2,
            halted,
            replacing: Vec::new(),
            retired: Vec::new(),
        }],
        ..Default::default()
    };
    assert!(w.news(&pass(false, 1), &store, 5).is_empty());
    let n = w.news(&pass(true, 4), &store, 5);
    assert_eq!(events(&n), vec![NotifyEvent::RepairHalted]);
    assert_eq!(n[0].severity, Severity::Critical);
    assert!(n[0].title.contains("4 of 6"), "{}", n[0].title);
    assert!(
        w.news(&pass(true, 5), &store, 5).is_empty(),
        "told once while it stays halted"
    );
    let n = w.news(&pass(false, 1), &store, 5);
    assert_eq!(events(&n), vec![NotifyEvent::RepairHalted]);
    assert!(n[0].resolves);
    assert_eq!(n[0].alias, "coxswain-repair-web");
    // A pass that did not check the fleet (between checks, during a rollout) says nothing.
    assert!(w.news(&PassReport::default(), &store, 5).is_empty());
}
