//! Restore cost does not grow with guest size: mapping a 1 GiB memory file (sparse) through the
//! File backend, or handing 1 GiB to the Uffd backend, leaves RSS flat until pages are touched.
//! Its own test binary, so no other test's allocations move this process's RSS.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;

use squib_sys::snapshot_memory::{memory_from_file, memory_from_uffd};
use squib_sys::uffd_handler;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

const GIB: u64 = 1 << 30;
const PAGE: u64 = 4096;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let resident: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    resident * PAGE
}

/// A sparse 1 GiB file with a marker in every 1024th page.
fn sparse_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("mem");
    let f = File::create(&p).unwrap();
    f.set_len(GIB).unwrap();
    for i in 0..256u64 {
        let off = i * 1024 * PAGE;
        f.write_all_at(&(off | 0xabc).to_le_bytes(), off).unwrap();
    }
    p
}

fn regions() -> Vec<(GuestAddress, usize, u64)> {
    // 768 MiB below the 32-bit gap, 256 MiB above 4 GiB: squib's two-region shape.
    vec![
        (GuestAddress(0), (768 << 20) as usize, 0),
        (GuestAddress(4 * GIB), (256 << 20) as usize, 768 << 20),
    ]
}

fn guest_addr(file_off: u64) -> GuestAddress {
    if file_off < 768 << 20 {
        GuestAddress(file_off)
    } else {
        GuestAddress(4 * GIB + file_off - (768 << 20))
    }
}

#[test]
fn test_should_not_grow_rss_with_guest_size_until_touched() {
    let d = TempDir::new_with_prefix("/tmp/squib-sys-rss-").unwrap();
    let p = sparse_file(d.as_path());

    // File backend.
    let before = rss_bytes();
    let mem = memory_from_file::<()>(&p, &regions()).unwrap();
    let mapped = rss_bytes();
    assert!(
        mapped - before.min(mapped) < 8 << 20,
        "mapping 1 GiB grew RSS by {} bytes",
        mapped - before
    );
    for i in 0..256u64 {
        let off = i * 1024 * PAGE;
        assert_eq!(mem.read_obj::<u64>(guest_addr(off)).unwrap(), off | 0xabc);
    }
    let touched = rss_bytes();
    assert!(
        touched - before.min(touched) < 16 << 20,
        "touching 256 pages grew RSS by {} bytes",
        touched - before
    );
    drop(mem);

    // Uffd backend: 1 GiB of anonymous memory, served page by page.
    let sock = d.as_path().join("uffd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let file = File::open(&p).unwrap();
    let handler = std::thread::spawn(move || uffd_handler::serve(&listener, &file));
    let before = rss_bytes();
    let (mem, handle) = memory_from_uffd::<()>(&sock, &regions()).unwrap();
    let mapped = rss_bytes();
    assert!(
        mapped - before.min(mapped) < 8 << 20,
        "uffd restore grew RSS by {} bytes",
        mapped - before
    );
    for i in (0..256u64).step_by(3) {
        let off = i * 1024 * PAGE;
        assert_eq!(mem.read_obj::<u64>(guest_addr(off)).unwrap(), off | 0xabc);
    }
    let touched = rss_bytes();
    assert!(
        touched - before.min(touched) < 16 << 20,
        "uffd: touching pages grew RSS by {} bytes",
        touched - before
    );
    drop(handle);
    let stats = handler.join().unwrap().unwrap();
    assert_eq!(stats.pages_served, 86);
}
