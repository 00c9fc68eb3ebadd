//! `coxswain simulate`: replay a trace through a fleet's policies and the baselines.

use super::{fail, Output};
use crate::cloud::traffic::Trace;
use crate::manifest::{self, parse_duration, FleetSpec, PolicySpec};
use crate::policy::ceil_count;
use crate::simulate::{
    self, Autoscaler, AwsTargetTracking, Hpa, ManifestPolicy, StaticFleet, World,
};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The manifest simulated when none is given.
pub const DEFAULT_MANIFEST: &str = include_str!("../../examples/simulate.yaml");

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Traffic trace: CSV `timestamp,requests`, per minute or coarser.
    #[arg(long)]
    pub trace: PathBuf,
    /// Manifest with the fleet whose policies are tested (default: a web fleet on the
    /// predictive policy, examples/simulate.yaml).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The fleet to simulate, if the manifest has several.
    #[arg(long)]
    pub fleet: Option<String>,
    /// Multiply the trace's demand by this.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Requests per minute one instance serves at 100% (default: the fleet's
    /// simulation.capacity_per_instance).
    #[arg(long, conflicts_with = "p999_instances")]
    pub capacity: Option<f64>,
    /// Choose the capacity so that the 99.9th-percentile minute of demand needs this many
    /// instances.
    #[arg(long)]
    pub p999_instances: Option<u32>,
    /// Launch to serving (default: the fleet's simulation.boot, else 3m).
    #[arg(long, value_parser = parse_duration)]
    pub boot: Option<Duration>,
    /// Delay before a closed metric minute is readable.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub lag: Duration,
    /// Utilization the target-tracking and HPA baselines aim for (0..1).
    #[arg(long, default_value_t = 0.7)]
    pub baseline_utilization: f64,
    /// Output format: tables for people, or one JSON document for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Write the tested policy's minute-by-minute timeline here (CSV).
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// Write a chart of demand against each policy's capacity here (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Run the baselines at every target from 0.30 to 0.90 (step 0.05) and report where
    /// the fleet's policy and the static fleet land against that cost/loss frontier: r =
    /// cost ÷ the cheapest baseline run losing no more, and the baselines' loss at the
    /// same cost. Replaces --baseline-utilization.
    #[arg(long)]
    pub sweep: bool,
    /// Price table (YAML: instance type → on_demand and spot USD per instance-hour, and
    /// spot_interruptions_per_hour): report every run in dollars, and interrupt Spot
    /// capacity at that rate. Default: the fleet's simulation.prices, if any.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Seed of the Spot interruption draws (the same seed gives the same run).
    #[arg(long, default_value_t = 1)]
    pub spot_seed: u64,
    /// Take the Spot price of the fleet's instance type from AWS instead of the price
    /// table: the mean of DescribeSpotPriceHistory (Linux/UNIX, every zone) over the last
    /// 7 days in the fleet's region. The On-Demand price and the interruption rate stay
    /// the table's. Needs AWS credentials with ec2:DescribeSpotPriceHistory.
    #[arg(long)]
    pub spot_prices_from_aws: bool,
    /// With --spot-prices-from-aws: send the call here instead of AWS (moto, LocalStack).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

/// Days of DescribeSpotPriceHistory that `--spot-prices-from-aws` averages.
pub const SPOT_PRICE_DAYS: i64 = 7;

/// Spot prices from AWS (`--spot-prices-from-aws`): (instance type → (mean USD per hour,
/// points)), for the fleet's instance types, in its region.
pub async fn aws_spot_prices(
    a: &SimulateArgs,
) -> Result<std::collections::BTreeMap<String, (f64, usize)>, String> {
    let fleet = load_fleet(a)?;
    if fleet.launch.instance_types.is_empty() {
        return Err(
            "--spot-prices-from-aws: list the fleet's instance types in launch.instance_types"
                .into(),
        );
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(fleet.region.clone()));
    if let Some(url) = &a.endpoint_url {
        loader = loader.endpoint_url(url);
        if super::is_loopback_url(url) && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "local", "local", None, None, "loopback",
            ));
        }
    }
    let cfg = loader.load().await;
    let end = chrono::Utc::now();
    let start = end - chrono::Duration::days(SPOT_PRICE_DAYS);
    crate::cloud::aws::setup::spot_price_means(
        &aws_sdk_ec2::Client::new(&cfg),
        &fleet.launch.type_names(),
        start,
        end,
    )
    .await
}

fn load_fleet(a: &SimulateArgs) -> Result<FleetSpec, String> {
    let config = match &a.manifest {
        Some(p) => manifest::load_paths(std::slice::from_ref(p)).map_err(|e| e.to_string())?,
        None => manifest::load_str("examples/simulate.yaml", DEFAULT_MANIFEST)
            .map_err(|e| e.to_string())?,
    };
    pick_fleet(config, a.fleet.as_deref())
}

fn whole_minutes(d: Duration, what: &str) -> Result<u32, String> {
    let s = d.as_secs();
    if !s.is_multiple_of(60) || s > 24 * 3600 {
        return Err(format!(
            "{what} must be whole minutes up to a day (the model steps a minute at a time)"
        ));
    }
    Ok((s / 60) as u32)
}

fn pick_fleet(config: manifest::Config, name: Option<&str>) -> Result<FleetSpec, String> {
    let names: Vec<String> = config.fleets.iter().map(|f| f.name.clone()).collect();
    match name {
        Some(n) => config
            .fleets
            .into_iter()
            .find(|f| f.name == n)
            .ok_or_else(|| {
                format!(
                    "no fleet '{n}' in the manifest (fleets: {})",
                    names.join(", ")
                )
            }),
        None => {
            let mut with_policies = config
                .fleets
                .into_iter()
                .filter(|f| !f.scaling.policies.is_empty());
            match (with_policies.next(), with_policies.next()) {
                (Some(f), None) => Ok(f),
                (None, _) => Err("the manifest has no fleet with scaling policies".into()),
                (Some(_), Some(_)) => Err(format!(
                    "the manifest has several fleets; choose one with --fleet ({})",
                    names.join(", ")
                )),
            }
        }
    }
}

/// `spot`: Spot prices from AWS (`--spot-prices-from-aws`), in place of the table's.
pub fn simulate(
    a: SimulateArgs,
    spot: Option<std::collections::BTreeMap<String, (f64, usize)>>,
) -> ExitCode {
    match simulate_inner(a, spot) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn simulate_inner(
    a: SimulateArgs,
    spot: Option<std::collections::BTreeMap<String, (f64, usize)>>,
) -> Result<(), String> {
    let mut fleet = load_fleet(&a)?;
    if !(a.scale.is_finite() && a.scale > 0.0) {
        return Err(format!("--scale {} must be a positive number", a.scale));
    }
    if !(a.baseline_utilization > 0.0 && a.baseline_utilization <= 1.0) {
        return Err("--baseline-utilization must be above 0 and at most 1".into());
    }
    let trace = Trace::load(&a.trace).map_err(|e| e.to_string())?;
    let replay = simulate::Replay::from_trace(&trace, a.scale);
    let demand = &replay.demand;
    let capacity = match (a.capacity, a.p999_instances) {
        (Some(c), _) => c,
        (None, Some(0)) => return Err("--p999-instances must be at least 1".into()),
        (None, Some(n)) => simulate::percentile(demand, 0.999) / f64::from(n),
        (None, None) => fleet
            .simulation
            .as_ref()
            .map(|s| s.capacity_per_instance)
            .ok_or("give --capacity or --p999-instances (the fleet has no simulation section)")?,
    };
    if !(capacity.is_finite() && capacity > 0.0) {
        return Err(format!(
            "capacity per instance {capacity} must be a positive number (is the trace all zeros?)"
        ));
    }
    let boot = match (a.boot, &fleet.simulation) {
        (Some(b), _) => whole_minutes(b, "--boot")?,
        (None, Some(s)) => whole_minutes(Duration::from_secs(s.boot.as_secs()), "simulation.boot")?,
        (None, None) => 3,
    };
    let lag = whole_minutes(a.lag, "--lag")?;
    // The fleet's policies size with the simulated capacity unless they name their own.
    for p in &fleet.scaling.policies {
        if let PolicySpec::Predictive(pr) = p {
            if let Some(c) = pr.capacity_per_instance {
                let per_minute = c * 60.0 / pr.metric.period.as_secs() as f64;
                if (per_minute - capacity).abs() > 1e-9 * capacity {
                    eprintln!("warning: the predictive policy sizes with capacity_per_instance {c}, but the simulated instances serve {capacity:.1} per minute");
                }
            }
        }
    }
    match fleet.simulation.as_mut() {
        Some(s) => s.capacity_per_instance = capacity,
        None => {
            fleet.simulation = Some(manifest::SimulationSpec {
                capacity_per_instance: capacity,
                boot: manifest::HumanDuration::secs(u64::from(boot) * 60),
                traffic: manifest::TrafficSpec::Trace(manifest::TraceTraffic {
                    path: a.trace.clone(),
                    scale: a.scale,
                }),
                prices: None,
            })
        }
    }
    let world = World {
        capacity,
        boot,
        lag,
    };
    let (min, max) = (fleet.capacity.min, fleet.capacity.max);
    let peak = demand.iter().copied().fold(0.0, f64::max);
    let initial = demand
        .first()
        .map(|d| ceil_count(d / capacity))
        .unwrap_or(0)
        .clamp(min, max);
    let tested = ManifestPolicy::new(fleet.clone());
    for m in &tested.unmodelled {
        eprintln!("warning: metric {m} is not modelled: the simulator publishes what AWS does for this fleet (ApplicationELB RequestCount and RequestCountPerTarget on its TargetGroup, EC2 CPUUtilization on its AutoScalingGroupName or coxswain:fleet); its policy holds");
    }
    let targets: Vec<f64> = if a.sweep {
        simulate::frontier::SWEEP_TARGETS.to_vec()
    } else {
        vec![a.baseline_utilization]
    };
    let Pricing { price, market } =
        pricing_of(&fleet, a.prices.as_deref(), a.spot_seed, spot.as_ref())?;
    if fleet.launch.weighted() {
        eprintln!("note: instance weights: the replay counts capacity units; a Spot interruption is drawn per unit (the same expected loss as whole instances, less variance), and launches are not rounded up to whole instances as the daemon's are");
    }
    let mut policies = lineup(tested, capacity, boot + lag, &targets, peak, (min, max));
    let limit = simulate::zero_loss_limit(demand, capacity);
    let started = Instant::now();
    let (runs, on_demand_only) = std::thread::scope(|scope| {
        // With Spot in the mix: the fleet's own policy again, all On-Demand, beside the
        // others, to show what the mix saves and what its interruptions cost.
        let alone = market.as_ref().map(|_| {
            let (fleet, replay) = (&fleet, &replay);
            scope.spawn(move || {
                let mut p = ManifestPolicy::new(fleet.clone());
                let mut r = simulate::run(&mut p, replay, world, initial);
                r.policy = format!("{} (all On-Demand)", r.policy);
                r
            })
        });
        let runs = run_all(&mut policies, &replay, world, initial, market.as_ref());
        let alone = alone.map(|h| match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        });
        (runs, alone)
    });
    let elapsed = started.elapsed();
    let mut summaries: Vec<simulate::Summary> =
        runs.iter().map(|r| simulate::summarize(r, limit)).collect();
    let mut on_demand_only = on_demand_only.map(|r| simulate::summarize(&r, limit));
    if let Some((_, p)) = &price {
        for s in summaries.iter_mut().chain(on_demand_only.iter_mut()) {
            s.price(p.on_demand);
        }
    }
    // Honest about its budget: the predictive policy's loss_budget against what it lost.
    let budget = fleet.scaling.policies.iter().find_map(|p| match p {
        PolicySpec::Predictive(pr) => Some(pr.loss_budget.0),
        _ => None,
    });
    let budget_met = budget
        .zip(summaries.first())
        .map(|(b, s)| s.unserved_fraction <= b);
    // The policy under test and the static fleet, against the baseline runs between them.
    let standings: Vec<simulate::frontier::Standing> = match summaries.as_slice() {
        [tested, baselines @ .., fixed] if a.sweep => vec![
            simulate::frontier::stand(tested, baselines),
            simulate::frontier::stand(fixed, baselines),
        ],
        _ => Vec::new(),
    };

    if let Some(path) = &a.timeline {
        let mut f = std::fs::File::create(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        simulate::timeline_csv(&mut f, &runs[0], &replay)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &a.plot {
        let title = format!(
            "{} — {} minutes, {capacity:.1} req/min per instance, boot {boot}m, lag {lag}m",
            a.trace.display(),
            demand.len()
        );
        std::fs::write(
            path,
            simulate::plot_svg(&runs, &summaries, world, &replay, &title),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    match a.output {
        Output::Json => {
            let doc = serde_json::json!({
                "trace": a.trace.display().to_string(),
                "minutes": demand.len(),
                "gaps_left_out": trace.gaps.len(),
                "resolution_minutes": trace.resolution_minutes,
                "start": trace.start,
                "scale": a.scale,
                "capacity_per_instance": capacity,
                "boot_minutes": boot,
                "lag_minutes": lag,
                "baseline_utilization": a.baseline_utilization,
                "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                "policies": summaries,
                "sweep_targets": if a.sweep { targets.clone() } else { Vec::new() },
                "loss_budget": budget,
                "budget_met": budget_met,
                "standings": standings,
                "instance_type": price.as_ref().map(|p| p.0.clone()),
                "prices": price.as_ref().map(|p| p.1.clone()),
                "spot_pools": market.as_ref().map(|m| m.pools.clone()),
                "spot_allocation_strategy": market.as_ref().map(|m| m.allocation),
                "on_demand_only": on_demand_only,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
            );
        }
        Output::Table => {
            let per = if fleet.launch.weighted() {
                "capacity unit (instance weights: counts below are units)"
            } else {
                "instance"
            };
            println!(
                "{}: {} minutes from {}, capacity {capacity:.1} requests/min per {per}, boot {boot}m, lag {lag}m",
                a.trace.display(),
                demand.len(),
                trace.start.format("%Y-%m-%d %H:%M")
            );
            print!("{}", simulate::table(&summaries));
            if let (Some(b), Some(false), Some(s)) = (budget, budget_met, summaries.first()) {
                println!(
                    "{} lost {:.4}% of requests, over its loss_budget of {:.4}%: the budget was not met on this traffic (the policy's headroom stops where more instances buy almost nothing back, and its decisions say so)",
                    s.policy,
                    s.unserved_fraction * 100.0,
                    b * 100.0
                );
            }
            if !standings.is_empty() {
                println!(
                    "\nagainst the baselines swept over targets {:.2} to {:.2}:",
                    targets.first().copied().unwrap_or_default(),
                    targets.last().copied().unwrap_or_default()
                );
                print!("{}", simulate::frontier::table(&standings));
            }
            if price.is_some() || market.is_some() {
                match &price {
                    Some((ty, p)) => {
                        let unit = if fleet.launch.weighted() { "unit" } else { "instance" };
                        println!("\nin money (On-Demand: {ty} at ${:.5} per {unit}-hour):", p.on_demand);
                        if let Some(m) = &market {
                            println!("  Spot pools ({}):", m.allocation.as_aws());
                            for pool in &m.pools {
                                println!(
                                    "    {}: ${:.5} per {unit}-hour, {} interruptions per instance-hour",
                                    pool.name,
                                    pool.usd_per_hour,
                                    pool.interruptions_per_minute * 60.0
                                );
                            }
                        }
                    }
                    None => println!("\nOn-Demand and Spot, without a price table (simulation.prices or --prices FILE): no dollars, and Spot is never interrupted:"),
                }
                let mut rows: Vec<simulate::Summary> = on_demand_only.iter().cloned().collect();
                rows.extend(summaries.iter().cloned());
                print!("{}", simulate::money_table(&rows));
            }
            println!(
                "{} policies simulated in {:.0} ms",
                runs.len(),
                elapsed.as_secs_f64() * 1000.0
            );
        }
    }
    Ok(())
}

/// Every policy over the same trace, spread over the machine's cores (the runs are
/// independent). The result is in the order given.
pub fn run_all(
    policies: &mut [Box<dyn Autoscaler + Send>],
    replay: &simulate::Replay,
    world: World,
    initial: u32,
    market: Option<&simulate::MarketModel>,
) -> Vec<simulate::Run> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = policies
            .iter_mut()
            .map(|p| {
                let market = market.cloned();
                scope.spawn(move || {
                    simulate::run_in_market(p.as_mut(), replay, world, initial, market)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// What a simulated fleet's capacity costs, and how it is bought.
struct Pricing {
    /// The fleet's On-Demand instance type (its first) and its price per unit-hour (per
    /// instance-hour without weights), when a price table is given.
    price: Option<(String, manifest::InstancePrice)>,
    /// On-Demand and Spot, when the fleet may use Spot; `None`: all On-Demand.
    market: Option<simulate::MarketModel>,
}

/// Spot prices from AWS by instance type: (mean USD per instance-hour, points).
type AwsSpotPrices = std::collections::BTreeMap<String, (f64, usize)>;

/// The price of the fleet's instance types, from `prices` (a file) or the fleet's
/// `simulation.prices` (Spot prices from `aws` in place of the table's, when given), and
/// the market its capacity is bought in, when it may use Spot: one Spot pool per priced
/// instance type × subnet, each at its type's Spot price over its weight and its
/// interruption rate in that subnet.
fn pricing_of(
    fleet: &FleetSpec,
    prices: Option<&std::path::Path>,
    seed: u64,
    aws: Option<&AwsSpotPrices>,
) -> Result<Pricing, String> {
    let mut table = match prices {
        Some(path) => Some(manifest::load_prices(path)?),
        None => match fleet.simulation.as_ref().and_then(|s| s.prices.clone()) {
            Some(t) => {
                manifest::check_prices(&t).map_err(|e| format!("simulation.prices: {e}"))?;
                Some(t)
            }
            None => None,
        },
    };
    if aws.is_some() && table.is_none() {
        return Err("--spot-prices-from-aws needs a price table for the On-Demand price (simulation.prices or --prices FILE)".into());
    }
    // The fleet's types, in its order; without any, the table's only entry.
    let types: Vec<String> = match (&table, fleet.launch.type_names()) {
        (Some(t), names) if names.is_empty() => match t.len() {
            1 => t.keys().cloned().collect(),
            n => {
                return Err(format!(
                    "the price table has {n} instance types and the fleet names none: list the ones it runs in launch.instance_types"
                ))
            }
        },
        (_, names) => names,
    };
    if let (Some(t), Some(aws)) = (table.as_mut(), aws) {
        for (k, ty) in types.iter().enumerate() {
            let Some(p) = t.get_mut(ty) else { continue };
            match aws.get(ty) {
                Some((mean, n)) => {
                    if *mean > p.on_demand {
                        return Err(format!(
                            "--spot-prices-from-aws: {ty}'s Spot price ${mean:.4}/h is above the table's On-Demand price ${:.4}/h; update the table",
                            p.on_demand
                        ));
                    }
                    eprintln!(
                        "Spot price of {ty}: ${mean:.5}/h, the time-weighted mean of {n} DescribeSpotPriceHistory points (Linux/UNIX, each zone of {} weighted alike) over the last {SPOT_PRICE_DAYS} days",
                        fleet.region
                    );
                    // EC2's Spot discount is at most about 90%: far below that is more
                    // likely a wrong endpoint or a test double than a bargain.
                    if *mean < 0.05 * p.on_demand {
                        eprintln!(
                            "warning: {ty}'s Spot price ${mean:.5}/h is under 5% of the table's On-Demand ${:.4}/h; EC2's Spot discounts stop near 90%, so check the endpoint and region",
                            p.on_demand
                        );
                    }
                    p.spot = *mean;
                }
                None if k == 0 => {
                    return Err(format!(
                        "--spot-prices-from-aws: DescribeSpotPriceHistory has no Linux/UNIX price for {ty} in {} over the last {SPOT_PRICE_DAYS} days",
                        fleet.region
                    ))
                }
                None => eprintln!(
                    "note: DescribeSpotPriceHistory has no price for {ty} in {}; its Spot price stays the table's (${}/h)",
                    fleet.region, p.spot
                ),
            }
        }
    }
    let price = match (&table, types.first()) {
        (Some(t), Some(ty)) => {
            let mut p = t.get(ty).cloned().ok_or_else(|| {
                format!(
                    "the price table has no price for {ty}, the fleet's first instance type (it has {})",
                    t.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            // The replay counts capacity in the fleet's units: with weights, a unit costs
            // the type's price over its weight.
            let w = f64::from(fleet.launch.weight_of(ty));
            p.on_demand /= w;
            p.spot /= w;
            Some((ty.clone(), p))
        }
        _ => None,
    };
    let Some(d) = fleet
        .launch
        .instances_distribution
        .as_ref()
        .filter(|_| fleet.may_use_spot())
    else {
        return Ok(Pricing {
            price,
            market: None,
        });
    };
    let mut pools = Vec::new();
    if let Some(t) = &table {
        let subnets: Vec<Option<&str>> = if fleet.launch.subnets.is_empty() {
            vec![None]
        } else {
            fleet
                .launch
                .subnets
                .iter()
                .map(|s| Some(s.as_str()))
                .collect()
        };
        for ty in &types {
            let Some(p) = t.get(ty) else {
                eprintln!("note: the price table has no price for {ty}: its Spot pools are left out of the simulation");
                continue;
            };
            let w = f64::from(fleet.launch.weight_of(ty));
            if let Some(e) = p
                .spot_interruptions_per_hour
                .problem_for(&fleet.launch.subnets)
            {
                return Err(format!("the price table: {ty}: {e}"));
            }
            for subnet in &subnets {
                let rate = p.spot_interruptions_per_hour.of(*subnet).ok_or_else(|| {
                    format!(
                        "the price table gives {ty}'s spot_interruptions_per_hour per subnet and has none for {}",
                        subnet.unwrap_or("the launch template's subnet (list launch.subnets)")
                    )
                })?;
                pools.push(simulate::SpotPool {
                    name: match subnet {
                        Some(s) => format!("{ty} in {s}"),
                        None => ty.clone(),
                    },
                    interruptions_per_minute: rate / 60.0,
                    usd_per_hour: p.spot / w,
                });
            }
        }
    }
    Ok(Pricing {
        price,
        market: Some(simulate::MarketModel {
            on_demand_base: d.on_demand_base_capacity,
            on_demand_percent: d.on_demand_percentage_above_base_capacity,
            pools,
            allocation: d.spot_allocation_strategy,
            storms: Vec::new(),
            seed,
        }),
    })
}

/// The policy under test, then the baselines (target tracking and the HPA at each of
/// `targets`), then the static fleet, in the order reported.
fn lineup(
    tested: ManifestPolicy,
    capacity: f64,
    warmup: u32,
    targets: &[f64],
    peak: f64,
    (min, max): (u32, u32),
) -> Vec<Box<dyn Autoscaler + Send>> {
    let mut out: Vec<Box<dyn Autoscaler + Send>> = vec![Box::new(tested)];
    for &t in targets {
        out.push(Box::new(AwsTargetTracking::at_utilization(
            capacity, t, warmup, min, max,
        )));
        out.push(Box::new(Hpa::new(t, min, max)));
    }
    out.push(Box::new(StaticFleet {
        size: ceil_count(peak / capacity).max(min),
        label: "static (peak)".into(),
    }));
    out
}

/// `coxswain bench --simulate TRACE`: the whole replay (the default manifest, capacity for
/// 40 instances at the 99.9th-percentile minute, all four policies) `runs` times; the
/// median wall time with the policies on parallel threads, and each policy alone.
pub fn bench(trace_path: &std::path::Path, runs: usize) -> ExitCode {
    let runs = runs.max(1);
    let t0 = Instant::now();
    let trace = match Trace::load(trace_path) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let load = t0.elapsed();
    let fleet = match manifest::load_str("examples/simulate.yaml", DEFAULT_MANIFEST)
        .map_err(|e| e.to_string())
        .and_then(|c| pick_fleet(c, None))
    {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let replay = simulate::Replay::from_trace(&trace, 1.0);
    let capacity = simulate::percentile(&replay.demand, 0.999) / 40.0;
    if !capacity.is_finite() || capacity <= 0.0 {
        return fail("the trace has no traffic");
    }
    let mut fleet = fleet;
    if let Some(s) = fleet.simulation.as_mut() {
        s.capacity_per_instance = capacity;
    }
    let world = World {
        capacity,
        boot: 3,
        lag: 1,
    };
    let peak = replay.demand.iter().copied().fold(0.0, f64::max);
    let bounds = (fleet.capacity.min, fleet.capacity.max);
    let initial = replay
        .demand
        .first()
        .map(|d| ceil_count(d / capacity))
        .unwrap_or(0)
        .clamp(bounds.0, bounds.1);
    let make = || {
        lineup(
            ManifestPolicy::new(fleet.clone()),
            capacity,
            4,
            &[0.7],
            peak,
            bounds,
        )
    };
    let mut parallel = Vec::with_capacity(runs);
    let mut alone: Vec<Vec<Duration>> = (0..4).map(|_| Vec::with_capacity(runs)).collect();
    let mut names = Vec::new();
    for _ in 0..runs {
        let mut ps = make();
        let t = Instant::now();
        let out = run_all(&mut ps, &replay, world, initial, None);
        parallel.push(t.elapsed());
        names = out.iter().map(|r| r.policy.clone()).collect();
        for (i, p) in make().iter_mut().enumerate() {
            let t = Instant::now();
            let r = simulate::run(p.as_mut(), &replay, world, initial);
            if let Some(v) = alone.get_mut(i) {
                v.push(t.elapsed());
            }
            std::hint::black_box(r);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (_, peak_rss) = crate::bench::rss_kib();
    println!(
        "simulate bench: {} ({} minutes), {runs} runs, medians",
        trace_path.display(),
        replay.demand.len()
    );
    println!("  load and parse the trace       {:>9.1} ms", ms(load));
    println!(
        "  all {} policies (threads)       {:>9.1} ms",
        names.len(),
        ms(median(&mut parallel))
    );
    let mut sum = Duration::ZERO;
    for (name, v) in names.iter().zip(alone.iter_mut()) {
        let m = median(v);
        sum += m;
        println!("  {name:<48} {:>9.1} ms alone", ms(m));
    }
    println!("  sum of the policies alone      {:>9.1} ms", ms(sum));
    println!(
        "  peak RSS                       {:>9.1} MiB",
        peak_rss as f64 / 1024.0
    );
    ExitCode::SUCCESS
}
