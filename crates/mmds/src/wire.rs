//! Ethernet II, ARP (Ethernet/IPv4), IPv4 and TCP headers: bounds-checked parsing of guest
//! frames and writing of the stack's own frames, with the Internet checksum.
//!
//! Parsers return `None` for anything malformed and never read past the slice; writers return
//! `None` when the output buffer is too small and never write past it. Incoming checksums are
//! not verified (as Firecracker: the guest driver may offload them); outgoing ones are computed.
//! Pure functions, no state.

use std::net::Ipv4Addr;

/// Ethernet II header length.
pub const ETH_HDR_LEN: usize = 14;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethernet/IPv4 ARP packet length.
pub const ARP_LEN: usize = 28;
/// IPv4 header length without options (the stack never sends options).
pub const IPV4_HDR_LEN: usize = 20;
/// IP protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;
/// TCP header length without options.
pub const TCP_HDR_LEN: usize = 20;

/// TCP flag `FIN`.
pub const FIN: u8 = 0x01;
/// TCP flag `SYN`.
pub const SYN: u8 = 0x02;
/// TCP flag `RST`.
pub const RST: u8 = 0x04;
/// TCP flag `PSH`.
pub const PSH: u8 = 0x08;
/// TCP flag `ACK`.
pub const ACK: u8 = 0x10;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    be32(b, at).map(Ipv4Addr::from)
}

/// A parsed Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthFrame<'a> {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType.
    pub ethertype: u16,
    /// Everything after the header.
    pub payload: &'a [u8],
}

/// Parses an Ethernet II header.
pub fn parse_eth(frame: &[u8]) -> Option<EthFrame<'_>> {
    let hdr = frame.get(..ETH_HDR_LEN)?;
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&hdr[..6]);
    src.copy_from_slice(&hdr[6..12]);
    Some(EthFrame {
        dst,
        src,
        ethertype: be16(hdr, 12)?,
        payload: &frame[ETH_HDR_LEN..],
    })
}

/// Writes an Ethernet II header into `buf[..14]`.
pub fn write_eth_header(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Option<()> {
    let hdr = buf.get_mut(..ETH_HDR_LEN)?;
    hdr[..6].copy_from_slice(&dst);
    hdr[6..12].copy_from_slice(&src);
    hdr[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Some(())
}

/// An Ethernet/IPv4 ARP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRequest {
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

/// The target protocol address of what may be an ARP packet (only the length is checked).
pub fn arp_target(payload: &[u8]) -> Option<Ipv4Addr> {
    if payload.len() < ARP_LEN {
        return None;
    }
    ipv4_at(payload, 24)
}

/// Parses an Ethernet/IPv4 ARP request (htype 1, ptype IPv4, hlen 6, plen 4, oper 1).
pub fn parse_arp_request(payload: &[u8]) -> Option<ArpRequest> {
    let p = payload.get(..ARP_LEN)?;
    if be16(p, 0)? != 1
        || be16(p, 2)? != ETHERTYPE_IPV4
        || p[4] != 6
        || p[5] != 4
        || be16(p, 6)? != 1
    {
        return None;
    }
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&p[8..14]);
    Some(ArpRequest {
        sha,
        spa: ipv4_at(p, 14)?,
        tpa: ipv4_at(p, 24)?,
    })
}

/// Writes an ARP reply (`sha`/`spa` answering, `tha`/`tpa` the requester) into `buf[..28]`.
pub fn write_arp_reply(
    buf: &mut [u8],
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Option<usize> {
    let p = buf.get_mut(..ARP_LEN)?;
    p[..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    p[8..14].copy_from_slice(&sha);
    p[14..18].copy_from_slice(&spa.octets());
    p[18..24].copy_from_slice(&tha);
    p[24..28].copy_from_slice(&tpa.octets());
    Some(ARP_LEN)
}

/// A parsed IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub protocol: u8,
    /// Whether this is a fragment (MF set or non-zero offset).
    pub fragment: bool,
    /// The payload, cut at the header's total length (Ethernet padding removed).
    pub payload: &'a [u8],
}

/// The destination address of what may be an IPv4 packet (only the length is checked).
pub fn ipv4_dst(payload: &[u8]) -> Option<Ipv4Addr> {
    if payload.len() < IPV4_HDR_LEN {
        return None;
    }
    ipv4_at(payload, 16)
}

/// Parses an IPv4 header (version 4, IHL ≥ 5, IHL ≤ total length ≤ slice length).
pub fn parse_ipv4(payload: &[u8]) -> Option<Ipv4Packet<'_>> {
    let first = *payload.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IPV4_HDR_LEN {
        return None;
    }
    let total = usize::from(be16(payload, 2)?);
    if total < ihl || total > payload.len() {
        return None;
    }
    let frag = be16(payload, 6)?;
    Some(Ipv4Packet {
        src: ipv4_at(payload, 12)?,
        dst: ipv4_at(payload, 16)?,
        protocol: payload[9],
        fragment: frag & 0x3fff != 0,
        payload: payload.get(ihl..total)?,
    })
}

/// One's-complement sum of `data` (big-endian 16-bit words) added to `sum`.
fn sum_words(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// The Internet checksum (RFC 1071) of `data` with `initial` already summed in.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(sum_words(data, 0)) + u64::from(initial);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves sum <= 0xffff.
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// Writes an option-less IPv4 header for a `payload_len`-byte payload into `buf[..20]`.
pub fn write_ipv4_header(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
) -> Option<()> {
    let total = u16::try_from(IPV4_HDR_LEN + payload_len).ok()?;
    let h = buf.get_mut(..IPV4_HDR_LEN)?;
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]);
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    h[8] = 64;
    h[9] = protocol;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// A parsed TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (without `NS`).
    pub flags: u8,
    /// Advertised window.
    pub window: u16,
    /// The MSS option: `Ok(None)` absent, `Ok(Some(v))` present, `Err(())` malformed options.
    pub mss: Result<Option<u16>, ()>,
    /// The payload.
    pub payload: &'a [u8],
}

impl TcpSegment<'_> {
    /// Sequence space the segment occupies (payload plus one for each of SYN and FIN).
    pub fn seq_len(&self) -> u32 {
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        len.saturating_add(u32::from(self.flags & SYN != 0))
            .saturating_add(u32::from(self.flags & FIN != 0))
    }
}

/// Parses a TCP header and its options.
pub fn parse_tcp(bytes: &[u8]) -> Option<TcpSegment<'_>> {
    if bytes.len() < TCP_HDR_LEN {
        return None;
    }
    let offset = usize::from(bytes[12] >> 4) * 4;
    if offset < TCP_HDR_LEN || offset > bytes.len() {
        return None;
    }
    Some(TcpSegment {
        src_port: be16(bytes, 0)?,
        dst_port: be16(bytes, 2)?,
        seq: be32(bytes, 4)?,
        ack: be32(bytes, 8)?,
        flags: bytes[13],
        window: be16(bytes, 14)?,
        mss: parse_mss(&bytes[TCP_HDR_LEN..offset]),
        payload: &bytes[offset..],
    })
}

fn parse_mss(opts: &[u8]) -> Result<Option<u16>, ()> {
    let mut i = 0;
    let mut mss = None;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1).ok_or(())?);
                if len < 2 || i + len > opts.len() {
                    return Err(());
                }
                if kind == 2 {
                    if len != 4 {
                        return Err(());
                    }
                    mss = Some(be16(opts, i + 2).ok_or(())?);
                }
                i += len;
            }
        }
    }
    Ok(mss)
}

/// What to put in an outgoing TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpOut<'a> {
    /// Our address.
    pub src: Ipv4Addr,
    /// The peer's address.
    pub dst: Ipv4Addr,
    /// Our port.
    pub src_port: u16,
    /// The peer's port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Advertised window.
    pub window: u16,
    /// An MSS option to include (SYN-ACK).
    pub mss: Option<u16>,
    /// Payload.
    pub payload: &'a [u8],
}

/// Writes a TCP segment (header, options, payload, checksum) into `buf`; returns its length.
pub fn write_tcp(buf: &mut [u8], s: &TcpOut<'_>) -> Option<usize> {
    let hdr_len = TCP_HDR_LEN + if s.mss.is_some() { 4 } else { 0 };
    let total = hdr_len + s.payload.len();
    let seg = buf.get_mut(..total)?;
    seg[0..2].copy_from_slice(&s.src_port.to_be_bytes());
    seg[2..4].copy_from_slice(&s.dst_port.to_be_bytes());
    seg[4..8].copy_from_slice(&s.seq.to_be_bytes());
    seg[8..12].copy_from_slice(&s.ack.to_be_bytes());
    seg[12] = u8::try_from(hdr_len / 4).ok()? << 4;
    seg[13] = s.flags;
    seg[14..16].copy_from_slice(&s.window.to_be_bytes());
    seg[16..20].copy_from_slice(&[0, 0, 0, 0]);
    if let Some(mss) = s.mss {
        seg[20..22].copy_from_slice(&[2, 4]);
        seg[22..24].copy_from_slice(&mss.to_be_bytes());
    }
    seg[hdr_len..].copy_from_slice(s.payload);
    let len = u32::try_from(total).ok()?;
    let pseudo = sum_words(&s.src.octets(), 0);
    let pseudo = sum_words(&s.dst.octets(), pseudo);
    let pseudo = pseudo
        .wrapping_add(u32::from(PROTOCOL_TCP))
        .wrapping_add(len);
    let c = checksum(seg, pseudo);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

/// Verifies a TCP checksum with its pseudo-header (tests and diagnostics).
pub fn tcp_checksum_ok(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> bool {
    let Ok(len) = u32::try_from(segment.len()) else {
        return false;
    };
    let pseudo = sum_words(&dst.octets(), sum_words(&src.octets(), 0));
    checksum(
        segment,
        pseudo
            .wrapping_add(u32::from(PROTOCOL_TCP))
            .wrapping_add(len),
    ) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_known_vector() {
        // The classic example header from RFC 1071 discussions (checksum 0xb861).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h, 0), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h, 0), 0);
        let mut buf = [0u8; 20];
        write_ipv4_header(
            &mut buf,
            Ipv4Addr::new(1, 2, 3, 4),
            Ipv4Addr::new(5, 6, 7, 8),
            6,
            0,
        )
        .unwrap();
        assert_eq!(checksum(&buf, 0), 0);
        let p = parse_ipv4(&buf).unwrap();
        assert_eq!(
            (p.src, p.dst, p.protocol, p.fragment),
            (
                Ipv4Addr::new(1, 2, 3, 4),
                Ipv4Addr::new(5, 6, 7, 8),
                6,
                false
            )
        );
        assert!(
            write_ipv4_header(
                &mut buf[..19],
                Ipv4Addr::LOCALHOST,
                Ipv4Addr::LOCALHOST,
                6,
                0
            )
            .is_none()
        );
    }

    #[test]
    fn ipv4_rejects_malformed() {
        let mut buf = [0u8; 40];
        write_ipv4_header(&mut buf, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 6, 20).unwrap();
        assert_eq!(parse_ipv4(&buf).unwrap().payload.len(), 20);
        assert!(
            parse_ipv4(&buf[..39]).is_none(),
            "total length beyond the slice"
        );
        let mut bad = buf;
        bad[0] = 0x44;
        assert!(parse_ipv4(&bad).is_none());
        bad[0] = 0x65;
        assert!(parse_ipv4(&bad).is_none());
        let mut padded = [0u8; 60];
        padded[..40].copy_from_slice(&buf);
        assert_eq!(
            parse_ipv4(&padded).unwrap().payload.len(),
            20,
            "Ethernet padding cut"
        );
    }

    #[test]
    fn arp_round_trip() {
        let mut buf = [0u8; 28];
        let (mac, ip) = ([1, 2, 3, 4, 5, 6], Ipv4Addr::new(169, 254, 169, 254));
        write_arp_reply(&mut buf, mac, ip, [9; 6], Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        assert!(
            parse_arp_request(&buf).is_none(),
            "a reply is not a request"
        );
        buf[7] = 1;
        let req = parse_arp_request(&buf).unwrap();
        assert_eq!(
            (req.sha, req.spa, req.tpa),
            (mac, ip, Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(arp_target(&buf), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(parse_arp_request(&buf[..27]).is_none());
    }

    #[test]
    fn tcp_round_trip_and_options() {
        let (a, b) = (
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(169, 254, 169, 254),
        );
        let mut buf = [0u8; 64];
        let out = TcpOut {
            src: a,
            dst: b,
            src_port: 1234,
            dst_port: 80,
            seq: 7,
            ack: 9,
            flags: SYN | ACK,
            window: 100,
            mss: Some(1460),
            payload: b"hi",
        };
        let n = write_tcp(&mut buf, &out).unwrap();
        assert_eq!(n, 26);
        assert!(tcp_checksum_ok(a, b, &buf[..n]));
        let s = parse_tcp(&buf[..n]).unwrap();
        assert_eq!(
            (
                s.src_port, s.dst_port, s.seq, s.ack, s.flags, s.window, s.mss, s.payload
            ),
            (1234, 80, 7, 9, SYN | ACK, 100, Ok(Some(1460)), &b"hi"[..])
        );
        assert_eq!(s.seq_len(), 3);
        assert!(write_tcp(&mut buf[..25], &out).is_none());
        assert_eq!(parse_mss(&[1, 1, 2, 4, 0x05, 0xb4, 0]), Ok(Some(1460)));
        assert_eq!(parse_mss(&[2, 3, 0]), Err(()));
        assert_eq!(parse_mss(&[8, 10, 0, 0]), Err(()));
        assert_eq!(parse_mss(&[8]), Err(()));
        assert_eq!(parse_mss(&[4, 2, 0, 0]), Ok(None));
    }
}
