//! Data extents of a sparse file (`lseek` `SEEK_DATA`/`SEEK_HOLE`): which byte ranges of a diff
//! memory file hold pages, for merging a diff that came without a dirty list (one Firecracker
//! made), as `rebase-snap` does. On a filesystem without hole support the whole file is one
//! extent, so prefer the dirty list `squib_snapshot::save_memory_diff` returns when there is one.
//!
//! Threading: stateless; moves the file's offset (callers should not share the `File` while
//! this runs).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Most extents returned; a file with more is refused rather than listed without bound.
pub const MAX_EXTENTS: usize = 1 << 24;

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on a valid open fd with plain integer arguments; no memory is passed.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after `offset`.
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(u64::try_from(rc).ok())
}

/// `(offset, len)` of every data extent of `file`, ascending.
pub fn data_extents(file: &File) -> io::Result<Vec<(u64, u64)>> {
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
        if out.len() == MAX_EXTENTS {
            return Err(io::Error::other("too many data extents"));
        }
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn test_should_list_data_extents_of_sparse_file() {
        let f = vmm_sys_util::tempfile::TempFile::new_with_prefix("/tmp/squib-sparse-").unwrap();
        let file = f.as_file();
        file.set_len(64 << 20).unwrap();
        assert!(data_extents(file).unwrap().is_empty() || data_extents(file).unwrap().len() == 1);
        file.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        file.write_all_at(&[2u8; 8192], 32 << 20).unwrap();
        let ext = data_extents(file).unwrap();
        // Holes are filesystem-granular: each write lies inside a reported extent.
        for (off, len) in [(1u64 << 20, 4096u64), (32 << 20, 8192)] {
            assert!(
                ext.iter().any(|&(s, l)| s <= off && off + len <= s + l),
                "{ext:?}"
            );
        }
    }
}
