//! The long-running daemon: paces reconcile passes, reloads manifests on SIGHUP or when
//! their files change (keeping the last good config when the new one is invalid), backs
//! off when AWS throttles, and shuts down in two stages: the first SIGTERM/SIGINT lets the
//! pass in flight finish, a second exits at once.

pub mod assemble;

use crate::api::Command;
use crate::clock::Clock;

use crate::controller::Controller;
use crate::manifest::{self, Config};

use rand::Rng;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

/// Where the config comes from, so it can be read again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    Files(Vec<PathBuf>),
    /// Built in (the demo); never changes.
    Embedded,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Option<Config>, manifest::ManifestError> {
        match self {
            ConfigSource::Files(paths) => manifest::load_paths(paths).map(Some),
            ConfigSource::Embedded => Ok(None),
        }
    }
}

/// Signals the daemon reacts to, as a channel so tests can drive them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Reload,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Overrides the manifests' poll interval.
    pub poll_interval: Option<Duration>,
    /// Stop after this many passes (tests, `--passes`).
    pub max_passes: Option<u64>,
    /// Stop when the clock passes this much time since the start (`--duration`).
    pub duration: Option<Duration>,
    /// Run as one of several replicas: act only on fleets whose lease this one holds.
    pub replica: Option<Arc<crate::replica::Replica>>,
    /// Where each pass's report goes for /metrics, /readyz and the dashboard.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

/// Longest pause between passes when backing off from throttling.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Next wait: the poll interval, or exponential backoff with full jitter after passes
/// that AWS throttled (`throttled_passes` in a row).
pub fn next_delay(poll: Duration, throttled_passes: u32) -> Duration {
    if throttled_passes == 0 {
        return poll;
    }
    let cap = poll
        .saturating_mul(1u32 << throttled_passes.min(10))
        .min(MAX_BACKOFF);
    let jitter = rand::thread_rng().gen_range(0.5..=1.0);
    cap.mul_f64(jitter).max(poll)
}

/// Run until stopped. Returns the number of passes made.
pub async fn run(
    controller: Controller,
    clock: Arc<dyn Clock>,
    source: ConfigSource,
    opts: Options,
    signals: watch::Receiver<Option<Signal>>,
) -> u64 {
    let (_tx, rx) = mpsc::channel(1);
    run_with_api(controller, clock, source, opts, signals, rx).await
}

/// Answer one API request. Deploys and aborts want a pass soon after.
/// Answer one API request (the daemon does this between passes; tests call it too).
pub async fn handle(
    controller: &mut Controller,
    replica: Option<&crate::replica::Replica>,
    now: chrono::DateTime<chrono::Utc>,
    cmd: Command,
) {
    let taken = match &cmd {
        Command::Deploy(_, r) | Command::Rollback(_, r) => r.take(),
        Command::Approve(_, r) | Command::Abort(_, _, r) => r.take(),
    };
    if !taken {
        // The API gave up on it (and told the client nothing was done): keep it so.
        warn!("an API request waited too long for the controller and was abandoned by its client; not acting on it");
        return;
    }
    match cmd {
        Command::Deploy(req, reply) => {
            if let Err(refused) = controller.check_launchable(&req).await {
                reply.send(Err(refused));
                return;
            }
            let answer = match replica {
                Some(r) => crate::replica::pass::admit_deploy(controller, r, &req, now).await,
                None => controller.request_deploy(&req, now),
            };
            reply.send(answer);
        }
        Command::Approve(req, reply) => {
            let answer = match (controller.request_approval(&req, now), replica) {
                (Ok(a), Some(r)) => crate::replica::pass::share_approval(r, &a).await,
                (answer, _) => answer.map(|_| ()),
            };
            reply.send(answer);
        }
        Command::Rollback(req, reply) => {
            reply.send(controller.request_rollback(&req, now));
        }
        Command::Abort(id, reason, reply) => {
            reply.send(controller.request_abort(id, &reason));
        }
    }
}

/// [`run`], also answering API requests between passes.
pub async fn run_with_api(
    mut controller: Controller,
    clock: Arc<dyn Clock>,
    source: ConfigSource,
    opts: Options,
    mut signals: watch::Receiver<Option<Signal>>,
    mut commands: mpsc::Receiver<Command>,
) -> u64 {
    let start = clock.now();
    let mut passes = 0u64;
    let mut throttled = 0u32;
    let mut last_refused: Option<String> = None;
    // Replicas: ledger rows already written to the shared table.
    let mut shared: HashSet<i64> = HashSet::new();
    // Notifications: what was already told, and the sinks (restarted when they change).
    let mut watch = crate::notify::Watch::new(start);
    let mut notifier = start_notifier(controller.config(), None);
    info!(
        fleets = controller.config().fleets.len(),
        poll = ?opts.poll_interval.unwrap_or(controller.config().controller.poll_interval.0),
        "coxswain daemon started"
    );
    loop {
        if matches!(*signals.borrow(), Some(Signal::Stop)) {
            break;
        }
        if let Some(d) = opts.duration {
            if (clock.now() - start).to_std().unwrap_or_default() >= d {
                break;
            }
        }
        let owned = match &opts.replica {
            Some(r) => {
                crate::replica::pass::take_leases(r, &mut controller, &mut watch, clock.as_ref())
                    .await
            }
            None => Vec::new(),
        };
        let pass_began = std::time::Instant::now();
        let report = controller.reconcile_once().await;
        if let Some(t) = &opts.telemetry {
            t.observe_pass_duration(pass_began.elapsed());
            let mut fleets = crate::telemetry::FleetInfo::of(controller.config());
            fleets.retain(|name, _| controller.owns(name));
            t.observe(&report, &fleets, clock.now());
            t.observe_aws_attempts(&controller.cloud().attempts());
        }
        if let Some((_, n)) = &notifier {
            for note in watch.news(&report, controller.store(), n.threshold) {
                n.send(&note);
            }
        }
        if let Some(r) = &opts.replica {
            crate::replica::pass::export_fleets(
                r,
                &controller,
                &owned,
                &mut shared,
                clock.as_ref(),
            )
            .await;
        }
        passes += 1;
        throttled = if report.throttled { throttled + 1 } else { 0 };
        if opts.max_passes.is_some_and(|m| passes >= m) {
            break;
        }
        let poll = opts
            .poll_interval
            .unwrap_or(controller.config().controller.poll_interval.0);
        // While a rollout runs, its gates are checked at their interval.
        let poll = report.requeue_after.map_or(poll, |i| i.min(poll));
        let mut delay = next_delay(poll, throttled);
        if let Some(r) = &opts.replica {
            delay = delay.min(r.renew_every());
        }
        if let Some(t) = &opts.telemetry {
            t.next_pass_in(delay);
        }
        if throttled > 0 {
            warn!(
                ?delay,
                "AWS is throttling; backing off before the next pass"
            );
        }
        let reload = tokio::select! {
            _ = clock.sleep(delay) => false,
            changed = signals.changed() => {
                if changed.is_err() { break; }
                true
            }
            Some(cmd) = commands.recv() => {
                handle(&mut controller, opts.replica.as_deref(), clock.now(), cmd).await;
                // Answer any others already waiting, then run a pass at once.
                while let Ok(cmd) = commands.try_recv() {
                    handle(&mut controller, opts.replica.as_deref(), clock.now(), cmd).await;
                }
                false
            }
        };
        if matches!(*signals.borrow(), Some(Signal::Stop)) {
            break;
        }
        let reloaded = reload_config(&mut controller, &source, reload);
        if reloaded == Reload::Applied {
            notifier = start_notifier(controller.config(), notifier);
        }
        match reloaded {
            Reload::Refused(why) if reload || last_refused.as_ref() != Some(&why) => {
                error!("manifests are invalid; keeping the last good config.\n{why}");
                last_refused = Some(why);
            }
            Reload::Refused(_) => {}
            _ => last_refused = None,
        }
    }
    if let Some(r) = &opts.replica {
        r.release_all().await;
    }
    info!(
        passes,
        "coxswain daemon stopped cleanly: no step was left half-done"
    );
    passes
}

/// The notifier for `config`'s sinks; the running one is kept if they did not change.
fn start_notifier(
    config: &Config,
    running: Option<(crate::manifest::NotificationsSpec, crate::notify::Notifier)>,
) -> Option<(crate::manifest::NotificationsSpec, crate::notify::Notifier)> {
    let spec = &config.controller.notifications;
    if let Some((old, n)) = running {
        if &old == spec {
            return Some((old, n));
        }
    }
    if spec.sinks.is_empty() {
        return None;
    }
    let (n, problems) = crate::notify::Notifier::start(spec, &config.controller.controller_id);
    for p in &problems {
        error!("notification sink left out: {p}");
    }
    info!(
        sinks = spec.sinks.len() - problems.len(),
        left_out = problems.len(),
        "notifications on"
    );
    Some((spec.clone(), n))
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Applied,
    /// The new files are invalid; the running config stays. Holds the problems.
    Refused(String),
}

/// Reload when asked (SIGHUP) or when the files' contents changed. An invalid new config
/// is refused with its problems logged, and the running one stays.
pub fn reload_config(controller: &mut Controller, source: &ConfigSource, asked: bool) -> Reload {
    match source.load() {
        Ok(Some(new)) => {
            if new.fingerprint != controller.config().fingerprint {
                info!(
                    fleets = new.fleets.len(),
                    "manifests changed; new config loaded"
                );
                match controller.replace_config(new) {
                    Ok(()) => Reload::Applied,
                    Err(why) => Reload::Refused(why),
                }
            } else {
                if asked {
                    info!("reload requested; manifests unchanged");
                }
                Reload::Unchanged
            }
        }
        Ok(None) => Reload::Unchanged,
        // Logged by the caller, once per distinct problem, not every pass.
        Err(e) => Reload::Refused(e.to_string()),
    }
}

/// Listen for SIGTERM/SIGINT (stop; a second one exits at once) and SIGHUP (reload).
pub fn spawn_signal_listener() -> watch::Receiver<Option<Signal>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                error!("cannot install signal handlers");
                return;
            };
            let mut stops = 0;
            loop {
                let sig = tokio::select! {
                    _ = term.recv() => Signal::Stop,
                    _ = int.recv() => Signal::Stop,
                    _ = hup.recv() => Signal::Reload,
                };
                if sig == Signal::Reload && stops > 0 {
                    // Stopping already: a reload must not replace the stop.
                    continue;
                }
                if sig == Signal::Stop {
                    stops += 1;
                    if stops > 1 {
                        warn!("second stop signal: exiting now");
                        std::process::exit(130);
                    }
                    info!("stop signal: finishing the pass in flight, then exiting (send again to force)");
                } else {
                    info!("SIGHUP: reloading manifests");
                }
                // `send` notifies even when the value is unchanged, so every SIGHUP counts.
                let _ = tx.send(Some(sig));
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            let _ = tx.send(Some(Signal::Stop));
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_throttled_passes_and_stays_capped() {
        let poll = Duration::from_secs(10);
        assert_eq!(next_delay(poll, 0), poll);
        for _ in 0..20 {
            let d = next_delay(poll, 3);
            assert!(d >= poll && d <= Duration::from_secs(80), "{d:?}");
            assert!(next_delay(poll, 30) <= MAX_BACKOFF);
        }
    }
}
