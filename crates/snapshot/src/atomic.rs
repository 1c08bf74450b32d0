//! Crash-safe file replacement: write a sibling temp file, fsync it, rename it over the target,
//! fsync the directory. A crash at any point leaves either the previous file or the new one,
//! never a mix; temp files left by a crashed writer are removed by the next save of the same path.
//!
//! Threading: stateless; concurrent saves of *different* paths are independent. Two concurrent
//! saves of the same path each write their own temp file; the last rename wins.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// Marker between the target's name and the temp file's owner (`.NAME.squib-tmp.PID.N`).
const TEMP_MARKER: &str = ".squib-tmp.";

/// Distinguishes temp files of concurrent saves inside one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An atomic write failed at step `op` (`open`, `write`, `sync_all`, `rename`, ...).
#[derive(Debug, Error)]
#[error("Cannot perform {op} on {path}: {source}")]
pub struct AtomicWriteError {
    /// The step that failed.
    pub op: &'static str,
    /// The file the step was applied to.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

fn err(op: &'static str, path: &Path, source: io::Error) -> AtomicWriteError {
    AtomicWriteError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with what `write` writes into a fresh file, atomically and durably.
///
/// `write` gets the open temp file, positioned at 0 with length 0. It returns the step name
/// and error on failure (`("write", e)`), which is reported against the target path.
pub(crate) fn replace_file<R>(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<R, (&'static str, io::Error)>,
) -> Result<R, AtomicWriteError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            err(
                "open",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
            )
        })?
        .to_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(err(
            "open",
            path,
            io::Error::new(io::ErrorKind::IsADirectory, "Is a directory"),
        ));
    }
    clean_stale_temps(&dir, &name);

    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{name}{TEMP_MARKER}{}.{n}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| err("open", &temp, e))?;
    let guard = TempGuard(Some(temp));

    let out = write(&mut file).map_err(|(op, e)| err(op, path, e))?;
    file.sync_all().map_err(|e| err("sync_all", path, e))?;
    drop(file);
    let temp = guard.disarm();
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(err("rename", path, e));
    }
    // Make the rename itself durable. Some filesystems refuse fsync on a directory; the
    // data is already safe then, so that is not an error.
    if let Ok(d) = File::open(&dir)
        && let Err(e) = d.sync_all()
        && e.kind() != io::ErrorKind::InvalidInput
    {
        return Err(err("sync_all", &dir, e));
    }
    Ok(out)
}

/// Removes the temp file on an early return.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Removes `.NAME.squib-tmp.PID.N` files in `dir` whose writer process is gone (a crash).
/// Temp files of live processes (a concurrent save) are left alone. Errors are ignored: a
/// leftover temp file costs disk space, never correctness.
fn clean_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARKER}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|s| s.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !process_alive(pid) {
            tracing::info!(path = %entry.path().display(), "removing a stale snapshot temp file");
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        // Our own temp files are removed by `TempGuard`; one still present belongs to a
        // concurrent save in this process.
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tmpdir() -> vmm_sys_util::tempdir::TempDir {
        vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/squib-atomic-").unwrap()
    }

    #[test]
    fn test_should_replace_file_and_leave_no_temp() {
        let d = tmpdir();
        let p = d.as_path().join("state");
        fs::write(&p, b"old").unwrap();
        replace_file(&p, |f| f.write_all(b"new").map_err(|e| ("write", e))).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::read_dir(d.as_path()).unwrap().count(), 1);
    }

    #[test]
    fn test_should_keep_previous_file_when_writer_fails() {
        let d = tmpdir();
        let p = d.as_path().join("state");
        fs::write(&p, b"old").unwrap();
        let e = replace_file(&p, |f| {
            f.write_all(b"partial").map_err(|e| ("write", e))?;
            Err::<(), _>(("write", io::Error::other("disk full")))
        })
        .unwrap_err();
        assert_eq!(e.op, "write");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(d.as_path()).unwrap().count(), 1);
    }

    #[test]
    fn test_should_clean_stale_temp_of_dead_process() {
        let d = tmpdir();
        let p = d.as_path().join("state");
        // pid 0x7fff_fff0 cannot be alive (above pid_max's ceiling of 2^22).
        let stale = d.as_path().join(".state.squib-tmp.2147483632.0");
        fs::write(&stale, b"half-written").unwrap();
        let other = d.as_path().join(".other.squib-tmp.2147483632.0");
        fs::write(&other, b"not ours").unwrap();
        replace_file(&p, |f| f.write_all(b"x").map_err(|e| ("write", e))).unwrap();
        assert!(!stale.exists());
        assert!(other.exists());
    }

    #[test]
    fn test_should_refuse_directory_target() {
        let d = tmpdir();
        let e = replace_file(d.as_path(), |_| Ok(())).unwrap_err();
        assert_eq!(e.op, "open");
        assert_eq!(e.source.kind(), io::ErrorKind::IsADirectory);
    }
}
