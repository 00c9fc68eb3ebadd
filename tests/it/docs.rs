//! The manifest reference (`docs/manifest-reference.md`) and the how-to
//! (`docs/adding-a-fleet.md`) stay true to the code:
//!
//! - every ```yaml block in them loads with the real loader;
//! - every field the schema serializes for the reference's complete example is documented
//!   in the reference's prose as `` `field` ``, and the example itself uses it;
//! - every `coxswain ...` line in a ```sh block of the how-to parses with the real CLI,
//!   and every `--flag` the prose of either document mentions exists.

use clap::{CommandFactory, Parser};
use coxswain::cli::Cli;
use coxswain::manifest::{self, Config, MetricKind, NotifyEvent, OnConflict};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

const REFERENCE: &str = "docs/manifest-reference.md";
const HOWTO: &str = "docs/adding-a-fleet.md";

/// Maps whose keys are the user's data, not schema fields (CloudWatch dimensions,
/// instance tags, a price table's instance types): their own key is checked, the keys
/// inside are not.
const FREE_FORM: &[&str] = &["dimensions", "tags", "prices"];

fn read_doc(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (the docs test needs it): {e}",
            path.display()
        )
    })
}

/// One fenced code block: its info string, the line of its opening fence, its text.
struct Block {
    lang: String,
    line: usize,
    text: String,
}

/// The fenced blocks of a Markdown text, and the text outside them (the prose).
fn split_markdown(doc: &str, name: &str) -> (Vec<Block>, String) {
    let mut blocks = Vec::new();
    let mut prose = String::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        lang: info.trim().to_string(),
                        line: i + 1,
                        text: String::new(),
                    });
                } else {
                    prose.push_str(line);
                    prose.push('\n');
                }
            }
            Some(mut b) => {
                if trimmed.trim_end() == "```" {
                    blocks.push(b);
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                    open = Some(b);
                }
            }
        }
    }
    if let Some(b) = open {
        panic!("{name}:{}: code block is never closed", b.line);
    }
    (blocks, prose)
}

fn blocks_of(rel: &str, lang: &str) -> Vec<Block> {
    let (blocks, _) = split_markdown(&read_doc(rel), rel);
    blocks.into_iter().filter(|b| b.lang == lang).collect()
}

fn load_block(rel: &str, b: &Block) -> Config {
    let name = format!("{rel}:{}", b.line);
    manifest::load_str(&name, &b.text).unwrap_or_else(|e| {
        panic!(
            "the ```yaml block at {name} does not load:\n{e}\n--- block ---\n{}",
            b.text
        )
    })
}

#[test]
fn every_yaml_block_in_the_docs_loads() {
    let mut failures = Vec::new();
    for rel in [REFERENCE, HOWTO] {
        let blocks = blocks_of(rel, "yaml");
        assert!(!blocks.is_empty(), "{rel} has no ```yaml block");
        for b in &blocks {
            let name = format!("{rel}:{}", b.line);
            match manifest::load_str(&name, &b.text) {
                Ok(c) => assert!(!c.fleets.is_empty(), "{name}: no fleet loaded"),
                Err(e) => failures.push(format!("{name}:\n{e}\n--- block ---\n{}", b.text)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "yaml blocks that do not load:\n\n{}",
        failures.join("\n\n")
    );
}

/// Every mapping key under `v`, with one-key enums' variant names among them.
fn walk_keys(v: &Value, keys: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                keys.insert(k.clone());
                if !FREE_FORM.contains(&k.as_str()) {
                    walk_keys(child, keys);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk_keys(i, keys)),
        _ => {}
    }
}

/// The reference's complete example: its first ```yaml block, loaded.
fn reference_example() -> (Block, Config) {
    let block = blocks_of(REFERENCE, "yaml")
        .into_iter()
        .next()
        .expect("the reference starts with a ```yaml example");
    let config = load_block(REFERENCE, &block);
    (block, config)
}

/// The keys of the example as serialized from the parsed config.
fn serialized_keys(config: &Config) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let controller = serde_json::to_value(&config.controller).expect("controller serializes");
    walk_keys(&controller, &mut keys);
    for f in &config.fleets {
        let fleet = serde_json::to_value(f).expect("fleet serializes");
        walk_keys(&fleet, &mut keys);
    }
    keys
}

#[test]
fn the_reference_documents_every_field_of_its_example() {
    let (block, config) = reference_example();
    assert!(
        block.text.lines().any(|l| l.trim() == "kind: Controller"),
        "the reference's example has no `kind: Controller` document"
    );
    let keys = serialized_keys(&config);
    let (_, prose) = split_markdown(&read_doc(REFERENCE), REFERENCE);
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| !prose.contains(&format!("`{k}`")))
        .collect();
    println!("checked {} keys: {keys:?}", keys.len());
    assert!(
        undocumented.is_empty(),
        "fields of the schema missing from the prose of {REFERENCE} (write them as `field`): {undocumented:?}"
    );
    // The walk must have seen the whole schema, not a stub of it.
    for k in [
        "controller_id",
        "launch_template",
        "scale_in_stabilization",
        "canary_analysis",
        "pre_deploy",
        "weekend_factor",
    ] {
        assert!(keys.contains(k), "the walk did not reach `{k}`");
    }
}

#[test]
fn the_reference_example_uses_every_field() {
    let (block, config) = reference_example();
    // The keys as written in the example, read without the schema.
    let mut written = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&block.text) {
        let v = serde_yaml::Value::deserialize(doc).expect("the example is YAML");
        let v = serde_json::to_value(v).expect("the example converts to JSON");
        walk_keys(&v, &mut written);
    }
    let unused: Vec<String> = serialized_keys(&config)
        .difference(&written)
        .cloned()
        .collect();
    assert!(
        unused.is_empty(),
        "fields the complete example in {REFERENCE} never writes: {unused:?}"
    );
}

#[test]
fn the_reference_example_exercises_every_kind() {
    let (_, config) = reference_example();
    let first_key = |v: &Value| -> String {
        v.as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_else(|| panic!("not a one-key map: {v}"))
    };
    let mut policies = BTreeSet::new();
    let mut strategies = BTreeSet::new();
    let mut traffic = BTreeSet::new();
    for f in &config.fleets {
        let v = serde_json::to_value(f).expect("fleet serializes");
        for p in v["scaling"]["policies"].as_array().into_iter().flatten() {
            policies.insert(first_key(p));
        }
        strategies.insert(first_key(&v["deploy"]["strategy"]));
        if !v["simulation"].is_null() {
            traffic.insert(first_key(&v["simulation"]["traffic"]));
        }
    }
    let controller = serde_json::to_value(&config.controller).expect("controller serializes");
    let sinks: BTreeSet<String> = controller["notifications"]["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(first_key)
        .collect();
    let want = |what: &str, have: &BTreeSet<String>, need: &[&str]| {
        for n in need {
            assert!(
                have.contains(*n),
                "the example in {REFERENCE} has no {what} `{n}` (has: {have:?})"
            );
        }
    };
    want(
        "policy",
        &policies,
        &["target_tracking", "step", "scheduled", "predictive"],
    );
    want(
        "strategy",
        &strategies,
        &["rolling", "canary", "blue_green"],
    );
    want("sink", &sinks, &["slack", "opsgenie"]);
    want("traffic model", &traffic, &["synthetic", "trace"]);
}

/// Values of the enums written as plain strings are listed in the reference too.
#[test]
fn the_reference_documents_every_enum_value() {
    let (_, prose) = split_markdown(&read_doc(REFERENCE), REFERENCE);
    let mut values: Vec<Value> = NotifyEvent::ALL
        .iter()
        .map(|e| serde_json::to_value(e).expect("event serializes"))
        .collect();
    for v in [OnConflict::Queue, OnConflict::Supersede] {
        values.push(serde_json::to_value(v).expect("on_conflict serializes"));
    }
    for v in [MetricKind::PerInstance, MetricKind::Total] {
        values.push(serde_json::to_value(v).expect("metric kind serializes"));
    }
    let missing: Vec<String> = values
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{v} is not a string"))
                .to_string()
        })
        .filter(|s| !prose.contains(&format!("`{s}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "enum values missing from {REFERENCE}: {missing:?}"
    );
}

/// Split a shell line into words the way sh would for simple commands: quotes group,
/// `#` starts a comment, and `$VAR`, `${VAR}` and `$(...)` become a placeholder word.
fn shell_words(line: &str) -> Vec<String> {
    const PLACEHOLDER: &str = "placeholder";
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, '$') => {
                in_word = true;
                word.push_str(PLACEHOLDER);
                match chars.peek() {
                    Some('(') | Some('{') => {
                        let close = if chars.next() == Some('(') { ')' } else { '}' };
                        for d in chars.by_ref() {
                            if d == close {
                                break;
                            }
                        }
                    }
                    _ => {
                        while chars
                            .peek()
                            .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                        {
                            chars.next();
                        }
                    }
                }
            }
            (_, c) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    assert!(quote.is_none(), "unclosed quote in: {line}");
    if in_word {
        words.push(word);
    }
    words
}

/// The `coxswain ...` command lines of the ```sh blocks of a document (continuation
/// lines joined), with the line each starts on.
fn coxswain_lines(rel: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for b in blocks_of(rel, "sh") {
        let mut pending: Option<(usize, String)> = None;
        for (i, line) in b.text.lines().enumerate() {
            let (start, mut text) = pending.take().unwrap_or((b.line + 1 + i, String::new()));
            if let Some(head) = line.strip_suffix('\\') {
                text.push_str(head);
                text.push(' ');
                pending = Some((start, text));
                continue;
            }
            text.push_str(line);
            let mut words = shell_words(&text);
            // `sudo` and `VAR=value` prefixes are not the command.
            while words
                .first()
                .is_some_and(|w| w == "sudo" || (w.contains('=') && !w.starts_with('-')))
            {
                words.remove(0);
            }
            if words.first().map(String::as_str) == Some("coxswain") {
                out.push((start, words));
            }
        }
        assert!(pending.is_none(), "{rel}:{}: a line ends in \\", b.line);
    }
    out
}

#[test]
fn every_coxswain_command_in_the_how_to_parses() {
    let lines = coxswain_lines(HOWTO);
    let known: BTreeSet<String> = Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut used = BTreeSet::new();
    let mut failures = Vec::new();
    for (line, words) in &lines {
        let sub = words.get(1).cloned().unwrap_or_default();
        if !known.contains(&sub) {
            failures.push(format!(
                "{HOWTO}:{line}: `coxswain {sub}` is not a subcommand (known: {known:?})"
            ));
            continue;
        }
        used.insert(sub);
        if let Err(e) = Cli::try_parse_from(words) {
            failures.push(format!("{HOWTO}:{line}: {}\n{e}", words.join(" ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for sub in ["validate", "plan", "deploy", "status"] {
        assert!(
            used.contains(sub),
            "{HOWTO} shows no `coxswain {sub}` in a ```sh block"
        );
    }
}

/// Every long flag of the CLI: global ones and every subcommand's.
fn cli_flags() -> BTreeSet<String> {
    fn collect(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long() {
                out.insert(l.to_string());
            }
        }
        for s in cmd.get_subcommands() {
            collect(s, out);
        }
    }
    let mut out = BTreeSet::from(["help".to_string(), "version".to_string()]);
    collect(&Cli::command(), &mut out);
    out
}

#[test]
fn every_flag_the_docs_mention_exists() {
    let flags = cli_flags();
    let mut unknown = Vec::new();
    for rel in [REFERENCE, HOWTO] {
        let (_, prose) = split_markdown(&read_doc(rel), rel);
        for (i, line) in prose.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("--") {
                let after = &rest[at + 2..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                let is_flag = name.starts_with(|c: char| c.is_ascii_lowercase());
                if is_flag && !flags.contains(&name) {
                    unknown.push(format!("{rel}: line {} of the prose: --{name}", i + 1));
                }
                rest = &after[name.len()..];
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "flags that coxswain does not have:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn the_checks_can_fail() {
    // A field the reference does not document would be caught.
    let (_, prose) = split_markdown(&read_doc(REFERENCE), REFERENCE);
    assert!(!prose.contains("`no_such_field`"));
    // A bad command line would be caught.
    assert!(Cli::try_parse_from(["coxswain", "deploy", "web", "--no-such-flag"]).is_err());
    assert!(Cli::try_parse_from(["coxswain", "deploy", "web", "--env", "staging"]).is_err());
    // The shell splitter keeps quoted words together and drops comments.
    assert_eq!(
        shell_words(r#"coxswain deploy web --label "$GIT_SHA x" --wait  # note"#),
        [
            "coxswain",
            "deploy",
            "web",
            "--label",
            "placeholder x",
            "--wait"
        ]
    );
    // An unknown manifest field would be caught by the loader.
    let bad = "name: web\nenvironment: production\nregion: us-east-1\nlaunch: { ami: ami-12345678, instance_types: [m6i.large] }\ncapacity: { min: 1, max: 2, maxx: 3 }\nscaling: { policies: [ { scheduled: { cron: \"0 8 * * MON\", duration: 1h, min: 1 } } ] }\n";
    assert!(manifest::load_str("bad.yaml", bad).is_err());
}

/// The paths named in backticks in a markdown table's first column (`src/cli/`, ...).
fn table_paths(doc: &str, heading: &str) -> Vec<String> {
    let section = doc
        .split_once(heading)
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .unwrap_or_else(|| panic!("no {heading:?} section"));
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The README's layout table names only paths that exist, and names every top-level entry
/// of `src/` (a module nobody can find is the problem the table is for).
#[test]
fn the_readme_layout_matches_the_tree() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let paths = table_paths(&read_doc("README.md"), "## Layout");
    assert!(paths.len() > 10, "{paths:?}");
    for p in &paths {
        assert!(
            root.join(p).exists(),
            "README's layout names {p}, which does not exist"
        );
    }
    // A module's directory of submodules goes with its file (`src/notify.rs`, `src/notify/`).
    let listed = |entry: &str| {
        let as_file = format!("{}.rs", entry.trim_end_matches('/'));
        paths.iter().any(|p| p == entry || *p == as_file)
    };
    let mut missing = Vec::new();
    for e in std::fs::read_dir(root.join("src")).expect("src/") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().to_string();
        let entry = if e.path().is_dir() {
            format!("src/{name}/")
        } else {
            format!("src/{name}")
        };
        // Small files with one obvious job need no row of their own.
        if [
            "src/lib.rs",
            "src/clock.rs",
            "src/demo.rs",
            "src/bench.rs",
            "src/client.rs",
            "src/tls.rs",
            "src/logging.rs",
        ]
        .contains(&entry.as_str())
        {
            continue;
        }
        if !listed(&entry) {
            missing.push(entry);
        }
    }
    assert!(
        missing.is_empty(),
        "not in README's layout table: {missing:?}"
    );
}

/// docs/architecture.md's "where each decision lives" table names files that exist and
/// functions that are defined in them.
#[test]
fn the_architecture_page_names_real_homes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc = read_doc("docs/architecture.md");
    let section = doc
        .split_once("## Where each decision lives")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("the table's section");
    let mut rows = 0;
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let Some(home) = line.split('|').nth(2) else {
            continue;
        };
        let names: Vec<&str> = home.split('`').skip(1).step_by(2).collect();
        let Some((path, fns)) = names.split_first() else {
            continue;
        };
        if !path.starts_with("src/") {
            continue;
        }
        rows += 1;
        let file = root.join(path);
        assert!(
            file.exists(),
            "architecture.md names {path}, which does not exist"
        );
        let text = if file.is_dir() {
            std::fs::read_dir(&file)
                .expect("a directory")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rs"))
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .collect::<String>()
        } else {
            read_doc(path)
        };
        for f in fns {
            assert!(
                text.contains(&format!("fn {f}(")) || text.contains(&format!("fn {f}<")),
                "architecture.md says {f} is in {path}, but it is not defined there"
            );
        }
    }
    assert!(rows >= 8, "{rows} rows read");
}
