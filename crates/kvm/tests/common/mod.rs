//! Shared helpers for the real-KVM tests.

#![allow(dead_code)]

pub mod vmm;

use std::path::{Path, PathBuf};

use squib_core::GuestMemoryMmap;
use squib_hv::{Vcpu, VcpuIo};
use squib_kvm::KvmHypervisor;
use vm_memory::{Bytes, GuestAddress};

/// Opens KVM, or prints the skip line and returns `None` when the host has no `/dev/kvm`.
pub fn hypervisor_or_skip() -> Option<KvmHypervisor> {
    if !Path::new("/dev/kvm").exists() {
        println!("SKIPPED: no /dev/kvm");
        return None;
    }
    Some(KvmHypervisor::new().expect("open /dev/kvm"))
}

/// The directory with the test guest (`SQUIB_GUEST_DIR`, else `shared/guest` next to the
/// checkout, else `/work/shared/guest`).
pub fn guest_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SQUIB_GUEST_DIR") {
        return PathBuf::from(dir);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/guest");
    if beside.join("vmlinux").exists() {
        return beside;
    }
    PathBuf::from("/work/shared/guest")
}

/// Guest memory `[0, size)` with `code` at `code_addr`.
pub fn memory_with_code(size: usize, code_addr: u64, code: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap();
    mem.write_slice(code, GuestAddress(code_addr)).unwrap();
    mem
}

/// Puts an x86 vCPU into real mode at `0:rip` with `rax`.
pub fn real_mode(vcpu: &mut dyn Vcpu, rip: u64, rax: u64) {
    let x86 = vcpu.as_x86().expect("x86 vCPU");
    let mut sregs = x86.sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    x86.set_sregs(&sregs).unwrap();
    let mut regs = x86.regs().unwrap();
    regs.rip = rip;
    regs.rax = rax;
    regs.rflags = 2;
    x86.set_regs(&regs).unwrap();
}

/// A `VcpuIo` that records accesses and answers reads with fixed values.
#[derive(Debug, Default)]
pub struct RecordingIo {
    pub pio_writes: Vec<(u16, Vec<u8>)>,
    pub pio_reads: Vec<u16>,
    pub mmio_writes: Vec<(u64, Vec<u8>)>,
    pub mmio_reads: Vec<u64>,
    /// Little-endian value answered to every port read.
    pub pio_value: u64,
    /// Little-endian value answered to every MMIO read.
    pub mmio_value: u64,
    /// Set when the guest writes 0xFE to port 0x64 (i8042 reset).
    pub reset: bool,
}

impl VcpuIo for RecordingIo {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        self.pio_reads.push(port);
        let v = self.pio_value.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        if port == 0x64 && data == [0xfe] {
            self.reset = true;
        }
        self.pio_writes.push((port, data.to_vec()));
    }
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        self.mmio_reads.push(addr);
        let v = self.mmio_value.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
    }
    fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        self.mmio_writes.push((addr, data.to_vec()));
    }
}
