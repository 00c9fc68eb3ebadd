//! Every external process a rollout runs, in one place, each with a named timeout:
//! - deploy hooks ([`run`], [`spawn_hooks`]): commands run before a rollout touches any
//!   instance (migrations, cache warm-up), each with the `timeout` its manifest gives;
//! - smoke commands ([`spawn_smoke`]): one try per new instance, at most
//!   [`SMOKE_TIMEOUT`], before the instance is registered.
//!
//! Every command runs without a shell, with stdin closed, in its own process group, which
//! is killed at its timeout or when the task awaiting it is dropped (`deploy --timeout`,
//! `rollback`, `abort`). Output goes to the log and to the rollout's events.

use crate::manifest::HookSpec;
use tokio::task::JoinHandle;

/// How long one smoke-command try may run before its process group is killed.
pub const SMOKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Output lines of a failed smoke try shown in its event.
const SMOKE_TAIL_LINES: usize = 5;

/// What a run of hooks produced: output lines, and the first failure if any.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HookRun {
    pub lines: Vec<String>,
    pub failure: Option<String>,
}

/// Output lines kept per hook: enough to see what went wrong, bounded for the database.
pub const MAX_LINES: usize = 40;

/// How one command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ran {
    /// It exited; `status` as `ExitStatus` shows it ("exit status: 1", "signal: 9").
    Exited { success: bool, status: String },
    /// Still running at its timeout: its whole process group was killed.
    TimedOut,
    /// It could not start (no such program, permissions).
    NotStarted(String),
}

/// A command's end and the last lines it printed (stdout then stderr, at most
/// [`MAX_LINES`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRun {
    pub ran: Ran,
    pub lines: Vec<String>,
}

impl CommandRun {
    pub fn success(&self) -> bool {
        matches!(self.ran, Ran::Exited { success: true, .. })
    }
}

/// Kills a process group when dropped: at a timeout, and when the task awaiting the
/// command is aborted (`deploy --timeout`, `rollback` or `abort` during a hook), so a
/// hook's children (`sh -c "…"`, a migration tool's workers) never outlive it.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the process group the child
            // leads (it was started with process_group(0)); no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Run `argv` without a shell, in its own process group, with stdin closed, for at most
/// `timeout`. Past the timeout, or if the future is dropped, the whole group is killed.
pub async fn run_command(
    argv: &[String],
    envs: &[(&str, &str)],
    timeout: std::time::Duration,
) -> CommandRun {
    let Some((prog, args)) = argv.split_first() else {
        return CommandRun {
            ran: Ran::NotStarted("empty command".into()),
            lines: vec![],
        };
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CommandRun {
                ran: Ran::NotStarted(e.to_string()),
                lines: vec![],
            }
        }
    };
    let mut guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => CommandRun {
            ran: Ran::TimedOut,
            lines: vec![],
        },
        Ok(Err(e)) => CommandRun {
            ran: Ran::NotStarted(e.to_string()),
            lines: vec![],
        },
        Ok(Ok(o)) => {
            // Exited: whatever it left behind in its group goes too (the guard), but
            // nothing is signalled if the group is already empty.
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(MAX_LINES);
            let run = CommandRun {
                ran: Ran::Exited {
                    success: o.status.success(),
                    status: o.status.to_string(),
                },
                lines: lines.into_iter().skip(skip).map(str::to_string).collect(),
            };
            if o.status.success() {
                guard.0 = None;
            }
            run
        }
    }
}

/// Run `hooks` in order, stopping at the first failure. `{build}`, `{fleet}` and `{env}`
/// in arguments are replaced. Dropping the future kills the running hook's process group.
pub async fn run(hooks: &[HookSpec], build: &str, fleet: &str, env: &str) -> HookRun {
    let mut out = HookRun::default();
    for h in hooks {
        let fill = |s: &String| {
            s.replace("{build}", build)
                .replace("{fleet}", fleet)
                .replace("{env}", env)
        };
        if h.command.is_empty() {
            out.failure = Some("a hook has an empty command".into());
            return out;
        }
        let argv: Vec<String> = h.command.iter().map(fill).collect();
        let shown = argv.join(" ");
        let envs = [
            ("COXSWAIN_BUILD", build),
            ("COXSWAIN_FLEET", fleet),
            ("COXSWAIN_ENV", env),
        ];
        let run = run_command(&argv, &envs, h.timeout.0).await;
        let name = h.command.first().map(String::as_str).unwrap_or("");
        for l in &run.lines {
            out.lines.push(format!("hook `{name}`: {l}"));
        }
        match run.ran {
            Ran::TimedOut => {
                out.failure = Some(format!(
                    "hook `{shown}` timed out after {} (its process group was killed)",
                    h.timeout
                ));
                return out;
            }
            Ran::NotStarted(e) => {
                out.failure = Some(format!("hook `{shown}` could not start: {e}"));
                return out;
            }
            Ran::Exited {
                success: false,
                status,
            } => {
                out.failure = Some(format!("hook `{shown}` failed ({status})"));
                return out;
            }
            Ran::Exited { success: true, .. } => out.lines.push(format!("hook `{shown}` ok")),
        }
    }
    out
}

/// [`run`] in the background: the pass never waits for hooks. Aborting the handle kills
/// the running hook's process group.
pub fn spawn_hooks(
    hooks: Vec<HookSpec>,
    build: String,
    fleet: String,
    env: String,
) -> JoinHandle<HookRun> {
    tokio::spawn(async move { run(&hooks, &build, &fleet, &env).await })
}

/// The smoke command for one instance: `{id}` and `{address}` (its private IP, empty when
/// it has none) replaced in each argument.
pub fn smoke_argv(cmd: &[String], id: &str, address: Option<&str>) -> Vec<String> {
    cmd.iter()
        .map(|s| {
            s.replace("{id}", id)
                .replace("{address}", address.unwrap_or(""))
        })
        .collect()
}

/// One smoke try in the background, for at most [`SMOKE_TIMEOUT`]. Aborting the handle
/// kills its process group.
pub fn spawn_smoke(argv: Vec<String>) -> JoinHandle<CommandRun> {
    tokio::spawn(async move { run_command(&argv, &[], SMOKE_TIMEOUT).await })
}

/// The event line for a failed smoke try: how it ended and its last output lines.
/// `n` is this try's number, of `attempts`.
pub fn smoke_failure(run: &CommandRun, id: &str, n: u32, attempts: u32) -> String {
    let how = match &run.ran {
        Ran::Exited { status, .. } => status.clone(),
        Ran::TimedOut => format!("timed out after {}s", SMOKE_TIMEOUT.as_secs()),
        Ran::NotStarted(e) => format!("could not start: {e}"),
    };
    let tail = &run.lines[run.lines.len().saturating_sub(SMOKE_TAIL_LINES)..];
    let last = if tail.is_empty() {
        "no output".to_string()
    } else {
        format!("last output: {}", tail.join(" | "))
    };
    format!("smoke command failed on {id} ({how}; try {n} of {attempts}); {last}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HumanDuration;

    fn hook(cmd: &[&str], secs: u64) -> HookSpec {
        HookSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: HumanDuration::secs(secs),
        }
    }

    #[tokio::test]
    async fn hooks_run_in_order_with_placeholders_and_stop_at_the_first_failure() {
        let hooks = [
            hook(&["echo", "migrating for {build} on {fleet}"], 5),
            hook(&["sh", "-c", "echo broken >&2; exit 3"], 5),
            hook(&["echo", "never"], 5),
        ];
        let r = run(&hooks, "ami-2", "web", "production").await;
        assert!(
            r.lines
                .iter()
                .any(|l| l.contains("migrating for ami-2 on web")),
            "{r:?}"
        );
        assert!(r.lines.iter().any(|l| l.contains("broken")), "{r:?}");
        assert!(
            r.failure.as_deref().is_some_and(|f| f.contains("failed")),
            "{r:?}"
        );
        assert!(!r.lines.iter().any(|l| l.contains("never")));
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_fails() {
        let r = run(&[hook(&["sleep", "5"], 1)], "b", "f", "e").await;
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("timed out")),
            "{r:?}"
        );
    }

    /// Whether `pid` is gone (or a zombie waiting for its reaper: it runs no more).
    fn dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    async fn pid_from(file: &std::path::Path) -> String {
        for _ in 0..100 {
            if let Ok(s) = std::fs::read_to_string(file) {
                if !s.trim().is_empty() {
                    return s.trim().to_string();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the hook never wrote its child's pid");
    }

    async fn gone_soon(pid: &str) -> bool {
        for _ in 0..100 {
            if dead(pid) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_timed_out_hook_takes_its_children_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pid");
        let script = format!("sleep 600 & echo $! > {}; wait", file.display());
        let r = run(&[hook(&["sh", "-c", &script], 1)], "b", "f", "e").await;
        assert!(
            r.failure
                .as_deref()
                .is_some_and(|f| f.contains("timed out")),
            "{r:?}"
        );
        let pid = pid_from(&file).await;
        assert!(gone_soon(&pid).await, "the hook's child {pid} still runs");
    }

    #[tokio::test]
    async fn dropping_a_running_hook_kills_its_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pid");
        let script = format!("sleep 600 & echo $! > {}; wait", file.display());
        let hooks = vec![hook(&["sh", "-c", &script], 600)];
        let task = tokio::spawn(async move { run(&hooks, "b", "f", "e").await });
        let pid = pid_from(&file).await;
        assert!(!dead(&pid), "the hook's child should be running");
        task.abort();
        let _ = task.await;
        assert!(
            gone_soon(&pid).await,
            "the hook's child {pid} outlived the abort"
        );
    }

    #[test]
    fn a_smoke_command_gets_the_instance_and_a_failure_says_how_it_ended() {
        let cmd: Vec<String> = ["curl", "-fsS", "http://{address}:8080/health?i={id}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            smoke_argv(&cmd, "i-1", Some("10.0.0.5")),
            ["curl", "-fsS", "http://10.0.0.5:8080/health?i=i-1"]
        );
        assert_eq!(
            smoke_argv(&cmd, "i-1", None)[2],
            "http://:8080/health?i=i-1"
        );
        let lines: Vec<String> = (1..=7).map(|n| format!("line {n}")).collect();
        let failed = CommandRun {
            ran: Ran::Exited {
                success: false,
                status: "exit status: 7".into(),
            },
            lines,
        };
        assert_eq!(
            smoke_failure(&failed, "i-1", 2, 3),
            "smoke command failed on i-1 (exit status: 7; try 2 of 3); last output: line 3 | line 4 | line 5 | line 6 | line 7"
        );
        let hung = CommandRun {
            ran: Ran::TimedOut,
            lines: vec![],
        };
        assert_eq!(
            smoke_failure(&hung, "i-2", 1, 3),
            "smoke command failed on i-2 (timed out after 60s; try 1 of 3); no output"
        );
    }
}
