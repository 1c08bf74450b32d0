//! Walking a guest descriptor chain into validated, direction-split buffer segments.
//!
//! virtio 1.x devices must not assume any particular framing of a request across descriptors
//! (`VIRTIO_F_ANY_LAYOUT` is implied by `VIRTIO_F_VERSION_1`), so devices see a chain as two byte
//! streams: the device-readable segments followed by the device-writable ones. [`Chain::walk`]
//! collects them and records the first violation of the rules below, instead of failing early, so
//! a device can still find the status byte of a malformed request and complete it with an error:
//!
//! - the chain must end (a descriptor without `NEXT`) within the queue size (virtio-queue's
//!   iterator stops after that many descriptors, which also cuts loops);
//! - no device-readable descriptor may follow a device-writable one;
//! - every buffer must lie in guest memory.

use squib_core::GuestMemoryMmap;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend};

/// One descriptor's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Guest-physical start.
    pub(crate) addr: GuestAddress,
    /// Length in bytes.
    pub(crate) len: u32,
}

/// A rule the chain breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No descriptor could be read (head index out of range, unreadable indirect table).
    #[error("empty descriptor chain")]
    Empty,
    /// The chain does not end within the queue size (a loop, or longer than the queue).
    #[error("descriptor chain does not terminate within the queue size")]
    Unterminated,
    /// A device-readable descriptor follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// A buffer is not entirely inside guest memory.
    #[error("descriptor buffer {addr:#x} (+{len:#x}) is outside guest memory")]
    OutOfMemory {
        /// Start of the buffer.
        addr: u64,
        /// Length of the buffer.
        len: u32,
    },
}

/// A walked descriptor chain.
#[derive(Debug)]
pub(crate) struct Chain {
    /// Device-readable buffers, in chain order.
    pub(crate) readable: Vec<Segment>,
    /// Device-writable buffers, in chain order.
    pub(crate) writable: Vec<Segment>,
    /// The first rule the chain breaks, if any.
    pub(crate) error: Option<ChainError>,
}

impl Chain {
    /// Walks `chain`, checking every buffer against `mem`.
    pub(crate) fn walk<I>(chain: I, mem: &GuestMemoryMmap) -> Self
    where
        I: Iterator<Item = virtio_queue::desc::split::Descriptor>,
    {
        let mut out = Self {
            readable: Vec::new(),
            writable: Vec::new(),
            error: None,
        };
        let mut terminated = false;
        let mut any = false;
        for desc in chain {
            any = true;
            let seg = Segment {
                addr: desc.addr(),
                len: desc.len(),
            };
            if !in_memory(mem, seg) {
                out.fail(ChainError::OutOfMemory {
                    addr: seg.addr.raw_value(),
                    len: seg.len,
                });
            }
            if desc.is_write_only() {
                out.writable.push(seg);
            } else {
                if !out.writable.is_empty() {
                    out.fail(ChainError::ReadableAfterWritable);
                }
                out.readable.push(seg);
            }
            terminated = !desc.has_next();
        }
        if !any {
            out.error = Some(ChainError::Empty);
        } else if !terminated {
            // The unterminated error wins: the "last" descriptor is not really the last one.
            out.error = Some(ChainError::Unterminated);
        }
        out
    }

    fn fail(&mut self, err: ChainError) {
        self.error.get_or_insert(err);
    }

    /// Total length of the device-readable buffers.
    pub(crate) fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total length of the device-writable buffers.
    pub(crate) fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// The last byte of the device-writable stream, where a request's status byte goes, if the
    /// chain is well-formed enough to locate it and that byte is in guest memory.
    pub(crate) fn last_writable_byte(&self, mem: &GuestMemoryMmap) -> Option<GuestAddress> {
        if matches!(
            self.error,
            Some(ChainError::Empty | ChainError::Unterminated)
        ) {
            return None;
        }
        let seg = self.writable.iter().rev().find(|s| s.len > 0)?;
        let addr = seg.addr.checked_add(u64::from(seg.len) - 1)?;
        mem.check_range(addr, 1).then_some(addr)
    }
}

/// Whether the whole segment is backed by guest memory.
pub(crate) fn in_memory(mem: &GuestMemoryMmap, seg: Segment) -> bool {
    let Ok(len) = usize::try_from(seg.len) else {
        return false;
    };
    len == 0 || mem.check_range(seg.addr, len)
}

/// The sub-segments covering bytes `[start, start + len)` of the stream formed by `segs`.
///
/// Returns `None` if the stream is shorter than `start + len`.
pub(crate) fn sub_segments(segs: &[Segment], start: u64, len: u64) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    let mut skip = start;
    let mut want = len;
    for seg in segs {
        if want == 0 {
            break;
        }
        let seg_len = u64::from(seg.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let take = (seg_len - skip).min(want);
        out.push(Segment {
            addr: seg.addr.checked_add(skip)?,
            // take <= seg.len, a u32.
            len: u32::try_from(take).ok()?,
        });
        skip = 0;
        want -= take;
    }
    (want == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use virtio_queue::desc::split::Descriptor;

    use super::*;
    use crate::virtio::test_utils::{F_NEXT as NEXT, F_WRITE as WRITE};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap()
    }

    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn test_walk_splits_directions_and_finds_status() {
        let m = mem();
        let c = Chain::walk(
            [
                d(0x100, 16, NEXT),
                d(0x200, 512, NEXT | WRITE),
                d(0x400, 1, WRITE),
            ]
            .into_iter(),
            &m,
        );
        assert_eq!(c.error, None);
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 513);
        assert_eq!(c.last_writable_byte(&m), Some(GuestAddress(0x400)));
    }

    #[test]
    fn test_walk_errors() {
        let m = mem();
        let c = Chain::walk(std::iter::empty(), &m);
        assert_eq!(c.error, Some(ChainError::Empty));
        assert_eq!(c.last_writable_byte(&m), None);

        let c = Chain::walk([d(0x100, 1, WRITE | NEXT)].into_iter(), &m);
        assert_eq!(c.error, Some(ChainError::Unterminated));
        assert_eq!(c.last_writable_byte(&m), None);

        let c = Chain::walk([d(0x100, 1, WRITE | NEXT), d(0x200, 4, 0)].into_iter(), &m);
        assert_eq!(c.error, Some(ChainError::ReadableAfterWritable));
        assert_eq!(c.last_writable_byte(&m), Some(GuestAddress(0x100)));

        let c = Chain::walk([d(0xffff, 2, NEXT), d(0x100, 1, WRITE)].into_iter(), &m);
        assert_eq!(
            c.error,
            Some(ChainError::OutOfMemory {
                addr: 0xffff,
                len: 2
            })
        );
        assert_eq!(c.last_writable_byte(&m), Some(GuestAddress(0x100)));

        let c = Chain::walk([d(u64::MAX, 2, WRITE)].into_iter(), &m);
        assert!(matches!(c.error, Some(ChainError::OutOfMemory { .. })));
        assert_eq!(c.last_writable_byte(&m), None);
    }

    #[test]
    fn test_sub_segments() {
        let segs = [
            Segment {
                addr: GuestAddress(0x100),
                len: 16,
            },
            Segment {
                addr: GuestAddress(0x1000),
                len: 8,
            },
        ];
        assert_eq!(
            sub_segments(&segs, 12, 8).unwrap(),
            vec![
                Segment {
                    addr: GuestAddress(0x10c),
                    len: 4
                },
                Segment {
                    addr: GuestAddress(0x1000),
                    len: 4
                }
            ]
        );
        assert_eq!(sub_segments(&segs, 24, 0).unwrap(), vec![]);
        assert!(sub_segments(&segs, 20, 5).is_none());
    }
}
