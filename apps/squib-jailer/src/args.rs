//! The jailer's command line, parsed with Firecracker's rules (its `utils::arg_parser`).
//!
//! - Everything after the first `--` is passed, untouched, to the jailed binary.
//! - `--help`/`-h`, then `--version`, anywhere before `--`, short-circuit all other parsing.
//! - Each flag is `--name` (switch) or `--name value`; a value may not start with `--`.
//!   `--cgroup` and `--resource-limit` repeat; any other flag given twice is an error.
//! - After parsing, required flags are checked in name order (`exec-file`, `gid`, `id`, `uid`).
//!
//! Error texts are Firecracker's, e.g. `Argument 'id' required, but not found.`

use std::collections::BTreeMap;

/// How a flag is declared: name, required, takes a value, repeatable, default, help.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub required: bool,
    pub takes_value: bool,
    pub multiple: bool,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn spec(name: &'static str, required: bool, takes_value: bool, help: &'static str) -> Spec {
    Spec {
        name,
        required,
        takes_value,
        multiple: false,
        default: None,
        help,
    }
}

/// Every flag Firecracker's jailer accepts, in its declaration order.
pub const SPECS: &[Spec] = &[
    spec("id", true, true, "Jail ID."),
    spec("exec-file", true, true, "File path to exec into."),
    spec(
        "uid",
        true,
        true,
        "The user identifier the jailer switches to after exec.",
    ),
    spec(
        "gid",
        true,
        true,
        "The group identifier the jailer switches to after exec.",
    ),
    Spec {
        default: Some("/srv/jailer"),
        ..spec(
            "chroot-base-dir",
            false,
            true,
            "The base folder where chroot jails are located.",
        )
    },
    spec(
        "netns",
        false,
        true,
        "Path to the network namespace this microVM should join.",
    ),
    spec(
        "daemonize",
        false,
        false,
        "Daemonize the jailer before exec, by invoking setsid(), and redirecting the standard I/O \
         file descriptors to /dev/null.",
    ),
    spec("new-pid-ns", false, false, "Exec into a new PID namespace."),
    Spec {
        multiple: true,
        ..spec(
            "cgroup",
            false,
            true,
            "Cgroup and value to be set by the jailer. It must follow this format: \
             <cgroup_file>=<value> (e.g cpu.shares=10). This argument can be used multiple times \
             to add multiple cgroups.",
        )
    },
    Spec {
        multiple: true,
        ..spec(
            "resource-limit",
            false,
            true,
            "Resource limit values to be set by the jailer. It must follow this format: \
             <resource>=<value> (e.g no-file=1024). This argument can be used multiple times to \
             add multiple resource limits. Current available resource values are:\n\t\tfsize: \
             The maximum size in bytes for files created by the process.\n\t\tno-file: Specifies \
             a value one greater than the maximum file descriptor number that can be opened by \
             this process.",
        )
    },
    Spec {
        default: Some("1"),
        ..spec(
            "cgroup-version",
            false,
            true,
            "Select the cgroup version used by the jailer.",
        )
    },
    spec(
        "parent-cgroup",
        false,
        true,
        "Parent cgroup in which the cgroup of this microvm will be placed.",
    ),
    spec("version", false, false, "Print the binary version number."),
];

/// A parse failure; `Display` is Firecracker's `UtilsArgParserError` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("Argument '{0}' required, but not found.")]
    MissingArgument(String),
    #[error("The argument '{0}' requires a value, but none was supplied.")]
    MissingValue(String),
    #[error("Found argument '{0}' which wasn't expected, or isn't valid in this context.")]
    UnexpectedArgument(String),
    #[error("The argument '{0}' was provided more than once.")]
    DuplicateArgument(String),
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `--help` or `-h`.
    Help,
    /// `--version`.
    Version,
    /// A jail to build.
    Run(Args),
}

/// Parsed flag values plus the arguments after `--`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    values: BTreeMap<&'static str, Vec<String>>,
    /// Everything after `--`, for the jailed binary.
    pub extra: Vec<String>,
}

impl Args {
    /// The single value of `name` (the user's, else the default).
    pub fn value(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(v) => v.first().map(String::as_str),
            None => SPECS
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.default),
        }
    }

    /// All values of a repeatable flag (empty when absent).
    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// Was the switch `name` given?
    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// Parse `argv[1..]`.
pub fn parse(argv: &[String]) -> Result<Parsed, ArgError> {
    let (own, extra) = match argv.iter().position(|a| a == "--") {
        Some(i) => (&argv[..i], &argv[i + 1..]),
        None => (argv, &[][..]),
    };
    if own.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Parsed::Help);
    }
    if own.iter().any(|a| a == "--version") {
        return Ok(Parsed::Version);
    }
    let mut args = Args {
        extra: extra.to_vec(),
        ..Args::default()
    };
    let mut it = own.iter().peekable();
    while let Some(arg) = it.next() {
        let name = arg
            .strip_prefix("--")
            .ok_or_else(|| ArgError::UnexpectedArgument(arg.clone()))?;
        let spec = SPECS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ArgError::UnexpectedArgument(name.to_owned()))?;
        if !spec.multiple && args.values.contains_key(spec.name) {
            return Err(ArgError::DuplicateArgument(name.to_owned()));
        }
        let entry = args.values.entry(spec.name).or_default();
        if spec.takes_value {
            let value = it
                .next_if(|v| !v.starts_with("--"))
                .ok_or_else(|| ArgError::MissingValue(spec.name.to_owned()))?;
            entry.push(value.clone());
        }
    }
    let mut required: Vec<&str> = SPECS
        .iter()
        .filter(|s| s.required)
        .map(|s| s.name)
        .collect();
    required.sort_unstable();
    if let Some(missing) = required.iter().find(|n| !args.values.contains_key(**n)) {
        return Err(ArgError::MissingArgument((*missing).to_owned()));
    }
    Ok(Parsed::Run(args))
}

fn format_name(s: &Spec) -> String {
    if s.takes_value {
        format!("  --{name} <{name}>", name = s.name)
    } else {
        format!("  --{}", s.name)
    }
}

/// Firecracker's parser registers `--help` when it sees it, so its help text lists it too.
const HELP: Spec = spec("help", false, false, "Show the help message.");

fn format_group(required: bool) -> String {
    let mut specs: Vec<&Spec> = SPECS
        .iter()
        .chain(std::iter::once(&HELP))
        .filter(|s| s.required == required)
        .collect();
    specs.sort_by_key(|s| s.name);
    let width = specs
        .iter()
        .map(|s| format_name(s).len())
        .max()
        .unwrap_or(0);
    specs
        .iter()
        .map(|s| {
            let help = match s.default {
                Some(d) => format!("{} [default: \"{d}\"]", s.help),
                None => s.help.to_owned(),
            };
            format!("{:<width$}   {help}", format_name(s))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Firecracker's `formatted_help()`: required, then optional arguments, each sorted by name.
pub fn formatted_help() -> String {
    format!(
        "required arguments:\n{}\n\noptional arguments:\n{}",
        format_group(true),
        format_group(false)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Parsed, ArgError> {
        parse(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    const BASE: &[&str] = &["--id", "a", "--exec-file", "/x", "--uid", "1", "--gid", "2"];

    fn run(v: &[&str]) -> Args {
        match p(v).unwrap() {
            Parsed::Run(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn test_should_parse_required_flags_with_defaults() {
        let a = run(BASE);
        assert_eq!(a.value("id"), Some("a"));
        assert_eq!(a.value("chroot-base-dir"), Some("/srv/jailer"));
        assert_eq!(a.value("cgroup-version"), Some("1"));
        assert_eq!(a.value("netns"), None);
        assert!(!a.flag("daemonize"));
        assert!(a.values("cgroup").is_empty());
        assert!(a.extra.is_empty());
    }

    #[test]
    fn test_should_collect_repeats_switches_and_extra_args() {
        let mut v = BASE.to_vec();
        v.extend([
            "--cgroup",
            "memory.max=1",
            "--daemonize",
            "--cgroup",
            "pids.max=5",
            "--new-pid-ns",
            "--resource-limit",
            "no-file=10",
            "--",
            "--api-sock",
            "/run/api.sock",
            "--help",
        ]);
        let a = run(&v);
        assert_eq!(a.values("cgroup"), ["memory.max=1", "pids.max=5"]);
        assert_eq!(a.values("resource-limit"), ["no-file=10"]);
        assert!(a.flag("daemonize") && a.flag("new-pid-ns"));
        assert_eq!(a.extra, ["--api-sock", "/run/api.sock", "--help"]);
    }

    #[test]
    fn test_should_short_circuit_help_and_version() {
        assert_eq!(p(&["--bogus", "--help"]), Ok(Parsed::Help));
        assert_eq!(p(&["-h"]), Ok(Parsed::Help));
        assert_eq!(p(&["--version", "--id"]), Ok(Parsed::Version));
        assert_eq!(p(&["--help", "--version"]), Ok(Parsed::Help));
    }

    #[test]
    fn test_should_report_missing_required_in_name_order() {
        let e = p(&[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Argument 'exec-file' required, but not found."
        );
        let e = p(&["--exec-file", "x", "--uid", "1"]).unwrap_err();
        assert_eq!(e.to_string(), "Argument 'gid' required, but not found.");
        let e = p(&["--exec-file", "x", "--gid", "1", "--uid", "1"]).unwrap_err();
        assert_eq!(e.to_string(), "Argument 'id' required, but not found.");
    }

    #[test]
    fn test_should_reject_like_firecracker() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--foo"],
                "Found argument 'foo' which wasn't expected, or isn't valid in this context.",
            ),
            (
                &["id"],
                "Found argument 'id' which wasn't expected, or isn't valid in this context.",
            ),
            (
                &["--id=a"],
                "Found argument 'id=a' which wasn't expected, or isn't valid in this context.",
            ),
            (
                &["--id", "a", "--id", "b"],
                "The argument 'id' was provided more than once.",
            ),
            (
                &["--daemonize", "--daemonize"],
                "The argument 'daemonize' was provided more than once.",
            ),
            (
                &["--id", "--uid", "1"],
                "The argument 'id' requires a value, but none was supplied.",
            ),
            (
                &["--id"],
                "The argument 'id' requires a value, but none was supplied.",
            ),
            (
                &["--id", "a", "--", "x"],
                "Argument 'exec-file' required, but not found.",
            ),
        ];
        for (argv, text) in cases {
            assert_eq!(p(argv).unwrap_err().to_string(), *text, "{argv:?}");
        }
    }

    #[test]
    fn test_should_format_help_like_firecracker() {
        let h = formatted_help();
        assert!(h.starts_with("required arguments:\n  --exec-file <exec-file>   File path"));
        assert!(h.contains("\n\noptional arguments:\n  --cgroup <cgroup>"));
        assert!(
            h.contains("base folder where chroot jails are located. [default: \"/srv/jailer\"]")
        );
        assert!(h.contains("  --daemonize      "));
        let help = format!("\n{:<37}   Show the help message.\n", "  --help");
        assert!(h.contains(&help), "{h}");
    }
}
