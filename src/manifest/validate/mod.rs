//! Validation of a parsed manifest set, by section, beside the schema it checks: each
//! problem is reported at the `file:line:column` of the key or value it is about, and a
//! set with any problem yields no config at all.
//!
//! - [`controller`]: the `kind: Controller` document, and the set-wide rules (one
//!   controller, unique fleet names, a global cap the minimums can keep);
//! - [`fleet`]: a fleet's identity, capacity, launch, scaling limits, repair, simulation;
//! - [`policies`]: scaling policies, and every metric query (policies and deploy gates);
//! - [`deploy`]: strategy, gates and hooks;
//! - [`schedules`]: every cron (scheduled policies, freeze windows, bursts).

mod controller;
mod deploy;
mod fleet;
mod policies;
mod schedules;

pub use controller::webhook_url_problem;
pub(super) use controller::{controller, set};
pub(super) use fleet::fleet;

use super::load::Problem;
use super::locate::{locate, locate_scalar};

/// One YAML document of a manifest file, for locating what a problem is about.
#[derive(Debug, Clone, Copy)]
pub(super) struct Doc<'a> {
    pub file: &'a str,
    /// The document's text.
    pub text: &'a str,
    /// Lines of the file before the document.
    pub offset: usize,
}

/// Collects problems located in one document.
pub(super) struct Report<'a, 'p> {
    doc: Doc<'a>,
    problems: &'p mut Vec<Problem>,
}

impl<'a, 'p> Report<'a, 'p> {
    pub(super) fn new(doc: Doc<'a>, problems: &'p mut Vec<Problem>) -> Self {
        Report { doc, problems }
    }

    /// A problem at the key `path` (or the deepest key of it that is there).
    pub(super) fn at(&mut self, path: &[&str], message: impl Into<String>) {
        let (line, column) = locate(self.doc.text, path);
        self.push(line, column, message.into());
    }

    /// A problem at the `nth` (from 0) value at `path`, where lists repeat it.
    pub(super) fn at_nth(&mut self, path: &[&str], nth: usize, message: impl Into<String>) {
        let (line, column) =
            locate_scalar(self.doc.text, path, nth).unwrap_or_else(|| locate(self.doc.text, path));
        self.push(line, column, message.into());
    }

    fn push(&mut self, line: usize, column: usize, message: String) {
        self.problems.push(Problem {
            file: self.doc.file.into(),
            line: line + self.doc.offset,
            column,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::load_str;

    const FLEET: &str = "name: web\nenvironment: production\nregion: us-east-1\nlaunch: { ami: ami-12345678, instance_types: [m6i.large] }\ncapacity: { min: 3, max: 10 }\nscaling:\n  policies:\n    - target_tracking:\n        metric: { namespace: AWS/ApplicationELB, name: RequestCountPerTarget, dimensions: { TargetGroup: targetgroup/a/1 }, stat: Sum }\n        target: 1000\n";

    fn problems(text: &str) -> String {
        load_str("m.yaml", text).expect_err("refused").to_string()
    }

    /// A controller setting is reported at its own key, not at the top of the file.
    #[test]
    fn controller_problems_point_at_their_key() {
        let text = format!(
            "# the platform's controller\nkind: Controller\ncontroller_id: main\nmax_total_instances: 2\n---\n{FLEET}"
        );
        let err = problems(&text);
        assert!(
            err.contains(
                "m.yaml:4:1: max_total_instances: 2 is below the fleets' capacity.min added up (3)"
            ),
            "{err}"
        );
        let err = problems(&format!(
            "kind: Controller\npoll_interval: 0s\ncontroller_id: a b\n---\n{FLEET}"
        ));
        assert!(
            err.contains("m.yaml:2:1: poll_interval must be at least 1s"),
            "{err}"
        );
        assert!(err.contains("m.yaml:3:1: controller_id must be"), "{err}");
        // A second controller document is reported where it starts.
        let err = problems(&format!(
            "kind: Controller\n---\n{FLEET}---\nkind: Controller\n"
        ));
        assert!(
            err.contains(":14:1: a second `kind: Controller` document"),
            "{err}"
        );
    }

    /// A deploy gate's metric query is checked like a scaling policy's: the same statistic,
    /// period and dimension rules, at the gate's own lines.
    #[test]
    fn deploy_gate_metrics_are_checked_like_scaling_metrics() {
        let gate = |metric: &str, limit: &str| {
            format!("{FLEET}deploy:\n  gates:\n    metrics:\n      - metric: {metric}\n{limit}")
        };
        let err = problems(&gate(
            "{ namespace: App, name: ErrorRate, stat: Mean }",
            "        below: 0.01\n",
        ));
        assert!(
            err.contains("m.yaml:14:") && err.contains("unknown statistic 'Mean'"),
            "{err}"
        );
        let err = problems(&gate(
            "{ namespace: App, name: ErrorRate, period: 45s }",
            "        below: 0.01\n",
        ));
        assert!(
            err.contains("metric period 45s is not one CloudWatch accepts"),
            "{err}"
        );
        let err = problems(&gate(
            "{ namespace: AWS/ApplicationELB, name: HTTPCode_Target_5XX_Count, dimensions: { \"coxswain:fleet\": web } }",
            "        below: 5\n",
        ));
        assert!(err.contains("AWS/ApplicationELB does not publish"), "{err}");
        let err = problems(&gate("{ namespace: App, name: ErrorRate }", ""));
        assert!(err.contains("needs `below` or `above`"), "{err}");
        assert!(load_str(
            "m.yaml",
            &gate(
                "{ namespace: App, name: ErrorRate, stat: p99 }",
                "        below: 0.01\n"
            )
        )
        .is_ok());
    }
}
