//! Tests of the configuration document and the config-file conversion.

use serde_json::json;

use super::*;
use crate::schemas::{
    balloon::{BalloonStatsUpdate, BalloonUpdate, RawBalloonStatsUpdate, RawBalloonUpdate},
    drive::{DriveUpdate, RawDriveUpdate},
    machine_config::{MachineConfigUpdate, RawMachineConfigUpdate},
};

fn raw<R: serde::de::DeserializeOwned, T: TryFrom<R, Error = String>>(v: Value) -> T {
    T::try_from(serde_json::from_value::<R>(v).unwrap()).unwrap()
}

fn machine(v: Value) -> ApiAction {
    ApiAction::PutMachineConfig(raw::<RawMachineConfig, _>(v))
}

fn drive(id: &str, root: bool) -> ApiAction {
    ApiAction::PutDrive(raw::<RawDriveConfig, _>(
        json!({"drive_id": id, "is_root_device": root, "path_on_host": "/img"}),
    ))
}

fn pmem(id: &str, root: bool) -> ApiAction {
    ApiAction::PutPmem(raw::<RawPmemConfig, _>(
        json!({"id": id, "path_on_host": "/p", "root_device": root}),
    ))
}

fn net(id: &str, mac: Option<&str>) -> ApiAction {
    ApiAction::PutNetworkInterface(raw::<RawNetworkInterfaceConfig, _>(
        json!({"iface_id": id, "host_dev_name": "tap0", "guest_mac": mac}),
    ))
}

fn balloon(amount: u64) -> ApiAction {
    ApiAction::PutBalloon(raw::<RawBalloonConfig, _>(json!({"amount_mib": amount})))
}

fn ids(cfg: &VmConfig) -> Vec<&str> {
    cfg.drives.iter().map(|d| d.drive_id.as_str()).collect()
}

#[test]
fn test_should_serialize_fresh_config_like_firecracker() {
    assert_eq!(
        serde_json::to_string(&VmConfig::default()).unwrap(),
        r#"{"balloon":null,"drives":[],"boot-source":{"kernel_image_path":"","initrd_path":null,"boot_args":null},"cpu-config":null,"logger":null,"machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"},"metrics":null,"mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,"pmem":[],"memory-hotplug":null}"#
    );
}

#[test]
fn test_should_serialize_configured_document_like_the_fixture() {
    let mut cfg = VmConfig::default();
    cfg.apply(&machine(json!({"vcpu_count": 2, "mem_size_mib": 1024})))
        .unwrap();
    cfg.apply(&ApiAction::PutBootSource(raw::<RawBootSource, _>(
        json!({"kernel_image_path": "/k", "boot_args": "console=ttyS0 reboot=k panic=1"}),
    )))
    .unwrap();
    cfg.apply(&drive("rootfs", true)).unwrap();
    cfg.apply(&ApiAction::PutLogger(LoggerConfig::default()))
        .unwrap();
    let v = serde_json::to_value(&cfg).unwrap();
    assert_eq!(
        v["boot-source"],
        json!({"kernel_image_path": "/k", "initrd_path": null, "boot_args": "console=ttyS0 reboot=k panic=1"})
    );
    assert_eq!(v["drives"][0]["drive_id"], "rootfs");
    assert_eq!(v["drives"][0]["is_read_only"], false);
    assert_eq!(v["machine-config"]["mem_size_mib"], 1024);
    assert_eq!(v["logger"], Value::Null);
    assert_eq!(v["cpu-config"], Value::Null);
}

#[test]
fn test_should_apply_machine_config_put_and_patch() {
    let mut cfg = VmConfig::default();
    cfg.apply(&machine(
        json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": true, "cpu_template": "T2"}),
    ))
    .unwrap();
    cfg.apply(&machine(json!({"vcpu_count": 2, "mem_size_mib": 512})))
        .unwrap();
    assert!(!cfg.machine_config.smt);
    assert_eq!(
        cfg.machine_config.cpu_template,
        Some(crate::schemas::machine_config::CpuTemplate::T2)
    );
    let patch = ApiAction::PatchMachineConfig(raw::<RawMachineConfigUpdate, MachineConfigUpdate>(
        json!({"vcpu_count": 3, "smt": true}),
    ));
    assert_eq!(
        cfg.apply(&patch).unwrap_err(),
        crate::schemas::machine_config::INVALID_VCPU_COUNT
    );
    assert_eq!(
        cfg.machine_config.vcpu_count, 2,
        "failed apply leaves the document unchanged"
    );
    let patch = ApiAction::PatchMachineConfig(raw::<RawMachineConfigUpdate, MachineConfigUpdate>(
        json!({"mem_size_mib": 64}),
    ));
    cfg.apply(&patch).unwrap();
    assert_eq!(cfg.machine_config.mem_size_mib, 64);
}

#[test]
fn test_should_check_balloon_against_memory_both_ways() {
    let mut cfg = VmConfig::default();
    assert_eq!(cfg.apply(&balloon(129)).unwrap_err(), BALLOON_TOO_LARGE);
    cfg.apply(&balloon(128)).unwrap();
    assert_eq!(
        cfg.apply(&machine(json!({"vcpu_count": 1, "mem_size_mib": 64})))
            .unwrap_err(),
        INCOMPATIBLE_BALLOON_SIZE
    );
    let upd = ApiAction::PatchBalloon(raw::<RawBalloonUpdate, BalloonUpdate>(
        json!({"amount_mib": 200}),
    ));
    assert_eq!(cfg.apply(&upd).unwrap_err(), BALLOON_TOO_LARGE);
    let upd = ApiAction::PatchBalloon(raw::<RawBalloonUpdate, BalloonUpdate>(
        json!({"amount_mib": 10}),
    ));
    cfg.apply(&upd).unwrap();
    assert_eq!(cfg.balloon.as_ref().unwrap().amount_mib, 10);
    let stats = |s: u8| {
        ApiAction::PatchBalloonStatistics(raw::<RawBalloonStatsUpdate, BalloonStatsUpdate>(
            json!({"stats_polling_interval_s": s}),
        ))
    };
    assert_eq!(
        cfg.apply(&stats(5)).unwrap_err(),
        BALLOON_STATS_STATE_CHANGE
    );
    cfg.apply(&stats(0)).unwrap();
    let mut empty = VmConfig::default();
    assert_eq!(empty.apply(&upd).unwrap_err(), NO_BALLOON);
    let too_big = ApiAction::PatchBalloon(raw::<RawBalloonUpdate, BalloonUpdate>(
        json!({"amount_mib": 999}),
    ));
    assert_eq!(
        empty.apply(&too_big).unwrap_err(),
        NO_BALLOON,
        "no device is reported first"
    );
    assert_eq!(empty.apply(&stats(0)).unwrap_err(), NO_BALLOON);
}

#[test]
fn test_should_order_and_limit_root_drives() {
    let mut cfg = VmConfig::default();
    cfg.apply(&drive("a", false)).unwrap();
    cfg.apply(&drive("b", false)).unwrap();
    cfg.apply(&drive("root", true)).unwrap();
    assert_eq!(ids(&cfg), ["root", "a", "b"]);
    assert_eq!(
        cfg.apply(&drive("other", true)).unwrap_err(),
        ROOT_BLOCK_DEVICE_EXISTS
    );
    cfg.apply(&drive("root", true)).unwrap();
    assert_eq!(ids(&cfg), ["root", "a", "b"]);
    cfg.apply(&drive("a", false)).unwrap();
    assert_eq!(cfg.drives.len(), 3);

    let mut cfg = VmConfig::default();
    cfg.apply(&drive("a", false)).unwrap();
    cfg.apply(&drive("b", false)).unwrap();
    cfg.apply(&drive("b", true)).unwrap();
    assert_eq!(ids(&cfg), ["b", "a"]);
}

#[test]
fn test_should_allow_one_root_across_block_and_pmem() {
    let mut cfg = VmConfig::default();
    cfg.apply(&pmem("p0", true)).unwrap();
    assert_eq!(
        cfg.apply(&drive("r", true)).unwrap_err(),
        ROOT_BLOCK_DEVICE_EXISTS
    );
    assert_eq!(
        cfg.apply(&pmem("p1", true)).unwrap_err(),
        ROOT_PMEM_DEVICE_EXISTS
    );
    cfg.apply(&pmem("p0", true)).unwrap();
    cfg.apply(&pmem("p1", false)).unwrap();
    assert_eq!(cfg.pmem.len(), 2);

    let mut cfg = VmConfig::default();
    cfg.apply(&drive("r", true)).unwrap();
    assert_eq!(
        cfg.apply(&pmem("p0", true)).unwrap_err(),
        ROOT_PMEM_WITH_BLOCK_ROOT
    );
}

#[test]
fn test_should_patch_and_delete_devices() {
    let mut cfg = VmConfig::default();
    cfg.apply(&drive("d", false)).unwrap();
    let upd = raw::<RawDriveUpdate, DriveUpdate>(
        json!({"drive_id": "d", "path_on_host": "/new", "rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}),
    );
    cfg.apply(&ApiAction::PatchDrive(upd)).unwrap();
    assert_eq!(cfg.drives[0].path_on_host.as_deref(), Some("/new"));
    assert!(cfg.drives[0].rate_limiter.unwrap().ops.is_some());
    cfg.apply(&ApiAction::DeleteDrive("d".into())).unwrap();
    assert!(cfg.drives.is_empty());
    cfg.apply(&net("eth0", None)).unwrap();
    cfg.apply(&ApiAction::DeleteNetworkInterface("eth0".into()))
        .unwrap();
    cfg.apply(&pmem("p", false)).unwrap();
    cfg.apply(&ApiAction::DeletePmem("p".into())).unwrap();
    assert!(cfg.network_interfaces.is_empty() && cfg.pmem.is_empty());
}

#[test]
fn test_should_reject_duplicate_macs_and_replace_interfaces() {
    let mut cfg = VmConfig::default();
    cfg.apply(&net("eth0", Some("06:00:00:00:00:01"))).unwrap();
    cfg.apply(&net("eth1", None)).unwrap();
    assert_eq!(
        cfg.apply(&net("eth2", Some("06:00:00:00:00:01")))
            .unwrap_err(),
        "Network config error: The MAC address is already in use: 06:00:00:00:00:01"
    );
    cfg.apply(&net("eth0", Some("06:00:00:00:00:01"))).unwrap();
    let order: Vec<_> = cfg
        .network_interfaces
        .iter()
        .map(|n| n.iface_id.as_str())
        .collect();
    assert_eq!(
        order,
        ["eth1", "eth0"],
        "Firecracker swap_removes then appends"
    );
}

#[test]
fn test_should_manage_mmds_store_and_config() {
    let mut cfg = VmConfig::default();
    assert_eq!(
        cfg.apply(&ApiAction::PatchMmds(json!({"a": 1})))
            .unwrap_err(),
        MMDS_NOT_INITIALIZED
    );
    cfg.apply(&ApiAction::PutMmds(json!({"a": {"b": 1, "c": 2}, "d": 3})))
        .unwrap();
    cfg.apply(&ApiAction::PatchMmds(
        json!({"a": {"b": null, "e": [1]}, "d": null}),
    ))
    .unwrap();
    assert_eq!(cfg.mmds(), Some(&json!({"a": {"c": 2, "e": [1]}})));
    assert!(
        !serde_json::to_string(&cfg).unwrap().contains("\"e\""),
        "store not in /vm/config"
    );

    let mmds_cfg = |ifaces: Value| {
        ApiAction::PutMmdsConfig(raw::<RawMmdsConfig, _>(
            json!({"network_interfaces": ifaces}),
        ))
    };
    assert_eq!(
        cfg.apply(&mmds_cfg(json!(["eth0"]))).unwrap_err(),
        INVALID_IFACE_ID
    );
    cfg.apply(&net("eth0", None)).unwrap();
    cfg.apply(&mmds_cfg(json!(["eth0"]))).unwrap();
    assert_eq!(
        serde_json::to_value(&cfg).unwrap()["mmds-config"]["network_interfaces"],
        json!(["eth0"])
    );
}

#[test]
fn test_should_merge_patch_per_rfc7396() {
    let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
    merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
    assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    let mut target = json!([1]);
    merge_patch(&mut target, &json!({"a": {"b": null}}));
    assert_eq!(target, json!({"a": {}}));
    merge_patch(&mut target, &json!("x"));
    assert_eq!(target, json!("x"));
}

#[test]
fn test_should_refuse_second_metrics_and_store_other_devices() {
    let mut cfg = VmConfig::default();
    let metrics =
        || ApiAction::PutMetrics(raw::<RawMetricsConfig, _>(json!({"metrics_path": "/m"})));
    cfg.apply(&metrics()).unwrap();
    assert_eq!(cfg.apply(&metrics()).unwrap_err(), METRICS_REINIT);
    cfg.apply(&ApiAction::PutVsock(raw::<RawVsockConfig, _>(
        json!({"guest_cid": 3, "uds_path": "/v"}),
    )))
    .unwrap();
    cfg.apply(&ApiAction::PutEntropy(EntropyConfig::default()))
        .unwrap();
    cfg.apply(&ApiAction::PutSerial(SerialConfig::default()))
        .unwrap();
    cfg.apply(&ApiAction::PutHotplugMemory(
        raw::<RawHotplugMemoryConfig, _>(json!({"total_size_mib": 256})),
    ))
    .unwrap();
    cfg.apply(&ApiAction::PutCpuConfig(CpuConfig::default()))
        .unwrap();
    cfg.apply(&ApiAction::Shutdown).unwrap();
    let v = serde_json::to_value(&cfg).unwrap();
    assert_eq!(v["vsock"], json!({"guest_cid": 3, "uds_path": "/v"}));
    assert_eq!(v["entropy"], json!({"rate_limiter": null}));
    assert_eq!(v["memory-hotplug"]["total_size_mib"], 256);
    assert_eq!(v["metrics"], Value::Null);
    assert!(cfg.serial.is_some() && cfg.cpu_config.is_some());
}

#[test]
fn test_should_convert_config_file_in_firecracker_order() {
    let doc = json!({
        "memory-hotplug": {"total_size_mib": 256},
        "pmem": [{"id": "p0", "path_on_host": "/p"}],
        "entropy": {},
        "mmds-config": {"network_interfaces": ["eth0"]},
        "balloon": {"amount_mib": 1},
        "vsock": {"guest_cid": 3, "uds_path": "/v"},
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
        "drives": [{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/r"}],
        "boot-source": {"kernel_image_path": "/k"},
        "cpu-config": {"kvm_capabilities": ["1"]},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
        "metrics": {"metrics_path": "/m"},
        "logger": {"level": "Debug"},
        "unknown-key": {"ignored": true}
    });
    let file: RawConfigFile = serde_json::from_value(doc).unwrap();
    let actions = file.actions_in_order(GuestArch::X86_64).unwrap();
    let names: Vec<_> = actions.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "logger",
            "metrics",
            "machine-config",
            "cpu-config",
            "boot-source",
            "drives",
            "network-interfaces",
            "vsock",
            "balloon",
            "mmds-config",
            "entropy",
            "pmem",
            "memory-hotplug"
        ]
    );
    let mut cfg = VmConfig::default();
    for (_, action) in &actions {
        cfg.apply(action).unwrap();
    }
    assert_eq!(cfg.machine_config.vcpu_count, 2);
    assert_eq!(
        cfg.mmds_config.as_ref().unwrap().network_interfaces,
        ["eth0"]
    );
}

#[test]
fn test_should_require_drives_and_boot_source() {
    let err =
        serde_json::from_str::<RawConfigFile>(r#"{"boot-source":{"kernel_image_path":"/k"}}"#)
            .unwrap_err();
    assert!(
        err.to_string().starts_with("missing field `drives`"),
        "{err}"
    );
    let err = serde_json::from_str::<RawConfigFile>(r#"{"drives":[]}"#).unwrap_err();
    assert!(
        err.to_string().starts_with("missing field `boot-source`"),
        "{err}"
    );
    let err = serde_json::from_str::<RawConfigFile>(
        r#"{"drives":[],"boot-source":{"kernel_image_path":"/k","bogus":1}}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("unknown field `bogus`"),
        "{err}"
    );
}

#[test]
fn test_should_report_member_errors() {
    let file: RawConfigFile = serde_json::from_value(json!({
        "drives": [],
        "boot-source": {"kernel_image_path": "/k"},
        "machine-config": {"vcpu_count": 0, "mem_size_mib": 128}
    }))
    .unwrap();
    let (member, msg) = file.actions_in_order(GuestArch::X86_64).unwrap_err();
    assert_eq!(member, "machine-config");
    assert_eq!(msg, crate::schemas::machine_config::INVALID_VCPU_COUNT);

    let drives: Vec<Value> = (0..257)
        .map(
            |i| json!({"drive_id": format!("d{i}"), "is_root_device": false, "path_on_host": "/d"}),
        )
        .collect();
    let file: RawConfigFile = serde_json::from_value(
        json!({"drives": drives, "boot-source": {"kernel_image_path": "/k"}}),
    )
    .unwrap();
    assert_eq!(
        file.actions_in_order(GuestArch::X86_64).unwrap_err(),
        (
            "drives".to_owned(),
            "Invalid drives: exceeds 256 entries (got 257)".to_owned()
        )
    );
}

#[test]
fn test_should_resolve_cpu_config_paths_through_the_caller() {
    let mut file: RawConfigFile = serde_json::from_value(json!({
        "drives": [], "boot-source": {"kernel_image_path": "/k"}, "cpu-config": "/t.json"
    }))
    .unwrap();
    assert_eq!(file.cpu_config_path(), Some("/t.json"));
    let (member, msg) = file
        .clone()
        .actions_in_order(GuestArch::X86_64)
        .unwrap_err();
    assert_eq!(member, "cpu-config");
    assert!(msg.starts_with(UNRESOLVED_CPU_CONFIG_PATH));
    let mut bad = file.clone();
    bad.resolve_cpu_config("{not json".to_owned());
    assert_eq!(
        bad.actions_in_order(GuestArch::X86_64).unwrap_err(),
        (
            "cpu-config".to_owned(),
            "key must be a string at line 1 column 2".to_owned()
        )
    );
    let mut foreign = file.clone();
    foreign.resolve_cpu_config(r#"{"reg_modifiers":[]}"#.to_owned());
    assert_eq!(
        foreign.actions_in_order(GuestArch::X86_64).unwrap_err().1,
        "unknown field `reg_modifiers`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers` at line 1 column 16"
    );
    file.resolve_cpu_config(r#"{"kvm_capabilities":["!1"]}"#.to_owned());
    assert_eq!(file.cpu_config_path(), None);
    let actions = file.actions_in_order(GuestArch::X86_64).unwrap();
    assert!(matches!(actions[0].1, ApiAction::PutCpuConfig(_)));
}

#[test]
fn test_should_cap_lists_when_applying() {
    let mut cfg = VmConfig::default();
    for i in 0..MAX_LIST_ENTRIES {
        cfg.apply(&drive(&format!("d{i}"), false)).unwrap();
    }
    assert_eq!(
        cfg.apply(&drive("extra", false)).unwrap_err(),
        "Invalid drives: exceeds 256 entries (got 257)"
    );
    cfg.apply(&drive("d0", false)).unwrap();
}

#[test]
fn test_should_keep_one_template_slot_like_firecracker() {
    use crate::schemas::cpu_config::KvmCapability;
    use crate::schemas::machine_config::{
        CpuTemplate, MachineConfigUpdate, RawMachineConfigUpdate,
    };
    let custom = CpuConfig::x86(vec![KvmCapability::Add(9999)], vec![], vec![]);
    let patch = |json: serde_json::Value| {
        let raw: RawMachineConfigUpdate = serde_json::from_value(json).unwrap();
        ApiAction::PatchMachineConfig(MachineConfigUpdate::try_from(raw).unwrap())
    };
    let mut cfg = VmConfig::default();
    // Static then custom: the custom template wins and GET /machine-config shows no template.
    cfg.apply(&patch(json!({"cpu_template": "T2"}))).unwrap();
    cfg.apply(&ApiAction::PutCpuConfig(custom.clone())).unwrap();
    assert_eq!(cfg.machine_config.cpu_template, None);
    assert_eq!(cfg.cpu_config.as_ref(), Some(&custom));
    // A machine-config update without a template keeps the custom one.
    cfg.apply(&patch(json!({"vcpu_count": 2}))).unwrap();
    assert_eq!(cfg.cpu_config.as_ref(), Some(&custom));
    // Custom then static: the static template wins.
    cfg.apply(&patch(json!({"cpu_template": "T2S"}))).unwrap();
    assert_eq!(cfg.machine_config.cpu_template, Some(CpuTemplate::T2S));
    assert_eq!(cfg.cpu_config, None);
    // "None" clears whichever template is set.
    cfg.apply(&ApiAction::PutCpuConfig(custom)).unwrap();
    cfg.apply(&patch(json!({"cpu_template": "None"}))).unwrap();
    assert_eq!(
        (cfg.machine_config.cpu_template, cfg.cpu_config.as_ref()),
        (None, None)
    );
    // A failed update changes nothing.
    cfg.apply(&ApiAction::PutCpuConfig(CpuConfig::default()))
        .unwrap();
    assert_eq!(
        cfg.apply(&patch(
            json!({"cpu_template": "T2", "huge_pages": "2M", "mem_size_mib": 127})
        ))
        .unwrap_err(),
        crate::schemas::machine_config::INVALID_MEMORY_SIZE
    );
    assert!(cfg.cpu_config.is_some());
    // cpu-config is never shown in GET /vm/config.
    assert_eq!(
        serde_json::to_value(&cfg).unwrap()["cpu-config"],
        Value::Null
    );
}

#[test]
fn test_should_validate_inline_cpu_config_for_the_architecture() {
    let file = |tpl: serde_json::Value| -> RawConfigFile {
        serde_json::from_value(json!({
            "drives": [], "boot-source": {"kernel_image_path": "/k"}, "cpu-config": tpl
        }))
        .unwrap()
    };
    let ok =
        file(json!({"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[]}]}));
    let actions = ok.actions_in_order(GuestArch::X86_64).unwrap();
    assert!(matches!(&actions[0].1, ApiAction::PutCpuConfig(c) if c.cpuid_modifiers.len() == 1));
    let (member, msg) = file(json!({"reg_modifiers": []}))
        .actions_in_order(GuestArch::X86_64)
        .unwrap_err();
    assert_eq!(member, "cpu-config");
    assert_eq!(
        msg,
        "unknown field `reg_modifiers`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers`"
    );
    assert!(
        file(json!({"reg_modifiers": []}))
            .actions_in_order(GuestArch::Aarch64)
            .is_ok()
    );
}
