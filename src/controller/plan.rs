//! Pure helpers that turn a decision into concrete cloud requests: where to launch, with
//! which idempotency token, and which instances to retire.

use crate::cloud::{tags, Instance, LaunchRequest, LaunchTemplate};
use crate::deploy::Build;
use crate::manifest::FleetSpec;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Split `n` new capacity units over the fleet's subnets so AZs stay balanced, `step`
/// units at a time (the weight of the instance type launched; 1 without weights): each
/// step goes to the subnet that has the fewest live units so far. The steps cover `n`, so
/// the total may exceed it by less than `step`. Returns (subnet, units) in subnet order.
pub fn spread(
    spec: &FleetSpec,
    live: &[&Instance],
    n: u32,
    step: u32,
) -> Vec<(Option<String>, u32)> {
    let step = step.max(1);
    let subnets = &spec.launch.subnets;
    if subnets.is_empty() {
        return if n > 0 { vec![(None, n)] } else { vec![] };
    }
    let mut counts: Vec<u32> = subnets
        .iter()
        .map(|s| {
            crate::cloud::units(
                live.iter()
                    .copied()
                    .filter(|i| i.subnet.as_ref() == Some(s)),
            )
        })
        .collect();
    let mut add = vec![0u32; subnets.len()];
    for _ in 0..n.div_ceil(step) {
        let (i, _) = counts
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (**c, *i))
            .unwrap_or((0, &0));
        counts[i] += step;
        add[i] += step;
    }
    subnets
        .iter()
        .cloned()
        .zip(add)
        .filter(|(_, c)| *c > 0)
        .map(|(s, c)| (Some(s), c))
        .collect()
}

/// A ClientToken for a new launch: unique to this launch decision. It is never derived from
/// what the fleet looks like, because EC2 answers a token it has seen before with that
/// earlier request's instances, even after they were terminated: a fleet that comes back to
/// the same shape would get nothing launched. Idempotency for retries comes from sending
/// the remembered request again under the same token (`Store::remember_launch`), not from
/// recomputing it. `nonce` is random; `at` and `seq` keep tokens apart even if two nonces
/// met. At most 64 ASCII characters, as EC2 requires.
pub fn fresh_client_token(
    controller_id: &str,
    fleet: &str,
    at: chrono::DateTime<chrono::Utc>,
    seq: u64,
    nonce: u64,
) -> String {
    let mut h = Sha256::new();
    for part in [controller_id, fleet] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(at.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    h.update(seq.to_le_bytes());
    h.update(nonce.to_le_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("cox-{hex}")
}

/// The launch request for `count` instances in `subnet` with `instance_type`.
pub fn launch_request(
    spec: &FleetSpec,
    build: &Build,
    controller_id: &str,
    subnet: Option<String>,
    instance_type: Option<String>,
    count: u32,
    client_token: String,
) -> LaunchRequest {
    let weight = instance_type
        .as_deref()
        .map_or(1, |t| spec.launch.weight_of(t));
    let mut t: BTreeMap<String, String> = spec.launch.tags.clone();
    t.insert(tags::CONTROLLER.into(), controller_id.into());
    t.insert(tags::FLEET.into(), spec.name.clone());
    t.insert(tags::BUILD.into(), build.id.clone());
    t.entry("Name".into())
        .or_insert_with(|| format!("{}-{}", spec.name, spec.environment));
    LaunchRequest {
        fleet: spec.name.clone(),
        build: build.id.clone(),
        count,
        template: spec
            .launch
            .launch_template
            .as_ref()
            .map(|lt| LaunchTemplate {
                id: lt.id.clone(),
                name: lt.name.clone(),
                version: build
                    .template_version
                    .clone()
                    .unwrap_or_else(|| lt.version.clone()),
            }),
        image_id: build.image.clone().or_else(|| spec.launch.ami.clone()),
        instance_type,
        subnet,
        security_groups: spec.launch.security_groups.clone(),
        key_name: spec.launch.key_name.clone(),
        tags: t,
        client_token,
        market: crate::cloud::Market::OnDemand,
        pools: Vec::new(),
        spot_allocation_strategy: None,
        weight,
    }
}

/// Instance types to try, in order. With a launch template and no list, the template's
/// own type (None) is the only option.
pub fn instance_type_choices(spec: &FleetSpec) -> Vec<Option<String>> {
    if spec.launch.instance_types.is_empty() {
        vec![None]
    } else {
        spec.launch.type_names().into_iter().map(Some).collect()
    }
}

/// Every capacity pool of the fleet, in order of preference: each subnet in turn (first
/// `first_subnet`, if given), and in it each instance type in the launch spec's order.
/// Without subnets or types, the template's (None).
pub fn pools(spec: &FleetSpec, first_subnet: Option<&str>) -> Vec<crate::cloud::Pool> {
    let mut subnets: Vec<Option<String>> = if spec.launch.subnets.is_empty() {
        vec![None]
    } else {
        spec.launch.subnets.iter().cloned().map(Some).collect()
    };
    if let Some(first) = first_subnet {
        subnets.sort_by_key(|s| s.as_deref() != Some(first));
    }
    let types = instance_type_choices(spec);
    subnets
        .iter()
        .flat_map(|s| {
            types.iter().map(move |t| crate::cloud::Pool {
                instance_type: t.clone(),
                subnet: s.clone(),
                weighted_capacity: t
                    .as_ref()
                    .and_then(|t| {
                        spec.launch
                            .instance_types
                            .iter()
                            .find(|x| &x.instance_type == t)
                    })
                    .and_then(|x| x.weighted_capacity),
            })
        })
        .collect()
}

/// Choose instances to retire by market: `n.on_demand` units of the On-Demand ones and
/// `n.spot` of the Spot ones, each by [`choose_victims`]. With instance weights a
/// market's part may be smaller than any of its instances; what that leaves of the whole
/// (`n.total()`) is then taken from Spot, and from On-Demand only while it keeps
/// `on_demand_floor` units (its share), so the fleet still gets as close to its size as
/// whole instances allow.
pub fn choose_victims_by_market<'a>(
    live: &[&'a Instance],
    build: &str,
    n: crate::cloud::market::Split,
    on_demand_floor: u32,
) -> Vec<&'a Instance> {
    use crate::cloud::{units, Market};
    let of = |m: Market| -> Vec<&'a Instance> {
        live.iter().copied().filter(|i| i.market == m).collect()
    };
    let (spot, od) = (of(Market::Spot), of(Market::OnDemand));
    let mut out = choose_victims(&spot, build, n.spot);
    out.extend(choose_victims(&od, build, n.on_demand));
    // What `pool` has that `out` does not: by a set of ids, so the top-up passes stay
    // linear in the fleet's size.
    let not_chosen = |pool: &[&'a Instance], out: &[&'a Instance]| -> Vec<&'a Instance> {
        let chosen: std::collections::HashSet<&str> = out.iter().map(|o| o.id.as_str()).collect();
        pool.iter()
            .copied()
            .filter(|i| !chosen.contains(i.id.as_str()))
            .collect()
    };
    let mut left = n.total().saturating_sub(units(out.iter().copied()));
    if left > 0 {
        let more = choose_victims(&not_chosen(&spot, &out), build, left);
        left -= units(more.iter().copied());
        out.extend(more);
    }
    if left > 0 {
        let rest = not_chosen(&od, &out);
        let room = units(rest.iter().copied()).saturating_sub(on_demand_floor);
        out.extend(choose_victims(&rest, build, left.min(room)));
    }
    out
}

/// Choose instances to retire, worth up to `n` capacity units (instances without
/// weights): first those not on the fleet's current build, then from the AZ with the most
/// units (keeping AZs balanced), then the newest (the ones still booting carry no traffic
/// yet). An instance worth more units than are left to retire is passed over, so the
/// fleet never goes below the capacity it keeps (it may stay above it by less than the
/// largest weight, as an Auto Scaling group with weights does).
pub fn choose_victims<'a>(live: &[&'a Instance], build: &str, n: u32) -> Vec<&'a Instance> {
    let mut pool: Vec<&Instance> = live.to_vec();
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        // Zones are weighed by what stays in them, heavy instances included.
        let mut per_az: BTreeMap<Option<&str>, u32> = BTreeMap::new();
        for i in &pool {
            *per_az.entry(i.availability_zone.as_deref()).or_default() += i.weight.max(1);
        }
        let best = pool
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, i)| i.weight.max(1) <= left)
            .max_by_key(|&(_, i): &(usize, &'a Instance)| {
                (
                    i.build != build,
                    per_az
                        .get(&i.availability_zone.as_deref())
                        .copied()
                        .unwrap_or(0),
                    i.launched_at,
                    i.id.as_str(),
                )
            })
            .map(|(idx, _)| idx);
        let Some(idx) = best else { break };
        let v = pool.remove(idx);
        left -= v.weight.max(1);
        out.push(v);
    }
    out
}

/// A stable 31-bit number from a string (the same on every machine and run).
pub fn stable_hash32(s: &str) -> u32 {
    let d = Sha256::digest(s.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::InstanceState;
    use chrono::{TimeZone, Utc};

    fn inst(id: &str, az: &str, build: &str, minute: u32) -> Instance {
        Instance {
            id: id.into(),
            fleet: "web".into(),
            build: build.into(),
            state: InstanceState::Running,
            launched_at: Utc
                .with_ymd_and_hms(2026, 1, 5, 7, minute, 0)
                .single()
                .expect("valid date"),
            instance_type: "m6i.large".into(),
            subnet: Some(format!("subnet-{az}")),
            availability_zone: Some(az.into()),
            private_ip: None,
            retiring_since: None,
            market: Default::default(),
            replacing: None,
            weight: 1,
        }
    }

    #[test]
    fn victims_are_old_builds_first_then_the_fullest_az() {
        let a = inst("i-a", "a", "v2", 1);
        let b = inst("i-b", "a", "v2", 2);
        let c = inst("i-c", "b", "v1", 3);
        let d = inst("i-d", "b", "v2", 4);
        let e = inst("i-e", "a", "v2", 5);
        let live = vec![&a, &b, &c, &d, &e];
        let v: Vec<&str> = choose_victims(&live, "v2", 3)
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        // v1 first; then AZ a has 3 vs b's 1: the newest of a (e), then a and b tie at 2/1..
        assert_eq!(v[0], "i-c");
        assert_eq!(v[1], "i-e");
        assert_eq!(v[2], "i-b");
    }

    proptest::proptest! {
        /// With weights, the victims are worth at most the units asked for, and the
        /// choice stops only when no instance left fits in what remains: the fleet never
        /// goes below the capacity it keeps, and stays above it by less than the weight of
        /// the lightest instance left. Without weights, exactly `n` (or all) are chosen.
        #[test]
        fn victims_never_take_more_units_than_asked(
            weights in proptest::collection::vec(1u32..5, 0..12),
            n in 0u32..30,
        ) {
            let fleet: Vec<Instance> = weights
                .iter()
                .enumerate()
                .map(|(k, w)| {
                    let mut i = inst(&format!("i-{k}"), if k % 2 == 0 { "a" } else { "b" }, "v1", k as u32);
                    i.weight = *w;
                    i
                })
                .collect();
            let live: Vec<&Instance> = fleet.iter().collect();
            let v = choose_victims(&live, "v1", n);
            let taken: u32 = v.iter().map(|i| i.weight).sum();
            proptest::prop_assert!(taken <= n);
            let left = n - taken;
            for i in &fleet {
                if !v.iter().any(|x| x.id == i.id) {
                    proptest::prop_assert!(i.weight > left, "{} (weight {}) fits in {left}", i.id, i.weight);
                }
            }
            let plain: Vec<Instance> = fleet
                .iter()
                .map(|i| Instance { weight: 1, ..i.clone() })
                .collect();
            let plain_live: Vec<&Instance> = plain.iter().collect();
            proptest::prop_assert_eq!(
                choose_victims(&plain_live, "v1", n).len(),
                (n as usize).min(plain.len())
            );
        }

        /// By market: each instance at most once, never more units than asked, On-Demand
        /// topped up only down to its floor, and the same choice as the plain
        /// description (each market's part, then Spot, then On-Demand above the floor,
        /// each from what is not chosen yet).
        #[test]
        fn victims_by_market_follow_the_description(
            fleet in proptest::collection::vec((1u32..4, proptest::bool::ANY, 0u8..3, proptest::bool::ANY), 0..14),
            spot in 0u32..12,
            on_demand in 0u32..12,
            floor in 0u32..10,
        ) {
            use crate::cloud::{market::Split, units, Market};
            // Launch minutes repeat (k % 3), so ties fall to the id ("i-10" < "i-2").
            let fleet: Vec<Instance> = fleet
                .iter()
                .enumerate()
                .map(|(k, (w, is_spot, az, old))| {
                    let az = ["a", "b", "c"][usize::from(*az)];
                    let mut i = inst(&format!("i-{k}"), az, if *old { "v1" } else { "v2" }, (k % 3) as u32);
                    i.weight = *w;
                    i.market = if *is_spot { Market::Spot } else { Market::OnDemand };
                    i
                })
                .collect();
            let live: Vec<&Instance> = fleet.iter().collect();
            let n = Split { on_demand, spot };
            let v = choose_victims_by_market(&live, "v2", n, floor);
            let ids: Vec<&str> = v.iter().map(|i| i.id.as_str()).collect();
            let distinct: std::collections::HashSet<&str> = ids.iter().copied().collect();
            proptest::prop_assert_eq!(distinct.len(), ids.len());
            proptest::prop_assert!(units(v.iter().copied()) <= n.total());

            // The description, step by step.
            let of = |m: Market| -> Vec<&Instance> { live.iter().copied().filter(|i| i.market == m).collect() };
            let (s, od) = (of(Market::Spot), of(Market::OnDemand));
            let mut want: Vec<&Instance> = choose_victims(&s, "v2", spot);
            want.extend(choose_victims(&od, "v2", on_demand));
            let mut left = n.total() - units(want.iter().copied());
            let rest_s: Vec<&Instance> = s.iter().copied().filter(|i| want.iter().all(|o| o.id != i.id)).collect();
            let more = choose_victims(&rest_s, "v2", left);
            left -= units(more.iter().copied());
            want.extend(more);
            let rest_od: Vec<&Instance> = od.iter().copied().filter(|i| want.iter().all(|o| o.id != i.id)).collect();
            let room = units(rest_od.iter().copied()).saturating_sub(floor);
            want.extend(choose_victims(&rest_od, "v2", left.min(room)));
            let want_ids: Vec<&str> = want.iter().map(|i| i.id.as_str()).collect();
            proptest::prop_assert_eq!(&ids, &want_ids);
            // The top-up never takes On-Demand below its floor.
            let od_first: u32 = units(choose_victims(&od, "v2", on_demand).into_iter());
            let od_taken: u32 = units(v.iter().copied().filter(|i| i.market == Market::OnDemand));
            let od_units = units(od.iter().copied());
            if od_taken > od_first {
                proptest::prop_assert!(od_units - od_taken >= floor);
            }
            // Nothing Spot is left that would still fit in what was asked.
            let left_over = n.total() - units(v.iter().copied());
            for i in &s {
                if !distinct.contains(i.id.as_str()) {
                    proptest::prop_assert!(i.weight > left_over, "{} (weight {}) fits in {left_over}", i.id, i.weight);
                }
            }
        }

        /// Without weights the count is known by hand: each market's part (as far as it
        /// has instances), then what is left from Spot, then from On-Demand down to its
        /// floor.
        #[test]
        fn victims_by_market_count_without_weights(
            spot_n in 0u32..10,
            od_n in 0u32..10,
            spot in 0u32..12,
            on_demand in 0u32..12,
            floor in 0u32..10,
        ) {
            use crate::cloud::{market::Split, Market};
            let fleet: Vec<Instance> = (0..spot_n + od_n)
                .map(|k| {
                    let mut i = inst(&format!("i-{k}"), "a", "v2", k % 4);
                    i.market = if k < spot_n { Market::Spot } else { Market::OnDemand };
                    i
                })
                .collect();
            let live: Vec<&Instance> = fleet.iter().collect();
            let v = choose_victims_by_market(&live, "v2", Split { on_demand, spot }, floor);
            let a = spot.min(spot_n);
            let b = on_demand.min(od_n);
            let total = spot + on_demand;
            let c = (spot_n - a).min(total - a - b);
            let d = (total - a - b - c).min((od_n - b).saturating_sub(floor));
            proptest::prop_assert_eq!(v.len() as u32, a + b + c + d);
            proptest::prop_assert_eq!(
                v.iter().filter(|i| i.market == Market::Spot).count() as u32,
                a + c
            );
        }

        /// Spreading `n` units `step` at a time: every share a multiple of `step`, the
        /// total covers `n` with less than one step over.
        #[test]
        fn spread_covers_the_units_in_steps(n in 0u32..40, step in 1u32..5) {
            let spec: FleetSpec = crate::manifest::load_str(
                "t",
                "name: web\nenvironment: p\nregion: r\nlaunch: { ami: ami-1, instance_types: [m6i.large], subnets: [subnet-a, subnet-b, subnet-c] }\ncapacity: { min: 1, max: 9 }\nscaling:\n  policies:\n    - scheduled: { cron: \"0 8 * * *\", duration: 1h, min: 1 }\n",
            )
            .expect("valid")
            .fleets
            .remove(0);
            let out = spread(&spec, &[], n, step);
            let total: u32 = out.iter().map(|(_, u)| *u).sum();
            proptest::prop_assert!(total >= n && total < n + step, "{out:?}");
            proptest::prop_assert!(out.iter().all(|(_, u)| u % step == 0), "{out:?}");
            let most = out.iter().map(|(_, u)| *u).max().unwrap_or(0);
            let least = if out.len() == 3 { out.iter().map(|(_, u)| *u).min().unwrap_or(0) } else { 0 };
            proptest::prop_assert!(most - least <= step, "zones balanced: {out:?}");
        }
    }

    #[test]
    fn client_tokens_differ_for_every_launch_and_fit_ec2s_limit() {
        let at = Utc
            .with_ymd_and_hms(2026, 1, 5, 7, 0, 0)
            .single()
            .expect("valid date");
        let mut seen = std::collections::HashSet::new();
        for seq in 0..200u64 {
            // Same fleet, same moment, same nonce: the sequence alone keeps them apart.
            let t = fresh_client_token("c", "web", at, seq, 7);
            assert!(t.len() <= 64 && t.is_ascii());
            assert!(seen.insert(t), "token repeated at seq {seq}");
        }
        assert_ne!(
            fresh_client_token("c", "web", at, 0, 1),
            fresh_client_token("c", "web", at, 0, 2)
        );
        assert_ne!(
            fresh_client_token("c", "web", at, 0, 1),
            fresh_client_token("c", "api", at, 0, 1)
        );
    }
}
