//! virtio-block requests (IN/OUT/FLUSH/GET_ID/DISCARD, any chain shape) on a 64 KiB file, Sync engine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_devices::RateLimiter;
use squib_devices::virtio::{Block, BlockConfig, CacheType, IoEngine};
use squib_fuzz::{guest_memory, run_virtio, scratch_file};

fuzz_target!(|data: &[u8]| {
    let read_only = data.last().is_some_and(|b| b & 1 == 1);
    let Ok(dev) = Block::new(BlockConfig {
        id: "fuzz0".into(),
        path: scratch_file("disk", 0x1_0000),
        read_only,
        root: false,
        partuuid: None,
        cache_type: CacheType::Writeback,
        io_engine: IoEngine::Sync,
        rate_limiter: RateLimiter::default(),
    }) else {
        return;
    };
    run_virtio(dev, &guest_memory(&[]), &mut squib_fuzz::no_input, data);
});
