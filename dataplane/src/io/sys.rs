//! The raw system calls of the TAP/UDP backend, in one place: batched datagram receive and send
//! (`recvmmsg`/`sendmmsg`) over a caller-owned packet region, with UDP segmentation
//! (`UDP_SEGMENT`: one message carries many equal-sized datagrams to one destination) and UDP
//! receive coalescing (`UDP_GRO`: one message returns many, where the device runs GRO).
//!
//! Every function here has a safe signature: buffers are passed as slices, offsets are checked
//! against them before a pointer is formed, and nothing the kernel returns is trusted beyond the
//! lengths it reports.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Most datagrams moved by one `recvmmsg`/`sendmmsg` call.
pub const MAX_BATCH: usize = 64;

/// `SOL_UDP` options (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Room for one control message with an int: `CMSG_SPACE(sizeof(int))` on 64-bit Linux.
const CMSG_INT_SPACE: usize = 24;

/// One message received by [`recv_batch`]: a datagram, or with `UDP_GRO` several datagrams of
/// one sender back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxDatagram {
    /// Bytes received (the datagram is truncated to the slot when longer; see `truncated`).
    pub len: usize,
    /// Sender address (IPv4 only; other families read as 0.0.0.0:0).
    pub from: SocketAddrV4,
    /// The datagram was longer than the slot and was cut.
    pub truncated: bool,
    /// With `UDP_GRO`: the size of each datagram in the message (the last may be shorter); 0
    /// when the message is one datagram.
    pub segment: u16,
}

impl Default for RxDatagram {
    fn default() -> Self {
        RxDatagram {
            len: 0,
            from: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            truncated: false,
            segment: 0,
        }
    }
}

/// One message to send with [`send_batch`]: `region[start..start + len]` to `to`, as one
/// datagram, or with `segment` set as datagrams of `segment` bytes each (the last may be
/// shorter), cut by the kernel (`UDP_SEGMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxDatagram {
    /// Offset of the first byte in the region.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
    /// Destination.
    pub to: SocketAddrV4,
    /// Datagram size for segmentation; 0 to send the bytes as one datagram.
    pub segment: u16,
}

/// Asks the kernel to coalesce received datagrams of one flow into one message (`UDP_GRO`,
/// Linux 5.0+); [`recv_batch`] then reports the datagram size in [`RxDatagram::segment`].
///
/// # Errors
/// The kernel refused the option.
pub fn enable_udp_gro(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1)
}

/// `setsockopt(fd, level, opt, &value, sizeof(int))`.
fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr_from(a: &libc::sockaddr_in) -> SocketAddrV4 {
    if a.sin_family as libc::c_int != libc::AF_INET {
        return SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    }
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))
}

fn sockaddr_to(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// Receives up to `out.len()` (≤ [`MAX_BATCH`]) datagrams from the non-blocking socket `fd` with
/// one `recvmmsg`. Datagram `i` lands in `region[i * stride + offset ..][..slot_len]`.
/// Returns how many arrived; 0 when none was waiting.
///
/// # Errors
/// Any socket error other than "would block"; `InvalidInput` when the slots do not fit `region`.
pub fn recv_batch(
    fd: RawFd,
    region: &mut [u8],
    stride: usize,
    offset: usize,
    slot_len: usize,
    out: &mut [RxDatagram],
) -> io::Result<usize> {
    let n = out.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let needed = (n - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(offset))
        .and_then(|v| v.checked_add(slot_len));
    if offset + slot_len > stride || needed.is_none_or(|v| v > region.len()) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: all-zero bytes are a valid value for these plain C structs.
    let mut addrs: [libc::sockaddr_in; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // Control-message space per message, 8-byte aligned as cmsghdr needs.
    let mut control = [[0u64; CMSG_INT_SPACE / 8]; MAX_BATCH];
    let base = region.as_mut_ptr();
    for i in 0..n {
        // SAFETY: i * stride + offset + slot_len <= region.len() was checked above, so the
        // pointer stays inside `region`.
        iovs[i].iov_base = unsafe { base.add(i * stride + offset) }.cast();
        iovs[i].iov_len = slot_len;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_control = control[i].as_mut_ptr().cast();
        hdrs[i].msg_hdr.msg_controllen = CMSG_INT_SPACE;
    }
    // SAFETY: `hdrs[..n]` point at live iovecs (inside `region`, exclusively borrowed) and
    // sockaddr buffers of the stated sizes; all outlive the call. MSG_DONTWAIT: never blocks.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
    }
    let got = (got as usize).min(n);
    for i in 0..got {
        out[i] = RxDatagram {
            len: (hdrs[i].msg_len as usize).min(slot_len),
            from: sockaddr_from(&addrs[i]),
            truncated: hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            segment: gro_segment(&hdrs[i].msg_hdr),
        };
    }
    Ok(got)
}

/// Sends with DF clear and never learns a path MTU (`IP_PMTUDISC_DONT`), as the kernel's VXLAN
/// device sends its outer packets.
///
/// # Errors
/// The kernel refused the option.
pub fn set_pmtudisc_dont(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DONT)
}

/// The `UDP_GRO` segment size a received message's control data carries, or 0.
fn gro_segment(hdr: &libc::msghdr) -> u16 {
    if hdr.msg_controllen < std::mem::size_of::<libc::cmsghdr>() {
        return 0;
    }
    // SAFETY: msg_control points at the live control buffer set up by `recv_batch`, of which
    // the kernel filled `msg_controllen` bytes; CMSG_FIRSTHDR/CMSG_NXTHDR stay inside it and
    // return null past its end.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data_len = (*c).cmsg_len.saturating_sub(libc::CMSG_LEN(0) as usize);
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO && data_len >= 4 {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return u16::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
}

/// Sends `msgs` (≤ [`MAX_BATCH`]) from `region` on `fd` with one `sendmmsg`, without blocking.
/// Returns how many were sent (the kernel may stop early when the socket buffer is full).
///
/// # Errors
/// Any socket error other than "would block"; `InvalidInput` when a message is outside `region`.
pub fn send_batch(fd: RawFd, region: &[u8], msgs: &[TxDatagram]) -> io::Result<usize> {
    let n = msgs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero bytes are a valid value for these plain C structs.
    let mut addrs: [libc::sockaddr_in; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut control = [[0u64; CMSG_INT_SPACE / 8]; MAX_BATCH];
    for (i, m) in msgs[..n].iter().enumerate() {
        let bytes = region
            .get(m.start..m.start.saturating_add(m.len))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        addrs[i] = sockaddr_to(m.to);
        iovs[i].iov_base = bytes.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = bytes.len();
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if m.segment > 0 && m.len > usize::from(m.segment) {
            hdrs[i].msg_hdr.msg_control = control[i].as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
            hdrs[i].msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            // SAFETY: the control buffer is CMSG_INT_SPACE (24) bytes, 8-byte aligned, at least
            // CMSG_SPACE(2); CMSG_FIRSTHDR returns its start, and the header plus two data bytes
            // fit in it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdrs[i].msg_hdr);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), m.segment);
            }
        }
    }
    // SAFETY: the iovecs point into `region` (bounds checked above; the kernel only reads them)
    // and at sockaddr buffers of the stated size; all outlive the call.
    let sent =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
    }
    Ok(sent as usize)
}

/// Sets the socket's receive and send buffers to `bytes` each, beyond `rmem_max`/`wmem_max` when
/// the process has `CAP_NET_ADMIN` (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`), else as far as the limits
/// allow. Bursts of VXLAN datagrams then wait in the socket instead of being dropped.
///
/// # Errors
/// Only when even the unprivileged setting fails.
pub fn grow_socket_buffers(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v: libc::c_int = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    for (force, plain) in
        [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)]
    {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, v).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_on_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let mut region = vec![0u8; 4 * 64];
        for i in 0..4 {
            region[i * 64..i * 64 + 10].fill(i as u8 + 1);
        }
        let msgs: Vec<_> =
            (0..4).map(|i| TxDatagram { start: i * 64, len: 10 + i, to, segment: 0 }).collect();
        assert_eq!(send_batch(tx.as_raw_fd(), &region, &msgs).unwrap(), 4);

        let mut inbox = vec![0u8; 8 * 128];
        let mut out = [RxDatagram::default(); 8];
        let mut got = 0;
        for _ in 0..100 {
            got += recv_batch(rx.as_raw_fd(), &mut inbox, 128, 16, 100, &mut out[got..]).unwrap();
            if got == 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 4);
        for (i, d) in out[..4].iter().enumerate() {
            assert_eq!(d.len, 10 + i);
            assert!(!d.truncated);
            assert_eq!(
                d.from,
                match tx.local_addr().unwrap() {
                    std::net::SocketAddr::V4(a) => a,
                    _ => unreachable!(),
                }
            );
            assert_eq!(inbox[i * 128 + 16], i as u8 + 1);
        }
        // Nothing left: returns 0 instead of blocking.
        assert_eq!(recv_batch(rx.as_raw_fd(), &mut inbox, 128, 16, 100, &mut out).unwrap(), 0);
    }

    #[test]
    fn segmented_send_arrives_coalesced_with_its_segment_size() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_udp_gro(rx.as_raw_fd()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        // Three datagrams of 1000, 1000 and 500 bytes in one message.
        let region: Vec<u8> = (0..2500u32).map(|i| (i / 1000) as u8 + 1).collect();
        let msg = TxDatagram { start: 0, len: 2500, to, segment: 1000 };
        assert_eq!(send_batch(tx.as_raw_fd(), &region, &[msg]).unwrap(), 1);
        let mut inbox = vec![0u8; 4 * 4096];
        let mut out = [RxDatagram::default(); 4];
        let mut got = 0;
        let mut bytes = 0;
        for _ in 0..100 {
            let n = recv_batch(rx.as_raw_fd(), &mut inbox, 4096, 0, 4096, &mut out[got..]).unwrap();
            for d in &out[got..got + n] {
                bytes += d.len;
                // Over loopback the kernel hands the segmented message over whole.
                assert!(d.segment == 1000 || (d.segment == 0 && d.len <= 1000), "{d:?}");
            }
            got += n;
            if bytes == 2500 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(bytes, 2500);
        assert_eq!(inbox[0], 1);
    }

    #[test]
    fn out_of_region_is_rejected() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut region = vec![0u8; 100];
        let mut out = [RxDatagram::default(); 2];
        assert!(recv_batch(s.as_raw_fd(), &mut region, 64, 0, 64, &mut out).is_err());
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
        assert!(send_batch(
            s.as_raw_fd(),
            &region,
            &[TxDatagram { start: 90, len: 20, to, segment: 0 }]
        )
        .is_err());
    }
}
