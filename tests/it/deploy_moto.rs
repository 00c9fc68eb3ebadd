//! `coxswain deploy` through the real SDK against moto (127.0.0.1): strategies, rollback on
//! an alarm, promotion refusal, a deploy during a scale-out, and the timed 20-instance roll.

use crate::common;

use chrono::Utc;
use common::{create_infra, new_template_version, put_metric, sdk_config, Infra, Moto};
use coxswain::clock::{Clock, RealClock, VirtualClock};
use coxswain::cloud::aws::AwsCloud;
use coxswain::cloud::Cloud;
use coxswain::controller::requests::{Accepted, DeployRequest, Refusal};
use coxswain::controller::Controller;
use coxswain::manifest;
use coxswain::store::Outcome;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const DIM: &str = "targetgroup/web-tg/0123456789abcdef";

/// `stat: Average`: the tests may put several datapoints in one period, which a Sum would add.
pub(crate) fn manifest_text(infra: &Infra, min: u32, deploy: &str) -> String {
    format!(
        "name: web\nenvironment: production\nregion: us-east-1\nlaunch:\n  launch_template: {{ name: {lt}, version: \"1\" }}\n  subnets: [{subnet}]\ntarget_group_arn: {tg}\ncapacity: {{ min: {min}, max: 40 }}\nscaling:\n  warmup: 0s\n  max_launch_per_cycle: 20\n  max_retire_per_cycle: 20\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCount, dimensions: {{ TargetGroup: {DIM} }}, stat: Average, kind: total }}\n        target: 100\ndeploy:\n{deploy}",
        lt = infra.launch_template,
        subnet = infra.subnet,
        tg = infra.target_group_arn,
    )
}

async fn aws(m: &Moto) -> Arc<AwsCloud> {
    common::aws_cloud(m, "coxswain").await
}

/// Builds (tag) and types of coxswain's live instances.
pub(crate) async fn fleet(cfg: &aws_config::SdkConfig) -> Vec<(String, String)> {
    let out = aws_sdk_ec2::Client::new(cfg)
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:coxswain:fleet")
                .values("web")
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .expect("describe");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !i.tags()
                .iter()
                .any(|t| t.key() == Some("coxswain:retiring"))
        })
        .map(|i| {
            let build = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("coxswain:build"))
                .and_then(|t| t.value())
                .unwrap_or("")
                .to_string();
            (
                build,
                i.instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

pub(crate) fn started(a: Result<Accepted, Refusal>) -> i64 {
    match a {
        Ok(Accepted::Started { id, .. }) => id,
        other => panic!("not started: {other:?}"),
    }
}

pub(crate) fn req(env: &str, build: &str) -> DeployRequest {
    DeployRequest {
        fleet: "web".into(),
        env: env.into(),
        build: build.into(),
        label: Some("4f2a9c1".into()),
        timeout_secs: None,
        idempotency_key: None,
    }
}

/// Passes on a virtual clock (15 s apart), putting `load` each minute, until rollout `id`
/// ends. Returns the outcome and the events.
async fn drive(
    c: &mut Controller,
    clock: &VirtualClock,
    cfg: &aws_config::SdkConfig,
    id: i64,
    load: impl Fn(usize) -> f64,
) -> (Outcome, Vec<String>) {
    let store = c.store().clone();
    for pass in 0..200 {
        if pass % 4 == 0 {
            put_metric(
                cfg,
                "AWS/ApplicationELB",
                "RequestCount",
                &[("TargetGroup", DIM)],
                clock.now() - chrono::Duration::seconds(60),
                load(pass),
            )
            .await;
        }
        let r = c.reconcile_once().await;
        assert!(r.errors.is_empty(), "pass {pass}: {:?}", r.errors);
        let d = store.deployment(id).expect("q").expect("row");
        if d.outcome != Outcome::InProgress {
            return (
                d.outcome,
                store
                    .events_after(id, 0)
                    .expect("events")
                    .into_iter()
                    .map(|e| e.message)
                    .collect(),
            );
        }
        clock.advance(Duration::from_secs(15));
    }
    panic!("rollout {id} did not end: {:?}", store.events_after(id, 0));
}

pub(crate) async fn setup(
    min: u32,
    deploy: &str,
) -> (
    Moto,
    aws_config::SdkConfig,
    Infra,
    Arc<VirtualClock>,
    Controller,
) {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    new_template_version(&cfg, &infra).await;
    let config =
        manifest::load_str("web.yaml", &manifest_text(&infra, min, deploy)).expect("valid");
    let clock = Arc::new(VirtualClock::new(Utc::now()));
    let cloud: Arc<dyn Cloud> = aws(&moto).await;
    let controller = Controller::new(cloud, clock.clone(), config, false).expect("in-memory store");
    (moto, cfg, infra, clock, controller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_build_rolls_through_a_canary_on_moto() {
    let deploy = "  strategy:\n    canary: { steps: [1, \"50%\", \"100%\"], bake: 30s }\n  gates: { interval: 15s }\n";
    let (_m, cfg, infra, clock, mut c) = setup(6, deploy).await;
    let now = clock.now();
    let id = started(c.request_deploy(&req("production", "2"), now));
    let (outcome, events) = drive(&mut c, &clock, &cfg, id, |_| 300.0).await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    let steps: Vec<_> = events.iter().filter(|e| e.starts_with("step ")).collect();
    assert_eq!(steps.len(), 3, "{events:#?}");
    assert!(steps[0].starts_with("step 1/3: 1 of 6"), "{steps:?}");
    let f = fleet(&cfg).await;
    assert_eq!(f.len(), 6);
    let lt2 = format!("{}:2", infra.launch_template);
    assert!(f.iter().all(|(b, t)| *b == lt2 && t == "t3.small"), "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_build_is_rolled_back_when_its_alarm_fires_leaving_the_old_build_at_full_capacity() {
    let deploy = "  strategy:\n    rolling: { batch: \"25%\" }\n  gates:\n    interval: 15s\n    alarms: [web-5xx]\n";
    let (_m, cfg, infra, clock, mut c) = setup(8, deploy).await;
    let cw = aws_sdk_cloudwatch::Client::new(&cfg);
    cw.put_metric_alarm()
        .alarm_name("web-5xx")
        .namespace("Web")
        .metric_name("5xx")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(10.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("alarm");
    cw.set_alarm_state()
        .alarm_name("web-5xx")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
        .state_reason("fine")
        .send()
        .await
        .expect("ok");
    for _ in 0..2 {
        c.reconcile_once().await;
    }
    assert_eq!(fleet(&cfg).await.len(), 8);
    let now = clock.now();
    let id = started(c.request_deploy(&req("production", "2"), now));
    // The new build's first batch goes out; then its errors trip the alarm.
    let mut tripped = false;
    let store = c.store().clone();
    let mut outcome = Outcome::InProgress;
    for pass in 0..120 {
        if !tripped && fleet(&cfg).await.iter().any(|(b, _)| b.ends_with(":2")) {
            cw.set_alarm_state()
                .alarm_name("web-5xx")
                .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
                .state_reason("5xx from the new build")
                .send()
                .await
                .expect("alarm");
            tripped = true;
        }
        c.reconcile_once().await;
        outcome = store.deployment(id).expect("q").expect("row").outcome;
        if outcome != Outcome::InProgress {
            break;
        }
        clock.advance(Duration::from_secs(15));
        assert!(pass < 119);
    }
    assert!(tripped);
    assert_eq!(outcome, Outcome::RolledBack);
    let reason = store
        .deployment(id)
        .expect("q")
        .expect("row")
        .reason
        .unwrap_or_default();
    assert!(reason.contains("alarm web-5xx is in ALARM"), "{reason}");
    let f = fleet(&cfg).await;
    let lt1 = format!("{}:1", infra.launch_template);
    assert_eq!(f.len(), 8, "{f:?}");
    assert!(f.iter().all(|(b, _)| *b == lt1), "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unvalidated_build_is_refused() {
    let deploy = "  promotion: { requires: [staging] }\n";
    let (_m, _cfg, _infra, clock, mut c) = setup(2, deploy).await;
    let now = clock.now();
    match c.request_deploy(&req("production", "2"), now) {
        Err(Refusal::Refused(m)) => assert!(m.contains("has not passed staging"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(c.store().history("web", 10).expect("history").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_during_a_scale_out_ends_with_the_right_count_all_on_the_new_build() {
    let deploy = "  strategy:\n    rolling: { batch: \"25%\" }\n  gates: { interval: 15s }\n";
    let (_m, cfg, infra, clock, mut c) = setup(4, deploy).await;
    // One datapoint per minute: CloudWatch sums the points within a period.
    put_metric(
        &cfg,
        "AWS/ApplicationELB",
        "RequestCount",
        &[("TargetGroup", DIM)],
        clock.now() - chrono::Duration::seconds(60),
        400.0,
    )
    .await;
    for _ in 0..2 {
        c.reconcile_once().await;
        clock.advance(Duration::from_secs(15));
    }
    let now = clock.now();
    let id = started(c.request_deploy(&req("production", "2"), now));
    // Load doubles to 10 instances' worth a minute into the rollout.
    let (outcome, events) = drive(&mut c, &clock, &cfg, id, |pass| {
        if pass < 4 {
            400.0
        } else {
            1000.0
        }
    })
    .await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    for pass in 0..8 {
        if pass % 4 == 0 {
            put_metric(
                &cfg,
                "AWS/ApplicationELB",
                "RequestCount",
                &[("TargetGroup", DIM)],
                clock.now() - chrono::Duration::seconds(60),
                1000.0,
            )
            .await;
        }
        c.reconcile_once().await;
        clock.advance(Duration::from_secs(15));
    }
    let f = fleet(&cfg).await;
    let lt2 = format!("{}:2", infra.launch_template);
    assert_eq!(f.len(), 10, "{f:?}");
    assert!(f.iter().all(|(b, _)| *b == lt2), "{f:?}");
}

/// The measure: 20 instances, 25% batches, zero bake, the real clock and the real
/// daemon loop. Prints the step log, the wall time and the AWS calls (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_roll_in_25_percent_batches_on_the_daemon_loop() {
    use coxswain::daemon::{self, ConfigSource, Signal};
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    new_template_version(&cfg, &infra).await;
    let deploy = "  strategy:\n    rolling: { batch: \"25%\", max_surge: \"25%\", max_unavailable: 0, bake: 0s }\n  gates: { interval: 1s }\n";
    let config = manifest::load_str("web.yaml", &manifest_text(&infra, 20, deploy)).expect("valid");
    let cloud = aws(&moto).await;
    let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
    let controller =
        Controller::new(cloud.clone(), clock.clone(), config, false).expect("in-memory store");
    let store = controller.store().clone();
    let (sig_tx, sig_rx) = tokio::sync::watch::channel(None);
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(4);
    let opts = daemon::Options {
        poll_interval: Some(Duration::from_secs(5)),
        max_passes: None,
        duration: None,
        replica: None,
        telemetry: None,
    };
    let handle = tokio::spawn(daemon::run_with_api(
        controller,
        clock,
        ConfigSource::Embedded,
        opts,
        sig_rx,
        cmd_rx,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet(&cfg).await.len() < 20 {
        assert!(Instant::now() < deadline, "fleet never reached 20");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls_before = cloud.calls().snapshot();
    let (tx, rx) = coxswain::api::Reply::channel();
    cmd_tx
        .send(coxswain::api::Command::Deploy(req("production", "2"), tx))
        .await
        .expect("daemon listening");
    let id = started(rx.await.expect("answer"));
    let t0 = Instant::now();
    loop {
        let d = store.deployment(id).expect("q").expect("row");
        if d.outcome != Outcome::InProgress {
            assert_eq!(
                d.outcome,
                Outcome::Succeeded,
                "{:?}",
                store.events_after(id, 0)
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "rollout still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = t0.elapsed();
    sig_tx.send(Some(Signal::Stop)).expect("stop");
    handle.await.expect("daemon ends");
    let events = store.events_after(id, 0).expect("events");
    println!(
        "rollout of 20 instances in 25% batches, zero bake: {:.1} s wall",
        wall.as_secs_f64()
    );
    for e in &events {
        println!("  [{}] {}", e.at.format("%H:%M:%S%.3f"), e.message);
    }
    let after = cloud.calls().snapshot();
    let mut total = 0;
    for ((name, a), (_, b)) in after.iter().zip(&calls_before) {
        if a > b {
            println!("  {name}: {}", a - b);
            total += a - b;
        }
    }
    println!("  AWS calls during the rollout: {total}");
    let steps: Vec<_> = events
        .iter()
        .filter(|e| e.message.starts_with("step "))
        .collect();
    assert_eq!(steps.len(), 4);
    for (k, e) in steps.iter().enumerate() {
        assert!(
            e.message
                .starts_with(&format!("step {}/4: {} of 20", k + 1, 5 * (k + 1))),
            "{}",
            e.message
        );
    }
    let f = fleet(&cfg).await;
    assert_eq!(f.len(), 20);
    assert!(f.iter().all(|(b, _)| b.ends_with(":2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_build_rolls_through_blue_green_on_moto() {
    let deploy = "  strategy:\n    blue_green: { keep_old: 2m }\n  gates: { interval: 15s }\n";
    let (_m, cfg, infra, clock, mut c) = setup(4, deploy).await;
    let now = clock.now();
    let id = started(c.request_deploy(&req("production", "2"), now));
    let (outcome, events) = drive(&mut c, &clock, &cfg, id, |_| 200.0).await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    assert!(
        events.iter().any(|e| e.starts_with("switched traffic to")),
        "{events:#?}"
    );
    // The target group holds only the green set.
    let registered = common::registered_ids(&cfg, &infra.target_group_arn).await;
    assert_eq!(registered.len(), 4, "{registered:?}");
    for _ in 0..8 {
        c.reconcile_once().await;
        clock.advance(Duration::from_secs(15));
    }
    let f = fleet(&cfg).await;
    let lt2 = format!("{}:2", infra.launch_template);
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(f.iter().all(|(b, _)| *b == lt2), "{f:?}");
}

/// The README's CI snippet, as written, against a daemon on moto (`run --cloud aws`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_ci_pipeline_works_as_written_against_moto() {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    new_template_version(&cfg, &infra).await;
    let fleet = |name: &str, env: &str, extra: &str| {
        format!(
            "name: {name}\napp: web\nenvironment: {env}\nregion: us-east-1\nlaunch:\n  launch_template: {{ name: {lt}, version: \"1\" }}\n  subnets: [{subnet}]\ntarget_group_arn: {tg}\ncapacity: {{ min: 2, max: 4 }}\nscaling:\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCount, dimensions: {{ TargetGroup: {DIM} }}, stat: Sum, kind: total }}\n        target: 100\ndeploy:\n  strategy:\n    rolling: {{ batch: 1 }}\n  gates: {{ interval: 1s }}\n{extra}",
            lt = infra.launch_template,
            subnet = infra.subnet,
            tg = infra.target_group_arn,
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    std::fs::write(
        manifests.join("staging.yaml"),
        fleet("web-staging", "staging", ""),
    )
    .expect("write");
    std::fs::write(
        manifests.join("production.yaml"),
        fleet(
            "web",
            "production",
            "  promotion: { requires: [staging], approval: true }\n",
        ),
    )
    .expect("write");
    let port = common::free_port();
    let token = "moto-ci-token-0123456789";
    let log = dir.path().join("daemon.log");
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args([
            "run",
            "--cloud",
            "aws",
            "--endpoint-url",
            &moto.endpoint(),
            "--poll-interval",
            "2s",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "-m",
        ])
        .arg(&manifests)
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("COXSWAIN_API_TOKEN", token)
        .env("COXSWAIN_STATE_DIR", dir.path())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("API listening")
    {
        assert!(
            Instant::now() < deadline,
            "daemon did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = format!("http://127.0.0.1:{port}");
    let lines = common::readme_ci_snippet();
    let mut outputs = Vec::new();
    for line in &lines {
        let envs = [
            ("COXSWAIN_SERVER", server.as_str()),
            ("COXSWAIN_API_TOKEN", token),
            ("BUILD", "2"),
            ("GIT_SHA", "4f2a9c1"),
            ("QA_APPROVER", "qa-ana"),
        ];
        let line = line.clone();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (code, text) = tokio::task::spawn_blocking(move || {
            let envs: Vec<(&str, &str)> =
                envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            common::run_line(&line, &envs)
        })
        .await
        .expect("line ran");
        assert_eq!(
            code,
            Some(0),
            "{text}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        outputs.push(text);
    }
    let _ = std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    let lt2 = format!("{}:2", infra.launch_template);
    assert!(
        outputs[0].contains(&format!("live: {lt2} on web-staging (staging)")),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[2].contains(&format!("live: {lt2} on web (production)")),
        "{}",
        outputs[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_shifts_listener_weights_between_target_groups_on_moto() {
    use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum};
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    new_template_version(&cfg, &infra).await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&cfg);
    let subnet_b = ec2
        .create_subnet()
        .vpc_id(&infra.vpc)
        .cidr_block("10.0.2.0/24")
        .availability_zone("us-east-1b")
        .send()
        .await
        .expect("subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("id")
        .to_string();
    let lb = elb
        .create_load_balancer()
        .name("web-lb")
        .subnets(&infra.subnet)
        .subnets(&subnet_b)
        .send()
        .await
        .expect("load balancer");
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .expect("arn")
        .to_string();
    let canary_tg = elb
        .create_target_group()
        .name("web-canary")
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(&infra.vpc)
        .send()
        .await
        .expect("canary tg");
    let canary_tg = canary_tg.target_groups()[0]
        .target_group_arn()
        .expect("arn")
        .to_string();
    let listener = elb
        .create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&infra.target_group_arn)
                .build(),
        )
        .send()
        .await
        .expect("listener");
    let listener = listener.listeners()[0]
        .listener_arn()
        .expect("arn")
        .to_string();
    let deploy = format!("  strategy:\n    canary:\n      steps: [1, \"50%\", \"100%\"]\n      bake: 30s\n      traffic: {{ listener_arn: \"{listener}\", canary_target_group_arn: \"{canary_tg}\" }}\n  gates: {{ interval: 15s }}\n");
    let config = manifest::load_str("web.yaml", &manifest_text(&infra, 4, &deploy)).expect("valid");
    let clock = Arc::new(VirtualClock::new(Utc::now()));
    let cloud: Arc<dyn Cloud> = aws(&moto).await;
    // Repair's health gate names the load balancer of each target group (DescribeTargetGroups
    // through the SDK); a target group that does not exist is left out, not an error.
    let gone = infra.target_group_arn.replace("web-tg", "gone-tg");
    let lbs = cloud
        .target_group_load_balancers(&[infra.target_group_arn.clone(), gone])
        .await
        .expect("DescribeTargetGroups");
    assert_eq!(
        lbs,
        vec![(infra.target_group_arn.clone(), vec![lb_arn.clone()])]
    );
    let mut c = Controller::new(cloud, clock.clone(), config, false).expect("in-memory store");
    let now = clock.now();
    let id = started(c.request_deploy(&req("production", "2"), now));
    let (outcome, events) = drive(&mut c, &clock, &cfg, id, |_| 200.0).await;
    assert_eq!(outcome, Outcome::Succeeded, "{events:#?}");
    let weights = |d: &aws_sdk_elasticloadbalancingv2::operation::describe_listeners::DescribeListenersOutput| -> Vec<(String, i32)> {
        d.listeners()[0].default_actions()[0]
            .forward_config()
            .map(|f| f.target_groups().iter().map(|t| (t.target_group_arn().unwrap_or("").to_string(), t.weight().unwrap_or(0))).collect())
            .unwrap_or_default()
    };
    let d = elb
        .describe_listeners()
        .listener_arns(&listener)
        .send()
        .await
        .expect("listener");
    let w = weights(&d);
    assert!(
        w.contains(&(infra.target_group_arn.clone(), 100)) && w.contains(&(canary_tg.clone(), 0)),
        "{w:?}"
    );
    let calls: Vec<_> = moto
        .log()
        .into_iter()
        .filter(|e| e["action"] == "ModifyListener")
        .collect();
    let shares: Vec<String> = calls
        .iter()
        .filter_map(|e| {
            e["params"]["DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.Weight"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(shares.len() >= 4, "{shares:?} {calls:?}");
    assert_eq!(shares.last().map(String::as_str), Some("0"));
    assert!(shares.iter().any(|s| s == "100"), "{shares:?}");
}
