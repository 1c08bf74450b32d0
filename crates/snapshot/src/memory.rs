//! Guest-memory snapshot files (the `mem_file_path` of `PUT /snapshot/create`).
//!
//! Firecracker's form: the regions' bytes back to back, in guest-address order, no header
//! ([`save_memory_full`]). A diff file ([`save_memory_diff`]) has the same length and layout but
//! holds only the dirty pages ([`save_memory_diff_pages`] scans the dirty bitmaps a word at a
//! time); clean pages are holes (the writer seeks over them), so the file is
//! sparse. Merging a diff over its base ([`merge_diff_into`]) gives the full memory at the time
//! of the diff, which is what Firecracker users do with `rebase-snap`.
//!
//! Deviation: Firecracker writes the memory file in place (and merges a diff into an existing
//! file of the right size); squib replaces it atomically like the state file. So a save over the
//! very file a restored VM is mapped from (MAP_PRIVATE) cannot corrupt that VM, and a crash
//! leaves the previous file. Merging is explicit ([`merge_diff_into`]).
//!
//! [`MemoryLayout`] is the plain-data description the state file carries; it comes from an
//! untrusted file on restore, so [`MemoryLayout::validate`] bounds it before any use.
//!
//! Threading: stateless free functions. The caller keeps the guest paused (vCPUs stopped)
//! while saving, or the file is not a consistent image.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vm_memory::bitmap::Bitmap;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
    WriteVolatile,
};

use crate::atomic::{AtomicWriteError, replace_file};

/// The page size of memory files and dirty tracking (x86_64 base pages).
pub const PAGE_SIZE: u64 = 4096;

/// Most regions a layout may describe (squib makes at most two below 4 GiB + hotplug slots).
pub const MAX_REGIONS: usize = 256;

/// Most dirty ranges a diff description may hold (one per page of a 1 TiB guest is far more
/// than a coalesced list ever needs).
pub const MAX_DIRTY_RANGES: usize = 1 << 24;

/// Errors of memory-file handling. Texts are Firecracker's where it has them.
#[derive(Debug, Error)]
pub enum MemoryFileError {
    /// Writing the memory file failed; the previous file (if any) is intact.
    #[error("Cannot perform {} on the memory backing file: {}", .0.op, .0.source)]
    Write(#[from] AtomicWriteError),
    /// The layout is unusable (from a damaged or foreign state file).
    #[error("Invalid memory layout: {0}")]
    Layout(String),
    /// The layout does not describe this guest memory.
    #[error("The memory layout does not match the guest memory: {0}")]
    LayoutMismatch(String),
    /// Opening a file for a merge failed.
    #[error("Failed to open memory file {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A merge step failed.
    #[error("Cannot perform {0} on the memory backing file: {1}")]
    Io(&'static str, #[source] io::Error),
    /// A dirty range lies outside the files being merged.
    #[error(
        "Dirty range at offset {offset:#x} of {len:#x} bytes lies outside the memory file of {file_len:#x} bytes"
    )]
    DirtyRangeOutOfFile {
        /// Range start.
        offset: u64,
        /// Range length.
        len: u64,
        /// The smaller of the two files' lengths.
        file_len: u64,
    },
}

/// One guest-memory region and where its bytes are in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionDesc {
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Length in bytes (a multiple of [`PAGE_SIZE`]).
    pub size: u64,
    /// Offset of the region's first byte in the memory file.
    pub file_offset: u64,
}

/// The guest-memory layout of a snapshot: carried in the state file, used on restore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLayout {
    /// Regions in guest-address order.
    pub regions: Vec<RegionDesc>,
}

/// A byte range of a memory file (page-aligned in files squib writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRange {
    /// Start offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What [`save_memory_diff`] wrote: the layout and the coalesced dirty ranges (file offsets),
/// enough for [`merge_diff_into`] without relying on the filesystem's hole reporting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffSaved {
    /// The memory layout (the same as a full save's).
    pub layout: MemoryLayout,
    /// The file ranges holding data, ascending, non-adjacent.
    pub dirty: Vec<FileRange>,
}

impl MemoryLayout {
    /// The layout of `mem` as Firecracker writes it: regions back to back from offset 0.
    pub fn of<B: Bitmap>(mem: &GuestMemoryMmap<B>) -> Self {
        let mut offset = 0u64;
        let regions = mem
            .iter()
            .map(|r| {
                let d = RegionDesc {
                    guest_addr: r.start_addr().0,
                    size: r.len(),
                    file_offset: offset,
                };
                offset = offset.saturating_add(r.len());
                d
            })
            .collect();
        Self { regions }
    }

    /// Total guest memory described, in bytes (saturating; validated layouts never saturate).
    pub fn total_size(&self) -> u64 {
        self.regions
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.size))
    }

    /// Smallest memory-file length that holds every region.
    pub fn required_file_len(&self) -> u64 {
        self.regions
            .iter()
            .map(|r| r.file_offset.saturating_add(r.size))
            .max()
            .unwrap_or(0)
    }

    /// Checks a layout from an untrusted file: 1..=[`MAX_REGIONS`] regions, each non-empty,
    /// page-aligned, addressable (`usize`), without overflow, in ascending non-overlapping guest
    /// order, with non-overlapping file ranges.
    pub fn validate(&self) -> Result<(), MemoryFileError> {
        let bad = |m: String| Err(MemoryFileError::Layout(m));
        if self.regions.is_empty() {
            return bad("no memory regions".into());
        }
        if self.regions.len() > MAX_REGIONS {
            return bad(format!(
                "{} regions exceed the limit of {MAX_REGIONS}",
                self.regions.len()
            ));
        }
        let mut files: Vec<(u64, u64)> = Vec::with_capacity(self.regions.len());
        let mut prev_guest_end = 0u64;
        for (i, r) in self.regions.iter().enumerate() {
            if r.size == 0 {
                return bad(format!("region {i} has zero size"));
            }
            if r.guest_addr % PAGE_SIZE != 0
                || r.size % PAGE_SIZE != 0
                || r.file_offset % PAGE_SIZE != 0
            {
                return bad(format!("region {i} is not page-aligned"));
            }
            if usize::try_from(r.size).is_err() {
                return bad(format!("region {i} is too large for this host"));
            }
            let Some(guest_end) = r.guest_addr.checked_add(r.size) else {
                return bad(format!("region {i} overflows the guest address space"));
            };
            let Some(file_end) = r.file_offset.checked_add(r.size) else {
                return bad(format!("region {i} overflows the file offset range"));
            };
            if i > 0 && r.guest_addr < prev_guest_end {
                return bad(format!("region {i} overlaps or precedes region {}", i - 1));
            }
            prev_guest_end = guest_end;
            files.push((r.file_offset, file_end));
        }
        files.sort_unstable();
        if files.windows(2).any(|w| w[1].0 < w[0].1) {
            return bad("regions overlap in the memory file".into());
        }
        if i64::try_from(self.required_file_len()).is_err() {
            return bad("the memory file would exceed the largest file offset".into());
        }
        Ok(())
    }

    /// `(guest address, size, file offset)` per region, for the restore backends. Call
    /// [`validate`](Self::validate) first; sizes that do not fit `usize` are clamped.
    pub fn restore_ranges(&self) -> Vec<(GuestAddress, usize, u64)> {
        self.regions
            .iter()
            .map(|r| {
                (
                    GuestAddress(r.guest_addr),
                    usize::try_from(r.size).unwrap_or(usize::MAX),
                    r.file_offset,
                )
            })
            .collect()
    }

    /// Whether `mem` has exactly these regions (addresses and sizes, in order).
    pub fn matches<B: Bitmap>(&self, mem: &GuestMemoryMmap<B>) -> bool {
        mem.num_regions() == self.regions.len()
            && mem
                .iter()
                .zip(&self.regions)
                .all(|(r, d)| r.start_addr().0 == d.guest_addr && r.len() == d.size)
    }
}

fn volatile_to_io(e: vm_memory::VolatileMemoryError) -> io::Error {
    match e {
        vm_memory::VolatileMemoryError::IOError(io) => io,
        other => io::Error::other(other.to_string()),
    }
}

/// Writes `len` bytes of `region` from `offset` at the file's current position.
fn write_region_range<R: GuestMemoryRegion>(
    file: &mut File,
    region: &R,
    offset: u64,
    len: u64,
) -> Result<(), (&'static str, io::Error)> {
    let len = usize::try_from(len).map_err(|_| ("write", io::Error::other("range too large")))?;
    let slice = region
        .get_slice(MemoryRegionAddress(offset), len)
        .map_err(|e| ("write", io::Error::other(e.to_string())))?;
    file.write_all_volatile(&slice)
        .map_err(|e| ("write", volatile_to_io(e)))
}

/// Writes every region of `mem`, back to back and in order, to `path` (atomically).
/// Returns the layout to store in the state file.
pub fn save_memory_full<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    path: impl AsRef<Path>,
) -> Result<MemoryLayout, MemoryFileError> {
    let layout = MemoryLayout::of(mem);
    let path = path.as_ref();
    replace_file(path, |file| {
        file.set_len(layout.total_size())
            .map_err(|e| ("set_length", e))?;
        for region in mem.iter() {
            write_region_range(file, region, 0, region.len())?;
        }
        Ok(())
    })?;
    tracing::info!(path = %path.display(), bytes = layout.total_size(), "full memory snapshot written");
    Ok(layout)
}

/// Which pages of one region a diff holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirtyPages {
    /// Every page (a region nobody tracks).
    All,
    /// One bit per page, 64 pages per word, page `p` at bit `p % 64` of word `p / 64`
    /// (KVM's dirty-log layout). Missing words are clean.
    Bitmap(Vec<u64>),
}

impl DirtyPages {
    /// The first run of dirty pages `[start, end)` at or after page `from`, below `pages`.
    /// Scans a word at a time: clean stretches cost one comparison per 64 pages.
    #[must_use]
    pub fn next_run(&self, from: u64, pages: u64) -> Option<(u64, u64)> {
        let words = match self {
            Self::All => return (from < pages).then_some((from, pages)),
            Self::Bitmap(words) => words,
        };
        let word = |p: u64| {
            usize::try_from(p / 64)
                .ok()
                .and_then(|i| words.get(i))
                .copied()
                .unwrap_or(0)
        };
        let mut p = from;
        // First set bit at or after `from`.
        loop {
            if p >= pages {
                return None;
            }
            let w = word(p) >> (p % 64);
            if w != 0 {
                p += u64::from(w.trailing_zeros());
                break;
            }
            p = (p / 64 + 1) * 64;
        }
        if p >= pages {
            return None;
        }
        let start = p;
        // First clear bit after `start` (bits shifted in from the top read as set, which only
        // ever sends the scan on to the next word boundary).
        loop {
            if p >= pages {
                break;
            }
            let w = !word(p) >> (p % 64);
            if w != 0 {
                p += u64::from(w.trailing_zeros());
                break;
            }
            p = (p / 64 + 1) * 64;
        }
        Some((start, p.min(pages)))
    }
}

/// Writes only the pages `is_dirty(region_index, page_index)` reports; see
/// [`save_memory_diff_pages`], which takes the dirty bitmaps directly and is what a VMM uses.
pub fn save_memory_diff<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    is_dirty: impl Fn(usize, usize) -> bool,
    path: impl AsRef<Path>,
) -> Result<DiffSaved, MemoryFileError> {
    let dirty: Vec<DirtyPages> = mem
        .iter()
        .enumerate()
        .map(|(ri, region)| {
            let pages = usize::try_from(region.len().div_ceil(PAGE_SIZE)).unwrap_or(usize::MAX);
            let mut words = vec![0u64; pages.div_ceil(64)];
            for page in (0..pages).filter(|&p| is_dirty(ri, p)) {
                words[page / 64] |= 1 << (page % 64);
            }
            DirtyPages::Bitmap(words)
        })
        .collect();
    save_memory_diff_pages(mem, &dirty, path)
}

/// Writes only the dirty pages (`dirty[i]` for region `i`; a region without an entry is saved
/// whole), each at its offset in the full layout, to `path` (atomically). Clean pages are holes;
/// the file's length is the total memory size. Returns the layout and the dirty ranges written.
pub fn save_memory_diff_pages<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    dirty: &[DirtyPages],
    path: impl AsRef<Path>,
) -> Result<DiffSaved, MemoryFileError> {
    let layout = MemoryLayout::of(mem);
    let path = path.as_ref();
    let written = replace_file(path, |file| {
        file.set_len(layout.total_size())
            .map_err(|e| ("set_length", e))?;
        let mut written: Vec<FileRange> = Vec::new();
        for (ri, (region, desc)) in mem.iter().zip(&layout.regions).enumerate() {
            let pages = region.len().div_ceil(PAGE_SIZE);
            let bits = dirty.get(ri).unwrap_or(&DirtyPages::All);
            let mut from = 0;
            while let Some((start, end)) = bits.next_run(from, pages) {
                from = end;
                let offset = start * PAGE_SIZE;
                let len = (end * PAGE_SIZE).min(region.len()) - offset;
                let file_offset = desc.file_offset + offset;
                file.seek(SeekFrom::Start(file_offset))
                    .map_err(|e| ("seek", e))?;
                write_region_range(file, region, offset, len)?;
                match written.last_mut() {
                    Some(last) if last.offset + last.len == file_offset => last.len += len,
                    _ => written.push(FileRange {
                        offset: file_offset,
                        len,
                    }),
                }
            }
        }
        Ok(written)
    })?;
    tracing::info!(path = %path.display(), ranges = written.len(), "diff memory snapshot written");
    Ok(DiffSaved {
        layout,
        dirty: written,
    })
}

/// Copies the `dirty` ranges of the diff file `diff` into the base memory file `base`, in place
/// (like `rebase-snap`), then syncs `base`. Afterwards `base` is the full memory at the time of
/// the diff. Ranges come from [`DiffSaved::dirty`]; they are checked against both files.
pub fn merge_diff_into(
    base: impl AsRef<Path>,
    diff: impl AsRef<Path>,
    dirty: &[FileRange],
) -> Result<(), MemoryFileError> {
    let open_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| MemoryFileError::Open { path, source }
    };
    let (base, diff) = (base.as_ref(), diff.as_ref());
    let mut base_file = OpenOptions::new()
        .write(true)
        .open(base)
        .map_err(open_err(base))?;
    let mut diff_file = File::open(diff).map_err(open_err(diff))?;
    if dirty.len() > MAX_DIRTY_RANGES {
        return Err(MemoryFileError::Layout(format!(
            "{} dirty ranges exceed the limit of {MAX_DIRTY_RANGES}",
            dirty.len()
        )));
    }
    let base_len = base_file
        .metadata()
        .map_err(|e| MemoryFileError::Io("get_metadata", e))?
        .len();
    let diff_len = diff_file
        .metadata()
        .map_err(|e| MemoryFileError::Io("get_metadata", e))?
        .len();
    let file_len = base_len.min(diff_len);
    for r in dirty {
        if r.offset.checked_add(r.len).is_none_or(|end| end > file_len) {
            return Err(MemoryFileError::DirtyRangeOutOfFile {
                offset: r.offset,
                len: r.len,
                file_len,
            });
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    for r in dirty {
        diff_file
            .seek(SeekFrom::Start(r.offset))
            .map_err(|e| MemoryFileError::Io("seek", e))?;
        base_file
            .seek(SeekFrom::Start(r.offset))
            .map_err(|e| MemoryFileError::Io("seek", e))?;
        let mut left = r.len;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            diff_file
                .read_exact(&mut buf[..n])
                .map_err(|e| MemoryFileError::Io("read", e))?;
            base_file
                .write_all(&buf[..n])
                .map_err(|e| MemoryFileError::Io("write", e))?;
            left -= n as u64;
        }
    }
    base_file
        .sync_all()
        .map_err(|e| MemoryFileError::Io("sync_all", e))
}
