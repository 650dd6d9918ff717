//! `linen.1` as a multi-queue TAP device with virtio-net headers: the overlay side of both
//! datapaths.
//!
//! Opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE` and `TUNSETOFFLOAD`
//! (checksum, TSO4, TSO6, TSO with ECN, and USO4/USO6 where the kernel has them, ≥ 6.2), the
//! device tells the kernel that linen completes checksums and segments itself. The kernel then
//! hands linen whole super-packets (a TCP burst of up to 64 KB as one read, with its segment size
//! in the virtio-net header) and takes coalesced ones back (one write of many segments' payload,
//! with the segment size for the kernel to re-segment or deliver as one skb). Each read or write
//! is one packet with a 10-byte `struct virtio_net_hdr` in front; its meaning is the pipeline's
//! [`Offload`](crate::pipeline::Offload).
//!
//! One [`TunQueue`] per worker: every file descriptor opened on the same name is one more queue
//! of the device, and the kernel steers each flow to one queue. The device lives as long as a
//! queue is open (it is not persistent): when the last descriptor of its last queue closes, its
//! routes and neighbours go with it. A descriptor kept elsewhere (the service manager's
//! file-descriptor store, see [`crate::io::fdstore`]) keeps the device, its address, routes,
//! neighbours and MAC, and the packets the kernel queues for it, while no process reads it;
//! [`TunQueue::adopt`] takes such a descriptor back.
//!
//! Every function has a safe signature: buffers are slices, and nothing the kernel returns is
//! trusted beyond the lengths it reports.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::pipeline::VNET_HDR_LEN;

// linux/if_tun.h
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETVNETLE: libc::c_ulong = 0x4004_54dc;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// Most queues a TAP device can have (the kernel's `MAX_TAP_QUEUES`).
pub const MAX_QUEUES: u32 = 256;

/// Offloads the kernel granted a [`TunQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOffloads {
    /// TCP segmentation (IPv4 and IPv6, ECN included) and checksum offload.
    pub tso: bool,
    /// UDP segmentation (USO): kernel 6.2 and later.
    pub uso: bool,
}

/// One queue of a multi-queue TAP device with virtio-net headers, non-blocking.
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
    name: String,
    offloads: TunOffloads,
}

#[repr(C)]
struct IfreqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifr_name(ifr: &IfreqFlags) -> String {
    let len = ifr.name.iter().position(|&c| c == 0).unwrap_or(libc::IFNAMSIZ);
    ifr.name[..len].iter().map(|&c| c as u8 as char).collect()
}

fn ioctl_int(fd: RawFd, req: libc::c_ulong, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the request takes a pointer to an int, which the kernel only reads; `value` lives
    // across the call.
    let rc = unsafe { libc::ioctl(fd, req, &value as *const libc::c_int) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_uint_arg(fd: RawFd, req: libc::c_ulong, value: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value, not as a pointer.
    let rc = unsafe { libc::ioctl(fd, req, value as libc::c_ulong) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl TunQueue {
    /// Opens one more queue of the TAP device `name` (creating the device with the first one),
    /// with virtio-net headers and the offloads linen handles: checksum and TSO always, USO when
    /// the kernel knows it.
    ///
    /// # Errors
    /// Opening `/dev/net/tun` or an ioctl failed (no `CAP_NET_ADMIN`, a device of that name that
    /// is not a multi-queue TAP with virtio-net headers, a kernel without `CONFIG_TUN`).
    pub fn open(name: &str) -> io::Result<TunQueue> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
        }
        // SAFETY: a plain open(2) of a NUL-terminated path.
        let raw = unsafe {
            libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ifr = IfreqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE,
            _pad: [0; 22],
        };
        for (d, s) in ifr.name.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes; ours is as large), which
        // lives across the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr as *mut IfreqFlags) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        TunQueue::configure(fd, &ifr)
    }

    /// Takes over a queue of a TAP device that an earlier process opened with
    /// [`TunQueue::open`] (a descriptor handed over through the service manager's store). It
    /// must be a queue of the device `name`, with virtio-net headers and several queues; the
    /// header size and offloads are set again, as `open` sets them (idempotent for the kernel).
    ///
    /// # Errors
    /// `InvalidData` when the descriptor is no TAP queue of `name` in linen's mode; the kernel's
    /// error when an ioctl fails (`EBADFD` for a queue whose device is gone).
    pub fn adopt(fd: OwnedFd, name: &str) -> io::Result<TunQueue> {
        let mut ifr = IfreqFlags { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
        // SAFETY: TUNGETIFF writes a `struct ifreq` (40 bytes; ours is as large), which lives
        // across the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut ifr as *mut IfreqFlags) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let want = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
        let got = ifr_name(&ifr);
        if got != name || ifr.flags & want != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the handed-over descriptor is a queue of {got:?} with flags {:#x}, not a \
                     multi-queue TAP {name:?} with virtio-net headers",
                    ifr.flags
                ),
            ));
        }
        // Non-blocking is a property of the open file, which the earlier process set; make sure.
        // SAFETY: F_GETFL/F_SETFL only read and set the file's status flags.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if fl >= 0 && fl & libc::O_NONBLOCK == 0 {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        TunQueue::configure(fd, &ifr)
    }

    /// Virtio-net header size and byte order, and the offloads linen handles, on a queue.
    fn configure(fd: OwnedFd, ifr: &IfreqFlags) -> io::Result<TunQueue> {
        let name = ifr_name(ifr);
        ioctl_int(fd.as_raw_fd(), TUNSETVNETHDRSZ, VNET_HDR_LEN as libc::c_int)?;
        // The header's fields are little-endian whatever the host (virtio 1.0). A no-op on
        // little-endian hosts; kernels without cross-endian support refuse it only on big-endian
        // ones, where it matters.
        if let Err(e) = ioctl_int(fd.as_raw_fd(), TUNSETVNETLE, 1) {
            if cfg!(target_endian = "big") {
                return Err(e);
            }
        }
        let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        let offloads =
            match ioctl_uint_arg(fd.as_raw_fd(), TUNSETOFFLOAD, tso | TUN_F_USO4 | TUN_F_USO6) {
                Ok(()) => TunOffloads { tso: true, uso: true },
                Err(_) => {
                    ioctl_uint_arg(fd.as_raw_fd(), TUNSETOFFLOAD, tso)?;
                    TunOffloads { tso: true, uso: false }
                }
            };
        Ok(TunQueue { fd, name, offloads })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The offloads the kernel accepted.
    pub fn offloads(&self) -> TunOffloads {
        self.offloads
    }

    /// Reads one packet: its virtio-net header into `hdr`, its bytes into `head` and, when
    /// longer, on into `tail`. Returns the packet's length (without the header): bytes
    /// `..min(len, head.len())` are in `head`, the rest at the start of `tail`. `Ok(None)` when
    /// nothing is waiting. A packet longer than `head` and `tail` together is cut by the kernel;
    /// make `tail` at least 64 KiB.
    ///
    /// # Errors
    /// The device's error (e.g. `EBADFD` once the device is gone).
    #[inline]
    pub fn read(
        &self,
        hdr: &mut [u8; VNET_HDR_LEN],
        head: &mut [u8],
        tail: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let mut iov = [
            libc::iovec { iov_base: hdr.as_mut_ptr().cast(), iov_len: hdr.len() },
            libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: head.len() },
            libc::iovec { iov_base: tail.as_mut_ptr().cast(), iov_len: tail.len() },
        ];
        // SAFETY: the iovecs point at three live, exclusively borrowed buffers of the stated
        // lengths; the kernel writes at most that much into each.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_mut_ptr(), 3) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        // Never more than the buffers hold, whatever the kernel says.
        let n = (n as usize).min(VNET_HDR_LEN + head.len() + tail.len());
        Ok(Some(n.saturating_sub(VNET_HDR_LEN)))
    }

    /// Writes one packet: the virtio-net header `hdr` followed by `parts`, gathered. The kernel
    /// copies the bytes before it returns, so the buffers may be reused at once.
    ///
    /// # Errors
    /// The device's error: `EAGAIN` when its queue is full, `EINVAL` for a header the kernel
    /// refuses, `EIO` while the device is down.
    #[inline]
    pub fn write(&self, hdr: &[u8; VNET_HDR_LEN], parts: &[IoSlice<'_>]) -> io::Result<usize> {
        // The virtio-net header, a rewritten header and the payload pieces.
        const MAX_IOV: usize = 2 + crate::pipeline::MAX_COALESCE_PARTS;
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOV];
        iov[0] = libc::iovec { iov_base: hdr.as_ptr() as *mut libc::c_void, iov_len: hdr.len() };
        let n = parts.len().min(MAX_IOV - 1);
        for (slot, part) in iov[1..].iter_mut().zip(&parts[..n]) {
            *slot =
                libc::iovec { iov_base: part.as_ptr() as *mut libc::c_void, iov_len: part.len() };
        }
        // SAFETY: the iovecs point at live buffers borrowed for the call (the header and
        // `parts`), which the kernel only reads.
        let rc = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), (n + 1) as libc::c_int) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((rc as usize).saturating_sub(VNET_HDR_LEN))
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for TunQueue {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
