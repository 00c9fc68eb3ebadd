//! Fleets heal, through the real SDK against moto on 127.0.0.1: an instance made
//! unhealthy in its target group is replaced, launch before terminate; and with more than
//! the unhealthy share down at once, nothing is replaced. These tests fail, never skip,
//! when moto is missing.
//!
//! moto reports every registered target healthy, except one whose instance is stopped:
//! that one is `unused` with reason `Target.InvalidState`, as on a real ALB. So a stopped
//! instance is how these tests make a target unhealthy.

use crate::common;

use chrono::Utc;
use common::{create_infra, registered_ids, sdk_config, Infra, Moto};
use coxswain::clock::VirtualClock;
use coxswain::controller::{Controller, PassReport};
use coxswain::manifest;
use std::sync::Arc;
use std::time::Duration;

/// Three instances, held by a schedule that is always open, behind the target group.
fn manifest_text(infra: &Infra) -> String {
    format!(
        r#"name: web
environment: staging
region: us-east-1
launch:
  launch_template: {{ name: {lt}, version: "1" }}
  subnets: [{subnet}]
target_group_arn: {tg}
capacity: {{ min: 3, max: 6 }}
scaling:
  warmup: 1m
  policies:
    - scheduled: {{ cron: "0 0 * * *", duration: 1d, min: 3 }}
"#,
        lt = infra.launch_template,
        subnet = infra.subnet,
        tg = infra.target_group_arn,
    )
}

struct Setup {
    moto: Moto,
    cfg: aws_config::SdkConfig,
    infra: Infra,
    clock: Arc<VirtualClock>,
    controller: Controller,
}

async fn setup() -> Setup {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    let config = manifest::load_str("web.yaml", &manifest_text(&infra)).expect("valid");
    let clock = Arc::new(VirtualClock::new(Utc::now()));
    let cloud = common::aws_cloud(&moto, &config.controller.controller_id).await;
    let controller = Controller::new(cloud, clock.clone(), config, false).expect("in-memory store");
    Setup {
        moto,
        cfg,
        infra,
        clock,
        controller,
    }
}

async fn pass(s: &mut Setup) -> PassReport {
    let r = s.controller.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    s.clock.advance(Duration::from_secs(60));
    r
}

/// (id, state) of the fleet's instances, terminated ones included, sorted by id.
async fn states(s: &Setup) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = common::instance_states(&s.cfg, "web")
        .await
        .into_iter()
        .map(|(id, state, _)| (id, state))
        .collect();
    v.sort();
    v
}

async fn running(s: &Setup) -> Vec<String> {
    states(s)
        .await
        .into_iter()
        .filter(|(_, st)| st == "running" || st == "pending")
        .map(|(id, _)| id)
        .collect()
}

/// Settle at three registered instances, then stop `n` of them. Returns the stopped ids
/// and where the stop is in the proxy's log.
async fn settle_then_stop(s: &mut Setup, n: usize) -> (Vec<String>, usize) {
    for _ in 0..3 {
        pass(s).await;
    }
    let ids = running(s).await;
    assert_eq!(ids.len(), 3, "settled at the minimum");
    assert_eq!(registered_ids(&s.cfg, &s.infra.target_group_arn).await, ids);
    let bad: Vec<String> = ids.into_iter().take(n).collect();
    aws_sdk_ec2::Client::new(&s.cfg)
        .stop_instances()
        .set_instance_ids(Some(bad.clone()))
        .send()
        .await
        .expect("stop instances");
    let at = s
        .moto
        .log()
        .iter()
        .rposition(|e| e["action"] == "StopInstances")
        .expect("stop logged");
    // The target group now calls them unhealthy (unused, Target.InvalidState).
    let health = aws_sdk_elasticloadbalancingv2::Client::new(&s.cfg)
        .describe_target_health()
        .target_group_arn(&s.infra.target_group_arn)
        .send()
        .await
        .expect("target health");
    for id in &bad {
        let d = health
            .target_health_descriptions()
            .iter()
            .find(|d| d.target().and_then(|t| t.id()) == Some(id.as_str()))
            .and_then(|d| d.target_health())
            .expect("listed");
        assert_eq!(d.state().map(|s| s.as_str()), Some("unused"));
        assert_eq!(d.reason().map(|r| r.as_str()), Some("Target.InvalidState"));
    }
    (bad, at)
}

/// Position of the first `action` at or after `from` in the proxy's log naming `id` (any
/// call when `id` is None).
fn position(
    log: &[serde_json::Value],
    from: usize,
    action: &str,
    id: Option<&str>,
) -> Option<usize> {
    log.iter()
        .enumerate()
        .skip(from)
        .find(|(_, e)| {
            e["action"] == action
                && id.is_none_or(|id| {
                    e["params"]
                        .as_object()
                        .is_some_and(|p| p.values().any(|v| v == id))
                })
        })
        .map(|(i, _)| i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_made_unhealthy_in_its_target_group_is_replaced_launch_before_terminate() {
    let mut s = setup().await;
    let (bad, stopped_at) = settle_then_stop(&mut s, 1).await;
    let bad = bad[0].clone();
    let mut reports = Vec::new();
    for _ in 0..12 {
        reports.push(pass(&mut s).await);
        let gone = states(&s)
            .await
            .iter()
            .any(|(id, st)| *id == bad && st == "terminated");
        if gone {
            break;
        }
    }
    let log = s.moto.log();
    let launch = position(&log, stopped_at, "RunInstances", None).expect("a replacement launched");
    let dereg =
        position(&log, stopped_at, "DeregisterTargets", Some(&bad)).expect("bad one deregistered");
    let term =
        position(&log, stopped_at, "TerminateInstances", Some(&bad)).expect("bad one terminated");
    assert!(
        launch < dereg && dereg < term,
        "RunInstances at {launch}, DeregisterTargets at {dereg}, TerminateInstances at {term}"
    );
    // Not at once: the unhealthy grace (5 minutes by default) came first.
    let first_seen = reports
        .iter()
        .position(|r| r.repairs.iter().any(|x| x.unhealthy == 1))
        .expect("seen unhealthy");
    let condemned = reports
        .iter()
        .position(|r| r.repairs.iter().any(|x| x.replacing.contains(&bad)))
        .expect("condemned");
    assert!(
        condemned >= first_seen + 5,
        "seen at {first_seen}, condemned at {condemned}"
    );
    // One replacement, the fleet back at three, all in the target group.
    let launches = log[stopped_at..]
        .iter()
        .filter(|e| e["action"] == "RunInstances")
        .count();
    assert_eq!(launches, 1);
    let now = running(&s).await;
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(!now.contains(&bad));
    assert_eq!(registered_ids(&s.cfg, &s.infra.target_group_arn).await, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_stops_above_the_unhealthy_threshold() {
    let mut s = setup().await;
    // Two of three at once: more than 34% (one instance).
    let (bad, stopped_at) = settle_then_stop(&mut s, 2).await;
    for k in 0..10 {
        let r = pass(&mut s).await;
        let x = r.repairs.first().expect("checked");
        assert!(x.halted, "pass {k}: {x:?}");
        assert_eq!((x.unhealthy, x.instances, x.limit), (2, 3, 1));
        assert!(x.replacing.is_empty());
    }
    let log = s.moto.log();
    for action in [
        "RunInstances",
        "TerminateInstances",
        "DeregisterTargets",
        "CreateTags",
    ] {
        assert_eq!(
            position(&log, stopped_at, action, None),
            None,
            "{action} while repair is halted"
        );
    }
    // The stopped ones are still there, neither replaced nor terminated.
    let all = states(&s).await;
    for id in &bad {
        assert!(
            all.iter().any(|(i, st)| i == id && st == "stopped"),
            "{all:?}"
        );
    }
    assert_eq!(running(&s).await.len(), 1);
}
