//! `machine-config.huge_pages` and the `huge_pages` of `PUT /snapshot/load`, as Firecracker 1.17.
//!
//! Owns the rules; the mappings themselves are `squib_sys::memory_backing`'s.
//! - **Boot**: guest RAM (and the virtio-mem region) is anonymous memory with the configured
//!   backing ([`guest_memory`]). `2M` maps hugetlbfs pages with `MAP_NORESERVE`, as Firecracker:
//!   nothing is reserved up front, so with a pool too small for the kernel image the boot fails
//!   while the kernel is read into guest memory, with Firecracker's text (`... Kernel Loader:
//!   failed to load ELF kernel image: Kernel Loader: Unable to read kernel image`).
//! - **What Firecracker 1.17 refuses**: a `mem_size_mib` that is not a multiple of 2 MiB with
//!   `2M`/`Transparent` (`machine-config`, already in `squib-config`; on a restore, the
//!   snapshot's size against the resolved setting), and restoring a hugetlbfs microVM with the
//!   `File` memory backend ([`check_load`]). It accepts the balloon (it used to
//!   refuse it), virtio-mem, dirty-page tracking and Diff snapshots with huge pages; so does
//!   squib.
//! - **Snapshots** record the setting (`MachineState::huge_pages`); a load resolves the request's
//!   `huge_pages` against it ([`resolve`]: `Snapshot` keeps the recorded one), and the `Uffd`
//!   backend advertises the resolved page size (2 MiB for `2M`) in its handshake.
//!
//! Runs on the VMM thread; stateless.

use squib_config::schemas::machine_config::HugePages;
use squib_config::schemas::snapshot::{MemBackendType, SnapshotHugePages};
use squib_core::GuestMemoryMmap;
use squib_sys::memory_backing::{self, PageBacking};
use vm_memory::GuestAddress;

use crate::error::StartMicrovmError;

/// Firecracker's text when a hugetlbfs microVM would be restored from the memory file
/// (`RestoreFromSnapshotError::GuestMemory(File(HugetlbfsSnapshot))`, after `Load snapshot
/// error: `).
pub const HUGETLBFS_FILE_RESTORE: &str = "Failed to restore from snapshot: Failed to load guest memory: Error creating guest memory from file: Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd.";

/// Firecracker's text when the snapshot's memory size does not fit the resolved page size
/// (`BuildMicrovmFromSnapshotError::VmUpdateConfig(InvalidMemorySize)`, after `Load snapshot
/// error: `).
pub const RESTORE_INVALID_MEMORY_SIZE: &str = "Failed to restore from snapshot: Failed to build microVM from snapshot: Failed to update microVM configuration: The memory size (MiB) is either 0, or not a multiple of the configured page size.";

/// The host backing for a `huge_pages` setting.
pub fn backing(huge_pages: HugePages) -> PageBacking {
    match huge_pages {
        HugePages::None => PageBacking::Normal,
        HugePages::Transparent => PageBacking::Transparent,
        HugePages::Hugetlbfs2M => PageBacking::Hugetlb2M,
    }
}

/// Firecracker's `SnapshotLoadHugePageConfig::resolve`: the load request's choice, or the
/// snapshot's setting for `Snapshot` (the default).
pub fn resolve(requested: SnapshotHugePages, recorded: HugePages) -> HugePages {
    match requested {
        SnapshotHugePages::Snapshot => recorded,
        SnapshotHugePages::None => HugePages::None,
        SnapshotHugePages::Transparent => HugePages::Transparent,
        SnapshotHugePages::Hugetlbfs2M => HugePages::Hugetlbfs2M,
    }
}

/// Firecracker's checks before mapping a restore's memory, in its order: the snapshot's memory
/// size must suit the resolved page size (e.g. 65 MiB cannot be restored on `2M` or
/// `Transparent`), then hugetlbfs needs the `Uffd` backend.
pub fn check_load(
    backend: MemBackendType,
    resolved: HugePages,
    mem_size_mib: usize,
) -> Result<(), &'static str> {
    if !resolved.is_valid_mem_size(mem_size_mib) {
        return Err(RESTORE_INVALID_MEMORY_SIZE);
    }
    if backend == MemBackendType::File && resolved == HugePages::Hugetlbfs2M {
        return Err(HUGETLBFS_FILE_RESTORE);
    }
    Ok(())
}

/// Guest RAM for a boot: `ranges` (from `squib_arch::arch_memory_regions`) as anonymous memory
/// with the `huge_pages` backing.
pub fn guest_memory(
    ranges: &[(GuestAddress, usize)],
    huge_pages: HugePages,
) -> Result<GuestMemoryMmap, StartMicrovmError> {
    let backing = backing(huge_pages);
    let memory = memory_backing::anonymous_memory(ranges, backing)
        .map_err(StartMicrovmError::GuestMemory)?;
    if backing != PageBacking::Normal {
        tracing::info!(?backing, "guest memory backed by huge pages");
    }
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [HugePages; 3] = [
        HugePages::None,
        HugePages::Transparent,
        HugePages::Hugetlbfs2M,
    ];

    #[test]
    fn test_resolve_keeps_the_snapshot_setting_unless_overridden() {
        for recorded in ALL {
            assert_eq!(resolve(SnapshotHugePages::Snapshot, recorded), recorded);
            assert_eq!(resolve(SnapshotHugePages::None, recorded), HugePages::None);
            assert_eq!(
                resolve(SnapshotHugePages::Transparent, recorded),
                HugePages::Transparent
            );
            assert_eq!(
                resolve(SnapshotHugePages::Hugetlbfs2M, recorded),
                HugePages::Hugetlbfs2M
            );
        }
    }

    #[test]
    fn test_file_backend_refuses_only_hugetlbfs() {
        for hp in ALL {
            assert_eq!(check_load(MemBackendType::Uffd, hp, 128), Ok(()));
            let file = check_load(MemBackendType::File, hp, 128);
            if hp == HugePages::Hugetlbfs2M {
                assert_eq!(file, Err(HUGETLBFS_FILE_RESTORE));
            } else {
                assert_eq!(file, Ok(()));
            }
        }
        // The full answer, as the real Firecracker 1.17.0-dev printed it.
        assert_eq!(
            format!("Load snapshot error: {HUGETLBFS_FILE_RESTORE}"),
            "Load snapshot error: Failed to restore from snapshot: Failed to load guest memory: Error creating guest memory from file: Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd."
        );
    }

    #[test]
    fn test_restored_memory_size_must_suit_the_page_size_first() {
        for backend in [MemBackendType::File, MemBackendType::Uffd] {
            assert_eq!(check_load(backend, HugePages::None, 65), Ok(()));
            for hp in [HugePages::Transparent, HugePages::Hugetlbfs2M] {
                // Firecracker checks the size before the backend (measured: 65 MiB + 2M + File
                // answers the size text).
                assert_eq!(
                    check_load(backend, hp, 65),
                    Err(RESTORE_INVALID_MEMORY_SIZE)
                );
                assert_eq!(check_load(backend, hp, 0), Err(RESTORE_INVALID_MEMORY_SIZE));
            }
        }
        assert_eq!(
            format!("Load snapshot error: {RESTORE_INVALID_MEMORY_SIZE}"),
            "Load snapshot error: Failed to restore from snapshot: Failed to build microVM from snapshot: Failed to update microVM configuration: The memory size (MiB) is either 0, or not a multiple of the configured page size."
        );
    }

    #[test]
    fn test_backing_page_sizes() {
        assert_eq!(backing(HugePages::None).page_size(), 4096);
        assert_eq!(backing(HugePages::Transparent).page_size(), 4096);
        assert_eq!(backing(HugePages::Hugetlbfs2M).page_size(), 2 << 20);
    }

    #[test]
    fn test_boot_memory_with_normal_and_transparent_pages() {
        for hp in [HugePages::None, HugePages::Transparent] {
            let m = guest_memory(&[(GuestAddress(0), 4 << 20)], hp).unwrap();
            assert_eq!(vm_memory::GuestMemoryBackend::num_regions(&m), 1);
        }
    }
}
