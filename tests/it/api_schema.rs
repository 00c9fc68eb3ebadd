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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // schemathesis's own report (its failures with a curl to reproduce each) goes last, so a
    // CI log cut in the middle still shows why.
    let report = stdout
        .find("=== FAILURES ===")
        .map_or(stdout.as_ref(), |at| &stdout[at..]);
    assert!(
        out.status.success(),
        "schemathesis failed.\n--- the script and the daemon's log:\n{stderr}\n--- schemathesis:\n{report}"
    );
    // It really ran the operations (not an empty selection).
    assert!(stdout.contains("Selected: 14/14"), "{stdout}");
    assert!(stdout.contains("No issues found"), "{stdout}");
}
