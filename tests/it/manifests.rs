//! Manifests: every example validates, and bad input is rejected with file:line:column
//! and a sentence saying how to fix it.

use coxswain::manifest::{self, ManifestError};
use std::path::PathBuf;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/examples")
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
    for entry in std::fs::read_dir(examples()).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let c = manifest::load_paths(std::slice::from_ref(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!c.fleets.is_empty());
        n += 1;
    }
    assert!(n >= 3, "examples found: {n}");
}

fn example_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(examples())
        .expect("examples dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_good_manifest_loads_with_defaults() {
    let c = manifest::load_str("good.yaml", GOOD).expect("valid");
    let f = &c.fleets[0];
    assert_eq!(f.name, "web");
    assert_eq!(f.scaling.warmup.as_secs(), 180);
    assert_eq!(c.controller.controller_id, "coxswain");
}

#[test]
fn unknown_fields_are_rejected_with_their_location() {
    let text = GOOD.replace("  max: 10\n", "  max: 10\n  maxx: 12\n");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("bad.yaml:10:3: "), "{}", p[0]);
    assert!(p[0].contains("unknown field `maxx`"), "{}", p[0]);
    assert!(p[0].contains("check the spelling"), "{}", p[0]);
}

#[test]
fn bad_values_say_where_and_how_to_fix() {
    let text = GOOD.replace("  min: 2\n", "  min: 20\n");
    let p = problems(&text);
    assert!(
        p[0].starts_with("bad.yaml:8:3: capacity.min (20) is above capacity.max (10)"),
        "{p:?}"
    );

    let text = GOOD.replace("target: 60", "target: -1");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains(":14:9: target -1 must be a positive number")),
        "{p:?}"
    );

    let text = GOOD.replace("scaling:\n", "scaling:\n  warmup: 5 minutes\n");
    let p = problems(&text);
    assert!(p[0].starts_with("bad.yaml:11:11: "), "{p:?}");
    assert!(p[0].contains("write e.g. 30s"), "{p:?}");

    let text = GOOD.replace("ami: ami-12345678", "ami: my-image");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains(":5:3: 'my-image' is not an AMI id")),
        "{p:?}"
    );
}

#[test]
fn a_bad_cron_and_a_missing_field_are_reported() {
    let text = format!("{GOOD}    - scheduled:\n        cron: \"0 25 * * *\"\n        duration: 1h\n        min: 3\n");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains("cron '0 25 * * *' does not parse")),
        "{p:?}"
    );
    let text = GOOD.replace("region: us-east-1\n", "");
    let p = problems(&text);
    assert!(p[0].contains("missing field `region`"), "{p:?}");
}

#[test]
fn reserved_tags_and_a_target_group_on_a_group_backed_fleet_are_rejected() {
    let text = GOOD.replace(
        "  instance_types: [m6i.large]\n",
        "  instance_types: [m6i.large]\n  tags: { \"coxswain:retiring\": now }\n",
    );
    let p = problems(&text);
    assert!(p.iter().any(|p| p.contains("prefix is reserved")), "{p:?}");
    let text = GOOD.replace(
        "region: us-east-1\n",
        "region: us-east-1\nauto_scaling_group: web-asg\ntarget_group_arn: arn:tg\n",
    );
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains("an Auto Scaling group registers its own instances")),
        "{p:?}"
    );
}

#[test]
fn duplicate_fleet_names_across_documents_are_rejected() {
    let text = format!("{GOOD}---\n{GOOD}");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains("bad.yaml:16:1: fleet name 'web' is already used")),
        "{p:?}"
    );
}

#[test]
fn validate_command_exits_nonzero_on_a_bad_file_and_zero_on_examples() {
    let bin = env!("CARGO_BIN_EXE_coxswain");
    let ok = std::process::Command::new(bin)
        .arg("validate")
        .args(example_files())
        .output()
        .expect("run coxswain");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
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
