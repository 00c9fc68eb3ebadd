//! Notifications: what happened, told to chat (Slack-compatible webhooks) and to on-call
//! (OpsGenie's Alert API).
//!
//! - [`Watch`] turns passes into news, edge-triggered: a rollout started, succeeded or
//!   rolled back; a decision moved a fleet by at least the threshold; a fleet hit its cost
//!   cap; a fleet's metrics went missing (and came back); a fleet's repair halted (and
//!   resumed). Pure: tested without a network.
//! - [`Notifier`] delivers. Each sink has its own queue and task; the control loop only
//!   puts a note on the queue ([`Notifier::send`] never waits). A delivery is retried with
//!   backoff and jitter on network errors, 429 and 5xx; a full queue drops the note and
//!   says so in the log rather than slow the daemon down.

use crate::controller::PassReport;
use crate::manifest::{NotificationsSpec, NotifyEvent, SinkSpec};
use crate::store::{Outcome, Store};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rand::Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// How urgent a note is (OpsGenie priority, the Slack emoji).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One piece of news.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub event: NotifyEvent,
    pub severity: Severity,
    pub fleet: String,
    /// One line.
    pub title: String,
    /// More detail (the decision's reason, the gate that failed).
    pub detail: String,
    /// Same alias, same incident (OpsGenie de-duplicates on it).
    pub alias: String,
    /// The incident under `alias` is over (OpsGenie closes the alert).
    pub resolves: bool,
}

/// Remembers what was already announced, so each change is told once.
///
/// Rollouts: a start is told when a rollout first shows in a pass; an end when the ledger
/// says it finished (succeeded or rolled back) at or after `since`, the daemon's start.
/// So a pass that could not see the fleet tells nothing, a rollback in a pre-deploy hook
/// (which never shows as running) is still told, and a restart does not repeat the news
/// of rollouts that ended before it. Rows taken over from another replica are marked as
/// told ([`Watch::mark_told`]): that replica told them.
#[derive(Debug)]
pub struct Watch {
    since: chrono::DateTime<chrono::Utc>,
    /// The ledger is read from here on: an hour before the latest end told (a bounded
    /// read each pass, however long the daemon runs).
    cursor: chrono::DateTime<chrono::Utc>,
    /// Rollouts told as started: id → (fleet, from, to).
    started: BTreeMap<i64, (String, String, String)>,
    ended: BTreeSet<i64>,
    /// Fleets told to be at their cap: how many passes in a row they have been below it.
    capped: BTreeMap<String, u32>,
    missing: BTreeSet<String>,
    /// The last scale event told per fleet (from, to), so a decision that repeats (a
    /// dry run, a launch that keeps failing) is told once.
    scaled: BTreeMap<String, (u32, u32)>,
    /// Fleets told to have their repair halted (told again only once it has resumed).
    repair_halted: BTreeSet<String>,
    /// Fleets told to be short of their decided capacity (told again once caught up).
    short: BTreeSet<String>,
}

/// A fleet that hovers at its cap would be announced every other pass; it counts as off
/// the cap only after this many passes in a row below it.
const CAP_CLEARS_AFTER: u32 = 10;

impl Watch {
    pub fn new(since: chrono::DateTime<chrono::Utc>) -> Self {
        Watch {
            since,
            cursor: since,
            started: BTreeMap::new(),
            ended: BTreeSet::new(),
            capped: BTreeMap::new(),
            missing: BTreeSet::new(),
            scaled: BTreeMap::new(),
            repair_halted: BTreeSet::new(),
            short: BTreeSet::new(),
        }
    }

    /// Rows taken over with a fleet: another replica told their start, and the end of the
    /// finished ones. The end of one still running is told by whoever finishes it.
    pub fn mark_told(&mut self, rows: &[crate::store::Deployment]) {
        for d in rows {
            self.started
                .entry(d.id)
                .or_insert_with(|| (d.fleet.clone(), String::new(), d.build.clone()));
            if d.outcome != Outcome::InProgress {
                self.ended.insert(d.id);
            }
        }
    }

    /// The news in one pass. `store` is the ledger (how rollouts ended).
    pub fn news(
        &mut self,
        report: &PassReport,
        store: Option<&Store>,
        scale_threshold: u32,
    ) -> Vec<Note> {
        let mut out = Vec::new();
        for r in &report.rollouts {
            if self.started.contains_key(&r.id) {
                continue;
            }
            self.started
                .insert(r.id, (r.fleet.clone(), r.from.clone(), r.to.clone()));
            // Running since before this daemon started: told by the one before it.
            let before = store
                .and_then(|s| s.deployment(r.id).ok().flatten())
                .is_some_and(|d| d.started_at < self.since);
            if before {
                continue;
            }
            out.push(Note {
                event: NotifyEvent::RolloutStarted,
                severity: Severity::Info,
                fleet: r.fleet.clone(),
                title: format!(
                    "rollout #{} started on {}: {} → {}",
                    r.id, r.fleet, r.from, r.to
                ),
                detail: format!("phase {}", r.phase),
                alias: format!("coxswain-rollout-{}", r.id),
                resolves: false,
            });
        }
        let finished = store
            .and_then(|s| s.deployments_since(self.cursor).ok())
            .unwrap_or_default();
        if let Some(latest) = finished.iter().filter_map(|d| d.finished_at).max() {
            self.cursor = self
                .cursor
                .max(latest - chrono::Duration::hours(1))
                .max(self.since);
        }
        for d in finished {
            if self.ended.contains(&d.id)
                || !matches!(d.outcome, Outcome::Succeeded | Outcome::RolledBack)
                || d.finished_at.is_none_or(|t| t < self.since)
            {
                continue;
            }
            self.ended.insert(d.id);
            let (id, fleet, to) = (d.id, d.fleet.clone(), d.build.clone());
            let from = self
                .started
                .get(&id)
                .map(|s| s.1.clone())
                .filter(|f| !f.is_empty());
            out.push(match d.outcome {
                Outcome::Succeeded => Note {
                    event: NotifyEvent::RolloutSucceeded,
                    severity: Severity::Info,
                    fleet: fleet.clone(),
                    title: format!("rollout #{id} succeeded: {to} is live on {fleet}"),
                    detail: from.map(|f| format!("replaced {f}")).unwrap_or_default(),
                    alias: format!("coxswain-rollout-{id}"),
                    resolves: false,
                },
                _ => Note {
                    event: NotifyEvent::RolloutRolledBack,
                    severity: Severity::Critical,
                    fleet: fleet.clone(),
                    title: match from {
                        Some(f) => format!("rollout #{id} rolled back on {fleet}: {to} → {f}"),
                        None => format!("rollout #{id} of {to} rolled back on {fleet}"),
                    },
                    detail: d.reason.clone().unwrap_or_default(),
                    alias: format!("coxswain-rollout-{id}"),
                    resolves: false,
                },
            });
        }
        for f in &report.fleets {
            let d = &f.decision;
            let change = d.desired.abs_diff(d.current);
            let repeat = self.scaled.get(&d.fleet) == Some(&(d.current, d.desired));
            if scale_threshold > 0 && change >= scale_threshold && !repeat {
                self.scaled.insert(d.fleet.clone(), (d.current, d.desired));
                let verb = if d.desired > d.current { "out" } else { "in" };
                out.push(Note {
                    event: NotifyEvent::Scale,
                    severity: Severity::Info,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{} scaling {verb} by {change}: {} → {} instances",
                        d.fleet, d.current, d.desired
                    ),
                    detail: d.reason(),
                    alias: format!("coxswain-scale-{}", d.fleet),
                    resolves: false,
                });
            }
            let capped = d.capped();
            let told = self.capped.contains_key(&d.fleet);
            if capped {
                self.capped.insert(d.fleet.clone(), 0);
            } else if let Some(streak) = self.capped.get_mut(&d.fleet) {
                *streak += 1;
                if *streak >= CAP_CLEARS_AFTER {
                    self.capped.remove(&d.fleet);
                }
            }
            if capped && !told {
                out.push(Note {
                    event: NotifyEvent::CostCap,
                    severity: Severity::Warning,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{} is at its cost cap: its policies want {} instances, it is held at {}",
                        d.fleet, d.recommended, d.desired
                    ),
                    detail: d.reason(),
                    alias: format!("coxswain-cost-cap-{}", d.fleet),
                    resolves: false,
                });
            }
            if f.shortfall > 0 && self.short.insert(d.fleet.clone()) {
                out.push(Note {
                    event: NotifyEvent::Shortfall,
                    severity: Severity::Critical,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{}: {} instance(s) short of its decided capacity for more than {} passes",
                        d.fleet,
                        f.shortfall,
                        crate::controller::SHORTFALL_PASSES
                    ),
                    detail: d.reason(),
                    alias: format!("coxswain-shortfall-{}", d.fleet),
                    resolves: false,
                });
            } else if f.shortfall == 0 && self.short.remove(&d.fleet) {
                out.push(Note {
                    event: NotifyEvent::Shortfall,
                    severity: Severity::Info,
                    fleet: d.fleet.clone(),
                    title: format!("{}: capacity caught up with the decision", d.fleet),
                    detail: String::new(),
                    alias: format!("coxswain-shortfall-{}", d.fleet),
                    resolves: true,
                });
            }
            let missing = !d.warnings.is_empty();
            if missing && self.missing.insert(d.fleet.clone()) {
                out.push(Note {
                    event: NotifyEvent::MetricsMissing,
                    severity: Severity::Critical,
                    fleet: d.fleet.clone(),
                    title: format!(
                        "{}: metrics missing; scaling holds on what it last knew",
                        d.fleet
                    ),
                    detail: d.warnings.join("; "),
                    alias: format!("coxswain-metrics-{}", d.fleet),
                    resolves: false,
                });
            } else if !missing && self.missing.remove(&d.fleet) {
                out.push(Note {
                    event: NotifyEvent::MetricsMissing,
                    severity: Severity::Info,
                    fleet: d.fleet.clone(),
                    title: format!("{}: metrics are back", d.fleet),
                    detail: String::new(),
                    alias: format!("coxswain-metrics-{}", d.fleet),
                    resolves: true,
                });
            }
        }
        for r in &report.repairs {
            if r.halted && self.repair_halted.insert(r.fleet.clone()) {
                out.push(Note {
                    event: NotifyEvent::RepairHalted,
                    severity: Severity::Critical,
                    fleet: r.fleet.clone(),
                    title: format!(
                        "{}: repair halted, {} of {} instances unhealthy at once (limit {})",
                        r.fleet, r.unhealthy, r.instances, r.limit
                    ),
                    detail: "nothing is replaced while so many fail together: look for a common cause (a bad build, a dependency down)".into(),
                    alias: format!("coxswain-repair-{}", r.fleet),
                    resolves: false,
                });
            } else if !r.halted && self.repair_halted.remove(&r.fleet) {
                out.push(Note {
                    event: NotifyEvent::RepairHalted,
                    severity: Severity::Info,
                    fleet: r.fleet.clone(),
                    title: format!(
                        "{}: repair resumed, {} of {} instances unhealthy",
                        r.fleet, r.unhealthy, r.instances
                    ),
                    detail: String::new(),
                    alias: format!("coxswain-repair-{}", r.fleet),
                    resolves: true,
                });
            }
        }
        out
    }
}

/// A sink ready to post: where, how, and what it wants to hear about.
#[derive(Debug, Clone)]
enum Target {
    Slack { url: String },
    Opsgenie { url: String, key: String },
}

impl Note {
    /// A note that only asks a target where it posts by default.
    fn probe() -> Note {
        Note {
            event: NotifyEvent::Scale,
            severity: Severity::Info,
            fleet: String::new(),
            title: String::new(),
            detail: String::new(),
            alias: String::new(),
            resolves: false,
        }
    }
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Slack { .. } => "slack",
            Target::Opsgenie { .. } => "opsgenie",
        }
    }

    /// Where `n` goes: OpsGenie closes a resolved incident by its alias.
    fn url(&self, n: &Note) -> String {
        match self {
            Target::Slack { url } => url.clone(),
            Target::Opsgenie { url, .. } if n.resolves => format!(
                "{}/{}/close?identifierType=alias",
                url.trim_end_matches('/'),
                n.alias
            ),
            Target::Opsgenie { url, .. } => url.clone(),
        }
    }

    /// The request body, in the sink's shape.
    fn body(&self, n: &Note, controller: &str) -> serde_json::Value {
        match self {
            Target::Slack { .. } => {
                let icon = match n.severity {
                    Severity::Info => ":information_source:",
                    Severity::Warning => ":warning:",
                    Severity::Critical => ":rotating_light:",
                };
                let text = if n.detail.is_empty() {
                    format!("{icon} *{}*", n.title)
                } else {
                    format!("{icon} *{}*\n{}", n.title, n.detail)
                };
                serde_json::json!({ "text": text })
            }
            Target::Opsgenie { .. } if n.resolves => serde_json::json!({
                "source": format!("coxswain/{controller}"),
                "note": n.title,
            }),
            Target::Opsgenie { .. } => {
                let priority = match n.severity {
                    Severity::Info => "P5",
                    Severity::Warning => "P3",
                    Severity::Critical => "P2",
                };
                // OpsGenie cuts message at 130 characters and description at 15000.
                let message: String = n.title.chars().take(130).collect();
                let description: String = n.detail.chars().take(15_000).collect();
                serde_json::json!({
                    "message": message,
                    "alias": n.alias,
                    "description": description,
                    "priority": priority,
                    "source": format!("coxswain/{controller}"),
                    "entity": n.fleet,
                    "tags": ["coxswain", n.fleet, serde_json::to_value(n.event).unwrap_or_default()],
                    "details": { "fleet": n.fleet, "event": n.event },
                })
            }
        }
    }
}

/// Queue length per sink; beyond it notes are dropped (and counted), never waited on.
const QUEUE: usize = 256;
const ATTEMPTS: u32 = 6;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Sink {
    events: BTreeSet<NotifyEvent>,
    tx: mpsc::Sender<Note>,
    name: &'static str,
}

/// Delivery counts, for logs and tests.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Notifier {
    sinks: Vec<Sink>,
    pub threshold: u32,
    pub stats: Arc<Deliveries>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Start one delivery task per sink (needs a tokio runtime). Secrets are read from the
    /// environment here. A sink that cannot start (its variable is not set) is left out
    /// and named in the returned problems, never with a secret; the others run.
    pub fn start(spec: &NotificationsSpec, controller: &str) -> (Notifier, Vec<String>) {
        let stats = Arc::new(Deliveries::default());
        let mut sinks = Vec::new();
        let mut problems = Vec::new();
        for (i, s) in spec.sinks.iter().enumerate() {
            match Self::target(i, s) {
                Ok((target, events)) => {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    let name = target.name();
                    tokio::spawn(deliver_all(
                        target,
                        rx,
                        controller.to_string(),
                        stats.clone(),
                    ));
                    sinks.push(Sink {
                        events: events.into_iter().collect(),
                        tx,
                        name,
                    });
                }
                Err(e) => problems.push(e),
            }
        }
        (
            Notifier {
                sinks,
                threshold: spec.scale_threshold,
                stats,
            },
            problems,
        )
    }

    /// Where sink `i` posts, and the events it wants.
    fn target(i: usize, s: &SinkSpec) -> Result<(Target, Vec<NotifyEvent>), String> {
        let env = |var: &str| {
            std::env::var(var).map_err(|_| {
                format!("notifications.sinks[{i}]: environment variable {var} is not set")
            })
        };
        match s {
            SinkSpec::Slack(s) => {
                let url = match (&s.url, &s.url_env) {
                    (Some(u), _) => {
                        if let Some(p) = crate::manifest::webhook_url_problem(u) {
                            return Err(format!("notifications.sinks[{i}]: {p}"));
                        }
                        u.clone()
                    }
                    (None, Some(var)) => {
                        let u = env(var)?;
                        // The URL is the secret: say what is wrong without it.
                        if crate::manifest::webhook_url_problem(&u).is_some() {
                            return Err(format!(
                                "notifications.sinks[{i}]: the URL in {var} is not https:// (plain http only to 127.0.0.1)"
                            ));
                        }
                        u
                    }
                    (None, None) => {
                        return Err(format!("notifications.sinks[{i}]: slack needs a url"))
                    }
                };
                let events = s
                    .events
                    .clone()
                    .unwrap_or_else(|| NotifyEvent::ALL.to_vec());
                Ok((Target::Slack { url }, events))
            }
            SinkSpec::Opsgenie(o) => {
                let key = env(&o.api_key_env)?;
                let events = o.events.clone().unwrap_or_else(|| {
                    vec![
                        NotifyEvent::RolloutRolledBack,
                        NotifyEvent::CostCap,
                        NotifyEvent::MetricsMissing,
                        NotifyEvent::RepairHalted,
                        NotifyEvent::Shortfall,
                    ]
                });
                Ok((
                    Target::Opsgenie {
                        url: o.url.clone(),
                        key,
                    },
                    events,
                ))
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Queue `note` for every sink that wants its event. Never waits.
    pub fn send(&self, note: &Note) {
        for s in self.sinks.iter().filter(|s| s.events.contains(&note.event)) {
            if s.tx.try_send(note.clone()).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                warn!(sink = s.name, title = %note.title, "notification dropped: the sink's queue is full (is it down?)");
            }
        }
    }
}

async fn deliver_all(
    target: Target,
    mut rx: mpsc::Receiver<Note>,
    controller: String,
    stats: Arc<Deliveries>,
) {
    // The system's CA roots, read once per sink (https sinks only).
    let tls = if target.url(&Note::probe()).starts_with("https://") {
        match crate::tls::connector(None) {
            Ok(c) => Some(c),
            Err(e) => {
                error!(
                    sink = target.name(),
                    "notifications to this sink cannot be sent: {e}"
                );
                None
            }
        }
    } else {
        None
    };
    while let Some(note) = rx.recv().await {
        let body = target.body(&note, &controller);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let url = target.url(&note);
            let result =
                tokio::time::timeout(ATTEMPT_TIMEOUT, post(&target, &url, &body, tls.as_ref()))
                    .await;
            let (retry, why) = match result {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    info!(sink = target.name(), title = %note.title, "notification delivered");
                    break;
                }
                Ok(Ok(status)) => (
                    status == 429 || status >= 500,
                    format!("answered HTTP {status}"),
                ),
                Ok(Err(e)) => (true, e),
                Err(_) => (true, format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            };
            if !retry || attempt == ATTEMPTS {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                error!(sink = target.name(), title = %note.title, attempts = attempt, "notification not delivered: {why}");
                break;
            }
            stats.retried.fetch_add(1, Ordering::Relaxed);
            let jittered = backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
            warn!(sink = target.name(), attempt, retry_in = ?jittered, "notification delivery failed: {why}; retrying");
            tokio::time::sleep(jittered).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// POST JSON to the sink; the HTTP status, or why there was none.
async fn post(
    target: &Target,
    url: &str,
    body: &serde_json::Value,
    tls_connector: Option<&tokio_rustls::TlsConnector>,
) -> Result<u16, String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, false)
    } else {
        return Err("not an http(s) URL".into());
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h.to_string(), p),
            Err(_) => (hostport.to_string(), if tls { 443 } else { 80 }),
        },
        _ => (hostport.to_string(), if tls { 443 } else { 80 }),
    };
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", hostport)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("coxswain/", env!("CARGO_PKG_VERSION")),
        );
    if let Target::Opsgenie { key, .. } = target {
        req = req.header("authorization", format!("GenieKey {key}"));
    }
    let req = req
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect {hostport}: {e}"))?;
    let status = if tls {
        let connector = tls_connector.ok_or("no TLS roots")?;
        let name = crate::tls::server_name(host.trim_matches(['[', ']']))?;
        let stream = connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(stream, req).await?
    } else {
        exchange(stream, req).await?
    };
    Ok(status)
}

/// One request over an open connection (the CLI's client does the HTTP); the status.
async fn exchange<IO>(io: IO, req: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let resp = crate::client::send(io, req).await.map_err(|e| match e {
        crate::client::ClientError::Http(m) => m,
        other => other.to_string(),
    })?;
    let status = resp.status().as_u16();
    // Read the answer to the end so the connection closes cleanly.
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests;
