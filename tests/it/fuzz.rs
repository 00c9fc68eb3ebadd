//! Bad input, generated: mutated manifests, random traces and durations, and random API
//! requests give errors, never panics, and never a 5xx.

use crate::common;

use coxswain::cloud::traffic::Trace;
use coxswain::manifest;
use proptest::prelude::*;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EXAMPLES: [&str; 5] = [
    include_str!("../../examples/sim-demo.yaml"),
    include_str!("../../manifests/web.yaml"),
    include_str!("../../manifests/api.yaml"),
    include_str!("../../manifests/web-staging.yaml"),
    include_str!("../../examples/simulate.yaml"),
];

/// Pieces that make YAML interesting: structure, numbers at the edges, odd scalars.
const PIECES: [&str; 24] = [
    ":",
    "- ",
    "\n",
    "  ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "#",
    "&a",
    "*a",
    "!!str ",
    "---\n",
    "-1",
    "0",
    "4294967296",
    "1e309",
    "NaN",
    "~",
    "0x10",
    "99999999999999999999d",
    "\u{0}",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(f64, usize),
    Insert(f64, String),
    Duplicate(f64, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0.0..1.0f64, 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (0.0..1.0f64, prop::sample::select(PIECES.to_vec()))
            .prop_map(|(at, p)| Edit::Insert(at, p.to_string())),
        (0.0..1.0f64, "[ -~]{0,12}").prop_map(|(at, s)| Edit::Insert(at, s)),
        (0.0..1.0f64, 1usize..200).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let pos = |at: f64, len: usize| ((at * len as f64) as usize).min(len);
        match e {
            Edit::Delete(at, n) => {
                let p = pos(*at, chars.len());
                let end = (p + n).min(chars.len());
                chars.drain(p..end);
            }
            Edit::Insert(at, s) => {
                let p = pos(*at, chars.len());
                for (i, c) in s.chars().enumerate() {
                    chars.insert(p + i, c);
                }
            }
            Edit::Duplicate(at, n) => {
                let p = pos(*at, chars.len());
                let end = (p + n).min(chars.len());
                let copy: Vec<char> = chars[p..end].to_vec();
                for (i, c) in copy.into_iter().enumerate() {
                    chars.insert(end + i, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A mutated manifest loads or gives an error with a place in the file; whatever loads
    /// is valid (validation ran on it).
    #[test]
    fn mutated_manifests_give_errors_not_panics(
        which in 0usize..EXAMPLES.len(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let text = apply(EXAMPLES[which], &edits);
        match manifest::load_str("fuzz.yaml", &text) {
            Ok(config) => {
                for f in &config.fleets {
                    prop_assert!(f.capacity.min <= f.capacity.max, "{}", text);
                    prop_assert!(!f.name.is_empty());
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_text_is_never_a_panic(text in "(?s).{0,400}") {
        let _ = manifest::load_str("fuzz.yaml", &text);
        let _ = Trace::parse(Path::new("fuzz.csv"), &text);
        let _ = manifest::parse_duration(&text);
    }

    #[test]
    fn traces_with_odd_rows_give_errors_with_their_line(
        rows in prop::collection::vec(("[0-9T:\\- ]{0,22}", "[-0-9.eE+naNinf]{0,12}"), 1..30),
    ) {
        let mut text = String::from("timestamp,requests\n");
        for (t, n) in &rows {
            text.push_str(&format!("{t},{n}\n"));
        }
        match Trace::parse(Path::new("t.csv"), &text) {
            Ok(t) => prop_assert!(t.per_minute.iter().all(|v| v.is_finite() && *v >= 0.0)),
            Err(e) => prop_assert!(e.to_string().starts_with("t.csv:"), "{}", e),
        }
    }
}

const TOKEN: &str = "fuzz-token-0123456789abcdef";

/// The API on 127.0.0.1 over the simulated demo, on its own runtime. Returns the address.
fn start_api(rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    rt.block_on(common::demo_api(TOKEN))
}

/// One raw HTTP/1.1 request; the status code of the answer (0 if there was none).
async fn raw(addr: std::net::SocketAddr, method: &str, path: &str, auth: bool, body: &[u8]) -> u16 {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if auth {
        req.push_str(&format!("Authorization: Bearer {TOKEN}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(20)]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        prop::sample::select(vec![
            "web",
            "web-staging",
            "api",
            "staging",
            "production",
            "13",
            "",
            "../../etc",
            "web-server:13",
            "ami-0abc"
        ])
        .prop_map(|s| serde_json::Value::String(s.into())),
        "[ -~]{0,30}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop::sample::select(vec![
            "fleet", "env", "build", "label", "by", "to", "reason", "strategy", "timeout", "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| serde_json::Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

#[test]
fn random_api_requests_get_answers_never_a_server_error() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = start_api(&rt);
    let paths = [
        "/v1/deploys",
        "/v1/approvals",
        "/v1/rollbacks",
        "/v1/rollouts/1/abort",
        "/v1/rollouts/1",
        "/v1/rollouts/18446744073709551616",
        "/v1/history/web",
        "/v1/history/%00",
        "/healthz",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        prop::sample::select(paths.to_vec()),
        prop::sample::select(vec!["POST", "GET", "PUT", "DELETE"]),
        any::<bool>(),
        prop_oneof![
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            prop::collection::vec(any::<u8>(), 0..200),
        ],
    );
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let result = runner.run(&strategy, |(path, method, auth, body)| {
        let code = rt.block_on(raw(addr, method, path, auth, &body));
        if let Ok(mut m) = seen.lock() {
            *m.entry(code).or_insert(0u32) += 1;
        }
        prop_assert!(
            (200..500).contains(&code),
            "{method} {path} {} → {code}",
            String::from_utf8_lossy(&body)
        );
        let changes_state = matches!(
            path,
            "/v1/deploys" | "/v1/approvals" | "/v1/rollbacks" | "/v1/rollouts/1/abort"
        );
        if !auth && method == "POST" && changes_state {
            prop_assert_eq!(code, 401, "a state-changing call without the token");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still serving after all that.
    let seen = seen.into_inner().unwrap_or_default();
    assert_eq!(
        rt.block_on(raw(addr, "GET", "/healthz", false, b"")),
        200,
        "{seen:?}"
    );
    assert!(
        seen.len() >= 3,
        "the requests reached several answers: {seen:?}"
    );
}
