//! The binary as a user runs it: plan, run on the simulated cloud, JSON logs, exit codes.

use crate::common;

use std::process::Command;

fn coxswain() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coxswain"))
}

#[test]
fn plan_prints_each_fleet_with_metrics_and_a_reason_and_changes_nothing() {
    let out = coxswain()
        .args(["plan", "--start", "2026-01-05T07:45:00Z"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for fleet in ["web", "api"] {
        assert!(text.lines().any(|l| l.starts_with(fleet)), "{text}");
    }
    assert!(text.contains("metric RequestCount = "), "{text}");
    assert!(text.contains("reason "), "{text}");
    let out = coxswain()
        .args(["plan", "--fleet", "web", "--output", "json"])
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json plan");
    assert_eq!(v["fleets"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["fleets"][0]["fleet"], "web");
    assert!(v["fleets"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("→")));
}

/// A fleet with instance weights: plan says its capacity is in units, and on how many
/// instances (the simulator starts it at `capacity.min`, 4 units: two m6i.xlarge).
#[test]
fn plan_says_when_capacity_is_counted_in_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yaml");
    std::fs::write(
        &path,
        "name: web\nenvironment: production\nregion: us-east-1\nlaunch:\n  ami: ami-00000001\n  instance_types:\n    - { instance_type: m6i.xlarge, weighted_capacity: 2 }\n    - { instance_type: m6i.large, weighted_capacity: 1 }\ncapacity: { min: 4, max: 20 }\nscaling:\n  policies:\n    - scheduled: { cron: \"0 8 * * *\", duration: 1h, min: 4 }\n",
    )
    .expect("write");
    let out = coxswain()
        .args(["plan", "--manifests"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("capacity in units (instance weights): 4 units on 2 instances"),
        "{text}"
    );
    let out = coxswain()
        .args(["plan", "--output", "json", "--manifests"])
        .arg(&path)
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json plan");
    assert_eq!(v["fleets"][0]["live"], 4, "{v}");
    assert_eq!(v["fleets"][0]["instances"], 2, "{v}");
}

#[test]
fn plan_for_an_unknown_fleet_is_refused_with_exit_2() {
    let out = coxswain()
        .args(["plan", "--fleet", "nope"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no fleet named 'nope'"));
}

#[test]
fn run_on_the_sim_logs_one_json_line_per_decision_and_action() {
    let out = coxswain()
        .args([
            "--log-format",
            "json",
            "run",
            "--listen",
            "none",
            "--virtual-clock",
            "--duration",
            "3h",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let starting = |prefix: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .collect()
    };
    let decisions = starting("decision:");
    let launches = starting("action: launched");
    let terminations = starting("action: terminated");
    assert!(!decisions.is_empty() && !launches.is_empty() && !terminations.is_empty());
    for d in &decisions {
        assert!(
            d["fleet"].is_string() && d["from"].is_number() && d["to"].is_number(),
            "{d}"
        );
    }
    // Fields are JSON values, not Rust Debug text: ids an array of strings, the instance
    // type a plain string; and every line carries the simulated time.
    for a in launches.iter().chain(&terminations) {
        let ids = a["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("ids not an array: {a}"));
        assert!(
            a["fleet"].is_string()
                && !ids.is_empty()
                && ids
                    .iter()
                    .all(|i| i.as_str().is_some_and(|i| i.starts_with("i-"))),
            "{a}"
        );
    }
    for l in &launches {
        assert!(
            l["instance_type"]
                .as_str()
                .is_some_and(|t| !t.contains("Some(")),
            "{l}"
        );
    }
    assert!(
        lines.iter().all(|l| l["sim_time"].is_string()),
        "no sim_time on a line"
    );
}

#[test]
fn dry_run_on_the_sim_decides_but_launches_nothing() {
    let out = coxswain()
        .args([
            "--log-format",
            "json",
            "run",
            "--listen",
            "none",
            "--virtual-clock",
            "--duration",
            "1h",
            "--dry-run",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("\"dry_run\":true"), "{log}");
    assert!(!log.contains("action: "), "{log}");
}

#[test]
fn aws_without_manifests_is_refused_with_a_sentence() {
    let out = coxswain()
        .args(["run", "--cloud", "aws"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cloud aws needs --manifests"));
}

fn wait_for(log: &std::path::Path, needle: &str, secs: u64) -> String {
    common::wait_for_log(log, needle, secs)
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

#[test]
fn sighup_with_an_invalid_manifest_keeps_the_running_config_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("web.yaml");
    let good = "name: web\nenvironment: production\nregion: us-east-1\nlaunch: { ami: ami-12345678, instance_types: [m6i.large] }\ncapacity: { min: 2, max: 10 }\nscaling:\n  policies:\n    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCount, stat: Sum, kind: total }\n        target: 1000\n";
    std::fs::write(&manifest, good).expect("write");
    let log = dir.path().join("log.txt");
    let mut child = coxswain()
        .args(["run", "--listen", "none", "--speed", "60", "-m"])
        .arg(dir.path())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start daemon");
    wait_for(&log, "coxswain daemon started", 20);
    std::fs::write(&manifest, good.replace("max: 10", "max: 1")).expect("write");
    signal(&child, libc::SIGHUP);
    let text = wait_for(&log, "keeping the last good config", 20);
    assert!(
        text.contains("capacity.min (2) is above capacity.max (1)"),
        "{text}"
    );
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("daemon exits");
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("stopped cleanly"), "{text}");
}

/// The README's CI snippet, run line by line as written against the demo daemon.
#[test]
fn the_readme_ci_pipeline_works_as_written_against_the_sim_daemon() {
    let commands = common::readme_ci_snippet();
    assert_eq!(commands.len(), 3, "{commands:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let token = "ci-test-token-0123456789";
    let (mut daemon, server, log) = demo_daemon(dir.path(), token, "120");
    let mut outputs = Vec::new();
    for c in &commands {
        let envs = [
            ("COXSWAIN_SERVER", server.as_str()),
            ("COXSWAIN_API_TOKEN", token),
            ("BUILD", "13"),
            ("GIT_SHA", "4f2a9c1"),
            ("QA_APPROVER", "qa-ana"),
        ];
        let (code, text) = common::run_line(c, &envs);
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(code, Some(0), "`{c}` failed:\n{text}\n{log_text}");
        outputs.push(text);
    }
    assert!(
        outputs[0].contains("live: web-server:13 on web-staging (staging)"),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[2].contains("live: web-server:13 on web (production)"),
        "{}",
        outputs[2]
    );
    // Skipping staging is refused with exit 2 and a sentence.
    let out = coxswain()
        .args(["deploy", "web", "--env", "production", "--build", "14"])
        .env("COXSWAIN_SERVER", &server)
        .env("COXSWAIN_API_TOKEN", token)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not passed staging"));
    signal(&daemon, libc::SIGTERM);
    let _ = daemon.wait();
}

/// A demo daemon on 127.0.0.1 (sim, sped up) for CLI tests. Returns (child, server, log).
fn demo_daemon(
    dir: &std::path::Path,
    token: &str,
    speed: &str,
) -> (std::process::Child, String, std::path::PathBuf) {
    let port = common::free_port();
    let log = dir.join("daemon.log");
    let child = coxswain()
        .args([
            "run",
            "--speed",
            speed,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("COXSWAIN_API_TOKEN", token)
        .env("COXSWAIN_STATE_DIR", dir)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start daemon");
    wait_for(&log, "API listening", 20);
    (child, format!("http://127.0.0.1:{port}"), log)
}

#[test]
fn a_deploy_past_its_timeout_is_rolled_back_and_exits_3_and_rollback_by_hand_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, server, _log) = demo_daemon(dir.path(), "t0ken-for-timeout-test", "60");
    let run = |args: &[&str]| {
        coxswain()
            .args(args)
            .env("COXSWAIN_SERVER", &server)
            .env("COXSWAIN_API_TOKEN", "t0ken-for-timeout-test")
            .output()
            .expect("run")
    };
    // Staging instances take 2 simulated minutes to boot: 30 s is not enough.
    let out = run(&[
        "deploy",
        "web",
        "--env",
        "staging",
        "--build",
        "13",
        "--wait",
        "--timeout",
        "30s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("timed out and rolled back"), "{text}");
    // A good deploy, then a rollback by hand to the build before it.
    let out = run(&[
        "deploy", "web", "--env", "staging", "--build", "14", "--label", "9f3c2e1", "--wait",
        "--output", "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let last: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("JSON lines");
    assert_eq!(last["type"], "result");
    assert_eq!(last["outcome"], "succeeded");
    let out = run(&["rollback", "web", "--env", "staging", "--wait"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rolled back: web-server:12 is live again on web-staging"),
        "{text}"
    );
    let out = run(&["history", "web-staging", "--output", "json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let outcomes: Vec<&str> = h["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["outcome"].as_str())
        .collect();
    // Newest first: 14 left by the rollback (no longer passed in staging), the rollback
    // to 12, 14 live, 13 timed out.
    assert_eq!(
        outcomes,
        ["rolled_back", "succeeded", "succeeded", "rolled_back"],
        "{h}"
    );
    let kinds: Vec<&str> = h["deployments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    // Newest first: the record that the rollback left 14, the rollback, 14, 13.
    assert_eq!(kinds, ["left", "rollback", "deploy", "deploy"], "{h}");
    // The table marks the rollback and shows the label (the git SHA) of the build.
    let out = run(&["history", "web-staging"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("KIND") && lines[0].contains("LABEL"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("4 ") && lines[1].contains("left") && lines[1].contains("9f3c2e1"),
        "{table}"
    );
    assert!(lines[2].contains("rollback"), "{table}");
    assert!(
        lines[3].contains("deploy") && lines[3].contains("9f3c2e1"),
        "{table}"
    );
    signal(&daemon, libc::SIGTERM);
    let _ = daemon.wait();
}

/// The API token and AWS credentials never reach the logs or the CLI's output, even at
/// trace level, with a wrong token tried and a deploy made with the right one.
#[test]
fn secrets_never_appear_in_logs_or_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "s3cret-api-token-7f3a9c21d4";
    let wrong = "wr0ng-guess-token-55e1b8a0";
    let aws_secret = "aws-secret-AKIAEXAMPLEKEY9z8y7x";
    let port = common::free_port();
    let log = dir.path().join("daemon.log");
    let mut daemon = coxswain()
        .args(["--log-format", "json", "run", "--speed", "120", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "trace")
        .env("COXSWAIN_API_TOKEN", token)
        .env("AWS_SECRET_ACCESS_KEY", aws_secret)
        .env("AWS_SESSION_TOKEN", aws_secret)
        .env("COXSWAIN_STATE_DIR", dir.path())
        .stderr(std::fs::File::create(&log).expect("log"))
        .stdout(std::fs::File::create(dir.path().join("stdout.log")).expect("log"))
        .spawn()
        .expect("start daemon");
    wait_for(&log, "API listening", 20);
    let server = format!("http://127.0.0.1:{port}");
    let mut outputs = String::new();
    let bad = coxswain()
        .args(["deploy", "web-staging", "--env", "staging", "--build", "13"])
        .env("COXSWAIN_SERVER", &server)
        .env("COXSWAIN_API_TOKEN", wrong)
        .output()
        .expect("run");
    assert_ne!(bad.status.code(), Some(0), "a wrong token is refused");
    outputs.push_str(&String::from_utf8_lossy(&bad.stdout));
    outputs.push_str(&String::from_utf8_lossy(&bad.stderr));
    let good = coxswain()
        .args([
            "deploy",
            "web-staging",
            "--env",
            "staging",
            "--build",
            "13",
            "--wait",
            "--output",
            "json",
        ])
        .env("COXSWAIN_SERVER", &server)
        .env("COXSWAIN_API_TOKEN", token)
        .output()
        .expect("run");
    outputs.push_str(&String::from_utf8_lossy(&good.stdout));
    outputs.push_str(&String::from_utf8_lossy(&good.stderr));
    assert_eq!(good.status.code(), Some(0), "{outputs}");
    signal(&daemon, libc::SIGTERM);
    let _ = daemon.wait();
    let mut logs = std::fs::read_to_string(&log).expect("log");
    logs.push_str(&std::fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default());
    assert!(
        logs.lines().count() > 50,
        "trace logging was on: {} lines",
        logs.lines().count()
    );
    for secret in [token, wrong, aws_secret] {
        assert!(!logs.contains(secret), "{secret} is in the daemon's log");
        assert!(!outputs.contains(secret), "{secret} is in the CLI's output");
    }
}

/// Every subcommand and every option says what it does (`--help`, the man pages and the
/// shell completions are all generated from these words).
#[test]
fn every_command_and_option_has_help_text_and_man_pages_and_completions_are_generated() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                missing.push(format!("{path} --{id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() {
                missing.push(name.clone());
            }
            walk(sub, &name, missing);
        }
    }
    let cmd = coxswain::cli::Cli::command();
    let mut missing = Vec::new();
    walk(&cmd, "coxswain", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:?}");

    // A man page per subcommand, naming its options.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = coxswain()
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for sub in cmd.get_subcommands() {
        let page = dir.path().join(format!("coxswain-{}.1", sub.get_name()));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{text:.200}"
        );
    }
    let deploy = std::fs::read_to_string(dir.path().join("coxswain-deploy.1")).expect("page");
    assert!(deploy.contains("idempotency"), "{deploy:.400}");
    // Completions for the usual shells name the subcommands.
    for shell in ["bash", "zsh", "fish"] {
        let out = coxswain()
            .args(["completions", shell])
            .output()
            .expect("run");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains("rollback"),
            "{shell}: {script:.200}"
        );
    }
}
