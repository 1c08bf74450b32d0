//! `JailerError`: every way the jailer can fail, with Firecracker 1.17's jailer texts.
//!
//! The variant names and payloads follow Firecracker's `JailerError`, so the `Error: <Debug>`
//! line Rust's `main` prints after the message reads the same too. Paths are printed without
//! quotes, as Firecracker does (it strips the quotes its `{:?}` adds).

use std::{io, path::PathBuf};

use crate::args::ArgError;

/// The jailer's error; `Display` is Firecracker's message.
#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    #[error("Failed to parse arguments: {0}")]
    ArgumentParsing(ArgError),
    #[error("Failed to canonicalize path {}: {}", .0.display(), .1)]
    Canonicalize(PathBuf, io::Error),
    #[error("Failed to inherit cgroups configurations from file {} in path {}", .1, .0.display())]
    CgroupInheritFromParent(PathBuf, String),
    #[error("Cgroup invalid file: {0}")]
    CgroupInvalidFile(String),
    #[error("Invalid format for cgroups: {0}")]
    CgroupFormat(String),
    #[error("Hierarchy not found: {0}")]
    CgroupHierarchyMissing(String),
    #[error("Controller {0} is unavailable")]
    CgroupControllerUnavailable(String),
    #[error("{0} is an invalid cgroup version specifier")]
    CgroupInvalidVersion(String),
    #[error("Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'")]
    CgroupInvalidParentPath(),
    #[error(
        "Failed to move process to cgroup ({path}): {err}.\nHint: If you intended to create a \
         child cgroup under {path}, pass any --cgroup parameters.",
        path = .0.display(),
        err = .1
    )]
    CgroupMove(PathBuf, io::Error),
    #[error("Failed to change owner for {}: {}", .0.display(), .1)]
    ChangeFileOwner(PathBuf, io::Error),
    #[error("Failed to chdir into chroot directory: {0}")]
    ChdirNewRoot(io::Error),
    #[error("Failed to change permissions on {}: {}", .0.display(), .1)]
    Chmod(PathBuf, io::Error),
    #[error("Failed cloning into a new child process: {0}")]
    Clone(io::Error),
    #[error("Failed to call close range syscall: {0}")]
    CloseRange(io::Error),
    #[error("Failed to copy {} to {}: {}", .0.display(), .1.display(), .2)]
    Copy(PathBuf, PathBuf, io::Error),
    #[error("Failed to create directory {}: {}", .0.display(), .1)]
    CreateDir(PathBuf, io::Error),
    #[error("Failed to daemonize: {0}")]
    Daemonize(io::Error),
    #[error("Failed to duplicate fd: {0}")]
    Dup2(io::Error),
    #[error("Failed to exec into Firecracker: {0}")]
    Exec(io::Error),
    #[error("Failed to extract filename from path {}", .0.display())]
    ExtractFileName(PathBuf),
    #[error("Failed to open file {}: {}", .0.display(), .1)]
    FileOpen(PathBuf, io::Error),
    #[error("Failed to get SID (getsid): {0}")]
    GetSid(io::Error),
    #[error("Invalid gid: {0}")]
    Gid(String),
    #[error("Detected hard link at: {}", .0.display())]
    HardLink(PathBuf),
    #[error("Invalid instance ID: {0}")]
    InvalidInstanceId(String),
    #[error("Cannot get metadata for a file: {}: {}", .0.display(), .1)]
    Metadata(PathBuf, io::Error),
    #[error("File {} doesn't have a parent", .0.display())]
    MissingParent(PathBuf),
    #[error("Failed to create the jail root directory before pivoting root: {0}")]
    MkdirOldRoot(io::Error),
    #[error("Failed to create {1} via mknod inside the jail: {0}")]
    MknodDev(io::Error, String),
    #[error("Failed to bind mount the jail root directory: {0}")]
    MountBind(io::Error),
    #[error("Failed to change the propagation type to slave: {0}")]
    MountPropagationSlave(io::Error),
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("Failed to open {}: {}", .0.display(), .1)]
    Open(PathBuf, io::Error),
    #[error("Failed to pivot root: {0}")]
    PivotRoot(io::Error),
    #[error("Failed to read file {} into a string: {}", .0.display(), .1)]
    ReadToString(PathBuf, io::Error),
    #[error("Invalid resource argument: {0}")]
    ResLimitArgument(String),
    #[error("Invalid format for resources limits: {0}")]
    ResLimitFormat(String),
    #[error("Invalid limit value for resource: {0}: {1}")]
    ResLimitValue(String, String),
    #[error("Failed to remove old jail root directory: {0}")]
    RmOldRootDir(io::Error),
    #[error("Failed to change current directory: {0}")]
    SetCurrentDir(io::Error),
    #[error("Failed to join network namespace: netns: {0}")]
    SetNetNs(io::Error),
    #[error("Failed to set limit for resource: {0}")]
    Setrlimit(String),
    #[error("Failed to daemonize: setsid: {0}")]
    SetSid(io::Error),
    #[error("Invalid uid: {0}")]
    Uid(String),
    #[error("Failed to unmount the old jail root: {0}")]
    UmountOldRoot(io::Error),
    #[error("Failed to unshare into new mount namespace: {0}")]
    UnshareNewNs(io::Error),
    #[error("Failed to write to {}: {}", .0.display(), .1)]
    Write(PathBuf, io::Error),
}
