//! `history` and `status`: what the daemon's ledger and last pass say, as a table for
//! people or JSON for scripts. Answers are read as the API's own types
//! (`crate::api::types`).

use super::deploy::{
    answer, failed, local_error, misconfigured, unreachable, ServerArgs, EXIT_REFUSED,
};
use super::Output;
use crate::api::types::Status;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Fleet name or app.
    pub fleet: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this fleet (default: all).
    pub fleet: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn history(a: HistoryArgs) -> ExitCode {
    let out = a.server.output;
    let client = match a.server.client() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(misconfigured(e, out)),
    };
    let (status, body) = match client
        .call("GET", &format!("/v1/history/{}", a.fleet), None)
        .await
    {
        Ok(r) => r,
        Err(e) => return ExitCode::from(unreachable(e, out)),
    };
    if status >= 400 {
        return ExitCode::from(failed(status, &body, out));
    }
    let history: HistoryView = match answer(&body, out) {
        Ok(h) => h,
        Err(code) => return ExitCode::from(code),
    };
    match out {
        // The daemon's answer as it came (a newer daemon's fields included), once it
        // reads as the API's type.
        Output::Json => println!("{body}"),
        Output::Table => print!("{}", history_table(&history)),
    }
    ExitCode::SUCCESS
}

/// The history answer as the CLI reads it: the API's `History` (schema `History`), with
/// a line's `kind` and `outcome` as text, so that a newer daemon's new kinds and outcomes
/// are shown as they are instead of failing the whole command.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HistoryView {
    pub deployments: Vec<HistoryLineView>,
    pub approvals: Vec<crate::store::Approval>,
}

/// One line of [`HistoryView`] (schema `Deployment`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HistoryLineView {
    pub id: i64,
    pub kind: String,
    pub env: String,
    pub fleet: String,
    pub build: String,
    pub label: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A time as the tables print it: UTC to the second, marked `Z`.
fn utc(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The history answer as a table: one line per deployment (times in UTC; FINISHED is `-`
/// while it runs), then the approvals.
pub fn history_table(h: &HistoryView) -> String {
    let mut out = format!(
        "{:<5} {:<9} {:<12} {:<16} {:<24} {:<12} {:<12} {:<21} {:<21} REASON\n",
        "ID", "KIND", "ENV", "FLEET", "BUILD", "LABEL", "OUTCOME", "STARTED", "FINISHED"
    );
    for d in &h.deployments {
        out.push_str(&format!(
            "{:<5} {:<9} {:<12} {:<16} {:<24} {:<12} {:<12} {:<21} {:<21} {}\n",
            d.id,
            d.kind,
            d.env,
            d.fleet,
            d.build,
            // A commit SHA shows as git's short form; the JSON has it whole.
            d.label
                .as_deref()
                .map(|l| l.chars().take(12).collect::<String>())
                .unwrap_or_else(|| "-".into()),
            d.outcome,
            utc(&d.started_at),
            d.finished_at.as_ref().map_or_else(|| "-".into(), utc),
            d.reason.as_deref().unwrap_or(""),
        ));
    }
    for ap in &h.approvals {
        out.push_str(&format!(
            "approved {} by {} at {}\n",
            ap.build,
            ap.by,
            utc(&ap.at)
        ));
    }
    out
}

/// Every fleet as the daemon's last pass saw it: capacity, builds, rollout and reason.
pub async fn status(a: StatusArgs) -> ExitCode {
    let out = a.server.output;
    let client = match a.server.client() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(misconfigured(e, out)),
    };
    let (code, body) = match client.call("GET", "/v1/status", None).await {
        Ok(r) => r,
        Err(e) => return ExitCode::from(unreachable(e, out)),
    };
    if code >= 400 {
        return ExitCode::from(failed(code, &body, out));
    }
    let mut status: Status = match answer(&body, out) {
        Ok(s) => s,
        Err(code) => return ExitCode::from(code),
    };
    // The daemon's answer as it came (a newer daemon's fields included), with only the
    // asked-for fleet kept: the typed answer says which entries those are.
    let mut raw = body;
    if let Some(name) = &a.fleet {
        let keep: Vec<bool> = status.fleets.iter().map(|f| &f.fleet == name).collect();
        status.fleets.retain(|f| &f.fleet == name);
        if status.fleets.is_empty() {
            return ExitCode::from(local_error(
                &format!("no fleet named '{name}' on this daemon (or it has not made a pass yet)"),
                EXIT_REFUSED,
                out,
            ));
        }
        if let Some(serde_json::Value::Array(fleets)) = raw.get_mut("fleets") {
            let mut k = keep.into_iter();
            fleets.retain(|_| k.next().unwrap_or(false));
        }
    }
    match out {
        Output::Json => println!("{raw}"),
        Output::Table => print!("{}", status_table(&status)),
    }
    ExitCode::SUCCESS
}

/// The lines under a fleet that say how its capacity is made up, each starting with
/// `indent`: with instance weights, `N units on M instances`; with Spot, the split by
/// market (`market` is its label). `instances` 0 (an answer from an older daemon) says
/// nothing of weights.
pub fn capacity_lines(indent: &str, market: &str, units: u32, instances: u32, spot: u32) -> String {
    let mut out = String::new();
    let weighted = instances != 0 && instances != units;
    if weighted {
        out.push_str(&format!(
            "{indent}capacity in units (instance weights): {units} units on {instances} instances\n"
        ));
    }
    if spot > 0 {
        out.push_str(&format!(
            "{indent}{market} {} On-Demand, {spot} Spot{}\n",
            units.saturating_sub(spot),
            if weighted { " (units)" } else { "" }
        ));
    }
    out
}

/// How many of a running rollout's newest events the table shows.
const STATUS_EVENTS: usize = 3;

/// The status answer as a table: one line per fleet; under it, its rollout's step, gate
/// reason and newest events, its queued rollouts, the reason for its last decision and
/// its warnings.
pub fn status_table(status: &Status) -> String {
    let mut out = format!(
        "{:<14} {:<11} {:>7} {:>5} {:>7} {:>8}  {:<22} {}\n",
        "FLEET", "ENV", "DESIRED", "READY", "BOOTING", "RETIRING", "LIVE BUILD", "ROLLOUT"
    );
    for f in &status.fleets {
        let rollout = match &f.rollout {
            None => "-".to_string(),
            Some(r) => format!(
                "#{} {} → {}: {}, gates {}",
                r.id, r.from, r.to, r.phase, r.gate
            ),
        };
        out.push_str(&format!(
            "{:<14} {:<11} {:>7} {:>5} {:>7} {:>8}  {:<22} {}\n",
            f.fleet,
            f.environment,
            f.desired,
            f.ready,
            f.booting,
            f.retiring,
            f.live_build,
            rollout
        ));
        out.push_str(&capacity_lines(
            "  ",
            "market:",
            f.current,
            f.instances,
            f.spot,
        ));
        if let Some(r) = &f.rollout {
            let why = if r.gate_reason.is_empty() {
                String::new()
            } else {
                format!(": {}", r.gate_reason)
            };
            out.push_str(&format!(
                "  rollout: step {}, gates {}{why}\n",
                r.step, r.gate
            ));
            let skip = r.events.len().saturating_sub(STATUS_EVENTS);
            for e in &r.events[skip..] {
                out.push_str(&format!(
                    "  event: [{}] {}\n",
                    e.at.format("%H:%M:%S"),
                    e.message
                ));
            }
        }
        for q in &f.queued {
            out.push_str(&format!("  queued: #{} → {}\n", q.id, q.to));
        }
        out.push_str(&format!("  reason: {}\n", f.reason));
        for w in &f.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{history_table, HistoryView};

    /// A newer daemon's kinds and outcomes are shown as they come, not a parse error; the
    /// times say they are UTC, and a line still running has no finish time.
    #[test]
    fn history_shows_a_newer_daemons_kinds_and_outcomes_and_marks_times_utc() {
        let body = serde_json::json!({
            "app": "web",
            "deployments": [
                { "id": 7, "app": "web", "env": "production", "fleet": "web",
                  "build": "web-server:15", "label": null, "outcome": "paused",
                  "reason": null, "started_at": "2026-12-02T10:00:00Z",
                  "finished_at": null, "kind": "promote" },
                { "id": 6, "app": "web", "env": "production", "fleet": "web",
                  "build": "web-server:14", "label": "9f3c2e1aa0b1c2d3", "outcome": "succeeded",
                  "reason": null, "started_at": "2026-12-02T09:00:00Z",
                  "finished_at": "2026-12-02T09:12:30Z", "kind": "deploy" },
            ],
            "approvals": [
                { "app": "web", "build": "web-server:15", "by": "qa", "at": "2026-12-02T09:30:00Z" }
            ],
        });
        let view: HistoryView = serde_json::from_value(body).expect("a newer daemon's answer");
        let table = history_table(&view);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("STARTED") && lines[0].contains("FINISHED"),
            "{table}"
        );
        let running: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            running,
            [
                "7",
                "promote",
                "production",
                "web",
                "web-server:15",
                "-",
                "paused",
                "2026-12-02T10:00:00Z",
                "-"
            ],
            "{table}"
        );
        let done: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(done[5], "9f3c2e1aa0b1", "a SHA label shows short: {table}");
        assert_eq!(done[7..9], ["2026-12-02T09:00:00Z", "2026-12-02T09:12:30Z"]);
        assert_eq!(
            lines[3],
            "approved web-server:15 by qa at 2026-12-02T09:30:00Z"
        );
    }
}
