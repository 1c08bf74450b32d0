//! Kernel/initrd/cmdline loading against real guest images (no KVM needed).

use std::fs::File;
use std::path::{Path, PathBuf};

use squib_arch::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START};
use squib_arch::{
    ArchError, BootProtocol, KernelFormat, create_guest_memory, load_initrd, load_kernel,
    write_cmdline,
};
use vm_memory::{Bytes, GuestAddress};

/// The test guest directory: `SQUIB_GUEST_DIR`, else `shared/guest` beside the checkout, else
/// `/work/shared/guest`.
fn guest_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SQUIB_GUEST_DIR") {
        return PathBuf::from(dir);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/guest");
    if beside.join("vmlinux").exists() {
        return beside;
    }
    PathBuf::from("/work/shared/guest")
}

fn image(name: &str) -> Option<File> {
    let path = guest_dir().join(name);
    if path.exists() {
        Some(File::open(path).unwrap())
    } else {
        println!("SKIPPED: no {}", path.display());
        None
    }
}

#[test]
fn test_load_vmlinux_elf_entry_and_pvh_note() {
    let Some(mut f) = image("vmlinux") else {
        return;
    };
    let mem = create_guest_memory(256).unwrap();
    let k = load_kernel(&mem, &mut f).unwrap();
    assert_eq!(k.format, KernelFormat::Elf);
    assert_eq!(k.linux_entry, GuestAddress(0x100_0000));
    let pvh = k.pvh_entry.expect("PVH note present");
    assert!(pvh.0 > HIMEM_START && pvh.0 < k.kernel_end);
    assert_eq!(k.entry(true).protocol, BootProtocol::Pvh);
    assert_eq!(k.entry(false).protocol, BootProtocol::LinuxBoot);
    assert!(k.setup_header.is_none());
    // The entry point holds code, not zeroes.
    let word: u64 = mem.read_obj(k.linux_entry).unwrap();
    assert_ne!(word, 0);
}

#[test]
fn test_load_bzimage_64bit_entry() {
    let Some(mut f) = image("bzImage") else {
        return;
    };
    let mem = create_guest_memory(256).unwrap();
    let k = load_kernel(&mem, &mut f).unwrap();
    assert_eq!(k.format, KernelFormat::BzImage);
    assert_eq!(k.linux_entry.0, k.kernel_start.0 + 0x200);
    assert!(k.pvh_entry.is_none());
    let hdr = k.setup_header.unwrap();
    let (version, xloadflags) = (hdr.version, hdr.xloadflags);
    assert!(version >= 0x020c);
    assert_ne!(xloadflags & 1, 0);
}

#[test]
fn test_load_kernel_rejects_garbage() {
    let mem = create_guest_memory(16).unwrap();
    let mut junk = std::io::Cursor::new(vec![0x42u8; 8192]);
    let e = load_kernel(&mem, &mut junk).unwrap_err();
    assert!(matches!(e, ArchError::KernelLoader(_)), "{e}");
    // Firecracker 1.17.0-dev answered exactly this (after its `Start microvm error: System
    // configuration error: Cannot load kernel due to ...: ` prefix) for this junk image.
    assert_eq!(
        e.to_string(),
        "Kernel Loader: failed to load bzImage kernel image: Kernel Loader: Invalid bzImage"
    );
    let mut empty = std::io::Cursor::new(Vec::new());
    assert!(load_kernel(&mem, &mut empty).is_err());
}

#[test]
fn test_vmlinux_does_not_fit_tiny_memory() {
    let Some(mut f) = image("vmlinux") else {
        return;
    };
    let mem = create_guest_memory(8).unwrap();
    assert!(load_kernel(&mem, &mut f).is_err());
}

#[test]
fn test_initrd_placed_at_top_of_ram_page_aligned() {
    let mem = create_guest_memory(64).unwrap();
    let data = vec![0xabu8; 5000];
    let cfg = load_initrd(&mem, &mut data.as_slice(), 5000, 0x200_0000).unwrap();
    assert_eq!(cfg.address.0 % 4096, 0);
    assert_eq!(cfg.address.0, ((64 << 20) - 5000) & !0xfff);
    let b: u8 = mem.read_obj(cfg.address).unwrap();
    assert_eq!(b, 0xab);
}

#[test]
fn test_initrd_too_large_rejected() {
    let mem = create_guest_memory(16).unwrap();
    let data = vec![0u8; 16];
    assert!(matches!(
        load_initrd(&mem, &mut data.as_slice(), 15 << 20, 0x200_0000),
        Err(ArchError::InitrdTooLarge { .. })
    ));
}

#[test]
fn test_cmdline_written_with_nul_and_bounded() {
    let mem = create_guest_memory(16).unwrap();
    assert_eq!(write_cmdline(&mem, "console=ttyS0").unwrap(), 14);
    let mut buf = [0u8; 14];
    mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
        .unwrap();
    assert_eq!(&buf, b"console=ttyS0\0");
    let max = "x".repeat(CMDLINE_MAX_SIZE - 1);
    assert_eq!(write_cmdline(&mem, &max).unwrap(), CMDLINE_MAX_SIZE);
    let too_long = "x".repeat(CMDLINE_MAX_SIZE);
    assert!(matches!(
        write_cmdline(&mem, &too_long),
        Err(ArchError::CmdlineTooLong {
            len: 2049,
            max: 2048
        })
    ));
    assert!(matches!(
        write_cmdline(&mem, "a\0b"),
        Err(ArchError::CmdlineNul)
    ));
}
