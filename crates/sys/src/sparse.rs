//! The data ranges of a sparse file (`SEEK_DATA` / `SEEK_HOLE`), as `rebase-snap` and other
//! Firecracker tools find the pages a Diff memory snapshot holds.
//!
//! Stateless; the file's offset is moved.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn seek(file: &File, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on a valid, owned file descriptor; no memory is passed.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no data (SEEK_DATA) at or after `offset`.
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(u64::try_from(r).ok())
}

/// `(offset, length)` of every data range of `file`, ascending. A file system without hole
/// reporting reports the whole file as data.
pub fn data_ranges(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = file.metadata()?.len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let Some(start) = seek(file, pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(file, start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if end <= start {
            break;
        }
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn test_finds_written_ranges_of_a_sparse_file() {
        let tmp = vmm_sys_util::tempfile::TempFile::new().unwrap();
        let mut f = tmp.as_file();
        f.set_len(16 << 20).unwrap();
        f.seek(SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(&[1u8; 8192]).unwrap();
        f.seek(SeekFrom::Start(12 << 20)).unwrap();
        f.write_all(&[2u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let r = data_ranges(f).unwrap();
        // File systems round to their block size; every written byte is covered, little else.
        assert!(
            r.iter()
                .any(|&(o, l)| o <= 4 << 20 && o + l >= (4 << 20) + 8192),
            "{r:?}"
        );
        assert!(
            r.iter()
                .any(|&(o, l)| o <= 12 << 20 && o + l >= (12 << 20) + 4096),
            "{r:?}"
        );
        let total: u64 = r.iter().map(|x| x.1).sum();
        assert!(total < 16 << 20 || r.len() == 1, "{r:?}");
    }
}
