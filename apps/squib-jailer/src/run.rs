//! Building and entering the jail, then exec'ing the binary: Firecracker's `Env::run`, step by
//! step, in its order.
//!
//! 1. copy the exec file to `<chroot>/<name>` (a copy, never a hard link: two microVMs must not
//!    share the binary's pages), owned by uid:gid, refusing a destination with other links;
//! 2. join `--netns`; 3. set `RLIMIT_FSIZE` (if given) and `RLIMIT_NOFILE`;
//! 4. create/write/join the cgroups; 5. open `/dev/null` if daemonizing;
//! 6. new mount namespace, everything slave, bind the chroot onto itself, `pivot_root` into it,
//!    detach and remove the old root;
//! 7. create `/`, `/dev`, `/dev/net`, `/run` (0700, uid:gid) and the device nodes `/dev/net/tun`
//!    (10:200), `/dev/kvm` (10:232), `/dev/urandom` (1:9, a warning if it fails) and
//!    `/dev/userfaultfd` (10:<minor from /proc/misc>, when the host has it), 0600, uid:gid;
//! 8. `--daemonize`: fork, setsid, fork again, stdio → `/dev/null`;
//! 9. `--new-pid-ns`: clone into a new PID namespace, the parent writes the child's pid to
//!    `/<name>.pid` and exits 0; otherwise write our own pid there;
//! 10. exec `/<name> --id <id> --start-time-us <t> --start-time-cpu-us <t>
//!     --parent-cpu-time-us <t> <args after -->` as uid:gid, with an empty environment.

use std::{
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Write},
    os::{
        fd::AsFd,
        unix::{
            fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, chown, fchown},
            process::CommandExt,
        },
    },
    path::{Path, PathBuf},
    process::Command,
};

use squib_sys::jail::{self as sys, ForkResult, Resource, SingleThreaded};

use crate::{env::Jail, error::JailerError};

const FOLDERS: [&str; 4] = ["/", "/dev", "/dev/net", "/run"];
const FOLDER_MODE: u32 = 0o700;
/// `S_IRUSR | S_IWUSR`.
const DEV_MODE: u32 = 0o600;

/// Monotonic and process-CPU clocks at jailer start, in µs.
#[derive(Debug, Clone, Copy)]
pub struct StartTimes {
    pub wall_us: u64,
    pub cpu_us: u64,
}

fn copy_exec_to_chroot(jail: &Jail) -> Result<PathBuf, JailerError> {
    let dst = jail.chroot_dir.join(&jail.exec_name);
    let mut src =
        File::open(&jail.exec_file).map_err(|e| JailerError::Open(jail.exec_file.clone(), e))?;
    let mode = src
        .metadata()
        .map_err(|e| JailerError::Metadata(jail.exec_file.clone(), e))?
        .mode();
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(sys::O_NOFOLLOW)
        .mode(mode)
        .open(&dst)
        .map_err(|e| JailerError::Open(dst.clone(), e))?;
    let links = out
        .metadata()
        .map_err(|e| JailerError::Metadata(dst.clone(), e))?
        .nlink();
    if links > 1 {
        return Err(JailerError::HardLink(dst));
    }
    fchown(&out, Some(jail.uid), Some(jail.gid))
        .map_err(|e| JailerError::ChangeFileOwner(dst.clone(), e))?;
    io::copy(&mut src, &mut out)
        .map_err(|e| JailerError::Copy(jail.exec_file.clone(), dst.clone(), e))?;
    Ok(Path::new("/").join(&jail.exec_name))
}

fn join_netns(path: &Path) -> Result<(), JailerError> {
    let ns = File::open(path).map_err(|e| JailerError::FileOpen(path.to_path_buf(), e))?;
    sys::join_net_ns(ns.as_fd()).map_err(JailerError::SetNetNs)
}

fn set_limits(jail: &Jail) -> Result<(), JailerError> {
    if let Some(fsize) = jail.fsize {
        sys::set_rlimit(Resource::FileSize, fsize)
            .map_err(|_| JailerError::Setrlimit("size of file".into()))?;
    }
    sys::set_rlimit(Resource::OpenFiles, jail.no_file)
        .map_err(|_| JailerError::Setrlimit("number of file descriptors".into()))
}

/// Mount namespace + `pivot_root` into `dir` (Firecracker's `chroot()`).
fn enter_chroot(dir: &Path) -> Result<(), JailerError> {
    sys::unshare_mount_ns().map_err(JailerError::UnshareNewNs)?;
    sys::make_root_rslave().map_err(JailerError::MountPropagationSlave)?;
    sys::bind_mount_onto_itself(dir).map_err(JailerError::MountBind)?;
    std::env::set_current_dir(dir).map_err(JailerError::SetCurrentDir)?;
    fs::DirBuilder::new()
        .mode(0o600)
        .create("old_root")
        .map_err(JailerError::MkdirOldRoot)?;
    sys::pivot_root(Path::new("."), Path::new("old_root")).map_err(JailerError::PivotRoot)?;
    std::env::set_current_dir("/").map_err(JailerError::ChdirNewRoot)?;
    sys::umount_detach(Path::new("old_root")).map_err(JailerError::UmountOldRoot)?;
    fs::remove_dir("old_root").map_err(JailerError::RmOldRootDir)
}

fn setup_folder(jail: &Jail, dir: &str) -> Result<(), JailerError> {
    fs::create_dir_all(dir).map_err(|e| JailerError::CreateDir(dir.into(), e))?;
    fs::set_permissions(dir, Permissions::from_mode(FOLDER_MODE))
        .map_err(|e| JailerError::Chmod(dir.into(), e))?;
    chown(dir, Some(jail.uid), Some(jail.gid))
        .map_err(|e| JailerError::ChangeFileOwner(dir.into(), e))
}

fn mknod_and_own(jail: &Jail, path: &str, major: u32, minor: u32) -> Result<(), JailerError> {
    sys::mknod_char(Path::new(path), DEV_MODE, major, minor)
        .map_err(|e| JailerError::MknodDev(e, path.to_owned()))?;
    chown(path, Some(jail.uid), Some(jail.gid))
        .map_err(|e| JailerError::ChangeFileOwner(path.into(), e))
}

fn save_pid(chroot_exec: &Path, pid: i32) -> Result<(), JailerError> {
    let path = PathBuf::from(format!("{}.pid", chroot_exec.display()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| JailerError::FileOpen(path.clone(), e))?;
    write!(f, "{pid}").map_err(|e| JailerError::Write(path, e))
}

/// Double fork + setsid, then stdio → `dev_null`. Returns the CPU time the exiting ancestors
/// used, in µs.
fn daemonize(dev_null: &File, token: &SingleThreaded) -> Result<u64, JailerError> {
    let mut cpu = 0;
    if let ForkResult::Parent(_) = sys::fork(token).map_err(JailerError::Daemonize)? {
        std::process::exit(0);
    }
    sys::setsid().map_err(JailerError::SetSid)?;
    cpu += squib_sys::process_cpu_time_us();
    if let ForkResult::Parent(_) = sys::fork(token).map_err(JailerError::Daemonize)? {
        std::process::exit(0);
    }
    for fd in 0..=2 {
        sys::dup2(dev_null.as_fd(), fd).map_err(JailerError::Dup2)?;
    }
    cpu += squib_sys::process_cpu_time_us();
    Ok(cpu)
}

fn exec(jail: &Jail, chroot_exec: &Path, start: StartTimes, jailer_cpu_us: u64) -> JailerError {
    let err = Command::new(chroot_exec)
        .env_clear()
        .args(["--id", &jail.id])
        .args(["--start-time-us", &start.wall_us.to_string()])
        .args([
            "--start-time-cpu-us",
            &squib_sys::process_cpu_time_us().to_string(),
        ])
        .args(["--parent-cpu-time-us", &jailer_cpu_us.to_string()])
        .args(&jail.extra)
        .uid(jail.uid)
        .gid(jail.gid)
        .exec();
    JailerError::Exec(err)
}

/// Build the chroot directory, then [`run`]. Returns only on error.
pub fn create_and_run(jail: &Jail, start: StartTimes) -> Result<(), JailerError> {
    fs::create_dir_all(&jail.chroot_dir)
        .map_err(|e| JailerError::CreateDir(jail.chroot_dir.clone(), e))?;
    run(jail, start)
}

/// Steps 1–10 of the module docs. Returns only on error (or, in a parent that hands over to a
/// child, never: that parent exits 0).
pub fn run(jail: &Jail, start: StartTimes) -> Result<(), JailerError> {
    let chroot_exec = copy_exec_to_chroot(jail)?;
    if let Some(ns) = &jail.netns {
        join_netns(ns)?;
    }
    set_limits(jail)?;
    if let Some(cg) = &jail.cgroups {
        cg.setup(std::process::id())?;
    }
    let dev_null = if jail.daemonize {
        Some(File::open("/dev/null").map_err(|e| JailerError::Open("/dev/null".into(), e))?)
    } else {
        None
    };

    // /proc is out of reach once in the jail: prove single-threadedness for the forks now.
    let token = if jail.daemonize {
        Some(SingleThreaded::verify().map_err(JailerError::Daemonize)?)
    } else if jail.new_pid_ns {
        Some(SingleThreaded::verify().map_err(JailerError::Clone)?)
    } else {
        None
    };

    enter_chroot(&jail.chroot_dir)?;
    for dir in FOLDERS {
        setup_folder(jail, dir)?;
    }
    mknod_and_own(jail, "/dev/net/tun", 10, 200)?;
    mknod_and_own(jail, "/dev/kvm", 10, 232)?;
    if let Err(e) = mknod_and_own(jail, "/dev/urandom", 1, 9) {
        println!("Warning! Could not create /dev/urandom device inside jailer: {e}.");
        println!("MMDS version 2 will not be available to use.");
    }
    if let Some(minor) = jail.uffd_minor {
        mknod_and_own(jail, "/dev/userfaultfd", 10, minor)?;
    }

    let mut jailer_cpu_us = squib_sys::process_cpu_time_us().saturating_sub(start.cpu_us);
    let mut is_session_leader = false;
    if let (Some(dev_null), Some(token)) = (&dev_null, &token) {
        jailer_cpu_us += daemonize(dev_null, token)?;
    } else if jail.new_pid_ns {
        let sid = sys::session_id().map_err(JailerError::GetSid)?;
        is_session_leader = u32::try_from(sid).ok() == Some(std::process::id());
    }

    if let (true, Some(token)) = (jail.new_pid_ns, &token) {
        // The child is init of the new namespace. If we lead a session, our exit would SIGHUP
        // it after it installed its handlers: give it a session of its own.
        match sys::clone_into_new_pid_ns(token).map_err(JailerError::Clone)? {
            ForkResult::Child => {
                if is_session_leader {
                    sys::setsid().map_err(JailerError::SetSid)?;
                }
                Err(exec(jail, &chroot_exec, start, jailer_cpu_us))
            }
            ForkResult::Parent(child) => {
                save_pid(&chroot_exec, child)?;
                std::process::exit(0);
            }
        }
    } else {
        save_pid(
            &chroot_exec,
            i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        )?;
        Err(exec(jail, &chroot_exec, start, jailer_cpu_us))
    }
}
