//! Memory files: full layout, sparse diffs, Full + Diff merged == final memory, layouts.
#![allow(clippy::cast_possible_truncation)] // test images are small

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::tempdir;
use squib_snapshot::*;
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

const R0: (u64, usize) = (0, 256 << 10);
const R1: (u64, usize) = (0x10_0000, 512 << 10);

fn guest<B: vm_memory::bitmap::NewBitmap>() -> GuestMemoryMmap<B> {
    let m = GuestMemoryMmap::<B>::from_ranges(&[
        (GuestAddress(R0.0), R0.1),
        (GuestAddress(R1.0), R1.1),
    ])
    .unwrap();
    // A recognisable pattern in every page.
    for (base, size) in [R0, R1] {
        for page in 0..(size as u64 / PAGE_SIZE) {
            let addr = GuestAddress(base + page * PAGE_SIZE);
            m.write_obj(base + page, addr).unwrap();
            m.write_obj(0xA5A5_0000_u32 | page as u32, addr.unchecked_add(100))
                .unwrap();
        }
    }
    m
}

fn image<B: Bitmap>(m: &GuestMemoryMmap<B>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in m.iter() {
        let mut buf = vec![0u8; r.len() as usize];
        m.read_slice(&mut buf, r.start_addr()).unwrap();
        out.extend_from_slice(&buf);
    }
    out
}

#[test]
fn test_should_write_full_file_back_to_back() {
    let d = tempdir();
    let m = guest::<()>();
    let p = d.as_path().join("mem");
    let layout = save_memory_full(&m, &p).unwrap();
    assert_eq!(
        layout.regions,
        vec![
            RegionDesc {
                guest_addr: R0.0,
                size: R0.1 as u64,
                file_offset: 0
            },
            RegionDesc {
                guest_addr: R1.0,
                size: R1.1 as u64,
                file_offset: R0.1 as u64
            },
        ]
    );
    layout.validate().unwrap();
    assert!(layout.matches(&m));
    assert_eq!(fs::read(&p).unwrap(), image(&m));
    assert_eq!(layout.total_size(), (R0.1 + R1.1) as u64);
    assert_eq!(layout.required_file_len(), layout.total_size());
}

#[test]
fn test_should_merge_full_and_diff_into_final_memory_with_dirty_bitmap() {
    let d = tempdir();
    // vm-memory's own dirty tracking decides what a diff holds: the generic-bitmap path the
    // VMM will use.
    let m = guest::<AtomicBitmap>();
    let full = d.as_path().join("full.mem");
    let layout = save_memory_full(&m, &full).unwrap();
    for r in m.iter() {
        r.get_mmap().bitmap().reset();
    }
    // Dirty a few pages: first page, a run across a region boundary, a lone page, last page.
    let writes: [(u64, u64); 5] = [
        (0, 0x1111),
        (R0.1 as u64 - PAGE_SIZE + 8, 0x2222),
        (R1.0, 0x3333),
        (R1.0 + 7 * PAGE_SIZE + 40, 0x4444),
        (R1.0 + R1.1 as u64 - 8, 0x5555),
    ];
    for (addr, v) in writes {
        m.write_obj(v, GuestAddress(addr)).unwrap();
    }
    let regions: Vec<_> = m.iter().collect();
    let is_dirty =
        |ri: usize, page: usize| regions[ri].bitmap().dirty_at(page * PAGE_SIZE as usize);
    let diff = d.as_path().join("diff.mem");
    let saved = save_memory_diff(&m, is_dirty, &diff).unwrap();
    assert_eq!(saved.layout, layout);
    let r1_off = R0.1 as u64;
    assert_eq!(
        saved.dirty,
        vec![
            FileRange {
                offset: 0,
                len: PAGE_SIZE
            },
            // last page of region 0 and first of region 1 are adjacent in the file: coalesced
            FileRange {
                offset: r1_off - PAGE_SIZE,
                len: 2 * PAGE_SIZE
            },
            FileRange {
                offset: r1_off + 7 * PAGE_SIZE,
                len: PAGE_SIZE
            },
            FileRange {
                offset: r1_off + R1.1 as u64 - PAGE_SIZE,
                len: PAGE_SIZE
            },
        ]
    );
    // Length = total memory; clean pages are holes.
    let meta = fs::metadata(&diff).unwrap();
    assert_eq!(meta.len(), layout.total_size());
    assert!(
        meta.blocks() * 512 <= 64 * PAGE_SIZE,
        "diff file is not sparse: {} blocks",
        meta.blocks()
    );
    // Dirty pages hold the final bytes; a clean page reads as zeros.
    let diff_bytes = fs::read(&diff).unwrap();
    let fin = image(&m);
    for r in &saved.dirty {
        let (a, b) = (r.offset as usize, (r.offset + r.len) as usize);
        assert_eq!(diff_bytes[a..b], fin[a..b]);
    }
    assert!(
        diff_bytes[PAGE_SIZE as usize..2 * PAGE_SIZE as usize]
            .iter()
            .all(|&b| b == 0)
    );

    merge_diff_into(&full, &diff, &saved.dirty).unwrap();
    assert_eq!(fs::read(&full).unwrap(), fin);
}

#[test]
fn test_should_write_nothing_but_holes_for_a_clean_diff() {
    let d = tempdir();
    let m = guest::<()>();
    let p = d.as_path().join("diff.mem");
    let saved = save_memory_diff(&m, |_, _| false, &p).unwrap();
    assert!(saved.dirty.is_empty());
    assert_eq!(fs::metadata(&p).unwrap().len(), (R0.1 + R1.1) as u64);
    // All dirty = the full file.
    let all = save_memory_diff(&m, |_, _| true, &p).unwrap();
    assert_eq!(
        all.dirty,
        vec![FileRange {
            offset: 0,
            len: (R0.1 + R1.1) as u64
        }]
    );
    assert_eq!(fs::read(&p).unwrap(), image(&m));
}

#[test]
fn test_should_refuse_out_of_range_merge_and_missing_files() {
    let d = tempdir();
    let m = guest::<()>();
    let base = d.as_path().join("base");
    let diff = d.as_path().join("diff");
    save_memory_full(&m, &base).unwrap();
    save_memory_diff(&m, |_, p| p == 0, &diff).unwrap();
    let e = merge_diff_into(
        &base,
        &diff,
        &[FileRange {
            offset: u64::MAX - 10,
            len: 100,
        }],
    )
    .unwrap_err();
    assert!(
        matches!(e, MemoryFileError::DirtyRangeOutOfFile { .. }),
        "{e}"
    );
    let e = merge_diff_into(d.as_path().join("nope"), &diff, &[]).unwrap_err();
    assert!(e.to_string().contains("No such file or directory"), "{e}");
    let e = save_memory_full(&m, d.as_path()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Cannot perform open on the memory backing file"),
        "{e}"
    );
}

#[test]
fn test_should_validate_layouts() {
    let r = |g, s, f| RegionDesc {
        guest_addr: g,
        size: s,
        file_offset: f,
    };
    let ok = MemoryLayout {
        regions: vec![r(0, 0x1000, 0), r(0x10_0000, 0x2000, 0x1000)],
    };
    ok.validate().unwrap();
    assert_eq!(
        ok.restore_ranges(),
        vec![
            (GuestAddress(0), 0x1000, 0),
            (GuestAddress(0x10_0000), 0x2000, 0x1000)
        ]
    );
    let bad = [
        MemoryLayout::default(),
        MemoryLayout {
            regions: vec![r(0, 0, 0)],
        },
        MemoryLayout {
            regions: vec![r(1, 0x1000, 0)],
        },
        MemoryLayout {
            regions: vec![r(0, 0x1001, 0)],
        },
        MemoryLayout {
            regions: vec![r(!0xfff, 0x2000, 0)],
        },
        MemoryLayout {
            regions: vec![r(0, 0x1000, !0xfff)],
        },
        MemoryLayout {
            regions: vec![r(0, 0x2000, 0), r(0x1000, 0x1000, 0x2000)],
        },
        MemoryLayout {
            regions: vec![r(0, 0x2000, 0), r(0x10000, 0x1000, 0x1000)],
        },
        MemoryLayout {
            regions: vec![r(0, 0x1000, 0x7fff_ffff_ffff_f000)],
        },
        MemoryLayout {
            regions: vec![r(0, 0x1000, 0); MAX_REGIONS + 1],
        },
    ];
    for (i, l) in bad.iter().enumerate() {
        let e = l.validate().unwrap_err();
        assert!(
            e.to_string().starts_with("Invalid memory layout: "),
            "case {i}: {e}"
        );
    }
}

#[test]
fn test_should_carry_layout_in_state_file() {
    let d = tempdir();
    let m = guest::<()>();
    let layout = save_memory_full(&m, d.as_path().join("mem")).unwrap();
    let p = d.as_path().join("vm.state");
    save_state(&p, &layout).unwrap();
    assert_eq!(load_state::<MemoryLayout>(&p).unwrap(), layout);
}
