//! Putting a daemon together from its settings: the config and the cloud it runs on (the
//! simulator or AWS), the state file, the replica's leases, telemetry and the API server.
//! The CLI only parses arguments into [`DaemonSettings`].

use super::ConfigSource;
use crate::clock::{Clock, RealClock, VirtualClock};
use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::sim::SimCloud;
use crate::cloud::Cloud;
use crate::controller::Controller;
use crate::manifest::{self, Config};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Which cloud to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudChoice {
    /// The built-in simulated region.
    Sim,
    Aws,
}

/// What the cloud and config come from (`--cloud`, `--manifests`, ...).
#[derive(Debug, Clone)]
pub struct CloudSettings {
    pub cloud: CloudChoice,
    /// Manifest files or directories; none: the built-in demo (simulator only).
    pub manifests: Vec<PathBuf>,
    /// AWS calls go here instead of AWS (moto, LocalStack).
    pub endpoint_url: Option<String>,
    /// AWS region; default: the fleets'.
    pub region: Option<String>,
    /// Simulator: clock speed relative to the wall (default 60 for the demo, else 1).
    pub speed: Option<f64>,
    /// Simulator: start time (default: the demo's Monday morning, or now).
    pub start: Option<DateTime<Utc>>,
    /// Simulator: a virtual clock, as fast as the CPU allows.
    pub virtual_clock: bool,
}

/// Everything `coxswain run` is told.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub cloud: CloudSettings,
    /// Decide and log, but do not act.
    pub dry_run: bool,
    /// Overrides the manifests' poll interval.
    pub poll_interval: Option<Duration>,
    /// Stop after this much clock time.
    pub duration: Option<Duration>,
    /// Stop after this many passes.
    pub passes: Option<u64>,
    /// Where the API listens (`none`: nowhere).
    pub listen: String,
    /// The state database; default: in memory on the simulator, STATE_DIR/state.db on AWS.
    pub state: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub api_token_file: Option<PathBuf>,
    /// Run as one of several replicas under this name.
    pub replica_id: Option<String>,
    /// Prefix of the replicas' DynamoDB tables.
    pub replica_prefix: String,
    /// How long a fleet's lease lasts without renewal.
    pub lease_ttl: Duration,
}

/// Everything a command needs to talk to a cloud.
pub struct Wiring {
    pub config: Config,
    pub source: ConfigSource,
    pub cloud: Arc<dyn Cloud>,
    pub clock: Arc<dyn Clock>,
    /// The AWS region this daemon manages (None on the simulator).
    pub region: Option<String>,
    /// DynamoDB, for replicas (None on the simulator).
    pub dynamodb: Option<aws_sdk_dynamodb::Client>,
}

impl Wiring {
    /// The controller on this cloud, with a throwaway in-memory state database until a
    /// file is given (`Controller::with_store`). Errors only if SQLite cannot open one.
    pub fn controller(
        self,
        dry_run: bool,
    ) -> Result<(Controller, Arc<dyn Clock>, ConfigSource), String> {
        let mut c = Controller::new(self.cloud, self.clock.clone(), self.config, dry_run)
            .map_err(|e| format!("cannot open an in-memory state database: {e}"))?;
        if let Some(r) = &self.region {
            c = c.with_region(r);
        }
        Ok((c, self.clock, self.source))
    }
}

/// Load the config and make the cloud and clock it runs on.
pub async fn wire(a: &CloudSettings) -> Result<Wiring, String> {
    let (config, source) = if a.manifests.is_empty() {
        if a.cloud == CloudChoice::Aws {
            return Err("--cloud aws needs --manifests PATH (the built-in demo fleets are for the simulator)".into());
        }
        let c = manifest::load_str("<built-in demo>", crate::demo::MANIFEST)
            .map_err(|e| e.to_string())?;
        (c, ConfigSource::Embedded)
    } else {
        let c = manifest::load_paths(&a.manifests).map_err(|e| e.to_string())?;
        (c, ConfigSource::Files(a.manifests.clone()))
    };
    match a.cloud {
        CloudChoice::Sim => {
            let demo = matches!(source, ConfigSource::Embedded);
            let start = a.start.unwrap_or_else(|| {
                if demo {
                    crate::demo::start()
                } else {
                    Utc::now()
                }
            });
            let clock: Arc<dyn Clock> = if a.virtual_clock {
                Arc::new(VirtualClock::new(start))
            } else {
                let speed = a
                    .speed
                    .unwrap_or(if demo { crate::demo::SPEED } else { 1.0 });
                Arc::new(RealClock::starting_at(start, speed))
            };
            crate::logging::set_sim_clock(clock.clone());
            // Instance ids unique across runs (a restart with --state must not meet a new
            // instance under an old one's id), as EC2's are: from the wall clock's
            // milliseconds, with room for 256 launches a millisecond.
            let epoch_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let sim = SimCloud::for_config_from_id(clock.clone(), &config, epoch_ms << 8)
                .map_err(|e| e.to_string())?;
            Ok(Wiring {
                config,
                source,
                cloud: Arc::new(sim),
                clock,
                region: None,
                dynamodb: None,
            })
        }
        CloudChoice::Aws => {
            let mut regions: Vec<&str> = config.fleets.iter().map(|f| f.region.as_str()).collect();
            regions.sort_unstable();
            regions.dedup();
            let region = match (&a.region, regions.as_slice()) {
                (Some(r), _) => r.clone(),
                (None, [one]) => one.to_string(),
                (None, many) => {
                    return Err(format!(
                        "fleets span several regions ({}): run one daemon per region with --region",
                        many.join(", ")
                    ))
                }
            };
            let mut config = config;
            let before = config.fleets.len();
            config.fleets.retain(|f| f.region == region);
            if config.fleets.len() < before {
                tracing::warn!(region = %region, skipped = before - config.fleets.len(), "fleets in other regions are left to their own daemon");
            }
            if config.fleets.is_empty() {
                return Err(format!("no fleet in region {region}"));
            }
            // A local endpoint (moto, LocalStack) with no credentials configured gets
            // dummy ones, so the SDK does not go looking for an instance role.
            let local = a.endpoint_url.as_deref().is_some_and(is_loopback_url);
            let configured = [
                "AWS_ACCESS_KEY_ID",
                "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
            ]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
            let static_credentials = (local && !configured).then(|| {
                tracing::info!(
                    "local endpoint and no AWS credentials configured: using dummy credentials"
                );
                ("testing".to_string(), "testing".to_string())
            });
            let opts = AwsOptions {
                region,
                endpoint_url: a.endpoint_url.clone(),
                static_credentials,
                ..Default::default()
            };
            let cloud = AwsCloud::connect(&opts, &config.controller.controller_id)
                .await
                .with_interruption_queue(config.controller.interruption_queue.clone());
            let dynamodb = Some(cloud.dynamodb());
            Ok(Wiring {
                config,
                source,
                cloud: Arc::new(cloud),
                clock: Arc::new(RealClock::new()),
                region: Some(opts.region.clone()),
                dynamodb,
            })
        }
    }
}

/// Run the daemon until it is told to stop (or its passes or duration run out). `Err` is
/// a sentence for the operator: bad settings, a state file that cannot be opened, an
/// address that cannot be listened on.
pub async fn start(a: DaemonSettings) -> Result<(), String> {
    let w = match wire(&a.cloud).await {
        Ok(w) => w,
        Err(e) => return Err(e.to_string()),
    };
    if a.cloud.cloud == CloudChoice::Sim {
        tracing::info!(start = %w.clock.now(), virtual_clock = a.cloud.virtual_clock, "simulated cloud: instances boot after a delay, metrics lag a minute");
    }
    let state_path = match (&a.state, a.cloud.cloud) {
        (Some(p), _) => p.clone(),
        (None, CloudChoice::Sim) => PathBuf::from(":memory:"),
        (None, CloudChoice::Aws) => state_dir().join("state.db"),
    };
    if let Some(dir) = state_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let store = match crate::store::Store::open(&state_path) {
        Ok(s) => Arc::new(s),
        Err(e) => return Err(e.to_string()),
    };
    let leases = match (&a.replica_id, &w.dynamodb) {
        (None, _) => None,
        (Some(_), None) => {
            return Err("--replica-id needs --cloud aws (leases live in DynamoDB)".into())
        }
        (Some(id), Some(ddb)) => {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err("--replica-id must be letters, digits, '-' or '_'".into());
            }
            let ttl =
                chrono::Duration::from_std(a.lease_ttl).unwrap_or(chrono::Duration::seconds(30));
            if ttl < chrono::Duration::seconds(3) {
                return Err("--lease-ttl must be at least 3s".into());
            }
            // Deployment ids from this replica do not collide with another's.
            let offset = 1 + (i64::from(crate::controller::plan::stable_hash32(id)) << 20);
            if let Err(e) = store.start_ids_at(offset) {
                return Err(e.to_string());
            }
            let leases: Arc<dyn crate::lease::LeaseStore> =
                Arc::new(crate::cloud::aws::leases::DynamoLeases::new(
                    ddb.clone(),
                    &a.replica_prefix,
                    id,
                    ttl,
                ));
            Some((leases, ttl))
        }
    };
    let (controller, clock, source) = w.controller(a.dry_run)?;
    let replica = leases
        .map(|(leases, ttl)| Arc::new(crate::replica::Replica::new(leases, ttl, clock.clone())));
    let mut controller = controller.with_store(store.clone());
    if let Some(r) = &replica {
        tracing::info!(replica = %r.id(), "running as a replica: acting only on fleets whose lease this one holds");
        controller.set_fence(r.clone());
        controller.set_owned(Some(Default::default()));
    }
    let signals = super::spawn_signal_listener();
    let telemetry = Arc::new(
        crate::telemetry::Telemetry::new(
            a.poll_interval
                .unwrap_or(controller.config().controller.poll_interval.0),
        )
        .with_history(store.clone(), clock.now()),
    );
    let opts = super::Options {
        poll_interval: a.poll_interval,
        max_passes: a.passes,
        duration: a.duration,
        replica,
        telemetry: Some(telemetry.clone()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    if a.listen != "none" {
        let token = match api_token(a.api_token_file.as_ref()) {
            Ok(t) => t,
            Err(e) => return Err(e.to_string()),
        };
        let listener = match tokio::net::TcpListener::bind(&a.listen).await {
            Ok(l) => l,
            Err(e) => {
                return Err(format!(
                    "cannot listen on {}: {e} (pass --listen ADDR, or --listen none)",
                    a.listen
                ))
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(c), Some(k)) => match crate::tls::acceptor(c, k) {
                Ok(acc) => Some(acc),
                Err(e) => return Err(e.to_string()),
            },
            _ => None,
        };
        tracing::info!(address = %addr, tls = tls.is_some(), "API listening");
        let state = crate::api::ApiState {
            commands: tx,
            store,
            token: Arc::new(token),
            telemetry,
        };
        let mut stop = signals.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                while stop.changed().await.is_ok() {
                    if matches!(*stop.borrow(), Some(super::Signal::Stop)) {
                        break;
                    }
                }
            };
            let served = match tls {
                Some(acceptor) => {
                    let listener = crate::tls::TlsListener {
                        tcp: listener,
                        acceptor,
                    };
                    crate::api::serve(listener, state, shutdown).await
                }
                None => crate::api::serve(listener, state, shutdown).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "API server stopped");
            }
        });
    } else {
        drop(tx);
    }
    super::run_with_api(controller, clock, source, opts, signals, rx).await;
    Ok(())
}

/// Whether an endpoint URL points at this machine (127.0.0.0/8, localhost or [::1]).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        rest.split([':', '/']).next().unwrap_or_default()
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// Where the daemon keeps its state and the CLI finds the API token:
/// `COXSWAIN_STATE_DIR`, else `$XDG_STATE_HOME/coxswain`, else `~/.local/state/coxswain`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("COXSWAIN_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("coxswain");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/coxswain"))
        .unwrap_or_else(|| PathBuf::from(".coxswain"))
}

/// The API token: COXSWAIN_API_TOKEN, or the token file (created, mode 0600, with a
/// random token when missing so that the CLI on the same host finds it).
pub fn api_token(file: Option<&PathBuf>) -> Result<String, String> {
    if let Ok(t) = std::env::var("COXSWAIN_API_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let path = file
        .cloned()
        .unwrap_or_else(|| state_dir().join("api-token"));
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    use rand::Rng;
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::thread_rng().gen::<u8>()))
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    opts.open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(|e| format!("cannot write the API token to {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "created an API token for the CLI");
    Ok(token)
}
