//! Firecracker-shaped log lines through `tracing`:
//! `<RFC 3339 UTC, ns> [<id>:<thread>[:<LEVEL>][:<file>:<line>]] <message>`, to stdout or to
//! `--log-path` (file or FIFO), filtered by `--level` and `--module`.

use std::{
    fmt,
    io::Write,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{Event, Level, Subscriber, level_filters::LevelFilter};
use tracing_subscriber::{
    Layer,
    field::Visit,
    layer::{Context, SubscriberExt},
    util::SubscriberInitExt,
};

/// Logger settings from the command line.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Instance id shown in every line.
    pub id: String,
    /// Maximum level.
    pub level: LevelFilter,
    /// Show the level.
    pub show_level: bool,
    /// Show file:line.
    pub show_origin: bool,
    /// Only events whose target starts with this.
    pub module: Option<String>,
}

/// Parse `--level` like Firecracker (case-insensitive; `Warn` and `Warning` both accepted).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" | "warning" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => return None,
    })
}

struct FirecrackerLayer {
    settings: LogSettings,
    sink: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for FirecrackerLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        use fmt::Write as _;
        let meta = event.metadata();
        if *meta.level() > self.settings.level {
            return;
        }
        if let Some(m) = &self.settings.module
            && !meta.target().starts_with(m.as_str())
        {
            return;
        }
        let mut msg = Message::default();
        event.record(&mut msg);
        let thread = std::thread::current();
        let mut line = format!(
            "{} [{}:{}",
            timestamp(),
            self.settings.id,
            thread.name().unwrap_or("main")
        );
        if self.settings.show_level {
            line.push(':');
            line.push_str(level_name(*meta.level()));
        }
        if self.settings.show_origin {
            let _ = write!(
                line,
                ":{}:{}",
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0)
            );
        }
        line.push_str("] ");
        line.push_str(&msg.0);
        line.push('\n');
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.write_all(line.as_bytes());
            let _ = sink.flush();
        }
    }
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// RFC 3339 UTC with nanoseconds, computed without a time crate.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Install the global subscriber.
pub fn init(settings: LogSettings, sink: Box<dyn Write + Send>) {
    let layer = FirecrackerLayer {
        settings,
        sink: Mutex::new(sink),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_parse_levels_like_firecracker() {
        assert_eq!(parse_level("Warning"), Some(LevelFilter::WARN));
        assert_eq!(parse_level("warn"), Some(LevelFilter::WARN));
        assert_eq!(parse_level("Off"), Some(LevelFilter::OFF));
        assert_eq!(parse_level("loud"), None);
    }

    #[test]
    fn test_should_format_rfc3339_timestamps() {
        let t = timestamp();
        assert_eq!(t.len(), "2026-11-23T13:40:00.123456789".len(), "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
    }
}
