//! virtio-balloon: inflate/deflate PFN arrays, statistics, free-page hinting and reporting
//! chains, with every queue configured.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_devices::virtio::{Balloon, BalloonConfig};
use squib_fuzz::{guest_memory, run_virtio};

fuzz_target!(|data: &[u8]| {
    let Ok(dev) = Balloon::new(BalloonConfig {
        amount_mib: 1,
        deflate_on_oom: true,
        stats_polling_interval_s: 1,
        free_page_hinting: true,
        free_page_reporting: true,
    }) else {
        return;
    };
    run_virtio(dev, &guest_memory(&[]), &mut squib_fuzz::no_input, data);
});
