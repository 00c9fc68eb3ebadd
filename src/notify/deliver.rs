//! Delivery of notes: one queue and task per sink, retries with backoff and jitter on
//! network errors, 429 and 5xx, and a full queue that drops rather than waits.

use super::{Note, Severity};
use crate::manifest::{NotificationsSpec, NotifyEvent, SinkSpec};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rand::Rng;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// A sink ready to post: where, how, and what it wants to hear about.
#[derive(Debug, Clone)]
pub(super) enum Target {
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
    pub(super) fn url(&self, n: &Note) -> String {
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
    pub(super) fn body(&self, n: &Note, controller: &str) -> serde_json::Value {
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
