//! Telemetry sinks: the log and metrics files or named pipes.
//!
//! Firecracker opens `log_path` and `metrics_path` non-blocking and read-write, so that a FIFO
//! can be opened before anyone reads it (a write-only open would block, or fail with `ENXIO`
//! when non-blocking) and a write to a full pipe fails with `EAGAIN` instead of stalling the
//! VMM. [`open_sink`] does the same, and appends (`O_APPEND`) to a regular file instead of
//! overwriting it from offset 0.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens (creating a regular file if needed) a log or metrics sink: `O_RDWR | O_APPEND |
/// O_CREAT | O_NONBLOCK`. Works for regular files and FIFOs.
pub fn open_sink(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("squib-sink-{}-{tag}", std::process::id()))
    }

    #[test]
    fn test_open_sink_appends_to_a_regular_file() {
        let p = tmp("file");
        std::fs::write(&p, b"first\n").unwrap();
        open_sink(&p).unwrap().write_all(b"second\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "first\nsecond\n");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn test_open_sink_opens_a_fifo_without_a_reader_and_never_blocks() {
        let p = tmp("fifo");
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path; mkfifo only creates a file system node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut sink = open_sink(&p).unwrap();
        sink.write_all(b"line\n").unwrap();
        // Fill the pipe: the write fails with EAGAIN instead of blocking.
        let chunk = vec![b'x'; 64 * 1024];
        let err = (0..64).find_map(|_| sink.write(&chunk).err()).unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let mut reader = File::open(&p).unwrap();
        let mut buf = [0u8; 5];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"line\n");
        std::fs::remove_file(&p).unwrap();
    }
}
