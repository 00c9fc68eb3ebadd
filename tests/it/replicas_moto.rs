//! Leases for replicas, through the real DynamoDB SDK against moto on 127.0.0.1:
//! `coxswain init` tables, one winner per race, takeover only after expiry with a new
//! fencing token, and a replica that lost its lease cannot write.

use crate::common;

use chrono::{Duration, Utc};
use common::{sdk_config, Moto};
use coxswain::cloud::aws::leases::{create_tables, DynamoLeases as Leases};
use coxswain::lease::{Lease, LeaseStore};

async fn leases(moto: &Moto, replica: &str) -> Leases {
    let cfg = sdk_config(&moto.endpoint()).await;
    Leases::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        "coxswain",
        replica,
        Duration::seconds(15),
    )
}

/// The replicas' tables (`coxswain init`), on this moto.
async fn tables(moto: &Moto) {
    let cfg = sdk_config(&moto.endpoint()).await;
    create_tables(&aws_sdk_dynamodb::Client::new(&cfg), "coxswain")
        .await
        .expect("tables");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_the_tables_once() {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    let created = create_tables(&client, "coxswain").await.expect("create");
    assert_eq!(created, vec!["coxswain-leases", "coxswain-state"]);
    let again = create_tables(&client, "coxswain")
        .await
        .expect("idempotent");
    assert!(again.is_empty(), "{again:?}");
    // And through the command line, against the same endpoint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args([
            "init",
            "--prefix",
            "other",
            "--region",
            "us-east-1",
            "--endpoint-url",
        ])
        .arg(moto.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("created other-leases") && text.contains("created other-state"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_for_each_fleet_never_both_win() {
    let moto = Moto::start();
    let a = leases(&moto, "replica-a").await;
    let b = leases(&moto, "replica-b").await;
    tables(&moto).await;
    let now = Utc::now();
    let mut wins = (0, 0);
    for i in 0..20 {
        let fleet = format!("fleet-{i}");
        let (ra, rb) = tokio::join!(a.take(&fleet, now), b.take(&fleet, now));
        let (ra, rb) = (ra.expect("a answered"), rb.expect("b answered"));
        assert!(
            ra.is_some() != rb.is_some(),
            "{fleet}: exactly one winner: {ra:?} / {rb:?}"
        );
        wins.0 += usize::from(ra.is_some());
        wins.1 += usize::from(rb.is_some());
        let held = ra.or(rb).expect("a winner");
        assert_eq!(held.version, 1);
        let stored = a.current(&fleet).await.expect("read").expect("item");
        assert_eq!(stored, held);
    }
    println!("race wins: a {} b {}", wins.0, wins.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_moves_only_after_expiry_and_the_old_owner_is_fenced_off() {
    let moto = Moto::start();
    let a = leases(&moto, "replica-a").await;
    let b = leases(&moto, "replica-b").await;
    tables(&moto).await;
    let t0 = Utc::now();
    let la: Lease = a.take("web", t0).await.expect("ok").expect("free lease");
    // While it is held, the other replica cannot take it; the owner renews.
    assert_eq!(
        b.take("web", t0 + Duration::seconds(5)).await.expect("ok"),
        None
    );
    let la = a
        .renew(&la, t0 + Duration::seconds(10))
        .await
        .expect("ok")
        .expect("owner renews");
    assert_eq!(la.version, 1);
    assert!(a
        .fenced_put(&la, "rollout#web", "step 2", t0 + Duration::seconds(11))
        .await
        .expect("ok"));
    // The owner stalls (a long GC pause, a partition): after expiry the other takes over.
    let t1 = t0 + Duration::seconds(40);
    let lb = b.take("web", t1).await.expect("ok").expect("expired lease");
    assert_eq!(lb.owner, "replica-b");
    assert_eq!(lb.version, 2, "a new fencing token");
    // The old owner wakes up: it can neither renew nor write, even with time it thinks it has.
    assert_eq!(a.renew(&la, t1).await.expect("ok"), None);
    assert!(!a
        .fenced_put(
            &la,
            "rollout#web",
            "step 3 (stale)",
            t0 + Duration::seconds(12)
        )
        .await
        .expect("ok"));
    assert!(b
        .fenced_put(&lb, "rollout#web", "rolled back by b", t1)
        .await
        .expect("ok"));
    let (body, fence, writer) = b
        .get_state("rollout#web")
        .await
        .expect("ok")
        .expect("state");
    assert_eq!(
        (body.as_str(), fence, writer.as_str()),
        ("rolled back by b", 2, "replica-b")
    );
    // Released on shutdown: the next taker does not wait for expiry.
    b.release(&lb).await.expect("release");
    let again = a
        .take("web", t1 + Duration::seconds(1))
        .await
        .expect("ok")
        .expect("released");
    assert_eq!(again.version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_stop_heartbeating_drop_out() {
    let moto = Moto::start();
    let a = leases(&moto, "replica-a").await;
    let b = leases(&moto, "replica-b").await;
    tables(&moto).await;
    let t0 = Utc::now();
    a.heartbeat(t0).await.expect("hb");
    b.heartbeat(t0).await.expect("hb");
    assert_eq!(
        a.live_replicas(t0).await.expect("scan"),
        vec!["replica-a", "replica-b"]
    );
    let t1 = t0 + Duration::seconds(20);
    a.heartbeat(t1).await.expect("hb");
    assert_eq!(b.live_replicas(t1).await.expect("scan"), vec!["replica-a"]);
}

const DIM: &str = "targetgroup/web-tg/0123456789abcdef";

fn start_replica(
    moto: &Moto,
    dir: &std::path::Path,
    manifests: &std::path::Path,
    port: u16,
    id: &str,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args([
            "run",
            "--cloud",
            "aws",
            "--endpoint-url",
            &moto.endpoint(),
            "--poll-interval",
            "1s",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--replica-id",
            id,
            "--lease-ttl",
            "6s",
            "-m",
        ])
        .arg(manifests)
        .arg("--state")
        .arg(dir.join("state.db"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("COXSWAIN_API_TOKEN", "replica-test-token-0123456789")
        .env("COXSWAIN_STATE_DIR", dir)
        .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"))
        .spawn()
        .expect("start replica")
}

async fn instances(cfg: &aws_config::SdkConfig) -> Vec<(String, String, String)> {
    common::instance_states(cfg, "web").await
}

async fn registered(cfg: &aws_config::SdkConfig, tg: &str) -> usize {
    common::registered_ids(cfg, tg).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_mid_rollout_the_other_replica_takes_over_and_finishes() {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = common::create_infra(&cfg, "web").await;
    common::new_template_version(&cfg, &infra).await;
    tables(&moto).await;
    let root = tempfile::tempdir().expect("tempdir");
    let manifests = root.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    std::fs::write(
        manifests.join("web.yaml"),
        format!(
            "name: web\nenvironment: staging\nregion: us-east-1\nlaunch:\n  launch_template: {{ name: {lt}, version: \"1\" }}\n  subnets: [{subnet}]\ntarget_group_arn: {tg}\ncapacity: {{ min: 2, max: 12 }}\nscaling:\n  warmup: 0s\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCount, dimensions: {{ TargetGroup: {DIM} }}, stat: Average, kind: total }}\n        target: 100\ndeploy:\n  strategy:\n    rolling: {{ batch: 1, max_surge: 1 }}\n  gates: {{ interval: 1s, timeout: 5m }}\n",
            lt = infra.launch_template,
            subnet = infra.subnet,
            tg = infra.target_group_arn,
        ),
    )
    .expect("manifest");
    let now = Utc::now();
    for m in -5..20 {
        common::put_metric(
            &cfg,
            "AWS/ApplicationELB",
            "RequestCount",
            &[("TargetGroup", DIM)],
            now + Duration::minutes(m),
            600.0,
        )
        .await;
    }
    let port = common::free_port;
    let ids = ["replica-a", "replica-b"];
    let ports = [port(), port()];
    let dirs: Vec<std::path::PathBuf> = ids.iter().map(|id| root.path().join(id)).collect();
    let mut children = Vec::new();
    for i in 0..2 {
        std::fs::create_dir_all(&dirs[i]).expect("dir");
        children.push(Some(start_replica(
            &moto, &dirs[i], &manifests, ports[i], ids[i],
        )));
    }
    let watcher = leases(&moto, "watcher").await;
    // One replica takes the fleet and brings it to 6 on version 1.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let owner = loop {
        let lease = watcher.current("web").await.expect("read");
        let live = instances(&cfg)
            .await
            .into_iter()
            .filter(|i| i.1 == "running")
            .count();
        if let Some(l) = lease {
            if live == 6 && registered(&cfg, &infra.target_group_arn).await == 6 {
                break l;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replica converged the fleet"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    let o = ids
        .iter()
        .position(|id| *id == owner.owner)
        .expect("an owner we started");
    let other = 1 - o;
    let new = format!("{}:2", infra.launch_template);
    let deploy = |i: usize| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(["deploy", "web", "--env", "staging", "--build", &new])
            .env("COXSWAIN_SERVER", format!("http://127.0.0.1:{}", ports[i]))
            .env("COXSWAIN_API_TOKEN", "replica-test-token-0123456789")
            .output()
            .expect("deploy")
    };
    // The replica without the lease refuses; the owner takes it.
    let refused = deploy(other);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another replica"));
    let accepted = deploy(o);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    // Mid-rollout (a new-build instance is up), kill the owner.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !instances(&cfg)
        .await
        .iter()
        .any(|i| i.2 == new && i.1 == "running")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let mut owner_child = children[o].take().expect("owner");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(owner_child.id() as i32, libc::SIGKILL);
    }
    let _ = owner_child.wait();
    let killed_at = Utc::now();
    let mid = instances(&cfg).await;
    let builds_mid: std::collections::BTreeSet<_> = mid
        .iter()
        .filter(|i| i.1 == "running")
        .map(|i| i.2.clone())
        .collect();
    assert_eq!(builds_mid.len(), 2, "killed mid-rollout: {mid:?}");
    // The other replica takes the lease over within the lease time (plus a pass).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let takeover = loop {
        if let Some(l) = watcher.current("web").await.expect("read") {
            if l.owner == ids[other] {
                break (Utc::now() - killed_at, l);
            }
        }
        assert!(std::time::Instant::now() < deadline, "no takeover");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        takeover.0 <= Duration::seconds(6 + 3),
        "took {:?}",
        takeover.0
    );
    assert!(takeover.1.version > owner.version, "a new fencing token");
    // It finishes the rollout (or rolls it back): one build, 6 instances, all registered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let (finished_on, converged) = loop {
        let live: Vec<_> = instances(&cfg)
            .await
            .into_iter()
            .filter(|i| i.1 == "running" || i.1 == "pending")
            .collect();
        let builds: std::collections::BTreeSet<_> = live.iter().map(|i| i.2.clone()).collect();
        if live.len() == 6
            && builds.len() == 1
            && registered(&cfg, &infra.target_group_arn).await == 6
        {
            break (
                builds.into_iter().next().unwrap_or_default(),
                Utc::now() - killed_at,
            );
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(dirs[other].join("daemon.log")).unwrap_or_default();
            panic!(
                "did not converge: {live:?}\n{}",
                log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    // The survivor records the end of the rollout (a pass after the fleet is whole).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(dirs[other].join("daemon.log")).unwrap_or_default();
        if log.contains("succeeded: ") || log.contains("rolled back") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor never ended the rollout"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert!(
        log.contains("took over the fleet's state"),
        "the rollout state came from the shared table"
    );
    if let Some(mut c) = children[other].take() {
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let _ = c.wait();
    }
    // Never two at once: every action the dead owner journaled came before the kill, every
    // one of the survivor's after it.
    let journal = |i: usize| {
        coxswain::store::Store::open(&dirs[i].join("state.db"))
            .expect("state")
            .recent_actions(10_000)
            .expect("journal")
            .into_iter()
            .filter(|a| a.fleet == "web")
            .collect::<Vec<_>>()
    };
    let (a, b) = (journal(o), journal(other));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both acted: {} / {}",
        a.len(),
        b.len()
    );
    assert!(
        a.iter().all(|x| x.at <= killed_at),
        "the owner acted after it was killed?"
    );
    assert!(
        b.iter().all(|x| x.at > killed_at),
        "the survivor acted while the owner held the lease: {:?}",
        b.first()
    );
    // Every kind of change went through the fence under the fleet's name.
    for kind in ["RunInstances", "RegisterTargets"] {
        assert!(
            a.iter().any(|x| x.action == kind),
            "owner journaled no {kind}: {a:?}"
        );
    }
    for kind in [
        "RunInstances",
        "RegisterTargets",
        "DeregisterTargets",
        "TerminateInstances",
    ] {
        assert!(
            b.iter().any(|x| x.action == kind),
            "survivor journaled no {kind}"
        );
    }
    println!(
        "REPLICA-FIGURES owner={} survivor={} takeover_after_kill={:?} converged_after_kill={:?} ended_on={finished_on} owner_actions={} survivor_actions={}",
        ids[o], ids[other], takeover.0, converged, a.len(), b.len()
    );
}

/// The build ledger is shared: a build that went live in staging on one replica can be
/// promoted to production on another, and an approval given to either counts. Each
/// replica owns one of the two fleets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_and_approvals_work_across_replicas_that_own_different_fleets() {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = common::create_infra(&cfg, "web").await;
    common::new_template_version(&cfg, &infra).await;
    let prod_tg = aws_sdk_elasticloadbalancingv2::Client::new(&cfg)
        .create_target_group()
        .name("web-prod-tg")
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .vpc_id(&infra.vpc)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
        .send()
        .await
        .expect("prod target group")
        .target_groups()
        .first()
        .and_then(|t| t.target_group_arn())
        .expect("arn")
        .to_string();
    tables(&moto).await;
    let root = tempfile::tempdir().expect("tempdir");
    let manifests = root.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    let fleet = |name: &str, env: &str, tg: &str, promotion: &str| {
        format!(
            "name: {name}\napp: web\nenvironment: {env}\nregion: us-east-1\nlaunch:\n  launch_template: {{ name: {lt}, version: \"1\" }}\n  subnets: [{subnet}]\ntarget_group_arn: {tg}\ncapacity: {{ min: 1, max: 2 }}\nscaling:\n  warmup: 0s\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCount, dimensions: {{ TargetGroup: {DIM} }}, stat: Average, kind: total }}\n        target: 100\ndeploy:\n{promotion}  strategy:\n    rolling: {{ batch: 1, max_surge: 1 }}\n  gates: {{ interval: 1s, timeout: 5m }}\n",
            lt = infra.launch_template,
            subnet = infra.subnet,
        )
    };
    std::fs::write(
        manifests.join("staging.yaml"),
        fleet("web-staging", "staging", &infra.target_group_arn, ""),
    )
    .expect("manifest");
    std::fs::write(
        manifests.join("production.yaml"),
        fleet(
            "web-prod",
            "production",
            &prod_tg,
            "  promotion: { requires: [staging], approval: true }\n",
        ),
    )
    .expect("manifest");
    // Two replica ids that rendezvous hashing splits: staging to one, production to the
    // other. Both heartbeat before the daemons start, so each takes only its own fleet.
    let a = "replica-a".to_string();
    let b = (0..1000)
        .map(|i| format!("replica-b{i}"))
        .find(|b| {
            let mut live = vec![a.clone(), b.clone()];
            live.sort();
            coxswain::lease::preferred("web-staging", &live) == Some(a.as_str())
                && coxswain::lease::preferred("web-prod", &live) == Some(b.as_str())
        })
        .expect("a pair of ids that splits the fleets");
    let ids = [a.as_str(), b.as_str()];
    for id in ids {
        leases(&moto, id)
            .await
            .heartbeat(Utc::now())
            .await
            .expect("heartbeat");
    }
    let port = common::free_port;
    let ports = [port(), port()];
    let dirs: Vec<std::path::PathBuf> = ids.iter().map(|id| root.path().join(id)).collect();
    let mut children = Vec::new();
    for i in 0..2 {
        std::fs::create_dir_all(&dirs[i]).expect("dir");
        children.push(common::KillOnDrop(start_replica(
            &moto, &dirs[i], &manifests, ports[i], ids[i],
        )));
    }
    let watcher = leases(&moto, "watcher").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = watcher.current("web-staging").await.expect("read");
        let p = watcher.current("web-prod").await.expect("read");
        if s.is_some_and(|l| l.owner == ids[0]) && p.is_some_and(|l| l.owner == ids[1]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fleets were not split between the replicas"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let build = format!("{}:2", infra.launch_template);
    let cli = |i: usize, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(args)
            .env("COXSWAIN_SERVER", format!("http://127.0.0.1:{}", ports[i]))
            .env("COXSWAIN_API_TOKEN", "replica-test-token-0123456789")
            .output()
            .expect("run coxswain");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let to_prod = [
        "deploy",
        "web",
        "--env",
        "production",
        "--build",
        &build,
        "--wait",
    ];
    // Not yet through staging: refused by the production owner.
    let (code, text) = cli(1, &to_prod);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("has not passed staging"), "{text}");
    // Staging, on the other replica, all the way.
    let (code, text) = cli(
        0,
        &[
            "deploy", "web", "--env", "staging", "--build", &build, "--wait",
        ],
    );
    assert_eq!(code, Some(0), "staging deploy: {text}");
    // Production now knows staging passed, and asks for the sign-off.
    let (code, text) = cli(1, &to_prod);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("needs a sign-off"), "{text}");
    // The sign-off is given to the staging replica, which does not own production.
    let (code, text) = cli(0, &["approve", "web", "--build", &build, "--by", "qa-lead"]);
    assert_eq!(code, Some(0), "approve: {text}");
    // And production goes.
    let (code, text) = cli(1, &to_prod);
    assert_eq!(code, Some(0), "production deploy: {text}");
    let prod_builds: std::collections::BTreeSet<String> = common::instance_states(&cfg, "web-prod")
        .await
        .into_iter()
        .filter(|i| i.1 == "running")
        .map(|i| i.2)
        .collect();
    assert_eq!(
        prod_builds.into_iter().collect::<Vec<_>>(),
        vec![build.clone()]
    );
    drop(children); // SIGTERM: each stops cleanly
                    // Each replica's own ledger has only its own fleet's rollout.
    let ledger = |i: usize| {
        coxswain::store::Store::open(&dirs[i].join("state.db"))
            .expect("state")
            .history("web", 10)
            .expect("history")
            .into_iter()
            .filter(|d| d.outcome == coxswain::store::Outcome::Succeeded)
            .map(|d| (d.env, d.build))
            .collect::<Vec<_>>()
    };
    assert_eq!(ledger(0), vec![("staging".to_string(), build.clone())]);
    assert!(ledger(1).contains(&("production".to_string(), build.clone())));
}
