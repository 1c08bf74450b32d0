//! Shared test helpers: a VMM-like state type, Firecracker's container types (to forge files),
//! and the reference fixture.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};

/// A state shaped like a VMM's: nested structs, enums, options, vectors, strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestState {
    pub vcpus: Vec<VcpuState>,
    pub mem_size_mib: u64,
    pub devices: Vec<Device>,
    pub boot_args: Option<String>,
    pub blob: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuState {
    pub regs: [u64; 18],
    pub msrs: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Device {
    Serial {
        ier: u8,
        lcr: u8,
        fifo: Vec<u8>,
    },
    Block {
        id: String,
        path: String,
        read_only: bool,
        queues: Vec<u16>,
    },
    Rng,
}

pub fn sample_state() -> TestState {
    TestState {
        vcpus: (0..2)
            .map(|i| VcpuState {
                regs: [i; 18],
                msrs: vec![(0x10, 0x1234_5678_9abc), (0xc000_0080, 0xd01)],
            })
            .collect(),
        mem_size_mib: 128,
        devices: vec![
            Device::Serial {
                ier: 1,
                lcr: 3,
                fifo: b"hello".to_vec(),
            },
            Device::Block {
                id: "rootfs".into(),
                path: "/tmp/rootfs.ext4".into(),
                read_only: false,
                queues: vec![256],
            },
            Device::Rng,
        ],
        boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
        blob: (0..=255u8).cycle().take(3000).collect(),
    }
}

/// Firecracker's header, to forge files.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hdr {
    pub magic: u64,
    pub version: semver::Version,
}

/// Firecracker's `Snapshot<Data>`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snap<D> {
    pub header: Hdr,
    pub data: D,
}

/// squib's envelope, mirrored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Env {
    pub tag: String,
    pub format_version: u32,
    pub payload: Vec<u8>,
}

/// bitcode + CRC trailer, as Firecracker writes.
pub fn seal<D: Serialize>(snap: &Snap<D>) -> Vec<u8> {
    let mut out = bitcode::serialize(snap).unwrap();
    let crc = crc64::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Recomputes the CRC trailer of a (mutated) file so the decoders behind it are reached.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() < 8 {
        return;
    }
    let n = bytes.len() - 8;
    let crc = crc64::crc64(0, &bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

pub fn forged<D: Serialize>(magic: u64, version: &str, data: D) -> Vec<u8> {
    seal(&Snap {
        header: Hdr {
            magic,
            version: semver::Version::parse(version).unwrap(),
        },
        data,
    })
}

pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/firecracker-1.17-x86_64.state"
);

pub fn fixture() -> Vec<u8> {
    std::fs::read(FIXTURE).unwrap()
}

pub fn tempdir() -> vmm_sys_util::tempdir::TempDir {
    vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/squib-snapshot-test-").unwrap()
}

pub const REFERENCE_FIRECRACKER: &str = "/work/shared/peers/firecracker";

/// Proptest case count: `SQUIB_PROPTEST_CASES` or `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("SQUIB_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
