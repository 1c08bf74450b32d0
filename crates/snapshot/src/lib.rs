//! squib's snapshot files, with no hypervisor in sight.
//!
//! - [`state`]: the snapshot *state* file. Firecracker 1.17's container, byte for byte
//!   (bitcode of `{ header { magic, version }, data }` + a CRC64 trailer), around squib's own
//!   versioned envelope. [`save_state`] / [`load_state`] are generic over the caller's state type;
//!   [`describe`] and [`SNAPSHOT_VERSION_TEXT`] serve `--describe-snapshot` and
//!   `--snapshot-version`. A Firecracker-made state file is refused with [`SnapshotError::NotSquib`].
//! - [`memory`]: guest-memory files. [`save_memory_full`] (regions back to back, as Firecracker),
//!   [`save_memory_diff`] (dirty pages only, sparse), [`merge_diff_into`] (rebase a diff over its
//!   base), and the [`MemoryLayout`] the state file carries. Generic over vm-memory's bitmap type.
//!   The restore side (mapping a memory file, userfaultfd) is in `squib-sys`, which owns `unsafe`.
//!
//! Every file written here is replaced atomically (sibling temp file, fsync, rename, fsync of the
//! directory); a crash leaves the previous file intact.
//!
//! Untrusted input (a state file) never panics: sizes are bounded before reading, every count in
//! it is bounded by the 10 MB input, and a layout is validated before use.
//!
//! Threading: free functions without shared state; callable from any thread.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atomic;
pub mod memory;
pub mod state;

pub use atomic::AtomicWriteError;
pub use memory::{
    DiffSaved, DirtyPages, FileRange, MAX_REGIONS, MemoryFileError, MemoryLayout, PAGE_SIZE,
    RegionDesc, merge_diff_into, save_memory_diff, save_memory_diff_pages, save_memory_full,
};
pub use state::{
    SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SNAPSHOT_VERSION_TEXT, SQUIB_FORMAT_VERSION,
    STATE_SIZE_LIMIT, SnapshotError, decode_state, describe, describe_bytes, encode_state,
    load_state, save_state,
};
