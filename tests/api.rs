//! The daemon's API: bearer token in constant time, size limits, clear 4xx on bad input.

use coxswain::api::{self, ApiState, Command};
use coxswain::client::Client;
use coxswain::clock::{Clock, VirtualClock};
use coxswain::cloud::sim::SimCloud;
use coxswain::controller::Controller;
use coxswain::manifest;
use serde_json::json;
use std::sync::Arc;

const TOKEN: &str = "s3cret-token-for-tests-0123456789";

/// An API on 127.0.0.1 backed by a controller on the simulated demo. Returns its address.
async fn start() -> String {
    let config = manifest::load_str("demo", coxswain::demo::MANIFEST).expect("demo");
    let clock = Arc::new(VirtualClock::new(coxswain::demo::start()));
    let sim = Arc::new(SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let mut controller = Controller::new(sim, clock.clone(), config, false);
    let store = controller.store().expect("store").clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            let now = clock.now();
            match cmd {
                Command::Deploy(r, reply) => drop(reply.send(controller.request_deploy(&r, now))),
                Command::Approve(r, reply) => {
                    drop(reply.send(controller.request_approval(&r, now)))
                }
                Command::Rollback(r, reply) => {
                    drop(reply.send(controller.request_rollback(&r, now)))
                }
                Command::Abort(id, why, reply) => {
                    drop(reply.send(controller.request_abort(id, &why)))
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = ApiState {
        commands: tx,
        store,
        token: Arc::new(TOKEN.into()),
    };
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    format!("http://{addr}")
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
