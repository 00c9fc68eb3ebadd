//! The deploy cases CI meets through the CLI (`../shared/cases/`, "Deploys"), run as CI
//! runs them: the real binary as a daemon on the simulated cloud with the case's own
//! manifest (real clock), and `coxswain deploy`/`rollback`/`status` against its API.
//!
//! - hook-timeout: a pre-deploy hook that hangs; `deploy --wait --timeout 20s` ends at
//!   20 s with exit 3 (not after the hook's 90 s), the hook's process is killed, and
//!   `status` shows the rollout in its pre-deploy phase meanwhile; `rollback` stops it too.
//! - retry-idempotency: while another fleet's 45 s smoke test runs, the API answers at
//!   once; a retried deploy (same build, or the same idempotency key) returns the rollout
//!   already admitted, never a second one.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn case(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/cases")
        .join(rel);
    assert!(
        p.exists(),
        "case file {} is missing: the shared cases must be beside the repository",
        p.display()
    );
    p
}

struct Daemon {
    _child: common::KillOnDrop,
    pid: u32,
    server: String,
    token: String,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, manifest: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(dir, manifest, env, common::free_port(), &[])
    }

    fn start_on(
        dir: &Path,
        manifest: &Path,
        env: &[(&str, &str)],
        port: u16,
        extra: &[&str],
    ) -> Daemon {
        let token = "case-t0ken-1234567890".to_string();
        let log = dir.join(format!("daemon-{}.log", log_seq()));
        let child = Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(["run", "--manifests"])
            .arg(manifest)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("COXSWAIN_API_TOKEN", &token)
            .env("COXSWAIN_STATE_DIR", dir)
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start daemon");
        let pid = child.id();
        let d = Daemon {
            _child: common::KillOnDrop(child),
            pid,
            server: format!("http://127.0.0.1:{port}"),
            token,
            log,
        };
        d.wait_log("API listening", 30);
        d
    }

    fn wait_log(&self, needle: &str, secs: u64) -> String {
        common::wait_for_log(&self.log, needle, secs)
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(args)
            .env("COXSWAIN_SERVER", &self.server)
            .env("COXSWAIN_API_TOKEN", &self.token)
            .output()
            .expect("run the CLI")
    }

    fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--output", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status is not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The daemon's child processes running `prog`.
    fn children(&self, prog: &str) -> Vec<u32> {
        common::children_of(self.pid)
            .into_iter()
            .filter(|(_, comm, _)| comm == prog)
            .map(|(pid, _, _)| pid)
            .collect()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fleet<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["fleets"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["fleet"] == name))
        .unwrap_or_else(|| panic!("no fleet {name} in {status}"))
}

/// hook-timeout (case7): the hook `sleep 600` with its own 90 s timeout, and
/// `deploy --wait --timeout 20s`. The deploy ends at its timeout with exit 3 and nothing
/// changed; the hook is killed; `status` showed the rollout in `pre_deploy` while it ran.
/// A second deploy, stopped by `rollback`, ends at once the same way.
#[test]
fn a_hanging_pre_deploy_hook_ends_at_the_deploy_timeout_and_on_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), &case("hook-timeout/case7-hook-hang.yaml"), &[]);
    let started = Instant::now();
    let deploy = {
        let (server, token) = (d.server.clone(), d.token.clone());
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_coxswain"))
                .args([
                    "deploy",
                    "hk",
                    "--env",
                    "production",
                    "--build",
                    "2",
                    "--wait",
                    "--timeout",
                    "20s",
                ])
                .env("COXSWAIN_SERVER", server)
                .env("COXSWAIN_API_TOKEN", token)
                .output()
                .expect("deploy")
        })
    };
    // While the hook runs: the rollout is in status, in its pre-deploy phase.
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(15) {
        let s = d.status();
        let r = &fleet(&s, "hk")["rollout"];
        if r["phase"] == "pre_deploy" && !d.children("sleep").is_empty() {
            seen = Some(r.clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let seen = seen.expect("status never showed the rollout in pre_deploy with its hook running");
    assert_eq!(seen["to"], "web-server:2", "{seen}");
    let out = deploy.join().expect("deploy thread");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // Finished as soon as `deploy --wait` returned: no rollout running, the last deploy
    // rolled back, the build unchanged.
    let s = d.status();
    let hk = fleet(&s, "hk");
    assert!(hk["rollout"].is_null(), "{hk}");
    assert_eq!(hk["last_deploy"]["outcome"], "rolled_back", "{hk}");
    assert_eq!(hk["live_build"], "web-server:1", "{s}");

    assert!(
        took < Duration::from_secs(60),
        "the deploy took {took:?}: it must end at its 20 s timeout, not the hook's 90 s"
    );
    assert!(
        text(&out).contains("during the pre-deploy hooks"),
        "{}",
        text(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.children("sleep").is_empty() {
        assert!(Instant::now() < deadline, "the hook's sleep still runs");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A hand rollback during the hook stops it at once.
    let out = d.cli(&["deploy", "hk", "--env", "production", "--build", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.children("sleep").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the second deploy's hook never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    let out = d.cli(&["rollback", "hk", "--env", "production", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "rollback took {:?}",
        t.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.children("sleep").is_empty() {
        assert!(Instant::now() < deadline, "rollback left the hook running");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = d.status();
    assert_eq!(fleet(&s, "hk")["live_build"], "web-server:1", "{s}");
}

/// retry-idempotency (case8): `slow`'s smoke test holds for 45 s; meanwhile CI deploys to
/// `idem` and retries. Every answer comes at once, and there is one rollout of the build.
#[test]
fn retried_deploys_return_the_rollout_already_admitted_while_a_smoke_test_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        dir.path(),
        &case("retry-idempotency/case8-retry.yaml"),
        &[("SMOKE_FAIL_FLAG", "/nonexistent/coxswain-smoke-flag")],
    );
    let out = d.cli(&["deploy", "slow", "--env", "production", "--build", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Wait until the slow smoke test runs.
    let deadline = Instant::now() + Duration::from_secs(40);
    while d.children("sh").is_empty() && d.children("sleep").is_empty() {
        assert!(Instant::now() < deadline, "slow's smoke test never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    let id_of = |out: &Output| -> i64 {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["id"].as_i64())
            .unwrap_or_else(|| panic!("no rollout id in {}", text(out)))
    };
    let deploy = |extra: &[&str]| {
        let mut args = vec!["deploy", "idem", "--env", "production", "--output", "json"];
        args.extend_from_slice(extra);
        let t = Instant::now();
        let out = d.cli(&args);
        (out, t.elapsed())
    };
    let (first, took) = deploy(&["--build", "2", "--idempotency-key", "ci-run-42"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(
        took < Duration::from_secs(5),
        "the API answered after {took:?} while a smoke test ran"
    );
    let id = id_of(&first);
    // CI retries: with the key, and without it (same build already rolling).
    for extra in [
        &["--build", "2", "--idempotency-key", "ci-run-42"][..],
        &["--build", "2"][..],
    ] {
        let (again, took) = deploy(extra);
        assert_eq!(again.status.code(), Some(0), "{}", text(&again));
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
        assert_eq!(id_of(&again), id, "a retry started another rollout");
        assert!(
            text(&again).contains("already admitted"),
            "{}",
            text(&again)
        );
    }
    // The same key for another build is refused (exit 2), not a silent reuse.
    let (other, _) = deploy(&["--build", "3", "--idempotency-key", "ci-run-42"]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other));
    assert!(
        text(&other).contains("was used for another deploy"),
        "{}",
        text(&other)
    );
    // Refusals are exit 2, and JSON lines with --output json; an unknown fleet's
    // history is a refusal too, not an empty table.
    let unknown = d.cli(&[
        "deploy",
        "nosuch",
        "--env",
        "production",
        "--build",
        "2",
        "--output",
        "json",
    ]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    let line: serde_json::Value = serde_json::from_slice(&unknown.stdout)
        .unwrap_or_else(|e| panic!("the refusal is not one JSON line ({e}): {}", text(&unknown)));
    assert_eq!(
        (line["type"].as_str(), line["exit_code"].as_u64()),
        (Some("error"), Some(2)),
        "{line}"
    );
    // status of an unknown fleet, and a CLI with a server address that is no URL: the
    // same JSON line (no answer from the daemon: status 0).
    for args in [
        &["status", "nosuch", "--output", "json"][..],
        &["status", "--server", "notaurl", "--output", "json"][..],
    ] {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let line: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON line ({e}): {}", text(&out)));
        assert_eq!(line["type"], "error", "{line}");
        assert_eq!(line["exit_code"], 2, "{line}");
    }
    let nosuch = d.cli(&["history", "nosuch"]);
    assert_eq!(nosuch.status.code(), Some(2), "{}", text(&nosuch));
    assert!(
        text(&nosuch).contains("no fleet or app named 'nosuch'"),
        "{}",
        text(&nosuch)
    );
    // One rollout of build 2 on idem, in the ledger.
    let out = d.cli(&["history", "idem", "--output", "json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history json");
    let twos = h["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["fleet"] == "idem" && r["build"] == "web-server:2")
        .count();
    assert_eq!(twos, 1, "{h}");
    // Once that rollout has ended, a retry with its key (without --wait) says how it
    // ended and exits with that outcome's code: CI retrying a finished deploy must not
    // read "accepted" as success.
    let result_of = |out: &Output| -> serde_json::Value {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["type"] == "result")
            .unwrap_or_else(|| panic!("no result line in {}", text(out)))
    };
    let (waited, _) = deploy(&["--build", "2", "--idempotency-key", "ci-run-42", "--wait"]);
    let outcome = result_of(&waited)["outcome"].clone();
    assert!(outcome.is_string(), "{}", text(&waited));
    let (after, took) = deploy(&["--build", "2", "--idempotency-key", "ci-run-42"]);
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(
        after.status.code(),
        waited.status.code(),
        "{}",
        text(&after)
    );
    assert_eq!(id_of(&after), id, "a retry started another rollout");
    assert_eq!(result_of(&after)["outcome"], outcome, "{}", text(&after));
    assert!(text(&after).contains("has ended"), "{}", text(&after));
}

fn log_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// `deploy --wait` follows its rollout through a restart of the daemon (same state file,
/// same address): it was admitted, so the CLI keeps asking instead of exiting 4, and
/// reports how the rollout really ended. Bad input is exit 2, not 4.
#[test]
fn deploy_wait_follows_its_rollout_through_a_daemon_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = case("retry-idempotency/case8-retry.yaml");
    let state = dir.path().join("state.db");
    let state_arg = state.to_string_lossy().to_string();
    let env = [("SMOKE_FAIL_FLAG", "/nonexistent/coxswain-smoke-flag")];
    let port = common::free_port();
    let d = Daemon::start_on(dir.path(), &manifest, &env, port, &["--state", &state_arg]);
    let bad = d.cli(&["deploy", "idem", "--env", "production", "--build", ""]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let (server, token) = (d.server.clone(), d.token.clone());
    let follower = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args([
                "deploy",
                "idem",
                "--env",
                "production",
                "--build",
                "2",
                "--wait",
            ])
            .env("COXSWAIN_SERVER", server)
            .env("COXSWAIN_API_TOKEN", token)
            .output()
            .expect("deploy")
    });
    d.wait_log("rollout #", 20);
    // The daemon goes away mid-rollout and comes back on the same address and state.
    drop(d);
    std::thread::sleep(Duration::from_secs(3));
    let _again = Daemon::start_on(dir.path(), &manifest, &env, port, &["--state", &state_arg]);
    let out = follower.join().expect("follower");
    let all = text(&out);
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "the CLI must report the rollout's end, not exit {:?}: {all}",
        out.status.code()
    );
    assert!(
        all.contains("lost the daemon while following rollout"),
        "{all}"
    );
    assert!(
        all.contains("live:") || all.contains("rolled back"),
        "{all}"
    );
}
