//! Property tests: no input makes parsing, validation, application or serialization panic.
//!
//! Every `Raw*` type is fed arbitrary bytes, arbitrary strings and arbitrary JSON values
//! (biased towards its own field names); whatever parses is validated with `TryFrom`, and the
//! validated value is serialized. The config-file document gets the same treatment, and the
//! resulting actions are applied to a fresh [`VmConfig`].

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use squib_config::{
    ApiAction,
    schemas::{
        actions::{InstanceAction, RawInstanceActionInfo},
        balloon::{
            BalloonConfig, BalloonStartCmd, BalloonStatsUpdate, BalloonUpdate, RawBalloonConfig,
            RawBalloonStartCmd, RawBalloonStatsUpdate, RawBalloonUpdate,
        },
        boot_source::{BootSource, RawBootSource},
        cpu_config::CpuConfig,
        drive::{DriveConfig, DriveUpdate, RawDriveConfig, RawDriveUpdate},
        entropy::{EntropyConfig, RawEntropyConfig},
        hotplug_memory::{
            HotplugMemoryConfig, HotplugMemoryUpdate, RawHotplugMemoryConfig,
            RawHotplugMemoryUpdate,
        },
        logger::{LoggerConfig, RawLoggerConfig},
        machine_config::{
            MachineConfig, MachineConfigUpdate, RawMachineConfig, RawMachineConfigUpdate,
        },
        metrics::{MetricsConfig, RawMetricsConfig},
        mmds::{MmdsConfig, RawMmdsConfig},
        network_interface::{
            NetworkInterfaceConfig, NetworkInterfaceUpdate, RawNetworkInterfaceConfig,
            RawNetworkInterfaceUpdate,
        },
        pmem::{PmemConfig, PmemUpdate, RawPmemConfig, RawPmemUpdate},
        rate_limiter::{
            RateLimiterConfig, RawRateLimiterConfig, RawTokenBucketConfig, TokenBucketConfig,
        },
        serial::{RawSerialConfig, SerialConfig},
        snapshot::{
            RawSnapshotCreateParams, RawSnapshotLoadParams, SnapshotCreateParams,
            SnapshotLoadParams,
        },
        vm::{RawVm, VmStateUpdate},
        vsock::{RawVsockConfig, VsockConfig},
    },
    vm_config::{RawConfigFile, VmConfig},
};

/// Parse `bytes` as `R`, validate into `T`, serialize the result. Must never panic.
fn exercise<R, T>(bytes: &[u8])
where
    R: DeserializeOwned,
    T: TryFrom<R, Error = String> + serde::Serialize,
{
    if let Ok(raw) = serde_json::from_slice::<R>(bytes)
        && let Ok(value) = T::try_from(raw)
    {
        let _ = serde_json::to_string(&value);
    }
}

/// Every `Raw*` → validated pair.
fn exercise_all(bytes: &[u8]) {
    exercise::<RawInstanceActionInfo, InstanceAction>(bytes);
    exercise::<RawBalloonConfig, BalloonConfig>(bytes);
    exercise::<RawBalloonUpdate, BalloonUpdate>(bytes);
    exercise::<RawBalloonStatsUpdate, BalloonStatsUpdate>(bytes);
    exercise::<RawBalloonStartCmd, BalloonStartCmd>(bytes);
    exercise::<RawBootSource, BootSource>(bytes);
    for arch in [
        squib_core::GuestArch::X86_64,
        squib_core::GuestArch::Aarch64,
    ] {
        if let Ok(template) = CpuConfig::from_json(bytes, arch) {
            let _ = serde_json::to_string(&template);
        }
    }
    exercise::<RawDriveConfig, DriveConfig>(bytes);
    exercise::<RawDriveUpdate, DriveUpdate>(bytes);
    exercise::<RawEntropyConfig, EntropyConfig>(bytes);
    exercise::<RawHotplugMemoryConfig, HotplugMemoryConfig>(bytes);
    exercise::<RawHotplugMemoryUpdate, HotplugMemoryUpdate>(bytes);
    exercise::<RawLoggerConfig, LoggerConfig>(bytes);
    exercise::<RawMachineConfig, MachineConfig>(bytes);
    exercise::<RawMachineConfigUpdate, MachineConfigUpdate>(bytes);
    exercise::<RawMetricsConfig, MetricsConfig>(bytes);
    exercise::<RawMmdsConfig, MmdsConfig>(bytes);
    exercise::<RawNetworkInterfaceConfig, NetworkInterfaceConfig>(bytes);
    exercise::<RawNetworkInterfaceUpdate, NetworkInterfaceUpdate>(bytes);
    exercise::<RawPmemConfig, PmemConfig>(bytes);
    exercise::<RawPmemUpdate, PmemUpdate>(bytes);
    exercise::<RawTokenBucketConfig, TokenBucketConfig>(bytes);
    exercise::<RawRateLimiterConfig, RateLimiterConfig>(bytes);
    exercise::<RawSerialConfig, SerialConfig>(bytes);
    exercise::<RawSnapshotCreateParams, SnapshotCreateParams>(bytes);
    exercise::<RawSnapshotLoadParams, SnapshotLoadParams>(bytes);
    exercise::<RawVm, VmStateUpdate>(bytes);
    exercise::<RawVsockConfig, VsockConfig>(bytes);
    exercise_config_file(bytes);
}

/// Parse a config file, convert it, apply the actions, serialize the document.
fn exercise_config_file(bytes: &[u8]) {
    let Ok(file) = serde_json::from_slice::<RawConfigFile>(bytes) else {
        return;
    };
    let Ok(actions) = file.actions_in_order(squib_core::GuestArch::X86_64) else {
        return;
    };
    let mut cfg = VmConfig::default();
    for (_, action) in &actions {
        let _ = cfg.apply(action);
    }
    let _ = serde_json::to_string(&cfg);
}

/// Field names of every schema, so random objects hit real fields often.
const KEYS: &[&str] = &[
    "action_type",
    "amount_mib",
    "deflate_on_oom",
    "stats_polling_interval_s",
    "free_page_hinting",
    "free_page_reporting",
    "acknowledge_on_stop",
    "kernel_image_path",
    "initrd_path",
    "boot_args",
    "kvm_capabilities",
    "cpuid_modifiers",
    "msr_modifiers",
    "reg_modifiers",
    "vcpu_features",
    "leaf",
    "subleaf",
    "flags",
    "modifiers",
    "register",
    "bitmap",
    "addr",
    "index",
    "drive_id",
    "partuuid",
    "is_root_device",
    "cache_type",
    "is_read_only",
    "path_on_host",
    "rate_limiter",
    "io_engine",
    "socket",
    "bandwidth",
    "ops",
    "size",
    "one_time_burst",
    "refill_time",
    "total_size_mib",
    "block_size_mib",
    "slot_size_mib",
    "requested_size_mib",
    "log_path",
    "level",
    "show_level",
    "show_log_origin",
    "module",
    "vcpu_count",
    "mem_size_mib",
    "smt",
    "cpu_template",
    "track_dirty_pages",
    "huge_pages",
    "metrics_path",
    "emit_id",
    "properties",
    "version",
    "network_interfaces",
    "ipv4_address",
    "imds_compat",
    "iface_id",
    "host_dev_name",
    "guest_mac",
    "mtu",
    "rx_rate_limiter",
    "tx_rate_limiter",
    "id",
    "pmem_id",
    "root_device",
    "read_only",
    "serial_out_path",
    "snapshot_type",
    "snapshot_path",
    "mem_file_path",
    "mem_backend",
    "backend_type",
    "backend_path",
    "enable_diff_snapshots",
    "resume_vm",
    "network_overrides",
    "vsock_override",
    "uds_path",
    "clock_realtime",
    "state",
    "guest_cid",
    "vsock_id",
    "boot-source",
    "drives",
    "machine-config",
    "cpu-config",
    "network-interfaces",
    "mmds-config",
    "memory-hotplug",
    "balloon",
    "vsock",
    "entropy",
    "pmem",
    "logger",
    "metrics",
];

/// Interesting string values (enum names, ids, formats).
const STRINGS: &[&str] = &[
    "",
    "eth0",
    "rootfs",
    "a-b",
    "/tmp/x",
    "0b01x",
    "0x10",
    "12",
    "!3",
    "eax",
    "V1",
    "V2",
    "Unsafe",
    "Writeback",
    "Sync",
    "Async",
    "None",
    "Transparent",
    "2M",
    "T2",
    "Snapshot",
    "Full",
    "Diff",
    "File",
    "Uffd",
    "Paused",
    "Resumed",
    "InstanceStart",
    "warn",
    "Info",
    "169.254.169.254",
    "169.254.0.1",
    "aa:bb:cc:dd:ee:ff",
    "tap0",
    "\u{0}",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..300).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(STRINGS).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn test_should_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise_all(&bytes);
    }

    #[test]
    fn test_should_never_panic_on_arbitrary_strings(s in ".{0,200}") {
        exercise_all(s.as_bytes());
    }

    #[test]
    fn test_should_never_panic_on_arbitrary_json(v in json_value()) {
        exercise_all(v.to_string().as_bytes());
    }

    #[test]
    fn test_should_never_panic_on_config_files(
        members in prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..14),
        drives in prop::collection::vec(json_value(), 0..4),
    ) {
        let mut doc = Map::new();
        doc.insert("boot-source".into(), serde_json::json!({"kernel_image_path": "/k"}));
        doc.insert("drives".into(), Value::Array(drives));
        for (k, v) in members {
            doc.insert(k.to_owned(), v);
        }
        exercise_config_file(Value::Object(doc).to_string().as_bytes());
    }

    #[test]
    fn test_should_never_panic_applying_arbitrary_action_sequences(
        bodies in prop::collection::vec(prop_oneof![(0usize..8, json_value()), plausible_body()], 0..32),
    ) {
        let mut cfg = VmConfig::default();
        for (kind, body) in bodies {
            if let Some(action) = to_action(kind, body) {
                let before = cfg.clone();
                if cfg.apply(&action).is_err() {
                    prop_assert_eq!(&cfg, &before, "a failed apply must not change the document");
                }
            }
        }
        let _ = serde_json::to_string(&cfg);
    }
}

/// Bodies that usually validate, so sequences exercise the stateful rules.
fn plausible_body() -> impl Strategy<Value = (usize, Value)> {
    let id = prop::sample::select(&["a", "b", "rootfs", "eth0"][..]);
    let mac = prop::sample::select(&["06:00:00:00:00:01", "06:00:00:00:00:02"][..]);
    let pages = prop::sample::select(&["None", "Transparent", "2M"][..]);
    prop_oneof![
        (0u8..34, 0usize..300, any::<bool>(), pages).prop_map(|(v, m, smt, hp)| {
            (0, serde_json::json!({"vcpu_count": v, "mem_size_mib": m, "smt": smt, "huge_pages": hp}))
        }),
        (0usize..300).prop_map(|m| (1, serde_json::json!({"mem_size_mib": m}))),
        (id.clone(), any::<bool>()).prop_map(|(i, r)| {
            (2, serde_json::json!({"drive_id": i, "is_root_device": r, "path_on_host": "/d"}))
        }),
        (id.clone(), any::<bool>()).prop_map(|(i, r)| {
            (3, serde_json::json!({"id": i, "path_on_host": "/p", "root_device": r}))
        }),
        (id, prop::option::of(mac)).prop_map(|(i, m)| {
            (4, serde_json::json!({"iface_id": i, "host_dev_name": "tap0", "guest_mac": m}))
        }),
        (0u64..300).prop_map(|a| (5, serde_json::json!({"amount_mib": a}))),
    ]
}

fn parse<R: DeserializeOwned, T: TryFrom<R, Error = String>>(v: Value) -> Option<T> {
    T::try_from(serde_json::from_value::<R>(v).ok()?).ok()
}

fn to_action(kind: usize, body: Value) -> Option<ApiAction> {
    Some(match kind {
        0 => ApiAction::PutMachineConfig(parse::<RawMachineConfig, _>(body)?),
        1 => ApiAction::PatchMachineConfig(parse::<RawMachineConfigUpdate, _>(body)?),
        2 => ApiAction::PutDrive(parse::<RawDriveConfig, _>(body)?),
        3 => ApiAction::PutPmem(parse::<RawPmemConfig, _>(body)?),
        4 => ApiAction::PutNetworkInterface(parse::<RawNetworkInterfaceConfig, _>(body)?),
        5 => ApiAction::PutBalloon(parse::<RawBalloonConfig, _>(body)?),
        6 => ApiAction::PatchMmds(body),
        _ => ApiAction::PutMmds(body),
    })
}
