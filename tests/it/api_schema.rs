//! The daemon's HTTP API against its own OpenAPI document, by schemathesis (pinned in
//! tests/tools/requirements.txt): the real daemon on the simulated cloud, on 127.0.0.1,
//! every documented operation fuzzed and walked statefully; no 5xx, every response as the
//! document says (status, content type, headers, body schema), bad input refused, good
//! input accepted, and no state-changing call without the token. schemathesis missing is
//! a failure, never a skip: `scripts/test` installs it into the venv.

use crate::common;
use std::process::Command;

#[test]
fn the_api_matches_its_openapi_document_under_schemathesis() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/tests/tools/schemathesis.sh"))
        .arg(env!("CARGO_BIN_EXE_coxswain"))
        .arg(common::venv())
        .output()
        .expect("run tests/tools/schemathesis.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    // It really ran the operations (not an empty selection).
    assert!(text.contains("Selected: 14/14"), "{text}");
    assert!(text.contains("No issues found"), "{text}");
}
