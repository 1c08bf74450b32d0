//! virtio-mem requests and responses on the wire (virtio 1.2 §5.15.6), as pure functions.
//!
//! A request (`struct virtio_mem_req`, 24 bytes, little endian): `u16 type`, 3 × `u16`
//! padding, then `u64 addr`, `u16 nb_blocks`, 3 × `u16` padding (unused by `UNPLUG_ALL`). A
//! response (`struct virtio_mem_resp`, 10 bytes): `u16 type`, 3 × `u16` padding, `u16 state`
//! (only for `STATE`).

/// Size of a request.
pub const REQ_SIZE: usize = 24;
/// Size of a response.
pub const RESP_SIZE: usize = 10;

/// `VIRTIO_MEM_REQ_PLUG`.
pub const REQ_PLUG: u16 = 0;
/// `VIRTIO_MEM_REQ_UNPLUG`.
pub const REQ_UNPLUG: u16 = 1;
/// `VIRTIO_MEM_REQ_UNPLUG_ALL`.
pub const REQ_UNPLUG_ALL: u16 = 2;
/// `VIRTIO_MEM_REQ_STATE`.
pub const REQ_STATE: u16 = 3;

/// A range of blocks named by a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    /// Guest-physical address of the first block.
    pub addr: u64,
    /// Number of blocks.
    pub nb_blocks: u16,
}

/// A parsed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Plug the range.
    Plug(BlockRange),
    /// Unplug the range.
    Unplug(BlockRange),
    /// Unplug everything.
    UnplugAll,
    /// Report the range's state.
    State(BlockRange),
    /// An unknown request type.
    Unsupported(u16),
}

/// Response types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ResponseType {
    /// Done.
    Ack = 0,
    /// Refused for now (the device does not use it).
    Nack = 1,
    /// Busy (the device does not use it).
    Busy = 2,
    /// The request is invalid.
    Error = 3,
}

/// The state of a block range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum BlockState {
    /// Every block is plugged.
    Plugged = 0,
    /// No block is plugged.
    Unplugged = 1,
    /// Some are.
    Mixed = 2,
}

/// Parses a request from its bytes (at least [`REQ_SIZE`]; `None` if shorter).
pub fn parse(bytes: &[u8]) -> Option<Request> {
    let b: &[u8; REQ_SIZE] = bytes.get(..REQ_SIZE)?.try_into().ok()?;
    let kind = u16::from_le_bytes([b[0], b[1]]);
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[8..16]);
    let range = BlockRange {
        addr: u64::from_le_bytes(a),
        nb_blocks: u16::from_le_bytes([b[16], b[17]]),
    };
    Some(match kind {
        REQ_PLUG => Request::Plug(range),
        REQ_UNPLUG => Request::Unplug(range),
        REQ_UNPLUG_ALL => Request::UnplugAll,
        REQ_STATE => Request::State(range),
        other => Request::Unsupported(other),
    })
}

/// Encodes a response.
pub fn response(kind: ResponseType, state: Option<BlockState>) -> [u8; RESP_SIZE] {
    let mut out = [0u8; RESP_SIZE];
    out[..2].copy_from_slice(&(kind as u16).to_le_bytes());
    if let Some(s) = state {
        out[8..10].copy_from_slice(&(s as u16).to_le_bytes());
    }
    out
}

/// Encodes a request (the driver's side; for tests and the test guest's documentation).
pub fn encode(kind: u16, addr: u64, nb_blocks: u16) -> [u8; REQ_SIZE] {
    let mut out = [0u8; REQ_SIZE];
    out[..2].copy_from_slice(&kind.to_le_bytes());
    out[8..16].copy_from_slice(&addr.to_le_bytes());
    out[16..18].copy_from_slice(&nb_blocks.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn test_parse_and_encode() {
        assert_eq!(
            parse(&encode(REQ_PLUG, 0x80_0000_0000, 3)),
            Some(Request::Plug(BlockRange {
                addr: 0x80_0000_0000,
                nb_blocks: 3
            }))
        );
        assert_eq!(
            parse(&encode(REQ_UNPLUG_ALL, 1, 1)),
            Some(Request::UnplugAll)
        );
        assert_eq!(parse(&encode(9, 0, 0)), Some(Request::Unsupported(9)));
        assert_eq!(parse(&[0u8; 23]), None);
        assert_eq!(
            response(ResponseType::Ack, Some(BlockState::Mixed)),
            [0, 0, 0, 0, 0, 0, 0, 0, 2, 0]
        );
        assert_eq!(response(ResponseType::Error, None)[..2], [3, 0]);
    }

    proptest! {
        #[test]
        fn prop_parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match parse(&bytes) {
                None => prop_assert!(bytes.len() < REQ_SIZE),
                Some(Request::Plug(r) | Request::Unplug(r) | Request::State(r)) => {
                    let kind = u16::from_le_bytes([bytes[0], bytes[1]]);
                    prop_assert_eq!(parse(&encode(kind, r.addr, r.nb_blocks)), parse(&bytes));
                }
                Some(Request::UnplugAll | Request::Unsupported(_)) => {}
            }
        }
    }
}
