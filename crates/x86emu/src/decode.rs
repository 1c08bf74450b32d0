//! Instruction decoder for the emulated subset (64-bit mode only).
//!
//! Owns: prefixes (legacy + REX), opcode recognition for `fwait`, `clac`, `stac`, `popcnt`,
//! `ldmxcsr`, `stmxcsr`, `xsave`, `xrstor`, ModRM/SIB/displacement decoding with RIP-relative
//! addressing. Anything else is [`DecodeError::Unsupported`]. Pure functions over a byte slice;
//! never panics on any input (property-tested).

use thiserror::Error;

/// Longest legal x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// Segment override prefixes that matter in 64-bit mode (FS/GS have a base; the others not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// No override, or ES/CS/SS/DS (base 0 in 64-bit mode).
    Flat,
    /// FS override (0x64).
    Fs,
    /// GS override (0x65).
    Gs,
}

/// A decoded memory operand: `base + index * scale + disp` (+ RIP of the next instruction when
/// `rip_relative`), optionally truncated to 32 bits (`addr32`, prefix 0x67).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemOperand {
    /// Base register number (0 = RAX .. 15 = R15).
    pub base: Option<u8>,
    /// Index register number and scale (1, 2, 4, 8).
    pub index: Option<(u8, u8)>,
    /// Sign-extended displacement.
    pub disp: i64,
    /// RIP-relative (`[rip + disp32]`).
    pub rip_relative: bool,
    /// Address-size override: effective address computed in 32 bits.
    pub addr32: bool,
    /// Segment override.
    pub seg: Seg,
}

/// A ModRM r/m operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// A general register (number 0..=15).
    Reg(u8),
    /// Memory.
    Mem(MemOperand),
}

/// The emulated operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `fwait` / `wait` (9B).
    Fwait,
    /// `clac` (0F 01 CA).
    Clac,
    /// `stac` (0F 01 CB).
    Stac,
    /// `popcnt r, r/m` (F3 [REX] 0F B8 /r), operand size 2, 4 or 8 bytes.
    Popcnt {
        /// Destination register.
        dst: u8,
        /// Source.
        src: Operand,
        /// Operand size in bytes.
        size: u8,
    },
    /// `ldmxcsr m32` (0F AE /2).
    Ldmxcsr(MemOperand),
    /// `stmxcsr m32` (0F AE /3).
    Stmxcsr(MemOperand),
    /// `xsave mem` (0F AE /4); `rex_w` = `xsave64`.
    Xsave {
        /// Save area.
        mem: MemOperand,
        /// REX.W (64-bit FPU IP/DP format).
        rex_w: bool,
    },
    /// `xrstor mem` (0F AE /5); `rex_w` = `xrstor64`.
    Xrstor {
        /// Save area.
        mem: MemOperand,
        /// REX.W (64-bit FPU IP/DP format).
        rex_w: bool,
    },
}

impl Op {
    /// The memory operand of `ldmxcsr`/`stmxcsr`/`xsave`/`xrstor` (tests, logs).
    pub fn mem(&self) -> MemOperand {
        match self {
            Op::Ldmxcsr(m)
            | Op::Stmxcsr(m)
            | Op::Xsave { mem: m, .. }
            | Op::Xrstor { mem: m, .. } => *m,
            _ => MemOperand {
                base: None,
                index: None,
                disp: 0,
                rip_relative: false,
                addr32: false,
                seg: Seg::Flat,
            },
        }
    }

    /// Mnemonic, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Fwait => "fwait",
            Op::Clac => "clac",
            Op::Stac => "stac",
            Op::Popcnt { .. } => "popcnt",
            Op::Ldmxcsr(_) => "ldmxcsr",
            Op::Stmxcsr(_) => "stmxcsr",
            Op::Xsave { .. } => "xsave",
            Op::Xrstor { .. } => "xrstor",
        }
    }
}

/// A decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// What it does.
    pub op: Op,
    /// Its length in bytes (RIP advances by this much).
    pub len: u8,
    /// A LOCK prefix was present (always `#UD` for the emulated subset).
    pub lock: bool,
}

/// Why bytes were not decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    #[error("truncated instruction")]
    Truncated,
    /// More than 15 bytes.
    #[error("instruction longer than 15 bytes")]
    TooLong,
    /// An instruction outside the emulated subset (or a form of it that is not emulated).
    #[error("instruction not emulated: {0}")]
    Unsupported(String),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
    fn imm_le(&mut self, n: usize) -> Result<i64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * i);
        }
        // Sign-extend from n bytes (n is 1 or 4 here).
        let shift = 64 - 8 * u32::try_from(n).unwrap_or(8);
        Ok((v << shift).cast_signed() >> shift)
    }
}

#[derive(Default)]
struct Prefixes {
    opsize: bool,
    addr32: bool,
    rep: bool,
    repne: bool,
    lock: bool,
    seg: Option<Seg>,
    rex: u8,
}

/// Decodes one instruction at the start of `bytes` (64-bit mode).
pub fn decode(bytes: &[u8]) -> Result<Insn, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut p = Prefixes::default();
    let opcode = loop {
        let b = c.next()?;
        match b {
            0x66 => p.opsize = true,
            0x67 => p.addr32 = true,
            0xf3 => p.rep = true,
            0xf2 => p.repne = true,
            0xf0 => p.lock = true,
            0x26 | 0x2e | 0x36 | 0x3e => p.seg = Some(Seg::Flat),
            0x64 => p.seg = Some(Seg::Fs),
            0x65 => p.seg = Some(Seg::Gs),
            0x40..=0x4f => {
                // REX counts only immediately before the opcode.
                p.rex = b;
                let next = c.peek().ok_or(DecodeError::Truncated)?;
                if (0x40..=0x4f).contains(&next) || is_legacy_prefix(next) {
                    p.rex = 0;
                    continue;
                }
                break c.next()?;
            }
            _ => break b,
        }
    };
    let rex_w = p.rex & 0x8 != 0;
    let op = match opcode {
        0x9b => Op::Fwait,
        0x0f => {
            let op2 = c.next()?;
            match op2 {
                0x01 => match c.next()? {
                    0xca if !p.rep && !p.repne && !p.opsize => Op::Clac,
                    0xcb if !p.rep && !p.repne && !p.opsize => Op::Stac,
                    other => return Err(unsupported(&format!("0f 01 {other:02x}"))),
                },
                0xb8 if p.rep && !p.repne => {
                    let (reg, rm) = modrm(&mut c, &p)?;
                    let size = if rex_w {
                        8
                    } else if p.opsize {
                        2
                    } else {
                        4
                    };
                    Op::Popcnt {
                        dst: reg,
                        src: rm,
                        size,
                    }
                }
                0xae if !p.rep && !p.repne && !p.opsize => {
                    let (reg, rm) = modrm(&mut c, &p)?;
                    let Operand::Mem(mem) = rm else {
                        return Err(unsupported("0f ae with a register operand"));
                    };
                    match reg & 7 {
                        2 => Op::Ldmxcsr(mem),
                        3 => Op::Stmxcsr(mem),
                        4 => Op::Xsave { mem, rex_w },
                        5 => Op::Xrstor { mem, rex_w },
                        r => return Err(unsupported(&format!("0f ae /{r}"))),
                    }
                }
                other => return Err(unsupported(&format!("0f {other:02x}"))),
            }
        }
        other => return Err(unsupported(&format!("{other:02x}"))),
    };
    Ok(Insn {
        op,
        len: u8::try_from(c.pos).map_err(|_| DecodeError::TooLong)?,
        lock: p.lock,
    })
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xf3 | 0xf2 | 0xf0 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65
    )
}

fn unsupported(what: &str) -> DecodeError {
    DecodeError::Unsupported(what.to_owned())
}

/// Decodes ModRM (+ SIB + displacement): returns (reg field with REX.R, r/m operand).
fn modrm(c: &mut Cursor<'_>, p: &Prefixes) -> Result<(u8, Operand), DecodeError> {
    let m = c.next()?;
    let md = m >> 6;
    let reg = ((m >> 3) & 7) | if p.rex & 0x4 != 0 { 8 } else { 0 };
    let rm_low = m & 7;
    let rex_b = if p.rex & 0x1 != 0 { 8 } else { 0 };
    let rex_x = if p.rex & 0x2 != 0 { 8 } else { 0 };
    if md == 3 {
        return Ok((reg, Operand::Reg(rm_low | rex_b)));
    }
    let mut mem = MemOperand {
        base: None,
        index: None,
        disp: 0,
        rip_relative: false,
        addr32: p.addr32,
        seg: p.seg.unwrap_or(Seg::Flat),
    };
    if rm_low == 4 {
        let sib = c.next()?;
        let scale = 1u8 << (sib >> 6);
        let index = ((sib >> 3) & 7) | rex_x;
        if index != 4 {
            mem.index = Some((index, scale));
        }
        let base_low = sib & 7;
        if base_low == 5 && md == 0 {
            mem.disp = c.imm_le(4)?;
        } else {
            mem.base = Some(base_low | rex_b);
        }
    } else if rm_low == 5 && md == 0 {
        mem.rip_relative = true;
        mem.disp = c.imm_le(4)?;
    } else {
        mem.base = Some(rm_low | rex_b);
    }
    match md {
        1 => mem.disp = c.imm_le(1)?,
        2 => mem.disp = c.imm_le(4)?,
        _ => {}
    }
    Ok((reg, Operand::Mem(mem)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(base: Option<u8>, disp: i64) -> MemOperand {
        MemOperand {
            base,
            index: None,
            disp,
            rip_relative: false,
            addr32: false,
            seg: Seg::Flat,
        }
    }

    #[test]
    fn simple_opcodes() {
        assert_eq!(decode(&[0x9b]).unwrap().op, Op::Fwait);
        assert_eq!(decode(&[0x9b]).unwrap().len, 1);
        let clac = decode(&[0x0f, 0x01, 0xca, 0x90]).unwrap();
        assert_eq!((clac.op, clac.len), (Op::Clac, 3));
        assert_eq!(decode(&[0x0f, 0x01, 0xcb]).unwrap().op, Op::Stac);
        assert!(decode(&[0xf0, 0x0f, 0x01, 0xcb]).unwrap().lock);
    }

    #[test]
    fn popcnt_forms() {
        // Linux __arch_hweight64: popcnt rax, rdi = f3 48 0f b8 c7.
        let i = decode(&[0xf3, 0x48, 0x0f, 0xb8, 0xc7]).unwrap();
        assert_eq!(
            i.op,
            Op::Popcnt {
                dst: 0,
                src: Operand::Reg(7),
                size: 8
            }
        );
        assert_eq!(i.len, 5);
        // __arch_hweight32: popcnt eax, edi = f3 40 0f b8 c7 (empty REX).
        let i = decode(&[0xf3, 0x40, 0x0f, 0xb8, 0xc7]).unwrap();
        assert_eq!(
            i.op,
            Op::Popcnt {
                dst: 0,
                src: Operand::Reg(7),
                size: 4
            }
        );
        // popcnt r9w, [r10+0x10] = 66 f3 45 0f b8 4a 10.
        let i = decode(&[0x66, 0xf3, 0x45, 0x0f, 0xb8, 0x4a, 0x10]).unwrap();
        assert_eq!(
            i.op,
            Op::Popcnt {
                dst: 9,
                src: Operand::Mem(mem(Some(10), 0x10)),
                size: 2
            }
        );
        assert_eq!(i.len, 7);
        // Without F3 it is not popcnt (0f b8 = jmpe).
        assert!(matches!(
            decode(&[0x0f, 0xb8, 0xc0]),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn mxcsr_and_xsave_forms() {
        // ldmxcsr [rip+0x1234] = 0f ae 15 34 12 00 00.
        let i = decode(&[0x0f, 0xae, 0x15, 0x34, 0x12, 0, 0]).unwrap();
        let mut m = mem(None, 0x1234);
        m.rip_relative = true;
        assert_eq!((i.op, i.len), (Op::Ldmxcsr(m), 7));
        // stmxcsr [rsp+4] = 0f ae 5c 24 04.
        let i = decode(&[0x0f, 0xae, 0x5c, 0x24, 0x04]).unwrap();
        assert_eq!((i.op, i.len), (Op::Stmxcsr(mem(Some(4), 4)), 5));
        // xrstor64 [rdi] = 48 0f ae 2f; xsave [rbx+rcx*8-8] = 0f ae 64 cb f8.
        let i = decode(&[0x48, 0x0f, 0xae, 0x2f]).unwrap();
        assert_eq!(
            i.op,
            Op::Xrstor {
                mem: mem(Some(7), 0),
                rex_w: true
            }
        );
        let i = decode(&[0x0f, 0xae, 0x64, 0xcb, 0xf8]).unwrap();
        let mut m = mem(Some(3), -8);
        m.index = Some((1, 8));
        assert_eq!(
            i.op,
            Op::Xsave {
                mem: m,
                rex_w: false
            }
        );
        // gs: ldmxcsr [0x10] with SIB no-base = 65 0f ae 14 25 10 00 00 00.
        let i = decode(&[0x65, 0x0f, 0xae, 0x14, 0x25, 0x10, 0, 0, 0]).unwrap();
        let mut m = mem(None, 0x10);
        m.seg = Seg::Gs;
        assert_eq!((i.op, i.len), (Op::Ldmxcsr(m), 9));
        // r13 base with mod 0 needs a disp8 of 0 (41 0f ae 55 00), r12 needs a SIB.
        let i = decode(&[0x41, 0x0f, 0xae, 0x55, 0x00]).unwrap();
        assert_eq!(i.op, Op::Ldmxcsr(mem(Some(13), 0)));
        let i = decode(&[0x41, 0x0f, 0xae, 0x14, 0x24]).unwrap();
        assert_eq!(i.op, Op::Ldmxcsr(mem(Some(12), 0)));
        // Register forms of 0f ae (lfence/mfence/sfence...) are not ours.
        assert!(decode(&[0x0f, 0xae, 0xe8]).is_err());
        assert!(decode(&[0x0f, 0xae, 0xf0]).is_err());
    }

    #[test]
    fn truncated_and_long() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x0f, 0xae]), Err(DecodeError::Truncated));
        assert_eq!(
            decode(&[0x0f, 0xae, 0x15, 0x34]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode(&[0x66; 20]), Err(DecodeError::TooLong));
        assert!(matches!(decode(&[0x90]), Err(DecodeError::Unsupported(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_len_is_bounded(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..32)) {
            if let Ok(i) = decode(&bytes) {
                proptest::prop_assert!(usize::from(i.len) <= MAX_INSN_LEN);
                proptest::prop_assert!(usize::from(i.len) <= bytes.len());
            }
        }
    }
}
