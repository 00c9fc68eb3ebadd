//! On-Demand and Spot through EC2 CreateFleet (`instant`) on moto, through the real SDK
//! and the real controller: the base/percentage split, overrides for every instance type
//! × subnet, tags at launch, a ClientToken on every call, and pools without capacity
//! (answered by the test proxy the way EC2 answers them) moving the launch elsewhere. These
//! tests fail, never skip, when moto is missing.

use crate::common::{self, create_infra, sdk_config, Infra, Moto};
use chrono::Utc;
use coxswain::clock::VirtualClock;
use coxswain::controller::Controller;
use coxswain::manifest;
use std::sync::Arc;
use std::time::Duration;

/// Base 1 On-Demand, half of the rest On-Demand; two types × two subnets; at least 5
/// instances, and a global cap of 6.
fn manifest_text(infra: &Infra, subnet_b: &str, queue: Option<&str>) -> String {
    let queue = queue
        .map(|q| format!("interruption_queue: {q}\n"))
        .unwrap_or_default();
    format!(
        r#"kind: Controller
controller_id: coxswain
max_total_instances: 6
{queue}---
name: web
environment: staging
region: us-east-1
launch:
  launch_template: {{ name: {lt}, version: "1" }}
  instance_types: [m5.large, c5.large]
  subnets: [{a}, {b}]
  instances_distribution:
    on_demand_base_capacity: 1
    on_demand_percentage_above_base_capacity: 50
target_group_arn: {tg}
capacity: {{ min: 5, max: 10 }}
scaling:
  warmup: 1m
  policies:
    - target_tracking:
        metric:
          namespace: AWS/ApplicationELB
          name: RequestCount
          dimensions: {{ TargetGroup: targetgroup/web-tg/0123456789abcdef }}
          stat: Sum
          kind: total
        target: 100
"#,
        lt = infra.launch_template,
        a = infra.subnet,
        b = subnet_b,
        tg = infra.target_group_arn,
    )
}

struct Setup {
    moto: Moto,
    cfg: aws_config::SdkConfig,
    clock: Arc<VirtualClock>,
    controller: Controller,
    subnets: [String; 2],
    tg: String,
    queue: Option<String>,
}

async fn setup() -> Setup {
    setup_with(|_| async { None }).await
}

/// `queue` runs after moto is up and answers the interruption queue's URL, if any.
async fn setup_with<F, Fut>(queue: F) -> Setup
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    setup_edited(queue, |t| t).await
}

/// [`setup_with`], with the manifest text changed by `edit` first.
async fn setup_edited<F, Fut>(queue: F, edit: impl FnOnce(String) -> String) -> Setup
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let queue = queue(moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    let subnet_b = aws_sdk_ec2::Client::new(&cfg)
        .create_subnet()
        .vpc_id(&infra.vpc)
        .cidr_block("10.0.2.0/24")
        .send()
        .await
        .expect("create subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_string();
    let config = manifest::load_str(
        "web.yaml",
        &edit(manifest_text(&infra, &subnet_b, queue.as_deref())),
    )
    .expect("manifest is valid");
    let clock = Arc::new(VirtualClock::new(Utc::now()));
    let cloud = std::sync::Arc::new(
        Arc::into_inner(common::aws_cloud(&moto, "coxswain").await)
            .expect("one owner")
            .with_interruption_queue(queue.clone()),
    );
    let controller = Controller::new(cloud, clock.clone(), config, false).expect("in-memory store");
    Setup {
        moto,
        cfg,
        clock,
        controller,
        subnets: [infra.subnet, subnet_b],
        tg: infra.target_group_arn,
        queue,
    }
}

/// (id, lifecycle as EC2 reports it, instance type, subnet, tags) of the fleet's live
/// instances.
type Row = (String, String, String, String, Vec<(String, String)>);

async fn fleet(cfg: &aws_config::SdkConfig) -> Vec<Row> {
    let out = aws_sdk_ec2::Client::new(cfg)
        .describe_instances()
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
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.instance_lifecycle()
                    .map_or("on-demand".to_string(), |l| l.as_str().to_string()),
                i.instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                i.subnet_id().unwrap_or_default().to_string(),
                i.tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The value of tag `key` on instance `id`, if it has it.
fn tag_of(rows: &[Row], id: &str, key: &str) -> Option<String> {
    rows.iter()
        .find(|r| r.0 == id)
        .and_then(|r| r.4.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
}

fn count(rows: &[Row], lifecycle: &str) -> usize {
    rows.iter().filter(|r| r.1 == lifecycle).count()
}

fn create_fleet_calls(m: &Moto) -> Vec<serde_json::Value> {
    m.log()
        .into_iter()
        .filter(|e| e["action"] == "CreateFleet")
        .map(|e| e["params"].clone())
        .collect()
}

/// The instance types a CreateFleet request offered, in order.
fn offered(params: &serde_json::Value) -> Vec<String> {
    (1..)
        .map_while(|n| {
            params
                .get(format!(
                    "LaunchTemplateConfigs.1.Overrides.{n}.InstanceType"
                ))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .collect()
}

/// One attribute of a queue, which must be set.
async fn queue_attribute(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: aws_sdk_sqs::types::QueueAttributeName,
) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| a.get(&name).cloned())
        .unwrap_or_else(|| panic!("the queue has no {name:?}"))
}

async fn terminate(cfg: &aws_config::SdkConfig, ids: Vec<String>) {
    aws_sdk_ec2::Client::new(cfg)
        .terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .expect("terminate");
}

async fn pass(s: &mut Setup) -> coxswain::controller::PassReport {
    let r = s.controller.reconcile_once().await;
    s.clock.advance(Duration::from_secs(60));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_fleet_buys_the_on_demand_base_and_share_and_spot_over_every_pool_tagged_at_launch()
{
    let mut s = setup().await;
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rows = fleet(&s.cfg).await;
    // split(5, base 1, 50%): 1 + ceil(4 × 0.5) = 3 On-Demand, 2 Spot.
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(count(&rows, "spot"), 2, "{rows:?}");
    assert_eq!(count(&rows, "on-demand"), 3, "{rows:?}");
    for (id, lifecycle, _, subnet, tags) in &rows {
        let tag = |k: &str| {
            tags.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(tag("coxswain:controller"), Some("coxswain"), "{id}");
        assert_eq!(tag("coxswain:fleet"), Some("web"), "{id}");
        assert!(tag("coxswain:build").is_some(), "{id}");
        assert_eq!(tag("coxswain:market"), Some(lifecycle.as_str()), "{id}");
        assert!(s.subnets.contains(subnet), "{id} in {subnet}");
    }
    // On-Demand spread over both subnets (2 + 1).
    let od_subnets: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.1 == "on-demand")
        .map(|r| r.3.as_str())
        .collect();
    assert_eq!(od_subnets.len(), 2, "{rows:?}");
    let calls = create_fleet_calls(&s.moto);
    assert!(!calls.is_empty());
    let mut tokens = std::collections::BTreeSet::new();
    for c in &calls {
        assert_eq!(c["Type"], "instant", "{c}");
        assert_eq!(c["TagSpecification.1.ResourceType"], "instance", "{c}");
        let token = c["ClientToken"].as_str().expect("a ClientToken");
        assert!(token.starts_with("cox-") && token.len() <= 64, "{token}");
        assert!(tokens.insert(token.to_string()), "a new token per launch");
        assert_eq!(offered(c).len(), 4, "every type × subnet: {c}");
    }
    let spot: Vec<_> = calls
        .iter()
        .filter(|c| c["TargetCapacitySpecification.DefaultTargetCapacityType"] == "spot")
        .collect();
    assert_eq!(spot.len(), 1, "one Spot request: {calls:?}");
    assert_eq!(
        spot[0]["SpotOptions.AllocationStrategy"],
        "price-capacity-optimized"
    );
    assert_eq!(
        spot[0]["TargetCapacitySpecification.SpotTargetCapacity"],
        "2"
    );
    for c in calls.iter().filter(|c| !spot.contains(c)) {
        assert_eq!(
            c["OnDemandOptions.AllocationStrategy"], "prioritized",
            "{c}"
        );
    }
    assert!(
        !s.moto.log().iter().any(|e| e["action"] == "RunInstances"),
        "a fleet with a distribution launches through CreateFleet only"
    );
    // Read back (markets from EC2's answer): nothing more to launch.
    let before = calls.len();
    for _ in 0..2 {
        let r = pass(&mut s).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    assert_eq!(create_fleet_calls(&s.moto).len(), before);
    assert_eq!(fleet(&s.cfg).await.len(), 5);
}

/// Instance weights: capacity in units. m5.xlarge counts 2, c5.large 1; at least 6
/// units, base 2 units On-Demand, half the rest On-Demand: 4 units On-Demand, 2 Spot.
/// CreateFleet gets each override's WeightedCapacity and targets in units, moto launches
/// m5.xlarge (the first pool) until the units are covered, and the next passes count the
/// 3 instances as the 6 units they are: nothing more is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_types_are_counted_in_units_and_create_fleet_targets_units() {
    let mut s = setup_edited(
        |_| async { None },
        |t| {
            t.replace(
                "instance_types: [m5.large, c5.large]",
                "instance_types:\n    - { instance_type: m5.xlarge, weighted_capacity: 2 }\n    - { instance_type: c5.large, weighted_capacity: 1 }",
            )
            .replace("on_demand_base_capacity: 1", "on_demand_base_capacity: 2")
            .replace("capacity: { min: 5, max: 10 }", "capacity: { min: 6, max: 12 }")
        },
    )
    .await;
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let calls = create_fleet_calls(&s.moto);
    assert!(!calls.is_empty());
    let (mut od_units, mut spot_units) = (0, 0);
    for c in &calls {
        assert_eq!(offered(c)[0], "m5.xlarge", "{c}");
        // Every override carries its type's weight.
        for n in 1.. {
            let Some(ty) = c
                .get(format!(
                    "LaunchTemplateConfigs.1.Overrides.{n}.InstanceType"
                ))
                .and_then(|v| v.as_str())
            else {
                break;
            };
            let w = c
                .get(format!(
                    "LaunchTemplateConfigs.1.Overrides.{n}.WeightedCapacity"
                ))
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<f64>().ok());
            let want = if ty == "m5.xlarge" { 2.0 } else { 1.0 };
            assert_eq!(w, Some(want), "override {n} ({ty}) in {c}");
        }
        let units = |k: &str| {
            c.get(format!("TargetCapacitySpecification.{k}"))
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        od_units += units("OnDemandTargetCapacity");
        spot_units += units("SpotTargetCapacity");
    }
    assert_eq!((od_units, spot_units), (4, 2), "{calls:?}");
    let rows = fleet(&s.cfg).await;
    let weight = |r: &Row| if r.2 == "m5.xlarge" { 2 } else { 1 };
    let units_of =
        |lifecycle: &str| -> u32 { rows.iter().filter(|r| r.1 == lifecycle).map(weight).sum() };
    assert!(units_of("on-demand") >= 4, "{rows:?}");
    assert!(units_of("spot") >= 2, "{rows:?}");
    // Covered with less than the largest weight over.
    assert!(
        units_of("on-demand") + units_of("spot") < 6 + 2 * 2,
        "{rows:?}"
    );
    let before = rows.len();
    for _ in 0..3 {
        let r = pass(&mut s).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    let rows = fleet(&s.cfg).await;
    assert_eq!(rows.len(), before, "units counted, not instances: {rows:?}");
    assert_eq!(create_fleet_calls(&s.moto).len(), calls.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_pools_without_capacity_move_the_launch_and_when_all_are_out_it_goes_on_demand() {
    let mut s = setup().await;
    // EC2 has no m5.large Spot capacity in any subnet.
    s.moto.inject(serde_json::json!([{
        "action": "CreateFleet", "count": 1000,
        "unavailable": [{"InstanceType": "m5.large", "Lifecycle": "spot"}]
    }]));
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rows = fleet(&s.cfg).await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    let spot: Vec<&Row> = rows.iter().filter(|r| r.1 == "spot").collect();
    assert_eq!(
        spot.len(),
        2,
        "placed in another pool in the same call: {rows:?}"
    );
    assert!(spot.iter().all(|r| r.2 == "c5.large"), "{rows:?}");

    // An interruption: the replacement's request leaves m5.large out (remembered).
    terminate(&s.cfg, vec![spot[0].0.clone()]).await;
    let asked = create_fleet_calls(&s.moto).len();
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let calls = create_fleet_calls(&s.moto);
    let again: Vec<_> = calls[asked..].iter().collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        offered(again[0]),
        vec!["c5.large", "c5.large"],
        "{}",
        again[0]
    );
    let rows = fleet(&s.cfg).await;
    assert_eq!((rows.len(), count(&rows, "spot")), (5, 2), "{rows:?}");

    // Every Spot pool out: the Spot share is bought On-Demand at once, inside the cap.
    // (Past the 3-minute memory of the m5.large outage first, so that every pool is
    // offered, refused and remembered in the same pass.)
    s.clock.advance(Duration::from_secs(180));
    s.moto.faults(serde_json::json!({"clear": true, "rules": [{
        "action": "CreateFleet", "count": 1000,
        "unavailable": [{"Lifecycle": "spot"}]
    }]}));
    let spot_ids: Vec<String> = rows
        .iter()
        .filter(|r| r.1 == "spot")
        .map(|r| r.0.clone())
        .collect();
    terminate(&s.cfg, spot_ids).await;
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rows = fleet(&s.cfg).await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(count(&rows, "on-demand"), 5, "{rows:?}");
    // While the outage is remembered, no Spot request is made again.
    let asked = create_fleet_calls(&s.moto).len();
    let victim = rows[4].0.clone();
    terminate(&s.cfg, vec![victim]).await;
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let calls = create_fleet_calls(&s.moto);
    assert!(!calls[asked..].is_empty(), "the lost instance is replaced");
    assert!(
        calls[asked..]
            .iter()
            .all(|c| c["TargetCapacitySpecification.DefaultTargetCapacityType"] == "on-demand"),
        "{:?}",
        &calls[asked..]
    );
    assert_eq!(
        fleet(&s.cfg).await.len(),
        5,
        "back to size, within the cap of 6"
    );
}

/// `coxswain init --interruption-queue` on moto makes the queue and the four rules (again
/// idempotently), and the daemon reading that queue acts on what EC2 would put there: a
/// Spot interruption warning retires the instance in the same pass (tagged, deregistered)
/// and launches its replacement on Spot; a rebalance recommendation tags it for
/// replacement and launches first, leaving it in service. Handled messages are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_makes_the_interruption_queue_and_the_daemon_acts_on_a_warning_and_a_rebalance() {
    let init = |endpoint: String| async move {
        let run = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
                .args(["init", "--interruption-queue", "--region", "us-east-1"])
                .args(["--endpoint-url", &endpoint])
                .output()
                .expect("run coxswain init")
        };
        let out = run();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = run();
        assert!(again.status.success(), "idempotent");
        let url = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("interruption_queue: "))
            .expect("init prints the line to set")
            .to_string();
        Some(url)
    };
    let mut s = setup_with(init).await;
    let url = s.queue.clone().expect("queue");
    let sqs = aws_sdk_sqs::Client::new(&s.cfg);
    let events = aws_sdk_eventbridge::Client::new(&s.cfg);
    use aws_sdk_sqs::types::QueueAttributeName as Attr;
    let arn = queue_attribute(&sqs, &url, Attr::QueueArn).await;
    let policy = queue_attribute(&sqs, &url, Attr::Policy).await;
    let policy: serde_json::Value = serde_json::from_str(&policy).expect("JSON policy");
    let st = &policy["Statement"][0];
    assert_eq!(
        st["Principal"]["Service"], "events.amazonaws.com",
        "{policy}"
    );
    let sources = st["Condition"]["ArnEquals"]["aws:SourceArn"].to_string();
    for (suffix, _) in coxswain::cloud::interruption::event_patterns() {
        let rule = events
            .describe_rule()
            .name(format!("coxswain-{suffix}"))
            .send()
            .await
            .expect("rule");
        let rule_arn = rule.arn().expect("rule arn");
        assert!(
            sources.contains(rule_arn),
            "only our rules may send: {sources} / {rule_arn}"
        );
    }
    for (suffix, pattern) in coxswain::cloud::interruption::event_patterns() {
        let name = format!("coxswain-{suffix}");
        let rule = events
            .describe_rule()
            .name(&name)
            .send()
            .await
            .expect("rule");
        let got: serde_json::Value =
            serde_json::from_str(rule.event_pattern().unwrap_or("{}")).expect("pattern");
        assert_eq!(got, pattern, "{name}");
        let targets = events
            .list_targets_by_rule()
            .rule(&name)
            .send()
            .await
            .expect("targets");
        assert_eq!(
            targets
                .targets()
                .iter()
                .map(|t| t.arn())
                .collect::<Vec<_>>(),
            vec![arn.as_str()],
            "{name}"
        );
    }

    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let r = pass(&mut s).await; // registers them (running now)
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rows = fleet(&s.cfg).await;
    let spot: Vec<String> = rows
        .iter()
        .filter(|r| r.1 == "spot")
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(spot.len(), 2, "{rows:?}");
    let warned = spot[0].clone();
    assert!(common::registered_ids(&s.cfg, &s.tg)
        .await
        .contains(&warned));
    let event = |detail_type: &str, id: &str| {
        serde_json::json!({
            "version": "0", "source": "aws.ec2", "detail-type": detail_type,
            "time": Utc::now().to_rfc3339(), "region": "us-east-1",
            "detail": {"instance-id": id, "instance-action": "terminate"}
        })
        .to_string()
    };
    sqs.send_message()
        .queue_url(&url)
        .message_body(event("EC2 Spot Instance Interruption Warning", &warned))
        .send()
        .await
        .expect("send");
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rows = fleet(&s.cfg).await;
    let tag = |id: &str, key: &str| tag_of(&rows, id, key);
    assert!(tag(&warned, "coxswain:retiring").is_some(), "{rows:?}");
    assert!(
        !common::registered_ids(&s.cfg, &s.tg)
            .await
            .contains(&warned),
        "deregistered, draining"
    );
    let spot_now: Vec<&Row> = rows
        .iter()
        .filter(|r| r.1 == "spot" && r.0 != warned)
        .collect();
    assert_eq!(
        spot_now.len(),
        2,
        "replaced on Spot in the same pass: {rows:?}"
    );

    // A rebalance recommendation: replacement first, the instance stays in service.
    let rebalanced = spot[1].clone();
    sqs.send_message()
        .queue_url(&url)
        .message_body(event("EC2 Instance Rebalance Recommendation", &rebalanced))
        .send()
        .await
        .expect("send");
    let r = pass(&mut s).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rows = fleet(&s.cfg).await;
    let tag = |id: &str, key: &str| tag_of(&rows, id, key);
    assert!(
        tag(&rebalanced, "coxswain:replace").is_some_and(|v| v.starts_with("rebalance")),
        "{rows:?}"
    );
    assert!(tag(&rebalanced, "coxswain:retiring").is_none());
    assert!(common::registered_ids(&s.cfg, &s.tg)
        .await
        .contains(&rebalanced));
    // The replacement launches (once the draining instance is gone: the cap of 6 counts
    // it), and only after it is registered is the instance retired.
    let (mut launched_at, mut retired_at) = (None, None);
    for n in 0..4 {
        let r = pass(&mut s).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let rows = fleet(&s.cfg).await;
        assert!(rows.len() <= 6, "inside the global cap: {rows:?}");
        let others = common::registered_ids(&s.cfg, &s.tg)
            .await
            .into_iter()
            .filter(|id| *id != rebalanced)
            .count();
        if launched_at.is_none() && rows.iter().filter(|r| r.0 != rebalanced).count() >= 5 {
            launched_at = Some(n);
        }
        let retiring = rows
            .iter()
            .find(|r| r.0 == rebalanced)
            .is_none_or(|r| r.4.iter().any(|(k, _)| k == "coxswain:retiring"));
        if retiring && retired_at.is_none() {
            retired_at = Some(n);
            assert!(
                others >= 5,
                "retired only with 5 others in service: {others}"
            );
        }
    }
    assert!(
        launched_at.is_some() && retired_at.is_some() && launched_at < retired_at,
        "launch first ({launched_at:?}), then retire ({retired_at:?})"
    );
    // Every message handled and deleted.
    let left = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    assert!(left.messages().is_empty(), "{:?}", left.messages());
}

/// `simulate --spot-prices-from-aws` reads the fleet's Spot price from
/// DescribeSpotPriceHistory (moto answers $0.00001 for every type and zone), keeps the
/// table's On-Demand price, and prices the runs with it; without a table it says what is
/// missing.
#[test]
fn simulate_takes_the_spot_price_from_describe_spot_price_history() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    crate::simulate::write_trace(&trace);
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/simulate-spot.yaml");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .arg("simulate")
            .arg("--trace")
            .arg(&trace)
            .args([
                "--p999-instances",
                "40",
                "--output",
                "json",
                "--spot-prices-from-aws",
            ])
            .args(["--endpoint-url", &moto.endpoint()])
            .args(extra)
            .env_remove("AWS_ACCESS_KEY_ID")
            .output()
            .expect("run simulate")
    };
    let out = run(&["--manifest", manifest.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Spot price of m6i.large: $0.00001/h")
            && stderr.contains("DescribeSpotPriceHistory"),
        "{stderr}"
    );
    // Moto's price is no price EC2 would charge: said so.
    assert!(
        stderr.contains("warning: m6i.large's Spot price $0.00001/h is under 5%"),
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        doc["prices"]["spot"].as_f64(),
        Some(0.00001),
        "{}",
        doc["prices"]
    );
    assert_eq!(
        doc["prices"]["on_demand"].as_f64(),
        Some(0.096),
        "the table's"
    );
    assert!(
        moto.log()
            .iter()
            .any(|e| e["action"] == "DescribeSpotPriceHistory"),
        "asked AWS"
    );
    // The default fleet names no instance type (and has no price table): it says what to
    // write.
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("list the fleet's instance types"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
