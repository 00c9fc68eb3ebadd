//! The deploy cases (`../shared/cases/`, "Deploys") through the real SDK against moto on
//! 127.0.0.1: a hanging pre-deploy hook (hook-timeout), retried deploys and smoke tests
//! before traffic (retry-idempotency), and a hand rollback during an incident
//! (hand-rollback-red-gate). The fleets are the cases' (2 instances, rolling one at a
//! time with a surge of 1); the settings come from the case files.

use crate::common::{self, put_metric, registered_ids};
use crate::deploy_moto::{fleet, req, setup, started};
use coxswain::clock::{Clock, VirtualClock};
use coxswain::controller::requests::{Accepted, Refusal, RollbackRequest};
use coxswain::controller::Controller;
use coxswain::deploy::Rollout;
use coxswain::store::Outcome;
use std::time::{Duration, Instant};

/// Passes 15 s apart until the fleet has `n` running instances.
async fn settle(c: &mut Controller, clock: &VirtualClock, cfg: &aws_config::SdkConfig, n: usize) {
    for _ in 0..20 {
        let r = c.reconcile_once().await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        if fleet(cfg).await.len() == n {
            // One more pass registers the last ones.
            c.reconcile_once().await;
            return;
        }
        clock.advance(Duration::from_secs(15));
    }
    panic!("the fleet never reached {n}: {:?}", fleet(cfg).await);
}

/// This process's children running exactly `argv` (not zombies).
fn children(argv: &[&str]) -> Vec<u32> {
    common::children_of(std::process::id())
        .into_iter()
        .filter(|(_, _, a)| a.iter().map(String::as_str).eq(argv.iter().copied()))
        .map(|(pid, _, _)| pid)
        .collect()
}

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn outcome(c: &Controller, id: i64) -> Outcome {
    c.store()
        .deployment(id)
        .expect("ledger")
        .expect("row")
        .outcome
}

fn rollout(c: &Controller, id: i64) -> Rollout {
    c.store().rollout(id).expect("query").expect("rollout").1
}

fn events(c: &Controller, id: i64) -> Vec<String> {
    c.store()
        .events_after(id, 0)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// hook-timeout (case7) on moto: the pre-deploy hook `sleep 600` (its own timeout 90 s)
/// and a deploy with a 20 s timeout. The rollout shows in the pass report (what `status`
/// reads) as `pre_deploy`; at 20 s the hook is killed and the deploy ends timed out with
/// no instance changed. A second deploy is stopped by a hand rollback the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_killed_by_the_deploy_timeout_and_by_rollback_on_moto() {
    let deploy = "  strategy: { rolling: { batch: 1, max_surge: 1 } }\n  gates: { timeout: 5m, interval: 5s }\n  hooks:\n    pre_deploy:\n      - command: [sleep, \"600\"]\n        timeout: 90s\n";
    let (_m, cfg, infra, clock, mut c) = setup(2, deploy).await;
    settle(&mut c, &clock, &cfg, 2).await;
    let lt1 = format!("{}:1", infra.launch_template);
    let hook = ["sleep", "600"];

    let mut r = req("production", "2");
    r.timeout_secs = Some(20);
    let id = started(c.request_deploy(&r, clock.now()));
    let report = c.reconcile_once().await;
    assert!(
        report
            .rollouts
            .iter()
            .any(|x| x.id == id && x.phase == "pre_deploy"),
        "status must show the rollout while its hook runs: {:?}",
        report.rollouts
    );
    until("the hook never started", 10, || !children(&hook).is_empty()).await;
    for _ in 0..10 {
        if outcome(&c, id) != Outcome::InProgress {
            break;
        }
        clock.advance(Duration::from_secs(5));
        c.reconcile_once().await;
    }
    assert_eq!(
        outcome(&c, id),
        Outcome::RolledBack,
        "{:#?}",
        events(&c, id)
    );
    let r = rollout(&c, id);
    assert!(r.timed_out, "a deploy ended by its timeout exits 3: {r:?}");
    assert!(
        clock.now() - r.started <= chrono::Duration::seconds(30),
        "it ended at its 20 s timeout, not the hook's 90 s"
    );
    until("the hook outlived the deploy", 10, || {
        children(&hook).is_empty()
    })
    .await;
    let f = fleet(&cfg).await;
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().all(|(b, _)| *b == lt1), "nothing changed: {f:?}");

    // Deploy again; a hand rollback during the hook ends it at the next pass.
    let id = started(c.request_deploy(&req("production", "2"), clock.now()));
    c.reconcile_once().await;
    until("the second hook never started", 10, || {
        !children(&hook).is_empty()
    })
    .await;
    let rb = c.request_rollback(
        &RollbackRequest {
            fleet: "web".into(),
            env: "production".into(),
            to: None,
        },
        clock.now(),
    );
    assert!(
        matches!(rb, Ok(Accepted::Started { id: x, .. }) if x == id),
        "{rb:?}"
    );
    clock.advance(Duration::from_secs(5));
    c.reconcile_once().await;
    assert_eq!(
        outcome(&c, id),
        Outcome::RolledBack,
        "{:#?}",
        events(&c, id)
    );
    assert!(!rollout(&c, id).timed_out);
    until("rollback left the hook running", 10, || {
        children(&hook).is_empty()
    })
    .await;
    let f = fleet(&cfg).await;
    assert!(f.len() == 2 && f.iter().all(|(b, _)| *b == lt1), "{f:?}");
}

/// retry-idempotency (case8) on moto: CI retries a deploy (with its idempotency key, and
/// without) and gets the same rollout; the key reused for another build is refused. The
/// fleet's smoke test (20 s a try) runs in the background: passes stay short, and a new
/// instance is not registered with the target group before its smoke passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_return_one_rollout_and_smoke_gates_traffic_on_moto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("smoke-ok");
    let deploy = format!(
        "  strategy: {{ rolling: {{ batch: 1, max_surge: 1 }} }}\n  gates:\n    timeout: 5m\n    interval: 5s\n    instance: {{ smoke_command: [sh, -c, \"sleep 3; test -e {}\"], smoke_attempts: 100 }}\n",
        flag.display()
    );
    let (_m, cfg, infra, clock, mut c) = setup(2, &deploy).await;
    settle(&mut c, &clock, &cfg, 2).await;
    let lt2 = format!("{}:2", infra.launch_template);

    let keyed = |build: &str| {
        let mut r = req("production", build);
        r.idempotency_key = Some("ci-job-7".into());
        r
    };
    let first = c.request_deploy(&keyed("2"), clock.now());
    assert!(
        matches!(
            first,
            Ok(Accepted::Started {
                existing: false,
                ..
            })
        ),
        "{first:?}"
    );
    let id = started(first);
    for again in [keyed("2"), req("production", "2")] {
        let a = c.request_deploy(&again, clock.now());
        assert!(
            matches!(a, Ok(Accepted::Started { id: x, existing: true, .. }) if x == id),
            "a retry returns rollout #{id}: {a:?}"
        );
    }
    let other = c.request_deploy(&keyed("3"), clock.now());
    assert!(
        matches!(&other, Err(Refusal::Refused(m)) if m.contains("was used for another deploy")),
        "{other:?}"
    );

    // Roll: the new instance runs, its smoke fails (no flag yet) and it stays out of
    // the target group; every pass returns quickly though a smoke try takes 3 s.
    let mut new_ids = Vec::new();
    for _ in 0..12 {
        let t = Instant::now();
        let r = c.reconcile_once().await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a pass took {:?}: it waited for a smoke test",
            t.elapsed()
        );
        new_ids = common::instance_states(&cfg, "web")
            .await
            .into_iter()
            .filter(|(_, s, b)| s == "running" && *b == lt2)
            .map(|(i, _, _)| i)
            .collect();
        if events(&c, id)
            .iter()
            .any(|e| e.contains("smoke command failed on"))
        {
            break;
        }
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let evs = events(&c, id);
    let failed = evs
        .iter()
        .find(|e| e.contains("smoke command failed on"))
        .unwrap_or_else(|| panic!("no smoke failure reported: {evs:#?}"));
    assert!(
        failed.contains("exit status: 1") && failed.contains("try 1 of 100"),
        "{failed}"
    );
    assert_eq!(new_ids.len(), 1, "one new instance (surge 1)");
    let registered = registered_ids(&cfg, &infra.target_group_arn).await;
    assert!(
        !registered.contains(&new_ids[0]),
        "{} is registered before its smoke passed: {registered:?}",
        new_ids[0]
    );

    // The smoke passes from now on: the rollout ends live, every instance registered.
    std::fs::write(&flag, b"ok").expect("flag");
    for _ in 0..120 {
        if outcome(&c, id) != Outcome::InProgress {
            break;
        }
        clock.advance(Duration::from_secs(5));
        c.reconcile_once().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(outcome(&c, id), Outcome::Succeeded, "{:#?}", events(&c, id));
    c.reconcile_once().await;
    let f = fleet(&cfg).await;
    assert!(f.len() == 2 && f.iter().all(|(b, _)| *b == lt2), "{f:?}");

    // Retried after the end: the key still answers with that rollout; without the key
    // the build is live, nothing to do. One rollout of build 2 in the ledger.
    let late = c.request_deploy(&keyed("2"), clock.now());
    assert!(
        matches!(late, Ok(Accepted::Started { id: x, existing: true, .. }) if x == id),
        "{late:?}"
    );
    let plain = c.request_deploy(&req("production", "2"), clock.now());
    assert!(
        matches!(plain, Ok(Accepted::AlreadyLive { .. })),
        "{plain:?}"
    );
    let history = c.store().history("web", 50).expect("history");
    assert_eq!(
        history.iter().filter(|d| d.build == lt2).count(),
        1,
        "{history:?}"
    );
}

/// hand-rollback-red-gate (case6) on moto: build 2 goes live with its error-rate gate
/// green; an incident turns the gate red and the operator rolls back by hand. The
/// rollback restores build 1 on both instances, reports the red gate without acting on
/// it, and build 2 is no longer "passed"; a rollback to a build never live is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_rollback_during_an_incident_restores_the_last_good_build_on_moto() {
    let deploy = "  strategy: { rolling: { batch: 1, max_surge: 1, bake: 30s } }\n  gates:\n    timeout: 3m\n    interval: 15s\n    metrics:\n      - metric: { namespace: Web, name: ErrorRate, dimensions: { Fleet: web }, stat: Average }\n        below: 5\n";
    let (_m, cfg, infra, clock, mut c) = setup(2, deploy).await;
    settle(&mut c, &clock, &cfg, 2).await;
    let (lt1, lt2) = (
        format!("{}:1", infra.launch_template),
        format!("{}:2", infra.launch_template),
    );
    // Error rate per minute, as the application would publish it.
    let publish = |at: chrono::DateTime<chrono::Utc>, v: f64| {
        let cfg = cfg.clone();
        async move { put_metric(&cfg, "Web", "ErrorRate", &[("Fleet", "web")], at, v).await }
    };
    for m in 1..=5 {
        publish(clock.now() - chrono::Duration::minutes(m), 1.0).await;
    }
    let id = started(c.request_deploy(&req("production", "2"), clock.now()));
    for pass in 0..60 {
        if outcome(&c, id) != Outcome::InProgress {
            break;
        }
        if pass % 4 == 0 {
            publish(clock.now() - chrono::Duration::seconds(30), 1.0).await;
        }
        c.reconcile_once().await;
        clock.advance(Duration::from_secs(15));
    }
    assert_eq!(outcome(&c, id), Outcome::Succeeded, "{:#?}", events(&c, id));
    let store = c.store().clone();
    assert!(store.passed("web", "production", &lt2).expect("ledger"));

    // The incident: the error rate is far over the gate.
    for m in 0..3 {
        publish(clock.now() - chrono::Duration::minutes(m), 40.0).await;
    }
    let rollback = |to: Option<&str>| RollbackRequest {
        fleet: "web".into(),
        env: "production".into(),
        to: to.map(str::to_string),
    };
    let never = c.request_rollback(&rollback(Some("99")), clock.now());
    assert!(
        matches!(&never, Err(Refusal::Refused(m)) if m.contains("was never live in production")),
        "{never:?}"
    );
    let rid = started(c.request_rollback(&rollback(None), clock.now()));
    assert_eq!(
        started(c.request_rollback(&rollback(None), clock.now())),
        rid,
        "a repeated rollback returns the one under way"
    );
    for pass in 0..40 {
        if outcome(&c, rid) != Outcome::InProgress {
            break;
        }
        if pass % 4 == 0 {
            publish(clock.now() - chrono::Duration::seconds(30), 40.0).await;
        }
        c.reconcile_once().await;
        clock.advance(Duration::from_secs(15));
    }
    let evs = events(&c, rid);
    assert_eq!(outcome(&c, rid), Outcome::Succeeded, "{evs:#?}");
    assert!(
        evs.iter()
            .any(|e| e.contains("gate red during the rollback")),
        "{evs:#?}"
    );
    for _ in 0..4 {
        c.reconcile_once().await;
        clock.advance(Duration::from_secs(15));
    }
    let f = fleet(&cfg).await;
    assert!(f.len() == 2 && f.iter().all(|(b, _)| *b == lt1), "{f:?}");
    assert!(!store.passed("web", "production", &lt2).expect("ledger"));
}

/// A deploy of a launch template version that does not exist is refused at admission
/// through the daemon's request handler (what the API calls), with EC2's answer; an
/// existing version is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_version_that_does_not_exist_is_refused_at_admission_on_moto() {
    let deploy = "  strategy: { rolling: { batch: 1, max_surge: 1 } }\n  gates: { timeout: 5m, interval: 5s }\n";
    let (_m, _cfg, infra, clock, mut c) = setup(2, deploy).await;
    let ask = |build: &str| req("production", build);
    let (reply, rx) = coxswain::api::Reply::channel();
    coxswain::daemon::handle(
        &mut c,
        None,
        clock.now(),
        coxswain::api::Command::Deploy(ask("9"), reply),
    )
    .await;
    let answer = rx.await.expect("answer");
    let lt9 = format!("{}:9", infra.launch_template);
    assert!(
        matches!(&answer, Err(Refusal::Refused(m)) if m.contains(&lt9) && m.contains("does not exist")),
        "{answer:?}"
    );
    assert!(
        c.store().history("web", 10).expect("history").is_empty(),
        "nothing was started"
    );
    let (reply, rx) = coxswain::api::Reply::channel();
    coxswain::daemon::handle(
        &mut c,
        None,
        clock.now(),
        coxswain::api::Command::Deploy(ask("2"), reply),
    )
    .await;
    let answer = rx.await.expect("answer");
    assert!(matches!(answer, Ok(Accepted::Started { .. })), "{answer:?}");
}
