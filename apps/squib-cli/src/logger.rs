//! Firecracker-shaped log lines through `tracing`:
//! `<RFC 3339 UTC, ns> [<id>:<thread>[:<LEVEL>][:<file>:<line>]] <message>`, to stdout or to
//! `--log-path` (file or FIFO), filtered by `--level` and `--module`.
//!
//! The settings and the destination can change at runtime (`PUT /logger`, through
//! [`LoggerHandle`], which the VMM holds as its [`squib::LoggerControl`]): the layer decides per
//! event whether it is enabled (the level from an atomic, the rarely used module filter under a
//! read lock), so no callsite interest is cached. A line that cannot be written is counted in
//! the `logger.missed_log_count` metric.

use std::{
    fmt,
    io::Write,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use squib::{LogLevel, LoggerConfig};
use squib_core::metrics::METRICS;
use tracing::{
    Event, Level, Metadata, Subscriber, level_filters::LevelFilter, subscriber::Interest,
};
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

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Opens a log destination (file or FIFO) as Firecracker does.
pub fn open_log_file(path: &Path) -> std::io::Result<std::fs::File> {
    squib_sys::sink::open_sink(path)
}

struct Shared {
    settings: RwLock<LogSettings>,
    sink: Mutex<Box<dyn Write + Send>>,
    /// `settings.level` as a number (0 = off … 5 = trace) and whether a module filter is set:
    /// the per-event check reads these atomics, not the lock.
    level: AtomicU8,
    filtered: AtomicBool,
}

impl Shared {
    fn new(settings: LogSettings, sink: Box<dyn Write + Send>) -> Self {
        let me = Self {
            level: AtomicU8::new(0),
            filtered: AtomicBool::new(false),
            settings: RwLock::new(settings),
            sink: Mutex::new(sink),
        };
        me.publish();
        me
    }

    /// Mirrors the settings into the atomics.
    fn publish(&self) {
        let s = self.settings.read().unwrap_or_else(PoisonError::into_inner);
        self.level.store(level_rank(s.level), Ordering::Relaxed);
        self.filtered.store(s.module.is_some(), Ordering::Relaxed);
    }
}

/// 0 = off, 1 = error … 5 = trace.
fn level_rank(level: LevelFilter) -> u8 {
    match level.into_level() {
        None => 0,
        Some(Level::ERROR) => 1,
        Some(Level::WARN) => 2,
        Some(Level::INFO) => 3,
        Some(Level::DEBUG) => 4,
        Some(Level::TRACE) => 5,
    }
}

/// The handle `PUT /logger` reconfigures the installed logger through.
#[derive(Clone)]
pub struct LoggerHandle(Arc<Shared>);

impl fmt::Debug for LoggerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggerHandle").finish_non_exhaustive()
    }
}

impl squib::LoggerControl for LoggerHandle {
    /// Firecracker's `Logger::update`: the file is opened first (on failure nothing changes);
    /// an absent `level` resets it to Info, the other absent fields keep their values.
    fn update(&self, config: &LoggerConfig) -> std::io::Result<()> {
        let file = config
            .log_path
            .as_deref()
            .map(|p| open_log_file(Path::new(p)))
            .transpose()?;
        {
            let mut s = self
                .0
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            s.level = level_filter(config.level);
            if let Some(v) = config.show_level {
                s.show_level = v;
            }
            if let Some(v) = config.show_log_origin {
                s.show_origin = v;
            }
            if let Some(m) = &config.module {
                s.module = Some(m.clone());
            }
        }
        self.0.publish();
        if let Some(file) = file {
            *self.0.sink.lock().unwrap_or_else(PoisonError::into_inner) = Box::new(file);
        }
        Ok(())
    }
}

struct FirecrackerLayer(Arc<Shared>);

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

impl FirecrackerLayer {
    fn settings(&self) -> std::sync::RwLockReadGuard<'_, LogSettings> {
        self.0
            .settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Subscriber> Layer<S> for FirecrackerLayer {
    fn register_callsite(&self, _meta: &'static Metadata<'static>) -> Interest {
        // The settings can change at runtime: decide per event.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        let rank = level_rank(LevelFilter::from_level(*meta.level()));
        if rank > self.0.level.load(Ordering::Relaxed) {
            return false;
        }
        !self.0.filtered.load(Ordering::Relaxed)
            || self
                .settings()
                .module
                .as_deref()
                .is_none_or(|m| meta.target().starts_with(m))
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        use fmt::Write as _;
        let meta = event.metadata();
        let mut msg = Message::default();
        event.record(&mut msg);
        let thread = std::thread::current();
        let line = {
            let s = self.settings();
            let mut line = format!(
                "{} [{}:{}",
                timestamp(),
                s.id,
                thread.name().unwrap_or("main")
            );
            if s.show_level {
                line.push(':');
                line.push_str(level_name(*meta.level()));
            }
            if s.show_origin {
                let _ = write!(
                    line,
                    ":{}:{}",
                    meta.file().unwrap_or("?"),
                    meta.line().unwrap_or(0)
                );
            }
            line
        };
        let mut line = line;
        line.push_str("] ");
        line.push_str(&msg.0);
        line.push('\n');
        let mut sink = self.0.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if sink
            .write_all(line.as_bytes())
            .and_then(|()| sink.flush())
            .is_err()
        {
            METRICS.logger.missed_log_count.inc();
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

/// Install the global subscriber; the handle reconfigures it.
pub fn init(settings: LogSettings, sink: Box<dyn Write + Send>) -> LoggerHandle {
    let shared = Arc::new(Shared::new(settings, sink));
    let _ = tracing_subscriber::registry()
        .with(FirecrackerLayer(Arc::clone(&shared)))
        .try_init();
    LoggerHandle(shared)
}

#[cfg(test)]
mod tests {
    use squib::LoggerControl;

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

    fn settings() -> LogSettings {
        LogSettings {
            id: "vm".into(),
            level: LevelFilter::INFO,
            show_level: true,
            show_origin: false,
            module: None,
        }
    }

    #[test]
    fn test_update_merges_like_firecracker_and_switches_the_sink() {
        let shared = Arc::new(Shared::new(settings(), Box::new(std::io::sink())));
        let handle = LoggerHandle(Arc::clone(&shared));
        let path = std::env::temp_dir().join(format!("squib-logger-{}", std::process::id()));
        let mut cfg = LoggerConfig::default();
        cfg.log_path = Some(path.to_string_lossy().into_owned());
        cfg.level = LogLevel::Debug;
        cfg.module = Some("squib".into());
        handle.update(&cfg).unwrap();
        {
            let s = shared.settings.read().unwrap();
            assert_eq!(s.level, LevelFilter::DEBUG);
            assert!(s.show_level, "absent show_level: unchanged");
            assert_eq!(s.module.as_deref(), Some("squib"));
        }
        assert_eq!(
            shared.level.load(Ordering::Relaxed),
            4,
            "published to the atomic"
        );
        assert!(shared.filtered.load(Ordering::Relaxed));
        handle.update(&LoggerConfig::default()).unwrap();
        assert_eq!(
            shared.settings.read().unwrap().level,
            LevelFilter::INFO,
            "absent level: Info"
        );
        shared.sink.lock().unwrap().write_all(b"x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\n");
        let mut bad = LoggerConfig::default();
        bad.log_path = Some("/nonexistent-dir/log".into());
        bad.level = LogLevel::Error;
        assert!(handle.update(&bad).is_err());
        assert_eq!(
            shared.settings.read().unwrap().level,
            LevelFilter::INFO,
            "a failed update changes nothing"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
