//! The backing file and the synchronous I/O engine.
//!
//! [`Disk`] owns the open file (shared, as an `Arc<File>`, with the `Async` engine's outstanding
//! operations, which keep it open until they complete) and its size in sectors. Sync reads and
//! writes seek to the request's
//! byte offset and move data directly between the file and guest memory with vm-memory's
//! `read_exact_volatile_from` / `write_all_volatile_to` (no unsafe here, no bounce buffer). A
//! short read (a file truncated behind our back) is an error, so the guest never sees stale
//! buffer contents reported as data.
//!
//! Host-only logging (opening files) uses plain `tracing`; nothing here is guest-triggerable
//! except I/O errors, which the device counts and logs with a rate limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestMemoryError};

use super::{BlockError, SECTOR_SHIFT, SECTOR_SIZE};
use crate::virtio::chain::Segment;

/// An I/O failure on the data path.
#[derive(Debug, thiserror::Error)]
pub enum DiskIoError {
    /// Seeking the backing file failed.
    #[error("seek failed: {0}")]
    Seek(#[source] io::Error),
    /// Moving data between the file and guest memory failed (including short transfers).
    #[error("transfer failed: {0}")]
    Transfer(#[source] GuestMemoryError),
    /// `fsync` failed.
    #[error("flush failed: {0}")]
    Flush(#[source] io::Error),
}

/// An open backing file.
#[derive(Debug)]
pub struct Disk {
    file: Arc<File>,
    path: PathBuf,
    nsectors: u64,
}

impl Disk {
    /// Opens `path` (read-write unless `read_only`) and sizes it.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let backing = |source| BlockError::BackingFile {
            source,
            path: path.display().to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(backing)?;
        // Seeking to the end also sizes block devices, whose metadata length is 0.
        let size = file.seek(SeekFrom::End(0)).map_err(backing)?;
        if size % SECTOR_SIZE != 0 {
            tracing::warn!(
                "Disk size {size} is not a multiple of sector size {SECTOR_SIZE}; the remainder \
                 will not be visible to the guest."
            );
        }
        Ok(Self {
            file: Arc::new(file),
            path: path.to_path_buf(),
            nsectors: size >> SECTOR_SHIFT,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn nsectors(&self) -> u64 {
        self.nsectors
    }

    /// The open file.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads from byte `offset` of the file into `segs`; returns the bytes moved.
    pub(crate) fn read(
        &mut self,
        mem: &GuestMemoryMmap,
        offset: u64,
        segs: &[Segment],
    ) -> Result<u64, DiskIoError> {
        let mut file = &*self.file;
        file.seek(SeekFrom::Start(offset))
            .map_err(DiskIoError::Seek)?;
        let mut total = 0;
        for seg in segs {
            mem.read_exact_volatile_from(seg.addr, &mut file, len_usize(seg.len))
                .map_err(DiskIoError::Transfer)?;
            total += u64::from(seg.len);
        }
        Ok(total)
    }

    /// Writes `segs` to the file at byte `offset`; returns the bytes moved.
    pub(crate) fn write(
        &mut self,
        mem: &GuestMemoryMmap,
        offset: u64,
        segs: &[Segment],
    ) -> Result<u64, DiskIoError> {
        let mut file = &*self.file;
        file.seek(SeekFrom::Start(offset))
            .map_err(DiskIoError::Seek)?;
        let mut total = 0;
        for seg in segs {
            mem.write_all_volatile_to(seg.addr, &mut file, len_usize(seg.len))
                .map_err(DiskIoError::Transfer)?;
            total += u64::from(seg.len);
        }
        Ok(total)
    }

    /// `fsync`s data and metadata.
    pub(crate) fn flush(&mut self) -> Result<(), DiskIoError> {
        self.file.sync_all().map_err(DiskIoError::Flush)
    }
}

fn len_usize(len: u32) -> usize {
    // usize is at least 32 bits on every supported target.
    usize::try_from(len).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use vm_memory::GuestAddress;
    use vmm_sys_util::tempfile::TempFile;

    use super::*;
    use crate::virtio::test_utils::guest_memory;

    #[test]
    fn test_open_sizes_in_whole_sectors() {
        let tmp = TempFile::new().unwrap();
        tmp.as_file().write_all(&[7u8; 1300]).unwrap();
        let disk = Disk::open(tmp.as_path(), true).unwrap();
        assert_eq!(disk.nsectors(), 2);
        assert_eq!(disk.path(), tmp.as_path());
        let err = Disk::open(Path::new("/nonexistent/squib-disk"), false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Error manipulating the backing file: ")
        );
        assert!(err.to_string().ends_with(" /nonexistent/squib-disk"));
    }

    #[test]
    fn test_read_write_roundtrip_and_short_read_is_an_error() {
        let tmp = TempFile::new().unwrap();
        tmp.as_file().set_len(1024).unwrap();
        let mut disk = Disk::open(tmp.as_path(), false).unwrap();
        let mem = guest_memory(0x1000);
        let segs = [
            Segment {
                addr: GuestAddress(0x100),
                len: 256,
            },
            Segment {
                addr: GuestAddress(0x800),
                len: 256,
            },
        ];
        mem.write_slice(&[0xab; 256], GuestAddress(0x100)).unwrap();
        mem.write_slice(&[0xcd; 256], GuestAddress(0x800)).unwrap();
        assert_eq!(disk.write(&mem, 512, &segs).unwrap(), 512);
        disk.flush().unwrap();
        let out = [Segment {
            addr: GuestAddress(0),
            len: 512,
        }];
        assert_eq!(disk.read(&mem, 512, &out).unwrap(), 512);
        let mut buf = [0u8; 512];
        mem.read_slice(&mut buf, GuestAddress(0)).unwrap();
        assert_eq!(&buf[..256], &[0xab; 256]);
        assert_eq!(&buf[256..], &[0xcd; 256]);
        // Past the end of the file.
        assert!(matches!(
            disk.read(&mem, 1024, &out),
            Err(DiskIoError::Transfer(_))
        ));
    }
}
