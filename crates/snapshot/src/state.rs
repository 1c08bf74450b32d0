//! The snapshot *state* file: Firecracker 1.17's container around squib's own data.
//!
//! Outer form, byte-compatible with Firecracker (`src/vmm/src/snapshot/mod.rs`):
//!
//! ```text
//! bitcode(Snapshot { header: { magic: u64, version: semver::Version /* as "11.0.0" */ }, data })
//! CRC64 (Jones, crc64 2.0, seed 0) of every preceding byte, raw little-endian u64
//! ```
//!
//! bitcode lays the header out first (`00`, the magic as LE u64, the version string's length and
//! bytes), so the header alone decodes from a prefix; `describe` and the "not made by squib"
//! diagnosis use that. squib's `data` is a [`SquibEnvelope`]: the tag `"squib"`, squib's own
//! format version, and the bitcode of the caller's state, so the inner layout is versioned
//! independently of Firecracker's outer version and a Firecracker-made file is refused cleanly.
//!
//! Loading is bounded: files over [`STATE_SIZE_LIMIT`] are refused from their metadata before
//! they are read, and the read itself stops at the limit (for files whose size lies).
//!
//! Threading: stateless free functions, callable from any thread.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use semver::Version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::atomic::{AtomicWriteError, replace_file};

/// The magic at the start of an x86_64 snapshot state file (Firecracker's `SNAPSHOT_MAGIC_ID`).
pub const SNAPSHOT_MAGIC: u64 = 0x0710_1984_8664_0000;

/// The outer data-format version squib writes and reads (Firecracker 1.17's `SNAPSHOT_VERSION`).
pub const SNAPSHOT_VERSION: Version = Version::new(11, 0, 0);

/// `--snapshot-version` output (Firecracker prints `v{SNAPSHOT_VERSION}`).
pub const SNAPSHOT_VERSION_TEXT: &str = "v11.0.0";

/// Largest state file accepted, in bytes (Firecracker's `SNAPSHOT_DESERIALIZATION_BYTES_LIMIT`).
pub const STATE_SIZE_LIMIT: usize = 10_000_000;

/// The tag in every squib state file's envelope.
pub const SQUIB_TAG: &str = "squib";

/// Version of squib's envelope contents. Bump when the caller's state type changes
/// incompatibly; files with any other number are refused with a clear error instead of a
/// payload that fails to decode (or, worse, decodes into the wrong fields).
///
/// - 1: the first snapshot format;
/// - 2: `MachineState::huge_pages` and the vsock device's reset/unacked fields.
pub const SQUIB_FORMAT_VERSION: u32 = 2;

/// Length of the CRC64 trailer.
const CRC_LEN: usize = 8;

/// The longest header prefix tried when decoding the header alone (1 + 8 + length + version).
const MAX_HEADER_LEN: usize = 512;

/// Errors of the state-file container. Texts are Firecracker's where it has them.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The file could not be opened.
    #[error("Failed to open snapshot file: {0}")]
    Open(#[source] io::Error),
    /// Reading failed (including reading a directory: `Is a directory (os error 21)`).
    #[error("IO Error: {0}")]
    Io(#[source] io::Error),
    /// The file is over [`STATE_SIZE_LIMIT`].
    #[error("Snapshot size exceeds limit of {0} bytes")]
    SizeLimitExceeded(usize),
    /// Fewer than 8 bytes: no room for the CRC.
    #[error("IO Error: File too short to contain CRC")]
    TooShort,
    /// The CRC64 trailer does not match the contents.
    #[error("CRC64 validation failed")]
    Crc64,
    /// The bytes are not a bitcode snapshot (garbage, truncated, or a foreign layout).
    #[error("An error occurred during bitcode serialization: {0}")]
    Bitcode(#[source] bitcode::Error),
    /// The magic is not x86_64's.
    #[error("Magic value does not match arch: {0}")]
    InvalidMagic(u64),
    /// Another major version, or a newer minor version, than [`SNAPSHOT_VERSION`].
    #[error("Invalid data version: {0}")]
    InvalidFormatVersion(Version),
    /// A valid snapshot container whose data is not squib's envelope.
    #[error("the snapshot state file was not made by squib (a Firecracker snapshot?)")]
    NotSquib,
    /// squib's envelope from an older or newer squib.
    #[error(
        "the snapshot state file has squib format version {found}; this squib reads version {supported} only"
    )]
    UnsupportedSquibFormat {
        /// The file's envelope version.
        found: u32,
        /// [`SQUIB_FORMAT_VERSION`].
        supported: u32,
    },
    /// squib's envelope, but its payload does not decode as the caller's state type.
    #[error("the snapshot state does not match this squib's state layout: {0}")]
    State(#[source] bitcode::Error),
    /// Encoding the state failed (a type serde cannot express in bitcode).
    #[error("Cannot serialize the microVM state: {0}")]
    Serialize(#[source] bitcode::Error),
    /// The encoded state is over [`STATE_SIZE_LIMIT`]; it would not load.
    #[error(
        "Cannot serialize the microVM state: {0} bytes exceed the snapshot limit of {STATE_SIZE_LIMIT} bytes"
    )]
    TooLargeToSave(usize),
    /// Writing the file failed; the previous file (if any) is intact.
    #[error("Cannot perform {} on the snapshot backing file: {}", .0.op, .0.source)]
    Write(#[from] AtomicWriteError),
}

impl SnapshotError {
    /// The line Firecracker's `--describe-snapshot` logs for this failure (after
    /// `When printing Snapshot Data format: `).
    pub fn describe_failure_text(&self) -> String {
        match self {
            Self::Open(e) => format!("Unable to open snapshot state file: {e}"),
            other => format!("Invalid data format version of snapshot file: {other}"),
        }
    }
}

/// Firecracker's snapshot header.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHdr {
    magic: u64,
    version: Version,
}

/// Firecracker's `Snapshot<Data>`.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot<D> {
    header: SnapshotHdr,
    data: D,
}

/// squib's `data`: recognisable and versioned independently of the outer version.
#[derive(Debug, Serialize, Deserialize)]
struct SquibEnvelope {
    tag: String,
    format_version: u32,
    /// bitcode of the caller's state.
    payload: Vec<u8>,
}

/// Encodes `state` as a complete state file (container + CRC), in memory.
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>, SnapshotError> {
    let payload = bitcode::serialize(state).map_err(SnapshotError::Serialize)?;
    let snapshot = Snapshot {
        header: SnapshotHdr {
            magic: SNAPSHOT_MAGIC,
            version: SNAPSHOT_VERSION,
        },
        data: SquibEnvelope {
            tag: SQUIB_TAG.to_owned(),
            format_version: SQUIB_FORMAT_VERSION,
            payload,
        },
    };
    let mut out = bitcode::serialize(&snapshot).map_err(SnapshotError::Serialize)?;
    let crc = crc64::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    if out.len() > STATE_SIZE_LIMIT {
        return Err(SnapshotError::TooLargeToSave(out.len()));
    }
    Ok(out)
}

/// Decodes a complete state file held in memory. Never panics, whatever `bytes` holds.
pub fn decode_state<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    let body = check_container(bytes)?;
    match bitcode::deserialize::<Snapshot<SquibEnvelope>>(body) {
        Ok(snapshot) => {
            check_header(&snapshot.header)?;
            let env = snapshot.data;
            if env.tag != SQUIB_TAG {
                return Err(SnapshotError::NotSquib);
            }
            if env.format_version != SQUIB_FORMAT_VERSION {
                return Err(SnapshotError::UnsupportedSquibFormat {
                    found: env.format_version,
                    supported: SQUIB_FORMAT_VERSION,
                });
            }
            bitcode::deserialize::<T>(&env.payload).map_err(SnapshotError::State)
        }
        Err(e) => match decode_header(body) {
            // A well-formed container (CRC and header check out) whose data is not ours.
            Some(h) => {
                check_header(&h)?;
                Err(SnapshotError::NotSquib)
            }
            None => Err(SnapshotError::Bitcode(e)),
        },
    }
}

/// Size limit, CRC; returns the bytes before the CRC.
fn check_container(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
    if bytes.len() > STATE_SIZE_LIMIT {
        return Err(SnapshotError::SizeLimitExceeded(STATE_SIZE_LIMIT));
    }
    if bytes.len() < CRC_LEN {
        return Err(SnapshotError::TooShort);
    }
    // crc64(0, body ++ le(crc64(0, body))) == 0: the CRC property Firecracker relies on too.
    if crc64::crc64(0, bytes) != 0 {
        return Err(SnapshotError::Crc64);
    }
    Ok(&bytes[..bytes.len() - CRC_LEN])
}

fn check_header(h: &SnapshotHdr) -> Result<(), SnapshotError> {
    if h.magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::InvalidMagic(h.magic));
    }
    if h.version.major != SNAPSHOT_VERSION.major || h.version.minor > SNAPSHOT_VERSION.minor {
        return Err(SnapshotError::InvalidFormatVersion(h.version.clone()));
    }
    Ok(())
}

/// Decodes the header alone from the shortest prefix that is exactly a header. bitcode writes
/// it first and refuses trailing bytes, so exactly one prefix length decodes.
fn decode_header(body: &[u8]) -> Option<SnapshotHdr> {
    // 1 packing byte + 8 magic bytes + at least 1 length byte.
    (10..=body.len().min(MAX_HEADER_LEN))
        .find_map(|k| bitcode::deserialize::<SnapshotHdr>(&body[..k]).ok())
}

/// Reads a whole state file, refusing oversize files before reading them.
fn read_bounded(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let file = File::open(path).map_err(SnapshotError::Open)?;
    if let Ok(meta) = file.metadata()
        && meta.is_file()
        && meta.len() > STATE_SIZE_LIMIT as u64
    {
        return Err(SnapshotError::SizeLimitExceeded(STATE_SIZE_LIMIT));
    }
    let mut buf = Vec::new();
    // The file may grow or lie about its size (a pipe, /proc): stop one byte past the limit.
    file.take(STATE_SIZE_LIMIT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(SnapshotError::Io)?;
    if buf.len() > STATE_SIZE_LIMIT {
        return Err(SnapshotError::SizeLimitExceeded(STATE_SIZE_LIMIT));
    }
    Ok(buf)
}

/// Writes `state` to `path` as a squib state file, atomically: a crash at any point leaves the
/// previous file intact; stale temp files of an earlier crash are removed.
pub fn save_state<T: Serialize>(path: impl AsRef<Path>, state: &T) -> Result<(), SnapshotError> {
    let path = path.as_ref();
    let bytes = encode_state(state)?;
    replace_file(path, |f| {
        io::Write::write_all(f, &bytes).map_err(|e| ("write", e))
    })?;
    tracing::debug!(path = %path.display(), bytes = bytes.len(), "snapshot state saved");
    Ok(())
}

/// Loads a squib state file. Every malformed input is an `Err`, never a panic.
pub fn load_state<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, SnapshotError> {
    let bytes = read_bounded(path.as_ref())?;
    decode_state(&bytes)
}

/// `--describe-snapshot`: the file's data-format version as Firecracker prints it (`v11.0.0`).
///
/// Like Firecracker's, this reads the header only: it answers for squib's files and for
/// Firecracker's own (both carry the same outer header); it checks the size limit and the CRC
/// first, so a damaged file is reported rather than described.
pub fn describe(path: impl AsRef<Path>) -> Result<String, SnapshotError> {
    let bytes = read_bounded(path.as_ref())?;
    describe_bytes(&bytes)
}

/// [`describe`] on bytes in memory.
pub fn describe_bytes(bytes: &[u8]) -> Result<String, SnapshotError> {
    let body = check_container(bytes)?;
    if let Some(h) = decode_header(body) {
        return Ok(format!("v{}", h.version));
    }
    match bitcode::deserialize::<SnapshotHdr>(body) {
        Ok(h) => Ok(format!("v{}", h.version)),
        Err(e) => Err(SnapshotError::Bitcode(e)),
    }
}
