//! The muxer's two bounded work queues: RX (who has a packet for the guest) and kill (which
//! connections time out when).
//!
//! Both follow Firecracker's `muxer_rxq.rs` / `muxer_killq.rs` design: a fixed-size queue plus a
//! *synced* flag. While synced the queue is exact; when an item does not fit the queue is marked
//! out of sync, and once drained it is rebuilt by scanning the connection table. So memory stays
//! bounded (256 RX items, 128 kill items) however many connections are busy, and nothing is lost.
//! An RST for a packet that matched no connection has no other storage: when the RX queue is
//! full it evicts a connection item (which the rebuild recovers) rather than being dropped.
//! Single-threaded (owned by the muxer).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::connection::Connection;

/// Capacity of the RX queue (Firecracker's `MUXER_RXQ_SIZE`).
pub const RXQ_SIZE: usize = 256;
/// Capacity of the kill queue (Firecracker's `MUXER_KILLQ_SIZE`).
pub const KILLQ_SIZE: usize = 128;

/// A connection, by (host port, guest port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub(crate) local_port: u32,
    pub(crate) peer_port: u32,
}

/// One RX queue item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RxItem {
    /// Ask this connection for its next packet.
    Conn(ConnKey),
    /// Send an RST from `local_port` to `peer_port` (no connection involved).
    Rst { local_port: u32, peer_port: u32 },
}

#[derive(Debug)]
pub(crate) struct RxQueue {
    q: VecDeque<RxItem>,
    synced: bool,
}

impl Default for RxQueue {
    fn default() -> Self {
        Self {
            q: VecDeque::with_capacity(RXQ_SIZE),
            synced: true,
        }
    }
}

impl RxQueue {
    /// A queue of the connections with pending RX (out of sync if they do not all fit).
    pub(crate) fn from_conns(conns: &HashMap<ConnKey, Connection>) -> Self {
        let mut out = Self::default();
        for (key, conn) in conns {
            if !conn.has_pending_rx() {
                continue;
            }
            if out.q.len() >= RXQ_SIZE {
                out.synced = false;
                break;
            }
            out.q.push_back(RxItem::Conn(*key));
        }
        out
    }

    /// Queues `item`; returns `false` if it had to be dropped (an RST with a queue full of RSTs).
    pub(crate) fn push(&mut self, item: RxItem) -> bool {
        if self.synced && self.q.len() < RXQ_SIZE {
            self.q.push_back(item);
            return true;
        }
        if let RxItem::Rst { .. } = item {
            if let Some(slot) = self
                .q
                .iter_mut()
                .rev()
                .find(|i| matches!(i, RxItem::Conn(_)))
            {
                *slot = item;
                self.synced = false;
                return true;
            }
            return false;
        }
        self.synced = false;
        false
    }

    pub(crate) fn peek(&self) -> Option<RxItem> {
        self.q.front().copied()
    }

    pub(crate) fn pop(&mut self) -> Option<RxItem> {
        self.q.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }
}

#[derive(Debug)]
pub(crate) struct KillQueue {
    q: VecDeque<(ConnKey, Instant)>,
    synced: bool,
}

impl Default for KillQueue {
    fn default() -> Self {
        Self {
            q: VecDeque::with_capacity(KILLQ_SIZE),
            synced: true,
        }
    }
}

impl KillQueue {
    /// A queue of the connections with a kill timer, earliest first.
    pub(crate) fn from_conns(conns: &HashMap<ConnKey, Connection>, now: Instant) -> Self {
        let mut items = Vec::with_capacity(KILLQ_SIZE);
        let mut synced = true;
        for (key, conn) in conns {
            let Some(at) = conn.expiry().filter(|_| conn.will_expire(now)) else {
                continue;
            };
            if items.len() >= KILLQ_SIZE {
                synced = false;
                break;
            }
            items.push((*key, at));
        }
        items.sort_unstable_by_key(|&(_, at)| at);
        Self {
            q: items.into(),
            synced,
        }
    }

    /// Schedules `key` at `at`, keeping the queue ordered by time.
    pub(crate) fn push(&mut self, key: ConnKey, at: Instant) {
        if !self.synced || self.q.len() >= KILLQ_SIZE {
            self.synced = false;
            return;
        }
        let idx = self.q.partition_point(|&(_, t)| t <= at);
        self.q.insert(idx, (key, at));
    }

    /// The front item if its time has come.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<ConnKey> {
        match self.q.front() {
            Some(&(key, at)) if at <= now => {
                self.q.pop_front();
                Some(key)
            }
            _ => None,
        }
    }

    /// When the front item expires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.q.front().map(|&(_, at)| at)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: u32) -> ConnKey {
        ConnKey {
            local_port: p,
            peer_port: p,
        }
    }

    #[test]
    fn test_rxq_bounded_and_rst_evicts_conn_items() {
        let mut q = RxQueue::default();
        for p in 0..u32::try_from(RXQ_SIZE).unwrap() {
            assert!(q.push(RxItem::Conn(key(p))));
        }
        assert!(q.is_synced());
        assert!(!q.push(RxItem::Conn(key(9999))));
        assert!(!q.is_synced());
        let rst = RxItem::Rst {
            local_port: 1,
            peer_port: 2,
        };
        assert!(q.push(rst));
        assert_eq!(q.len(), RXQ_SIZE);
        assert_eq!(q.q.back(), Some(&rst));
        // A queue full of RSTs drops the next one.
        let mut q = RxQueue::default();
        for _ in 0..RXQ_SIZE {
            assert!(q.push(rst));
        }
        assert!(!q.push(rst));
        assert_eq!(q.len(), RXQ_SIZE);
    }

    #[test]
    fn test_killq_bounded_and_ordered() {
        let now = Instant::now();
        let mut q = KillQueue::default();
        for p in 0..u32::try_from(KILLQ_SIZE).unwrap() {
            q.push(key(p), now + std::time::Duration::from_millis(u64::from(p)));
        }
        q.push(key(9999), now);
        assert!(!q.is_synced());
        assert_eq!(q.q.len(), KILLQ_SIZE);
        assert_eq!(q.pop_expired(now), Some(key(0)));
        assert_eq!(q.pop_expired(now), None);
        assert_eq!(
            q.next_deadline(),
            Some(now + std::time::Duration::from_millis(1))
        );
    }
}
