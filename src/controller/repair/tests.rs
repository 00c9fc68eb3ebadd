//! Repair's decisions as table cases: who is replaced, when it halts, lifetimes.

use super::*;
use crate::manifest::HumanDuration;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
        .single()
        .expect("valid date")
}

fn min(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn inst(id: &str, age: chrono::Duration, state: InstanceState) -> Instance {
    Instance {
        id: id.into(),
        fleet: "web".into(),
        build: "v1".into(),
        state,
        launched_at: t0() - age,
        instance_type: "m6i.large".into(),
        subnet: None,
        availability_zone: None,
        private_ip: None,
        retiring_since: None,
        market: Default::default(),
        replacing: None,
        weight: 1,
    }
}

fn spec() -> RepairSpec {
    RepairSpec::default()
}

fn judge(spec: &RepairSpec, desired: u32, tg: bool) -> Judge<'_> {
    Judge {
        spec,
        warmup: min(3),
        has_target_group: tg,
        desired,
        max_retire: 5,
        now: t0(),
    }
}

const H: Option<TargetHealth> = Some(TargetHealth::Healthy);
const U: Option<TargetHealth> = Some(TargetHealth::Unhealthy);

fn seen(i: &Instance, status_ok: Option<bool>, target: Option<TargetHealth>) -> Seen<'_> {
    Seen {
        instance: i,
        status_ok,
        target,
    }
}

fn since(pairs: &[(&str, i64)]) -> HashMap<String, DateTime<Utc>> {
    pairs
        .iter()
        .map(|(id, ago)| (id.to_string(), t0() - min(*ago)))
        .collect()
}

fn ids(v: &[(String, Cause)]) -> Vec<&str> {
    v.iter().map(|(id, _)| id.as_str()).collect()
}

/// One row of the judging table.
struct Case {
    name: &'static str,
    instance: Instance,
    status_ok: Option<bool>,
    target: Option<TargetHealth>,
    target_group: bool,
    /// First seen unhealthy, minutes ago.
    first: Option<i64>,
    want: Option<Symptom>,
    condemned: bool,
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    instance: Instance,
    status_ok: Option<bool>,
    target: Option<TargetHealth>,
    target_group: bool,
    first: Option<i64>,
    want: Option<Symptom>,
    condemned: bool,
) -> Case {
    Case {
        name,
        instance,
        status_ok,
        target,
        target_group,
        first,
        want,
        condemned,
    }
}

#[test]
fn who_is_judged_unhealthy_and_who_is_not_yet() {
    use InstanceState::*;
    use Symptom::*;
    let old = min(60);
    let run = || inst("a", old, Running);
    #[rustfmt::skip]
    let cases = [
        case("healthy target", run(), None, H, true, None, None, false),
        case("unhealthy target past the grace", run(), Some(true), U, true, Some(6), Some(TargetUnhealthy), true),
        case("unhealthy target within the grace", run(), Some(true), U, true, Some(2), Some(TargetUnhealthy), false),
        case("unhealthy, first seen now", run(), Some(true), U, true, None, Some(TargetUnhealthy), false),
        case("still warming up", inst("a", min(2), Running), Some(false), U, true, Some(60), None, false),
        case("initial target, checks ok", run(), Some(true), Some(TargetHealth::Initial), true, None, None, false),
        case("unused target while running (a setting)", run(), Some(true), Some(TargetHealth::Unused), true, None, None, false),
        case("not in the target group, checks ok", run(), Some(true), None, true, None, None, false),
        case("initial target failing status checks", run(), Some(false), Some(TargetHealth::Initial), true, Some(5), Some(StatusChecks), true),
        case("status checks fail, no target group", run(), Some(false), None, false, Some(5), Some(StatusChecks), true),
        case("status unknown, no target group", run(), None, None, false, None, None, false),
        case("stopped", inst("a", old, Stopped), None, Some(TargetHealth::Unused), true, Some(5), Some(NotRunning), true),
        case("stopping, within the grace", inst("a", old, Stopping), None, None, false, Some(1), Some(NotRunning), false),
        case("target health ignored without a group", run(), Some(true), U, false, Some(9), None, false),
    ];
    let rs = spec();
    for c in cases {
        let j = judge(&rs, 3, c.target_group);
        // Two healthy others keep the share within the limit (one of three).
        let others = [inst("b", old, Running), inst("c", old, Running)];
        let other_target = if c.target_group { H } else { None };
        let mut all = vec![seen(&c.instance, c.status_ok, c.target)];
        all.extend(others.iter().map(|o| seen(o, Some(true), other_target)));
        let mem = c.first.map(|m| since(&[("a", m)])).unwrap_or_default();
        let p = plan(&j, &all, &mem, &BTreeMap::new());
        let name = c.name;
        assert_eq!(symptom(&j, &all[0]), c.want, "{name}");
        assert_eq!(ids(&p.condemn).contains(&"a"), c.condemned, "{name}: {p:?}");
        assert_eq!(
            p.unhealthy_since.contains_key("a"),
            c.want.is_some(),
            "{name}"
        );
        let waiting = c.want.is_some() && !c.condemned;
        assert_eq!(p.waiting.len(), usize::from(waiting), "{name}");
        assert!(!p.halted, "{name}");
    }
}

#[test]
fn the_unhealthy_grace_restarts_when_an_instance_recovers() {
    let rs = spec();
    let a = inst("a", min(60), InstanceState::Running);
    let p = plan(
        &judge(&rs, 1, true),
        &[seen(&a, None, H)],
        &since(&[("a", 4)]),
        &BTreeMap::new(),
    );
    assert!(p.unhealthy_since.is_empty());
    assert!(p.condemn.is_empty());
}

#[test]
fn more_than_the_share_unhealthy_halts_and_condemns_nothing() {
    use InstanceState::Running;
    let rs = spec();
    // (fleet size, unhealthy, halted): 34% rounded down, but at least one.
    let cases = [
        (1, 1, false),
        (2, 1, false),
        (2, 2, true),
        (3, 1, false),
        (3, 2, true),
        (6, 2, false),
        (6, 3, true),
        (10, 3, false),
        (10, 4, true),
        (100, 34, false),
        (100, 35, true),
    ];
    for (n, bad, halted) in cases {
        let fleet: Vec<Instance> = (0..n)
            .map(|k| inst(&format!("i-{k:03}"), min(60), Running))
            .collect();
        let all: Vec<Seen> = fleet
            .iter()
            .enumerate()
            .map(|(k, i)| seen(i, Some(true), if k < bad { U } else { H }))
            .collect();
        let mem: HashMap<String, DateTime<Utc>> = fleet
            .iter()
            .take(bad)
            .map(|i| (i.id.clone(), t0() - min(10)))
            .collect();
        let p = plan(&judge(&rs, n as u32, true), &all, &mem, &BTreeMap::new());
        assert_eq!(p.halted, halted, "{bad} of {n}: {p:?}");
        assert_eq!(p.unhealthy, bad as u32);
        if halted {
            assert!(p.condemn.is_empty() && p.retire.is_empty(), "{bad} of {n}");
        } else {
            assert_eq!(p.condemn.len(), bad, "{bad} of {n}");
        }
    }
    assert_eq!(unhealthy_limit(0.29, 100), 29, "float noise is forgiven");
}

#[test]
fn a_halt_keeps_what_was_condemned_and_retires_nothing() {
    use InstanceState::Running;
    let rs = spec();
    let fleet: Vec<Instance> = (0..4)
        .map(|k| inst(&format!("i-{k}"), min(60), Running))
        .collect();
    let all: Vec<Seen> = fleet.iter().map(|i| seen(i, Some(true), U)).collect();
    let condemned: BTreeMap<String, Cause> = [(
        "i-0".to_string(),
        Cause::Unhealthy(Symptom::TargetUnhealthy),
    )]
    .into();
    let p = plan(&judge(&rs, 0, true), &all, &HashMap::new(), &condemned);
    assert!(p.halted);
    assert!(p.retire.is_empty());
    assert_eq!(p.condemned, condemned);
}

#[test]
fn a_condemned_instance_is_retired_only_once_the_rest_is_in_service_at_desired() {
    use InstanceState::*;
    let rs = spec();
    let bad = inst("bad", min(60), Running);
    let a = inst("a", min(60), Running);
    let b = inst("b", min(60), Running);
    let condemned: BTreeMap<String, Cause> = [(
        "bad".to_string(),
        Cause::Unhealthy(Symptom::TargetUnhealthy),
    )]
    .into();
    // (replacement, its health, desired) -> retired?
    let cases = [
        ("replacement booting", Pending, None, 3, false),
        (
            "replacement registered, initial",
            Running,
            Some(TargetHealth::Initial),
            3,
            false,
        ),
        ("replacement healthy", Running, H, 3, true),
        (
            "fleet scaled in meanwhile: no replacement needed",
            Pending,
            None,
            2,
            true,
        ),
        ("fleet scaled out meanwhile", Running, H, 4, false),
    ];
    for (name, state, health, desired, retired) in cases {
        let r = inst("r", min(1), state);
        let all = [
            seen(&bad, Some(true), U),
            seen(&a, None, H),
            seen(&b, None, H),
            seen(&r, None, health),
        ];
        let mem = since(&[("bad", 30)]);
        let p = plan(&judge(&rs, desired, true), &all, &mem, &condemned);
        assert_eq!(
            p.retire == vec!["bad".to_string()],
            retired,
            "{name}: {p:?}"
        );
        assert_eq!(p.condemned.contains_key("bad"), !retired, "{name}");
        assert!(p.condemn.is_empty(), "{name}: condemned once only");
    }
}

#[test]
fn an_instance_condemned_in_this_check_is_not_retired_in_it() {
    let rs = spec();
    let bad = inst("bad", min(60), InstanceState::Running);
    let others: Vec<Instance> = (0..3)
        .map(|k| inst(&format!("h{k}"), min(60), InstanceState::Running))
        .collect();
    let mut all = vec![seen(&bad, Some(true), U)];
    all.extend(others.iter().map(|o| seen(o, None, H)));
    // Three healthy would cover a desired of 3, but the decision of this pass still
    // counted the bad one: it is retired from the next check on.
    let p = plan(
        &judge(&rs, 3, true),
        &all,
        &since(&[("bad", 6)]),
        &BTreeMap::new(),
    );
    assert_eq!(ids(&p.condemn), vec!["bad"]);
    assert!(p.retire.is_empty());
}

#[test]
fn without_a_target_group_in_service_means_warm_and_passing_status_checks() {
    let rs = spec();
    let bad = inst("bad", min(60), InstanceState::Running);
    let condemned: BTreeMap<String, Cause> =
        [("bad".to_string(), Cause::Unhealthy(Symptom::StatusChecks))].into();
    for (age, ok, retired) in [
        (2, Some(true), false),
        (5, None, false),
        (5, Some(true), true),
    ] {
        let r = inst("r", min(age), InstanceState::Running);
        let all = [seen(&bad, Some(false), None), seen(&r, ok, None)];
        let p = plan(
            &judge(&rs, 1, false),
            &all,
            &since(&[("bad", 30)]),
            &condemned,
        );
        assert_eq!(!p.retire.is_empty(), retired, "age {age}m status {ok:?}");
    }
}

#[test]
fn expired_instances_are_replaced_a_tenth_of_the_fleet_at_a_time_oldest_first() {
    let mut rs = spec();
    rs.max_instance_lifetime = Some(HumanDuration::secs(86_400));
    let day = chrono::Duration::days(1);
    let fleet: Vec<Instance> = (0..12)
        .map(|k| {
            inst(
                &format!("i-{k:02}"),
                day + min(60 - k),
                InstanceState::Running,
            )
        })
        .chain([inst("young", min(60), InstanceState::Running)])
        .collect();
    let all: Vec<Seen> = fleet.iter().map(|i| seen(i, None, H)).collect();
    // Desired 13: a batch of 2 (10% rounded up).
    let p = plan(
        &judge(&rs, 13, true),
        &all,
        &HashMap::new(),
        &BTreeMap::new(),
    );
    assert_eq!(ids(&p.condemn), vec!["i-00", "i-01"]);
    assert!(p.condemn.iter().all(|(_, c)| *c == Cause::Lifetime));
    // One already in flight: one more.
    let flight: BTreeMap<String, Cause> = [("i-00".to_string(), Cause::Lifetime)].into();
    let p = plan(&judge(&rs, 13, true), &all, &HashMap::new(), &flight);
    assert_eq!(ids(&p.condemn), vec!["i-01"]);
    // Off by default.
    let p = plan(
        &judge(&spec(), 13, true),
        &all,
        &HashMap::new(),
        &BTreeMap::new(),
    );
    assert!(p.condemn.is_empty());
}

#[test]
fn retiring_instances_are_not_counted_and_memory_forgets_the_gone() {
    let rs = spec();
    let a = inst("a", min(60), InstanceState::Running);
    let condemned: BTreeMap<String, Cause> = [
        ("gone".to_string(), Cause::Lifetime),
        ("a".to_string(), Cause::Lifetime),
    ]
    .into();
    let p = plan(
        &judge(&rs, 5, true),
        &[seen(&a, None, H)],
        &since(&[("gone", 10)]),
        &condemned,
    );
    assert_eq!(p.fleet, 1);
    assert!(!p.condemned.contains_key("gone"));
    assert!(p.unhealthy_since.is_empty());
}

#[test]
fn counted_leaves_out_the_condemned_and_keeps_stopped_ones_until_condemned() {
    use InstanceState::*;
    let mut fleet = crate::manifest::load_str(
        "t",
        "name: web\nenvironment: p\nregion: r\nlaunch: { ami: ami-1, instance_types: [t3.micro] }\ncapacity: { min: 1, max: 9 }\nscaling:\n  warmup: 3m\n  policies:\n    - scheduled: { cron: \"0 8 * * *\", duration: 1h, min: 1 }\n",
    )
    .expect("valid")
    .fleets
    .remove(0);
    let (a, bad, stopped, retiring) = (
        inst("a", min(60), Running),
        inst("bad", min(60), Running),
        inst("stopped", min(60), Stopped),
        Instance {
            retiring_since: Some(t0()),
            ..inst("retiring", min(60), Stopped)
        },
    );
    let all = [&a, &bad, &stopped, &retiring];
    // summarize counts the live ones: a and bad, both warm.
    let mut memory = RepairMemory::default();
    assert_eq!(counted(&fleet, &all, &memory, 2, 2, t0()), (3, 2));
    memory
        .condemned
        .insert("bad".into(), Cause::Unhealthy(Symptom::TargetUnhealthy));
    memory
        .condemned
        .insert("stopped".into(), Cause::Unhealthy(Symptom::NotRunning));
    assert_eq!(counted(&fleet, &all, &memory, 2, 2, t0()), (1, 1));
    fleet.scaling.repair.enabled = false;
    assert_eq!(counted(&fleet, &all, &memory, 2, 2, t0()), (2, 2));
}
