//! From parsed flags to a validated [`Jail`], in Firecracker's order and with its texts.
//!
//! Order: instance id → exec file (canonical, a regular file) → chroot base (canonical, a
//! directory) → uid → gid → `--parent-cgroup` (relative, no `.`/`..`) → `--cgroup-version` →
//! (v2 without `--cgroup`: move into an existing `--parent-cgroup` now, as Firecracker does) →
//! each `--cgroup` → each `--resource-limit` → the `userfaultfd` misc minor from `/proc/misc`.

use std::{
    fs,
    path::{Component, Path, PathBuf},
};

use crate::{
    args::{ArgError, Args},
    cgroup::{CgroupBuilder, CgroupConfig},
    error::JailerError,
};

/// `RLIMIT_NOFILE` when no `--resource-limit no-file=` is given.
pub const DEFAULT_NO_FILE: u64 = 2048;

/// Everything the jailer needs to build and enter the jail.
#[derive(Debug)]
pub struct Jail {
    pub id: String,
    /// The canonical `--exec-file`.
    pub exec_file: PathBuf,
    /// Its file name: the directory under the chroot base and the name inside the jail.
    pub exec_name: String,
    /// `<chroot base>/<exec name>/<id>/root`.
    pub chroot_dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub netns: Option<PathBuf>,
    pub daemonize: bool,
    pub new_pid_ns: bool,
    pub cgroups: Option<CgroupConfig>,
    /// `RLIMIT_FSIZE`, if given.
    pub fsize: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub no_file: u64,
    /// The `userfaultfd` misc device's minor number, when the host has one.
    pub uffd_minor: Option<u32>,
    /// Arguments after `--`.
    pub extra: Vec<String>,
}

/// Firecracker's instance-id rule: 1..=64 characters, alphanumeric or `-`.
pub fn validate_instance_id(id: &str) -> Result<(), JailerError> {
    if id.is_empty() || id.len() > 64 {
        return Err(JailerError::InvalidInstanceId(format!(
            "Invalid len ({});  the length must be between 1 and 64",
            id.len()
        )));
    }
    match id
        .chars()
        .enumerate()
        .find(|(_, c)| !(*c == '-' || c.is_alphanumeric()))
    {
        Some((i, c)) => Err(JailerError::InvalidInstanceId(format!(
            "Invalid char ({c}) at position {i}"
        ))),
        None => Ok(()),
    }
}

fn has_dots_or_root(p: &Path) -> bool {
    p.components().any(|c| {
        matches!(
            c,
            Component::CurDir | Component::ParentDir | Component::RootDir
        )
    })
}

fn required<'a>(args: &'a Args, name: &str) -> Result<&'a str, JailerError> {
    args.value(name)
        .ok_or_else(|| JailerError::ArgumentParsing(ArgError::MissingValue(name.to_owned())))
}

/// `(canonical path, file name)` of `--exec-file`.
fn validate_exec_file(exec_file: &str) -> Result<(PathBuf, String), JailerError> {
    let path = fs::canonicalize(exec_file)
        .map_err(|e| JailerError::Canonicalize(PathBuf::from(exec_file), e))?;
    if !path.is_file() {
        return Err(JailerError::NotAFile(path));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| JailerError::ExtractFileName(path.clone()))?
        .to_owned();
    Ok((path, name))
}

/// `(fsize, no-file)` from `--resource-limit` values.
fn parse_resource_limits(values: &[String]) -> Result<(Option<u64>, u64), JailerError> {
    let (mut fsize, mut no_file) = (None, DEFAULT_NO_FILE);
    for arg in values {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| JailerError::ResLimitFormat(arg.clone()))?;
        let limit = value
            .parse::<u64>()
            .map_err(|e| JailerError::ResLimitValue(value.to_owned(), e.to_string()))?;
        match name {
            "fsize" => fsize = Some(limit),
            "no-file" => no_file = limit,
            _ => return Err(JailerError::ResLimitArgument(name.to_owned())),
        }
    }
    Ok((fsize, no_file))
}

/// The `userfaultfd` entry of a `/proc/misc` text (`"<minor> userfaultfd"`).
pub fn userfaultfd_minor(proc_misc: &str) -> Option<u32> {
    proc_misc.lines().find_map(|l| {
        let (minor, name) = l.trim_start().split_once(' ')?;
        (name == "userfaultfd").then(|| minor.parse().ok())?
    })
}

impl Jail {
    /// Validate `args`; cgroup hierarchies are looked up in `proc_mounts`.
    pub fn from_args(args: &Args, proc_mounts: &Path) -> Result<Self, JailerError> {
        let id = required(args, "id")?;
        validate_instance_id(id)?;
        let (exec_file, exec_name) = validate_exec_file(required(args, "exec-file")?)?;

        let base = required(args, "chroot-base-dir")?;
        let mut chroot_dir =
            fs::canonicalize(base).map_err(|e| JailerError::Canonicalize(base.into(), e))?;
        if !chroot_dir.is_dir() {
            return Err(JailerError::NotADirectory(chroot_dir));
        }
        chroot_dir.push(&exec_name);
        chroot_dir.push(id);
        chroot_dir.push("root");

        let uid_s = required(args, "uid")?;
        let uid = uid_s
            .parse()
            .map_err(|_| JailerError::Uid(uid_s.to_owned()))?;
        let gid_s = required(args, "gid")?;
        let gid = gid_s
            .parse()
            .map_err(|_| JailerError::Gid(gid_s.to_owned()))?;

        let parent = Path::new(args.value("parent-cgroup").unwrap_or(&exec_name));
        if has_dots_or_root(parent) {
            return Err(JailerError::CgroupInvalidParentPath());
        }
        let ver_s = required(args, "cgroup-version")?;
        let ver: u8 = ver_s
            .parse()
            .map_err(|_| JailerError::CgroupInvalidVersion(ver_s.to_owned()))?;

        let cgroup_args = args.values("cgroup");
        if cgroup_args.is_empty() && ver == 2 {
            // No cgroup to create: join the existing --parent-cgroup instead, if there is one.
            let builder = CgroupBuilder::new(ver, proc_mounts)?;
            let target = builder.v2_root()?.join(parent);
            if target.exists() {
                fs::write(target.join("cgroup.procs"), std::process::id().to_string())
                    .map_err(|e| JailerError::CgroupMove(target, e))?;
            }
        }
        let mut cgroups = None;
        if !cgroup_args.is_empty() {
            let mut builder = CgroupBuilder::new(ver, proc_mounts)?;
            for cg in cgroup_args {
                let parts: Vec<&str> = cg.split('=').collect();
                let [file, value] = parts[..] else {
                    return Err(JailerError::CgroupFormat(cg.clone()));
                };
                if value.is_empty() {
                    return Err(JailerError::CgroupFormat(cg.clone()));
                }
                if has_dots_or_root(Path::new(file)) {
                    return Err(JailerError::CgroupInvalidFile(cg.clone()));
                }
                builder.add_property(file, value, id, parent)?;
            }
            cgroups = Some(builder.build());
        }

        let (fsize, no_file) = parse_resource_limits(args.values("resource-limit"))?;
        let uffd_minor = fs::read_to_string("/proc/misc")
            .ok()
            .and_then(|m| userfaultfd_minor(&m));

        Ok(Self {
            id: id.to_owned(),
            exec_file,
            exec_name,
            chroot_dir,
            uid,
            gid,
            netns: args.value("netns").map(PathBuf::from),
            daemonize: args.flag("daemonize"),
            new_pid_ns: args.flag("new-pid-ns"),
            cgroups,
            fsize,
            no_file,
            uffd_minor,
            extra: args.extra.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{args, cgroup::tests::MockFs};

    fn jail(extra: &[&str], mounts: &Path) -> Result<Jail, JailerError> {
        let exe = std::env::current_exe().unwrap();
        let mut v: Vec<String> = [
            "--id",
            "vm-1",
            "--exec-file",
            exe.to_str().unwrap(),
            "--uid",
            "123",
            "--gid",
            "456",
            "--chroot-base-dir",
            "/tmp",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Later duplicates would be argument errors: replace instead.
        for pair in extra.chunks(2) {
            let repeatable = pair[0] == "--cgroup" || pair[0] == "--resource-limit";
            if let Some(i) = v
                .iter()
                .position(|a| a == pair[0])
                .filter(|_| pair.len() == 2)
                && !repeatable
            {
                v[i + 1] = pair[1].to_owned();
                continue;
            }
            v.extend(pair.iter().map(|s| (*s).to_owned()));
        }
        match args::parse(&v).map_err(JailerError::ArgumentParsing)? {
            args::Parsed::Run(a) => Jail::from_args(&a, mounts),
            other => panic!("{other:?}"),
        }
    }

    fn err(extra: &[&str], mounts: &Path) -> String {
        jail(extra, mounts).unwrap_err().to_string()
    }

    #[test]
    fn test_should_build_the_jail_paths_and_defaults() {
        let m = MockFs::new("env-ok");
        let j = jail(&["--", "--api-sock", "/run/api.sock"], &m.mounts).unwrap();
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(j.exec_name, name);
        assert_eq!(
            j.chroot_dir,
            Path::new("/tmp")
                .canonicalize()
                .unwrap()
                .join(&name)
                .join("vm-1/root")
        );
        assert_eq!((j.uid, j.gid, j.no_file, j.fsize), (123, 456, 2048, None));
        assert!(j.cgroups.is_none() && j.netns.is_none() && !j.daemonize);
        assert_eq!(j.extra, ["--api-sock", "/run/api.sock"]);
    }

    #[test]
    fn test_should_validate_the_instance_id() {
        let m = MockFs::new("env-id");
        assert_eq!(
            err(&["--id", "a_b"], &m.mounts),
            "Invalid instance ID: Invalid char (_) at position 1"
        );
        let long = "a".repeat(65);
        assert_eq!(
            err(&["--id", &long], &m.mounts),
            "Invalid instance ID: Invalid len (65);  the length must be between 1 and 64"
        );
        assert_eq!(
            err(&["--id", ""], &m.mounts),
            "Invalid instance ID: Invalid len (0);  the length must be between 1 and 64"
        );
        assert!(jail(&["--id", &"a".repeat(64)], &m.mounts).is_ok());
    }

    #[test]
    fn test_should_validate_paths_and_ids() {
        let m = MockFs::new("env-paths");
        assert_eq!(
            err(&["--exec-file", "/nonexistent/squib"], &m.mounts),
            "Failed to canonicalize path /nonexistent/squib: No such file or directory (os error 2)"
        );
        assert_eq!(
            err(&["--exec-file", "/tmp"], &m.mounts),
            "/tmp is not a file"
        );
        assert_eq!(
            err(&["--chroot-base-dir", "/nonexistent"], &m.mounts),
            "Failed to canonicalize path /nonexistent: No such file or directory (os error 2)"
        );
        assert_eq!(
            err(&["--chroot-base-dir", "/proc/self/status"], &m.mounts),
            format!(
                "{} is not a directory",
                Path::new("/proc/self/status")
                    .canonicalize()
                    .unwrap()
                    .display()
            )
        );
        assert_eq!(err(&["--uid", "-1"], &m.mounts), "Invalid uid: -1");
        assert_eq!(err(&["--gid", "x"], &m.mounts), "Invalid gid: x");
    }

    #[test]
    fn test_should_validate_cgroup_flags() {
        let m = MockFs::new("env-cg").with_v2("memory");
        let parent_text =
            "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'";
        for bad in ["/abs", "a/../b", "./a"] {
            assert_eq!(err(&["--parent-cgroup", bad], &m.mounts), parent_text);
        }
        assert_eq!(
            err(&["--cgroup-version", "x"], &m.mounts),
            "x is an invalid cgroup version specifier"
        );
        let v2 = ["--cgroup-version", "2", "--cgroup"];
        for (bad, text) in [
            ("memory.max", "Invalid format for cgroups: memory.max"),
            ("memory.max=", "Invalid format for cgroups: memory.max="),
            ("a=b=c", "Invalid format for cgroups: a=b=c"),
            ("../memory.max=1", "Cgroup invalid file: ../memory.max=1"),
            ("memory=1", "Cgroup invalid file: memory"),
            ("pids.max=1", "Controller pids is unavailable"),
        ] {
            let mut a = v2.to_vec();
            a.push(bad);
            assert_eq!(err(&a, &m.mounts), text, "{bad}");
        }
        // Default version 1 with no v1 hierarchy.
        assert_eq!(
            err(&["--cgroup", "memory.max=1"], &m.mounts),
            "Hierarchy not found: No hierarchy found for this cgroup version."
        );
        assert_eq!(
            err(&["--cgroup-version", "3", "--cgroup", "a.b=1"], &m.mounts),
            "Hierarchy not found: No hierarchy found for this cgroup version."
        );
        let j = jail(
            &["--cgroup-version", "2", "--cgroup", "memory.max=9"],
            &m.mounts,
        )
        .unwrap();
        let loc = m.dir.join("unified").join(&j.exec_name).join("vm-1");
        assert_eq!(j.cgroups.unwrap().locations(), [loc.as_path()]);
    }

    #[test]
    fn test_should_refuse_v2_without_a_v2_hierarchy() {
        let m = MockFs::new("env-nov2").with_v1("memory", "memory.limit_in_bytes", "1");
        assert_eq!(
            err(&["--cgroup-version", "2"], &m.mounts),
            "Hierarchy not found: No hierarchy found for this cgroup version."
        );
        assert!(jail(&["--cgroup", "memory.limit_in_bytes=5"], &m.mounts).is_ok());
    }

    #[test]
    fn test_should_validate_resource_limits() {
        let m = MockFs::new("env-rl");
        let rl = |v: &str| err(&["--resource-limit", v], &m.mounts);
        assert_eq!(
            rl("no-file"),
            "Invalid format for resources limits: no-file"
        );
        assert_eq!(
            rl("no-file=x"),
            "Invalid limit value for resource: x: invalid digit found in string"
        );
        assert_eq!(rl("cpu=1"), "Invalid resource argument: cpu");
        let j = jail(
            &[
                "--resource-limit",
                "fsize=100",
                "--resource-limit",
                "no-file=64",
            ],
            &m.mounts,
        )
        .unwrap();
        assert_eq!((j.fsize, j.no_file), (Some(100), 64));
    }

    #[test]
    fn test_should_find_the_userfaultfd_minor() {
        let misc = "237 loop-control\n 57 memory_bandwidth\n257 userfaultfd\n";
        assert_eq!(userfaultfd_minor(misc), Some(257));
        assert_eq!(userfaultfd_minor("1 psaux\n"), None);
    }
}
