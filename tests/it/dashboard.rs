//! The operator's view, end to end: the real daemon on the simulated cloud with
//! `--listen 127.0.0.1:PORT` serves `/healthz`, `/readyz`, `/metrics`, `status`, `history`
//! and the dashboard;
//! headless Chromium (Debian's `chromium`) renders the dashboard while a deploy is rolling,
//! and a screenshot is written to `target/screenshots/dashboard.png`.
//!
//! Chromium missing is a failure, never a skip: `scripts/test` installs it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-test-token-0123456789";

fn chromium() -> PathBuf {
    common::debian_tool("COXSWAIN_CHROMIUM", "/usr/bin/chromium", "chromium")
}

/// Headless Chromium with the flags that keep it off the network (only 127.0.0.1 is
/// loaded) and a fresh profile.
fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        // Let the page's script fetch its data and render before the DOM is read.
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

fn get(port: u16, path: &str) -> (u16, String) {
    common::http(port, "GET", path, "").expect("GET")
}

#[test]
fn the_daemon_serves_health_metrics_and_a_dashboard_that_renders_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_coxswain"))
            // Slower than the demo's 60x, so the rollout is still running while we look.
            .args(["run", "--cloud", "sim", "--speed", "15", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("COXSWAIN_STATE_DIR", dir.path())
            .env("COXSWAIN_API_TOKEN", TOKEN)
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the daemon"),
    );
    // Ready once a pass has finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = common::http(port, "GET", "/readyz", "") {
            assert!(body.contains("\"ready\""), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = get(port, "/healthz");
    assert_eq!(code, 200, "{body}");

    let deploy = || {
        let deploy = Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(["deploy", "web", "--env", "staging", "--build", "13"])
            .env("COXSWAIN_SERVER", format!("http://127.0.0.1:{port}"))
            .env("COXSWAIN_API_TOKEN", TOKEN)
            .output()
            .expect("deploy");
        assert!(
            deploy.status.success(),
            "{}",
            String::from_utf8_lossy(&deploy.stderr)
        );
    };
    let mut deployed = false;
    // Let a few simulated minutes pass, so charts have points, then deploy.
    let deadline = Instant::now() + Duration::from_secs(90);
    let data = loop {
        let (code, body) = get(port, "/dashboard/data");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("dashboard json");
        let points = v["fleets"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["fleet"] == "web"))
            .and_then(|f| f["series"].as_array().map(Vec::len))
            .unwrap_or(0);
        let rolling = v["fleets"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| !f["rollout"].is_null()));
        if points >= 5 && !deployed {
            // Charts have points: now a deploy, rolling while we look.
            deploy();
            deployed = true;
        }
        if points >= 5 && rolling {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no chart points or no rollout: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let fleets: Vec<&str> = data["fleets"]
        .as_array()
        .expect("fleets")
        .iter()
        .filter_map(|f| f["fleet"].as_str())
        .collect();
    assert_eq!(fleets.len(), 3, "{fleets:?}");
    // Without a token: no event lines (hook output) and no AWS error text.
    for f in data["fleets"].as_array().into_iter().flatten() {
        if f["rollout"].is_object() {
            assert_eq!(f["rollout"]["events"], serde_json::json!([]), "{f}");
        }
    }
    assert!(data["last_pass_errors"].is_null());

    // The page, rendered by Chromium: its DOM once the script has run.
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("http://127.0.0.1:{port}/");
    let out = headless(profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the dashboard's script did not render: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    for fleet in &fleets {
        assert!(
            dom.contains(&format!("data-fleet=\"{fleet}\"")),
            "no card for {fleet}"
        );
        assert!(
            dom.contains(&format!("data-build-row=\"{fleet}\"")),
            "no build row for {fleet}"
        );
    }
    // Charts with real lines (points drawn), a rollout with its gate, decisions, builds.
    let drawn = dom
        .match_indices("class=\"desired\" points=\"")
        .filter(|(i, m)| {
            dom[i + m.len()..]
                .split('"')
                .next()
                .is_some_and(|p| p.split(' ').count() >= 2)
        })
        .count();
    assert!(drawn >= 1, "no capacity line drawn");
    assert!(dom.contains("class=\"demand\""), "no demand line");
    assert!(dom.contains("data-rollout="), "no rollout shown");
    assert!(dom.contains("gates: "), "no gate result shown");
    assert!(dom.contains("class=\"decisions\""), "no decisions table");
    assert!(dom.contains("web-server:12"), "the live build is not shown");
    // At a glance: the clock (the simulated one here), axes with their units, whether
    // capacity keeps up with the decisions, and the newest decisions first.
    let clock = data["at"].as_str().expect("the clock's time in the data");
    assert!(dom.contains("clock 2026-"), "no clock in the header");
    assert!(clock.starts_with("2026-"), "{clock}");
    assert!(
        dom.contains("class=\"axis-left\">instances<"),
        "no instance axis"
    );
    assert!(
        dom.contains("RequestCount (per period)<"),
        "the demand axis does not say its unit"
    );
    assert!(
        dom.contains("CPUUtilization (%)<"),
        "the CPU axis does not say %"
    );
    assert!(dom.contains("time (UTC), last "), "no time axis");
    assert!(dom.matches("class=\"tick-t\"").count() >= 3 * fleets.len());
    assert!(
        dom.contains("data-num=\"shortfall\""),
        "no sign of whether capacity keeps up"
    );
    let times: Vec<&str> = dom
        .split("<table class=\"decisions\">")
        .skip(1)
        .filter_map(|t| t.split("</table>").next())
        .flat_map(|t| {
            t.split("<tr><td>")
                .skip(1)
                .filter_map(|r| r.split("</td>").next())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!times.is_empty(), "no decision rows");
    for table in dom.split("<table class=\"decisions\">").skip(1) {
        let rows: Vec<&str> = table
            .split("</table>")
            .next()
            .unwrap_or_default()
            .split("<tr><td>")
            .skip(1)
            .filter_map(|r| r.split("</td>").next())
            .collect();
        let mut sorted = rows.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(rows, sorted, "decisions are not newest first");
    }

    // Prometheus text: per-fleet gauges, decisions, actions, the rollout and its gates.
    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    for needle in [
        "# TYPE coxswain_fleet_desired_instances gauge",
        "coxswain_fleet_ready_instances{fleet=\"web\",environment=\"production\"}",
        "coxswain_fleet_booting_instances{",
        "coxswain_decisions_total{",
        "coxswain_actions_total{fleet=\"web\",action=\"launch\"}",
        "coxswain_rollout_gate_results_total{fleet=\"web-staging\"",
        "coxswain_passes_total ",
    ] {
        assert!(metrics.contains(needle), "no {needle} in\n{metrics}");
    }
    // Every sample line parses as NAME{LABELS} VALUE with a number.
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }

    // `coxswain status` and `history`, as tables and as JSON.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(args)
            .env("COXSWAIN_SERVER", format!("http://127.0.0.1:{port}"))
            .env("COXSWAIN_API_TOKEN", TOKEN)
            .output()
            .expect("run coxswain");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = cli(&["status"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    for col in [
        "FLEET",
        "ENV",
        "DESIRED",
        "READY",
        "BOOTING",
        "LIVE BUILD",
        "ROLLOUT",
    ] {
        assert!(header.contains(col), "{header}");
    }
    for fleet in &fleets {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(fleet)),
            "{fleet} missing from\n{table}"
        );
    }
    assert!(
        table.contains("web-server:12 → web-server:13")
            || table
                .lines()
                .any(|l| l.starts_with("web-staging") && l.contains("web-server:13")),
        "neither the rollout nor its result is in\n{table}"
    );
    assert!(table.contains("  reason: "), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["status", "web", "--output", "json"])).expect("status json");
    let only = json["fleets"].as_array().expect("fleets");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["fleet"], "web");
    assert!(only[0]["desired"].as_u64().is_some());
    let history: serde_json::Value =
        serde_json::from_str(&cli(&["history", "web-staging", "--output", "json"]))
            .expect("history json");
    assert_eq!(history["deployments"][0]["build"], "web-server:13");
    assert!(cli(&["history", "web-staging"]).contains("web-server:13"));
    // Status is behind the token, like the rest of /v1.
    let (code, _) = get(port, "/v1/status");
    assert_eq!(code, 401);

    // The screenshot CI keeps.
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let png = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let profile = tempfile::tempdir().expect("profile");
    let out = headless(profile.path())
        .arg("--window-size=1400,1900")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "a blank page? {} bytes", bytes.len());
    println!(
        "dashboard screenshot: {} ({} bytes)",
        png.display(),
        bytes.len()
    );
    drop(daemon);
}

/// The status table shows a running rollout with its gate verdict (a pure function, so
/// this does not race a real rollout).
#[test]
fn the_status_table_shows_the_rollout_and_its_gate() {
    let events = serde_json::json!([
        {"seq": 1, "at": "2026-01-05T09:00:00Z", "message": "started"},
        {"seq": 2, "at": "2026-01-05T09:01:00Z", "message": "step 1/4: 1 of 6 on web-server:13"},
        {"seq": 3, "at": "2026-01-05T09:02:00Z", "message": "gate failed: 5xx over 1%"},
        {"seq": 4, "at": "2026-01-05T09:02:05Z", "message": "restoring web-server:12"},
    ]);
    let body = serde_json::json!({"at": null, "passes": 3, "last_pass_errors": [], "fleets": [{
        "fleet": "web", "environment": "production", "app": "web", "current": 6, "desired": 6,
        "ready": 5, "booting": 1, "retiring": 0, "capped": false, "shortfall": 0,
        "live_build": "web-server:12", "previous_build": null, "last_deploy": null,
        "demand_metric": null, "demand_unit": null, "queued": [], "decisions": [], "series": [],
        "reason": "5 → 6: target tracking", "warnings": ["RequestCount: stale"],
        "rollout": {"id": 7, "from": "web-server:12", "to": "web-server:13", "step": 1,
                    "phase": "rolling", "gate": "fail", "gate_reason": "5xx over 1%", "events": events},
    }]});
    // The CLI reads the answer as the API's own type, as `coxswain status` does.
    let body: coxswain::api::Status = serde_json::from_value(body).expect("a status answer");
    let table = coxswain::cli::reads::status_table(&body);
    let row = table.lines().nth(1).unwrap_or_default();
    for want in [
        "web",
        "production",
        "6",
        "5",
        "web-server:12",
        "#7 web-server:12 → web-server:13: rolling, gates fail",
    ] {
        assert!(row.contains(want), "{want} not in {row}");
    }
    assert!(
        table.contains("  reason: 5 → 6: target tracking"),
        "{table}"
    );
    assert!(table.contains("  warning: RequestCount: stale"), "{table}");
    assert!(
        !table.contains("market:"),
        "no Spot, no market line: {table}"
    );
    let mut spot = body.clone();
    spot.fleets[0].spot = 4;
    let table = coxswain::cli::reads::status_table(&spot);
    assert!(table.contains("  market: 2 On-Demand, 4 Spot"), "{table}");
    assert!(!table.contains("units"), "no weights, no units: {table}");
    // With instance weights: 6 units on 3 instances.
    let mut weighted = spot.clone();
    weighted.fleets[0].instances = 3;
    let table = coxswain::cli::reads::status_table(&weighted);
    assert!(
        table.contains("  capacity in units (instance weights): 6 units on 3 instances"),
        "{table}"
    );
    assert!(
        table.contains("  market: 2 On-Demand, 4 Spot (units)"),
        "{table}"
    );
    // Under the fleet: the rollout's step and why its gates say so, and its newest
    // events (three of them), oldest first.
    assert!(
        table.contains("  rollout: step 1, gates fail: 5xx over 1%"),
        "{table}"
    );
    let events: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("  event: "))
        .collect();
    assert_eq!(
        events,
        vec![
            "  event: [09:01:00] step 1/4: 1 of 6 on web-server:13",
            "  event: [09:02:00] gate failed: 5xx over 1%",
            "  event: [09:02:05] restoring web-server:12",
        ],
        "{table}"
    );
}
