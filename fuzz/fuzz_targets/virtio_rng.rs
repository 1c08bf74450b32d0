//! virtio-rng (entropy) chains.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_devices::RateLimiter;
use squib_devices::virtio::Entropy;
use squib_fuzz::{guest_memory, run_virtio};

fuzz_target!(|data: &[u8]| {
    let Ok(dev) = Entropy::new(RateLimiter::default()) else {
        return;
    };
    run_virtio(dev, &guest_memory(&[]), &mut squib_fuzz::no_input, data);
});
