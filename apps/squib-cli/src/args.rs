//! Firecracker's command-line syntax, exactly: `--name value` or `--name` (no `--name=value`),
//! `--help`/`-h` and `--version` short-circuit, an unknown or repeated flag is an
//! "Arguments parsing error" (exit 153).

use std::collections::BTreeMap;

/// Every flag the `firecracker` binary accepts: (name, takes a value, default, help).
pub const FLAGS: &[(&str, bool, Option<&str>, &str)] = &[
    (
        "api-sock",
        true,
        Some("/run/firecracker.socket"),
        "Path to unix domain socket used by the API.",
    ),
    (
        "boot-timer",
        false,
        None,
        "Whether or not to load boot timer device for logging elapsed time since InstanceStart command.",
    ),
    (
        "config-file",
        true,
        None,
        "Path to a file that contains the microVM configuration in JSON format.",
    ),
    (
        "describe-snapshot",
        true,
        None,
        "Print the data format version of the provided snapshot state file.",
    ),
    ("enable-pci", false, None, "Enables PCIe support."),
    ("help", false, None, "Show the help message."),
    (
        "http-api-max-payload-size",
        true,
        Some("51200"),
        "Http API request payload max size, in bytes.",
    ),
    (
        "id",
        true,
        Some("anonymous-instance"),
        "MicroVM unique identifier.",
    ),
    ("level", true, None, "Set the logger level."),
    (
        "log-path",
        true,
        None,
        "Path to a fifo or a file used for configuring the logger on startup.",
    ),
    (
        "metadata",
        true,
        None,
        "Path to a file that contains metadata in JSON format to add to the mmds.",
    ),
    (
        "metrics-path",
        true,
        None,
        "Path to a fifo or a file used for configuring the metrics on startup.",
    ),
    (
        "mmds-size-limit",
        true,
        None,
        "Mmds data store limit, in bytes.",
    ),
    ("module", true, None, "Set the logger module filter."),
    (
        "no-api",
        false,
        None,
        "Optional parameter which allows starting and using a microVM without an active API socket.",
    ),
    (
        "no-seccomp",
        false,
        None,
        "Optional parameter which allows starting and using a microVM without seccomp filtering.",
    ),
    (
        "parent-cpu-time-us",
        true,
        None,
        "Parent process CPU time (wall clock, microseconds).",
    ),
    (
        "seccomp-filter",
        true,
        None,
        "Optional parameter which allows specifying the path to a custom seccomp filter.",
    ),
    (
        "show-level",
        false,
        None,
        "Whether or not to output the level in the logs.",
    ),
    (
        "show-log-origin",
        false,
        None,
        "Whether or not to include the file path and line number of the log's origin.",
    ),
    (
        "snapshot-version",
        false,
        None,
        "Print the supported data format version.",
    ),
    (
        "start-time-cpu-us",
        true,
        None,
        "Process start CPU time (wall clock, microseconds).",
    ),
    (
        "start-time-us",
        true,
        None,
        "Process start time (wall clock, microseconds).",
    ),
    ("version", false, None, "Print the binary version number."),
];

/// Parsed arguments: flag name → value (`None` for switches).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    values: BTreeMap<&'static str, Option<String>>,
}

/// A parse failure; `Display` matches Firecracker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// Unknown flag or stray value.
    #[error("Found argument '{0}' which wasn't expected, or isn't valid in this context.")]
    Unexpected(String),
    /// Flag given twice.
    #[error("The argument '--{0}' was provided more than once.")]
    Duplicate(String),
    /// Flag needs a value.
    #[error("The argument '--{0}' requires a value but none was supplied")]
    MissingValue(String),
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Two mutually exclusive flags (Firecracker's `forbids`: `--no-seccomp` and
    /// `--seccomp-filter`).
    #[error("Argument '{1}' cannot be used together with argument '{0}'.")]
    Forbidden(String, String),
}

impl Args {
    /// Parse `argv[1..]`.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ArgError> {
        let mut out = Self::default();
        let mut it = args.into_iter().peekable();
        while let Some(arg) = it.next() {
            let name = match arg.as_str() {
                "-h" => "help",
                a => a
                    .strip_prefix("--")
                    .ok_or_else(|| ArgError::Unexpected(a.to_owned()))?,
            };
            let &(flag, takes_value, _, _) = FLAGS
                .iter()
                .find(|(n, ..)| *n == name)
                .ok_or_else(|| ArgError::Unexpected(name.to_owned()))?;
            if flag == "help" || flag == "version" {
                out.values.insert(flag, None);
                return Ok(out);
            }
            let value = if takes_value {
                match it.next_if(|v| !v.starts_with("--")) {
                    Some(v) => Some(v),
                    None => return Err(ArgError::MissingValue(flag.to_owned())),
                }
            } else {
                None
            };
            if out.values.insert(flag, value).is_some() {
                return Err(ArgError::Duplicate(flag.to_owned()));
            }
        }
        if out.flag("no-seccomp") && out.flag("seccomp-filter") {
            return Err(ArgError::Forbidden(
                "no-seccomp".into(),
                "seccomp-filter".into(),
            ));
        }
        Ok(out)
    }

    /// Switch present?
    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Value of `name`, or its default.
    pub fn value(&self, name: &str) -> Option<String> {
        match self.values.get(name) {
            Some(v) => v.clone(),
            None => FLAGS
                .iter()
                .find(|(n, ..)| *n == name)
                .and_then(|(.., d, _)| d.map(str::to_owned)),
        }
    }

    /// Numeric value of `name`.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ArgError> {
        self.value(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| ArgError::Invalid(format!("Invalid value for --{name}: {v}")))
            })
            .transpose()
    }
}

/// The `--help` text.
pub fn help_text(version: &str) -> String {
    use std::fmt::Write as _;
    let mut s = format!("Firecracker v{version}\n\noptional arguments:\n");
    for (name, takes, default, help) in FLAGS {
        let value = if *takes {
            format!(" <{name}>")
        } else {
            String::new()
        };
        let default = default
            .map(|d| format!(" [default: \"{d}\"]"))
            .unwrap_or_default();
        let _ = writeln!(s, "  --{name}{value}: {help}{default}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, ArgError> {
        Args::parse(v.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn test_should_parse_firecracker_syntax_with_defaults() {
        let a = parse(&[
            "--api-sock",
            "/tmp/a.sock",
            "--boot-timer",
            "--level",
            "Debug",
        ])
        .unwrap();
        assert_eq!(a.value("api-sock").as_deref(), Some("/tmp/a.sock"));
        assert!(a.flag("boot-timer"));
        assert_eq!(a.value("id").as_deref(), Some("anonymous-instance"));
        assert_eq!(
            parse(&[]).unwrap().value("api-sock").as_deref(),
            Some("/run/firecracker.socket")
        );
        assert_eq!(
            parse(&[])
                .unwrap()
                .number::<usize>("http-api-max-payload-size")
                .unwrap(),
            Some(51200)
        );
    }

    #[test]
    fn test_should_reject_like_firecracker() {
        assert_eq!(
            parse(&["--bogus"]).unwrap_err().to_string(),
            "Found argument 'bogus' which wasn't expected, or isn't valid in this context."
        );
        assert_eq!(
            parse(&["--api-sock"]).unwrap_err(),
            ArgError::MissingValue("api-sock".into())
        );
        assert_eq!(
            parse(&["--no-api", "--no-api"]).unwrap_err(),
            ArgError::Duplicate("no-api".into())
        );
        assert!(parse(&["--api-sock=/x"]).is_err());
        assert!(parse(&["stray"]).is_err());
        assert!(parse(&["--version", "--bogus"]).unwrap().flag("version"));
        assert!(parse(&["-h"]).unwrap().flag("help"));
        assert_eq!(
            parse(&["--seccomp-filter", "/f", "--no-seccomp"])
                .unwrap_err()
                .to_string(),
            "Argument 'seccomp-filter' cannot be used together with argument 'no-seccomp'."
        );
    }
}
