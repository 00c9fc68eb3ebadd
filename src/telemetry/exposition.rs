//! The two text formats `/metrics` speaks: OpenMetrics 1.0 for scrapers that ask for it,
//! else the Prometheus text format 0.0.4.

use std::collections::BTreeSet;

/// Content type of the Prometheus text format 0.0.4, served unless the scraper asks for
/// OpenMetrics (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0 text (<https://openmetrics.io>).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an HTTP `Accept` header asks for OpenMetrics (as Prometheus does) at least as
/// much as for the text format: by their `q` values (default 1; `q=0` refuses), with
/// `text/plain` or a wildcard standing for the text format.
pub fn accepts_openmetrics(accept: &str) -> bool {
    let (mut om, mut text) = (0.0_f64, 0.0_f64);
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        let q = params
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family `x` has its
/// samples named `x_total` in both, but 0.0.4 types the sample name (`# TYPE x_total
/// counter`), or the scraper takes it as untyped. `# UNIT` and `# EOF` have no place in
/// 0.0.4 and are dropped.
pub fn openmetrics_to_text_004(om: &str) -> String {
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((prefix, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(name) && !name.ends_with("_total") {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_served_only_to_scrapers_that_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(accepts_openmetrics(prometheus));
        assert!(accepts_openmetrics("Application/OpenMetrics-Text"));
        assert!(!accepts_openmetrics("text/plain;version=0.0.4"));
        assert!(!accepts_openmetrics("*/*"));
        assert!(!accepts_openmetrics(
            "application/openmetrics-text;q=0, text/plain"
        ));
        assert!(!accepts_openmetrics(
            "text/plain;q=0.9, application/openmetrics-text;q=0.1"
        ));
        assert!(accepts_openmetrics(
            "application/openmetrics-text;q=0.5, */*;q=0.1"
        ));
    }
}
