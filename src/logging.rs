//! Log output, always on stderr: human-readable lines by default, one JSON object per line
//! with `--log-format json` (for Splunk, Loki, CloudWatch Logs and friends).
//!
//! JSON lines carry `timestamp` (wall clock, RFC 3339 UTC), `level`, `message` and every
//! field of the event as a JSON value: numbers as numbers, booleans as booleans, a list of
//! instance ids as an array, `None` as null. Fields logged with `?` (Rust `Debug`) are
//! turned into JSON when their `Debug` form is JSON-like (quoted strings, lists,
//! `Some(..)`/`None`), and kept as a string otherwise. On the simulated cloud every line
//! also carries the simulated time (`sim_time` in JSON, `sim=` in text). Colours only when
//! stderr is a terminal.

use crate::clock::Clock;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The simulated clock, once the daemon runs on one: its time goes on every line.
static SIM_CLOCK: OnceLock<Arc<dyn Clock>> = OnceLock::new();

/// Put `clock`'s time (the simulated cloud's) on every log line from now on. The first
/// call wins.
pub fn set_sim_clock(clock: Arc<dyn Clock>) {
    let _ = SIM_CLOCK.set(clock);
}

fn sim_time() -> Option<String> {
    SIM_CLOCK
        .get()
        .map(|c| c.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Install the global subscriber. `RUST_LOG` overrides the default level (info, or warn
/// when `quiet`; the AWS SDK's own chatter is kept at warn).
pub fn init(format: LogFormat, quiet: bool) {
    let default = if quiet {
        "warn"
    } else {
        "info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_ec2=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_timer(WallAndSim).try_init(),
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
    };
}

/// Text lines' time: the wall clock, and the simulated clock's when there is one.
struct WallAndSim;

impl FormatTime for WallAndSim {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match sim_time() {
            Some(sim) => write!(w, "{now} sim={sim}"),
            None => write!(w, "{now}"),
        }
    }
}

/// One JSON object per event (see the module docs).
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let line = json_line(
            chrono::Utc::now(),
            sim_time(),
            event.metadata().level().as_str(),
            |v| event.record(v),
        );
        writeln!(writer, "{line}")
    }
}

/// The JSON object for one event: `record` feeds its fields to the visitor.
fn json_line(
    now: chrono::DateTime<chrono::Utc>,
    sim: Option<String>,
    level: &str,
    record: impl FnOnce(&mut JsonFields),
) -> String {
    let mut fields = JsonFields::default();
    record(&mut fields);
    let mut obj = serde_json::Map::new();
    obj.insert(
        "timestamp".into(),
        now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    if let Some(sim) = sim {
        obj.insert("sim_time".into(), sim.into());
    }
    obj.insert("level".into(), level.into());
    obj.insert("message".into(), fields.message.unwrap_or_default().into());
    for (k, v) in fields.fields {
        // A field named like one of ours keeps its value under a prefixed key.
        let key = if obj.contains_key(&k) {
            format!("field_{k}")
        } else {
            k
        };
        obj.insert(key, v);
    }
    serde_json::Value::Object(obj).to_string()
}

#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: Vec<(String, serde_json::Value)>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            self.message = Some(text);
        } else {
            self.fields.push((field.name().to_string(), value));
        }
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| value.to_string().into());
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        // The message (format_args!) arrives here too: it is text, never parsed.
        if field.name() == "message" {
            self.put(field, text.into());
        } else {
            self.put(field, debug_to_json(&text));
        }
    }
}

/// A `Debug` rendering as a JSON value: JSON-like forms (quoted strings, lists, maps) as
/// themselves, `Some(x)` as `x`, `None` as null, anything else as the string it is.
fn debug_to_json(text: &str) -> serde_json::Value {
    if text == "None" {
        return serde_json::Value::Null;
    }
    if let Some(inner) = text.strip_prefix("Some(").and_then(|t| t.strip_suffix(')')) {
        return debug_to_json(inner);
    }
    // Only structured forms: a bare `13` stays the string it was (a build label, say).
    if text.starts_with(['[', '{', '"']) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            return v;
        }
    }
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_forms_become_json_values() {
        let ids = vec!["i-1".to_string(), "i-2".to_string()];
        assert_eq!(
            debug_to_json(&format!("{ids:?}")),
            serde_json::json!(["i-1", "i-2"])
        );
        let ty = Some("m6i.large".to_string());
        assert_eq!(debug_to_json(&format!("{ty:?}")), "m6i.large");
        let none: Option<String> = None;
        assert_eq!(debug_to_json(&format!("{none:?}")), serde_json::Value::Null);
        assert_eq!(debug_to_json("[1, 2]"), serde_json::json!([1, 2]));
        assert_eq!(debug_to_json("13"), "13");
        assert_eq!(
            debug_to_json("\"a \\\"quoted\\\" name\""),
            "a \"quoted\" name"
        );
        // Not JSON-like: kept as the text it is.
        let d = std::time::Duration::from_millis(1500);
        assert_eq!(debug_to_json(&format!("{d:?}")), "1.5s");
    }

    #[test]
    fn a_json_line_has_typed_fields_the_message_and_the_simulated_time() {
        // Through a real subscriber, so the fields arrive as tracing records them.
        let buf = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(out.clone()))
            .with_ansi(false)
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let ids = vec!["i-1".to_string(), "i-2".to_string()];
            let instance_type: Option<String> = Some("m6i.large".into());
            tracing::info!(fleet = %"web", ids = ?ids, instance_type = ?instance_type, count = 2u32, ratio = 0.5, ok = true, "action: launched {} instance(s)", ids.len());
        });
        let text = String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(v["message"], "action: launched 2 instance(s)");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fleet"], "web");
        assert_eq!(v["ids"], serde_json::json!(["i-1", "i-2"]));
        assert_eq!(v["instance_type"], "m6i.large");
        assert_eq!(v["count"], 2);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["ok"], true);
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(!text.contains('\u{1b}'), "no ANSI codes: {text}");
        // With a simulated clock, its time is on the line.
        let line = json_line(
            chrono::Utc::now(),
            Some("2026-03-02T07:31:00Z".into()),
            "WARN",
            |_| {},
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["sim_time"], "2026-03-02T07:31:00Z");
    }

    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
