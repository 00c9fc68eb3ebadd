//! `deploy`, `approve`, `rollback`, `history`: the CI-facing commands, talking to the
//! daemon's API. Output is one line per step for CI logs (or JSON lines), and the exit
//! code says how it ended: 0 live, 1 rolled back, 2 refused, 3 timed out (and rolled
//! back), 4 could not talk to the daemon.

use super::Output;
use crate::api::types::{
    Accepted, ApproveRequest, Approved, DeployRequest, ErrorBody, RollbackRequest, RolloutEvents,
    RolloutView,
};
use crate::client::Client;
use crate::deploy::Kind;
use crate::store::Outcome;
use clap::Args;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

pub const EXIT_LIVE: u8 = 0;
pub const EXIT_ROLLED_BACK: u8 = 1;
pub const EXIT_REFUSED: u8 = 2;
pub const EXIT_TIMEOUT: u8 = 3;
pub const EXIT_UNREACHABLE: u8 = 4;

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The daemon's API.
    #[arg(long, env = "COXSWAIN_SERVER", default_value = "http://127.0.0.1:7433")]
    pub server: String,
    /// Bearer token (or COXSWAIN_API_TOKEN, or the file --token-file).
    #[arg(long, env = "COXSWAIN_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token (default: the one the daemon writes in its state directory).
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// For an https:// server: the CA certificate (PEM) to trust; default: system roots.
    #[arg(long, env = "COXSWAIN_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Output format: a table for people, or JSON (one object, or JSON lines while
    /// following a rollout) for scripts; refusals are JSON too.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl ServerArgs {
    pub(super) fn client(&self) -> Result<Client, String> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.clone(),
            (None, path) => {
                let path = path
                    .clone()
                    .unwrap_or_else(|| super::state_dir().join("api-token"));
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| format!("no API token: pass --token, set COXSWAIN_API_TOKEN, or make {} readable ({e})", path.display()))?
            }
        };
        Client::with_ca(&self.server, &token, self.ca_file.as_deref()).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Fleet name or app.
    pub fleet: String,
    /// AMI id, or launch-template version.
    #[arg(long)]
    pub build: String,
    /// Environment to deploy to (the fleet's `environment`, e.g. staging, production).
    #[arg(long)]
    pub env: String,
    /// A human label for the build (commit, version).
    #[arg(long)]
    pub label: Option<String>,
    /// Follow the rollout until it ends, and exit with its outcome.
    #[arg(long)]
    pub wait: bool,
    /// Abort and roll back if not live within this long (e.g. 30m).
    #[arg(long, value_parser = crate::manifest::parse_duration)]
    pub timeout: Option<Duration>,
    /// Makes retries safe: a repeat with the same key (CI's job id, say) returns the
    /// rollout the first call started instead of starting another. A deploy of the build
    /// already rolling to the fleet returns that rollout even without a key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Fleet name or app the build is for.
    pub fleet: String,
    /// The build signed off (AMI id or launch-template version, as given to deploy).
    #[arg(long)]
    pub build: String,
    /// Who signs it off (a name or email, kept in the history).
    #[arg(long)]
    pub by: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Fleet name or app.
    pub fleet: String,
    /// Environment to roll back (e.g. production).
    #[arg(long)]
    pub env: String,
    /// Build to roll back to (default: the one live before the current one).
    #[arg(long)]
    pub to: Option<String>,
    /// Follow the rollback until it ends, and exit with its outcome.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub(super) fn line(out: Output, kind: &str, text: &str, extra: Value) {
    match out {
        Output::Json => {
            let mut v = json!({ "type": kind, "message": text });
            if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
                obj.extend(more);
            }
            println!("{v}");
        }
        Output::Table => println!("{text}"),
    }
}

pub(super) fn unreachable(e: impl std::fmt::Display, out: Output) -> u8 {
    local_error(&e.to_string(), EXIT_UNREACHABLE, out)
}

/// The CLI's own settings are wrong (no token, a server address that is not a URL):
/// retrying cannot help, so it is not exit 4.
pub(super) fn misconfigured(e: impl std::fmt::Display, out: Output) -> u8 {
    local_error(&e.to_string(), EXIT_REFUSED, out)
}

/// An error found before or without an answer from the daemon: on stderr, and with
/// `--output json` also as a JSON line on stdout (status 0: no HTTP answer).
pub(super) fn local_error(msg: &str, code: u8, out: Output) -> u8 {
    eprintln!("error: {msg}");
    if out == Output::Json {
        println!(
            "{}",
            json!({"type": "error", "status": 0, "message": msg, "refused": code == EXIT_REFUSED, "exit_code": code})
        );
    }
    code
}

/// An answer body read as the API type `T` (see `crate::api::types`). A body of any
/// other shape is the daemon's trouble, not the request's: exit 4, with the body shown.
pub(super) fn answer<T: DeserializeOwned>(body: &Value, out: Output) -> Result<T, u8> {
    match T::deserialize(body) {
        Ok(t) => Ok(t),
        Err(e) => Err(local_error(
            &format!("unexpected answer from the daemon ({e}): {body}"),
            EXIT_UNREACHABLE,
            out,
        )),
    }
}

/// A request body as JSON (these types always serialize; the error is only a type's).
fn request(body: &impl serde::Serialize, out: Output) -> Result<Value, u8> {
    serde_json::to_value(body).map_err(|e| local_error(&e.to_string(), EXIT_REFUSED, out))
}

/// A 4xx/5xx answer: refusals and bad requests exit 2 (sending it again cannot help),
/// the daemon's own trouble (5xx) exits 4.
pub(super) fn failed(status: u16, body: &Value, out: Output) -> u8 {
    let err: ErrorBody = ErrorBody::deserialize(body).unwrap_or_else(|_| ErrorBody {
        error: format!("unknown error: {body}"),
        refused: false,
    });
    let msg = err.error.as_str();
    let (code, text) = if status == 401 {
        (
            EXIT_REFUSED,
            format!("error: the daemon rejected the token ({msg})"),
        )
    } else if err.refused {
        (EXIT_REFUSED, format!("refused: {msg}"))
    } else if (400..500).contains(&status) {
        (
            EXIT_REFUSED,
            format!("error: bad request ({status}): {msg}"),
        )
    } else {
        (
            EXIT_UNREACHABLE,
            format!("error: daemon answered {status}: {msg}"),
        )
    };
    eprintln!("{text}");
    if out == Output::Json {
        // CI parsing JSON lines gets the refusal as one too.
        println!(
            "{}",
            json!({"type": "error", "status": status, "message": msg, "refused": code == EXIT_REFUSED, "exit_code": code})
        );
    }
    code
}

pub async fn deploy(a: DeployArgs) -> ExitCode {
    let out = a.server.output;
    let client = match a.server.client() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(misconfigured(e, out)),
    };
    let req = DeployRequest {
        fleet: a.fleet.clone(),
        env: a.env.clone(),
        build: a.build.clone(),
        label: a.label.clone(),
        timeout_secs: a.timeout.map(|t| t.as_secs()),
        idempotency_key: a.idempotency_key.clone(),
    };
    let req = match request(&req, out) {
        Ok(r) => r,
        Err(code) => return ExitCode::from(code),
    };
    let (status, body) = match client.call("POST", "/v1/deploys", Some(&req)).await {
        Ok(r) => r,
        Err(e) => return ExitCode::from(unreachable(e, out)),
    };
    if status >= 400 {
        return ExitCode::from(failed(status, &body, out));
    }
    let accepted = match answer::<Accepted>(&body, out) {
        Ok(a) => a,
        Err(code) => return ExitCode::from(code),
    };
    ExitCode::from(started(&client, &accepted, a.wait, out, false).await.code)
}

/// How a request that was followed ended.
struct Ended {
    code: u8,
    /// The rollout's final reason (empty when none, or not followed).
    reason: String,
    /// The followed rollout was a deploy that went live (not a rollback).
    deploy_live: bool,
    /// Still restoring a build past its deadline (the daemon goes on).
    overdue: bool,
    /// The result line to print, and its `outcome` for JSON (empty: nothing to print,
    /// the line was printed already, or an error was).
    text: String,
    outcome: String,
    /// The rollout followed.
    rollout: Option<i64>,
}

impl Ended {
    fn early(code: u8) -> Ended {
        Ended {
            code,
            reason: String::new(),
            deploy_live: false,
            overdue: false,
            text: String::new(),
            outcome: String::new(),
            rollout: None,
        }
    }

    /// Print the one result line (`type: result`), with the exit code the command ends
    /// with.
    fn print(&self, out: Output) {
        if !self.text.is_empty() {
            line(
                out,
                "result",
                &self.text,
                json!({"rollout": self.rollout, "outcome": self.outcome, "exit_code": self.code}),
            );
        }
    }
}

/// How a finished rollout ended, for CI: its exit code and result line.
fn ended_of(r: &RolloutView, id: i64) -> Ended {
    let reason = r.reason.clone().unwrap_or_default();
    let rollback = r.kind == Kind::Rollback;
    let (code, text) = match r.outcome {
        Some(Outcome::Succeeded) if rollback => (
            EXIT_LIVE,
            format!(
                "rolled back: {} is live again on {} ({}), {} is gone",
                r.build, r.fleet, r.env, r.from
            ),
        ),
        Some(Outcome::Succeeded) => (
            EXIT_LIVE,
            format!("live: {} on {} ({})", r.build, r.fleet, r.env),
        ),
        _ if r.timed_out => (EXIT_TIMEOUT, format!("timed out and rolled back: {reason}")),
        Some(Outcome::Superseded) => (EXIT_ROLLED_BACK, format!("superseded: {reason}")),
        _ => (EXIT_ROLLED_BACK, format!("rolled back: {reason}")),
    };
    Ended {
        code,
        reason,
        deploy_live: r.outcome == Some(Outcome::Succeeded) && !rollback,
        overdue: false,
        text,
        outcome: r.outcome.map_or("", Outcome::as_str).into(),
        rollout: Some(id),
    }
}

/// The rollout `id` as the daemon has it now, if it has finished (one read, no waiting).
async fn finished_rollout(client: &Client, id: i64) -> Option<RolloutView> {
    let (status, body) = client
        .call("GET", &format!("/v1/rollouts/{id}"), None)
        .await
        .ok()?;
    if status >= 400 {
        return None;
    }
    let r = RolloutView::deserialize(&body).ok()?;
    r.finished.then_some(r)
}

/// Follow an accepted request when asked to.
async fn started(
    client: &Client,
    accepted: &Accepted,
    wait: bool,
    out: Output,
    rollback: bool,
) -> Ended {
    match accepted {
        Accepted::AlreadyLive { fleet, build } => {
            line(
                out,
                "result",
                &format!("{build} is already live on {fleet}: nothing to do"),
                json!({"outcome": "succeeded"}),
            );
            Ended::early(EXIT_LIVE)
        }
        Accepted::Started {
            id,
            queued_behind,
            existing,
            ..
        } => {
            let id = *id;
            let what = if rollback { "rollback" } else { "deploy" };
            // A retry (same key, or the same build already rolling) whose rollout has
            // already ended: CI gets that rollout's outcome and exit code, not "accepted".
            let ended_before = if *existing && !wait {
                finished_rollout(client, id).await
            } else {
                None
            };
            let text = if ended_before.is_some() {
                format!("rollout #{id} was already admitted for this {what} and has ended; nothing new was started")
            } else if *existing {
                format!(
                    "rollout #{id} was already admitted for this {what}; nothing new was started"
                )
            } else if let Some(q) = queued_behind {
                format!("{what} accepted as rollout #{id}, queued behind rollout #{q}")
            } else {
                format!("{what} accepted as rollout #{id}")
            };
            let text = if wait || ended_before.is_some() {
                text
            } else {
                format!("{text}; follow it with --wait or `coxswain status`")
            };
            line(
                out,
                "accepted",
                &text,
                json!({"id": id, "kind": what, "existing": existing, "queued_behind": queued_behind}),
            );
            if let Some(r) = ended_before {
                let ended = ended_of(&r, id);
                if !rollback {
                    ended.print(out);
                }
                return ended;
            }
            if !wait {
                return Ended::early(EXIT_LIVE);
            }
            let ended = follow(client, id, out).await;
            if !rollback {
                ended.print(out);
            }
            ended
        }
    }
}

/// How long `--wait` keeps trying to reach a daemon it lost while following a rollout.
const FOLLOW_RECONNECT: Duration = Duration::from_secs(120);

/// Print the rollout's events as they come; its exit code and final reason.
async fn follow(client: &Client, id: i64, out: Output) -> Ended {
    use std::io::IsTerminal;
    // A progress bar on a terminal; plain lines in CI logs and pipes.
    let tty = out == Output::Table && std::io::stdout().is_terminal();
    let mut progress = (0, 0);
    let mut after = 0;
    // Lost the daemon while following (a restart, a deploy of coxswain itself): the
    // rollout was admitted and goes on; keep asking for a while before giving up.
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let path = format!("/v1/rollouts/{id}/events?after={after}&wait=20");
        let (status, body) = match client.call("GET", &path, None).await {
            Ok(r) => {
                lost_since = None;
                r
            }
            Err(e) => {
                if lost_since.is_none() {
                    eprintln!("warning: lost the daemon while following rollout #{id} ({e}); retrying for {}s", FOLLOW_RECONNECT.as_secs());
                }
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < FOLLOW_RECONNECT {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                eprintln!("error: lost the daemon for {}s while following rollout #{id}, which was admitted and goes on: see `coxswain status` ({e})", FOLLOW_RECONNECT.as_secs());
                return Ended::early(EXIT_UNREACHABLE);
            }
        };
        if status >= 400 {
            return Ended::early(failed(status, &body, out));
        }
        let RolloutEvents { rollout: r, events } = match answer(&body, out) {
            Ok(page) => page,
            Err(code) => return Ended::early(code),
        };
        for e in &events {
            after = after.max(e.seq);
            let time = e.at.format("%H:%M:%S");
            if tty {
                // Clear the bar, print the line, draw the bar again below it.
                print!("\r\x1b[2K");
            }
            line(
                out,
                "step",
                &format!("[{time}] {}", e.message),
                json!({"rollout": id, "at": e.at}),
            );
            if let Some(p) = step_of(&e.message) {
                progress = p;
            }
        }
        if tty {
            print!("\r\x1b[2K{}", bar(progress, &r.phase));
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        if r.finished {
            if tty {
                print!("\r\x1b[2K");
            }
            return ended_of(&r, id);
        }
        if r.overdue {
            // Restoring past its deadline: CI gets an answer now; the daemon goes on.
            let code = if r.timed_out {
                EXIT_TIMEOUT
            } else {
                EXIT_ROLLED_BACK
            };
            let text = format!(
                "restoring {} is overdue (past gates.timeout); coxswain goes on restoring it: follow with `coxswain status`",
                r.restoring()
            );
            return Ended {
                code,
                reason: text.clone(),
                deploy_live: false,
                overdue: true,
                text,
                outcome: "overdue".into(),
                rollout: Some(id),
            };
        }
    }
}

pub async fn approve(a: ApproveArgs) -> ExitCode {
    let out = a.server.output;
    let client = match a.server.client() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(misconfigured(e, out)),
    };
    let req = ApproveRequest {
        fleet: a.fleet.clone(),
        build: a.build.clone(),
        by: a.by.clone(),
    };
    let req = match request(&req, out) {
        Ok(r) => r,
        Err(code) => return ExitCode::from(code),
    };
    match client.call("POST", "/v1/approvals", Some(&req)).await {
        Ok((s, body)) if s >= 400 => ExitCode::from(failed(s, &body, out)),
        Ok((_, body)) => {
            match answer::<Approved>(&body, out) {
                Ok(Approved { approved: true }) => {}
                Ok(_) => {
                    return ExitCode::from(local_error(
                        &format!("the daemon did not confirm the approval: {body}"),
                        EXIT_UNREACHABLE,
                        out,
                    ))
                }
                Err(code) => return ExitCode::from(code),
            }
            line(
                out,
                "approved",
                &format!("approved {} of {} by {}", a.build, a.fleet, a.by),
                json!({}),
            );
            ExitCode::SUCCESS
        }
        Err(e) => ExitCode::from(unreachable(e, out)),
    }
}

pub async fn rollback(a: RollbackArgs) -> ExitCode {
    let out = a.server.output;
    let client = match a.server.client() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(misconfigured(e, out)),
    };
    let req = RollbackRequest {
        fleet: a.fleet.clone(),
        env: a.env.clone(),
        to: a.to.clone(),
    };
    let req = match request(&req, out) {
        Ok(r) => r,
        Err(code) => return ExitCode::from(code),
    };
    let (status, body) = match client.call("POST", "/v1/rollbacks", Some(&req)).await {
        Ok(r) => r,
        Err(e) => return ExitCode::from(unreachable(e, out)),
    };
    if status >= 400 {
        return ExitCode::from(failed(status, &body, out));
    }
    let accepted = match answer::<Accepted>(&body, out) {
        Ok(a) => a,
        Err(code) => return ExitCode::from(code),
    };
    let mut ended = started(&client, &accepted, a.wait, out, true).await;
    if !a.wait {
        return ExitCode::from(ended.code);
    }
    // What a rollback wants is the previous build back. A deploy it aborted (or that a
    // gate was already rolling back) ending "rolled back" is that: success. A deploy that
    // went live before the abort reached it is not. One result line either way, with the
    // exit code the command ends with.
    match ended.code {
        _ if ended.overdue => ended.code = EXIT_ROLLED_BACK,
        EXIT_ROLLED_BACK | EXIT_TIMEOUT => {
            ended.text = format!(
                "rollback done: the previous build is back ({})",
                ended.reason
            );
            ended.outcome = "rolled_back".into();
            ended.code = EXIT_LIVE;
        }
        EXIT_LIVE if ended.deploy_live => {
            ended.text = "the deploy went live before the rollback reached it: nothing was rolled back; run rollback again".into();
            ended.code = EXIT_ROLLED_BACK;
        }
        _ => {}
    }
    ended.print(out);
    ExitCode::from(ended.code)
}

/// (step, of) from a "step K/N: ..." progress line.
fn step_of(msg: &str) -> Option<(u32, u32)> {
    let rest = msg.strip_prefix("step ")?;
    let (k, rest) = rest.split_once('/')?;
    let n = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((k.parse().ok()?, n.parse().ok()?))
}

fn bar((k, n): (u32, u32), phase: &str) -> String {
    const WIDTH: u32 = 30;
    let filled = (k * WIDTH).checked_div(n).unwrap_or(0).min(WIDTH);
    format!(
        "[{}{}] step {k}/{} {phase}",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        if n == 0 {
            "?".to_string()
        } else {
            n.to_string()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_the_step_and_the_bar_fills() {
        assert_eq!(
            step_of("step 2/4: 4 of 8 on ami-2; gates green"),
            Some((2, 4))
        );
        assert_eq!(step_of("live: 8 of 8"), None);
        assert!(bar((2, 4), "rolling").starts_with("[###############---------------] step 2/4"));
    }
}
