//! Restore backends: File (private lazy mapping) and Uffd (Firecracker's handshake, served by
//! the in-tree page-fault handler on a thread).
#![cfg(target_os = "linux")]

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use squib_sys::snapshot_memory::{
    GuestRegionUffdMapping, HOST_PAGE_SIZE, RestoreMemoryError, memory_from_file, memory_from_uffd,
};
use squib_sys::uffd_handler;
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use vmm_sys_util::tempdir::TempDir;

const PAGE: u64 = HOST_PAGE_SIZE as u64;

/// Two regions: 64 pages at guest 0 (file offset 0), 32 pages at guest 1 MiB (file offset 64
/// pages), as a full memory file lays them out.
fn regions() -> Vec<(GuestAddress, usize, u64)> {
    vec![
        (GuestAddress(0), 64 * HOST_PAGE_SIZE, 0),
        (GuestAddress(0x10_0000), 32 * HOST_PAGE_SIZE, 64 * PAGE),
    ]
}

/// The byte expected at file offset `off`.
fn pattern(off: u64) -> u8 {
    (off / PAGE * 31 + off % 251).to_le_bytes()[0]
}

fn memory_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("mem");
    let mut f = File::create(&p).unwrap();
    let bytes: Vec<u8> = (0..96 * PAGE).map(pattern).collect();
    f.write_all(&bytes).unwrap();
    p
}

fn tmp() -> TempDir {
    TempDir::new_with_prefix("/tmp/squib-sys-snapmem-").unwrap()
}

/// Reads guest bytes at a few places in every page and checks them against the file pattern.
fn check_pages<M: Bytes<GuestAddress>>(mem: &M, pages: impl Iterator<Item = (u64, u64)>)
where
    M::E: std::fmt::Debug,
{
    for (guest, file_off) in pages {
        for delta in [0, 1, 100, PAGE - 1] {
            let b: u8 = mem.read_obj(GuestAddress(guest + delta)).unwrap();
            assert_eq!(b, pattern(file_off + delta), "guest {:#x}", guest + delta);
        }
    }
}

fn all_pages() -> impl Iterator<Item = (u64, u64)> {
    (0..64)
        .map(|p| (p * PAGE, p * PAGE))
        .chain((0..32).map(|p| (0x10_0000 + p * PAGE, (64 + p) * PAGE)))
}

#[test]
fn test_should_map_memory_file_privately() {
    let d = tmp();
    let p = memory_file(d.as_path());
    let mem = memory_from_file::<AtomicBitmap>(&p, &regions()).unwrap();
    assert_eq!(mem.num_regions(), 2);
    check_pages(&mem, all_pages());
    // Guest writes stay private: the file is unchanged, and they are tracked as dirty.
    mem.write_obj(0xdead_beef_u32, GuestAddress(0x10_0000))
        .unwrap();
    let mut buf = [0u8; 4];
    File::open(&p)
        .unwrap()
        .read_exact_at(&mut buf, 64 * PAGE)
        .unwrap();
    assert_eq!(
        buf,
        [
            pattern(64 * PAGE),
            pattern(64 * PAGE + 1),
            pattern(64 * PAGE + 2),
            pattern(64 * PAGE + 3)
        ]
    );
    let r1 = mem.iter().nth(1).unwrap();
    assert!(r1.bitmap().dirty_at(0));
    assert!(!r1.bitmap().dirty_at(HOST_PAGE_SIZE));
}

#[test]
fn test_should_refuse_short_missing_and_directory_files() {
    let d = tmp();
    let p = memory_file(d.as_path());
    let mut too_big = regions();
    too_big[1].1 += HOST_PAGE_SIZE;
    let e = memory_from_file::<()>(&p, &too_big).unwrap_err();
    assert!(matches!(e, RestoreMemoryError::OffsetTooLarge));
    assert_eq!(
        e.to_string(),
        "Failed to restore guest memory: Total sum of memory regions exceeds largest possible file offset"
    );
    let e = memory_from_file::<()>(&d.as_path().join("nope"), &regions()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Failed to load guest memory: No such file or directory (os error 2)"
    );
    let e = memory_from_file::<()>(d.as_path(), &regions()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Failed to load guest memory: Is a directory (os error 21)"
    );
    assert!(matches!(
        memory_from_file::<()>(&p, &[]),
        Err(RestoreMemoryError::ZeroSize)
    ));
    let overlapping = vec![
        (GuestAddress(0), 2 * HOST_PAGE_SIZE, 0),
        (GuestAddress(PAGE), HOST_PAGE_SIZE, 0),
    ];
    assert!(matches!(
        memory_from_file::<()>(&p, &overlapping),
        Err(RestoreMemoryError::GuestMemory)
    ));
    let overflow = vec![(GuestAddress(0), HOST_PAGE_SIZE, u64::MAX - 10)];
    assert!(matches!(
        memory_from_file::<()>(&p, &overflow),
        Err(RestoreMemoryError::OffsetTooLarge)
    ));
}

#[test]
fn test_should_restore_through_uffd_with_firecracker_handshake() {
    let d = tmp();
    let p = memory_file(d.as_path());
    let sock = d.as_path().join("uffd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let file = File::open(&p).unwrap();
    let handler = std::thread::spawn(move || uffd_handler::serve(&listener, &file));

    let (mem, handle) = memory_from_uffd::<()>(&sock, &regions()).unwrap();
    // Touch half the pages (reads and a write), verify contents.
    let touched: Vec<_> = all_pages().step_by(2).collect();
    check_pages(&mem, touched.iter().copied());
    mem.write_obj(7u8, GuestAddress(0x10_0000 + 3 * PAGE))
        .unwrap();
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x10_0000 + 3 * PAGE))
            .unwrap(),
        7
    );
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x10_0000 + 3 * PAGE + 1))
            .unwrap(),
        pattern(67 * PAGE + 1)
    );

    let sent = handle.mappings().to_vec();
    drop(handle); // hang-up ends the handler
    let stats = handler.join().unwrap().unwrap();
    assert_eq!(stats.mappings, sent);
    assert_eq!(stats.pages_served, touched.len() as u64 + 1);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].offset, 64 * PAGE);
    assert_eq!(sent[1].size, 32 * HOST_PAGE_SIZE);
    assert_eq!(sent[0].page_size, 4096);
    assert_eq!(sent[0].page_size_kib, 4096);
    let r0 = mem.iter().next().unwrap();
    assert_eq!(sent[0].base_host_virt_addr, r0.as_ptr() as u64);
}

#[test]
fn test_should_send_layout_json_exactly_as_firecracker() {
    let d = tmp();
    let sock = d.as_path().join("uffd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (mem, handle) = memory_from_uffd::<()>(&sock, &regions()).unwrap();
    let (stream, _): (UnixStream, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 1024]; // Firecracker's example handlers read at most 1024 bytes
    let (n, fd) = stream.recv_with_fd(&mut buf).unwrap();
    assert!(fd.is_some(), "the uffd must travel with the layout");
    let body = std::str::from_utf8(&buf[..n]).unwrap();
    let bases: Vec<u64> = mem.iter().map(|r| r.as_ptr() as u64).collect();
    let expected = format!(
        "[{{\"base_host_virt_addr\":{},\"size\":262144,\"offset\":0,\"page_size\":4096,\"page_size_kib\":4096}},\
         {{\"base_host_virt_addr\":{},\"size\":131072,\"offset\":262144,\"page_size\":4096,\"page_size_kib\":4096}}]",
        bases[0], bases[1]
    );
    assert_eq!(body, expected);
    let parsed: Vec<GuestRegionUffdMapping> = serde_json::from_str(body).unwrap();
    assert_eq!(parsed, handle.mappings());
    drop(handle);
}

#[test]
fn test_should_report_missing_handler_socket() {
    let d = tmp();
    let e = memory_from_uffd::<()>(&d.as_path().join("nobody.sock"), &regions()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Failed to connect to UDS Unix stream: No such file or directory (os error 2)"
    );
    let _ = fs::remove_dir_all(d.as_path());
}

#[test]
fn test_should_handle_remove_events_like_firecracker_handlers() {
    let d = tmp();
    let p = memory_file(d.as_path());
    let sock = d.as_path().join("uffd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let file = File::open(&p).unwrap();
    let handler = std::thread::spawn(move || uffd_handler::serve(&listener, &file));
    let (mem, handle) = memory_from_uffd::<()>(&sock, &regions()).unwrap();
    check_pages(&mem, std::iter::once((5 * PAGE, 5 * PAGE)));
    // The guest gives page 5 back (what a balloon does): MADV_DONTNEED raises a remove event.
    let r0 = mem.iter().next().unwrap();
    let host = r0
        .get_host_address(vm_memory::MemoryRegionAddress(5 * PAGE))
        .unwrap();
    // SAFETY: `host` is the page-aligned start of page 5 of a guest-memory mapping this test
    // owns; dropping that page's contents affects only guest memory, which Rust code reaches
    // only through volatile accessors.
    let rc = unsafe { libc::madvise(host.cast(), HOST_PAGE_SIZE, libc::MADV_DONTNEED) };
    assert_eq!(rc, 0);
    // The handler unregistered the range: the page now reads as zeros from the kernel.
    assert_eq!(mem.read_obj::<u64>(GuestAddress(5 * PAGE)).unwrap(), 0);
    drop(handle);
    let stats = handler.join().unwrap().unwrap();
    assert_eq!(stats.removes, 1);
    assert_eq!(stats.pages_served, 1);
}

/// hugetlbfs restores: `File` is refused with Firecracker's text before the file is opened;
/// `Uffd` maps 2 MiB pages and the handshake says so (Firecracker sends `page_size` and
/// `page_size_kib` = 2097152). Nothing is touched, so no page of the host pool is needed.
#[test]
fn test_hugetlbfs_restore_needs_uffd_and_advertises_2m_pages() {
    use squib_sys::memory_backing::{HUGE_PAGE_SIZE_2M, PageBacking};
    use squib_sys::snapshot_memory::{memory_from_file_backed, memory_from_uffd_backed};

    let huge = vec![
        (GuestAddress(0), 2 * HUGE_PAGE_SIZE_2M, 0),
        (
            GuestAddress(1 << 32),
            HUGE_PAGE_SIZE_2M,
            2 * HUGE_PAGE_SIZE_2M as u64,
        ),
    ];
    let e = memory_from_file_backed::<()>(Path::new("/nonexistent"), &huge, PageBacking::Hugetlb2M)
        .unwrap_err();
    assert!(matches!(e, RestoreMemoryError::HugetlbfsFile), "{e}");
    assert_eq!(
        e.to_string(),
        "Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd."
    );

    let d = tmp();
    let sock = d.as_path().join("uffd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (mem, handle) = match memory_from_uffd_backed::<()>(&sock, &huge, PageBacking::Hugetlb2M) {
        Ok(r) => r,
        Err(RestoreMemoryError::Backing(e)) => {
            println!("SKIPPED: this host cannot map 2 MiB hugetlb pages ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (stream, _): (UnixStream, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 1024];
    let (n, fd) = stream.recv_with_fd(&mut buf).unwrap();
    assert!(fd.is_some());
    let sent: Vec<GuestRegionUffdMapping> = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(sent, handle.mappings());
    assert_eq!(sent.len(), 2);
    for (m, r) in sent.iter().zip(mem.iter()) {
        assert_eq!((m.page_size, m.page_size_kib), (2 << 20, 2 << 20));
        assert_eq!(m.base_host_virt_addr % (2 << 20), 0);
        assert_eq!(r.is_hugetlbfs(), Some(true));
    }
    assert_eq!(sent[1].offset, 2 * HUGE_PAGE_SIZE_2M as u64);
    // A layout that is not made of whole 2 MiB pages is refused before any mapping.
    let odd = vec![(GuestAddress(0), 3 << 20, 0)];
    assert!(matches!(
        memory_from_uffd_backed::<()>(&sock, &odd, PageBacking::Hugetlb2M),
        Err(RestoreMemoryError::Backing(_))
    ));
    drop(handle);
}
