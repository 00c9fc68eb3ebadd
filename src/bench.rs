//! `coxswain bench`: one reconcile pass over many fleets on the simulated cloud, with the
//! CPU time per pass, resident memory and AWS-equivalent calls per pass. The CPU time
//! includes the simulator's own work (it stands in for AWS), so it overstates the
//! controller's share.

use crate::clock::{Clock, VirtualClock};
use crate::cloud::sim::SimCloud;
use crate::cloud::Cloud;
use crate::controller::Controller;
use crate::manifest::{self, Config};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// A manifest with `n` fleets of the shape the demo uses (target tracking on the target
/// group's request count, a target group, two subnets), with varied traffic.
pub fn fleets_manifest(n: usize) -> String {
    let mut s = String::from("kind: Controller\ncontroller_id: bench\n");
    for i in 0..n {
        let peak = 2000 + (i % 17) * 1000;
        s.push_str(&format!(
            "---\nname: fleet-{i}\nenvironment: production\nregion: us-east-1\nlaunch:\n  launch_template: {{ name: lt-{i}, version: \"1\" }}\n  subnets: [subnet-a, subnet-b]\ntarget_group_arn: tg-{i}\ncapacity: {{ min: 2, max: 40 }}\nscaling:\n  policies:\n    - target_tracking:\n        metric: {{ namespace: AWS/ApplicationELB, name: RequestCount, dimensions: {{ TargetGroup: tg-{i} }}, stat: Sum, kind: total }}\n        target: 800\nsimulation:\n  capacity_per_instance: 1000\n  traffic:\n    synthetic: {{ base: 500, peak: {peak}, seed: {i} }}\n"
        ));
    }
    s
}

/// A controller on a simulated region for `manifest` (virtual clock at the demo's start).
fn simulated(manifest_text: &str) -> Option<(Arc<VirtualClock>, Arc<dyn Cloud>, Controller)> {
    let config: Config = match manifest::load_str("<bench>", manifest_text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: bench manifest invalid: {e}");
            return None;
        }
    };
    let clock = Arc::new(VirtualClock::new(crate::demo::start()));
    let cloud: Arc<dyn Cloud> = match SimCloud::for_config(clock.clone(), &config) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let controller = match Controller::new(cloud.clone(), clock.clone(), config, false) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    Some((clock, cloud, controller))
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// (current RSS, peak RSS) in KiB, from /proc (Linux).
pub fn rss_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub async fn run(fleets: usize, passes: usize) -> ExitCode {
    let Some((clock, cloud, mut controller)) = simulated(&fleets_manifest(fleets)) else {
        return ExitCode::from(1);
    };
    // Warm-up pass (first registration of every fleet's targets).
    controller.reconcile_once().await;
    clock.advance(Duration::from_secs(60));
    let mut times = Vec::with_capacity(passes);
    let mut calls = Vec::with_capacity(passes);
    let mut changes = 0usize;
    for _ in 0..passes {
        let before_calls = cloud.calls().snapshot();
        let t0 = cpu_time();
        let report = controller.reconcile_once().await;
        times.push(cpu_time().saturating_sub(t0));
        let after = cloud.calls().snapshot();
        let per: Vec<(&str, u64)> = after
            .iter()
            .zip(&before_calls)
            .map(|((n, a), (_, b))| (*n, a - b))
            .collect();
        changes += report
            .fleets
            .iter()
            .filter(|f| f.decision.change() != 0)
            .count();
        calls.push(per);
        clock.advance(Duration::from_secs(60));
    }
    let (rss, peak) = rss_kib();
    let med = median(&mut times.clone());
    let max = times.iter().max().copied().unwrap_or_default();
    println!("reconcile pass over {fleets} fleets on the sim cloud ({passes} passes, virtual clock +60s each, clock {})", clock.now());
    println!(
        "  cpu per pass: median {:.2} ms, max {:.2} ms",
        med.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    println!(
        "  resident memory: {:.1} MiB now, {:.1} MiB peak",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "  fleets changing capacity: {:.1} per pass",
        changes as f64 / passes.max(1) as f64
    );
    println!("  AWS-equivalent calls per pass (mean):");
    let n = passes.max(1) as f64;
    if let Some(first) = calls.first() {
        for (i, (name, _)) in first.iter().enumerate() {
            let total: u64 = calls.iter().map(|c| c[i].1).sum();
            if total > 0 {
                println!("    {name:<26} {:.2}", total as f64 / n);
            }
        }
    }
    let total: u64 = calls.iter().flat_map(|c| c.iter().map(|(_, v)| v)).sum();
    println!("    {:<26} {:.2}", "total", total as f64 / n);
    ExitCode::SUCCESS
}

/// `coxswain bench --rollout`: a 20-instance fleet rolls a new build in 25% batches with
/// zero bake on the simulated cloud (virtual clock, a pass every 15 s): CPU time of the
/// controller per pass and per step, passes per step, and AWS-equivalent calls per rollout.
pub async fn rollout() -> ExitCode {
    use crate::controller::requests::{Accepted, DeployRequest};
    use crate::store::Outcome;
    let text = "name: web\nenvironment: production\nregion: us-east-1\nlaunch:\n  ami: ami-00000001\n  instance_types: [m6i.large]\n  subnets: [subnet-a, subnet-b]\ntarget_group_arn: tg-web\ncapacity: { min: 20, max: 40 }\nscaling:\n  max_launch_per_cycle: 20\n  policies:\n    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCount, dimensions: { TargetGroup: tg-web }, stat: Sum, kind: total }\n        target: 1000\nsimulation:\n  capacity_per_instance: 1000\n  boot: 1m\n  traffic:\n    synthetic: { base: 20000, peak: 20000, noise: 0 }\ndeploy:\n  strategy:\n    rolling: { batch: \"25%\", max_surge: \"25%\", max_unavailable: 0, bake: 0s }\n  gates: { interval: 15s }\n";
    let Some((clock, cloud, mut c)) = simulated(text) else {
        return ExitCode::from(1);
    };
    for _ in 0..4 {
        c.reconcile_once().await;
        clock.advance(Duration::from_secs(15));
    }
    let before = cloud.calls().snapshot();
    let req = DeployRequest {
        fleet: "web".into(),
        env: "production".into(),
        build: "ami-00000002".into(),
        label: None,
        timeout_secs: None,
        idempotency_key: None,
    };
    let id = match c.request_deploy(&req, clock.now()) {
        Ok(Accepted::Started { id, .. }) => id,
        other => {
            eprintln!("error: deploy not started: {other:?}");
            return ExitCode::from(1);
        }
    };
    let store = c.store().clone();
    let mut times = Vec::new();
    let mut passes = 0;
    loop {
        let t0 = cpu_time();
        c.reconcile_once().await;
        times.push(cpu_time().saturating_sub(t0));
        passes += 1;
        let done = store.deployment(id).ok().flatten().map(|d| d.outcome);
        if done != Some(Outcome::InProgress) || passes > 400 {
            break;
        }
        clock.advance(Duration::from_secs(15));
    }
    let after = cloud.calls().snapshot();
    let steps = store
        .events_after(id, 0)
        .map(|e| e.iter().filter(|e| e.message.starts_with("step ")).count())
        .unwrap_or(0)
        .max(1);
    let total: Duration = times.iter().sum();
    println!("rollout of 20 instances, 25% batches, zero bake, on the sim cloud (virtual clock, a pass every 15 s, boot 1 min)");
    println!(
        "  passes: {passes} ({:.1} per step, {steps} steps)",
        passes as f64 / steps as f64
    );
    println!(
        "  controller CPU per pass: median {:.3} ms; per step {:.3} ms; whole rollout {:.2} ms",
        median(&mut times.clone()).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / steps as f64,
        total.as_secs_f64() * 1e3
    );
    println!("  AWS-equivalent calls for the whole rollout:");
    let mut sum = 0;
    for ((name, a), (_, b)) in after.iter().zip(&before) {
        if a > b {
            println!("    {name:<26} {}", a - b);
            sum += a - b;
        }
    }
    println!("    {:<26} {sum}", "total");
    ExitCode::SUCCESS
}
