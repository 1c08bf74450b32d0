//! Kernel, initrd and command-line loading (Firecracker's `load_kernel` order: ELF, then
//! bzImage when the image has no ELF magic; loader failures carry linux-loader's texts, as
//! Firecracker's do).
//!
//! - ELF `vmlinux`: segments at their `p_paddr`, entry `e_entry` (must be at or above 1 MiB);
//!   a `XEN_ELFNOTE_PHYS32_ENTRY` note makes the PVH entry available.
//! - bzImage: needs boot protocol ≥ 2.12 with `XLF_KERNEL_64`; the 64-bit entry is
//!   `load address + 0x200`; its setup header seeds the zero page.
//! - initrd: end of the first RAM region, page aligned down, above the kernel.

use std::io::{Read, Seek};

use linux_loader::bootparam::setup_header;
use linux_loader::loader::elf::Error as ElfError;
use linux_loader::loader::{BzImage, Elf, Error as LoaderError, KernelLoader, PvhBootCapability};
use squib_core::GuestMemoryMmap;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, ReadVolatile,
};

use crate::error::ArchError;
use crate::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PAGE_SIZE};

/// Minimum boot protocol version with a usable 64-bit entry (2.12).
const MIN_BZIMAGE_VERSION_64: u16 = 0x020c;
/// `XLF_KERNEL_64`.
const XLF_KERNEL_64: u16 = 1;
/// Offset of the 64-bit entry point in a loaded bzImage.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Which entry protocol the boot vCPU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// Linux 64-bit boot protocol: long mode, paging on, `rsi` = zero page.
    LinuxBoot,
    /// Xen PVH: 32-bit protected mode, paging off, `rbx` = `hvm_start_info`.
    Pvh,
}

/// The kernel image format that was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF `vmlinux`.
    Elf,
    /// Compressed bzImage.
    BzImage,
}

/// Where and how to enter the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEntry {
    /// Entry protocol.
    pub protocol: BootProtocol,
    /// Entry address.
    pub addr: GuestAddress,
}

/// Result of [`load_kernel`].
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Image format.
    pub format: KernelFormat,
    /// 64-bit Linux boot protocol entry.
    pub linux_entry: GuestAddress,
    /// PVH entry, when the ELF image carries the note.
    pub pvh_entry: Option<GuestAddress>,
    /// Lowest loaded address.
    pub kernel_start: GuestAddress,
    /// First address past the loaded image (including BSS for ELF).
    pub kernel_end: u64,
    /// The bzImage setup header, to seed the zero page.
    pub setup_header: Option<setup_header>,
}

impl LoadedKernel {
    /// The entry to use: PVH when preferred and available, else the 64-bit Linux entry.
    pub fn entry(&self, prefer_pvh: bool) -> KernelEntry {
        match self.pvh_entry {
            Some(addr) if prefer_pvh => KernelEntry {
                protocol: BootProtocol::Pvh,
                addr,
            },
            _ => KernelEntry {
                protocol: BootProtocol::LinuxBoot,
                addr: self.linux_entry,
            },
        }
    }
}

/// Loads an ELF or bzImage kernel from `image` into `mem`.
pub fn load_kernel<F>(mem: &GuestMemoryMmap, image: &mut F) -> Result<LoadedKernel, ArchError>
where
    F: Read + ReadVolatile + Seek,
{
    let himem = GuestAddress(HIMEM_START);
    match Elf::load(mem, None, image, Some(himem)) {
        Ok(res) => {
            let pvh_entry = match res.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => Some(addr),
                _ => None,
            };
            let loaded = LoadedKernel {
                format: KernelFormat::Elf,
                linux_entry: res.kernel_load,
                pvh_entry,
                kernel_start: res.kernel_load,
                kernel_end: res.kernel_end,
                setup_header: None,
            };
            return check_range(mem, loaded);
        }
        // Not an ELF image: fall back to the bzImage loader (Firecracker's rule). Any other ELF
        // failure (e.g. the image cannot be read into guest memory) is the answer.
        Err(LoaderError::Elf(ElfError::InvalidElfMagicNumber)) => {}
        Err(e) => return Err(ArchError::KernelLoader(e)),
    }
    let res = BzImage::load(mem, None, image, Some(himem)).map_err(ArchError::KernelLoader)?;
    let hdr = res.setup_header.ok_or(ArchError::BzImageNot64Bit)?;
    let (version, xloadflags) = (hdr.version, hdr.xloadflags);
    if version < MIN_BZIMAGE_VERSION_64 || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(ArchError::BzImageNot64Bit);
    }
    let linux_entry = res
        .kernel_load
        .checked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
        .ok_or(ArchError::BzImageNot64Bit)?;
    check_range(
        mem,
        LoadedKernel {
            format: KernelFormat::BzImage,
            linux_entry,
            pvh_entry: None,
            kernel_start: res.kernel_load,
            kernel_end: res.kernel_end,
            setup_header: Some(hdr),
        },
    )
}

fn check_range(mem: &GuestMemoryMmap, k: LoadedKernel) -> Result<LoadedKernel, ArchError> {
    let start = k.kernel_start.raw_value();
    let ok = start >= HIMEM_START
        && k.kernel_end > start
        && mem.address_in_range(GuestAddress(k.kernel_end - 1))
        && mem.address_in_range(k.linux_entry);
    if ok {
        Ok(k)
    } else {
        Err(ArchError::KernelOutOfRange {
            start,
            end: k.kernel_end,
        })
    }
}

/// Where the initrd was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdConfig {
    /// Guest-physical load address.
    pub address: GuestAddress,
    /// Size in bytes.
    pub size: u64,
}

/// Copies an initrd of `size` bytes from `image` to the top of the first RAM region (page
/// aligned down), refusing to overlap the kernel (`kernel_end`).
pub fn load_initrd<F: ReadVolatile>(
    mem: &GuestMemoryMmap,
    image: &mut F,
    size: u64,
    kernel_end: u64,
) -> Result<InitrdConfig, ArchError> {
    let first = mem
        .iter()
        .next()
        .ok_or(ArchError::InitrdTooLarge { size })?;
    let lowmem_end = first.start_addr().raw_value() + first.len();
    let address = lowmem_end
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| *a >= kernel_end.max(HIMEM_START))
        .ok_or(ArchError::InitrdTooLarge { size })?;
    let len = usize::try_from(size).map_err(|_| ArchError::InitrdTooLarge { size })?;
    mem.read_exact_volatile_from(GuestAddress(address), image, len)
        .map_err(|e| match e {
            vm_memory::GuestMemoryError::IOError(io) => ArchError::InitrdRead(io),
            other => ArchError::GuestMemoryAccess {
                addr: address,
                source: other,
            },
        })?;
    Ok(InitrdConfig {
        address: GuestAddress(address),
        size,
    })
}

/// Writes `cmdline` NUL-terminated at [`CMDLINE_START`]; returns its size including the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, ArchError> {
    let bytes = cmdline.as_bytes();
    if bytes.contains(&0) {
        return Err(ArchError::CmdlineNul);
    }
    let len = bytes.len() + 1;
    if len > CMDLINE_MAX_SIZE {
        return Err(ArchError::CmdlineTooLong {
            len,
            max: CMDLINE_MAX_SIZE,
        });
    }
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(bytes);
    buf.push(0);
    mem.write_slice(&buf, GuestAddress(CMDLINE_START))
        .map_err(ArchError::mem(CMDLINE_START))?;
    Ok(len)
}
