//! virtio-vsock: guest packets on the TX queue (any header: ops, ports, lengths, credit), RX and
//! event queue chains, the muxer's host events, with the hybrid Unix-socket backend bound to a
//! per-process path (guest connections go to `<path>_<port>`, which does not exist: RST).
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_devices::virtio::{Vsock, VsockConfig};
use squib_fuzz::{guest_memory, no_input, run_virtio};

fuzz_target!(|data: &[u8]| {
    let uds_path =
        std::env::temp_dir().join(format!("squib-fuzz-vsock-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&uds_path);
    let Ok(dev) = Vsock::new(&VsockConfig {
        guest_cid: 3,
        uds_path,
    }) else {
        return;
    };
    run_virtio(dev, &guest_memory(&[]), &mut no_input, data);
});
