//! What Prometheus and Grafana get: the real daemon on the simulated cloud serves
//! `/metrics` in the format its content type names (the text format 0.0.4 by default,
//! OpenMetrics when asked), `promtool` accepts both the exposition and the alert rules in
//! `deploy/prometheus/` (and their unit tests pass), and every metric the rules and the
//! Grafana dashboard in `deploy/grafana/` use exists in `/metrics`.
//!
//! promtool missing is a failure, never a skip: `scripts/test` installs Debian's
//! `prometheus` package, which carries it.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "prometheus-test-token-0123456789";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool() -> PathBuf {
    common::debian_tool("COXSWAIN_PROMTOOL", "/usr/bin/promtool", "prometheus")
}

/// GET `path` from 127.0.0.1:port with an `Accept` header: (status, content type, body).
fn get(port: u16, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{accept}\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

fn run_promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(promtool());
    cmd.args(args)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("run promtool");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The metric families the alert rules and the dashboard use (tests/tools/metric_names.py).
fn used_metrics(files: &[&Path]) -> Vec<String> {
    let out = Command::new("python3")
        .arg(repo().join("tests/tools/metric_names.py"))
        .args(files)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn metrics_match_their_content_type_and_the_rules_and_dashboard_use_only_what_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let _daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(["run", "--cloud", "sim", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("COXSWAIN_STATE_DIR", dir.path())
            .env("COXSWAIN_API_TOKEN", TOKEN)
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start the daemon"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::http(port, "GET", "/readyz", "").map(|r| r.0) != Ok(200) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The default: text format 0.0.4, counters typed by their sample names, and promtool
    // reads it without a complaint.
    let (code, content_type, text) = get(port, "/metrics", None);
    assert_eq!(code, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE coxswain_passes_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE coxswain_pass_duration_seconds histogram"));
    assert!(text.contains("coxswain_pass_duration_seconds_bucket{le=\"0.01\"}"));
    assert!(text.contains("coxswain_build_info{version=\""));
    assert!(
        text.contains("unit=\"count\""),
        "the demo's request counts carry their unit: {text}"
    );
    let last = text
        .lines()
        .find_map(|l| l.strip_prefix("coxswain_last_successful_pass_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("a last successful pass");
    assert!(last > 1.0e9, "{last}");
    let (ok, lint) = run_promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{lint}");

    // What Prometheus asks for by default: OpenMetrics, which says so and ends with EOF.
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (code, content_type, om) = get(port, "/metrics", Some(prometheus_accept));
    assert_eq!(code, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    assert!(om.contains("# TYPE coxswain_passes counter"), "{om}");

    // The alert rules: valid, and their unit tests pass.
    let rules = repo().join("deploy/prometheus/coxswain-alerts.yml");
    let rule_tests = repo().join("deploy/prometheus/coxswain-alerts.test.yml");
    let dashboard = repo().join("deploy/grafana/coxswain-dashboard.json");
    let (ok, out) = run_promtool(&["check", "rules", &rules.display().to_string()], None);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run_promtool(&["test", "rules", &rule_tests.display().to_string()], None);
    assert!(ok, "promtool test rules:\n{out}");

    // Every metric they and the dashboard use is exported (AWS call counts only where
    // there is AWS: `aws_moto` checks that one against moto).
    let used = used_metrics(&[&rules, &dashboard]);
    assert!(used.len() >= 8, "too few metrics found: {used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| m.as_str() != "coxswain_aws_calls_total")
        .filter(|m| !text.contains(&format!("# TYPE {m} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "used by the alert rules or the dashboard but not in /metrics: {missing:?}"
    );
}
