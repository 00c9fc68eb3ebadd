//! Crash safety: the daemon (the real binary, on moto through the real SDK) is killed with
//! SIGKILL at random points of a scale-out and of a rolling deploy, and restarted on the same
//! state file, again
//! and again. After the last restart the rollout finishes (or rolls back), the fleet
//! converges to its desired count on one build, nothing is orphaned and nothing was
//! launched twice.

use crate::common;

use common::{create_infra, put_metric, sdk_config, Moto};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const DIM: &str = "targetgroup/web-tg/0123456789abcdef";
const TOKEN: &str = "crash-test-token-0123456789";
const DESIRED: usize = 6;

async fn all_instances(cfg: &aws_config::SdkConfig) -> Vec<(String, String, String)> {
    common::instance_states(cfg, "web").await
}

async fn registered(cfg: &aws_config::SdkConfig, tg: &str) -> Vec<String> {
    common::registered_ids(cfg, tg).await
}

fn start_daemon(moto: &Moto, dir: &Path, port: u16, run: usize) -> Child {
    let log = dir.join(format!("daemon-{run}.log"));
    Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args([
            "run",
            "--cloud",
            "aws",
            "--endpoint-url",
            &moto.endpoint(),
            "--poll-interval",
            "1s",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "-m",
        ])
        .arg(dir.join("manifests"))
        .arg("--state")
        .arg(dir.join("state.db"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("COXSWAIN_API_TOKEN", TOKEN)
        .env("COXSWAIN_STATE_DIR", dir)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start daemon")
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// splitmix64: the kill schedule is random but reproducible from the printed seed.
fn next(seed: &mut u64) -> f64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_of_a_rollout_it_converges_on_one_build_without_orphans_or_double_launches(
) {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let infra = create_infra(&cfg, "web").await;
    common::new_template_version(&cfg, &infra).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("manifests")).expect("dir");
    std::fs::write(
        dir.path().join("manifests/web.yaml"),
        format!(
            "name: web\nenvironment: staging\nregion: us-east-1\nlaunch:\n  launch_template: {{ name: {lt}, version: \"1\" }}\n  subnets: [{subnet}]\ntarget_group_arn: {tg}\ncapacity: {{ min: 2, max: 12 }}\nscaling:\n  warmup: 0s\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCount, dimensions: {{ TargetGroup: {DIM} }}, stat: Average, kind: total }}\n        target: 100\ndeploy:\n  strategy:\n    rolling: {{ batch: 1, max_surge: 1 }}\n  gates: {{ interval: 1s, timeout: 5m }}\n",
            lt = infra.launch_template,
            subnet = infra.subnet,
            tg = infra.target_group_arn,
        ),
    )
    .expect("manifest");
    // 600 requests a minute (6 instances) from 5 minutes ago to 20 minutes ahead.
    let now = chrono::Utc::now();
    for m in -5..20 {
        put_metric(
            &cfg,
            "AWS/ApplicationELB",
            "RequestCount",
            &[("TargetGroup", DIM)],
            now + chrono::Duration::minutes(m),
            600.0,
        )
        .await;
    }
    let port = common::free_port();
    let server = format!("http://127.0.0.1:{port}");
    let old = format!("{}:1", infra.launch_template);
    let new = format!("{}:2", infra.launch_template);

    // Scale out from nothing to the desired count (a scale action), killed at random
    // points of it too, then converge on the old build.
    let mut seed: u64 = 20261122;
    println!("kill schedule seed {seed}");
    let mut run = 0;
    let mut daemon = start_daemon(&moto, dir.path(), port, run);
    let mut scale_kills = 0;
    for _ in 0..6 {
        let wait = 0.1 + 0.7 * next(&mut seed);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        kill9(&mut daemon);
        let live = all_instances(&cfg)
            .await
            .iter()
            .filter(|i| i.1 == "running" || i.1 == "pending")
            .count();
        assert!(live <= DESIRED, "{live} live during the scale-out");
        let reg = registered(&cfg, &infra.target_group_arn).await.len();
        scale_kills += usize::from(live < DESIRED || reg < DESIRED);
        run += 1;
        daemon = start_daemon(&moto, dir.path(), port, run);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live: Vec<_> = all_instances(&cfg)
            .await
            .into_iter()
            .filter(|i| i.1 == "running")
            .collect();
        if live.len() == DESIRED && registered(&cfg, &infra.target_group_arn).await.len() == DESIRED
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never converged before the deploy"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Start the deploy (the CLI returns once it is admitted).
    let mut admitted = false;
    for _ in 0..50 {
        let out = Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(["deploy", "web", "--env", "staging", "--build", &new])
            .env("COXSWAIN_SERVER", &server)
            .env("COXSWAIN_API_TOKEN", TOKEN)
            .output()
            .expect("deploy");
        if out.status.success() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(admitted, "deploy admitted");

    // Kill it at random points, restarting on the same state file each time.
    let deploy_started = Instant::now();
    let mut kills = Vec::new();
    let mut max_live = 0;
    let mut finished_at_kill = None;
    for k in 0..24 {
        let wait = 0.2 + 1.2 * next(&mut seed);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        kill9(&mut daemon);
        let at = deploy_started.elapsed();
        let states = all_instances(&cfg).await;
        let live = states
            .iter()
            .filter(|i| i.1 == "running" || i.1 == "pending")
            .count();
        max_live = max_live.max(live);
        let last = std::fs::read_to_string(dir.path().join(format!("daemon-{run}.log")))
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.contains("action:") || l.contains("rollout"))
            .map(|l| l.chars().skip(30).take(90).collect::<String>())
            .unwrap_or_default();
        kills.push((at, live, last));
        let log_now = std::fs::read_to_string(dir.path().join(format!("daemon-{run}.log")))
            .unwrap_or_default();
        if finished_at_kill.is_none()
            && (log_now.contains("succeeded: ") || log_now.contains("rolled back"))
        {
            finished_at_kill = Some(k);
        }
        // At most the desired count plus the surge of one.
        if live > DESIRED + 1 {
            let mut logs = String::new();
            for r in run.saturating_sub(2)..=run {
                logs.push_str(&format!("--- run {r}\n"));
                logs.push_str(
                    &std::fs::read_to_string(dir.path().join(format!("daemon-{r}.log")))
                        .unwrap_or_default(),
                );
            }
            panic!("{live} live at a kill: {states:?}\n{logs}");
        }
        run += 1;
        daemon = start_daemon(&moto, dir.path(), port, run);
    }
    let last_restart = Instant::now();
    // Let the last one finish: one build, the desired count, all registered, nothing left.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (live, converged_in) = loop {
        let states = all_instances(&cfg).await;
        let live: Vec<_> = states
            .iter()
            .filter(|i| i.1 == "running" || i.1 == "pending")
            .cloned()
            .collect();
        let reg = registered(&cfg, &infra.target_group_arn).await;
        let builds: std::collections::BTreeSet<_> = live.iter().map(|i| i.2.clone()).collect();
        if live.len() == DESIRED && builds.len() == 1 && reg.len() == DESIRED {
            break (live, last_restart.elapsed());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join(format!("daemon-{run}.log")))
                .unwrap_or_default();
            panic!(
                "did not converge: {live:?}, registered {reg:?}\n{}",
                log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    kill9(&mut daemon);
    let states = all_instances(&cfg).await;
    let mut launched: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, build) in &states {
        *launched.entry(build.clone()).or_default() += 1;
    }
    let build = &live[0].2;
    // Registered targets are exactly the live instances: no orphan serving or left out.
    let mut reg = registered(&cfg, &infra.target_group_arn).await;
    reg.sort();
    let mut ids: Vec<String> = live.iter().map(|i| i.0.clone()).collect();
    ids.sort();
    assert_eq!(
        reg, ids,
        "the target group holds exactly the live instances"
    );
    // Nothing launched twice: one instance per slot for each build.
    assert_eq!(
        launched.get(&old).copied().unwrap_or(0),
        DESIRED,
        "{launched:?}"
    );
    assert!(
        launched.get(&new).copied().unwrap_or(0) <= DESIRED,
        "new build launched more than once per slot: {launched:?}"
    );
    println!(
        "CRASH-FIGURES scale_out_kills=6 (before every instance was up and registered: {scale_kills}) rollout_kills={} ended_on={build} converged_after_last_restart={converged_in:?} max_live_at_a_kill={max_live} launched_per_build={launched:?}",
        kills.len()
    );
    for (i, (at, live, last)) in kills.iter().enumerate() {
        println!(
            "  kill {i:>2} at +{:>5.1}s: {live} live; last logged: {last}",
            at.as_secs_f64()
        );
    }
    let during = finished_at_kill.unwrap_or(kills.len());
    println!("  {during} of the kills landed while the rollout was in progress");
    assert!(
        during >= 20,
        "only {during} kills landed during the rollout"
    );
}
