//! The daemon's API: bearer token in constant time, size limits, clear 4xx on bad input.

use crate::common;

use coxswain::api::{self, ApiState};
use coxswain::client::Client;
use coxswain::clock::VirtualClock;
use coxswain::cloud::sim::SimCloud;
use coxswain::controller::Controller;
use coxswain::manifest;
use serde_json::json;
use std::sync::Arc;

const TOKEN: &str = "s3cret-token-for-tests-0123456789";

/// An API on 127.0.0.1 backed by a controller on the simulated demo. Returns its URL.
async fn start() -> String {
    format!("http://{}", common::demo_api(TOKEN).await)
}

#[tokio::test]
async fn calls_without_the_right_token_are_rejected() {
    let server = start().await;
    let body = json!({"fleet": "web", "env": "staging", "build": "13"});
    for token in [
        "",
        "wrong",
        "s3cret-token-for-tests-0123456788",
        &format!("{TOKEN}x"),
    ] {
        let c = Client::new(&server, token).expect("client");
        let (status, resp) = c
            .call("POST", "/v1/deploys", Some(&body))
            .await
            .expect("answer");
        assert_eq!(status, 401, "token {token:?}: {resp}");
        assert!(resp["error"]
            .as_str()
            .is_some_and(|e| e.contains("bearer token")));
        let (status, _) = c
            .call("GET", "/v1/history/web", None)
            .await
            .expect("answer");
        assert_eq!(status, 401);
    }
    // Health needs no token.
    let c = Client::new(&server, "").expect("client");
    let (status, resp) = c.call("GET", "/healthz", None).await.expect("answer");
    assert_eq!((status, resp["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let server = start().await;
    let c = Client::new(&server, TOKEN).expect("client");
    let (status, resp) = c
        .call("POST", "/v1/deploys", Some(&json!({"fleet": "web"})))
        .await
        .expect("answer");
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing field")),
        "{resp}"
    );
    let big = json!({"fleet": "web", "env": "staging", "build": "13", "label": "x".repeat(20_000)});
    let (status, _) = c
        .call("POST", "/v1/deploys", Some(&big))
        .await
        .expect("answer");
    assert_eq!(status, 413);
    // A misspelled field is refused, not ignored: an idempotency key that is not read
    // would start a second rollout on a retry.
    let (status, resp) = c
        .call(
            "POST",
            "/v1/deploys",
            Some(&json!({"fleet": "web", "env": "staging", "build": "13", "idempotency_kye": "ci-1"})),
        )
        .await
        .expect("answer");
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown field `idempotency_kye`")),
        "{resp}"
    );
    // An array is not the object the API documents, even one serde could read as the struct.
    let (status, resp) = c
        .call(
            "POST",
            "/v1/deploys",
            Some(&json!(["web", "staging", "13"])),
        )
        .await
        .expect("answer");
    assert_eq!(status, 400, "{resp}");
    // Blank is what the document's pattern says: Unicode white space (U+0085 included) and
    // U+FEFF (white space to the ECMAScript regexes of JSON Schema).
    for fleet in ["", " ", "\u{85}", "\u{feff}", "\u{3000}\t"] {
        let (status, resp) = c
            .call(
                "POST",
                "/v1/deploys",
                Some(&json!({"fleet": fleet, "env": "staging", "build": "13"})),
            )
            .await
            .expect("answer");
        assert_eq!(status, 400, "{fleet:?}: {resp}");
        assert_eq!(resp["refused"], false, "{resp}");
    }
    let (status, resp) = c
        .call(
            "POST",
            "/v1/deploys",
            Some(&json!({"fleet": "nope", "env": "staging", "build": "13"})),
        )
        .await
        .expect("answer");
    assert_eq!(status, 404, "{resp}");
    assert_eq!(resp["refused"], true);
    let (status, resp) = c
        .call(
            "POST",
            "/v1/deploys",
            Some(&json!({"fleet": "web", "env": "staging", "build": "ami-123"})),
        )
        .await
        .expect("answer");
    assert_eq!(status, 422, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .is_some_and(|e| e.contains("template version number")),
        "{resp}"
    );
    let (status, _) = c
        .call("GET", "/v1/rollouts/999", None)
        .await
        .expect("answer");
    assert_eq!(status, 404);
    // A path that does not parse, and a path nobody serves: JSON errors too.
    for (path, want) in [("/v1/rollouts/abc", 400), ("/v1/nothing-here", 404)] {
        let (status, resp) = c.call("GET", path, None).await.expect("answer");
        assert_eq!(status, want, "{path}: {resp}");
        assert!(resp["error"].is_string(), "{path}: {resp}");
    }
}

/// An abort with a body that is not the documented object aborts nothing; no body at all
/// takes the default reason.
#[tokio::test]
async fn an_abort_with_a_malformed_body_is_refused_and_aborts_nothing() {
    let server = start().await;
    let c = Client::new(&server, TOKEN).expect("client");
    let (status, resp) = c
        .call(
            "POST",
            "/v1/deploys",
            Some(&json!({"fleet": "web", "env": "staging", "build": "13"})),
        )
        .await
        .expect("answer");
    assert_eq!(status, 202, "{resp}");
    let id = resp["id"].as_i64().expect("rollout id");
    let abort = format!("/v1/rollouts/{id}/abort");
    let (status, resp) = c
        .call("POST", &abort, Some(&json!({"reason": 5})))
        .await
        .expect("answer");
    assert_eq!(status, 400, "{resp}");
    assert!(resp["error"].is_string(), "{resp}");
    // serde reads a struct from an array; the API documents an object, so an array (or
    // any other JSON value) is refused too.
    for body in [
        json!([]),
        json!(["why"]),
        json!("why"),
        json!(5),
        json!(null),
    ] {
        let (status, resp) = c.call("POST", &abort, Some(&body)).await.expect("answer");
        assert_eq!(status, 400, "{body}: {resp}");
        assert!(
            resp["error"]
                .as_str()
                .is_some_and(|e| e.contains("expected a JSON object")),
            "{body}: {resp}"
        );
    }
    let (status, resp) = c
        .call("POST", &abort, Some(&json!({"reason": "x", "why": "typo"})))
        .await
        .expect("answer");
    assert_eq!(status, 400, "{resp}");
    let (_, view) = c
        .call("GET", &format!("/v1/rollouts/{id}"), None)
        .await
        .expect("answer");
    assert_eq!(view["finished"], false, "{view}");
    assert!(view["reason"].is_null(), "{view}");
    let (status, resp) = c.call("POST", &abort, None).await.expect("answer");
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["aborting"], id);
}

#[tokio::test]
async fn a_valid_deploy_is_accepted_and_can_be_followed() {
    let server = start().await;
    let c = Client::new(&server, TOKEN).expect("client");
    let (status, resp) = c
        .call(
            "POST",
            "/v1/deploys",
            Some(&json!({"fleet": "web", "env": "staging", "build": "13", "label": "4f2a9c1"})),
        )
        .await
        .expect("answer");
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["status"], "started");
    let id = resp["id"].as_i64().expect("id");
    let (status, resp) = c
        .call("GET", &format!("/v1/rollouts/{id}/events?after=0"), None)
        .await
        .expect("answer");
    assert_eq!(status, 200);
    assert_eq!(resp["rollout"]["build"], "web-server:13");
    assert!(
        resp["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("accepted")),
        "{resp}"
    );
}

#[tokio::test]
async fn the_api_serves_over_tls_with_a_certificate_the_client_trusts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = issue_certificate(dir.path(), "ca");
    let acceptor = coxswain::tls::acceptor(&cert, &key).expect("certificate loads");
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let config = manifest::load_str("demo", coxswain::demo::MANIFEST).expect("demo");
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let controller = Controller::new(sim, clock, config, false).expect("in-memory store");
    let store = controller.store().clone();
    let state = ApiState {
        commands: tx,
        store,
        token: Arc::new(TOKEN.into()),
        telemetry: Arc::new(coxswain::telemetry::Telemetry::new(
            std::time::Duration::from_secs(15),
        )),
    };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let listener = coxswain::tls::TlsListener { tcp, acceptor };
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    let url = format!("https://localhost:{port}");
    let c = Client::with_ca(&url, TOKEN, Some(&ca)).expect("client");
    let (status, resp) = c
        .call("GET", "/v1/history/web", None)
        .await
        .expect("TLS answer");
    assert_eq!(status, 200, "{resp}");
    // Trusting another CA, the client refuses to talk.
    let (other_ca, _, _) = issue_certificate(dir.path(), "other");
    let c = Client::with_ca(&url, TOKEN, Some(&other_ca)).expect("client");
    assert!(c.call("GET", "/v1/history/web", None).await.is_err());
    // Plain HTTP to the TLS port gets no answer.
    let c = Client::new(&format!("http://localhost:{port}"), TOKEN).expect("client");
    assert!(c.call("GET", "/healthz", None).await.is_err());
}

/// A test CA and a server certificate for `localhost` signed by it, made with openssl.
/// Returns (CA certificate, server certificate, server key) paths.
fn issue_certificate(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |x: &std::path::PathBuf| x.display().to_string();
    let (ca, ca_key, key) = (p("ca.pem"), p("ca.key"), p("key.pem"));
    let (csr, cert, ext) = (p("csr.pem"), p("cert.pem"), p("ext.cnf"));
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_args = [
        "-days",
        "1",
        "-subj",
        "/CN=coxswain test CA",
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca),
    ];
    openssl(&[&["req", "-x509"][..], &ec, &ca_args].concat());
    let leaf_args = [
        "-subj",
        "/CN=localhost",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ];
    openssl(&[&["req"][..], &ec, &leaf_args].concat());
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&cert),
    ]);
    (ca, cert, key)
}
