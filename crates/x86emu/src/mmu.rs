//! Guest linear → physical translation for the emulator's data accesses (4- and 5-level long
//! mode paging), as the CPU does it for a data access: present/write/user/SMAP checks, `#PF`
//! error codes, accessed and dirty bits set in the walked entries. Pure over [`Machine`].

use crate::{CpuState, EmuError, Exception, Machine};

const PTE_P: u64 = 1 << 0;
const PTE_W: u64 = 1 << 1;
const PTE_U: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
/// Physical-address bits of an entry (bits 12..52).
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;
const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMAP: u64 = 1 << 21;
const RFLAGS_AC: u64 = 1 << 18;
const PF_P: u32 = 1 << 0;
const PF_W: u32 = 1 << 1;
const PF_U: u32 = 1 << 2;
const PF_RSVD: u32 = 1 << 3;

/// `true` when `addr` is canonical for the paging mode (48 or 57 bits).
pub fn canonical(cpu: &CpuState, addr: u64) -> bool {
    let bits = if cpu.cr4 & CR4_LA57 != 0 { 57 } else { 48 };
    let shift = 64 - bits;
    ((addr << shift).cast_signed() >> shift).cast_unsigned() == addr
}

/// Translates one linear address for a data access of the current CPL. Sets accessed (and for a
/// write, dirty) bits like the CPU. Faults are returned as `Ok(Err(#PF))`.
pub fn translate(
    cpu: &CpuState,
    m: &mut dyn Machine,
    linear: u64,
    write: bool,
) -> Result<Result<u64, Exception>, EmuError> {
    if cpu.cr0 & CR0_PG == 0 {
        return Ok(Ok(linear));
    }
    let user = cpu.cpl == 3;
    let levels: u32 = if cpu.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
    let mut table = cpu.cr3 & PTE_ADDR;
    let mut all_user = true;
    let mut all_write = true;
    let mut walked: Vec<(u64, u64)> = Vec::with_capacity(5);
    let pf = |extra: u32| {
        let mut code = extra;
        if write {
            code |= PF_W;
        }
        if user {
            code |= PF_U;
        }
        Exception::page_fault(code, linear)
    };
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let idx = (linear >> shift) & 0x1ff;
        let entry_addr = table + idx * 8;
        let mut buf = [0u8; 8];
        m.read_phys(entry_addr, &mut buf)?;
        let entry = u64::from_le_bytes(buf);
        if entry & PTE_P == 0 {
            return Ok(Err(pf(0)));
        }
        all_user &= entry & PTE_U != 0;
        all_write &= entry & PTE_W != 0;
        walked.push((entry_addr, entry));
        let leaf = level == 1 || (entry & PTE_PS != 0 && level <= 3);
        if entry & PTE_PS != 0 && level > 3 {
            return Ok(Err(pf(PF_P | PF_RSVD)));
        }
        if leaf {
            // Permission checks on the combined rights.
            if user && !all_user {
                return Ok(Err(pf(PF_P)));
            }
            if write && !all_write && (user || cpu.cr0 & CR0_WP != 0) {
                return Ok(Err(pf(PF_P)));
            }
            if !user && all_user && cpu.cr4 & CR4_SMAP != 0 && cpu.rflags & RFLAGS_AC == 0 {
                return Ok(Err(pf(PF_P)));
            }
            let page_mask = (1u64 << shift) - 1;
            let phys = (entry & PTE_ADDR & !page_mask) | (linear & page_mask);
            // Accessed bits on every level, dirty on the leaf for a write.
            let last = walked.len() - 1;
            for (i, (addr, e)) in walked.iter().enumerate() {
                let mut new = *e | PTE_A;
                if write && i == last {
                    new |= PTE_D;
                }
                if new != *e {
                    m.write_phys(*addr, &new.to_le_bytes())?;
                }
            }
            return Ok(Ok(phys));
        }
        table = entry & PTE_ADDR;
    }
    Ok(Err(pf(0)))
}

/// The physical pieces of `[linear, linear + len)`, split at 4 KiB boundaries, or the first
/// fault. Nothing is read or written except page-table A/D bits.
pub fn translate_range(
    cpu: &CpuState,
    m: &mut dyn Machine,
    linear: u64,
    len: usize,
    write: bool,
) -> Result<Result<Vec<(u64, usize)>, Exception>, EmuError> {
    let mut out = Vec::new();
    let mut done = 0usize;
    while done < len {
        let addr = linear.wrapping_add(done as u64);
        if !canonical(cpu, addr) {
            return Ok(Err(Exception::gp0()));
        }
        let in_page = 4096 - (addr & 0xfff) as usize;
        let n = in_page.min(len - done);
        match translate(cpu, m, addr, write)? {
            Ok(phys) => out.push((phys, n)),
            Err(e) => return Ok(Err(e)),
        }
        done += n;
    }
    Ok(Ok(out))
}
