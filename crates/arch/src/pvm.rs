//! The guest profile for nested `kvm_pvm` hosts (applied by the VMM only when the backend
//! reports `emulated_guests`; never on hosts with VMX/SVM).
//!
//! Owns the kernel command-line additions. Under PVM the guest runs largely through KVM's
//! instruction emulator, which cannot emulate some instructions (`../shared/reference/
//! guest-notes.md`), and masking CPUID in KVM's table cannot hide most of the features involved.
//! Measured (`crates/vmm/tests/pvm_emulation.rs`): under kvm_pvm `KVM_GET_SUPPORTED_CPUID`
//! reports only a few leaf 0x1 ECX bits (CX16, x2APIC, hypervisor: 0x81202000) and leaf 0x7 EBX
//! 0x01802852, yet the guest sees the host CPU's XSAVE, POPCNT, SSE4.x, ... (leaf 0x1 ECX bits
//! 0x76d81203 absent from the table) and FSGSBASE, SMAP, RDSEED, INVPCID, ... (leaf 0x7 EBX bits
//! 0xf03f03a9): those bits are the host's whatever `KVM_SET_CPUID2` says (they are already clear
//! in the table we set), while bits KVM manages follow the table (CX16 hidden through
//! [`crate::cpuid::CpuidConfig::hide_cx16`] is hidden in the guest). Linux's own switches turn
//! the passed-through features off instead:
//!
//! - `noxsave`: Linux would use `xsaves`/`xrstors` (compacted format, supervisor states), which
//!   neither KVM-under-PVM nor the VMM's emulator (`squib-x86emu`: standard format only) handles;
//! - `nofsgsbase`, `clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid`: instructions the
//!   emulator batches fail on (the VMM emulates `popcnt`/`clac`/`stac` as a safety net, but each
//!   costs an exit and several ioctls, so the kernel is told not to use them);
//! - `clearcpuid=pni,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni`: the kernel's SIMD code
//!   (ChaCha/BLAKE2s for the RNG, CRC, crypto; AVX is already off with `noxsave`) runs SSE
//!   instructions right after `kernel_fpu_begin`'s emulated `ldmxcsr`, inside PVM's emulation
//!   batch: measured with Debian's 6.1 cloud kernel, `movd xmm15, ecx` at "Trying to unpack
//!   rootfs image as initramfs". The VMM cannot emulate the SSE instruction set correctly, so
//!   the kernel is told to use its generic C code (user space still runs natively and sees the
//!   host CPU's CPUID);
//! - `percpu_alloc=page`: avoids the embedded per-CPU first chunk's large-page mappings;
//! - `cryptomgr.notests`: no crypto self-tests at algorithm registration. Guest kernel code runs
//!   at about 1-2 million instructions per second here, and the RSA self-test behind the first
//!   X.509 signature check takes longer than the 60 s the certificate loader waits: measured with
//!   Debian's 6.1 cloud kernel, `Problem loading in-kernel X.509 certificate (-110)` at 539 s,
//!   then 15+ minutes in the MPI code after `evm: HMAC attrs`; with the token the same kernel
//!   runs `/init` at 474 s (9.6 min wall). A user who wants the tests passes
//!   `cryptomgr.notests=0`, which this profile then leaves alone. Kernels without the crypto
//!   manager ignore the (dotted, module-style) token.
//!
//! Known gap (not fixable by a command-line token): a `syscall` that guest user space executes
//! inside one of PVM's emulation batches (right after an emulated return to user mode) gets
//! SYSCALL's register effects but no switch to CPL 0, so the guest takes a user-mode page fault
//! at `entry_SYSCALL_64` and a stock kernel kills init (`init[1]: segfault at ffffffff81c00080
//! ip ffffffff81c00080 ... error 15`). The shared Linux guest carries a kernel patch for it; the
//! VMM sees no exit for that fault. Tried: a `KVM_SET_GUEST_DEBUG` hardware breakpoint on
//! `IA32_LSTAR`. It stops instructions KVM emulates (a real-mode probe exits every time), but it
//! never fired during a Linux boot, where that fetch runs natively and the fault goes straight
//! to the guest.
//!
//! A token is added only when the user's command line has no token with the same key (the part
//! before `=`), so the user's own `clearcpuid=...` wins. Pure functions; no threads.

/// Tokens appended on kvm_pvm hosts.
pub const PVM_CMDLINE_ADDITIONS: &[&str] = &[
    "noxsave",
    "nofsgsbase",
    "clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid,pni,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni",
    "percpu_alloc=page",
    "cryptomgr.notests",
];

fn key(token: &str) -> &str {
    token.split_once('=').map_or(token, |(k, _)| k)
}

/// `cmdline` with each of `additions` appended unless a token with the same key is present.
/// Only the part before a ` -- ` separator (kernel parameters, not init's) is searched and
/// extended.
pub fn append_absent(cmdline: &str, additions: &[&str]) -> String {
    let (kernel, init) = match cmdline.find(" -- ") {
        Some(i) => (&cmdline[..i], Some(&cmdline[i..])),
        None => (cmdline, None),
    };
    let mut out = kernel.trim_end().to_owned();
    for add in additions {
        if !kernel.split_whitespace().any(|t| key(t) == key(add)) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(add);
        }
    }
    if let Some(init) = init {
        out.push_str(init);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_missing_tokens_only() {
        let c = append_absent("console=ttyS0 noxsave", PVM_CMDLINE_ADDITIONS);
        assert_eq!(
            c,
            "console=ttyS0 noxsave nofsgsbase clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid,pni,ssse3,sse4_1,sse4_2,pclmulqdq,aes,sha_ni,gfni percpu_alloc=page cryptomgr.notests"
        );
        // Idempotent.
        assert_eq!(append_absent(&c, PVM_CMDLINE_ADDITIONS), c);
    }

    #[test]
    fn the_users_value_wins() {
        let c = append_absent("clearcpuid=smap percpu_alloc=embed", PVM_CMDLINE_ADDITIONS);
        assert_eq!(
            c,
            "clearcpuid=smap percpu_alloc=embed noxsave nofsgsbase cryptomgr.notests"
        );
    }

    #[test]
    fn init_arguments_stay_last_and_are_not_searched() {
        let c = append_absent("console=ttyS0 -- noxsave", &["noxsave"]);
        assert_eq!(c, "console=ttyS0 noxsave -- noxsave");
        assert_eq!(append_absent("", &["a", "b=1"]), "a b=1");
    }
}
