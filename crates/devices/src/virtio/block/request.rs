//! Parsing a walked descriptor chain into a virtio-blk request (pure: no I/O, no state).
//!
//! A request is `struct virtio_blk_req { le32 type; le32 reserved; le64 sector; u8 data[];
//! u8 status; }` laid over the chain's two byte streams (virtio 1.x §5.2.6): the header is the
//! first 16 device-readable bytes, the status is the last device-writable byte, and the data is
//! what lies between, in the direction the type implies:
//!
//! | type | readable stream | writable stream |
//! |---|---|---|
//! | `IN` (read) | exactly the header | data (a multiple of 512 bytes) + status |
//! | `OUT` (write) | header + data (a multiple of 512 bytes) | exactly the status |
//! | `FLUSH` | header (anything after it is ignored) | status (data ignored) |
//! | `GET_ID` | exactly the header | ≥ 20 bytes + status |
//! | other | header | status; answered `UNSUPP` |
//!
//! Reads and writes must lie inside the disk. A chain that breaks these rules is a
//! [`RequestError`]; the device then writes `IOERR` to the status byte if the chain has one.

use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::{ID_BYTES, SECTOR_SHIFT, SECTOR_SIZE};
use crate::virtio::chain::{Chain, ChainError, Segment, sub_segments};

/// Length of the request header.
pub const HEADER_LEN: u64 = HEADER_BYTES as u64;
const HEADER_BYTES: usize = 16;

/// `VIRTIO_BLK_T_IN`.
pub const T_IN: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN;
/// `VIRTIO_BLK_T_OUT`.
pub const T_OUT: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_OUT;
/// `VIRTIO_BLK_T_FLUSH`.
pub const T_FLUSH: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_FLUSH;
/// `VIRTIO_BLK_T_GET_ID`.
pub const T_GET_ID: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_GET_ID;

/// Status byte: success.
pub const S_OK: u8 = 0;
/// Status byte: I/O error (also used for malformed requests).
pub const S_IOERR: u8 = 1;
/// Status byte: unsupported request type.
pub const S_UNSUPP: u8 = 2;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    /// Read sectors into the guest.
    In,
    /// Write guest data to sectors.
    Out,
    /// Flush the write cache.
    Flush,
    /// Read the device id string.
    GetId,
    /// Anything else (answered `UNSUPP`).
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(t: u32) -> Self {
        match t {
            T_IN => Self::In,
            T_OUT => Self::Out,
            T_FLUSH => Self::Flush,
            T_GET_ID => Self::GetId,
            other => Self::Unsupported(other),
        }
    }
}

/// A well-formed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request type.
    pub kind: RequestType,
    /// First sector (`IN`/`OUT`).
    pub sector: u64,
    /// The data buffers: device-writable for `IN`/`GET_ID`, device-readable for `OUT`; empty
    /// otherwise.
    pub(crate) data: Vec<Segment>,
    /// Total data length in bytes.
    pub data_len: u32,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a valid request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The descriptor chain itself is malformed.
    #[error("malformed descriptor chain: {0}")]
    Chain(#[from] ChainError),
    /// Fewer than 16 device-readable bytes.
    #[error("request header is shorter than 16 bytes")]
    HeaderTooShort,
    /// The header could not be read from guest memory.
    #[error("request header is not readable")]
    HeaderUnreadable,
    /// No device-writable byte for the status.
    #[error("request has no status byte")]
    MissingStatus,
    /// Device-readable data where the type wants device-writable data.
    #[error("unexpected device-readable data descriptor")]
    UnexpectedReadable,
    /// Device-writable data where the type wants device-readable data.
    #[error("unexpected device-writable data descriptor")]
    UnexpectedWritable,
    /// Data length not a multiple of 512 (reads/writes), too short (`GET_ID`) or over 4 GiB.
    #[error("invalid data length {0}")]
    InvalidDataLength(u64),
    /// The sectors lie (partly) past the end of the disk.
    #[error("sectors {sector}..+{count} are outside the disk")]
    InvalidOffset {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        count: u64,
    },
    /// A write to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
}

impl Request {
    /// Parses `chain` for a disk of `nsectors` sectors.
    pub(crate) fn parse(
        chain: &Chain,
        mem: &GuestMemoryMmap,
        nsectors: u64,
        read_only: bool,
    ) -> Result<Self, RequestError> {
        if let Some(err) = chain.error {
            return Err(err.into());
        }
        let readable = chain.readable_len();
        let writable = chain.writable_len();
        let status = chain
            .last_writable_byte(mem)
            .ok_or(RequestError::MissingStatus)?;
        if readable < HEADER_LEN {
            return Err(RequestError::HeaderTooShort);
        }
        let (kind, sector) = read_header(chain, mem)?;
        // The writable stream minus the status byte (writable >= 1 since status exists).
        let writable_data = writable - 1;
        let (data, data_len) = match kind {
            RequestType::In | RequestType::GetId => {
                if readable != HEADER_LEN {
                    return Err(RequestError::UnexpectedReadable);
                }
                let data = sub_segments(&chain.writable, 0, writable_data)
                    .ok_or(RequestError::MissingStatus)?;
                (data, writable_data)
            }
            RequestType::Out => {
                if writable_data != 0 {
                    return Err(RequestError::UnexpectedWritable);
                }
                let len = readable - HEADER_LEN;
                let data = sub_segments(&chain.readable, HEADER_LEN, len)
                    .ok_or(RequestError::HeaderTooShort)?;
                (data, len)
            }
            RequestType::Flush | RequestType::Unsupported(_) => (Vec::new(), 0),
        };
        let data_len =
            u32::try_from(data_len).map_err(|_| RequestError::InvalidDataLength(data_len))?;
        match kind {
            RequestType::In | RequestType::Out => {
                if u64::from(data_len) % SECTOR_SIZE != 0 {
                    return Err(RequestError::InvalidDataLength(data_len.into()));
                }
                let count = u64::from(data_len) >> SECTOR_SHIFT;
                if sector.checked_add(count).is_none_or(|end| end > nsectors) {
                    return Err(RequestError::InvalidOffset { sector, count });
                }
                if kind == RequestType::Out && read_only {
                    return Err(RequestError::ReadOnly);
                }
            }
            RequestType::GetId if (data_len as usize) < ID_BYTES => {
                return Err(RequestError::InvalidDataLength(data_len.into()));
            }
            _ => {}
        }
        Ok(Self {
            kind,
            sector,
            data,
            data_len,
            status,
        })
    }

    /// Byte offset of the first sector in the backing file (`sector × 512`; the range check in
    /// `parse` guarantees it fits).
    pub fn offset(&self) -> u64 {
        self.sector << SECTOR_SHIFT
    }
}

fn read_header(chain: &Chain, mem: &GuestMemoryMmap) -> Result<(RequestType, u64), RequestError> {
    let segs = sub_segments(&chain.readable, 0, HEADER_LEN).ok_or(RequestError::HeaderTooShort)?;
    let mut header = [0u8; HEADER_BYTES];
    let mut at = 0usize;
    for seg in segs {
        let len = seg.len as usize;
        mem.read_slice(&mut header[at..at + len], seg.addr)
            .map_err(|_| RequestError::HeaderUnreadable)?;
        at += len;
    }
    let (t, rest) = header.split_at(4);
    let sector = &rest[4..12];
    let t = u32::from_le_bytes(t.try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(sector.try_into().unwrap_or_default());
    Ok((RequestType::from(t), sector))
}

/// Writes `status` to the status byte at `addr`; `false` if guest memory refused it.
pub(crate) fn write_status(mem: &GuestMemoryMmap, addr: GuestAddress, status: u8) -> bool {
    mem.write_obj(status, addr).is_ok()
}

/// The 20-byte `GET_ID` answer for drive `id`: its bytes, zero-padded or truncated.
pub fn device_id(id: &str) -> [u8; ID_BYTES] {
    let mut out = [0u8; ID_BYTES];
    let n = id.len().min(ID_BYTES);
    out[..n].copy_from_slice(&id.as_bytes()[..n]);
    out
}

/// Writes `bytes` over the data segments, stopping when either runs out; returns bytes written.
pub(crate) fn write_to_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    mut bytes: &[u8],
) -> Option<u32> {
    let mut written = 0u32;
    for seg in segs {
        if bytes.is_empty() {
            break;
        }
        let n = (seg.len as usize).min(bytes.len());
        mem.write_slice(&bytes[..n], seg.addr).ok()?;
        bytes = &bytes[n..];
        written += u32::try_from(n).ok()?;
    }
    Some(written)
}

/// Guest-physical end (exclusive) of a segment, for tests.
#[cfg(test)]
pub(crate) fn seg_end(seg: &Segment) -> u64 {
    use vm_memory::Address;
    seg.addr.raw_value() + u64::from(seg.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{F_NEXT, F_WRITE, guest_memory};
    use virtio_queue::desc::split::Descriptor;

    fn header(mem: &GuestMemoryMmap, at: u64, t: u32, sector: u64) {
        mem.write_obj(t, GuestAddress(at)).unwrap();
        mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn chain(mem: &GuestMemoryMmap, descs: &[(u64, u32, bool)]) -> Chain {
        let n = descs.len();
        let it = descs.iter().enumerate().map(|(i, &(a, l, w))| {
            let mut f = if w { F_WRITE } else { 0 };
            if i + 1 < n {
                f |= F_NEXT;
            }
            Descriptor::new(a, l, f, 0)
        });
        Chain::walk(it.collect::<Vec<_>>().into_iter(), mem)
    }

    #[test]
    fn test_parse_in_out_flush_get_id() {
        let m = guest_memory(0x10000);
        header(&m, 0x100, T_IN, 2);
        let c = chain(
            &m,
            &[(0x100, 16, false), (0x1000, 1024, true), (0x200, 1, true)],
        );
        let r = Request::parse(&c, &m, 4, false).unwrap();
        assert_eq!(r.kind, RequestType::In);
        assert_eq!((r.sector, r.data_len, r.offset()), (2, 1024, 1024));
        assert_eq!(r.status, GuestAddress(0x200));
        assert_eq!(seg_end(&r.data[0]), 0x1400);

        header(&m, 0x100, T_OUT, 0);
        let c = chain(
            &m,
            &[(0x100, 16, false), (0x1000, 512, false), (0x200, 1, true)],
        );
        let r = Request::parse(&c, &m, 4, false).unwrap();
        assert_eq!((r.kind, r.data_len), (RequestType::Out, 512));
        assert_eq!(Request::parse(&c, &m, 4, true), Err(RequestError::ReadOnly));

        header(&m, 0x100, T_FLUSH, 0);
        let c = chain(&m, &[(0x100, 16, false), (0x200, 1, true)]);
        assert_eq!(
            Request::parse(&c, &m, 4, true).unwrap().kind,
            RequestType::Flush
        );

        header(&m, 0x100, T_GET_ID, 0);
        let c = chain(
            &m,
            &[(0x100, 16, false), (0x1000, 20, true), (0x200, 1, true)],
        );
        assert_eq!(
            Request::parse(&c, &m, 4, true).unwrap().kind,
            RequestType::GetId
        );
        let c = chain(
            &m,
            &[(0x100, 16, false), (0x1000, 19, true), (0x200, 1, true)],
        );
        assert_eq!(
            Request::parse(&c, &m, 4, true),
            Err(RequestError::InvalidDataLength(19))
        );

        header(&m, 0x100, 99, 0);
        let c = chain(&m, &[(0x100, 16, false), (0x200, 1, true)]);
        assert_eq!(
            Request::parse(&c, &m, 4, true).unwrap().kind,
            RequestType::Unsupported(99)
        );
    }

    #[test]
    fn test_parse_any_layout() {
        let m = guest_memory(0x10000);
        // Header split over two descriptors; data and status in one writable descriptor.
        m.write_obj(T_IN, GuestAddress(0x100)).unwrap();
        m.write_obj(0u32, GuestAddress(0x104)).unwrap();
        m.write_obj(3u64, GuestAddress(0x300)).unwrap();
        let c = chain(
            &m,
            &[(0x100, 8, false), (0x300, 8, false), (0x1000, 513, true)],
        );
        let r = Request::parse(&c, &m, 4, false).unwrap();
        assert_eq!((r.sector, r.data_len), (3, 512));
        assert_eq!(r.status, GuestAddress(0x1200));
    }

    #[test]
    fn test_parse_rejects_malformed() {
        type Case = (&'static [(u64, u32, bool)], RequestError);
        let m = guest_memory(0x10000);
        header(&m, 0x100, T_IN, 0);
        let cases: [Case; 7] = [
            (&[(0x100, 16, false)], RequestError::MissingStatus),
            (
                &[(0x100, 8, false), (0x200, 1, true)],
                RequestError::HeaderTooShort,
            ),
            (
                &[(0x100, 16, false), (0x1000, 512, false), (0x200, 1, true)],
                RequestError::UnexpectedReadable,
            ),
            (
                &[(0x100, 16, false), (0x1000, 100, true), (0x200, 1, true)],
                RequestError::InvalidDataLength(100),
            ),
            (
                &[(0x100, 16, false), (0x1000, 4096, true), (0x200, 1, true)],
                RequestError::InvalidOffset {
                    sector: 0,
                    count: 8,
                },
            ),
            (
                &[(0x100, 16, false), (0x200, 1, true), (0x1000, 512, false)],
                RequestError::Chain(ChainError::ReadableAfterWritable),
            ),
            (
                &[(0x100, 16, false), (0xfff0, 0x20, true), (0x200, 1, true)],
                RequestError::Chain(ChainError::OutOfMemory {
                    addr: 0xfff0,
                    len: 0x20,
                }),
            ),
        ];
        for (descs, want) in cases {
            let c = chain(&m, descs);
            assert_eq!(Request::parse(&c, &m, 4, false), Err(want), "{descs:?}");
        }
        header(&m, 0x100, T_OUT, u64::MAX);
        let c = chain(
            &m,
            &[(0x100, 16, false), (0x1000, 512, false), (0x200, 1, true)],
        );
        assert!(matches!(
            Request::parse(&c, &m, 4, false),
            Err(RequestError::InvalidOffset { .. })
        ));
        let c = chain(
            &m,
            &[(0x100, 16, false), (0x1000, 512, false), (0x200, 2, true)],
        );
        assert_eq!(
            Request::parse(&c, &m, 4, false),
            Err(RequestError::UnexpectedWritable)
        );
    }

    #[test]
    fn test_device_id_pads_and_truncates() {
        assert_eq!(&device_id("rootfs")[..7], b"rootfs\0");
        assert_eq!(device_id("a".repeat(30).as_str()), [b'a'; 20]);
    }
}
