//! Structured logs as controller-runtime's zap logger writes them: a console encoder for people
//! and a JSON encoder for log pipelines, with zap's flags (`--zap-log-level`, `--zap-devel`,
//! `--zap-encoder`, `--zap-time-encoding`; see [`crate::command::RunArgs`]).
//!
//! JSON: one object a line, with controller-runtime's keys: `ts`, `level` (`debug`, `info`,
//! `warn`, `error`; `trace` below debug), `logger` (`controller.<name>` inside a reconcile, else
//! the event's target), `msg`, then the fields of the enclosing spans (a reconcile's
//! `controller`, `controllerGroup`, `controllerKind`, `name`, `namespace`, `reconcileID`, and
//! `<Kind>: {name, namespace}`) and the event's own, all at the top level.
//!
//! Console text is coloured only on a terminal (not in a file, a pipe or a container's log),
//! and never with `NO_COLOR` set.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The encoder: `console` (alias `text`) or `json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "console" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log encoder {other:?} (expected json or console; text = console)"
            )),
        }
    }
}

/// How `ts` is written, as zap's `--zap-time-encoding` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeEncoding {
    /// Seconds since the epoch, a float.
    Epoch,
    /// Milliseconds since the epoch, a float.
    Millis,
    /// Nanoseconds since the epoch, an integer.
    Nano,
    /// `2026-01-02T15:04:05.000Z`.
    Iso8601,
    /// `2026-01-02T15:04:05Z` (controller-runtime's default).
    #[default]
    Rfc3339,
    /// `2026-01-02T15:04:05.123456789Z`.
    Rfc3339Nano,
}

impl FromStr for TimeEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "epoch" => Ok(TimeEncoding::Epoch),
            "millis" => Ok(TimeEncoding::Millis),
            "nano" => Ok(TimeEncoding::Nano),
            "iso8601" => Ok(TimeEncoding::Iso8601),
            "rfc3339" => Ok(TimeEncoding::Rfc3339),
            "rfc3339nano" => Ok(TimeEncoding::Rfc3339Nano),
            other => Err(format!(
                "unknown time encoding {other:?} (expected epoch, millis, nano, iso8601, rfc3339 or rfc3339nano)"
            )),
        }
    }
}

impl TimeEncoding {
    fn encode(self, now: SystemTime) -> Value {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        match self {
            TimeEncoding::Epoch => Value::from(since.as_secs_f64()),
            TimeEncoding::Millis => Value::from(since.as_secs_f64() * 1000.0),
            TimeEncoding::Nano => Value::from(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)),
            TimeEncoding::Iso8601 => humantime::format_rfc3339_millis(now).to_string().into(),
            TimeEncoding::Rfc3339 => humantime::format_rfc3339_seconds(now).to_string().into(),
            TimeEncoding::Rfc3339Nano => humantime::format_rfc3339_nanos(now).to_string().into(),
        }
    }
}

impl FormatTime for TimeEncoding {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        match self.encode(SystemTime::now()) {
            Value::String(s) => w.write_str(&s),
            other => write!(w, "{other}"),
        }
    }
}

/// A level as zap's `--zap-log-level` takes it, as a tracing filter directive: `debug`, `info`,
/// `error`, `panic` (tracing has no level above error: nothing is logged) or a verbosity `N`
/// (`0` = info, `1` = debug, `2` and more = trace, as logr's `V(N)`). Anything else is passed
/// on as a filter (`warn`, `trace`, `pod_operator=debug,kube=warn`).
pub fn parse_level(s: &str) -> Result<String, String> {
    let s = s.trim();
    let directive = match s.to_ascii_lowercase().as_str() {
        "panic" | "dpanic" | "fatal" => "off".to_string(),
        "0" => "info".to_string(),
        "1" => "debug".to_string(),
        n if n.parse::<u8>().is_ok() => "trace".to_string(),
        n if n.parse::<i64>().is_ok() => {
            return Err(format!(
                "invalid level {s:?}: a verbosity is 0 or more (or debug, info, error, panic)"
            ));
        }
        _ => s.to_string(),
    };
    EnvFilter::try_new(&directive)
        .map_err(|e| format!("invalid level {s:?}: {e} (debug, info, error, panic or 0, 1, 2…)"))?;
    Ok(directive)
}

/// What [`init_with`] installs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    pub format: LogFormat,
    /// A filter directive; `RUST_LOG`, when set, replaces it.
    pub level: String,
    pub time: TimeEncoding,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`
/// (e.g. `info`, `pod_operator=debug,kube=warn`).
pub fn init(format: LogFormat, level: &str) {
    init_with(&LogOptions {
        format,
        level: level.to_string(),
        time: TimeEncoding::default(),
    });
}

/// Installs the global subscriber writing to stderr (see [`init`]).
pub fn init_with(options: &LogOptions) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&options.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests start several operators in one process) keeps the first subscriber.
    let _ = match options.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_timer(options.time)
                    .with_ansi(colour(
                        std::io::stderr().is_terminal(),
                        std::env::var_os("NO_COLOR"),
                    ))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(JsonLayer::new(std::io::stderr, options.time))
            .try_init(),
    };
}

/// Whether text logs get ANSI colours: on a terminal, unless `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Fields in the order they were recorded; a later value replaces an earlier one in place.
#[derive(Default, Clone)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn insert(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field.name(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field.name(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field.name(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field.name(), Value::String(value.to_string()));
    }
}

/// The JSON encoder: span fields are kept in each span's extensions and written, with the
/// event's, at the top level of the event's line.
pub struct JsonLayer<W> {
    make_writer: W,
    time: TimeEncoding,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W, time: TimeEncoding) -> Self {
        JsonLayer { make_writer, time }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            match extensions.get_mut::<Fields>() {
                Some(fields) => values.record(fields),
                None => {
                    let mut fields = Fields::default();
                    values.record(&mut fields);
                    extensions.insert(fields);
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut spans = Fields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    for (k, v) in &fields.0 {
                        spans.insert(k, v.clone());
                    }
                }
            }
        }
        let mut own = Fields::default();
        event.record(&mut own);

        let logger = match spans.get("controller") {
            Some(Value::String(controller)) => format!("controller.{controller}"),
            _ => metadata.target().to_string(),
        };
        let mut line = Fields::default();
        line.insert("ts", self.time.encode(SystemTime::now()));
        line.insert("level", level_name(metadata.level()).into());
        line.insert("logger", logger.into());
        line.insert(
            "msg",
            own.get("message")
                .cloned()
                .unwrap_or(Value::String(String::new())),
        );
        for (k, v) in spans.0 {
            line.insert(&k, v);
        }
        // controller-runtime also names the object under its kind.
        if let (Some(Value::String(kind)), Some(name)) = (
            line.get("controllerKind").cloned(),
            line.get("name").cloned(),
        ) {
            let namespace = line.get("namespace").cloned().unwrap_or_default();
            line.insert(
                &kind,
                serde_json::json!({ "name": name, "namespace": namespace }),
            );
        }
        for (k, v) in own.0 {
            if k != "message" {
                line.insert(&k, v);
            }
        }
        let mut text = String::from("{");
        for (i, (k, v)) in line.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            // Keys and values are strings and numbers: serialising them can't fail.
            let _ = write!(
                text,
                "{}:{}",
                Value::String(k.clone()),
                serde_json::to_string(v).unwrap_or_else(|_| "null".into())
            );
        }
        text.push_str("}\n");
        let mut writer = self.make_writer.make_writer_for(metadata);
        let _ = writer.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())));
    }

    #[test]
    fn parses_formats_case_insensitively() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("console".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!(
            "yaml"
                .parse::<LogFormat>()
                .is_err_and(|e| e.contains("yaml"))
        );
    }

    #[test]
    fn zap_levels_map_to_tracing_filters() {
        assert_eq!(parse_level("debug").as_deref(), Ok("debug"));
        assert_eq!(parse_level("info").as_deref(), Ok("info"));
        assert_eq!(parse_level("error").as_deref(), Ok("error"));
        assert_eq!(parse_level("panic").as_deref(), Ok("off"));
        assert_eq!(parse_level("0").as_deref(), Ok("info"));
        assert_eq!(parse_level("1").as_deref(), Ok("debug"));
        assert_eq!(parse_level("5").as_deref(), Ok("trace"));
        assert_eq!(
            parse_level("pod_operator=debug,kube=warn").as_deref(),
            Ok("pod_operator=debug,kube=warn")
        );
        assert!(parse_level("-1").is_err());
        assert!(parse_level("=[").is_err());
    }

    #[test]
    fn time_encodings() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(TimeEncoding::Epoch.encode(t), Value::from(1.5));
        assert_eq!(TimeEncoding::Millis.encode(t), Value::from(1500.0));
        assert_eq!(TimeEncoding::Nano.encode(t), Value::from(1_500_000_000u64));
        assert_eq!(
            TimeEncoding::Iso8601.encode(t),
            Value::from("1970-01-01T00:00:01.500Z")
        );
        assert_eq!(
            TimeEncoding::Rfc3339.encode(t),
            Value::from("1970-01-01T00:00:01Z")
        );
        assert_eq!(
            TimeEncoding::Rfc3339Nano.encode(t),
            Value::from("1970-01-01T00:00:01.500000000Z")
        );
        assert!("RFC3339Nano".parse::<TimeEncoding>().is_ok());
        assert!("unix".parse::<TimeEncoding>().is_err());
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn json_lines_lift_span_fields_to_the_top_level() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(JsonLayer::new(buffer.clone(), TimeEncoding::Epoch));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(count = 3, "outside");
            let span = tracing::info_span!(
                "reconcile",
                controller = "podrequest",
                controllerGroup = "pod.jewzaam.org",
                controllerKind = "PodRequest",
                name = "busybox",
                namespace = "demo",
                reconcileID = "0123"
            );
            let _entered = span.enter();
            tracing::warn!(error = %"boom", "failed \"quoted\"");
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[0]["msg"], "outside");
        assert_eq!(lines[0]["count"], 3);
        assert!(lines[0]["ts"].is_f64());
        assert!(
            lines[0]["logger"]
                .as_str()
                .is_some_and(|l| l.ends_with("telemetry::tests")),
            "{text}"
        );
        let r = &lines[1];
        assert_eq!(r["level"], "warn");
        assert_eq!(r["msg"], "failed \"quoted\"");
        assert_eq!(r["logger"], "controller.podrequest");
        assert_eq!(r["controller"], "podrequest");
        assert_eq!(r["controllerGroup"], "pod.jewzaam.org");
        assert_eq!(r["controllerKind"], "PodRequest");
        assert_eq!(r["reconcileID"], "0123");
        assert_eq!(r["name"], "busybox");
        assert_eq!(r["namespace"], "demo");
        assert_eq!(
            r["PodRequest"],
            serde_json::json!({"name": "busybox", "namespace": "demo"})
        );
        assert_eq!(r["error"], "boom");
        assert!(r.get("spans").is_none() && r.get("fields").is_none());
    }
}
