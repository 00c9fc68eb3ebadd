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
        ("../../lease.rs", "dynamodb"),
    ];
    let mut out = BTreeSet::new();
    for (file, service) in services {
        let text = std::fs::read_to_string(dir.join(file)).expect("source file");
        // Builder calls look like `.describe_instances()` right after a client or a line
        // break; the operation names are the verbs AWS uses.
        for line in text.lines() {
            let t = line.trim_start();
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
        called.contains("dynamodb:TransactWriteItems"),
        "the scan sees the lease calls: {called:?}"
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
        assert!(
            cond.contains("ResourceTag/coxswain:controller")
                || cond.contains("\"ec2:CreateAction\":\"RunInstances\""),
            "not limited to coxswain's own resources: {s}"
        );
    }
    // Instances can only be launched already carrying the ownership tag.
    let launch = statements
        .iter()
        .find(|s| {
            strings(&s["Action"]).contains(&"ec2:RunInstances".to_string())
                && strings(&s["Resource"])
                    .iter()
                    .any(|r| r.contains(":instance/"))
        })
        .expect("a RunInstances statement for instances");
    assert!(
        launch["Condition"]
            .to_string()
            .contains("aws:RequestTag/coxswain:controller"),
        "{launch}"
    );
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
