//! Loading and validating manifests. Every problem is reported as `file:line:column:
//! message`, and a file with any problem yields no config at all: a half-valid set of
//! fleets is never returned.

use super::{
    ControllerSpec, CronSchedule, FleetSpec, LaunchSpec, PolicySpec, SimulationSpec, TrafficSpec,
};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// One thing wrong with a manifest, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} problem(s) in manifests:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error(
        "no fleet manifests found in {0}: add a *.yaml file with a fleet (see manifests/ and examples/)"
    )]
    Empty(String),
}

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub controller: ControllerSpec,
    pub fleets: Vec<FleetSpec>,
    /// Hash of every source text, to notice when files change.
    pub fingerprint: u64,
}

impl Config {
    pub fn fleet(&self, name: &str) -> Option<&FleetSpec> {
        self.fleets.iter().find(|f| f.name == name)
    }
}

/// Files named by `paths`: files as given, and every `*.yaml`/`*.yml` under a directory,
/// its subdirectories included (hidden ones, starting with `.`, skipped), sorted by path
/// for a stable order. `validate` and `run` read the same list.
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| ManifestError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            collect_yaml(p, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Every `*.yaml`/`*.yml` file under `dir`, recursively, skipping hidden entries.
fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| ManifestError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            )
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Load and validate everything under `paths`.
pub fn load_paths(paths: &[PathBuf]) -> Result<Config, ManifestError> {
    let files = manifest_files(paths)?;
    let mut sources = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| ManifestError::Io {
            path: f.clone(),
            source,
        })?;
        sources.push((
            f.display().to_string(),
            text,
            f.parent().map(Path::to_path_buf),
        ));
    }
    let described = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    load_sources(&sources, &described)
}

/// Load and validate one manifest text (`name` is used in messages).
pub fn load_str(name: &str, text: &str) -> Result<Config, ManifestError> {
    load_sources(&[(name.to_string(), text.to_string(), None)], name)
}

/// A parsed fleet with its file, its document's text and that document's line offset.
type ParsedFleet = (FleetSpec, String, String, usize);

fn load_sources(
    sources: &[(String, String, Option<PathBuf>)],
    described: &str,
) -> Result<Config, ManifestError> {
    let mut problems = Vec::new();
    let mut fleets: Vec<ParsedFleet> = Vec::new();
    let mut controllers: Vec<(ControllerSpec, String)> = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (file, text, dir) in sources {
        file.hash(&mut hasher);
        text.hash(&mut hasher);
        parse_file(file, text, &mut fleets, &mut controllers, &mut problems);
        // Resolve relative trace paths against the manifest's folder.
        if let Some(dir) = dir {
            for (f, _, _, _) in fleets.iter_mut().filter(|(_, src, _, _)| src == file) {
                if let Some(SimulationSpec {
                    traffic: TrafficSpec::Trace(t),
                    ..
                }) = f.simulation.as_mut()
                {
                    if t.path.is_relative() {
                        t.path = dir.join(&t.path);
                    }
                }
            }
        }
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (fleet, file, text, offset) in &fleets {
        validate_fleet(fleet, file, text, *offset, &mut problems);
        if let Some(first) = seen.insert(fleet.name.clone(), file.clone()) {
            let (line, column) = locate(text, &["name"]);
            problems.push(Problem {
                file: file.clone(),
                line: line + offset,
                column,
                message: format!(
                    "fleet name '{}' is already used in {first}: fleet names must be unique",
                    fleet.name
                ),
            });
        }
    }
    if controllers.len() > 1 {
        let (_, file) = &controllers[1];
        problems.push(Problem {
            file: file.clone(),
            line: 1,
            column: 1,
            message: "a second `kind: Controller` document: keep controller settings in one place"
                .into(),
        });
    }
    for (c, file) in &controllers {
        validate_controller(c, file, &mut problems);
        // The global cap is a hard invariant: fleets that must keep their minimums
        // would break it from the first pass.
        let minimums: u64 = fleets
            .iter()
            .map(|(f, _, _, _)| u64::from(f.capacity.min))
            .sum();
        if let Some(cap) = c
            .max_total_instances
            .filter(|cap| u64::from(*cap) < minimums)
        {
            problems.push(Problem {
                file: file.clone(),
                line: 1,
                column: 1,
                message: format!(
                    "max_total_instances: {cap} is below the fleets' capacity.min added up ({minimums}): the cap could never hold; raise it or lower the minimums"
                ),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ManifestError::Invalid(problems));
    }
    if fleets.is_empty() {
        return Err(ManifestError::Empty(described.to_string()));
    }
    Ok(Config {
        controller: controllers
            .into_iter()
            .next()
            .map(|(c, _)| c)
            .unwrap_or_default(),
        fleets: fleets.into_iter().map(|(f, _, _, _)| f).collect(),
        fingerprint: hasher.finish(),
    })
}

fn yaml_problem(file: &str, err: &serde_yaml::Error, hint_offset_line: usize) -> Problem {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((hint_offset_line, 1));
    let mut message = err.to_string();
    // serde_yaml appends " at line L column C"; we already lead with the location.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if message.contains("unknown field") {
        message.push_str(" (check the spelling; see docs/manifest-reference.md for every field)");
    }
    if message.contains("missing field") {
        message.push_str(" (add it; see manifests/ for complete fleets)");
    }
    Problem {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// Split a file into documents, remembering each one's text (for locating keys).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                docs.push((start_line, std::mem::take(&mut current)));
            }
            current.clear();
            start_line = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((start_line, current));
    }
    docs
}

fn parse_file(
    file: &str,
    text: &str,
    fleets: &mut Vec<ParsedFleet>,
    controllers: &mut Vec<(ControllerSpec, String)>,
    problems: &mut Vec<Problem>,
) {
    for (start_line, doc) in documents(text) {
        let shift = |mut p: Problem| {
            p.line += start_line - 1;
            p
        };
        let value: serde_yaml::Value = match serde_yaml::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                problems.push(shift(yaml_problem(file, &e, 1)));
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("Fleet")
            .to_string();
        match kind.as_str() {
            "Fleet" => match serde_yaml::from_str::<FleetSpec>(&doc) {
                Ok(f) => fleets.push((f, file.to_string(), doc.clone(), start_line - 1)),
                Err(e) => problems.push(shift(yaml_problem(file, &e, 1))),
            },
            "Controller" => match serde_yaml::from_str::<ControllerSpec>(&doc) {
                Ok(c) => controllers.push((c, file.to_string())),
                Err(e) => problems.push(shift(yaml_problem(file, &e, 1))),
            },
            other => {
                let (line, column) = locate(&doc, &["kind"]);
                problems.push(shift(Problem {
                    file: file.to_string(),
                    line,
                    column,
                    message: format!(
                        "unknown kind '{other}': a document is `kind: Fleet` (the default) or `kind: Controller`"
                    ),
                }));
            }
        }
    }
}

/// Find the line and column of a key path (block-style YAML) in a document. Falls back to
/// the deepest key found, then to line 1. Good enough to point a human at the right line.
pub(crate) fn locate(text: &str, path: &[&str]) -> (usize, usize) {
    let mut best = (1, 1);
    let mut depth = 0;
    let mut min_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        if depth >= path.len() {
            break;
        }
        let stripped = line.trim_start();
        let indent = line.len() - stripped.len();
        let stripped_item = stripped.trim_start_matches("- ");
        let item_indent = indent + (stripped.len() - stripped_item.len());
        if let Some(min) = min_indent {
            if !stripped.is_empty() && !stripped.starts_with('#') && indent < min {
                break;
            }
        }
        let key = path[depth];
        if stripped_item.starts_with(&format!("{key}:")) {
            best = (i + 1, item_indent + 1);
            depth += 1;
            min_indent = Some(item_indent + 1);
        }
    }
    best
}

/// Dimensions that AWS never publishes a metric of this namespace by: such a query reads
/// nothing, forever. Only the two namespaces coxswain's policies are built on are checked;
/// `coxswain:fleet` on `AWS/EC2` is read per `InstanceId` by coxswain itself.
fn unpublished_dimensions(m: &super::MetricSpec) -> Option<String> {
    let allowed: &[&str] = match m.namespace.as_str() {
        "AWS/ApplicationELB" => &["TargetGroup", "LoadBalancer", "AvailabilityZone"],
        "AWS/EC2" => &[
            "InstanceId",
            "AutoScalingGroupName",
            "ImageId",
            "InstanceType",
            crate::cloud::tags::FLEET,
        ],
        _ => return None,
    };
    let bad: Vec<&str> = m
        .dimensions
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{} does not publish {} by {}: it reads no data, ever; use one of {}",
            m.namespace,
            m.name,
            bad.join(", "),
            allowed.join(", ")
        )
    })
}

fn validate_controller(c: &ControllerSpec, file: &str, problems: &mut Vec<Problem>) {
    if c.controller_id.is_empty()
        || !c
            .controller_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        problems.push(Problem {
            file: file.into(),
            line: 1,
            column: 1,
            message: "controller_id must be letters, digits, '-' or '_' (it becomes a tag value)"
                .into(),
        });
    }
    for (i, sink) in c.notifications.sinks.iter().enumerate() {
        let (url, url_env) = match sink {
            super::SinkSpec::Slack(s) => (s.url.as_deref(), s.url_env.as_deref()),
            super::SinkSpec::Opsgenie(o) => (Some(o.url.as_str()), None),
        };
        let problem = match (url, url_env) {
            (Some(_), Some(_)) | (None, None) => Some(
                "a slack sink needs exactly one of `url` and `url_env` (an environment variable holding the URL)".to_string(),
            ),
            (Some(u), None) => webhook_url_problem(u),
            (None, Some(_)) => None,
        };
        if let Some(p) = problem {
            problems.push(Problem {
                file: file.into(),
                line: 1,
                column: 1,
                message: format!("notifications.sinks[{i}]: {p}"),
            });
        }
    }
    if c.max_total_instances == Some(0) {
        problems.push(Problem {
            file: file.into(),
            line: 1,
            column: 1,
            message:
                "max_total_instances: 0 would stop every fleet; remove it or set a positive cap"
                    .into(),
        });
    }
    if c.poll_interval.as_secs() == 0 {
        problems.push(Problem {
            file: file.into(),
            line: 1,
            column: 1,
            message: "poll_interval must be at least 1s".into(),
        });
    }
}

const STATS: &[&str] = &["Average", "Sum", "Maximum", "Minimum", "SampleCount"];

fn valid_stat(s: &str) -> bool {
    STATS.contains(&s)
        || s.strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| (0.0..=100.0).contains(&p))
}

fn validate_fleet(
    f: &FleetSpec,
    file: &str,
    text: &str,
    offset: usize,
    problems: &mut Vec<Problem>,
) {
    let mut push = |path: &[&str], message: String| {
        let (line, column) = locate(text, path);
        problems.push(Problem {
            file: file.into(),
            line: line + offset,
            column,
            message,
        });
    };
    let name_ok = !f.name.is_empty()
        && f.name.len() <= 64
        && f.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        push(
            &["name"],
            format!(
                "fleet name '{}' must be 1-64 characters of a-z, 0-9 and '-' (it becomes a tag value)",
                f.name
            ),
        );
    }
    if f.environment.trim().is_empty() {
        push(
            &["environment"],
            "environment must not be empty (e.g. staging, production)".into(),
        );
    }
    if f.region.trim().is_empty() {
        push(
            &["region"],
            "region must not be empty (e.g. us-east-1)".into(),
        );
    }
    if f.capacity.min > f.capacity.max {
        push(
            &["capacity", "min"],
            format!(
                "capacity.min ({}) is above capacity.max ({}): make min <= max",
                f.capacity.min, f.capacity.max
            ),
        );
    }
    if f.capacity.max == 0 {
        push(
            &["capacity", "max"],
            "capacity.max must be at least 1".into(),
        );
    }
    validate_launch(&f.launch, f.auto_scaling_group.is_some(), &mut push);
    if f.auto_scaling_group.is_some() && f.target_group_arn.is_some() {
        push(
            &["target_group_arn"],
            "target_group_arn is for fleets coxswain launches itself; an Auto Scaling group registers its own instances (attach the target group to the group)".into(),
        );
    }
    if let Some(k) = f.launch.tags.keys().find(|k| k.starts_with("coxswain:")) {
        push(
            &["launch", "tags"],
            format!(
                "tag '{k}': the coxswain: prefix is reserved for the tags coxswain sets itself"
            ),
        );
    }
    let s = &f.scaling;
    if s.max_launch_per_cycle == 0 {
        push(
            &["scaling", "max_launch_per_cycle"],
            "max_launch_per_cycle must be at least 1, or the fleet could never grow".into(),
        );
    }
    if s.max_retire_per_cycle == 0 {
        push(
            &["scaling", "max_retire_per_cycle"],
            "max_retire_per_cycle must be at least 1, or the fleet could never shrink".into(),
        );
    }
    // scaling.repair (controller/repair.rs).
    if let Some(life) = s.repair.max_instance_lifetime {
        if f.auto_scaling_group.is_some() {
            push(
                &["scaling", "repair", "max_instance_lifetime"],
                "max_instance_lifetime is for fleets coxswain launches itself: set MaxInstanceLifetime on the Auto Scaling group instead".into(),
            );
        } else if life < super::MIN_INSTANCE_LIFETIME {
            push(
                &["scaling", "repair", "max_instance_lifetime"],
                format!("max_instance_lifetime {life} is below one day (1d), the least an Auto Scaling group accepts too"),
            );
        }
    }
    if s.policies.is_empty() {
        push(
            &["scaling", "policies"],
            "no scaling policies: add at least one (predictive, target_tracking, step or scheduled), or the fleet stays at capacity.min".into(),
        );
    }
    for p in &s.policies {
        if let Some(m) = p.metric() {
            if !valid_stat(&m.stat) {
                push(
                    &["scaling", "policies", "stat"],
                    format!(
                        "unknown statistic '{}': use Average, Sum, Maximum, Minimum, SampleCount or a percentile like p99",
                        m.stat
                    ),
                );
            }
            let p_secs = m.period.as_secs();
            if !(matches!(p_secs, 1 | 5 | 10 | 30) || (p_secs >= 60 && p_secs % 60 == 0)) {
                push(
                    &["scaling", "policies", "period"],
                    format!(
                        "metric period {} is not one CloudWatch accepts: use 1s, 5s, 10s, 30s or a multiple of 60s",
                        m.period
                    ),
                );
            }
            if p_secs > 3600 {
                push(
                    &["scaling", "policies", "period"],
                    format!(
                        "metric period {} is longer than an hour: a scaling policy cannot react to it; publish the metric more often",
                        m.period
                    ),
                );
            }
            if m.namespace.is_empty() || m.name.is_empty() {
                push(
                    &["scaling", "policies", "metric"],
                    "metric needs a namespace and a name".into(),
                );
            }
            if let Some(why) = unpublished_dimensions(m) {
                push(&["scaling", "policies", "dimensions"], why);
            }
        }
        match p {
            PolicySpec::TargetTracking(t) => {
                if !(t.target.is_finite() && t.target > 0.0) {
                    push(
                        &["scaling", "policies", "target"],
                        format!("target {} must be a positive number", t.target),
                    );
                }
            }
            PolicySpec::Step(st) => {
                if st.scale_out.is_empty() && st.scale_in.is_empty() {
                    push(
                        &["scaling", "policies", "step"],
                        "a step policy needs scale_out or scale_in steps".into(),
                    );
                }
                if st
                    .scale_out
                    .iter()
                    .any(|a| a.above.is_none() || a.below.is_some())
                {
                    push(
                        &["scaling", "policies", "scale_out"],
                        "each scale_out step needs `above: VALUE` (and no `below`)".into(),
                    );
                }
                if st
                    .scale_in
                    .iter()
                    .any(|a| a.below.is_none() || a.above.is_some())
                {
                    push(
                        &["scaling", "policies", "scale_in"],
                        "each scale_in step needs `below: VALUE` (and no `above`)".into(),
                    );
                }
                let lowest_out = st
                    .scale_out
                    .iter()
                    .filter_map(|a| a.above)
                    .fold(f64::INFINITY, f64::min);
                let highest_in = st
                    .scale_in
                    .iter()
                    .filter_map(|a| a.below)
                    .fold(f64::NEG_INFINITY, f64::max);
                if highest_in >= lowest_out {
                    push(
                        &["scaling", "policies", "scale_in"],
                        format!("scale_in threshold {highest_in} is not below scale_out threshold {lowest_out}: the fleet would flap"),
                    );
                }
            }
            PolicySpec::Predictive(pr) => {
                match pr.capacity(f) {
                    Some(c) if c.is_finite() && c > 0.0 => {}
                    Some(c) => push(
                        &["scaling", "policies", "capacity_per_instance"],
                        format!("capacity_per_instance {c} must be a positive number"),
                    ),
                    None => push(
                        &["scaling", "policies", "predictive"],
                        "a predictive policy needs capacity_per_instance: the requests per metric period one instance serves at 100%".into(),
                    ),
                }
                if pr.metric.kind != crate::manifest::MetricKind::Total {
                    push(
                        &["scaling", "policies", "kind"],
                        "a predictive policy reads the fleet's total demand: use a request count with `stat: Sum` and `kind: total`".into(),
                    );
                }
                let p_secs = pr.metric.period.as_secs();
                if p_secs < 60 || 86_400 % p_secs != 0 {
                    push(
                        &["scaling", "policies", "period"],
                        format!("a predictive policy needs a period of a whole number of minutes that divides a day (1m, 5m, 15m, ...), not {}", pr.metric.period),
                    );
                }
                let h = pr.history.as_secs();
                if !(86_400..=15 * 86_400).contains(&h) {
                    push(
                        &["scaling", "policies", "history"],
                        format!("history {} must be between 1d and 15d (CloudWatch keeps 1-minute data 15 days)", pr.history),
                    );
                }
                if !(pr.loss_budget.0 > 0.0 && pr.loss_budget.0 <= 0.1) {
                    push(
                        &["scaling", "policies", "loss_budget"],
                        format!(
                            "loss_budget {} must be above 0 and at most 10%",
                            pr.loss_budget.0
                        ),
                    );
                }
            }
            PolicySpec::Scheduled(sc) => {
                // The cron itself is checked in validate_schedules.
                if sc.duration.as_secs() == 0 {
                    push(
                        &["scaling", "policies", "duration"],
                        "a scheduled window needs a duration above 0".into(),
                    );
                }
                if sc.min > f.capacity.max {
                    push(
                        &["scaling", "policies", "min"],
                        format!("scheduled min {} is above capacity.max {}: raise max or lower the floor", sc.min, f.capacity.max),
                    );
                }
            }
        }
    }
    validate_deploy(&f.deploy, &f.capacity, &mut push);
    if let Some(sim) = &f.simulation {
        if !(sim.capacity_per_instance.is_finite() && sim.capacity_per_instance > 0.0) {
            push(
                &["simulation", "capacity_per_instance"],
                "capacity_per_instance must be a positive number of requests per minute".into(),
            );
        }
        match &sim.traffic {
            TrafficSpec::Synthetic(t) => {
                if !(t.base >= 0.0 && t.peak >= t.base && t.peak.is_finite()) {
                    push(
                        &["simulation", "traffic", "peak"],
                        "synthetic traffic needs 0 <= base <= peak".into(),
                    );
                }
                if !(0.0..=1.0).contains(&t.noise) {
                    push(
                        &["simulation", "traffic", "noise"],
                        "noise is a fraction between 0 and 1".into(),
                    );
                }
                for b in &t.bursts {
                    if !(b.factor.is_finite() && b.factor > 0.0) {
                        push(
                            &["simulation", "traffic", "bursts", "factor"],
                            "burst factor must be positive".into(),
                        );
                    }
                }
            }
            TrafficSpec::Trace(t) => {
                if !(t.scale.is_finite() && t.scale > 0.0) {
                    push(
                        &["simulation", "traffic", "trace", "scale"],
                        "trace scale must be positive".into(),
                    );
                }
            }
        }
    }
    validate_schedules(f, file, text, offset, problems);
}

/// Every cron of the fleet (scheduled policies, freeze windows, traffic bursts) is a
/// 5-field schedule that can fire, reported at the cron's own value.
fn validate_schedules(
    f: &FleetSpec,
    file: &str,
    text: &str,
    offset: usize,
    problems: &mut Vec<Problem>,
) {
    let mut report = |path: &[&str], nth: usize, message: String| {
        let (line, column) = locate_scalar(text, path, nth).unwrap_or_else(|| locate(text, path));
        problems.push(Problem {
            file: file.into(),
            line: line + offset,
            column,
            message,
        });
    };
    let scheduled = f.scaling.policies.iter().filter_map(|p| match p {
        PolicySpec::Scheduled(s) => Some(s),
        _ => None,
    });
    for (i, sc) in scheduled.enumerate() {
        if let Err(e) = CronSchedule::parse(&sc.cron) {
            report(
                &["scaling", "policies", "scheduled", "cron"],
                i,
                e.to_string(),
            );
        }
    }
    for (i, fr) in f.deploy.freeze.iter().enumerate() {
        if let Err(e) = CronSchedule::parse(&fr.cron) {
            report(&["deploy", "freeze", "cron"], i, format!("freeze {e}"));
        }
    }
    if let Some(SimulationSpec {
        traffic: TrafficSpec::Synthetic(t),
        ..
    }) = &f.simulation
    {
        for (i, b) in t.bursts.iter().enumerate() {
            if let Err(e) = CronSchedule::parse(&b.cron) {
                report(
                    &["simulation", "traffic", "synthetic", "bursts", "cron"],
                    i,
                    format!("burst {e}"),
                );
            }
        }
    }
}

/// The line and column of the `nth` (from 0) value at `path` in a YAML document: `path`
/// names map keys from the document's root, list items are passed through. Exact for
/// block and flow style alike, because the YAML parser itself reports where it stood when
/// the value was reached. `None` if there is no such value.
fn locate_scalar(text: &str, path: &[&str], nth: usize) -> Option<(usize, usize)> {
    use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess};
    use std::cell::Cell;
    const FOUND: &str = "coxswain: value located";

    struct Seek<'a> {
        path: &'a [&'a str],
        left: &'a Cell<usize>,
    }
    impl Seek<'_> {
        /// At the end of the path: stop here if this is the wanted occurrence.
        fn arrive<E: de::Error>(&self) -> Result<(), E> {
            match self.left.get() {
                0 => Err(E::custom(FOUND)),
                n => {
                    self.left.set(n - 1);
                    Ok(())
                }
            }
        }
    }
    impl<'de> DeserializeSeed<'de> for Seek<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    macro_rules! scalar {
        ($($name:ident: $ty:ty),*) => {$(
            fn $name<E: de::Error>(self, _: $ty) -> Result<(), E> {
                if self.path.is_empty() { self.arrive() } else { Ok(()) }
            }
        )*};
    }
    impl<'de> de::Visitor<'de> for Seek<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any YAML value")
        }
        scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            if self.path.is_empty() {
                self.arrive()
            } else {
                Ok(())
            }
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            if self.path.is_empty() {
                self.arrive()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            let (path, left) = (self.path, self.left);
            while seq.next_element_seed(Seek { path, left })?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            if self.path.is_empty() {
                self.arrive()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            while let Some(key) = map.next_key::<serde_yaml::Value>()? {
                match self.path.split_first() {
                    Some((first, rest)) if key.as_str() == Some(*first) => {
                        map.next_value_seed(Seek {
                            path: rest,
                            left: self.left,
                        })?;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    let left = Cell::new(nth);
    match (Seek { path, left: &left }).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

fn validate_deploy(
    d: &super::DeploySpec,
    capacity: &super::CapacitySpec,
    push: &mut impl FnMut(&[&str], String),
) {
    if let super::StrategySpec::Rolling(r) = &d.strategy {
        // Unavailability rounds down: the smallest fleet decides whether a rollout can
        // take anything out of service.
        let out_at_min = r.max_unavailable.of_down(capacity.min.max(1));
        if r.max_surge.is_zero() && out_at_min == 0 {
            push(
                &["deploy", "strategy", "rolling"],
                format!(
                    "max_surge 0 with max_unavailable {} ({out_at_min} of capacity.min {}) can never replace an instance: allow a surge (e.g. max_surge: 1) or an unavailable instance",
                    r.max_unavailable,
                    capacity.min
                ),
            );
        }
    }
    if d.gates.instance.smoke_command.is_some() && d.gates.instance.smoke_attempts == 0 {
        push(
            &["deploy", "gates", "instance", "smoke_attempts"],
            "smoke_attempts 0 would fail every instance before its smoke command runs: use 1 or more".into(),
        );
    }
    if let super::StrategySpec::Canary(c) = &d.strategy {
        if c.steps.is_empty() {
            push(
                &["deploy", "strategy", "steps"],
                "a canary needs at least one step, e.g. [1, \"10%\", \"100%\"]".into(),
            );
        }
    }
    if d.gates.timeout.as_secs() == 0 || d.gates.interval.as_secs() == 0 {
        push(
            &["deploy", "gates"],
            "gates.timeout and gates.interval must be above 0".into(),
        );
    }
    if let Some(c) = &d.gates.canary_analysis {
        if !(c.alpha > 0.0 && c.alpha < 1.0) || c.min_samples < 2 {
            push(
                &["deploy", "gates", "canary_analysis"],
                "canary_analysis needs 0 < alpha < 1 and min_samples of at least 2".into(),
            );
        }
    }
    for h in d.hooks.pre_deploy.iter().chain(&d.hooks.post_deploy) {
        if h.command.is_empty() {
            push(
                &["deploy", "hooks"],
                "a hook needs a command: [program, args...]".into(),
            );
        }
    }
}

fn validate_launch(l: &LaunchSpec, has_group: bool, push: &mut impl FnMut(&[&str], String)) {
    match (&l.launch_template, &l.ami) {
        (Some(_), Some(_)) => push(
            &["launch", "ami"],
            "give either launch.launch_template or launch.ami, not both".into(),
        ),
        (None, None) if !has_group => push(
            &["launch"],
            "launch needs a launch_template (id or name, and version) or an ami with instance_types".into(),
        ),
        (Some(lt), None) => {
            if lt.id.is_some() == lt.name.is_some() {
                push(
                    &["launch", "launch_template"],
                    "launch_template needs exactly one of id or name".into(),
                );
            }
            let v = lt.version.as_str();
            if !(v == "$Latest" || v == "$Default" || v.parse::<u64>().is_ok()) {
                push(
                    &["launch", "launch_template", "version"],
                    format!("launch template version '{v}' must be a number, $Latest or $Default"),
                );
            }
        }
        (None, Some(ami)) => {
            if !ami.starts_with("ami-") {
                push(&["launch", "ami"], format!("'{ami}' is not an AMI id (ami-...)"));
            }
            if l.instance_types.is_empty() {
                push(
                    &["launch", "instance_types"],
                    "an ami launch needs instance_types, in order of preference".into(),
                );
            }
        }
        (None, None) => {}
    }
}

/// Webhooks carry secrets and alerts: https, or plain http to this host only (tests,
/// a local relay).
pub fn webhook_url_problem(url: &str) -> Option<String> {
    if url.starts_with("https://") {
        return None;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("the webhook URL is not an http(s) URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let loopback = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| host_port == *h || host_port.starts_with(&format!("{h}:")));
    if loopback && !authority.contains('@') {
        return None;
    }
    // The path of a webhook URL is often its secret: it stays out of the message.
    Some(
        "a plain http:// webhook to another host: webhooks carry secrets and alerts, use https://"
            .into(),
    )
}
