//! virtio-pmem FLUSH requests (any chain shape) against a mapped 8 KiB backing file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_devices::RateLimiter;
use squib_devices::virtio::{Pmem, PmemDeviceConfig};
use squib_fuzz::{guest_memory, run_virtio, scratch_file};
use squib_sys::pmem::PmemMapping;
use vm_memory::GuestAddress;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("pmem", 8192);
    let read_only = data.last().is_some_and(|b| b & 1 == 1);
    let Ok(mapping) = PmemMapping::open(&path, read_only, GuestAddress(512 << 30)) else {
        return;
    };
    let Ok(dev) = Pmem::new(
        PmemDeviceConfig {
            id: "pmem0".into(),
            path_on_host: path.display().to_string(),
            root_device: false,
        },
        mapping,
        RateLimiter::default(),
    ) else {
        return;
    };
    run_virtio(dev, &guest_memory(&[]), &mut squib_fuzz::no_input, data);
});
