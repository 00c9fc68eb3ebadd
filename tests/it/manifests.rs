//! Manifests: every example validates, and bad input is rejected with file:line:column
//! and a sentence saying how to fix it.

use coxswain::manifest::{self, ManifestError};
use std::path::PathBuf;

/// The repository's manifests: `manifests/` (one set for AWS) and `examples/` (sets of
/// their own).
fn example_dirs() -> [PathBuf; 2] {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [root.join("manifests"), root.join("examples")]
}

fn problems(text: &str) -> Vec<String> {
    match manifest::load_str("bad.yaml", text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ManifestError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const GOOD: &str = "name: web
environment: production
region: us-east-1
launch:
  ami: ami-12345678
  instance_types: [m6i.large]
capacity:
  min: 2
  max: 10
scaling:
  policies:
    - target_tracking:
        metric: { namespace: AWS/EC2, name: CPUUtilization }
        target: 60
";

#[test]
fn every_example_manifest_is_valid() {
    let mut n = 0;
    for path in example_files() {
        let c = manifest::load_paths(std::slice::from_ref(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!c.fleets.is_empty());
        n += 1;
    }
    assert!(n >= 5, "examples found: {n}");
}

fn example_files() -> Vec<PathBuf> {
    let v = manifest::load::manifest_files(&example_dirs()).expect("the example folders");
    assert!(v
        .iter()
        .all(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml")));
    v
}

#[test]
fn the_repositorys_manifests_validate_as_one_set_subfolders_and_empty_files_as_run_reads_them() {
    let bin = env!("CARGO_BIN_EXE_coxswain");
    let validate = |args: &[&std::path::Path]| {
        let out = std::process::Command::new(bin)
            .arg("validate")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run coxswain");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    // The repository's own: `coxswain validate` (default manifests/) and the folder named.
    let (code, out) = validate(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("as one set"), "{out}");
    let (code, out) = validate(&[std::path::Path::new("manifests/")]);
    assert_eq!(code, Some(0), "{out}");

    // A subfolder is read, by validate and by the loader run uses: its fleet clashes with
    // the top folder's, and both say so.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("web.yaml"), GOOD).expect("write");
    std::fs::create_dir(dir.path().join("team-b")).expect("mkdir");
    std::fs::write(dir.path().join("team-b/web.yaml"), GOOD).expect("write");
    let (code, out) = validate(&[dir.path()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("team-b/web.yaml"), "{out}");
    assert!(out.contains("fleet name 'web' is already used"), "{out}");
    let run = manifest::load_paths(&[dir.path().to_path_buf()]);
    assert!(
        matches!(&run, Err(ManifestError::Invalid(p)) if p.iter().any(|p| p.to_string().contains("already used"))),
        "{run:?}"
    );

    // An empty file beside a fleet: fine for both. Only empty files: refused by both.
    std::fs::remove_file(dir.path().join("team-b/web.yaml")).expect("rm");
    std::fs::write(dir.path().join("team-b/empty.yaml"), "").expect("write");
    let (code, out) = validate(&[dir.path()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(no fleets)"), "{out}");
    assert!(manifest::load_paths(&[dir.path().to_path_buf()]).is_ok());
    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::write(empty.path().join("empty.yaml"), "").expect("write");
    let (code, out) = validate(&[empty.path()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(matches!(
        manifest::load_paths(&[empty.path().to_path_buf()]),
        Err(ManifestError::Empty(_))
    ));
    let run = std::process::Command::new(bin)
        .args([
            "run", "--cloud", "sim", "--listen", "none", "--passes", "1", "-m",
        ])
        .arg(empty.path())
        .output()
        .expect("run coxswain");
    assert!(!run.status.success());
}

#[test]
fn validate_command_exits_nonzero_on_a_bad_file_and_zero_on_examples() {
    let bin = env!("CARGO_BIN_EXE_coxswain");
    // manifests/ is one set; each file of examples/ is a set of its own.
    let [manifests, examples] = example_dirs();
    let mut sets = vec![manifests];
    sets.extend(manifest::load::manifest_files(&[examples]).expect("examples"));
    for set in sets {
        let ok = std::process::Command::new(bin)
            .arg("validate")
            .arg(&set)
            .output()
            .expect("run coxswain");
        assert!(
            ok.status.success(),
            "{}: {}",
            set.display(),
            String::from_utf8_lossy(&ok.stdout)
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, GOOD.replace("max: 10", "max: ten")).expect("write");
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(&bad)
        .output()
        .expect("run coxswain");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bad.yaml:9:8: "), "{stdout}");

    // A directory is also checked as one set, as the daemon loads it.
    std::fs::write(&bad, GOOD).expect("write");
    std::fs::write(dir.path().join("again.yaml"), GOOD).expect("write");
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("run coxswain");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fleet name 'web' is already used"));
}

#[test]
fn a_bad_freeze_cron_or_an_empty_canary_is_rejected() {
    let text = format!("{GOOD}deploy:\n  freeze: [{{ cron: \"not a cron\", duration: 1h }}]\n  strategy:\n    canary: {{ steps: [] }}\n");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains("freeze cron 'not a cron' does not parse")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.contains("a canary needs at least one step")),
        "{p:?}"
    );
}

#[test]
fn notification_sinks_are_checked_at_load() {
    let with =
        |sinks: &str| format!("kind: Controller\nnotifications:\n  sinks:\n{sinks}---\n{GOOD}");
    let ok = manifest::load_str(
        "ok.yaml",
        &with("    - slack: { url_env: SLACK_URL, events: [rollout_rolled_back, cost_cap] }\n    - opsgenie: { api_key_env: OG_KEY }\n"),
    )
    .expect("valid sinks");
    assert_eq!(ok.controller.notifications.sinks.len(), 2);
    assert_eq!(ok.controller.notifications.scale_threshold, 5);
    let p = problems(&with(
        "    - slack: { url: \"http://hooks.example.com/x\" }\n",
    ));
    assert!(p.iter().any(|p| p.contains("use https://")), "{p:?}");
    let p = problems(&with(
        "    - slack: { url: \"https://hooks.example.com/x\", url_env: X }\n",
    ));
    assert!(p.iter().any(|p| p.contains("exactly one of")), "{p:?}");
    let p = problems(&with("    - teams: { url: \"https://x\" }\n"));
    assert!(
        p.iter().any(|p| p.contains("`slack` or `opsgenie`")),
        "{p:?}"
    );
    let p = problems(&with("    - slack: { url_env: X, events: [deploys] }\n"));
    assert!(p.iter().any(|p| p.contains("rollout_started")), "{p:?}");
}

/// What the loader reads, written back out, reads back the same: every example manifest
/// and the reference's example (Serialize and Deserialize agree across the schema; the
/// API and `plan --output json` show specs this way).
#[test]
fn manifests_round_trip_through_serialize() {
    let reference = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/manifest-reference.md"),
    )
    .expect("docs/manifest-reference.md");
    let example = reference
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the reference's example");
    let mut texts = vec![("reference".to_string(), example.to_string())];
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("example");
        texts.push((path.display().to_string(), text));
    }
    for (name, text) in texts {
        let a = manifest::load_str(&name, &text).expect("loads");
        // Written as JSON (which is YAML): one-key enums come out as one-key maps, the
        // way people write them (serde_yaml would write `!tags`).
        let mut out = serde_json::to_string_pretty(&a.controller).expect("controller");
        for f in &a.fleets {
            out.push_str("\n---\n");
            out.push_str(&serde_json::to_string_pretty(f).expect("fleet"));
        }
        let b = manifest::load_str("written.yaml", &out)
            .unwrap_or_else(|e| panic!("{name} written back does not load: {e}\n{out}"));
        assert_eq!(a.controller, b.controller, "{name}");
        assert_eq!(a.fleets, b.fleets, "{name}");
    }
}
