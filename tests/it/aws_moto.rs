//! The daemon's AWS side through the real Rust SDK against moto server on 127.0.0.1
//! (started by the harness, with the CloudWatch CBOR bridge in front). These tests fail,
//! never skip, when moto is missing.

use crate::common;

use chrono::{DateTime, Utc};
use common::{create_infra, put_metric, sdk_config, Infra, Moto};
use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::{Cloud, CloudError};
use coxswain::controller::{Action, Controller};
use coxswain::manifest;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "AWS/ApplicationELB";
const METRIC: &str = "RequestCount";
const DIM: (&str, &str) = ("TargetGroup", "targetgroup/web-tg/0123456789abcdef");

/// The manifest a new user writes from the README, for the infrastructure just created.
fn manifest_text(infra: &Infra) -> String {
    format!(
        r#"name: web
environment: staging
region: us-east-1
launch:
  launch_template: {{ name: {lt}, version: "1" }}
  subnets: [{subnet}]
target_group_arn: {tg}
capacity: {{ min: 1, max: 10 }}
scaling:
  warmup: 1m
  scale_in_stabilization: 5m
  policies:
    - target_tracking:
        metric:
          namespace: {NS}
          name: {METRIC}
          dimensions: {{ {k}: {v} }}
          stat: Sum
          kind: total
        target: 100
"#,
        lt = infra.launch_template,
        subnet = infra.subnet,
        tg = infra.target_group_arn,
        k = DIM.0,
        v = DIM.1,
    )
}

async fn aws(m: &Moto, controller_id: &str) -> Arc<dyn Cloud> {
    common::aws_cloud(m, controller_id).await
}

struct Setup {
    moto: Moto,
    cfg: aws_config::SdkConfig,
    infra: Infra,
    clock: Arc<VirtualClock>,
    controller: Controller,
    cloud: Arc<dyn Cloud>,
}

async fn setup() -> Setup {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    let config =
        manifest::load_str("web.yaml", &manifest_text(&infra)).expect("README manifest is valid");
    let clock = Arc::new(VirtualClock::new(Utc::now()));
    let cloud = aws(&moto, &config.controller.controller_id).await;
    let controller =
        Controller::new(cloud.clone(), clock.clone(), config, false).expect("in-memory store");
    Setup {
        moto,
        cfg,
        infra,
        clock,
        controller,
        cloud,
    }
}

async fn put(s: &Setup, at: DateTime<Utc>, v: f64) {
    put_metric(&s.cfg, NS, METRIC, &[DIM], at, v).await;
}

/// Live instances carrying coxswain's fleet tag, with their tags.
async fn fleet_instances(cfg: &aws_config::SdkConfig) -> Vec<aws_sdk_ec2::types::Instance> {
    let ec2 = aws_sdk_ec2::Client::new(cfg);
    let out = ec2
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
        .flat_map(|r| r.instances().to_vec())
        .collect()
}

fn tag<'a>(i: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

async fn registered(cfg: &aws_config::SdkConfig, tg: &str) -> Vec<String> {
    common::registered_ids(cfg, tg).await
}

async fn pass(s: &mut Setup) -> coxswain::controller::PassReport {
    let r = s.controller.reconcile_once().await;
    s.clock.advance(Duration::from_secs(60));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rising_metric_launches_tagged_instances_from_the_template_and_registers_them() {
    let mut s = setup().await;
    // No datapoint yet: for a count (Sum) that is no traffic, as CloudWatch publishes
    // nothing for a target group without requests: the minimum, without a warning.
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(fleet_instances(&s.cfg).await.len(), 1);
    assert!(
        r.fleets[0].decision.warnings.is_empty(),
        "{:?}",
        r.fleets[0].decision.warnings
    );
    assert!(
        r.fleets[0].decision.reason().contains("no traffic"),
        "{}",
        r.fleets[0].decision.reason()
    );

    // 750 requests/min at 100 per instance needs 8.
    let now = s.clock.now();
    put(&s, now - chrono::Duration::seconds(60), 750.0).await;
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        r.fleets[0].decision.desired,
        8,
        "{}",
        r.fleets[0].decision.reason()
    );
    let live = fleet_instances(&s.cfg).await;
    assert_eq!(live.len(), 8);
    for i in &live {
        assert_eq!(tag(i, "coxswain:fleet"), Some("web"));
        assert_eq!(tag(i, "coxswain:controller"), Some("coxswain"));
        assert_eq!(tag(i, "coxswain:build"), Some("web-lt:1"));
        // Launched from the template: its image and type, in the manifest's subnet.
        assert_eq!(i.image_id(), Some(s.infra.image_id.as_str()));
        assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.micro"));
        assert_eq!(i.subnet_id(), Some(s.infra.subnet.as_str()));
    }
    // RunInstances carried the tags and a ClientToken in the same call.
    let runs: Vec<_> = s
        .moto
        .log()
        .into_iter()
        .filter(|e| e["action"] == "RunInstances")
        .collect();
    assert!(!runs.is_empty());
    for e in &runs {
        let p = &e["params"];
        assert_eq!(p["LaunchTemplate.LaunchTemplateName"], "web-lt");
        assert!(p["ClientToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("cox-")));
        assert_eq!(p["TagSpecification.1.ResourceType"], "instance");
    }

    // Running instances get registered with the target group.
    put(&s, s.clock.now() - chrono::Duration::seconds(60), 750.0).await;
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mut ids: Vec<String> = fleet_instances(&s.cfg)
        .await
        .iter()
        .filter_map(|i| i.instance_id().map(String::from))
        .collect();
    ids.sort();
    assert_eq!(registered(&s.cfg, &s.infra.target_group_arn).await, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falling_metric_scales_in_after_stabilization_deregistering_first() {
    let mut s = setup().await;
    for _ in 0..3 {
        put(&s, s.clock.now() - chrono::Duration::seconds(60), 600.0).await;
        pass(&mut s).await;
    }
    assert_eq!(fleet_instances(&s.cfg).await.len(), 6);

    // Load falls to what 2 instances carry. For the 5-minute window nothing is retired.
    let mut counts = Vec::new();
    for _ in 0..12 {
        put(&s, s.clock.now() - chrono::Duration::seconds(60), 150.0).await;
        let r = pass(&mut s).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        counts.push(fleet_instances(&s.cfg).await.len());
    }
    assert!(
        counts[..4].iter().all(|c| *c == 6),
        "held during stabilization: {counts:?}"
    );
    assert_eq!(*counts.last().expect("passes ran"), 2, "{counts:?}");

    // Every terminated instance was deregistered from the target group first.
    let log = s.moto.log();
    let position = |action: &str, id: &str| {
        log.iter().position(|e| {
            e["action"] == action
                && e["params"]
                    .as_object()
                    .is_some_and(|p| p.values().any(|v| v == id))
        })
    };
    let terminated: Vec<String> = log
        .iter()
        .filter(|e| e["action"] == "TerminateInstances")
        .flat_map(|e| {
            e["params"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .filter(|(k, _)| k.starts_with("InstanceId."))
                        .filter_map(|(_, v)| v.as_str().map(String::from))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(terminated.len(), 4, "{terminated:?}");
    for id in &terminated {
        let dereg =
            position("DeregisterTargets", id).unwrap_or_else(|| panic!("{id} never deregistered"));
        let term = position("TerminateInstances", id).expect("terminated");
        assert!(
            dereg < term,
            "{id}: deregistered at {dereg}, terminated at {term}"
        );
    }
    assert_eq!(registered(&s.cfg, &s.infra.target_group_arn).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_coxswain_does_not_own_are_never_terminated() {
    let mut s = setup().await;
    let ec2 = aws_sdk_ec2::Client::new(&s.cfg);
    // One untagged instance, and one that claims the fleet but belongs to another
    // installation of coxswain.
    let mut foreign = Vec::new();
    for tags in [
        vec![],
        vec![
            ("coxswain:fleet", "web"),
            ("coxswain:controller", "someone-else"),
        ],
    ] {
        let mut call = ec2
            .run_instances()
            .image_id(&s.infra.image_id)
            .min_count(1)
            .max_count(1)
            .subnet_id(&s.infra.subnet);
        if !tags.is_empty() {
            let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance);
            for (k, v) in tags {
                spec = spec.tags(aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
            }
            call = call.tag_specifications(spec.build());
        }
        let out = call.send().await.expect("run foreign instance");
        foreign.push(out.instances()[0].instance_id().expect("id").to_string());
    }
    // Scale out, then all the way in.
    for v in [
        800.0, 800.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ] {
        put(&s, s.clock.now() - chrono::Duration::seconds(60), v).await;
        pass(&mut s).await;
    }
    assert_eq!(
        fleet_instances(&s.cfg)
            .await
            .iter()
            .filter(|i| tag(i, "coxswain:controller") == Some("coxswain"))
            .count(),
        1
    );
    // Asked directly, the cloud layer refuses and says why.
    let err = s
        .cloud
        .terminate(&foreign)
        .await
        .expect_err("must refuse foreign instances");
    assert!(matches!(err, CloudError::NotOwned { .. }), "{err}");
    let out = ec2
        .describe_instances()
        .set_instance_ids(Some(foreign.clone()))
        .send()
        .await
        .expect("describe");
    for r in out.reservations() {
        for i in r.instances() {
            assert_eq!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("running"),
                "{:?}",
                i.instance_id()
            );
        }
    }
    let log = s.moto.log();
    for e in log.iter().filter(|e| e["action"] == "TerminateInstances") {
        for id in &foreign {
            assert!(
                !e["params"]
                    .as_object()
                    .is_some_and(|p| p.values().any(|v| v == id.as_str())),
                "foreign {id} in a TerminateInstances call"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_and_the_pass_still_acts() {
    let mut s = setup().await;
    put(&s, s.clock.now() - chrono::Duration::seconds(60), 500.0).await;
    s.moto.inject(serde_json::json!([
        { "action": "DescribeInstances", "count": 2, "code": "RequestLimitExceeded", "status": 503 },
        { "action": "GetMetricData", "count": 2, "code": "ThrottlingException", "status": 400 },
        { "action": "RunInstances", "count": 1, "code": "RequestLimitExceeded", "status": 503 },
    ]));
    let r = pass(&mut s).await;
    assert!(
        r.errors.is_empty(),
        "throttling must be absorbed by retries: {:?}",
        r.errors
    );
    assert_eq!(fleet_instances(&s.cfg).await.len(), 5);
    assert!(r.actions.iter().any(|a| matches!(a, Action::Launch { .. })));
    let log = s.moto.log();
    for action in ["DescribeInstances", "GetMetricData", "RunInstances"] {
        let calls: Vec<_> = log.iter().filter(|e| e["action"] == action).collect();
        let injected = calls.iter().filter(|e| e.get("injected").is_some()).count();
        assert!(injected >= 1, "{action}: no fault was injected");
        let last_injected = calls
            .iter()
            .rposition(|e| e.get("injected").is_some())
            .expect("injected");
        assert!(
            calls[last_injected + 1..]
                .iter()
                .any(|e| e["status"] == 200),
            "{action}: no successful retry after the throttling"
        );
    }
    // The retried RunInstances reused its ClientToken, so it could not launch twice.
    let tokens: Vec<_> = log
        .iter()
        .filter(|e| e["action"] == "RunInstances")
        .map(|e| e["params"]["ClientToken"].clone())
        .collect();
    assert!(
        tokens.len() >= 2 && tokens.windows(2).all(|w| w[0] == w[1]),
        "{tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_acts_within_two_poll_intervals_of_new_data() {
    use coxswain::clock::RealClock;
    use coxswain::daemon::{self, ConfigSource, Signal};
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    let config = manifest::load_str("web.yaml", &manifest_text(&infra)).expect("valid");
    let cloud = aws(&moto, "coxswain").await;
    let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
    let controller = Controller::new(cloud, clock.clone(), config, false).expect("in-memory store");
    let poll = Duration::from_secs(1);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let opts = daemon::Options {
        poll_interval: Some(poll),
        max_passes: None,
        duration: None,
        replica: None,
        telemetry: None,
    };
    let daemon = tokio::spawn(daemon::run(
        controller,
        clock,
        ConfigSource::Embedded,
        opts,
        rx,
    ));
    // Let it settle at the minimum.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fleet_instances(&cfg).await.len() != 1 {
        assert!(std::time::Instant::now() < deadline, "never reached min");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The datapoint is readable once PutMetricData returns.
    put_metric(
        &cfg,
        NS,
        METRIC,
        &[DIM],
        Utc::now() - chrono::Duration::seconds(60),
        500.0,
    )
    .await;
    let readable = std::time::Instant::now();
    while fleet_instances(&cfg).await.len() < 5 {
        assert!(
            readable.elapsed() < Duration::from_secs(20),
            "never scaled out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(Some(Signal::Stop)).expect("daemon listening");
    daemon.await.expect("daemon ends cleanly");

    // Count the passes (owned-instance listings) that began after the data was put,
    // up to the launch: the launching pass is the first or second one.
    let log = moto.log();
    let put_at = log
        .iter()
        .position(|e| e["action"] == "PutMetricData")
        .expect("put logged");
    let launch_at = log[put_at..]
        .iter()
        .position(|e| e["action"] == "RunInstances")
        .map(|i| i + put_at)
        .expect("launch logged");
    let passes = log[put_at..launch_at]
        .iter()
        .filter(|e| {
            e["action"] == "DescribeInstances"
                && e["params"]["Filter.1.Name"] == "tag:coxswain:controller"
        })
        .count();
    assert!(
        (1..=2).contains(&passes),
        "acted in pass {passes} after the data"
    );
    let waited = log[launch_at]["time"].as_f64().unwrap_or(0.0)
        - log[put_at]["time"].as_f64().unwrap_or(0.0);
    assert!(
        waited <= 2.0 * poll.as_secs_f64() + 1.0,
        "launched {waited:.2}s after the data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_backed_by_an_auto_scaling_group_gets_its_desired_capacity_set() {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "api").await;
    let asg = aws_sdk_autoscaling::Client::new(&cfg);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("api-asg")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(&infra.launch_template)
                .version("1")
                .build(),
        )
        .min_size(1)
        .max_size(10)
        .desired_capacity(2)
        .vpc_zone_identifier(&infra.subnet)
        .send()
        .await
        .expect("create group");
    let text = "name: api\nenvironment: production\nregion: us-east-1\nauto_scaling_group: api-asg\ncapacity: { min: 1, max: 10 }\nscaling:\n  policies:\n    - target_tracking:\n        metric: { namespace: AWS/EC2, name: CPUUtilization, dimensions: { AutoScalingGroupName: api-asg } }\n        target: 50\n";
    let config = manifest::load_str("api.yaml", text).expect("valid");
    let clock = Arc::new(VirtualClock::new(Utc::now()));
    let cloud = aws(&moto, "coxswain").await;
    let mut controller =
        Controller::new(cloud, clock.clone(), config, false).expect("in-memory store");
    // Two instances at 90% CPU carry 3.6 instances' worth at the 50% target: 4.
    put_metric(
        &cfg,
        "AWS/EC2",
        "CPUUtilization",
        &[("AutoScalingGroupName", "api-asg")],
        clock.now() - chrono::Duration::seconds(60),
        90.0,
    )
    .await;
    let r = controller.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(
        r.actions
            .iter()
            .any(|a| matches!(a, Action::SetDesired { from: 2, to: 4, .. })),
        "{:?}",
        r.actions
    );
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("api-asg")
        .send()
        .await
        .expect("describe");
    assert_eq!(groups.auto_scaling_groups()[0].desired_capacity(), Some(4));
    let calls: Vec<_> = moto
        .log()
        .into_iter()
        .filter(|e| e["action"] == "SetDesiredCapacity")
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["params"]["HonorCooldown"], "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_against_a_local_endpoint_needs_no_aws_credentials() {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yaml");
    std::fs::write(&path, manifest_text(&infra)).expect("write manifest");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args([
            "plan",
            "--cloud",
            "aws",
            "--endpoint-url",
            &moto.endpoint(),
            "-m",
        ])
        .arg(&path)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .output()
        .expect("run coxswain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("web "), "{stdout}");
    assert!(stdout.contains("0 → 1"), "{stdout}");
}

/// Throttling (each service's own code), 500s, slow answers and dropped connections on a
/// random share of every call coxswain makes, for a scale-out and a scale-in; then calm.
/// The caps hold at every pass, nothing is launched untagged or twice, and the fleet
/// converges once the faults stop. Prints the figures recorded in BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_faults_keeps_the_caps_and_converges_once_it_stops() {
    let mut s = setup().await;
    let throttle = [
        ("DescribeInstances", "RequestLimitExceeded", 503),
        ("RunInstances", "RequestLimitExceeded", 503),
        ("TerminateInstances", "RequestLimitExceeded", 503),
        ("CreateTags", "RequestLimitExceeded", 503),
        ("GetMetricData", "ThrottlingException", 400),
        ("RegisterTargets", "Throttling", 400),
        ("DeregisterTargets", "Throttling", 400),
        ("DescribeTargetHealth", "Throttling", 400),
    ];
    let mut rules = Vec::new();
    for (action, code, status) in throttle {
        rules.push(serde_json::json!({"action": action, "count": 100000, "rate": 0.12, "code": code, "status": status}));
        rules.push(serde_json::json!({"action": action, "count": 100000, "rate": 0.12, "code": "InternalError", "status": 500}));
        rules.push(
            serde_json::json!({"action": action, "count": 100000, "rate": 0.1, "delay": 1.0}),
        );
        rules.push(
            serde_json::json!({"action": action, "count": 100000, "rate": 0.12, "drop": true}),
        );
    }
    let started = std::time::Instant::now();
    let (mut pass_errors, mut peak) = (0usize, 0usize);
    // Out to 8 instances (800 requests/min at target 100), in to 2, out to 6.
    let load = |p: usize| match p {
        0..10 => 800.0,
        10..22 => 150.0,
        _ => 600.0,
    };
    for p in 0..30 {
        put(&s, s.clock.now() - chrono::Duration::seconds(60), load(p)).await;
        s.moto
            .faults(serde_json::json!({"seed": p, "clear": true, "rules": rules}));
        let r = pass(&mut s).await;
        s.moto.faults(serde_json::json!({"clear": true}));
        pass_errors += usize::from(!r.errors.is_empty());
        let live = fleet_instances(&s.cfg).await;
        peak = peak.max(live.len());
        assert!(
            live.len() <= 10,
            "pass {p}: {} above capacity.max",
            live.len()
        );
        assert!(!live.is_empty(), "pass {p}: below capacity.min");
        for i in &live {
            assert_eq!(
                tag(i, "coxswain:controller"),
                Some("coxswain"),
                "untagged {:?}",
                i.instance_id()
            );
        }
    }
    assert!(peak >= 6, "the storm still scaled out: peak {peak}");
    // Calm: converge to 6 instances, all registered, none retiring left.
    let calm_from = s.moto.log().len();
    let mut converged_after = None;
    for p in 0..12 {
        put(&s, s.clock.now() - chrono::Duration::seconds(60), 600.0).await;
        let r = pass(&mut s).await;
        assert!(r.errors.is_empty(), "no faults, no errors: {:?}", r.errors);
        let live = fleet_instances(&s.cfg).await;
        let reg = registered(&s.cfg, &s.infra.target_group_arn).await;
        if live.len() == 6
            && reg.len() == 6
            && live.iter().all(|i| tag(i, "coxswain:retiring").is_none())
        {
            converged_after = Some(p + 1);
            break;
        }
    }
    let converged_after = converged_after.expect("converges within 12 calm passes");
    let log = s.moto.log();
    let storm = &log[..calm_from];
    let kind = |e: &serde_json::Value| -> Option<&'static str> {
        match e.get("injected").and_then(|v| v.as_str()) {
            Some("drop") => Some("dropped connection"),
            Some("InternalError") => Some("500 InternalError"),
            Some(_) => Some("throttled"),
            None if e.get("delayed").is_some() => Some("slow (1 s)"),
            None => None,
        }
    };
    let mut by_kind: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in storm {
        if let Some(k) = kind(e) {
            *by_kind.entry(k).or_default() += 1;
        }
    }
    let failed = storm.iter().filter(|e| e.get("injected").is_some()).count();
    // A failed call is retried if the same action is called again in the same pass (the
    // SDK's retries come within seconds; the next pass is a virtual minute later).
    let retried = storm
        .iter()
        .enumerate()
        .filter(|(_, e)| e.get("injected").is_some())
        .filter(|(i, e)| {
            storm[i + 1..]
                .iter()
                .take_while(|n| {
                    n["time"].as_f64().unwrap_or(0.0) - e["time"].as_f64().unwrap_or(0.0) < 10.0
                })
                .any(|n| n["action"] == e["action"])
        })
        .count();
    println!(
        "FAULT-FIGURES storm passes=30 calls={} faults={by_kind:?} failed_calls={failed} retried={retried} passes_with_errors={pass_errors} peak_instances={peak} invariants_checked=30x(max,min,tags) converged_after_calm_passes={converged_after} wall={:?}",
        storm.len(),
        started.elapsed()
    );
    // /metrics counts what AWS answered, per attempt: this cloud's SDK interceptor saw at
    // least the faults the proxy injected (faults are on only during the daemon's passes).
    let attempts = s.cloud.attempts();
    let mut seen: std::collections::BTreeMap<String, u64> = Default::default();
    for (a, n) in &attempts {
        *seen.entry(a.outcome.clone()).or_default() += n;
    }
    let count = |k: &str| seen.get(k).copied().unwrap_or(0);
    // Throttling (a 400 or, for EC2's RequestLimitExceeded, a 503) is told apart by its
    // error code.
    let injected = |k: &str| by_kind.get(k).copied().unwrap_or(0) as u64;
    assert!(
        count("throttled") >= injected("throttled"),
        "{seen:?} vs {by_kind:?}"
    );
    assert!(
        count("server_error") >= injected("500 InternalError"),
        "{seen:?} vs {by_kind:?}"
    );
    assert!(
        count("network") >= injected("dropped connection"),
        "{seen:?} vs {by_kind:?}"
    );
    assert!(count("ok") > 0, "{seen:?}");
    // And /metrics exports them, as the alert rules and the dashboard in deploy/ expect.
    let telemetry = coxswain::telemetry::Telemetry::new(Duration::from_secs(10));
    telemetry.observe_aws_attempts(&attempts);
    let text = telemetry.encode(false);
    assert!(
        text.contains("# TYPE coxswain_aws_calls_total counter")
            && text.contains("outcome=\"throttled\""),
        "{text}"
    );
    assert!(
        by_kind.len() == 4,
        "every kind of fault was injected: {by_kind:?}"
    );
    assert!(failed >= 10, "enough faults to mean something: {failed}");
    assert!(
        retried * 10 >= failed * 8,
        "most failed calls were retried: {retried}/{failed}"
    );
}
