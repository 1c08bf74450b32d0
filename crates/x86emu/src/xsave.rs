//! `xsave` / `xrstor` (and their REX.W forms) in the XSAVE **standard** format, per SDM vol. 1
//! §13.7/§13.8: requested-feature bitmap `RFBM = XCR0 & EDX:EAX`, the legacy region split into
//! x87 and SSE components (MXCSR travels with SSE or AVX), the header's XSTATE_BV, components at
//! CPUID 0xD offsets. The compacted format (`XCOMP_BV[63] = 1`) is refused (`EmuError`), not
//! approximated.
//!
//! FPU CS/DS: the non-REX.W forms store FCS/FDS as 0, as CPUs that deprecate them do
//! (CPUID.7.0:EBX[13]); the vCPU state does not carry them.

use crate::exec::{fpu_area, mark_sse_in_use, mxcsr_mask, read_linear};
use crate::mmu::translate_range;
use crate::{CpuState, EmuError, Exception, Machine};

/// Legacy region (512) + header (64).
pub(crate) const LEGACY_AND_HEADER: usize = 576;
pub(crate) const HEADER: usize = 512;
const CR0_TS: u64 = 1 << 3;
const CR4_OSXSAVE: u64 = 1 << 18;
/// x87 bytes of the legacy region: FCW..FDP (0..24) and ST0..ST7 (32..160).
const X87_RANGES: [(usize, usize); 2] = [(0, 24), (32, 160)];
/// SSE bytes: XMM0..XMM15.
const SSE_RANGE: (usize, usize) = (160, 416);
/// Largest save area accepted (bounded guest-controlled work).
const MAX_AREA: usize = 64 * 1024;

/// Byte ranges of component `i` in the standard format.
fn component_ranges(m: &mut dyn Machine, i: u32) -> Result<Vec<(usize, usize)>, EmuError> {
    Ok(match i {
        0 => X87_RANGES.to_vec(),
        1 => vec![SSE_RANGE],
        _ => {
            let [size, offset, ecx, _] = m
                .cpuid(0xd, i)
                .ok_or(EmuError::Unsupported("XSAVE component without CPUID 0xD"))?;
            if ecx & 1 != 0 {
                return Err(EmuError::Unsupported("supervisor XSAVE component"));
            }
            let (offset, size) = (offset as usize, size as usize);
            if offset < LEGACY_AND_HEADER || offset + size > MAX_AREA || size == 0 {
                return Err(EmuError::Unsupported("XSAVE component layout"));
            }
            vec![(offset, offset + size)]
        }
    })
}

/// Common checks; returns RFBM or an exception.
fn prologue(
    cpu: &CpuState,
    m: &mut dyn Machine,
    addr: u64,
) -> Result<Result<u64, Exception>, EmuError> {
    if cpu.cr4 & CR4_OSXSAVE == 0 {
        return Ok(Err(Exception::ud()));
    }
    if cpu.cr0 & CR0_TS != 0 {
        return Ok(Err(Exception::nm()));
    }
    if addr & 63 != 0 {
        return Ok(Err(Exception::gp0()));
    }
    let edx_eax = (cpu.gpr[2] << 32) | (cpu.gpr[0] & 0xffff_ffff);
    Ok(Ok(m.xcr0()? & edx_eax))
}

/// Component number and its byte ranges.
type Components = Vec<(u32, Vec<(usize, usize)>)>;

/// Ranges of every component in `rfbm` and the area length they need.
fn layout(m: &mut dyn Machine, rfbm: u64) -> Result<(Components, usize), EmuError> {
    let mut comps = Vec::new();
    let mut len = LEGACY_AND_HEADER;
    for i in 0..63u32 {
        if rfbm & (1 << i) != 0 {
            let r = component_ranges(m, i)?;
            len = len.max(r.iter().map(|x| x.1).max().unwrap_or(0));
            comps.push((i, r));
        }
    }
    Ok((comps, len))
}

/// `xsave [addr]`.
pub(crate) fn xsave(
    cpu: &CpuState,
    m: &mut dyn Machine,
    addr: u64,
    rex_w: bool,
) -> Result<Option<Exception>, EmuError> {
    let rfbm = match prologue(cpu, m, addr)? {
        Ok(r) => r,
        Err(e) => return Ok(Some(e)),
    };
    let (comps, len) = layout(m, rfbm)?;
    let state = fpu_area(m)?;
    if state.len() < len {
        return Err(EmuError::Machine(
            "XSAVE area shorter than CPUID 0xD".to_owned(),
        ));
    }
    // Read-modify-write of the guest area: translate for write (faults first), read it.
    let pieces = match translate_range(cpu, m, addr, len, true)? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let mut image = vec![0u8; len];
    let mut off = 0;
    for &(gpa, n) in &pieces {
        m.read_phys(gpa, &mut image[off..off + n])?;
        off += n;
    }
    let xinuse = u64::from_le_bytes(state[HEADER..HEADER + 8].try_into().unwrap_or([0; 8]));
    for (_, ranges) in &comps {
        for &(a, b) in ranges {
            image[a..b].copy_from_slice(&state[a..b]);
        }
    }
    if rfbm & 1 != 0 && !rex_w {
        // 32-bit FIP/FDP with FCS/FDS (deprecated: 0).
        image[12..16].fill(0);
        image[20..24].fill(0);
    }
    if rfbm & 0b110 != 0 {
        image[24..32].copy_from_slice(&state[24..32]);
    }
    let old_bv = u64::from_le_bytes(image[HEADER..HEADER + 8].try_into().unwrap_or([0; 8]));
    let new_bv = (old_bv & !rfbm) | (xinuse & rfbm);
    image[HEADER..HEADER + 8].copy_from_slice(&new_bv.to_le_bytes());
    let mut off = 0;
    for (gpa, n) in pieces {
        m.write_phys(gpa, &image[off..off + n])?;
        off += n;
    }
    Ok(None)
}

/// `xrstor [addr]` (standard format only).
pub(crate) fn xrstor(
    cpu: &CpuState,
    m: &mut dyn Machine,
    addr: u64,
    rex_w: bool,
) -> Result<Option<Exception>, EmuError> {
    let rfbm = match prologue(cpu, m, addr)? {
        Ok(r) => r,
        Err(e) => return Ok(Some(e)),
    };
    let mut header = [0u8; 64];
    if let Some(e) = read_linear(cpu, m, addr.wrapping_add(HEADER as u64), &mut header)? {
        return Ok(Some(e));
    }
    let xstate_bv = u64::from_le_bytes(header[0..8].try_into().unwrap_or([0; 8]));
    let xcomp_bv = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    if xcomp_bv & (1 << 63) != 0 {
        return Err(EmuError::Unsupported("xrstor from the compacted format"));
    }
    let xcr0 = m.xcr0()?;
    if xstate_bv & !xcr0 != 0 || header[8..24].iter().any(|&b| b != 0) {
        return Ok(Some(Exception::gp0()));
    }
    let (comps, len) = layout(m, rfbm)?;
    let mut image = vec![0u8; len];
    if let Some(e) = read_linear(cpu, m, addr, &mut image)? {
        return Ok(Some(e));
    }
    let mut state = fpu_area(m)?;
    if state.len() < len {
        return Err(EmuError::Machine(
            "XSAVE area shorter than CPUID 0xD".to_owned(),
        ));
    }
    if rfbm & 0b110 != 0 {
        let mxcsr = u32::from_le_bytes(image[24..28].try_into().unwrap_or([0; 4]));
        if mxcsr & !mxcsr_mask(&state) != 0 {
            return Ok(Some(Exception::gp0()));
        }
        state[24..28].copy_from_slice(&image[24..28]);
    }
    for (i, ranges) in &comps {
        let from_memory = xstate_bv & (1 << i) != 0;
        for &(a, b) in ranges {
            if from_memory {
                state[a..b].copy_from_slice(&image[a..b]);
            } else {
                state[a..b].fill(0);
            }
        }
        if *i == 0 {
            if !from_memory {
                state[0..2].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW init
            } else if !rex_w {
                state[12..16].fill(0);
                state[20..24].fill(0);
            }
        }
    }
    let old = u64::from_le_bytes(state[HEADER..HEADER + 8].try_into().unwrap_or([0; 8]));
    let new_bv = (old & !rfbm) | (xstate_bv & rfbm);
    state[HEADER..HEADER + 8].copy_from_slice(&new_bv.to_le_bytes());
    if rfbm & 0b110 != 0 {
        mark_sse_in_use(&mut state);
    }
    m.set_xsave_area(&state)?;
    Ok(None)
}
