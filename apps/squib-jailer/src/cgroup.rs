//! cgroups, as Firecracker's jailer does them (v1 and v2).
//!
//! Hierarchies are found in `/proc/mounts` (a parameter, so tests use a mock tree):
//! - **v2**: the first `cgroup2` mount is the unified hierarchy. The microVM's cgroup is
//!   `<mount>/<parent-cgroup>/<id>`; for each controller named by a `--cgroup <file>=<value>`, the
//!   controller must be listed in the mount's `cgroup.controllers` ("Controller X is
//!   unavailable" otherwise) and `+controller` is written to `cgroup.subtree_control` of every
//!   ancestor from the mount down to `<parent-cgroup>`; then the values are written and the
//!   process's pid goes to `cgroup.procs`.
//! - **v1**: every `cgroup` mount is cached with its options; a controller's hierarchy is the
//!   mount whose options name it. The cgroup `<hierarchy>/<parent-cgroup>/<id>` is created, each
//!   property file first inherits its parent's value (walking up while the parent's is empty, as
//!   `cpuset.cpus`/`cpuset.mems` need), then gets the value; the pid goes to `tasks`.
//!
//! All values are written before any pid is attached (cpuset needs both files set first).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use crate::error::JailerError;

/// Write `value` and a newline to a cgroup file.
pub fn writeln_special(path: &Path, value: impl std::fmt::Display) -> Result<(), JailerError> {
    fs::write(path, format!("{value}\n")).map_err(|e| JailerError::Write(path.to_path_buf(), e))
}

/// Read a cgroup file, dropping its last character (the newline).
pub fn readln_special(path: &Path) -> Result<String, JailerError> {
    let mut line =
        fs::read_to_string(path).map_err(|e| JailerError::ReadToString(path.to_path_buf(), e))?;
    line.pop();
    Ok(line)
}

/// The cgroup mount points of one version, from `/proc/mounts`.
#[derive(Debug)]
pub struct Hierarchies {
    unified: Option<PathBuf>,
    /// (mount dir, mount options) of every v1 mount.
    v1_mounts: Vec<(PathBuf, String)>,
}

impl Hierarchies {
    /// Scan `proc_mounts` for version `ver` hierarchies; none found is an error.
    pub fn discover(ver: u8, proc_mounts: &Path) -> Result<Self, JailerError> {
        let text = fs::read_to_string(proc_mounts)
            .map_err(|e| JailerError::FileOpen(proc_mounts.to_path_buf(), e))?;
        let mut h = Self {
            unified: None,
            v1_mounts: Vec::new(),
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, dir, fstype, options, ..] = fields[..] else {
                continue;
            };
            if ver == 2 && fstype == "cgroup2" {
                h.unified = Some(PathBuf::from(dir));
                break;
            } else if ver == 1 && fstype == "cgroup" {
                h.v1_mounts.push((PathBuf::from(dir), options.to_owned()));
            }
        }
        if h.unified.is_none() && h.v1_mounts.is_empty() {
            return Err(JailerError::CgroupHierarchyMissing(
                "No hierarchy found for this cgroup version.".into(),
            ));
        }
        Ok(h)
    }

    /// The unified (v2) hierarchy's mount point.
    pub fn v2_root(&self) -> Result<&Path, JailerError> {
        self.unified.as_deref().ok_or_else(|| {
            JailerError::CgroupHierarchyMissing("cgroupsv2 hierarchy missing".into())
        })
    }

    fn v1_root(&self, controller: &str) -> Result<&Path, JailerError> {
        self.v1_mounts
            .iter()
            .find(|(_, opts)| opts.split(',').any(|o| o == controller))
            .map(|(dir, _)| dir.as_path())
            .ok_or_else(|| JailerError::CgroupControllerUnavailable(controller.to_owned()))
    }
}

/// `<controller>.<property>` → `<controller>`.
fn controller_of(file: &str) -> Result<&str, JailerError> {
    match file.split_once('.') {
        Some((controller, _)) => Ok(controller),
        None => Err(JailerError::CgroupInvalidFile(file.to_owned())),
    }
}

/// One cgroup directory with the values to write into it.
#[derive(Debug)]
pub struct Cgroup {
    location: PathBuf,
    properties: Vec<(String, String)>,
}

/// The cgroups the jailer will create and join.
#[derive(Debug)]
pub enum CgroupConfig {
    /// One cgroup per controller hierarchy, with the depth of `--parent-cgroup`.
    V1(BTreeMap<String, Cgroup>, u16),
    /// The one unified cgroup and the controllers its hierarchy offers.
    V2(Option<Cgroup>, BTreeSet<String>),
}

/// Builds a [`CgroupConfig`] from `--cgroup` properties.
#[derive(Debug)]
pub struct CgroupBuilder {
    hierarchies: Hierarchies,
    conf: CgroupConfig,
}

impl CgroupBuilder {
    /// Discover hierarchies for `ver` (1 or 2).
    pub fn new(ver: u8, proc_mounts: &Path) -> Result<Self, JailerError> {
        let hierarchies = Hierarchies::discover(ver, proc_mounts)?;
        let conf = match ver {
            1 => CgroupConfig::V1(BTreeMap::new(), 0),
            2 => {
                let list = hierarchies.v2_root()?.join("cgroup.controllers");
                let available = fs::read_to_string(list)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                CgroupConfig::V2(None, available)
            }
            _ => return Err(JailerError::CgroupInvalidVersion(ver.to_string())),
        };
        Ok(Self { hierarchies, conf })
    }

    /// The unified hierarchy's mount point.
    pub fn v2_root(&self) -> Result<&Path, JailerError> {
        self.hierarchies.v2_root()
    }

    /// Add `file=value` for the cgroup `<hierarchy>/<parent>/<id>`.
    pub fn add_property(
        &mut self,
        file: &str,
        value: &str,
        id: &str,
        parent: &Path,
    ) -> Result<(), JailerError> {
        let controller = controller_of(file)?;
        let property = (file.to_owned(), value.to_owned());
        match &mut self.conf {
            CgroupConfig::V1(groups, depth) => {
                let root = self.hierarchies.v1_root(controller)?;
                *depth = u16::try_from(parent.components().count()).unwrap_or(u16::MAX);
                groups
                    .entry(controller.to_owned())
                    .or_insert_with(|| Cgroup {
                        location: root.join(parent).join(id),
                        properties: Vec::new(),
                    })
                    .properties
                    .push(property);
            }
            CgroupConfig::V2(group, available) => {
                let root = self.hierarchies.v2_root()?;
                let group = group.get_or_insert_with(|| Cgroup {
                    location: root.join(parent).join(id),
                    properties: Vec::new(),
                });
                if !available.contains(controller) {
                    return Err(JailerError::CgroupControllerUnavailable(
                        controller.to_owned(),
                    ));
                }
                group.properties.push(property);
            }
        }
        Ok(())
    }

    /// The finished configuration.
    pub fn build(self) -> CgroupConfig {
        self.conf
    }
}

/// Copy the first line of `<path>/../<file>` into `<path>/<file>`, first filling an empty parent
/// from its own parent, up to `depth` levels (Firecracker's `inherit_from_parent`).
fn inherit_from_parent(path: &Path, file: &str, depth: u16) -> Result<(), JailerError> {
    let parent_file = path.with_file_name(file);
    let mut line = readln_special(&parent_file)?;
    if line.is_empty() {
        if depth > 0 {
            let parent = parent_file
                .parent()
                .ok_or_else(|| JailerError::MissingParent(parent_file.clone()))?;
            // Another jailer may fill it concurrently: only the re-read below matters.
            let _ = inherit_from_parent(parent, file, depth - 1);
            line = readln_special(&parent_file)?;
        }
        if line.is_empty() {
            return Err(JailerError::CgroupInheritFromParent(
                path.to_path_buf(),
                file.to_owned(),
            ));
        }
    }
    writeln_special(&path.join(file), &line)
}

/// Write `+controller` to `cgroup.subtree_control` of `path` and each ancestor that has one,
/// outermost first.
fn enable_in_ancestors(path: &Path, controller: &str) -> Result<(), JailerError> {
    let control = path.join("cgroup.subtree_control");
    if !control.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        enable_in_ancestors(parent, controller)?;
    }
    writeln_special(&control, format!("+{controller}"))
}

impl CgroupConfig {
    /// Create the cgroups, write every value, then move this process in.
    pub fn setup(&self, pid: u32) -> Result<(), JailerError> {
        match self {
            Self::V1(groups, depth) => {
                for g in groups.values() {
                    create(&g.location)?;
                    for (file, value) in &g.properties {
                        inherit_from_parent(&g.location, file, *depth)?;
                        writeln_special(&g.location.join(file), value)?;
                    }
                }
                for g in groups.values() {
                    writeln_special(&g.location.join("tasks"), pid)?;
                }
            }
            Self::V2(Some(g), _) => {
                create(&g.location)?;
                let parent = g
                    .location
                    .parent()
                    .ok_or_else(|| JailerError::MissingParent(g.location.clone()))?;
                let mut enabled = BTreeSet::new();
                for (file, value) in &g.properties {
                    let controller = controller_of(file)?;
                    if enabled.insert(controller) {
                        enable_in_ancestors(parent, controller)?;
                    }
                    writeln_special(&g.location.join(file), value)?;
                }
                writeln_special(&g.location.join("cgroup.procs"), pid)?;
            }
            Self::V2(None, _) => {}
        }
        Ok(())
    }

    /// The directories created for the microVM.
    #[cfg(test)]
    pub fn locations(&self) -> Vec<&Path> {
        match self {
            Self::V1(groups, _) => groups.values().map(|g| g.location.as_path()).collect(),
            Self::V2(g, _) => g.iter().map(|g| g.location.as_path()).collect(),
        }
    }
}

fn create(dir: &Path) -> Result<(), JailerError> {
    fs::create_dir_all(dir).map_err(|e| JailerError::CreateDir(dir.to_path_buf(), e))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A mock `/proc/mounts` plus cgroup tree in a fresh temporary directory.
    pub struct MockFs {
        pub dir: PathBuf,
        pub mounts: PathBuf,
    }

    impl MockFs {
        pub fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("squib-jailer-cg-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let mounts = dir.join("mounts");
            fs::write(&mounts, "proc /proc proc rw 0 0\n").unwrap();
            Self { dir, mounts }
        }

        fn add_mount(&self, line: &str) {
            let mut m = fs::read_to_string(&self.mounts).unwrap();
            m.push_str(line);
            m.push('\n');
            fs::write(&self.mounts, m).unwrap();
        }

        /// A v2 hierarchy offering `controllers`.
        pub fn with_v2(self, controllers: &str) -> Self {
            let root = self.dir.join("unified");
            fs::create_dir_all(&root).unwrap();
            fs::write(root.join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
            fs::write(root.join("cgroup.subtree_control"), "").unwrap();
            self.add_mount(&format!("cgroup2 {} cgroup2 rw,nosuid 0 0", root.display()));
            self
        }

        /// A v1 hierarchy for `controller` whose root `file` holds `value`.
        pub fn with_v1(self, controller: &str, file: &str, value: &str) -> Self {
            let root = self.dir.join(controller);
            fs::create_dir_all(&root).unwrap();
            fs::write(root.join(file), format!("{value}\n")).unwrap();
            self.add_mount(&format!(
                "cgroup {} cgroup rw,relatime,{controller} 0 0",
                root.display()
            ));
            self
        }
    }

    impl Drop for MockFs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn test_should_require_a_hierarchy_of_the_version() {
        let fs_ = MockFs::new("none");
        for ver in [1, 2, 3] {
            let e = CgroupBuilder::new(ver, &fs_.mounts).unwrap_err();
            assert_eq!(
                e.to_string(),
                "Hierarchy not found: No hierarchy found for this cgroup version."
            );
        }
        let e = CgroupBuilder::new(1, Path::new("/nonexistent/mounts")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Failed to open file /nonexistent/mounts: ")
        );
    }

    #[test]
    fn test_should_set_up_v2_cgroup_and_enable_controllers() {
        let m = MockFs::new("v2").with_v2("cpu memory");
        let mut b = CgroupBuilder::new(2, &m.mounts).unwrap();
        let e = b
            .add_property("pids.max", "5", "vm1", Path::new("squib"))
            .unwrap_err();
        assert_eq!(e.to_string(), "Controller pids is unavailable");
        let e = b
            .add_property("memorymax", "5", "vm1", Path::new("squib"))
            .unwrap_err();
        assert_eq!(e.to_string(), "Cgroup invalid file: memorymax");
        b.add_property("memory.max", "268435456", "vm1", Path::new("squib"))
            .unwrap();
        b.add_property("cpu.weight", "50", "vm1", Path::new("squib"))
            .unwrap();
        let conf = b.build();
        let root = m.dir.join("unified");
        // A real cgroupfs creates the control files with the directory; the mock pre-creates one.
        fs::create_dir_all(root.join("squib")).unwrap();
        fs::write(root.join("squib/cgroup.subtree_control"), "").unwrap();
        conf.setup(4242).unwrap();
        let cg = root.join("squib/vm1");
        assert_eq!(conf.locations(), [cg.as_path()]);
        assert_eq!(
            fs::read_to_string(cg.join("memory.max")).unwrap(),
            "268435456\n"
        );
        assert_eq!(fs::read_to_string(cg.join("cpu.weight")).unwrap(), "50\n");
        assert_eq!(
            fs::read_to_string(cg.join("cgroup.procs")).unwrap(),
            "4242\n"
        );
        // Each write replaces the mock file; the last controller enabled is visible at each level.
        for dir in [&root, &root.join("squib")] {
            assert_eq!(
                fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
                "+cpu\n"
            );
        }
    }

    #[test]
    fn test_should_set_up_v1_cgroup_inheriting_parent_values() {
        let m = MockFs::new("v1").with_v1("cpuset", "cpuset.cpus", "0-1");
        let mut b = CgroupBuilder::new(1, &m.mounts).unwrap();
        let e = b
            .add_property("memory.limit_in_bytes", "1", "vm1", Path::new("a/b"))
            .unwrap_err();
        assert_eq!(e.to_string(), "Controller memory is unavailable");
        b.add_property("cpuset.cpus", "1", "vm1", Path::new("a/b"))
            .unwrap();
        let conf = b.build();
        // The intermediate levels exist but are empty, as a fresh cgroupfs directory would be.
        let root = m.dir.join("cpuset");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/cpuset.cpus"), "").unwrap();
        fs::write(root.join("a/b/cpuset.cpus"), "").unwrap();
        conf.setup(7).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("a/cpuset.cpus")).unwrap(),
            "0-1\n"
        );
        assert_eq!(
            fs::read_to_string(root.join("a/b/cpuset.cpus")).unwrap(),
            "0-1\n"
        );
        let cg = root.join("a/b/vm1");
        assert_eq!(fs::read_to_string(cg.join("cpuset.cpus")).unwrap(), "1\n");
        assert_eq!(fs::read_to_string(cg.join("tasks")).unwrap(), "7\n");
    }

    #[test]
    fn test_should_fail_when_nothing_to_inherit() {
        let m = MockFs::new("inherit").with_v1("cpuset", "cpuset.mems", "");
        let mut b = CgroupBuilder::new(1, &m.mounts).unwrap();
        b.add_property("cpuset.mems", "0", "vm1", Path::new("fc"))
            .unwrap();
        let root = m.dir.join("cpuset");
        fs::create_dir_all(root.join("fc")).unwrap();
        fs::write(root.join("fc/cpuset.mems"), "").unwrap();
        let e = b.build().setup(1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Failed to inherit cgroups configurations from file cpuset.mems in path {}",
                root.join("fc/vm1").display()
            )
        );
    }
}
