//! Snapshot state files: the container (size limit, CRC64, bitcode header, squib envelope) and
//! the `MicrovmState` payload, then the VMM's checks. The first input byte picks the layer, so
//! the fuzzer is not stuck behind the CRC: 0 = the whole file as given; 1 = the body with a
//! correct CRC appended; otherwise = the bitcode payload of `MicrovmState` directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_vmm::snapshot::{MicrovmState, check_state, state_from_bytes};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            let _ = state_from_bytes(rest);
            let _ = squib_snapshot::describe_bytes(rest);
        }
        1 => {
            let mut file = rest.to_vec();
            let crc = crc64::crc64(0, &file);
            file.extend_from_slice(&crc.to_le_bytes());
            let _ = state_from_bytes(&file);
            let _ = squib_snapshot::describe_bytes(&file);
        }
        _ => {
            if let Ok(state) = bitcode::deserialize::<MicrovmState>(rest)
                && let Ok(state) = check_state(state)
            {
                // What the loader does next with a checked state: lay out the memory.
                let _ = state.memory.restore_ranges();
                // A checked state re-encodes and decodes to the same state.
                let bytes = squib_snapshot::encode_state(&state).expect("re-encode");
                let again = state_from_bytes(&bytes).expect("decode a re-encoded state");
                assert_eq!(format!("{again:?}"), format!("{state:?}"));
            }
        }
    }
});
