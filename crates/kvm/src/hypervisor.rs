//! `/dev/kvm`: opening, capability discovery, supported CPUID, VM creation.
//!
//! Owns the system `Kvm` handle. Stateless after construction; `Send + Sync`.

use std::path::Path;
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm};
use squib_core::CapabilityProfile;
use squib_hv::{
    CpuidEntry, HvCapabilities, HvError, Hypervisor, HypervisorX86, MsrEntry, Vm, VmConfig,
};

use crate::caps;
use crate::convert::cpuid_from_kvm;
use crate::vm::KvmVm;

/// Where the kvm_pvm module shows up when the host's KVM is the nested PVM flavour.
const PVM_MODULE_PATH: &str = "/sys/module/kvm_pvm";

/// `true` when `/dev/kvm` is provided by the nested `kvm_pvm` module: guests run largely through
/// KVM's instruction emulator (slow full OS guests, some instructions unsupported).
pub fn is_pvm() -> bool {
    Path::new(PVM_MODULE_PATH).exists()
}

/// Backend tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmOptions {
    /// Turn `int3` emulation failures into `#BP` injections (a PVM workaround; harmless
    /// elsewhere because real KVM never reports them).
    pub int3_workaround: bool,
}

impl Default for KvmOptions {
    fn default() -> Self {
        Self {
            int3_workaround: is_pvm(),
        }
    }
}

/// The KVM hypervisor of this host.
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Kvm,
    pvm: bool,
    options: KvmOptions,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` with default options.
    pub fn new() -> Result<Self, HvError> {
        Self::with_options(KvmOptions::default())
    }

    /// Opens `/dev/kvm` with `options`.
    pub fn with_options(options: KvmOptions) -> Result<Self, HvError> {
        let kvm = Kvm::new().map_err(|e| HvError::errno("open /dev/kvm", e.errno()))?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(HvError::InvalidArgument(format!(
                "unexpected KVM API version {version} (want 12)"
            )));
        }
        Ok(Self {
            kvm,
            pvm: is_pvm(),
            options,
        })
    }

    /// `true` when this host's KVM is `kvm_pvm` (see [`is_pvm`]).
    pub fn is_pvm(&self) -> bool {
        self.pvm
    }

    /// Creates a VM with its concrete type (tests and KVM-specific callers).
    pub fn create_kvm_vm(&self, config: &VmConfig) -> Result<KvmVm, HvError> {
        if config.vcpu_count == 0 || config.vcpu_count as usize > self.kvm.get_max_vcpus() {
            return Err(HvError::InvalidArgument(format!(
                "vcpu_count {} outside 1..={}",
                config.vcpu_count,
                self.kvm.get_max_vcpus()
            )));
        }
        // Firecracker checks its capability list (as changed by the CPU template) first.
        caps::check(&config.capabilities, |cap| {
            self.kvm.check_extension_raw(libc::c_ulong::from(cap)) > 0
        })?;
        let fd = self
            .kvm
            .create_vm()
            .map_err(|e| HvError::errno("KVM_CREATE_VM", e.errno()))?;
        let msr_indices = self
            .kvm
            .get_msr_index_list()
            .map_err(|e| HvError::errno("KVM_GET_MSR_INDEX_LIST", e.errno()))?
            .as_slice()
            .to_vec();
        Ok(KvmVm::new(
            fd,
            self.options,
            msr_indices,
            config.capabilities.clone(),
        ))
    }
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Hypervisor for KvmHypervisor {
    fn profile(&self) -> CapabilityProfile {
        let mut profile = CapabilityProfile::x86_64_kvm();
        let max = u8::try_from(self.kvm.get_max_vcpus()).unwrap_or(u8::MAX);
        profile.max_vcpus = profile.max_vcpus.min(max);
        profile
    }

    fn capabilities(&self) -> HvCapabilities {
        HvCapabilities {
            backend: "kvm".to_owned(),
            irqfd: self.kvm.check_extension(Cap::Irqfd),
            ioeventfd: self.kvm.check_extension(Cap::Ioeventfd),
            in_kernel_irqchip: self.kvm.check_extension(Cap::Irqchip),
            immediate_exit: self.kvm.check_extension(Cap::ImmediateExit),
            max_vcpus: to_u32(self.kvm.get_max_vcpus()),
            recommended_vcpus: to_u32(self.kvm.get_nr_vcpus()),
            max_memslots: to_u32(self.kvm.get_nr_memslots()),
            emulated_guests: self.pvm,
        }
    }

    fn create_vm(&self, config: &VmConfig) -> Result<Arc<dyn Vm>, HvError> {
        Ok(Arc::new(self.create_kvm_vm(config)?))
    }

    fn as_x86(&self) -> Option<&dyn HypervisorX86> {
        Some(self)
    }
}

impl HypervisorX86 for KvmHypervisor {
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, HvError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| HvError::errno("KVM_GET_SUPPORTED_CPUID", e.errno()))?;
        Ok(cpuid.as_slice().iter().map(cpuid_from_kvm).collect())
    }

    fn probe_msrs(&self, cpuid: &[CpuidEntry], indices: &[u32]) -> Result<Vec<MsrEntry>, HvError> {
        // A scratch VM shaped like a real one (TSS, irqchip, PIT) with one vCPU: Firecracker
        // reads these values from vCPU 0 right after setting its CPUID, before any MSR write.
        let vm = self.create_kvm_vm(&VmConfig::new(1))?;
        vm.setup_platform()?;
        let mut vcpu = vm.create_kvm_vcpu(0)?;
        vcpu.set_cpuid(cpuid)?;
        vcpu.read_msr_prefix(indices)
    }
}
