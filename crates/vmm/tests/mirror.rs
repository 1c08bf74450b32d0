//! The VMM publishes its configuration after every change, so the API's read mirror follows
//! the VMM even when the API stopped waiting (504) for an action the VMM executed later.

use std::sync::{Arc, Mutex};

use squib_config::action::ApiAction;
use squib_config::schemas::machine_config::{MachineConfig, RawMachineConfig};
use squib_config::vm_config::VmConfig;
use squib_core::LifecyclePhase;
use squib_vmm::{Vmm, VmmObserver, VmmOptions};

#[derive(Default)]
struct Recorder {
    configs: Mutex<Vec<VmConfig>>,
    phases: Mutex<Vec<LifecyclePhase>>,
}

impl VmmObserver for Recorder {
    fn phase_changed(&self, phase: LifecyclePhase) {
        self.phases.lock().unwrap().push(phase);
    }
    fn config_changed(&self, config: &VmConfig) {
        self.configs.lock().unwrap().push(config.clone());
    }
}

#[test]
fn test_every_applied_change_is_published_by_the_vmm() {
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let hv = Arc::new(squib_kvm::KvmHypervisor::new().unwrap());
    let rec = Arc::new(Recorder::default());
    let mut vmm = Vmm::new(hv, VmmOptions::default(), rec.clone()).expect("VMM");
    let raw: RawMachineConfig =
        serde_json::from_str(r#"{"vcpu_count":2,"mem_size_mib":256}"#).unwrap();
    let mc = MachineConfig::try_from(raw).unwrap();
    // Whatever the API did meanwhile (e.g. answered 504), the VMM's answer publishes the result.
    assert!(vmm.handle(&ApiAction::PutMachineConfig(mc)).is_success());
    let configs = rec.configs.lock().unwrap();
    let last = configs.last().expect("published");
    assert_eq!(last.machine_config.vcpu_count, 2);
    assert_eq!(last.machine_config.mem_size_mib, 256);
    assert_eq!(
        rec.phases.lock().unwrap().as_slice(),
        &[LifecyclePhase::NotStarted]
    );
    drop(configs);
    // A refused action (no kernel configured) publishes nothing.
    let before = rec.configs.lock().unwrap().len();
    let resp = vmm.handle(&ApiAction::Instance(instance_start()));
    assert!(!resp.is_success());
    assert_eq!(rec.configs.lock().unwrap().len(), before);
}

fn instance_start() -> squib_config::schemas::actions::InstanceAction {
    squib_config::schemas::actions::InstanceAction::InstanceStart
}
