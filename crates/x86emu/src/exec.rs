//! Effects of the emulated instructions (`fwait`, `clac`, `stac`, `popcnt`, `ldmxcsr`,
//! `stmxcsr`; `xsave`/`xrstor` in [`crate::xsave`]), following the SDM's operation and
//! exception sections. All checks (privilege, control-register state, operand translation)
//! happen before any effect, so a fault leaves the vCPU and memory untouched.

use crate::decode::{MemOperand, Op, Operand, Seg, decode};
use crate::mmu::translate_range;
use crate::{CpuState, EmuError, Exception, Machine, Outcome, xsave};

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const RFLAGS_AC: u64 = 1 << 18;
/// CF, PF, AF, ZF, SF, OF.
const RFLAGS_ARITH: u64 = 0x8d5;
const RFLAGS_ZF: u64 = 1 << 6;
/// FSW error-summary bit.
const FSW_ES: u16 = 1 << 7;
/// MXCSR_MASK to assume when the saved one is 0 (SDM 10.5.1.2).
const DEFAULT_MXCSR_MASK: u32 = 0xffbf;

/// Decodes and emulates the instruction at `cpu.rip` whose bytes are `bytes` (as fetched by
/// the hypervisor; may run past the instruction).
pub fn emulate(cpu: &mut CpuState, m: &mut dyn Machine, bytes: &[u8]) -> Result<Outcome, EmuError> {
    if !cpu.long64 {
        return Err(EmuError::Unsupported("code outside 64-bit mode"));
    }
    let insn = decode(bytes)?;
    let op = insn.op;
    if insn.lock {
        return Ok(Outcome::Fault(op, Exception::ud()));
    }
    let next_rip = cpu.rip.wrapping_add(u64::from(insn.len));
    let fault = match op {
        Op::Fwait => fwait(cpu, m)?,
        Op::Clac | Op::Stac => {
            if cpu.cpl != 0 {
                Some(Exception::ud())
            } else {
                if op == Op::Stac {
                    cpu.rflags |= RFLAGS_AC;
                } else {
                    cpu.rflags &= !RFLAGS_AC;
                }
                None
            }
        }
        Op::Popcnt { dst, src, size } => popcnt(cpu, m, dst, src, size, next_rip)?,
        Op::Ldmxcsr(mem) | Op::Stmxcsr(mem) => mxcsr(cpu, m, op, &mem, next_rip)?,
        Op::Xsave { mem, rex_w } => {
            let addr = effective_address(cpu, &mem, next_rip);
            xsave::xsave(cpu, m, addr, rex_w)?
        }
        Op::Xrstor { mem, rex_w } => {
            let addr = effective_address(cpu, &mem, next_rip);
            xsave::xrstor(cpu, m, addr, rex_w)?
        }
    };
    if let Some(e) = fault {
        return Ok(Outcome::Fault(op, e));
    }
    cpu.rip = next_rip;
    Ok(Outcome::Retired(op))
}

/// Linear address of a memory operand.
pub(crate) fn effective_address(cpu: &CpuState, mem: &MemOperand, next_rip: u64) -> u64 {
    let mut ea = mem.disp.cast_unsigned();
    if mem.rip_relative {
        ea = ea.wrapping_add(next_rip);
    }
    if let Some(b) = mem.base {
        ea = ea.wrapping_add(cpu.gpr[usize::from(b & 15)]);
    }
    if let Some((i, scale)) = mem.index {
        ea = ea.wrapping_add(cpu.gpr[usize::from(i & 15)].wrapping_mul(u64::from(scale)));
    }
    if mem.addr32 {
        ea &= 0xffff_ffff;
    }
    match mem.seg {
        Seg::Flat => ea,
        Seg::Fs => ea.wrapping_add(cpu.fs_base),
        Seg::Gs => ea.wrapping_add(cpu.gs_base),
    }
}

/// Reads `buf.len()` bytes at linear `addr` (translation first; faults returned).
pub(crate) fn read_linear(
    cpu: &CpuState,
    m: &mut dyn Machine,
    addr: u64,
    buf: &mut [u8],
) -> Result<Option<Exception>, EmuError> {
    let pieces = match translate_range(cpu, m, addr, buf.len(), false)? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let mut off = 0;
    for (gpa, n) in pieces {
        m.read_phys(gpa, &mut buf[off..off + n])?;
        off += n;
    }
    Ok(None)
}

fn fwait(cpu: &CpuState, m: &mut dyn Machine) -> Result<Option<Exception>, EmuError> {
    if cpu.cr0 & CR0_MP != 0 && cpu.cr0 & CR0_TS != 0 {
        return Ok(Some(Exception::nm()));
    }
    let area = fpu_area(m)?;
    let fsw = u16::from_le_bytes([area[2], area[3]]);
    if fsw & FSW_ES == 0 {
        return Ok(None);
    }
    if cpu.cr0 & CR0_NE == 0 {
        // Legacy FERR#/IGNNE# reporting through the PIC is not modelled.
        return Err(EmuError::Unsupported(
            "fwait with a pending x87 exception and CR0.NE=0",
        ));
    }
    Ok(Some(Exception::mf()))
}

fn popcnt(
    cpu: &mut CpuState,
    m: &mut dyn Machine,
    dst: u8,
    src: Operand,
    size: u8,
    next_rip: u64,
) -> Result<Option<Exception>, EmuError> {
    let mask = match size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let value = match src {
        Operand::Reg(r) => cpu.gpr[usize::from(r & 15)],
        Operand::Mem(mem) => {
            let addr = effective_address(cpu, &mem, next_rip);
            let mut buf = [0u8; 8];
            if let Some(e) = read_linear(cpu, m, addr, &mut buf[..usize::from(size)])? {
                return Ok(Some(e));
            }
            u64::from_le_bytes(buf)
        }
    } & mask;
    let count = u64::from(value.count_ones());
    let d = &mut cpu.gpr[usize::from(dst & 15)];
    *d = match size {
        2 => (*d & !0xffff) | count,
        _ => count, // 32-bit writes zero-extend
    };
    cpu.rflags &= !RFLAGS_ARITH;
    if value == 0 {
        cpu.rflags |= RFLAGS_ZF;
    }
    Ok(None)
}

fn mxcsr(
    cpu: &CpuState,
    m: &mut dyn Machine,
    op: Op,
    mem: &MemOperand,
    next_rip: u64,
) -> Result<Option<Exception>, EmuError> {
    if cpu.cr0 & CR0_EM != 0 || cpu.cr4 & CR4_OSFXSR == 0 {
        return Ok(Some(Exception::ud()));
    }
    if cpu.cr0 & CR0_TS != 0 {
        return Ok(Some(Exception::nm()));
    }
    let addr = effective_address(cpu, mem, next_rip);
    let mut area = fpu_area(m)?;
    if op == Op::Stmxcsr(*mem) {
        let pieces = match translate_range(cpu, m, addr, 4, true)? {
            Ok(p) => p,
            Err(e) => return Ok(Some(e)),
        };
        let value = [area[24], area[25], area[26], area[27]];
        let mut off = 0;
        for (gpa, n) in pieces {
            m.write_phys(gpa, &value[off..off + n])?;
            off += n;
        }
        return Ok(None);
    }
    let mut buf = [0u8; 4];
    if let Some(e) = read_linear(cpu, m, addr, &mut buf)? {
        return Ok(Some(e));
    }
    let value = u32::from_le_bytes(buf);
    if value & !mxcsr_mask(&area) != 0 {
        return Ok(Some(Exception::gp0()));
    }
    area[24..28].copy_from_slice(&buf);
    mark_sse_in_use(&mut area);
    m.set_xsave_area(&area)?;
    Ok(None)
}

/// The MXCSR_MASK saved in a legacy region (default when zero).
pub(crate) fn mxcsr_mask(area: &[u8]) -> u32 {
    match u32::from_le_bytes([area[28], area[29], area[30], area[31]]) {
        0 => DEFAULT_MXCSR_MASK,
        mask => mask,
    }
}

/// The vCPU's XSAVE-format state, checked to hold at least the legacy region and the header.
pub(crate) fn fpu_area(m: &mut dyn Machine) -> Result<Vec<u8>, EmuError> {
    let area = m.xsave_area()?;
    if area.len() < xsave::LEGACY_AND_HEADER {
        return Err(EmuError::Machine(format!(
            "XSAVE area of {} bytes",
            area.len()
        )));
    }
    Ok(area)
}

/// Sets XSTATE_BV[1] (SSE) in the header of an XSAVE-format state whose MXCSR was written.
/// Hypervisors load MXCSR from such a buffer only when x87/SSE/AVX state is marked in use
/// (Linux's `copy_uabi_to_xstate`); with the bit clear the new MXCSR would be dropped. Marking
/// SSE in use with the XMM registers as they are (zeros when they were in their init state) is
/// architecturally the same state.
pub(crate) fn mark_sse_in_use(area: &mut [u8]) {
    area[xsave::HEADER] |= 0b10;
}
