//! Command-line interface: argument parsing and the wiring behind each command. `main.rs`
//! only calls [`main`].

pub mod deploy;
pub mod simulate;

use crate::clock::{Clock, RealClock, VirtualClock};
use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::sim::SimCloud;
use crate::cloud::Cloud;
use crate::controller::{Controller, PassReport};
use crate::daemon::{self, ConfigSource};
use crate::logging::{self, LogFormat};
use crate::manifest::{self, parse_duration, Config};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "coxswain",
    version,
    about = "Autoscaling and continuous deployment for EC2 fleets"
)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "COXSWAIN_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scaling daemon (default: the built-in simulated cloud and demo fleets).
    Run(RunArgs),
    /// Show each fleet's metrics, decision and reason, without acting.
    Plan(PlanArgs),
    /// Check manifest files; exits 1 if any has a problem.
    Validate {
        /// Files or directories (default: manifests/).
        paths: Vec<PathBuf>,
    },
    /// Measure one reconcile pass over many fleets on the simulated cloud.
    Bench(BenchArgs),
    /// Roll a build out to a fleet (through the daemon's API). Exit 0 live, 1 rolled
    /// back, 2 refused, 3 --timeout reached (rolled back), 4 daemon unreachable.
    Deploy(deploy::DeployArgs),
    /// Sign off a build for environments that require approval.
    Approve(deploy::ApproveArgs),
    /// Roll a fleet back: abort the running rollout, or go back to an earlier build.
    Rollback(deploy::RollbackArgs),
    /// The build ledger of a fleet or app.
    History(deploy::HistoryArgs),
    /// Show each fleet as the daemon sees it: capacity, live build, rollout and the reason
    /// for the last decision.
    Status(deploy::StatusArgs),
    /// Create the DynamoDB tables that replicas share (leases and state). Idempotent.
    Init(InitArgs),
    /// Replay a traffic trace through a fleet's policies and the alternatives (AWS target
    /// tracking, Kubernetes HPA, a static fleet): cost and requests lost, per policy.
    Simulate(simulate::SimulateArgs),
    /// Print a shell completion script to stdout, e.g.
    /// `coxswain completions bash > /etc/bash_completion.d/coxswain`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page coxswain(1) (roff) to stdout, e.g. `coxswain man | man -l -`;
    /// with --out-dir, write it and one page per subcommand (coxswain-deploy.1, ...).
    Man {
        /// Write coxswain.1 and coxswain-SUBCOMMAND.1 here instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudKind {
    Sim,
    Aws,
}

#[derive(Debug, Args, Clone)]
pub struct CloudArgs {
    /// Which cloud to act on.
    #[arg(long, value_enum, default_value_t = CloudKind::Sim)]
    pub cloud: CloudKind,
    /// Manifest files or directories. Without it, `--cloud sim` runs the built-in demo.
    #[arg(long = "manifests", short = 'm')]
    pub manifests: Vec<PathBuf>,
    /// Send AWS calls here instead of AWS (moto, LocalStack).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region; defaults to the region of the fleets.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Simulated cloud: speed of the clock relative to the wall (default 60 for the demo,
    /// 1 with your own manifests).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Simulated cloud: start time (RFC 3339); default: the demo's Monday morning, or now.
    #[arg(long)]
    pub start: Option<DateTime<Utc>>,
    /// Simulated cloud: run on a virtual clock, as fast as the CPU allows.
    #[arg(long)]
    pub virtual_clock: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Decide and log, but do not act.
    #[arg(long)]
    pub dry_run: bool,
    /// Override the manifests' poll interval (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// Stop after this much clock time (e.g. 24h with --virtual-clock).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many passes.
    #[arg(long)]
    pub passes: Option<u64>,
    /// Serve the API (deploys, approvals, history, status), /metrics, /healthz, /readyz and
    /// the dashboard here; `none` to serve nothing.
    #[arg(long, env = "COXSWAIN_LISTEN", default_value = "127.0.0.1:7433")]
    pub listen: String,
    /// State database (SQLite). Default: in memory on the simulator, and
    /// STATE_DIR/state.db on AWS.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File with the API bearer token. Default: COXSWAIN_API_TOKEN, else STATE_DIR/api-token
    /// (created with a random token if missing).
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// Run as one of several replicas under this name (unique per replica): fleets are
    /// shared out through leases in DynamoDB (`coxswain init` creates the tables).
    #[arg(long, env = "COXSWAIN_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Table name prefix of the replicas' tables.
    #[arg(long, env = "COXSWAIN_REPLICA_PREFIX", default_value = "coxswain")]
    pub replica_prefix: String,
    /// How long a fleet's lease lasts without renewal: the longest a dead replica's fleets
    /// wait before another takes them over.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub lease_ttl: Duration,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Only this fleet.
    #[arg(long)]
    pub fleet: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Table name prefix: creates PREFIX-leases and PREFIX-state.
    #[arg(long, default_value = "coxswain")]
    pub prefix: String,
    /// AWS region to create the tables in.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Send the calls here instead of AWS (moto, LocalStack).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Number of fleets.
    #[arg(long, default_value_t = 1000)]
    pub fleets: usize,
    /// Passes to measure (after one warm-up pass).
    #[arg(long, default_value_t = 20)]
    pub passes: usize,
    /// Measure a 20-instance rolling deploy instead.
    #[arg(long)]
    pub rollout: bool,
    /// Measure `simulate` on this trace instead (all policies, median of --runs).
    #[arg(long, value_name = "TRACE")]
    pub simulate: Option<PathBuf>,
    /// Runs for --simulate.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The benchmark measures the controller, not the terminal, and plan prints its own
    // table: both log warnings only.
    let quiet = !matches!(cli.command, Command::Run(_) | Command::Validate { .. });
    if quiet {
        // Commands that print for a pipe (`history web | head`) end quietly when the
        // reader goes away, as Unix tools do. Not the daemon: it writes to sockets, where
        // a closed peer must be an error, not a signal.
        // SAFETY: setting a signal disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    logging::init(cli.log_format, quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Run(a) => run(a).await,
            Command::Plan(a) => plan(a).await,
            Command::Validate { paths } => validate(paths),
            Command::Bench(a) if a.rollout => crate::bench::rollout().await,
            Command::Bench(BenchArgs {
                simulate: Some(t),
                runs,
                ..
            }) => simulate::bench(&t, runs),
            Command::Bench(a) => crate::bench::run(a.fleets, a.passes).await,
            Command::Deploy(a) => deploy::deploy(a).await,
            Command::Approve(a) => deploy::approve(a).await,
            Command::Rollback(a) => deploy::rollback(a).await,
            Command::History(a) => deploy::history(a).await,
            Command::Status(a) => deploy::status(a).await,
            Command::Simulate(a) => simulate::simulate(a),
            Command::Init(a) => init(a).await,
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "coxswain", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
            Command::Man { out_dir } => man(out_dir),
        }
    })
}

/// The man pages, from the CLI definition: coxswain(1) on stdout, or every page into
/// `out_dir`.
fn man(out_dir: Option<PathBuf>) -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    let written = match &out_dir {
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)),
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &out))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the man page: {e}");
            ExitCode::from(1)
        }
    }
}

/// A usage or config error: message on stderr, exit 2.
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Each file is checked on its own; each directory is also checked as one set, the way
/// `run -m DIR` loads it (fleet names unique, one controller document).
/// `coxswain validate`: each file on its own (file:line:column problems), then all of them
/// as one set, exactly as `run -m` loads them (same files, subfolders included; a set with
/// no fleet at all is refused by both).
fn validate(paths: Vec<PathBuf>) -> ExitCode {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("manifests")]
    } else {
        paths
    };
    let described = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let files = match manifest::load::manifest_files(&paths) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if files.is_empty() {
        return fail(format!("no manifest files in {described}"));
    }
    let mut bad = false;
    for f in &files {
        match manifest::load_paths(std::slice::from_ref(f)) {
            Ok(c) => println!("ok   {} ({} fleet(s))", f.display(), c.fleets.len()),
            Err(manifest::ManifestError::Empty(_)) => {
                println!("ok   {} (no fleets)", f.display())
            }
            Err(e) => {
                bad = true;
                println!("FAIL {}\n{e}", f.display());
            }
        }
    }
    if !bad {
        match manifest::load_paths(&paths) {
            Ok(c) => println!(
                "ok   {described} (as one set, as `run` loads it: {} fleet(s) in {} file(s))",
                c.fleets.len(),
                files.len()
            ),
            Err(e) => {
                bad = true;
                println!("FAIL {described} (as one set, as `run` loads it)\n{e}");
            }
        }
    }
    if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
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
    pub fn controller(self, dry_run: bool) -> (Controller, Arc<dyn Clock>, ConfigSource) {
        let mut c = Controller::new(self.cloud, self.clock.clone(), self.config, dry_run);
        if let Some(r) = &self.region {
            c = c.with_region(r);
        }
        (c, self.clock, self.source)
    }
}

pub async fn wire(a: &CloudArgs) -> Result<Wiring, String> {
    let (config, source) = if a.manifests.is_empty() {
        if a.cloud == CloudKind::Aws {
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
        CloudKind::Sim => {
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
        CloudKind::Aws => {
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
            let cloud = AwsCloud::connect(&opts, &config.controller.controller_id).await;
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
fn api_token(file: Option<&PathBuf>) -> Result<String, String> {
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

async fn run(a: RunArgs) -> ExitCode {
    let w = match wire(&a.cloud).await {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    if a.cloud.cloud == CloudKind::Sim {
        tracing::info!(start = %w.clock.now(), virtual_clock = a.cloud.virtual_clock, "simulated cloud: instances boot after a delay, metrics lag a minute");
    }
    let state_path = match (&a.state, a.cloud.cloud) {
        (Some(p), _) => p.clone(),
        (None, CloudKind::Sim) => PathBuf::from(":memory:"),
        (None, CloudKind::Aws) => state_dir().join("state.db"),
    };
    if let Some(dir) = state_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return fail(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let store = match crate::store::Store::open(&state_path) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(e),
    };
    let leases = match (&a.replica_id, &w.dynamodb) {
        (None, _) => None,
        (Some(_), None) => return fail("--replica-id needs --cloud aws (leases live in DynamoDB)"),
        (Some(id), Some(ddb)) => {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return fail("--replica-id must be letters, digits, '-' or '_'");
            }
            let ttl =
                chrono::Duration::from_std(a.lease_ttl).unwrap_or(chrono::Duration::seconds(30));
            if ttl < chrono::Duration::seconds(3) {
                return fail("--lease-ttl must be at least 3s");
            }
            // Deployment ids from this replica do not collide with another's.
            let offset = 1 + (i64::from(crate::controller::plan::stable_hash32(id)) << 20);
            if let Err(e) = store.start_ids_at(offset) {
                return fail(e);
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
    let (controller, clock, source) = w.controller(a.dry_run);
    let replica = leases
        .map(|(leases, ttl)| Arc::new(crate::replica::Replica::new(leases, ttl, clock.clone())));
    let mut controller = controller.with_store(store.clone());
    if let Some(r) = &replica {
        tracing::info!(replica = %r.id(), "running as a replica: acting only on fleets whose lease this one holds");
        controller.set_fence(r.clone());
        controller.set_owned(Some(Default::default()));
    }
    let signals = daemon::spawn_signal_listener();
    let telemetry = Arc::new(
        crate::telemetry::Telemetry::new(
            a.poll_interval
                .unwrap_or(controller.config().controller.poll_interval.0),
        )
        .with_history(store.clone(), clock.now()),
    );
    let opts = daemon::Options {
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
            Err(e) => return fail(e),
        };
        let listener = match tokio::net::TcpListener::bind(&a.listen).await {
            Ok(l) => l,
            Err(e) => {
                return fail(format!(
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
                Err(e) => return fail(e),
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
                    if matches!(*stop.borrow(), Some(daemon::Signal::Stop)) {
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
                    crate::api::serve_tls(listener, state, shutdown).await
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
    daemon::run_with_api(controller, clock, source, opts, signals, rx).await;
    ExitCode::SUCCESS
}

async fn plan(a: PlanArgs) -> ExitCode {
    let mut w = match wire(&a.cloud).await {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    if let Some(f) = &a.fleet {
        if w.config.fleet(f).is_none() {
            return fail(format!("no fleet named '{f}' in the manifests"));
        }
        w.config.fleets.retain(|x| &x.name == f);
    }
    let (mut controller, _, _) = w.controller(true);
    let report = controller.reconcile_once().await;
    match a.output {
        Output::Table => print!("{}", render_plan(&report)),
        Output::Json => {
            let fleets: Vec<serde_json::Value> = report
                .fleets
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "fleet": f.decision.fleet,
                        "current": f.decision.current,
                        "desired": f.decision.desired,
                        "booting": f.booting,
                        "retiring": f.retiring,
                        "metrics": f.metrics.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect::<Vec<_>>(),
                        "reason": f.decision.reason(),
                        "limits": f.decision.limits,
                        "warnings": f.decision.warnings,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({ "fleets": fleets, "errors": report.errors })
            );
        }
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        ExitCode::from(1)
    }
}

/// The plan as a table, one fleet per block.
pub fn render_plan(report: &PassReport) -> String {
    let mut s = String::new();
    for f in &report.fleets {
        let d = &f.decision;
        let verb = match d.change() {
            0 => "hold".to_string(),
            n if n > 0 => format!("scale out +{n}"),
            n => format!("scale in {n}"),
        };
        s.push_str(&format!(
            "{:<20} {:>3} → {:<3} {:<14} booting {} retiring {}\n",
            d.fleet, d.current, d.desired, verb, f.booting, f.retiring
        ));
        for (name, v) in &f.metrics {
            match v {
                Some(v) => s.push_str(&format!("    metric {name} = {v:.1}\n")),
                None => s.push_str(&format!("    metric {name} = (no data)\n")),
            }
        }
        s.push_str(&format!("    reason {}\n", d.reason()));
        for w in &d.warnings {
            s.push_str(&format!("    warning {w}\n"));
        }
    }
    s
}

async fn init(a: InitArgs) -> ExitCode {
    let Some(region) = a.region.clone() else {
        return fail("give --region (or set AWS_REGION): the tables live in one region");
    };
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region));
    if let Some(url) = &a.endpoint_url {
        loader = loader.endpoint_url(url);
        if is_loopback_url(url) && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "local", "local", None, None, "loopback",
            ));
        }
    }
    let cfg = loader.load().await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    match crate::cloud::aws::leases::create_tables(&client, &a.prefix).await {
        Ok(created) => {
            let (leases, state) = crate::lease::table_names(&a.prefix);
            for t in [leases, state] {
                if created.contains(&t) {
                    println!("created {t}");
                } else {
                    println!("exists  {t}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn loopback_endpoints_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:4566"));
        assert!(is_loopback_url("http://localhost:5000/"));
        assert!(is_loopback_url("http://[::1]:4566"));
        assert!(!is_loopback_url("https://ec2.us-east-1.amazonaws.com"));
        assert!(!is_loopback_url("http://10.0.0.5:4566"));
    }
}
