//! The files that run coxswain itself (deploy/), checked against the code.

use std::collections::BTreeSet;
use std::path::Path;

fn policy() -> serde_json::Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/iam-policy.json"),
    )
    .expect("deploy/iam-policy.json exists");
    serde_json::from_str(&text).expect("the IAM policy is JSON")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().flat_map(strings).collect(),
        _ => vec![],
    }
}

/// `describe_instances` → `DescribeInstances`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Every AWS operation the code calls, as IAM actions, read from the SDK calls in
/// src/cloud/aws/ (`client.describe_instances()` and the like).
fn actions_the_code_calls() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cloud/aws");
    let services = [
        ("ec2.rs", "ec2"),
        ("asg.rs", "autoscaling"),
        ("cloudwatch.rs", "cloudwatch"),
        ("elb.rs", "elasticloadbalancing"),
        ("leases.rs", "dynamodb"),
        ("sqs.rs", "sqs"),
    ];
    let mut out = BTreeSet::new();
    for (file, service) in services {
        let text = std::fs::read_to_string(dir.join(file)).expect("source file");
        // Builder calls look like `.describe_instances()` right after a client or a line
        // break; the operation names are the verbs AWS uses.
        for line in text.lines() {
            // Every `.verb_…()` in the line (a chain may be on one line).
            for (at, _) in line.match_indices('.') {
                let t = &line[at..];
                let t = t.find(')').map_or(t, |end| &t[..=end]);
                for verb in [
                    "describe_",
                    "run_",
                    "terminate_",
                    "create_",
                    "set_",
                    "get_",
                    "register_",
                    "deregister_",
                    "modify_",
                    "update_",
                    "put_",
                    "scan",
                    "transact_",
                    "receive_",
                    "delete_",
                ] {
                    let Some(rest) = t.strip_prefix('.').filter(|r| r.starts_with(verb)) else {
                        continue;
                    };
                    if let Some(name) = rest.strip_suffix("()") {
                        if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                            out.insert(format!("{service}:{}", pascal(name)));
                        }
                    }
                }
            }
        }
    }
    // TransactWriteItems is not an IAM action: IAM authorizes each item of a transaction
    // by its own action. Ours are a ConditionCheck and a Put (lease.rs, fenced_put).
    if out.remove("dynamodb:TransactWriteItems") {
        out.insert("dynamodb:ConditionCheckItem".into());
        out.insert("dynamodb:PutItem".into());
    }
    out
}

#[test]
fn the_iam_policy_allows_every_call_the_code_makes_and_no_wildcard_action() {
    let p = policy();
    let statements = p["Statement"].as_array().expect("statements");
    let mut allowed = BTreeSet::new();
    for s in statements {
        assert_eq!(s["Effect"], "Allow", "{s}");
        assert!(s.get("NotAction").is_none(), "no NotAction: {s}");
        for a in strings(&s["Action"]) {
            assert!(!a.contains('*'), "wildcard action {a}");
            allowed.insert(a);
        }
    }
    let called = actions_the_code_calls();
    assert!(
        called.len() >= 10,
        "the scan found too few calls to be right: {called:?}"
    );
    for c in &called {
        // Creating tables is `coxswain init`, run once by an administrator, not the daemon.
        if c == "dynamodb:CreateTable" {
            continue;
        }
        assert!(
            allowed.contains(c),
            "the code calls {c}, the policy does not allow it"
        );
    }
    assert!(
        called.contains("dynamodb:ConditionCheckItem"),
        "the scan sees the lease calls (the fenced transaction): {called:?}"
    );
    assert!(
        !allowed.contains("dynamodb:TransactWriteItems"),
        "TransactWriteItems is not an IAM action; allow the item actions instead"
    );
}

#[test]
fn terminate_tag_and_resize_are_allowed_only_on_resources_tagged_as_coxswains() {
    let p = policy();
    let statements = p["Statement"].as_array().expect("statements");
    let changing = [
        "ec2:TerminateInstances",
        "ec2:CreateTags",
        "autoscaling:SetDesiredCapacity",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:ModifyListener",
    ];
    for s in statements {
        let actions = strings(&s["Action"]);
        if !actions.iter().any(|a| changing.contains(&a.as_str())) {
            continue;
        }
        let resources = strings(&s["Resource"]);
        assert!(
            !resources.iter().any(|r| r == "*"),
            "a state-changing statement on every resource: {s}"
        );
        let cond = s["Condition"].to_string();
        // Tags at launch: only inside the launch calls, which carry the ownership tag.
        let at_launch = strings(&s["Condition"]["StringEquals"]["ec2:CreateAction"]);
        let only_at_launch = !at_launch.is_empty()
            && at_launch
                .iter()
                .all(|a| a == "RunInstances" || a == "CreateFleet");
        assert!(
            cond.contains("ResourceTag/coxswain:controller") || only_at_launch,
            "not limited to coxswain's own resources: {s}"
        );
    }
    // Instances can only be launched already carrying the ownership tag, by either call.
    for call in ["ec2:RunInstances", "ec2:CreateFleet"] {
        let launch = statements
            .iter()
            .find(|s| {
                strings(&s["Action"]).contains(&call.to_string())
                    && strings(&s["Resource"])
                        .iter()
                        .any(|r| r.contains(":instance/"))
            })
            .unwrap_or_else(|| panic!("a {call} statement for instances"));
        assert!(
            launch["Condition"]
                .to_string()
                .contains("aws:RequestTag/coxswain:controller"),
            "{launch}"
        );
    }
    // Service-linked roles: only EC2 Spot's and EC2 Fleet's.
    for s in statements {
        if strings(&s["Action"]).contains(&"iam:CreateServiceLinkedRole".to_string()) {
            let services = strings(&s["Condition"]["StringEquals"]["iam:AWSServiceName"]);
            assert!(
                !services.is_empty()
                    && services
                        .iter()
                        .all(|n| n == "spot.amazonaws.com" || n == "ec2fleet.amazonaws.com"),
                "{s}"
            );
            assert!(
                strings(&s["Resource"])
                    .iter()
                    .all(|r| r.contains("aws-service-role/")),
                "{s}"
            );
        }
    }
}

#[test]
fn the_cloudformation_tables_match_what_coxswain_init_creates() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/replica-tables.yaml"),
    )
    .expect("deploy/replica-tables.yaml exists");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let (leases, state) = coxswain::lease::table_names("PREFIX");
    for (resource, name, key) in [
        ("LeaseTable", leases, "fleet"),
        ("StateTable", state, "key"),
    ] {
        let props = &doc["Resources"][resource]["Properties"];
        let table_name = serde_yaml::to_string(&props["TableName"]).expect("name");
        let want = name.replace("PREFIX", "${TablePrefix}");
        assert!(
            table_name.contains(&want),
            "{resource}: {table_name} vs {want}"
        );
        assert_eq!(props["KeySchema"][0]["AttributeName"].as_str(), Some(key));
        assert_eq!(props["KeySchema"][0]["KeyType"].as_str(), Some("HASH"));
        assert_eq!(
            props["AttributeDefinitions"][0]["AttributeType"].as_str(),
            Some("S")
        );
        assert_eq!(props["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    }
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn venv_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("COXSWAIN_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{name} is not installed at {}: run scripts/test (it installs tests/tools/requirements.txt)",
        tool.display()
    );
    tool
}

/// The command line a deploy file starts coxswain with must be one the CLI accepts.
fn assert_cli_accepts(args: &[&str]) {
    use clap::Parser;
    if let Err(e) = coxswain::cli::Cli::try_parse_from(args) {
        panic!("coxswain does not accept {args:?}: {e}");
    }
}

#[test]
fn cfn_lint_passes_on_every_template() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let templates: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(templates.len() >= 2, "{templates:?}");
    let out = std::process::Command::new(venv_tool("cfn-lint"))
        .args(&templates)
        .output()
        .expect("run cfn-lint");
    assert!(
        out.status.success(),
        "cfn-lint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_starts_a_command_line_coxswain_accepts() {
    let unit = repo_file("deploy/coxswain.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/coxswain");
    assert_cli_accepts(&args);
    for needed in [
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "StateDirectory=coxswain",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // systemd-analyze checks that ExecStart's binary exists: point it at the one cargo
    // built, and verify the rest of the unit exactly as shipped.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coxswain.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/coxswain", env!("CARGO_BIN_EXE_coxswain")),
    )
    .expect("write unit");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd) must be installed");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_cloudformation_stack_carries_the_same_policy_tables_and_unit_as_deploy() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("deploy/coxswain.yaml")).expect("YAML");
    // The role's policy is deploy/iam-policy.json; only the tables' and the queue's ARNs
    // are the stack's.
    let role_policies = doc["Resources"]["Role"]["Properties"]["Policies"]
        .as_sequence()
        .expect("policies");
    let ours = role_policies
        .iter()
        .find(|p| p["PolicyName"] == "coxswain")
        .expect("the coxswain policy");
    let stack: Vec<serde_json::Value> = ours["PolicyDocument"]["Statement"]
        .as_sequence()
        .expect("statements")
        .iter()
        .map(|s| serde_json::to_value(s).expect("json"))
        .collect();
    let file = policy();
    let file = file["Statement"].as_array().expect("statements");
    assert_eq!(stack.len(), file.len());
    for (a, b) in stack.iter().zip(file) {
        assert_eq!(a["Sid"], b["Sid"]);
        assert_eq!(a["Action"], b["Action"], "{}", a["Sid"]);
        assert_eq!(a["Condition"], b["Condition"], "{}", a["Sid"]);
        if a["Sid"] != "ReplicaLeasesAndSharedState"
            && a["Sid"] != "ReadEc2NoticesFromTheInterruptionQueue"
        {
            assert_eq!(a["Resource"], b["Resource"], "{}", a["Sid"]);
        }
    }
    // The tables are deploy/replica-tables.yaml's.
    let tables: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("deploy/replica-tables.yaml")).expect("YAML");
    for t in ["LeaseTable", "StateTable"] {
        assert_eq!(
            doc["Resources"][t]["Properties"], tables["Resources"][t]["Properties"],
            "{t}"
        );
    }
    // The instance installs deploy/coxswain.service verbatim.
    let user_data = serde_yaml::to_string(&doc["Resources"]["Instance"]["Properties"]["UserData"])
        .expect("user data");
    let user_data: serde_yaml::Value = serde_yaml::from_str(&user_data).expect("yaml");
    let script = match &user_data["Fn::Base64"] {
        serde_yaml::Value::Tagged(t) => t.value.as_str().unwrap_or_default().to_string(),
        other => other.as_str().unwrap_or_default().to_string(),
    };
    let unit = repo_file("deploy/coxswain.service");
    assert!(
        script.contains(&unit),
        "UserData does not embed deploy/coxswain.service as it is"
    );
    // And sets what the unit reads: a region, the replica id and the tables' prefix.
    for var in [
        "AWS_REGION=",
        "COXSWAIN_REPLICA_ID=",
        "COXSWAIN_REPLICA_PREFIX=",
    ] {
        assert!(script.contains(var), "UserData sets no {var}");
    }
}

#[test]
fn the_container_recipe_builds_with_our_toolchain_and_runs_a_command_line_coxswain_accepts() {
    let recipe = repo_file("deploy/Dockerfile");
    let cargo = repo_file("Cargo.toml");
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("rust-version in Cargo.toml");
    let image = recipe
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("a rust build stage");
    let version = image.split(['-', ' ']).next().unwrap_or_default();
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    assert!(
        parse(version) >= parse(&msrv),
        "the build image (rust {version}) is older than rust-version {msrv}"
    );
    assert!(recipe.contains("--locked"), "builds from Cargo.lock");
    // Every file the build reads outside src/ (include_str! of ../...) is copied in.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut outside = Vec::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for part in text.split("include_str!(\"").skip(1) {
                let rel = part.split('"').next().unwrap_or_default();
                let target = path.parent().expect("parent").join(rel);
                if let Ok(t) = target.canonicalize() {
                    if let Ok(r) = t.strip_prefix(root.canonicalize().expect("root")) {
                        let top = r.components().next().expect("a path");
                        let top = top.as_os_str().to_string_lossy().to_string();
                        if top != "src" {
                            outside.push(top);
                        }
                    }
                }
            }
        }
    }
    assert!(outside.contains(&"examples".to_string()), "{outside:?}");
    for top in outside {
        assert!(
            recipe.contains(&format!("COPY {top} ./{top}")),
            "the build reads {top}/ but the container recipe does not copy it"
        );
    }
    // It ships the stripped build: the dist profile, which strips.
    assert!(recipe.contains("--profile dist"), "builds the dist profile");
    assert!(
        recipe.contains("/src/target/dist/coxswain"),
        "copies the dist build"
    );
    let dist = cargo
        .split("[profile.dist]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [profile.dist] in Cargo.toml");
    assert!(dist.contains("strip = true"), "{dist}");
    let user = recipe
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "runs as root"
    );
    let json_array = |prefix: &str| -> Vec<String> {
        let line = recipe
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{prefix} is not exec form: {e}"))
    };
    let mut args = json_array("ENTRYPOINT ");
    args.extend(json_array("CMD "));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(args[0], "/usr/local/bin/coxswain");
    assert_cli_accepts(&args);
    // The port it exposes is the one it listens on.
    let listen = recipe
        .split_whitespace()
        .find_map(|w| w.strip_prefix("COXSWAIN_LISTEN="))
        .expect("COXSWAIN_LISTEN");
    let port = listen.rsplit(':').next().unwrap_or_default();
    assert!(
        recipe.lines().any(|l| l.trim() == format!("EXPOSE {port}")),
        "EXPOSE {port}"
    );
    // Everything the build copies exists.
    for line in recipe
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(src).exists(),
                "COPY {src}: no such file"
            );
        }
    }
}

/// The stack's interruption queue and rules are what `coxswain init --interruption-queue`
/// creates: the same name, retention and event patterns, each rule sending to the queue.
#[test]
fn the_cloudformation_interruption_queue_and_rules_match_what_coxswain_init_creates() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("deploy/coxswain.yaml")).expect("YAML");
    let res = &doc["Resources"];
    let q = &res["InterruptionQueue"]["Properties"];
    let name = serde_yaml::to_string(&q["QueueName"]).expect("name");
    assert!(
        name.contains(&coxswain::cloud::aws::setup::queue_name("${TablePrefix}")),
        "{name}"
    );
    assert_eq!(
        q["MessageRetentionPeriod"].as_u64(),
        Some(u64::from(coxswain::cloud::aws::setup::RETENTION_SECS))
    );
    let rules: Vec<&serde_yaml::Value> = res
        .as_mapping()
        .expect("resources")
        .values()
        .filter(|r| r["Type"] == "AWS::Events::Rule")
        .collect();
    let patterns = coxswain::cloud::interruption::event_patterns();
    assert_eq!(rules.len(), patterns.len());
    for (suffix, pattern) in patterns {
        let rule = rules
            .iter()
            .find(|r| {
                serde_yaml::to_string(&r["Properties"]["Name"])
                    .is_ok_and(|n| n.contains(&format!("${{TablePrefix}}-{suffix}")))
            })
            .unwrap_or_else(|| panic!("a rule named PREFIX-{suffix}"));
        let got: serde_json::Value =
            serde_json::to_value(&rule["Properties"]["EventPattern"]).expect("json");
        assert_eq!(got, pattern, "{suffix}");
        let target = serde_yaml::to_string(&rule["Properties"]["Targets"][0]["Arn"]).expect("arn");
        assert!(target.contains("InterruptionQueue"), "{suffix}: {target}");
    }
}
