//! virtio-mem PLUG/UNPLUG/UNPLUG_ALL/STATE requests (any address, block count, chain shape),
//! with a requested size of 0-2 MiB set by the host, on a 2 MiB region of 64 KiB blocks.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use squib_devices::virtio::{MemGeometry, SlotMapper, VirtioMem};
use squib_fuzz::{guest_memory, run_virtio};

const REGION: u64 = 0x100_0000;
const SIZE: u64 = 0x20_0000;

#[derive(Debug)]
struct Mapper;
impl SlotMapper for Mapper {
    fn set_slot(&self, index: usize, _mapped: bool) -> Result<(), String> {
        // Some slots cannot be mapped: the device must keep a consistent state.
        if index == 1 {
            Err("no memslot".into())
        } else {
            Ok(())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let geometry = MemGeometry {
        addr: REGION,
        region_size: SIZE,
        block_size: 0x1_0000,
        slot_size: 0x8_0000,
    };
    let Ok(dev) = VirtioMem::new(geometry, Arc::new(Mapper)) else {
        return;
    };
    let mem = guest_memory(&[(REGION, usize::try_from(SIZE).expect("2 MiB"))]);
    // Host input: `PATCH /hotplug/memory` with 0..=2 MiB (or an invalid size).
    let mut patch = |dev: &mut VirtioMem, bytes: &[u8]| {
        let _ = dev.update_requested_size(u64::from(bytes.first().copied().unwrap_or(0)) % 4);
    };
    run_virtio(dev, &mem, &mut patch, data);
});
