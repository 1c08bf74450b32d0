//! virtio-mmio register file: any sequence of register reads/writes (status order, feature
//! selects, queue size/addresses/ready, notify, interrupt ack, reset, config space) with no
//! driver bring-up, over the entropy device, plus raw guest-memory pokes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_devices::RateLimiter;
use squib_devices::virtio::Entropy;
use squib_fuzz::{guest_memory, run_mmio_raw};

fuzz_target!(|data: &[u8]| {
    let Ok(dev) = Entropy::new(RateLimiter::default()) else {
        return;
    };
    run_mmio_raw(dev, &guest_memory(&[]), data);
});
