//! Notifications end to end: the real daemon on the simulated cloud posts to webhook
//! receivers on 127.0.0.1 — a Slack-compatible one that fails its first delivery (so the
//! note is retried), an OpsGenie-shaped one that checks the GenieKey header, and one that
//! accepts connections and never answers. The control loop keeps its pace all along.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "notify-test-token-0123456789";
const GENIE_KEY: &str = "genie-key-not-for-logs-4242";

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
    answered: u16,
}

/// A webhook receiver: records each POST and answers `answers[i]` (then 200).
fn receiver(answers: Vec<u16>) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim().split_once(':') {
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                    if k == "content-length" {
                        length = v.parse().unwrap_or(0);
                    }
                    headers.push((k, v));
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let answered = answers.get(i).copied().unwrap_or(200);
            let _ = write!(
                stream,
                "HTTP/1.1 {answered} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
            seen.lock().expect("log").push(Received {
                path,
                headers,
                body: serde_json::from_slice(&body).unwrap_or_default(),
                answered,
            });
        }
    });
    (port, log)
}

/// Accepts connections and never answers.
fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

fn passes(port: u16) -> u64 {
    common::http(port, "GET", "/readyz", "")
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["passes"].as_u64())
        .unwrap_or(0)
}

#[test]
fn rollouts_scale_events_and_the_cost_cap_reach_chat_and_on_call_and_a_dead_sink_blocks_nothing() {
    let (slack_port, slack) = receiver(vec![500]);
    let (og_port, og) = receiver(vec![]);
    let hole = black_hole();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    let controller = format!(
        "max_total_instances: 9\nnotifications:\n  scale_threshold: 1\n  sinks:\n    - slack: {{ url_env: TEST_SLACK_URL }}\n    - opsgenie:\n        url: http://127.0.0.1:{og_port}/v2/alerts\n        api_key_env: TEST_GENIE_KEY\n        events: [rollout_started, cost_cap]\n    - slack: {{ url: \"http://127.0.0.1:{hole}/hooks/never-answers\" }}\n    - slack: {{ url_env: TEST_UNSET_SLACK_URL }}\n"
    );
    // The cap is tight (the fleets' own decisions fill it), so staging's rollout replaces
    // in place (max_unavailable 1) rather than waiting for room to surge.
    let demo = coxswain::demo::MANIFEST
        .replace("max_total_instances: 60\n", &controller)
        .replace(
            "rolling: { batch: 1, max_surge: 1 }",
            "rolling: { batch: 1, max_surge: 1, max_unavailable: 1 }",
        );
    assert_ne!(
        demo,
        coxswain::demo::MANIFEST,
        "the demo's controller doc changed"
    );
    std::fs::write(manifests.join("demo.yaml"), demo).expect("manifest");
    let port = common::free_port();
    let log = dir.path().join("daemon.log");
    let _daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_coxswain"))
            .args(["run", "--cloud", "sim", "--speed", "60", "--start"])
            .arg("2026-01-05T07:30:00Z")
            .arg("-m")
            .arg(&manifests)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("COXSWAIN_STATE_DIR", dir.path())
            .env("COXSWAIN_API_TOKEN", TOKEN)
            .env(
                "TEST_SLACK_URL",
                format!("http://127.0.0.1:{slack_port}/services/T0/B0/x"),
            )
            .env("TEST_GENIE_KEY", GENIE_KEY)
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&log).expect("log"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the daemon"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes(port) == 0 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deploy = Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args([
            "deploy", "web", "--env", "staging", "--build", "13", "--wait",
        ])
        .env("COXSWAIN_SERVER", format!("http://127.0.0.1:{port}"))
        .env("COXSWAIN_API_TOKEN", TOKEN)
        .output()
        .expect("deploy");
    assert!(
        deploy.status.success(),
        "{:?}: {}{}",
        deploy.status.code(),
        String::from_utf8_lossy(&deploy.stdout),
        String::from_utf8_lossy(&deploy.stderr)
    );
    // The chat sink hears the rollout start and succeed (the first delivery failed with a
    // 500 and was retried), scale events and the cost cap.
    let texts = |log: &Arc<Mutex<Vec<Received>>>| -> Vec<(u16, String)> {
        log.lock()
            .expect("log")
            .iter()
            .map(|r| {
                (
                    r.answered,
                    r.body["text"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = texts(&slack);
        let has = |s: &str| {
            t.iter()
                .any(|(code, text)| *code == 200 && text.contains(s))
        };
        if has("started on web-staging") && has("succeeded") && has("cost cap") && has("scaling") {
            break;
        }
        assert!(Instant::now() < deadline, "slack got {t:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = texts(&slack);
    assert_eq!(t[0].0, 500, "the first delivery failed");
    assert!(
        t[1..]
            .iter()
            .any(|(code, text)| *code == 200 && *text == t[0].1),
        "the failed note was delivered on a retry: {t:#?}"
    );
    assert!(slack
        .lock()
        .expect("log")
        .iter()
        .all(|r| r.path == "/services/T0/B0/x"));
    // On-call: only the events it asked for, in OpsGenie's shape, with the key as header.
    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let a = og.lock().expect("log").clone();
        if a.iter().any(|r| {
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("started"))
        }) && a.iter().any(|r| {
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("cost cap"))
        }) {
            break a;
        }
        assert!(Instant::now() < deadline, "opsgenie got {a:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for a in &alerts {
        assert_eq!(a.path, "/v2/alerts");
        assert!(
            a.headers
                .iter()
                .any(|(k, v)| k == "authorization" && *v == format!("GenieKey {GENIE_KEY}")),
            "{:?}",
            a.headers
        );
        for field in ["message", "alias", "priority", "description", "source"] {
            assert!(!a.body[field].is_null(), "no {field}: {}", a.body);
        }
        let m = a.body["message"].as_str().unwrap_or("");
        assert!(
            m.contains("started") || m.contains("cost cap"),
            "not an event it asked for: {m}"
        );
    }
    // The sink that never answers held a connection all this time; passes went on.
    let before = passes(port);
    std::thread::sleep(Duration::from_secs(3));
    let after = passes(port);
    assert!(
        after > before,
        "the control loop stalled: {before} → {after} passes"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // A sink whose secret is not set is left out, and only it.
    assert!(
        text.contains("notification sink left out")
            && text.contains("TEST_UNSET_SLACK_URL is not set"),
        "the unset sink was not reported"
    );
    assert!(
        !text.contains(GENIE_KEY),
        "the OpsGenie key appeared in the log"
    );
    assert!(
        !text.contains("/services/T0/B0/x"),
        "the Slack webhook URL (a secret) appeared in the log"
    );
}
