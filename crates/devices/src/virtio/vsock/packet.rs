//! The virtio-vsock packet: the 44-byte `virtio_vsock_hdr` and its payload, read from TX chains
//! and written into RX chains.
//!
//! A TX chain (driver → device) must be device-readable only and hold the header followed by
//! `hdr.len` payload bytes, in any split across descriptors. `hdr.len` is bounded by
//! [`MAX_PKT_BUF_SIZE`] (64 KiB, Firecracker's limit) and by the chain's length, so a guest can
//! never make the device read or allocate more than that. An RX chain (device → driver) must be
//! device-writable only and hold at least the header; the payload room offered to a connection
//! is the rest, capped at [`MAX_PKT_BUF_SIZE`].
//!
//! Nothing here keeps a reference into guest memory: payloads are copied through the device's
//! one 64 KiB scratch buffer. No threading assumptions (plain functions on the VMM thread).

use squib_core::GuestMemoryMmap;
use vm_memory::Bytes;

use crate::virtio::chain::{Chain, ChainError, Segment};

/// Size of `virtio_vsock_hdr` (packed).
pub const HDR_SIZE: usize = 44;
/// Largest payload of one packet, either direction (Firecracker's `MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_BUF_SIZE: u32 = 64 * 1024;

/// `VIRTIO_VSOCK_OP_*` (`include/uapi/linux/virtio_vsock.h`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection response.
    pub const RESPONSE: u16 = 2;
    /// Connection reset.
    pub const RST: u16 = 3;
    /// Clean shutdown (flags say which directions).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Flow-control credit update.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Flow-control credit request.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type supported.
pub const TYPE_STREAM: u16 = 1;
/// The host's CID (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;

/// A decoded `virtio_vsock_hdr` (all fields little-endian on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags (shutdown directions).
    pub flags: u32,
    /// Sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

fn le_u16(b: &[u8; HDR_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8; HDR_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8; HDR_SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Header {
    /// Decodes the wire form.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        Self {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            type_: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    /// Encodes the wire form.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a chain does not hold a usable packet (Firecracker's `VsockError` packet texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The chain itself is malformed.
    #[error("{0}")]
    Chain(ChainError),
    /// A TX chain has a device-writable descriptor.
    #[error("Encountered an unexpected write-only virtio descriptor.")]
    UnreadableDescriptor,
    /// An RX chain has a device-readable descriptor.
    #[error("Encountered an unexpected read-only virtio descriptor.")]
    UnwritableDescriptor,
    /// The chain cannot hold the header.
    #[error(
        "The total length of the descriptor chain ({0}) is less than the number of bytes required to hold a vsock packet header."
    )]
    DescChainTooShortForHeader(u64),
    /// `hdr.len` is above [`MAX_PKT_BUF_SIZE`].
    #[error("The vsock header `len` field holds an invalid value: {0}")]
    InvalidPktLen(u32),
    /// `hdr.len` is longer than the chain's payload room.
    #[error(
        "The total length of the descriptor chain ({0}) is too short to hold a packet of length {1} + header"
    )]
    DescChainTooShortForPacket(u64, u32),
    /// Guest memory could not be accessed (cannot happen on a walked chain).
    #[error("Bounds check failed on guest memory pointer.")]
    GuestMemoryBounds,
}

/// Copies `buf.len()` bytes starting at byte `offset` of the stream formed by `segs`.
pub(crate) fn read_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    offset: u64,
    buf: &mut [u8],
) -> Result<(), PacketError> {
    let len = u64::try_from(buf.len()).map_err(|_| PacketError::GuestMemoryBounds)?;
    let parts = crate::virtio::chain::sub_segments(segs, offset, len)
        .ok_or(PacketError::GuestMemoryBounds)?;
    let mut done = 0usize;
    for p in parts {
        let n = usize::try_from(p.len).map_err(|_| PacketError::GuestMemoryBounds)?;
        let dst = buf
            .get_mut(done..done + n)
            .ok_or(PacketError::GuestMemoryBounds)?;
        mem.read_slice(dst, p.addr)
            .map_err(|_| PacketError::GuestMemoryBounds)?;
        done += n;
    }
    Ok(())
}

/// Writes `data` at byte `offset` of the stream formed by `segs`.
pub(crate) fn write_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    offset: u64,
    data: &[u8],
) -> Result<(), PacketError> {
    let len = u64::try_from(data.len()).map_err(|_| PacketError::GuestMemoryBounds)?;
    let parts = crate::virtio::chain::sub_segments(segs, offset, len)
        .ok_or(PacketError::GuestMemoryBounds)?;
    let mut done = 0usize;
    for p in parts {
        let n = usize::try_from(p.len).map_err(|_| PacketError::GuestMemoryBounds)?;
        let src = data
            .get(done..done + n)
            .ok_or(PacketError::GuestMemoryBounds)?;
        mem.write_slice(src, p.addr)
            .map_err(|_| PacketError::GuestMemoryBounds)?;
        done += n;
    }
    Ok(())
}

/// Parses a TX chain: validates it and returns the header (payload not yet read).
pub(crate) fn parse_tx(mem: &GuestMemoryMmap, chain: &Chain) -> Result<Header, PacketError> {
    if let Some(err) = chain.error {
        return Err(PacketError::Chain(err));
    }
    if !chain.writable.is_empty() {
        return Err(PacketError::UnreadableDescriptor);
    }
    let total = chain.readable_len();
    if total < HDR_SIZE as u64 {
        return Err(PacketError::DescChainTooShortForHeader(total));
    }
    let mut raw = [0u8; HDR_SIZE];
    read_segments(mem, &chain.readable, 0, &mut raw)?;
    let hdr = Header::from_bytes(&raw);
    if hdr.len > MAX_PKT_BUF_SIZE {
        return Err(PacketError::InvalidPktLen(hdr.len));
    }
    if u64::from(hdr.len) > total - HDR_SIZE as u64 {
        return Err(PacketError::DescChainTooShortForPacket(total, hdr.len));
    }
    Ok(hdr)
}

/// Validates an RX chain and returns its payload room (capped at [`MAX_PKT_BUF_SIZE`]).
pub(crate) fn rx_room(chain: &Chain) -> Result<u32, PacketError> {
    if let Some(err) = chain.error {
        return Err(PacketError::Chain(err));
    }
    if !chain.readable.is_empty() {
        return Err(PacketError::UnwritableDescriptor);
    }
    let total = chain.writable_len();
    if total < HDR_SIZE as u64 {
        return Err(PacketError::DescChainTooShortForHeader(total));
    }
    Ok(
        u32::try_from((total - HDR_SIZE as u64).min(u64::from(MAX_PKT_BUF_SIZE)))
            .unwrap_or(MAX_PKT_BUF_SIZE),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn test_header_layout() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0x1122_3344,
            dst_port: 5,
            len: 6,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 3,
            buf_alloc: 0x1_0000,
            fwd_cnt: 9,
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 0x08);
        assert_eq!(b[7], 0x01);
        assert_eq!(b[8], 2);
        assert_eq!(&b[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(b[24], 6);
        assert_eq!(b[28], 1);
        assert_eq!(b[30], 5);
        assert_eq!(b[32], 3);
        assert_eq!(&b[36..40], &[0, 0, 1, 0]);
        assert_eq!(b[40], 9);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn test_error_texts() {
        assert_eq!(
            PacketError::InvalidPktLen(70_000).to_string(),
            "The vsock header `len` field holds an invalid value: 70000"
        );
        assert_eq!(
            PacketError::DescChainTooShortForPacket(50, 10).to_string(),
            "The total length of the descriptor chain (50) is too short to hold a packet of length 10 + header"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(super::super::proptest_cases(4_000)))]

        /// Any 44 bytes decode, and encode back to the same bytes.
        #[test]
        fn prop_header_round_trip(raw in proptest::collection::vec(any::<u8>(), HDR_SIZE)) {
            let mut b = [0u8; HDR_SIZE];
            b.copy_from_slice(&raw);
            prop_assert_eq!(Header::from_bytes(&b).to_bytes(), b);
        }
    }
}
