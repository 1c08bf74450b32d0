//! Effect tests against a fake machine: flat guest RAM with real 4-level page tables and an
//! XSAVE-format FPU state with an AVX component (CPUID 0xD.2: 256 bytes at 576).

#![allow(clippy::cast_possible_truncation)]
use super::*;

const RAM: usize = 4 << 20;
const PML4: u64 = 0x1000;
const CR0_PE_PG_WP_NE_MP: u64 = 1 | (1 << 31) | (1 << 16) | (1 << 5) | (1 << 1);
const CR4_PAE_OSFXSR_OSXSAVE: u64 = (1 << 5) | (1 << 9) | (1 << 18);
const AVX_OFF: usize = 576;
const AREA: usize = AVX_OFF + 256;

struct Fake {
    ram: Vec<u8>,
    fpu: Vec<u8>,
    xcr0: u64,
    set_calls: usize,
}

impl Fake {
    /// RAM with an identity map of the first 4 MiB through 4 KiB pages (PML4 at 0x1000,
    /// PDPT 0x2000, PD 0x3000, PTs 0x4000/0x5000); supervisor, writable.
    fn new() -> Self {
        let mut f = Self {
            ram: vec![0; RAM],
            fpu: vec![0; AREA],
            xcr0: 0b111,
            set_calls: 0,
        };
        f.put(PML4, 0x2000 | 3);
        f.put(0x2000, 0x3000 | 3);
        for pt in 0..2u64 {
            f.put(0x3000 + pt * 8, (0x4000 + pt * 0x1000) | 3);
            for i in 0..512u64 {
                let page = (pt * 512 + i) * 0x1000;
                f.put(0x4000 + pt * 0x1000 + i * 8, page | 3);
            }
        }
        f.fpu[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        f.fpu[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        f.fpu[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        f
    }
    fn put(&mut self, gpa: u64, v: u64) {
        let a = gpa as usize;
        self.ram[a..a + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn get(&self, gpa: u64) -> u64 {
        let a = gpa as usize;
        u64::from_le_bytes(self.ram[a..a + 8].try_into().unwrap())
    }
    fn pte(page: u64) -> u64 {
        0x4000 + (page >> 12) * 8
    }
}

impl Machine for Fake {
    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), EmuError> {
        let a = gpa as usize;
        let src = self
            .ram
            .get(a..a + buf.len())
            .ok_or_else(|| EmuError::Machine("mmio".into()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), EmuError> {
        let a = gpa as usize;
        let dst = self
            .ram
            .get_mut(a..a + data.len())
            .ok_or_else(|| EmuError::Machine("mmio".into()))?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn xsave_area(&mut self) -> Result<Vec<u8>, EmuError> {
        Ok(self.fpu.clone())
    }
    fn set_xsave_area(&mut self, area: &[u8]) -> Result<(), EmuError> {
        self.set_calls += 1;
        self.fpu = area.to_vec();
        Ok(())
    }
    fn xcr0(&mut self) -> Result<u64, EmuError> {
        Ok(self.xcr0)
    }
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        (leaf == 0xd && subleaf == 2).then_some([256, AVX_OFF as u32, 0, 0])
    }
}

fn cpu() -> CpuState {
    CpuState {
        rip: 0x10_0000,
        rflags: 0x2,
        cr0: CR0_PE_PG_WP_NE_MP,
        cr3: PML4,
        cr4: CR4_PAE_OSFXSR_OSXSAVE,
        efer: 0x500,
        long64: true,
        ..Default::default()
    }
}

fn run(c: &mut CpuState, f: &mut Fake, bytes: &[u8]) -> Outcome {
    emulate(c, f, bytes).expect("emulated")
}

#[test]
fn clac_stac_toggle_ac_and_advance() {
    let (mut c, mut f) = (cpu(), Fake::new());
    assert_eq!(
        run(&mut c, &mut f, &[0x0f, 0x01, 0xcb]),
        Outcome::Retired(Op::Stac)
    );
    assert_eq!(c.rflags, 0x2 | (1 << 18));
    assert_eq!(c.rip, 0x10_0003);
    assert_eq!(
        run(&mut c, &mut f, &[0x0f, 0x01, 0xca]),
        Outcome::Retired(Op::Clac)
    );
    assert_eq!((c.rflags, c.rip), (0x2, 0x10_0006));
    // CPL 3 and LOCK: #UD, nothing changes.
    c.cpl = 3;
    let before = c;
    assert_eq!(
        run(&mut c, &mut f, &[0x0f, 0x01, 0xcb]),
        Outcome::Fault(Op::Stac, Exception::ud())
    );
    assert_eq!(c, before);
    c.cpl = 0;
    assert_eq!(
        run(&mut c, &mut f, &[0xf0, 0x0f, 0x01, 0xca]),
        Outcome::Fault(Op::Clac, Exception::ud())
    );
    // Outside 64-bit mode nothing is emulated.
    c.long64 = false;
    assert!(emulate(&mut c, &mut f, &[0x0f, 0x01, 0xca]).is_err());
}

#[test]
fn popcnt_register_forms_and_flags() {
    let (mut c, mut f) = (cpu(), Fake::new());
    c.gpr[7] = 0xf0f0_0000_0000_0001;
    c.gpr[0] = u64::MAX;
    c.rflags = 0x2 | 0x8d5; // every arithmetic flag set
    run(&mut c, &mut f, &[0xf3, 0x48, 0x0f, 0xb8, 0xc7]);
    assert_eq!(c.gpr[0], 9);
    assert_eq!(c.rflags, 0x2, "OF SF ZF AF CF PF cleared");
    assert_eq!(c.rip, 0x10_0005);
    // 32-bit: upper half of the source ignored, destination zero-extended.
    c.gpr[0] = u64::MAX;
    run(&mut c, &mut f, &[0xf3, 0x40, 0x0f, 0xb8, 0xc7]);
    assert_eq!(c.gpr[0], 1);
    // 16-bit: destination's upper bits kept; zero source sets ZF.
    c.gpr[1] = 0xffff_0000;
    c.gpr[2] = 0x1234_5678_9abc_0000;
    run(&mut c, &mut f, &[0x66, 0xf3, 0x0f, 0xb8, 0xd1]);
    assert_eq!(c.gpr[2], 0x1234_5678_9abc_0000);
    assert_eq!(c.rflags, 0x2 | (1 << 6));
}

#[test]
fn popcnt_memory_operand_through_paging() {
    let (mut c, mut f) = (cpu(), Fake::new());
    f.put(0x20_0010, 0xff);
    c.gpr[10] = 0x20_0000;
    // popcnt r9, [r10+0x10] = f3 4d 0f b8 4a 10
    run(&mut c, &mut f, &[0xf3, 0x4d, 0x0f, 0xb8, 0x4a, 0x10]);
    assert_eq!(c.gpr[9], 8);
    assert!(
        f.get(Fake::pte(0x20_0000)) & (1 << 5) != 0,
        "accessed bit set"
    );
    assert!(
        f.get(Fake::pte(0x20_0000)) & (1 << 6) == 0,
        "no dirty bit on a read"
    );
}

#[test]
fn fwait_nop_mf_nm() {
    let (mut c, mut f) = (cpu(), Fake::new());
    assert_eq!(run(&mut c, &mut f, &[0x9b]), Outcome::Retired(Op::Fwait));
    assert_eq!(c.rip, 0x10_0001);
    f.fpu[2] = 0x81; // FSW: IE + ES
    assert_eq!(
        run(&mut c, &mut f, &[0x9b]),
        Outcome::Fault(Op::Fwait, Exception::mf())
    );
    c.cr0 &= !(1 << 5); // NE=0: FERR# path not modelled
    assert!(emulate(&mut c, &mut f, &[0x9b]).is_err());
    c.cr0 |= 1 << 3; // TS with MP
    assert_eq!(
        run(&mut c, &mut f, &[0x9b]),
        Outcome::Fault(Op::Fwait, Exception::nm())
    );
}

#[test]
fn ldmxcsr_rip_relative_and_reserved_bits() {
    let (mut c, mut f) = (cpu(), Fake::new());
    // ldmxcsr [rip+0x100]: operand at 0x10_0007 + 0x100.
    f.ram[0x10_0107..0x10_010b].copy_from_slice(&0x9fc0u32.to_le_bytes());
    let insn = [0x0f, 0xae, 0x15, 0x00, 0x01, 0x00, 0x00];
    assert_eq!(
        run(&mut c, &mut f, &insn),
        Outcome::Retired(Op::Ldmxcsr(decode(&insn).unwrap().op.mem()))
    );
    assert_eq!(&f.fpu[24..28], &0x9fc0u32.to_le_bytes());
    assert_eq!(c.rip, 0x10_0007);
    assert_eq!(
        f.get_fpu_bv(),
        0b10,
        "SSE marked in use so the new MXCSR is loaded"
    );
    // A reserved bit (above MXCSR_MASK) → #GP(0), state unchanged.
    c.rip = 0x10_0000;
    f.ram[0x10_0107..0x10_010b].copy_from_slice(&0x1_0000u32.to_le_bytes());
    let calls = f.set_calls;
    assert!(matches!(
        run(&mut c, &mut f, &insn),
        Outcome::Fault(_, e) if e == Exception::gp0()
    ));
    assert_eq!((f.set_calls, c.rip), (calls, 0x10_0000));
    // OSFXSR clear → #UD; TS → #NM.
    c.cr4 &= !(1 << 9);
    assert!(matches!(run(&mut c, &mut f, &insn), Outcome::Fault(_, e) if e == Exception::ud()));
    c.cr4 |= 1 << 9;
    c.cr0 |= 1 << 3;
    assert!(matches!(run(&mut c, &mut f, &insn), Outcome::Fault(_, e) if e == Exception::nm()));
}

#[test]
fn stmxcsr_sets_dirty_and_faults_on_read_only_and_absent_pages() {
    let (mut c, mut f) = (cpu(), Fake::new());
    c.gpr[4] = 0x30_0000; // stmxcsr [rsp+4] = 0f ae 5c 24 04
    let insn = [0x0f, 0xae, 0x5c, 0x24, 0x04];
    run(&mut c, &mut f, &insn);
    assert_eq!(&f.ram[0x30_0004..0x30_0008], &0x1f80u32.to_le_bytes());
    assert!(f.get(Fake::pte(0x30_0000)) & (1 << 6) != 0, "dirty bit set");
    // Read-only page with CR0.WP: #PF(P|W) at the operand address.
    c.rip = 0x10_0000;
    f.put(Fake::pte(0x30_0000), 0x30_0000 | 1);
    assert_eq!(
        run(&mut c, &mut f, &insn),
        Outcome::Fault(
            Op::Stmxcsr(decode(&insn).unwrap().op.mem()),
            Exception::page_fault(3, 0x30_0004)
        )
    );
    // Not present: #PF(W).
    f.put(Fake::pte(0x30_0000), 0);
    assert!(matches!(
        run(&mut c, &mut f, &insn),
        Outcome::Fault(_, e) if e == Exception::page_fault(2, 0x30_0004)
    ));
    assert_eq!(c.rip, 0x10_0000);
    // Non-canonical → #GP(0).
    c.gpr[4] = 0x8000_0000_0000_0000;
    assert!(matches!(run(&mut c, &mut f, &insn), Outcome::Fault(_, e) if e == Exception::gp0()));
}

#[test]
fn smap_blocks_supervisor_access_to_user_pages_unless_ac() {
    let (mut c, mut f) = (cpu(), Fake::new());
    c.cr4 |= 1 << 21;
    for table in [PML4, 0x2000, 0x3008] {
        let e = f.get(table);
        f.put(table, e | 4);
    }
    f.put(Fake::pte(0x20_0000), 0x20_0000 | 7);
    c.gpr[10] = 0x20_0000;
    let insn = [0xf3, 0x4d, 0x0f, 0xb8, 0x4a, 0x10];
    assert!(matches!(
        run(&mut c, &mut f, &insn),
        Outcome::Fault(_, e) if e == Exception::page_fault(1, 0x20_0010)
    ));
    c.rflags |= 1 << 18;
    assert!(matches!(run(&mut c, &mut f, &insn), Outcome::Retired(_)));
}

fn fill_state(f: &mut Fake, seed: u8) {
    for (i, b) in f.fpu[160..416].iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    for (i, b) in f.fpu[AVX_OFF..AREA].iter_mut().enumerate() {
        *b = seed.wrapping_mul(3).wrapping_add(i as u8);
    }
    f.fpu[512..520].copy_from_slice(&0b111u64.to_le_bytes());
}

#[test]
fn xsave_then_xrstor_round_trip() {
    let (mut c, mut f) = (cpu(), Fake::new());
    fill_state(&mut f, 7);
    let saved = f.fpu.clone();
    c.gpr[0] = u64::MAX; // EDX:EAX all ones, RFBM = XCR0
    c.gpr[2] = u64::MAX;
    c.gpr[7] = 0x28_0000;
    // Stale XSTATE_BV bit 5 outside RFBM must survive an xsave.
    f.put(0x28_0000 + 512, 1 << 5);
    // xsave64 [rdi] = 48 0f ae 27
    assert!(matches!(
        run(&mut c, &mut f, &[0x48, 0x0f, 0xae, 0x27]),
        Outcome::Retired(_)
    ));
    assert_eq!(f.get(0x28_0000 + 512), 0b111 | (1 << 5));
    assert_eq!(&f.ram[0x28_0000 + 160..0x28_0000 + 416], &saved[160..416]);
    assert_eq!(
        &f.ram[0x28_0000 + AVX_OFF..0x28_0000 + AREA],
        &saved[AVX_OFF..AREA]
    );
    // Clobber the state, then restore it (header bit 5 is not in XCR0 → clear it first).
    f.put(0x28_0000 + 512, 0b111);
    fill_state(&mut f, 99);
    c.rip = 0x10_0000;
    assert!(matches!(
        run(&mut c, &mut f, &[0x48, 0x0f, 0xae, 0x2f]),
        Outcome::Retired(_)
    ));
    assert_eq!(f.fpu, saved);
    // XSTATE_BV without AVX: AVX comes back in its init state (zeros, bit clear).
    f.put(0x28_0000 + 512, 0b011);
    c.rip = 0x10_0000;
    run(&mut c, &mut f, &[0x48, 0x0f, 0xae, 0x2f]);
    assert!(f.fpu[AVX_OFF..AREA].iter().all(|&b| b == 0));
    assert_eq!(f.get_fpu_bv(), 0b011);
}

impl Fake {
    fn get_fpu_bv(&self) -> u64 {
        u64::from_le_bytes(self.fpu[512..520].try_into().unwrap())
    }
}

#[test]
fn xrstor_checks() {
    let (mut c, mut f) = (cpu(), Fake::new());
    c.gpr[0] = 0b111;
    c.gpr[7] = 0x28_0000;
    let insn = [0x48, 0x0f, 0xae, 0x2f];
    // XSTATE_BV bit outside XCR0 → #GP.
    f.put(0x28_0000 + 512, 1 << 9);
    assert!(matches!(run(&mut c, &mut f, &insn), Outcome::Fault(_, e) if e == Exception::gp0()));
    // Compacted format: refused, not approximated.
    f.put(0x28_0000 + 512, 0);
    f.put(0x28_0000 + 520, 1 << 63);
    assert_eq!(
        emulate(&mut c, &mut f, &insn),
        Err(EmuError::Unsupported("xrstor from the compacted format"))
    );
    // Misaligned → #GP; OSXSAVE clear → #UD.
    c.gpr[7] = 0x28_0008;
    assert!(matches!(run(&mut c, &mut f, &insn), Outcome::Fault(_, e) if e == Exception::gp0()));
    c.cr4 &= !(1 << 18);
    assert!(matches!(run(&mut c, &mut f, &insn), Outcome::Fault(_, e) if e == Exception::ud()));
    assert_eq!(f.set_calls, 0);
}

#[test]
fn unknown_instruction_is_refused() {
    let (mut c, mut f) = (cpu(), Fake::new());
    assert!(matches!(
        emulate(&mut c, &mut f, &[0x0f, 0xc7, 0x0f]),
        Err(EmuError::Decode(_))
    ));
}
