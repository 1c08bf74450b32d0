//! `PUT /logger` body (`Logger` in the swagger).
//!
//! `level` is case-insensitive and accepts `Off`, `Error`, `Warn`/`Warning`, `Info`, `Debug`,
//! `Trace` (default `Info`). Anything else fails deserialization with serde message
//! `Invalid LevelFilter`, which the API renders as Firecracker does
//! ("... deserializing the json body of a request: Invalid LevelFilter at line 1 column 16.").

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::limits::{MAX_SHORT_STRING_LEN, check_path, check_string};

/// Log level filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum LogLevel {
    /// Logging disabled.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Informational messages and above.
    #[default]
    Info,
    /// Debug messages and above.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Parse a level name, case-insensitively (`warn` is accepted for `Warning`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => Self::Off,
            "error" => Self::Error,
            "warn" | "warning" => Self::Warning,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("Invalid LevelFilter"))
    }
}

/// Raw `PUT /logger` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoggerConfig {
    /// Log file or named pipe (stdout when absent).
    #[serde(default)]
    pub log_path: Option<String>,
    /// Level filter.
    #[serde(default)]
    pub level: Option<LogLevel>,
    /// Print the level on each line.
    #[serde(default)]
    pub show_level: Option<bool>,
    /// Print `file:line` on each line.
    #[serde(default)]
    pub show_log_origin: Option<bool>,
    /// Module-path prefix filter.
    #[serde(default)]
    pub module: Option<String>,
}

/// Validated logger configuration.
///
/// Applying it follows Firecracker's `Logger::update`: an absent `log_path`, `show_level`,
/// `show_log_origin` or `module` keeps the current setting, while an absent `level` resets the
/// level to `Info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LoggerConfig {
    /// Log file or named pipe (absent: keep the current destination).
    pub log_path: Option<String>,
    /// Level filter (default `Info`).
    pub level: LogLevel,
    /// Print the level on each line (absent: unchanged).
    pub show_level: Option<bool>,
    /// Print `file:line` on each line (absent: unchanged).
    pub show_log_origin: Option<bool>,
    /// Module-path prefix filter (absent: unchanged).
    pub module: Option<String>,
}

impl TryFrom<RawLoggerConfig> for LoggerConfig {
    type Error = String;

    fn try_from(raw: RawLoggerConfig) -> Result<Self, Self::Error> {
        if let Some(p) = &raw.log_path {
            check_path("log_path", p)?;
        }
        if let Some(m) = &raw.module {
            check_string("module", m, MAX_SHORT_STRING_LEN)?;
        }
        Ok(Self {
            log_path: raw.log_path,
            level: raw.level.unwrap_or_default(),
            show_level: raw.show_level,
            show_log_origin: raw.show_log_origin,
            module: raw.module,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(json: &str) -> Result<LoggerConfig, String> {
        let raw: RawLoggerConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        LoggerConfig::try_from(raw)
    }

    #[test]
    fn test_should_default_to_info() {
        let l = put("{}").unwrap();
        assert_eq!(l, LoggerConfig::default());
        assert_eq!(l.level, LogLevel::Info);
    }

    #[test]
    fn test_should_parse_levels_case_insensitively() {
        for (s, lvl) in [
            ("off", LogLevel::Off),
            ("ERROR", LogLevel::Error),
            ("warn", LogLevel::Warning),
            ("Warning", LogLevel::Warning),
            ("info", LogLevel::Info),
            ("Debug", LogLevel::Debug),
            ("tRaCe", LogLevel::Trace),
        ] {
            assert_eq!(
                put(&format!(r#"{{"level":"{s}"}}"#)).unwrap().level,
                lvl,
                "{s}"
            );
        }
        assert_eq!(LogLevel::Warning.to_string(), "Warning");
    }

    #[test]
    fn test_should_reject_bad_level_with_firecracker_text() {
        // Same mechanism as Firecracker's `LevelFilter` (custom error after the string).
        assert_eq!(
            put(r#"{"level":"foo"}"#).unwrap_err(),
            "Invalid LevelFilter at line 1 column 15"
        );
        assert!(
            put(r#"{"level":1}"#)
                .unwrap_err()
                .starts_with("invalid type: integer `1`")
        );
    }

    #[test]
    fn test_should_accept_full_logger_and_reject_bad_fields() {
        let l = put(r#"{"log_path":"/tmp/l","level":"Debug","show_level":true,"show_log_origin":true,"module":"api"}"#)
            .unwrap();
        assert_eq!((l.show_level, l.show_log_origin), (Some(true), Some(true)));
        assert_eq!(put("{}").unwrap().show_level, None, "absent: unchanged");
        assert_eq!(l.module.as_deref(), Some("api"));
        assert_eq!(
            put(r#"{"log_path":""}"#).unwrap_err(),
            "Invalid log_path: must not be empty"
        );
        let long = format!(r#"{{"module":"{}"}}"#, "m".repeat(257));
        assert_eq!(
            put(&long).unwrap_err(),
            "Invalid module: exceeds 256 bytes (got 257 bytes)"
        );
        assert!(
            put(r#"{"x":1}"#)
                .unwrap_err()
                .starts_with("unknown field `x`")
        );
    }
}
