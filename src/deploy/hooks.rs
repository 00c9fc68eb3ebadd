//! Deploy hooks: commands run before a rollout touches any instance (migrations, cache
//! warm-up) and after it is live. Each runs with a timeout, without a shell; its output
//! goes to the log and to the rollout's events.

use crate::manifest::HookSpec;

/// What a run of hooks produced: output lines, and the first failure if any.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HookRun {
    pub lines: Vec<String>,
    pub failure: Option<String>,
}

/// Output lines kept per hook: enough to see what went wrong, bounded for the database.
const MAX_LINES: usize = 40;

/// Run `hooks` in order, stopping at the first failure. `{build}`, `{fleet}` and `{env}`
/// in arguments are replaced.
pub async fn run(hooks: &[HookSpec], build: &str, fleet: &str, env: &str) -> HookRun {
    let mut out = HookRun::default();
    for h in hooks {
        let fill = |s: &String| {
            s.replace("{build}", build)
                .replace("{fleet}", fleet)
                .replace("{env}", env)
        };
        let Some((prog, args)) = h.command.split_first() else {
            out.failure = Some("a hook has an empty command".into());
            return out;
        };
        let shown = h.command.iter().map(fill).collect::<Vec<_>>().join(" ");
        let mut cmd = tokio::process::Command::new(fill(prog));
        cmd.args(args.iter().map(fill))
            .env("COXSWAIN_BUILD", build)
            .env("COXSWAIN_FLEET", fleet)
            .env("COXSWAIN_ENV", env)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(h.timeout.0, cmd.output()).await {
            Err(_) => {
                out.failure = Some(format!("hook `{shown}` timed out after {}", h.timeout));
                return out;
            }
            Ok(Err(e)) => {
                out.failure = Some(format!("hook `{shown}` could not start: {e}"));
                return out;
            }
            Ok(Ok(o)) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                let lines: Vec<&str> = text.lines().collect();
                let skip = lines.len().saturating_sub(MAX_LINES);
                for l in lines.into_iter().skip(skip) {
                    out.lines.push(format!(
                        "hook `{}`: {l}",
                        h.command.first().map(String::as_str).unwrap_or("")
                    ));
                }
                if !o.status.success() {
                    out.failure = Some(format!("hook `{shown}` failed ({})", o.status));
                    return out;
                }
                out.lines.push(format!("hook `{shown}` ok"));
            }
        }
    }
    out
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
}
