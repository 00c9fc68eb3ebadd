//! `coxswain simulate` end to end: the binary on a generated trace, its JSON summary
//! recomputed from its timeline, the chart, and bad input refused with a sentence.

use std::path::Path;
use std::process::Command;

fn coxswain() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coxswain"))
}

/// Eight days of per-minute web traffic: a daily swing, an evening burst on two days, a
/// 2-hour hole in the logs on day 5, and deterministic noise.
pub(crate) fn write_trace(path: &Path) {
    let mut s = String::from("timestamp,requests\n");
    let start = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date");
    for m in 0..8 * 1440i64 {
        if (5 * 1440 + 600..5 * 1440 + 720).contains(&m) {
            continue; // the gap
        }
        let hour = (m % 1440) as f64 / 60.0;
        let shape = (1.0 + ((hour - 14.0) / 24.0 * std::f64::consts::TAU).cos()) / 2.0;
        let burst = if (m / 1440 == 3 || m / 1440 == 6) && (1140..1200).contains(&(m % 1440)) {
            1.7
        } else {
            1.0
        };
        let noise = 1.0 + 0.1 * (((m * 7919) % 101) as f64 / 100.0 - 0.5);
        let r = ((500.0 + 9_500.0 * shape * shape) * burst * noise).round();
        let t = start + chrono::Duration::minutes(m);
        s.push_str(&format!("{},{r}\n", t.format("%Y-%m-%dT%H:%M:%S")));
    }
    std::fs::write(path, s).expect("write trace");
}

#[test]
fn json_summary_agrees_with_the_timeline_and_the_plot_shows_every_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    let timeline = dir.path().join("timeline.csv");
    let plot = dir.path().join("plot.svg");
    write_trace(&trace);
    let out = coxswain()
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args(["--p999-instances", "40", "--output", "json", "--timeline"])
        .arg(&timeline)
        .arg("--plot")
        .arg(&plot)
        .output()
        .expect("run coxswain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let policies = doc["policies"].as_array().expect("policies");
    let names: Vec<&str> = policies
        .iter()
        .filter_map(|p| p["policy"].as_str())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names[0].contains("predictive"),
        "policy under test first: {names:?}"
    );
    assert!(names[1].starts_with("aws-target-tracking"), "{names:?}");
    assert!(names[2].starts_with("k8s-hpa"), "{names:?}");
    assert!(names[3].starts_with("static"), "{names:?}");
    // The 2-hour hole is left out, not replayed as 120 quiet minutes.
    assert_eq!(doc["minutes"], 8 * 1440 - 120);
    assert_eq!(doc["gaps_left_out"], 1);

    // Recompute the tested policy's numbers from the timeline.
    let capacity = doc["capacity_per_instance"].as_f64().expect("capacity");
    let text = std::fs::read_to_string(&timeline).expect("timeline written");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("minute,timestamp,demand,capacity_ready,instances_booting,served,instances_spot,spot_usd_per_hour")
    );
    let (mut billed, mut limit, mut demand, mut served, mut overload, mut rows) =
        (0u64, 0u64, 0.0, 0.0, 0u64, 0usize);
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 8, "{line}");
        assert_eq!(
            (f[6], f[7]),
            ("0", "0"),
            "no Spot without an instances distribution: {line}"
        );
        let n = |i: usize| f[i].parse::<f64>().expect("number");
        let (d, ready, booting, s) = (n(2), n(3), n(4), n(5));
        assert!(s <= d && s <= ready * capacity + 1e-6, "{line}");
        billed += (ready + booting) as u64;
        limit += (d / capacity - 1e-9).ceil().max(0.0) as u64;
        demand += d;
        served += s;
        overload += u64::from(s < d);
        rows += 1;
    }
    let p = &policies[0];
    assert_eq!(rows as u64, doc["minutes"].as_u64().expect("minutes"));
    assert_eq!(p["instance_minutes"].as_u64(), Some(billed));
    assert_eq!(p["limit_instance_minutes"].as_u64(), Some(limit));
    assert_eq!(p["overload_minutes"].as_u64(), Some(overload));
    let cost = billed as f64 / limit as f64;
    assert!((p["cost_ratio"].as_f64().expect("cost") - cost).abs() < 1e-9);
    let unserved = (demand - served) / demand;
    assert!((p["unserved_fraction"].as_f64().expect("unserved") - unserved).abs() < 1e-9);
    // Every policy is judged against the same limit, and the static fleet loses nothing.
    for q in policies {
        assert_eq!(q["limit_instance_minutes"].as_u64(), Some(limit));
    }
    assert_eq!(policies[3]["unserved_fraction"].as_f64(), Some(0.0));

    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"));
    // Demand plus one line per policy, each named in the legend.
    assert_eq!(svg.matches("<path").count(), 5);
    for name in names {
        let escaped = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(svg.contains(&escaped), "legend lacks {name}");
    }
}

#[test]
fn the_table_names_each_policy_and_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    write_trace(&trace);
    let out = coxswain()
        .args(["simulate", "--capacity", "400", "--trace"])
        .arg(&trace)
        .output()
        .expect("run coxswain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "cost×limit",
        "predictive",
        "aws-target-tracking",
        "k8s-hpa",
        "static (peak)",
        "zero-loss limit",
        "capacity 400.0 requests/min",
    ] {
        assert!(text.contains(needle), "no {needle} in:\n{text}");
    }
}

#[test]
fn bad_traces_and_flags_are_refused_with_a_sentence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "timestamp,requests\n2026-01-01T00:00:00,12\n2026-01-01T00:01:00,lots\n",
    )
    .expect("write");
    let out = coxswain()
        .args(["simulate", "--capacity", "10", "--trace"])
        .arg(&bad)
        .output()
        .expect("run coxswain");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:3"), "{err}");

    let missing = dir.path().join("nope.csv");
    let out = coxswain()
        .args(["simulate", "--trace"])
        .arg(&missing)
        .output()
        .expect("run coxswain");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read trace"));

    let trace = dir.path().join("trace.csv");
    write_trace(&trace);
    let out = coxswain()
        .args(["simulate", "--boot", "90s", "--capacity", "10", "--trace"])
        .arg(&trace)
        .output()
        .expect("run coxswain");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("whole minutes"));
}

/// `simulate --sweep`: the baselines run at every target from 0.30 to 0.90, and each
/// standing's r is the policy's cost over the cheapest baseline run that lost no more,
/// recomputed here from the runs the JSON lists.
#[test]
fn sweep_reports_r_against_the_cheapest_baseline_run_losing_no_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    write_trace(&trace);
    let out = coxswain()
        .args([
            "simulate",
            "--p999-instances",
            "20",
            "--sweep",
            "--output",
            "json",
            "--trace",
        ])
        .arg(&trace)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let policies = doc["policies"].as_array().expect("policies");
    let targets = doc["sweep_targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 13);
    // The tested policy, 13 × (target tracking, HPA), the static fleet.
    assert_eq!(policies.len(), 2 + 2 * targets.len());
    let baselines = &policies[1..policies.len() - 1];
    // Honest about its budget: met exactly when the tested policy lost no more.
    let budget = doc["loss_budget"]
        .as_f64()
        .expect("the predictive policy's budget");
    let lost = policies[0]["unserved_fraction"].as_f64().expect("loss");
    assert_eq!(doc["budget_met"].as_bool(), Some(lost <= budget), "{doc}");
    let standings = doc["standings"].as_array().expect("standings");
    assert_eq!(standings.len(), 2);
    for (s, p) in standings
        .iter()
        .zip([&policies[0], &policies[policies.len() - 1]])
    {
        assert_eq!(s["policy"], p["policy"]);
        let cost = p["instance_minutes"].as_u64().expect("cost");
        let loss = p["unserved_fraction"].as_f64().expect("loss");
        let cheapest = baselines
            .iter()
            .filter(|b| b["unserved_fraction"].as_f64().unwrap_or(1.0) <= loss + 1e-12)
            .filter_map(|b| b["instance_minutes"].as_u64())
            .min();
        match cheapest {
            Some(c) => {
                let r = s["r"].as_f64().expect("r");
                assert!((r - cost as f64 / c as f64).abs() < 1e-9, "{s}");
            }
            None => assert!(s["r"].is_null(), "{s}"),
        }
    }
    // The table says the same in words.
    let table = coxswain()
        .args(["simulate", "--p999-instances", "20", "--sweep", "--trace"])
        .arg(&trace)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("against the baselines swept over targets 0.30 to 0.90"),
        "{text}"
    );
    assert!(
        text.contains("r = ") || text.contains("r: unbeaten"),
        "{text}"
    );
}

/// `--prices` with the Spot example manifest: every run in dollars, the fleet's policy
/// again all On-Demand, Spot interruptions at the table's rate, and the 24-hour floor On-Demand.
#[test]
fn prices_report_dollars_for_a_spot_mix_and_for_all_on_demand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    write_trace(&trace);
    let prices = dir.path().join("prices.yaml");
    // A stormy pool: 5% of Spot instances interrupted per hour.
    std::fs::write(
        &prices,
        "m6i.large: { on_demand: 0.096, spot: 0.0384, spot_interruptions_per_hour: 0.05 }\n",
    )
    .expect("write prices");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/simulate-spot.yaml");
    let run = |extra: &[&str]| {
        coxswain()
            .args(["simulate", "--p999-instances", "40", "--manifest"])
            .arg(&manifest)
            .arg("--prices")
            .arg(&prices)
            .arg("--trace")
            .arg(&trace)
            .args(extra)
            .output()
            .expect("run coxswain")
    };
    let timeline = dir.path().join("timeline.csv");
    let out = run(&[
        "--output",
        "json",
        "--timeline",
        &timeline.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["instance_type"], "m6i.large");
    let num =
        |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    let tested = &doc["policies"][0];
    let alone = &doc["on_demand_only"];
    // Dollars are the instance-minutes at each market's price.
    for s in [tested, alone] {
        let (all, spot) = (num(s, "instance_minutes"), num(s, "spot_instance_minutes"));
        let usd = ((all - spot) * 0.096 + spot * 0.0384) / 60.0;
        assert!((num(s, "usd") - usd).abs() < 1e-6 * usd, "{s}");
    }
    assert_eq!(num(alone, "spot_instance_minutes"), 0.0);
    // The timeline's Spot column adds up to the Spot instance-minutes, and is part of
    // what is billed each minute.
    let text = std::fs::read_to_string(&timeline).expect("timeline");
    let (mut spot, mut spot_usd) = (0.0, 0.0);
    for line in text.lines().skip(1) {
        let f: Vec<f64> = line
            .split(',')
            .skip(3)
            .filter_map(|v| v.parse().ok())
            .collect();
        assert!(f.len() == 5 && f[3] <= f[0] + f[1], "{line}");
        // One pool, one price: each billed Spot instance at $0.0384 an hour.
        assert!((f[4] - f[3] * 0.0384).abs() < 1e-9, "{line}");
        spot += f[3];
        spot_usd += f[4] / 60.0;
    }
    assert_eq!(spot, num(tested, "spot_instance_minutes"));
    assert!(
        (spot_usd - num(tested, "spot_usd")).abs() < 1e-9,
        "{tested}"
    );
    assert_eq!(num(alone, "interruptions"), 0.0);
    assert!(
        num(tested, "spot_instance_minutes") > 0.1 * num(tested, "instance_minutes"),
        "{tested}"
    );
    assert!(num(tested, "interruptions") > 0.0, "{tested}");
    assert!(
        num(tested, "usd") < 0.9 * num(alone, "usd"),
        "the mix saves: {tested} {alone}"
    );
    // The static fleet never goes below its size: all of it is the floor, On-Demand.
    let fixed = doc["policies"]
        .as_array()
        .and_then(|p| p.last())
        .expect("static run");
    assert_eq!(num(fixed, "spot_instance_minutes"), 0.0, "{fixed}");
    // The same seed, the same run; the table shows the money.
    let again: serde_json::Value =
        serde_json::from_slice(&run(&["--output", "json"]).stdout).expect("JSON");
    assert_eq!(again["policies"][0], doc["policies"][0]);
    let text = String::from_utf8_lossy(&run(&[]).stdout).to_string();
    assert!(
        text.contains("in money (On-Demand: m6i.large")
            && text.contains("m6i.large in subnet-a: $0.03840 per instance-hour")
            && text.contains("(all On-Demand)"),
        "{text}"
    );
    // Swept with prices, r is in dollars: runs in the same market with the same
    // instance-minutes can cost different money.
    let swept: serde_json::Value =
        serde_json::from_slice(&run(&["--sweep", "--output", "json"]).stdout).expect("JSON");
    let st = &swept["standings"][0];
    assert_eq!(st["usd"], swept["policies"][0]["usd"]);
    let b = &st["cheapest_no_worse"];
    match st["r"].as_f64() {
        Some(r) => assert!((r - num(st, "usd") / num(b, "usd")).abs() < 1e-9, "{st}"),
        None => assert!(b.is_null(), "{st}"),
    }
    // Each baseline run compared is priced too.
    assert!(
        st["best_at_cost"].is_null() || st["best_at_cost"]["usd"].is_f64(),
        "{st}"
    );
    // A price table without the fleet's type is refused with a sentence.
    std::fs::write(&prices, "c6i.large: { on_demand: 0.085, spot: 0.034 }\n").expect("write");
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no price for m6i.large") && err.contains("(it has c6i.large)"),
        "{err}"
    );
}

/// Per-pool interruption rates: a price table may give a type's rate per subnet, so each
/// Spot pool (type × subnet) has its own. The example fleet's `price-capacity-optimized`
/// keeps Spot out of the pool taken back often, so it is interrupted far less than when
/// every pool is; the JSON lists the pools; a subnet without a rate is refused.
#[test]
fn a_price_table_gives_each_spot_pool_its_own_interruption_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    write_trace(&trace);
    let prices = dir.path().join("prices.yaml");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/simulate-spot.yaml");
    let run = |table: &str| {
        std::fs::write(&prices, table).expect("write prices");
        coxswain()
            .args(["simulate", "--p999-instances", "40", "--output", "json"])
            .arg("--manifest")
            .arg(&manifest)
            .arg("--prices")
            .arg(&prices)
            .arg("--trace")
            .arg(&trace)
            .output()
            .expect("run coxswain")
    };
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    };
    let everywhere = json(run(
        "m6i.large: { on_demand: 0.096, spot: 0.0384, spot_interruptions_per_hour: 0.2 }\n",
    ));
    let one_bad = json(run(
        "m6i.large: { on_demand: 0.096, spot: 0.0384, spot_interruptions_per_hour: { subnet-a: 0.2, subnet-b: 0.0001, subnet-c: 0.0001 } }\n",
    ));
    let pools = one_bad["spot_pools"].as_array().expect("pools");
    let names: Vec<&str> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        vec![
            "m6i.large in subnet-a",
            "m6i.large in subnet-b",
            "m6i.large in subnet-c"
        ]
    );
    let rate =
        |p: &serde_json::Value| p["interruptions_per_minute"].as_f64().unwrap_or(-1.0) * 60.0;
    assert!((rate(&pools[0]) - 0.2).abs() < 1e-12 && (rate(&pools[1]) - 0.0001).abs() < 1e-12);
    assert_eq!(
        one_bad["spot_allocation_strategy"],
        "price-capacity-optimized"
    );
    let interruptions =
        |v: &serde_json::Value| v["policies"][0]["interruptions"].as_f64().unwrap_or(-1.0);
    assert!(interruptions(&everywhere) > 0.0, "{everywhere}");
    assert!(
        interruptions(&one_bad) * 10.0 < interruptions(&everywhere),
        "{} against {}",
        interruptions(&one_bad),
        interruptions(&everywhere)
    );
    let out = run(
        "m6i.large: { on_demand: 0.096, spot: 0.0384, spot_interruptions_per_hour: { subnet-a: 0.2, subnet-b: 0.0001 } }\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spot_interruptions_per_hour is given per subnet and has none for subnet-c"),
        "{err}"
    );
}
