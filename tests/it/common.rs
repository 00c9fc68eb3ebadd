//! Test harness: a moto server plus the project's aws_proxy (CloudWatch CBOR bridge, fault
//! injection, request log), both on 127.0.0.1, started per test and killed on drop.
//!
//! If moto is not installed or cannot start, the test fails with instructions. It never
//! skips: `scripts/test` installs moto into `.venv` (or `$COXSWAIN_VENV`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    moto: Child,
    proxy: Child,
    pub moto_port: u16,
    pub proxy_port: u16,
}

pub fn venv() -> PathBuf {
    std::env::var_os("COXSWAIN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A minimal HTTP/1.1 exchange with 127.0.0.1:port (control endpoints only).
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {out:.200}"))?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

fn wait_ready(port: u16, path: &str, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((status, _)) = http(port, "GET", path, "") {
            if status < 500 {
                return;
            }
        }
        if let Ok(Some(exit)) = child.try_wait() {
            panic!("{what} exited before it was ready ({exit}); see its output above");
        }
        if Instant::now() > deadline {
            panic!("{what} did not answer on 127.0.0.1:{port} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Moto {
    /// Start moto and the proxy. Panics (fails the test) when they cannot start.
    pub fn start() -> Moto {
        let venv = venv();
        let moto_bin = venv.join("bin").join("moto_server");
        let python = venv.join("bin").join("python");
        if !moto_bin.exists() || !python.exists() {
            panic!(
                "moto server is not installed at {}: run scripts/test (it creates the venv with the pinned moto[server] and cbor2), or set COXSWAIN_VENV",
                moto_bin.display()
            );
        }
        let moto_port = free_port();
        let mut moto = Command::new(&moto_bin)
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", moto_bin.display()));
        wait_ready(moto_port, "/moto-api/", "moto server", &mut moto);
        let proxy_port = free_port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/aws_proxy.py");
        let mut proxy = Command::new(&python)
            .arg(&script)
            .args([
                "--port",
                &proxy_port.to_string(),
                "--upstream",
                &moto_port.to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        wait_ready(proxy_port, "/__ping", "aws_proxy", &mut proxy);
        Moto {
            moto,
            proxy,
            moto_port,
            proxy_port,
        }
    }

    /// The endpoint coxswain and the test's own SDK clients use (the proxy).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// Inject faults: e.g. `[{"action":"DescribeInstances","count":2,"code":"RequestLimitExceeded","status":503}]`.
    pub fn inject(&self, rules: serde_json::Value) {
        let body = serde_json::json!({ "rules": rules }).to_string();
        let (status, _) =
            http(self.proxy_port, "POST", "/__faults", &body).expect("proxy reachable");
        assert_eq!(status, 200);
    }

    /// Send a whole fault document: `{"seed": 7, "clear": true, "rules": [...]}`.
    pub fn faults(&self, doc: serde_json::Value) {
        let (status, _) =
            http(self.proxy_port, "POST", "/__faults", &doc.to_string()).expect("proxy reachable");
        assert_eq!(status, 200);
    }

    /// Every call the proxy saw, in order.
    pub fn log(&self) -> Vec<serde_json::Value> {
        let (_, body) = http(self.proxy_port, "GET", "/__log", "").expect("proxy reachable");
        serde_json::from_str(&body).expect("log is JSON")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.moto.kill();
        let _ = self.proxy.wait();
        let _ = self.moto.wait();
    }
}

/// SDK config for the test's own setup calls (same endpoint as coxswain).
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

/// What a new user sets up before writing a manifest: a VPC and subnet, a launch
/// template and a target group.
pub struct Infra {
    pub subnet: String,
    pub vpc: String,
    pub launch_template: String,
    pub image_id: String,
    pub target_group_arn: String,
}

pub async fn create_infra(cfg: &aws_config::SdkConfig, name: &str) -> Infra {
    let ec2 = aws_sdk_ec2::Client::new(cfg);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("create vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .expect("create subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_string();
    let images = ec2.describe_images().send().await.expect("describe images");
    let image_id = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .next()
        .expect("moto ships AMIs")
        .to_string();
    let lt_name = format!("{name}-lt");
    ec2.create_launch_template()
        .launch_template_name(&lt_name)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&image_id)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .expect("create launch template");
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(cfg);
    let tg = elb
        .create_target_group()
        .name(format!("{name}-tg"))
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .vpc_id(&vpc)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
        .send()
        .await
        .expect("create target group");
    let target_group_arn = tg
        .target_groups()
        .first()
        .and_then(|t| t.target_group_arn())
        .expect("tg arn")
        .to_string();
    Infra {
        subnet,
        vpc,
        launch_template: lt_name,
        image_id,
        target_group_arn,
    }
}

/// Put one datapoint into CloudWatch (through the CBOR bridge, like coxswain's reads).
pub async fn put_metric(
    cfg: &aws_config::SdkConfig,
    namespace: &str,
    name: &str,
    dims: &[(&str, &str)],
    at: chrono::DateTime<chrono::Utc>,
    value: f64,
) {
    let cw = aws_sdk_cloudwatch::Client::new(cfg);
    let mut datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
        .metric_name(name)
        .timestamp(aws_smithy_types::DateTime::from_secs(at.timestamp()))
        .value(value);
    for (k, v) in dims {
        datum = datum.dimensions(
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name(*k)
                .value(*v)
                .build(),
        );
    }
    cw.put_metric_data()
        .namespace(namespace)
        .metric_data(datum.build())
        .send()
        .await
        .expect("put metric data through the bridge");
}

/// The command lines of the README's CI snippet (the block after its marker).
pub fn readme_ci_snippet() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let block = readme
        .split("<!-- ci-snippet: run by tests/it/cli.rs -->")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README has the CI snippet");
    block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("coxswain "))
        .map(String::from)
        .collect()
}

/// Run one snippet line with `sh`, the coxswain binary first on PATH.
pub fn run_line(line: &str, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_coxswain"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("sh");
    c.args(["-c", line]).env("PATH", path);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().expect("run snippet line");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// coxswain's AWS cloud, pointed at the proxy in front of moto.
pub async fn aws_cloud(
    m: &Moto,
    controller_id: &str,
) -> std::sync::Arc<coxswain::cloud::aws::AwsCloud> {
    let opts = coxswain::cloud::aws::AwsOptions {
        region: "us-east-1".into(),
        endpoint_url: Some(m.endpoint()),
        static_credentials: Some(("testing".into(), "testing".into())),
        max_attempts: None,
    };
    std::sync::Arc::new(coxswain::cloud::aws::AwsCloud::connect(&opts, controller_id).await)
}

/// Launch template version 2 (the "new build" of deploy tests).
pub async fn new_template_version(cfg: &aws_config::SdkConfig, infra: &Infra) {
    aws_sdk_ec2::Client::new(cfg)
        .create_launch_template_version()
        .launch_template_name(&infra.launch_template)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&infra.image_id)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
                .build(),
        )
        .send()
        .await
        .expect("create template version 2");
}

/// (id, state, coxswain:build) of every instance of `fleet`, terminated ones included.
pub async fn instance_states(
    cfg: &aws_config::SdkConfig,
    fleet: &str,
) -> Vec<(String, String, String)> {
    let out = aws_sdk_ec2::Client::new(cfg)
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:coxswain:fleet")
                .values(fleet)
                .build(),
        )
        .send()
        .await
        .expect("describe");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .map(|i| {
            let build = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("coxswain:build"))
                .and_then(|t| t.value())
                .unwrap_or("")
                .to_string();
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default();
            (i.instance_id().unwrap_or("").to_string(), state, build)
        })
        .collect()
}

/// Targets of `tg` that are not draining, sorted.
pub async fn registered_ids(cfg: &aws_config::SdkConfig, tg: &str) -> Vec<String> {
    let out = aws_sdk_elasticloadbalancingv2::Client::new(cfg)
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .expect("target health");
    let mut ids: Vec<String> = out
        .target_health_descriptions()
        .iter()
        .filter(|d| {
            d.target_health()
                .and_then(|h| h.state())
                .is_some_and(|s| s.as_str() != "draining")
        })
        .filter_map(|d| d.target().and_then(|t| t.id()).map(String::from))
        .collect();
    ids.sort();
    ids
}

/// A child process (a daemon under test) that is killed when dropped, so a failing
/// assertion does not leave it running and holding the test's output open.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; SIGTERM lets it release its leases.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon's API on 127.0.0.1 over a controller on the simulated demo (virtual clock),
/// answering requests as the daemon does. Returns its address.
pub async fn demo_api(token: &str) -> std::net::SocketAddr {
    use coxswain::clock::Clock;
    use std::sync::Arc;
    let config =
        coxswain::manifest::load_str("demo", coxswain::demo::MANIFEST).expect("demo manifest");
    let clock = Arc::new(coxswain::clock::VirtualClock::new(coxswain::demo::start()));
    let sim =
        Arc::new(coxswain::cloud::sim::SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let mut controller = coxswain::controller::Controller::new(sim, clock.clone(), config, false)
        .expect("in-memory store");
    let store = controller.store().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            coxswain::daemon::handle(&mut controller, None, clock.now(), cmd).await;
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = coxswain::api::ApiState {
        commands: tx,
        store,
        token: Arc::new(token.into()),
        telemetry: Arc::new(coxswain::telemetry::Telemetry::new(Duration::from_secs(15))),
    };
    tokio::spawn(coxswain::api::serve(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}

/// Live (not zombie) children of process `parent`, as (pid, comm, argv). From /proc.
pub fn children_of(parent: u32) -> Vec<(u32, String, Vec<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let zombie = fields.first() == Some(&"Z");
        let ppid = fields.get(1).and_then(|p| p.parse::<u32>().ok());
        if zombie || ppid != Some(parent) {
            continue;
        }
        let argv = std::fs::read(entry.path().join("cmdline"))
            .map(|c| {
                c.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push((pid, comm.to_string(), argv));
    }
    out
}

/// Wait up to `secs` for `needle` in the file at `log`; its text then. Fails the test
/// with the text otherwise.
pub fn wait_for_log(log: &std::path::Path, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no '{needle}' in:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tool the suite needs from a Debian package: `$env_var` if set, else `default`. Missing
/// is a failure, never a skip (`scripts/test` installs `package`).
pub fn debian_tool(env_var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is not installed: run scripts/test (it installs Debian's {package} package), or set {env_var}",
        path.display()
    );
    path
}

/// A simulated region for `config`, its virtual clock at the demo's start (a Monday,
/// 07:00) and a controller on both with an in-memory store.
pub fn sim_world(
    config: coxswain::manifest::Config,
) -> (
    std::sync::Arc<coxswain::clock::VirtualClock>,
    std::sync::Arc<coxswain::cloud::sim::SimCloud>,
    coxswain::controller::Controller,
) {
    use std::sync::Arc;
    let clock = Arc::new(coxswain::clock::VirtualClock::new(coxswain::demo::start()));
    let sim =
        Arc::new(coxswain::cloud::sim::SimCloud::for_config(clock.clone(), &config).expect("sim"));
    let controller =
        coxswain::controller::Controller::new(sim.clone(), clock.clone(), config, false)
            .expect("in-memory store");
    (clock, sim, controller)
}

/// [`sim_world`] for a manifest's text, which must be valid.
pub fn sim_world_of(
    text: &str,
) -> (
    std::sync::Arc<coxswain::clock::VirtualClock>,
    std::sync::Arc<coxswain::cloud::sim::SimCloud>,
    coxswain::controller::Controller,
) {
    sim_world(coxswain::manifest::load_str("test.yaml", text).expect("valid manifest"))
}
