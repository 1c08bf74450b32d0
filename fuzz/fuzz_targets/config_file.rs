//! The `--config-file` document: JSON of any shape → every member validated in Firecracker's
//! order (both guest architectures), the resulting actions admitted and applied to a fresh
//! `VmConfig`; and the same bytes as an inline CPU template.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_config::schemas::cpu_config::CpuConfig;
use squib_config::vm_config::VmConfig;
use squib_core::{CapabilityProfile, GuestArch, LifecyclePhase};

fuzz_target!(|data: &[u8]| {
    for arch in [GuestArch::X86_64, GuestArch::Aarch64] {
        let _ = CpuConfig::from_json(data, arch);
        let Ok(file) = squib_api::replay::parse_config_bytes(data) else {
            continue;
        };
        let Ok(actions) = file.actions_in_order(arch) else {
            continue;
        };
        let profile = CapabilityProfile::x86_64_kvm();
        let mut config = VmConfig::default();
        for (_member, action) in &actions {
            if action.admit(LifecyclePhase::NotStarted, &profile).is_ok() {
                let _ = config.apply(action);
            }
        }
        // The read mirror's shape (`GET /vm/config`) must serialize.
        let _ = serde_json::to_vec(&config).expect("VmConfig serializes");
    }
});
