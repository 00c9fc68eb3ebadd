//! The supply-chain check (`scripts/deny`, cargo-deny with deny.toml) really checks:
//! an advisory planted in a local advisory database against a crate in Cargo.lock fails
//! it, and the same database without a matching advisory passes. The real RustSec
//! database is a git repository these CI machines cannot reach; this shows the advisory
//! path works whenever a database is there (COXSWAIN_ADVISORY_DB).

use crate::common;

use std::path::Path;
use std::process::Command;

/// cargo-deny keeps a database fetched from the default URL in this directory name.
const DB_DIR: &str = "advisory-db-3157b0e258782691";

fn plant(root: &Path, krate: &str) {
    let db = root.join(DB_DIR);
    let dir = db.join("crates").join(krate);
    std::fs::create_dir_all(&dir).expect("create advisory dir");
    let advisory = format!(
        "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"{krate}\"\ndate = \"2099-01-01\"\n\
         title = \"Planted by coxswain's deny test\"\ndescription = \"Not a real advisory.\"\n\n\
         [versions]\npatched = [\">= 999.0.0\"]\n```\n\n# Planted\n\nNot a real advisory.\n"
    );
    std::fs::write(dir.join("RUSTSEC-2099-0001.md"), advisory).expect("write advisory");
    for args in [
        vec!["init", "-q"],
        vec!["add", "."],
        vec![
            "-c",
            "user.email=test@coxswain.invalid",
            "-c",
            "user.name=test",
            "commit",
            "-qm",
            "planted advisory",
        ],
    ] {
        let st = Command::new("git")
            .args(&args)
            .current_dir(&db)
            .status()
            .expect("run git");
        assert!(st.success(), "git {args:?} failed");
    }
}

fn deny(db: &Path) -> (bool, String) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/deny"))
        .env("COXSWAIN_VENV", common::venv())
        .env("COXSWAIN_ADVISORY_DB", db)
        .output()
        .expect("run scripts/deny");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn deny_fails_on_an_advisory_against_a_locked_crate_and_passes_without_one() {
    let venv_deny = common::venv().join("bin/cargo-deny");
    assert!(
        venv_deny.exists(),
        "cargo-deny is not installed at {}: run scripts/test (it installs tests/tools/requirements.txt)",
        venv_deny.display()
    );

    // ryu is in Cargo.lock (serde_json depends on it).
    let hit = tempfile::tempdir().expect("tempdir");
    plant(hit.path(), "ryu");
    let (ok, text) = deny(hit.path());
    assert!(!ok, "an advisory against ryu must fail the check:\n{text}");
    assert!(text.contains("RUSTSEC-2099-0001"), "{text}");
    assert!(text.contains("licenses ok"), "{text}");

    // The same database with the advisory on a crate we do not use.
    let miss = tempfile::tempdir().expect("tempdir");
    plant(miss.path(), "coxswain-no-such-crate");
    let (ok, text) = deny(miss.path());
    assert!(ok, "no advisory applies, the check must pass:\n{text}");
    assert!(!text.contains("NOT CHECKED"), "{text}");
}
