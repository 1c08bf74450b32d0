//! The DSDT's definition block: AML for the virtio-mmio devices and the legacy devices, encoded
//! as Firecracker 1.17 encodes them (byte for byte).
//!
//! Objects come from the `acpi_tables` crate's [`aml`] module. Its integers use the shortest
//! encoding (`0` → `ZeroOp`); Firecracker's AML always writes a `u8` with `BytePrefix` and a `u32`
//! with `DWordPrefix`. [`ByteConst`] and [`DWordConst`] keep that encoding where Firecracker
//! uses those types (`_UID`s), so the bytes match and a differential check stays exact.
//!
//! Order: each virtio device in attach order (root block device first, so it is `/dev/vda`),
//! then COM1 and the PS/2 controller.

use acpi_tables::{Aml, AmlSink, aml};

use crate::error::ArchError;
use crate::layout::{
    COM1_GSI, COM1_PORT, GSI_LEGACY_END, GSI_LEGACY_START, I8042_COMMAND_PORT, I8042_DATA_PORT,
    I8042_GSI,
};

use super::MmioDeviceInfo;

/// `BytePrefix` + byte, whatever the value (Firecracker's `u8` AML encoding).
struct ByteConst(u8);

impl Aml for ByteConst {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x0a);
        sink.byte(self.0);
    }
}

/// `DWordPrefix` + 4 bytes, whatever the value (Firecracker's `u32` AML encoding).
struct DWordConst(u32);

impl Aml for DWordConst {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x0c);
        sink.dword(self.0);
    }
}

/// Number of bytes COM1 decodes.
const COM1_PORT_COUNT: u8 = 8;

/// `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }`.
fn edge_interrupt(gsi: u32) -> aml::Interrupt {
    aml::Interrupt::new(true, true, false, false, gsi)
}

/// A virtio-mmio device: `Device (Vnnn)` with `_HID "LNRO0005"`, `_UID nnn`, `_CCA One` and a
/// `_CRS` of its 32-bit fixed memory window and its interrupt; `nnn` = GSI − 5.
fn append_virtio(dev: &MmioDeviceInfo, out: &mut Vec<u8>) -> Result<(), ArchError> {
    let bad = || ArchError::AcpiDevice {
        addr: dev.addr,
        len: dev.len,
        gsi: dev.gsi,
    };
    if !(GSI_LEGACY_START..=GSI_LEGACY_END).contains(&dev.gsi) || dev.len == 0 {
        return Err(bad());
    }
    let base = u32::try_from(dev.addr).map_err(|_| bad())?;
    let len = u32::try_from(dev.len).map_err(|_| bad())?;
    base.checked_add(len - 1).ok_or_else(bad)?;
    let uid = dev.gsi - GSI_LEGACY_START;
    let name = format!("V{uid:03}");
    let window = aml::Memory32Fixed::new(true, base, len);
    let irq = edge_interrupt(dev.gsi);
    let crs = aml::ResourceTemplate::new(vec![&window, &irq]);
    aml::Device::new(
        name.as_str().into(),
        vec![
            &aml::Name::new("_HID".into(), &"LNRO0005"),
            &aml::Name::new("_UID".into(), &DWordConst(uid)),
            &aml::Name::new("_CCA".into(), &aml::ONE),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(out);
    Ok(())
}

/// COM1 (`\_SB_.COM1`, `PNP0501`) and the PS/2 controller (`\_SB_.PS2_`, `PNP0303`), as
/// Firecracker's legacy device manager describes them.
fn append_legacy(out: &mut Vec<u8>) {
    let com1_irq = edge_interrupt(COM1_GSI);
    let com1_io = aml::IO::new(COM1_PORT, COM1_PORT, 1, COM1_PORT_COUNT);
    let com1_crs = aml::ResourceTemplate::new(vec![&com1_irq, &com1_io]);
    aml::Device::new(
        "_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &ByteConst(0)),
            &aml::Name::new("_DDN".into(), &"COM1"),
            &aml::Name::new("_CRS".into(), &com1_crs),
        ],
    )
    .to_aml_bytes(out);

    let data = aml::IO::new(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1);
    // Firecracker lists the command port too, "so Linux stops complaining".
    let command = aml::IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    let kbd_irq = edge_interrupt(I8042_GSI);
    let ps2_crs = aml::ResourceTemplate::new(vec![&data, &command, &kbd_irq]);
    let present = ByteConst(0x0f);
    let ret = aml::Return::new(&present);
    aml::Device::new(
        "_SB_.PS2_".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0303")),
            &aml::Method::new("_STA".into(), 0, false, vec![&ret]),
            &aml::Name::new("_CRS".into(), &ps2_crs),
        ],
    )
    .to_aml_bytes(out);
}

/// The DSDT definition block for `devices` (virtio-mmio, in attach order) plus the legacy
/// devices.
pub(super) fn definition_block(devices: &[MmioDeviceInfo]) -> Result<Vec<u8>, ArchError> {
    let mut out = Vec::with_capacity(80 * devices.len() + 128);
    for dev in devices {
        append_virtio(dev, &mut out)?;
    }
    append_legacy(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u32) -> MmioDeviceInfo {
        MmioDeviceInfo {
            addr: 0xc000_1000 + u64::from(n) * 0x1000,
            len: 0x1000,
            gsi: 5 + n,
        }
    }

    #[test]
    fn test_virtio_device_aml_bytes() {
        let mut out = Vec::new();
        append_virtio(&dev(1), &mut out).unwrap();
        let expected: &[u8] = &[
            0x5b, 0x82, 0x45, 0x04, b'V', b'0', b'0', b'1', // Device (V001), PkgLength 0x45
            0x08, b'_', b'H', b'I', b'D', 0x0d, b'L', b'N', b'R', b'O', b'0', b'0', b'0', b'5', 0,
            0x08, b'_', b'U', b'I', b'D', 0x0c, 1, 0, 0, 0, // DWordConst 1
            0x08, b'_', b'C', b'C', b'A', 0x01, // One
            0x08, b'_', b'C', b'R', b'S', 0x11, 0x1a, 0x0a, 0x17, // Buffer (0x17)
            0x86, 0x09, 0x00, 0x01, 0x00, 0x20, 0x00, 0xc0, 0x00, 0x10, 0x00,
            0x00, // Memory32Fixed
            0x89, 0x06, 0x00, 0x03, 0x01, 0x06, 0x00, 0x00, 0x00, // Interrupt GSI 6
            0x79, 0x00, // EndTag
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn test_legacy_aml_has_com1_and_ps2() {
        let mut out = Vec::new();
        append_legacy(&mut out);
        let find = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"_SB_COM1"));
        assert!(find(b"_SB_PS2_"));
        // _HID EisaId ("PNP0501") and ("PNP0303") as DWords.
        assert!(find(&[
            b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01
        ]));
        assert!(find(&[
            b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x03, 0x03
        ]));
        // IO (Decode16, 0x3F8, 0x3F8, 1, 8) and the COM1 _UID as BytePrefix 0.
        assert!(find(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]));
        assert!(find(&[b'_', b'U', b'I', b'D', 0x0a, 0x00]));
    }

    #[test]
    fn test_invalid_devices_are_errors_not_panics() {
        let mut out = Vec::new();
        for bad in [
            MmioDeviceInfo { gsi: 4, ..dev(0) },
            MmioDeviceInfo { gsi: 24, ..dev(0) },
            MmioDeviceInfo {
                addr: 1 << 32,
                ..dev(0)
            },
            MmioDeviceInfo {
                addr: 0xffff_f000,
                len: 0x2000,
                gsi: 5,
            },
            MmioDeviceInfo { len: 0, ..dev(0) },
            MmioDeviceInfo {
                len: 1 << 32,
                ..dev(0)
            },
        ] {
            assert!(
                matches!(
                    append_virtio(&bad, &mut out),
                    Err(ArchError::AcpiDevice { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(out.is_empty());
    }
}
