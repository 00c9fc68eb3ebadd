//! Command-line interface: argument parsing and the wiring behind each command. `main.rs`
//! only calls [`main`].

pub mod deploy;
pub mod reads;
pub mod simulate;

use crate::controller::PassReport;
pub use crate::daemon::assemble::{is_loopback_url, state_dir, Wiring};
use crate::daemon::assemble::{wire, CloudChoice, CloudSettings, DaemonSettings};
use crate::logging::{self, LogFormat};
use crate::manifest::{self, parse_duration};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
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
    History(reads::HistoryArgs),
    /// Show each fleet as the daemon sees it: capacity, live build, rollout and the reason
    /// for the last decision.
    Status(reads::StatusArgs),
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
    /// Name prefix: creates the tables PREFIX-leases and PREFIX-state (and with
    /// --interruption-queue, the queue PREFIX-interruptions and its rules PREFIX-...).
    #[arg(long, default_value = "coxswain")]
    pub prefix: String,
    /// Also create the SQS queue EC2's notices arrive on (Spot interruption warnings,
    /// rebalance recommendations, scheduled events, state changes) and the EventBridge
    /// rules that feed it; prints the URL to set as `interruption_queue`.
    #[arg(long)]
    pub interruption_queue: bool,
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
            Command::History(a) => reads::history(a).await,
            Command::Status(a) => reads::status(a).await,
            Command::Simulate(a) => {
                let spot = if a.spot_prices_from_aws {
                    match simulate::aws_spot_prices(&a).await {
                        Ok(s) => Some(s),
                        Err(e) => return fail(e),
                    }
                } else {
                    None
                };
                simulate::simulate(a, spot)
            }
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
            Ok(c) => {
                println!("ok   {} ({} fleet(s))", f.display(), c.fleets.len());
                for fleet in &c.fleets {
                    for n in fleet.notes() {
                        println!("  note: {}: {n}", fleet.name);
                    }
                }
            }
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
            Ok(c) => {
                println!(
                    "ok   {described} (as one set, as `run` loads it: {} fleet(s) in {} file(s))",
                    c.fleets.len(),
                    files.len()
                );
            }
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

async fn run(a: RunArgs) -> ExitCode {
    let settings = DaemonSettings {
        cloud: (&a.cloud).into(),
        dry_run: a.dry_run,
        poll_interval: a.poll_interval,
        duration: a.duration,
        passes: a.passes,
        listen: a.listen,
        state: a.state,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        api_token_file: a.api_token_file,
        replica_id: a.replica_id,
        replica_prefix: a.replica_prefix,
        lease_ttl: a.lease_ttl,
    };
    match crate::daemon::assemble::start(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

impl From<&CloudArgs> for CloudSettings {
    fn from(a: &CloudArgs) -> Self {
        CloudSettings {
            cloud: match a.cloud {
                CloudKind::Sim => CloudChoice::Sim,
                CloudKind::Aws => CloudChoice::Aws,
            },
            manifests: a.manifests.clone(),
            endpoint_url: a.endpoint_url.clone(),
            region: a.region.clone(),
            speed: a.speed,
            start: a.start,
            virtual_clock: a.virtual_clock,
        }
    }
}

async fn plan(a: PlanArgs) -> ExitCode {
    let mut w = match wire(&(&a.cloud).into()).await {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    if let Some(f) = &a.fleet {
        if w.config.fleet(f).is_none() {
            return fail(format!("no fleet named '{f}' in the manifests"));
        }
        w.config.fleets.retain(|x| &x.name == f);
    }
    let (mut controller, _, _) = match w.controller(true) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
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
                        "live": f.live,
                        "instances": f.instances,
                        "spot": f.spot,
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
        s.push_str(&reads::capacity_lines(
            "    ",
            "market",
            f.live,
            f.instances,
            f.spot,
        ));
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
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    if a.interruption_queue {
        let sqs = aws_sdk_sqs::Client::new(&cfg);
        let events = aws_sdk_eventbridge::Client::new(&cfg);
        match crate::cloud::aws::setup::create_interruption_queue(&sqs, &events, &a.prefix).await {
            Ok(c) => {
                println!("queue   {} ({})", c.queue_url, c.queue_arn);
                for r in &c.rules {
                    println!("rule    {r} -> the queue");
                }
                println!(
                    "set in the kind: Controller document of your manifests:\n  interruption_queue: {}",
                    c.queue_url
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
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
