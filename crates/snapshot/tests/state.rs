//! The state-file container: round trip, Firecracker's byte layout, every refusal and its text,
//! atomic replacement, and the reference binary's view of both kinds of file.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use squib_snapshot::*;

#[test]
fn test_should_round_trip_state() {
    let d = tempdir();
    let p = d.as_path().join("vm.state");
    save_state(&p, &sample_state()).unwrap();
    let back: TestState = load_state(&p).unwrap();
    assert_eq!(back, sample_state());
}

#[test]
fn test_should_write_firecracker_outer_layout() {
    let bytes = encode_state(&sample_state()).unwrap();
    // Header first: packing byte, magic LE, version string "11.0.0".
    assert_eq!(bytes[0], 0);
    assert_eq!(bytes[1..9], SNAPSHOT_MAGIC.to_le_bytes());
    assert_eq!(bytes[9], 6);
    assert_eq!(&bytes[10..16], b"11.0.0");
    // CRC64 of everything before it, raw little-endian.
    let n = bytes.len() - 8;
    assert_eq!(bytes[n..], crc64::crc64(0, &bytes[..n]).to_le_bytes());
    // The reference fixture starts with the same 16 bytes.
    assert_eq!(fixture()[..16], bytes[..16]);
    // And decodes as Firecracker's own header + squib's envelope.
    let snap: Snap<Env> = bitcode::deserialize(&bytes[..n]).unwrap();
    assert_eq!(snap.header.magic, SNAPSHOT_MAGIC);
    assert_eq!(snap.header.version, SNAPSHOT_VERSION);
    assert_eq!(snap.data.tag, "squib");
    assert_eq!(snap.data.format_version, SQUIB_FORMAT_VERSION);
}

#[test]
fn test_should_refuse_firecracker_state_file() {
    let e = decode_state::<TestState>(&fixture()).unwrap_err();
    assert!(matches!(e, SnapshotError::NotSquib), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the snapshot state file was not made by squib (a Firecracker snapshot?)"
    );
    let e = load_state::<TestState>(FIXTURE).unwrap_err();
    assert!(matches!(e, SnapshotError::NotSquib), "{e:?}");
}

#[test]
fn test_should_describe_both_kinds_as_firecracker_does() {
    assert_eq!(SNAPSHOT_VERSION_TEXT, format!("v{SNAPSHOT_VERSION}"));
    assert_eq!(describe(FIXTURE).unwrap(), "v11.0.0");
    let d = tempdir();
    let p = d.as_path().join("vm.state");
    save_state(&p, &sample_state()).unwrap();
    assert_eq!(describe(&p).unwrap(), "v11.0.0");
}

#[test]
fn test_should_match_reference_binary_describe_and_version() {
    if !std::path::Path::new(REFERENCE_FIRECRACKER).exists() {
        eprintln!("SKIPPED: no reference firecracker at {REFERENCE_FIRECRACKER}");
        return;
    }
    let run = |args: &[&str]| {
        let out = Command::new(REFERENCE_FIRECRACKER)
            .arg("--no-seccomp")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(run(&["--snapshot-version"]), SNAPSHOT_VERSION_TEXT);
    assert_eq!(
        run(&["--describe-snapshot", FIXTURE]),
        describe(FIXTURE).unwrap()
    );
}

#[test]
fn test_should_report_missing_file_and_directory_like_firecracker() {
    let d = tempdir();
    let e = load_state::<TestState>(d.as_path().join("nope")).unwrap_err();
    assert!(matches!(e, SnapshotError::Open(_)));
    assert_eq!(
        e.to_string(),
        "Failed to open snapshot file: No such file or directory (os error 2)"
    );
    assert_eq!(
        e.describe_failure_text(),
        "Unable to open snapshot state file: No such file or directory (os error 2)"
    );
    let e = describe(d.as_path()).unwrap_err();
    assert_eq!(e.to_string(), "IO Error: Is a directory (os error 21)");
    assert_eq!(
        e.describe_failure_text(),
        "Invalid data format version of snapshot file: IO Error: Is a directory (os error 21)"
    );
}

#[test]
fn test_should_refuse_oversize_file_before_reading() {
    let d = tempdir();
    let p = d.as_path().join("big.state");
    let f = fs::File::create(&p).unwrap();
    f.set_len(64 << 30).unwrap(); // sparse 64 GiB: reading it would take minutes
    let e = load_state::<TestState>(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Snapshot size exceeds limit of 10000000 bytes"
    );
    f.set_len(STATE_SIZE_LIMIT as u64 + 1).unwrap();
    assert!(matches!(
        describe(&p),
        Err(SnapshotError::SizeLimitExceeded(_))
    ));
    let big = vec![0u8; STATE_SIZE_LIMIT + 1];
    assert!(matches!(
        decode_state::<TestState>(&big),
        Err(SnapshotError::SizeLimitExceeded(STATE_SIZE_LIMIT))
    ));
}

#[test]
fn test_should_refuse_state_too_large_to_load_at_save() {
    let d = tempdir();
    let p = d.as_path().join("vm.state");
    // Incompressible bytes (bitcode packs low-entropy byte vectors).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let huge: Vec<u8> = (0..STATE_SIZE_LIMIT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect();
    let e = save_state(&p, &huge).unwrap_err();
    assert!(matches!(e, SnapshotError::TooLargeToSave(_)), "{e:?}");
    assert!(!p.exists());
}

#[test]
fn test_should_refuse_short_truncated_garbage_and_crc_damage() {
    let good = encode_state(&sample_state()).unwrap();
    let e = decode_state::<TestState>(&good[..5]).unwrap_err();
    assert_eq!(e.to_string(), "IO Error: File too short to contain CRC");
    let e = decode_state::<TestState>(&good[..good.len() - 1]).unwrap_err();
    assert_eq!(e.to_string(), "CRC64 validation failed");
    let mut flipped = good.clone();
    flipped[100] ^= 0x10;
    assert!(matches!(
        decode_state::<TestState>(&flipped),
        Err(SnapshotError::Crc64)
    ));
    // Garbage with a valid CRC reaches the decoder.
    let mut garbage: Vec<u8> = (0..500u32).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect();
    reseal(&mut garbage);
    let e = decode_state::<TestState>(&garbage).unwrap_err();
    assert!(matches!(e, SnapshotError::Bitcode(_)), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("An error occurred during bitcode serialization: ")
    );
    // An empty-but-CRC'd body.
    let mut eight = vec![0u8; 8];
    reseal(&mut eight);
    assert!(decode_state::<TestState>(&eight).is_err());
    assert!(describe_bytes(&eight).is_err());
}

#[test]
fn test_should_check_magic_and_version_like_firecracker() {
    let env = |payload: Vec<u8>| Env {
        tag: "squib".into(),
        format_version: SQUIB_FORMAT_VERSION,
        payload,
    };
    let payload = bitcode::serialize(&sample_state()).unwrap();

    let aarch64 = forged(0x0710_1984_AAAA_0000, "11.0.0", env(payload.clone()));
    let e = decode_state::<TestState>(&aarch64).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Magic value does not match arch: {}",
            0x0710_1984_AAAA_0000u64
        )
    );

    let major = forged(SNAPSHOT_MAGIC, "12.0.0", env(payload.clone()));
    let e = decode_state::<TestState>(&major).unwrap_err();
    assert_eq!(e.to_string(), "Invalid data version: 12.0.0");
    let minor = forged(SNAPSHOT_MAGIC, "11.1.0", env(payload.clone()));
    assert!(matches!(
        decode_state::<TestState>(&minor),
        Err(SnapshotError::InvalidFormatVersion(_))
    ));
    let older = forged(SNAPSHOT_MAGIC, "10.0.0", env(payload.clone()));
    assert!(decode_state::<TestState>(&older).is_err());
    // Any patch level of 11.0 loads, as in Firecracker.
    let patch = forged(SNAPSHOT_MAGIC, "11.0.7", env(payload.clone()));
    assert_eq!(decode_state::<TestState>(&patch).unwrap(), sample_state());
    assert_eq!(describe_bytes(&patch).unwrap(), "v11.0.7");

    // A foreign data type with a wrong magic reports the magic, not "not squib".
    let foreign = forged(0xdead_beef, "11.0.0", vec![1u32, 2, 3]);
    assert!(matches!(
        decode_state::<TestState>(&foreign),
        Err(SnapshotError::InvalidMagic(0xdead_beef))
    ));
}

#[test]
fn test_should_check_squib_envelope() {
    let payload = bitcode::serialize(&sample_state()).unwrap();
    let other_tag = forged(
        SNAPSHOT_MAGIC,
        "11.0.0",
        Env {
            tag: "other".into(),
            format_version: SQUIB_FORMAT_VERSION,
            payload: payload.clone(),
        },
    );
    assert!(matches!(
        decode_state::<TestState>(&other_tag),
        Err(SnapshotError::NotSquib)
    ));
    for version in [
        SQUIB_FORMAT_VERSION + 1,
        SQUIB_FORMAT_VERSION - 1,
        0,
        u32::MAX,
    ] {
        let other_version = forged(
            SNAPSHOT_MAGIC,
            "11.0.0",
            Env {
                tag: "squib".into(),
                format_version: version,
                payload: payload.clone(),
            },
        );
        let e = decode_state::<TestState>(&other_version).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the snapshot state file has squib format version {version}; this squib reads version {SQUIB_FORMAT_VERSION} only"
            )
        );
    }
    let wrong_type = forged(
        SNAPSHOT_MAGIC,
        "11.0.0",
        Env {
            tag: "squib".into(),
            format_version: SQUIB_FORMAT_VERSION,
            payload: vec![1, 2, 3],
        },
    );
    let e = decode_state::<TestState>(&wrong_type).unwrap_err();
    assert!(matches!(e, SnapshotError::State(_)), "{e:?}");
    // A squib file holding another state type: a clean error too.
    let other_state = encode_state(&vec!["a".to_string(); 3]).unwrap();
    assert!(matches!(
        decode_state::<TestState>(&other_state),
        Err(SnapshotError::State(_))
    ));
}

#[test]
fn test_should_keep_previous_state_when_save_fails_and_clean_stale_temps() {
    let d = tempdir();
    let p = d.as_path().join("vm.state");
    save_state(&p, &sample_state()).unwrap();
    // A crash mid-save leaves a temp file from a dead process: the next save removes it.
    let stale = d.as_path().join(".vm.state.squib-tmp.2147483632.3");
    fs::write(&stale, b"half").unwrap();
    let mut s2 = sample_state();
    s2.mem_size_mib = 256;
    save_state(&p, &s2).unwrap();
    assert!(!stale.exists());
    assert_eq!(load_state::<TestState>(&p).unwrap(), s2);
    // A failing save (directory gone) leaves nothing behind and reports FC's form.
    let gone = d.as_path().join("missing-dir").join("vm.state");
    let e = save_state(&gone, &s2).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Cannot perform open on the snapshot backing file: "),
        "{e}"
    );
    // Saving onto a directory is refused.
    let e = save_state(d.as_path(), &s2).unwrap_err();
    assert!(e.to_string().contains("Is a directory"), "{e}");
    let names: Vec<_> = fs::read_dir(d.as_path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("vm.state")]);
}
