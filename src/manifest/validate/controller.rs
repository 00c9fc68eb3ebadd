//! The `kind: Controller` document, and the rules over the whole set of manifests.

use super::{Doc, Report};
use crate::manifest::load::Problem;
use crate::manifest::{ControllerSpec, FleetSpec, SinkSpec};
use std::collections::BTreeMap;

/// The controller document's own settings.
pub(in crate::manifest) fn controller(c: &ControllerSpec, doc: Doc, problems: &mut Vec<Problem>) {
    let mut r = Report::new(doc, problems);
    if c.controller_id.is_empty()
        || !c
            .controller_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        r.at(
            &["controller_id"],
            "controller_id must be letters, digits, '-' or '_' (it becomes a tag value)",
        );
    }
    for (i, sink) in c.notifications.sinks.iter().enumerate() {
        let (url, url_env) = match sink {
            SinkSpec::Slack(s) => (s.url.as_deref(), s.url_env.as_deref()),
            SinkSpec::Opsgenie(o) => (Some(o.url.as_str()), None),
        };
        let problem = match (url, url_env) {
            (Some(_), Some(_)) | (None, None) => Some(
                "a slack sink needs exactly one of `url` and `url_env` (an environment variable holding the URL)".to_string(),
            ),
            (Some(u), None) => webhook_url_problem(u),
            (None, Some(_)) => None,
        };
        if let Some(p) = problem {
            r.at(
                &["notifications", "sinks"],
                format!("notifications.sinks[{i}]: {p}"),
            );
        }
    }
    if c.max_total_instances == Some(0) {
        r.at(
            &["max_total_instances"],
            "max_total_instances: 0 would stop every fleet; remove it or set a positive cap",
        );
    }
    if c.poll_interval.as_secs() == 0 {
        r.at(&["poll_interval"], "poll_interval must be at least 1s");
    }
}

/// The rules over the whole set: fleet names are unique, there is at most one controller
/// document, and the global cap can hold the fleets' minimums from the first pass.
pub(in crate::manifest) fn set(
    fleets: &[(&FleetSpec, Doc)],
    controllers: &[(&ControllerSpec, Doc)],
    problems: &mut Vec<Problem>,
) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (fleet, doc) in fleets {
        if let Some(first) = seen.insert(&fleet.name, doc.file) {
            Report::new(*doc, problems).at(
                &["name"],
                format!(
                    "fleet name '{}' is already used in {first}: fleet names must be unique",
                    fleet.name
                ),
            );
        }
    }
    if let Some((_, doc)) = controllers.get(1) {
        Report::new(*doc, problems).at(
            &["kind"],
            "a second `kind: Controller` document: keep controller settings in one place",
        );
    }
    // The instances each fleet's minimum takes (with instance weights, its units on the
    // first type, which the daemon launches first).
    let minimums: u64 = fleets
        .iter()
        .map(|(f, _)| {
            let w = f
                .launch
                .type_names()
                .first()
                .map_or(1, |t| f.launch.weight_of(t));
            u64::from(f.capacity.min.div_ceil(w))
        })
        .sum();
    for (c, doc) in controllers {
        if let Some(cap) = c
            .max_total_instances
            .filter(|cap| u64::from(*cap) < minimums)
        {
            Report::new(*doc, problems).at(
                &["max_total_instances"],
                format!(
                    "max_total_instances: {cap} is below the fleets' capacity.min added up ({minimums} instances): the cap could never hold; raise it or lower the minimums"
                ),
            );
        }
    }
}

/// Webhooks carry secrets and alerts: https, or plain http to this host only (tests,
/// a local relay).
pub fn webhook_url_problem(url: &str) -> Option<String> {
    if url.starts_with("https://") {
        return None;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("the webhook URL is not an http(s) URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let loopback = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| host_port == *h || host_port.starts_with(&format!("{h}:")));
    if loopback && !authority.contains('@') {
        return None;
    }
    // The path of a webhook URL is often its secret: it stays out of the message.
    Some(
        "a plain http:// webhook to another host: webhooks carry secrets and alerts, use https://"
            .into(),
    )
}
