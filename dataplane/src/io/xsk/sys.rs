//! Every kernel and C-library call of the AF_XDP backend: libbpf (load, attach, maps), libxdp
//! (UMEM, sockets, rings) and the raw socket calls (`setsockopt`, `getsockopt`, `sendto`,
//! `recvfrom`, `poll`, `mmap`). Nothing else in `io::xsk` calls into C.
//!
//! The wrappers here are small and typed; the `unsafe` ones state what the caller must uphold.
//! Errors come back as [`SysError`] naming the call.

use std::ffi::{c_void, CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};

pub(crate) use libxdp_sys::{bpf_link, bpf_object, xsk_ring_cons, xsk_ring_prod};
pub(crate) use libxdp_sys::{xsk_socket, xsk_umem, XDP_PACKET_HEADROOM};

/// A failed kernel or library call.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SysError {
    /// The call that failed.
    pub call: &'static str,
    /// The error it reported.
    #[source]
    pub source: io::Error,
}

impl SysError {
    fn errno(call: &'static str, err: i32) -> SysError {
        SysError { call, source: io::Error::from_raw_os_error(err.abs()) }
    }

    fn last(call: &'static str) -> SysError {
        SysError { call, source: io::Error::last_os_error() }
    }

    /// The OS error number, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// `setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET)` (Linux 6.17+): how many TX descriptors one
/// `sendto` kick turns into skbs in copy mode (the kernel default is 32).
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;

// ---------------------------------------------------------------------------------------------
// Interfaces

/// `if_nametoindex` in the calling thread's network namespace.
pub(crate) fn if_nametoindex(name: &str) -> Result<u32, SysError> {
    let c = CString::new(name).map_err(|_| SysError::errno("if_nametoindex", libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(SysError::last("if_nametoindex"));
    }
    Ok(idx)
}

// ---------------------------------------------------------------------------------------------
// Memory

/// A page-aligned mapping, unmapped on drop: the UMEM's frame area (a shared mapping of a
/// memory file, so that a later process can map the same frames) or an AF_XDP ring.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to another thread moves
// nothing thread-bound.
unsafe impl Send for Mmap {}
// SAFETY: `Mmap` hands out only raw pointers; synchronising access to the bytes is the users' job
// (the UMEM's frame-ownership rules, see `umem.rs`; the rings' producer/consumer protocol).
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of the file `fd` from page offset `pgoff`, shared and populated.
    fn shared(call: &'static str, fd: RawFd, len: usize, pgoff: u64) -> Result<Mmap, SysError> {
        // SAFETY: a fresh mapping of a file the caller owns aliases no Rust object; the
        // arguments are valid (a bad fd, length or offset only yields an error).
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(SysError::last(call));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(SysError::errno(call, libc::ENOMEM))?;
        Ok(Mmap { ptr, len })
    }

    /// A new memory file of `len` zero bytes, mapped shared: a UMEM's frame area. The file
    /// outlives the mapping (and the process) wherever its descriptor is kept.
    pub(crate) fn memfd(len: usize) -> Result<(OwnedFd, Mmap), SysError> {
        let fd = crate::io::fdstore::memfd("linen-umem")
            .map_err(|e| SysError { call: "memfd_create(UMEM)", source: e })?;
        // SAFETY: ftruncate on a descriptor we own; no memory is involved.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(SysError::last("ftruncate(UMEM)"));
        }
        let map = Mmap::shared("mmap(UMEM)", fd.as_raw_fd(), len, 0)?;
        Ok((fd, map))
    }

    /// Maps an existing UMEM memory file of exactly `len` bytes.
    pub(crate) fn adopt_memfd(fd: BorrowedFd<'_>, len: usize) -> Result<Mmap, SysError> {
        let size = crate::io::fdstore::file_size(fd)
            .map_err(|e| SysError { call: "fstat(UMEM)", source: e })?;
        if size != len as u64 {
            return Err(SysError::errno(
                "fstat(UMEM): size differs from the geometry",
                libc::EINVAL,
            ));
        }
        Mmap::shared("mmap(UMEM)", fd.as_raw_fd(), len, 0)
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and nobody else unmaps.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// ---------------------------------------------------------------------------------------------
// libxdp: UMEM and sockets

/// An all-zero ring descriptor, to be filled in by libxdp.
pub(crate) fn empty_prod() -> xsk_ring_prod {
    xsk_ring_prod {
        cached_prod: 0,
        cached_cons: 0,
        mask: 0,
        size: 0,
        producer: ptr::null_mut(),
        consumer: ptr::null_mut(),
        ring: ptr::null_mut(),
        flags: ptr::null_mut(),
    }
}

/// An all-zero ring descriptor, to be filled in by libxdp.
pub(crate) fn empty_cons() -> xsk_ring_cons {
    xsk_ring_cons {
        cached_prod: 0,
        cached_cons: 0,
        mask: 0,
        size: 0,
        producer: ptr::null_mut(),
        consumer: ptr::null_mut(),
        ring: ptr::null_mut(),
        flags: ptr::null_mut(),
    }
}

/// Geometry of a UMEM, as libxdp's `xsk_umem_config`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UmemGeometry {
    pub fill_size: u32,
    pub comp_size: u32,
    pub frame_size: u32,
    pub frame_headroom: u32,
}

/// `xsk_umem__create`: registers `area` as a UMEM and sets up the first fill/completion rings.
///
/// # Safety
/// `area` must stay mapped until [`umem_delete`]; `fill` and `comp` must stay at their addresses
/// until every socket that uses them is deleted (libxdp keeps the pointers).
pub(crate) unsafe fn umem_create(
    area: &Mmap,
    geometry: UmemGeometry,
    fill: *mut xsk_ring_prod,
    comp: *mut xsk_ring_cons,
) -> Result<NonNull<xsk_umem>, SysError> {
    let cfg = libxdp_sys::xsk_umem_config {
        fill_size: geometry.fill_size,
        comp_size: geometry.comp_size,
        frame_size: geometry.frame_size,
        frame_headroom: geometry.frame_headroom,
        flags: 0,
    };
    let mut umem = ptr::null_mut();
    // SAFETY: all pointers are valid for the call; the caller keeps `area`, `fill`, `comp` alive
    // as required above.
    let rc = unsafe {
        libxdp_sys::xsk_umem__create(
            &mut umem,
            area.as_ptr().cast::<c_void>(),
            area.len() as u64,
            fill,
            comp,
            &cfg,
        )
    };
    if rc != 0 {
        return Err(SysError::errno("xsk_umem__create", rc));
    }
    NonNull::new(umem).ok_or(SysError::errno("xsk_umem__create", libc::EFAULT))
}

/// `xsk_umem__delete`.
///
/// # Safety
/// `umem` came from [`umem_create`], every socket on it is deleted, and it is not used again.
pub(crate) unsafe fn umem_delete(umem: NonNull<xsk_umem>) -> Result<(), SysError> {
    // SAFETY: per the contract above.
    let rc = unsafe { libxdp_sys::xsk_umem__delete(umem.as_ptr()) };
    if rc != 0 {
        return Err(SysError::errno("xsk_umem__delete", rc));
    }
    Ok(())
}

/// `XDP_COPY` bind flag.
pub(crate) const XDP_COPY: u16 = libxdp_sys::XDP_COPY as u16;
/// `XDP_ZEROCOPY` bind flag.
pub(crate) const XDP_ZEROCOPY: u16 = libxdp_sys::XDP_ZEROCOPY as u16;
/// `XDP_USE_NEED_WAKEUP` bind flag.
pub(crate) const XDP_USE_NEED_WAKEUP: u16 = libxdp_sys::XDP_USE_NEED_WAKEUP as u16;
const XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD: u32 = 1;

/// `xsk_socket__create_shared`, never letting libxdp load or attach a program of its own.
///
/// libxdp passes `bind_flags` only on the first socket of a UMEM; later ones bind with
/// `XDP_SHARED_UMEM` alone and inherit the first one's copy/zero-copy and need-wakeup mode.
///
/// # Safety
/// `umem` is live; `rx`, `tx`, `fill`, `comp` stay at their addresses until [`socket_delete`] (and
/// for `fill`/`comp`, until the last socket of this device/queue is deleted). Calls on one UMEM
/// must not run concurrently (libxdp keeps unsynchronised state in it).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn socket_create(
    ifname: &CStr,
    queue: u32,
    umem: NonNull<xsk_umem>,
    rx: *mut xsk_ring_cons,
    tx: *mut xsk_ring_prod,
    fill: *mut xsk_ring_prod,
    comp: *mut xsk_ring_cons,
    ring_sizes: (u32, u32),
    bind_flags: u16,
) -> Result<NonNull<xsk_socket>, SysError> {
    let cfg = libxdp_sys::xsk_socket_config {
        rx_size: ring_sizes.0,
        tx_size: ring_sizes.1,
        __bindgen_anon_1: libxdp_sys::xsk_socket_config__bindgen_ty_1 {
            libxdp_flags: XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
        },
        xdp_flags: 0,
        bind_flags,
    };
    let mut xsk = ptr::null_mut();
    // SAFETY: pointers are valid per the contract above; `cfg` and `ifname` outlive the call.
    let rc = unsafe {
        libxdp_sys::xsk_socket__create_shared(
            &mut xsk,
            ifname.as_ptr(),
            queue,
            umem.as_ptr(),
            rx,
            tx,
            fill,
            comp,
            &cfg,
        )
    };
    if rc != 0 {
        return Err(SysError::errno("xsk_socket__create_shared", rc));
    }
    NonNull::new(xsk).ok_or(SysError::errno("xsk_socket__create_shared", libc::EFAULT))
}

/// `xsk_socket__delete`.
///
/// # Safety
/// `xsk` came from [`socket_create`] and is not used afterwards; the rings it was created with are
/// still at their addresses; no other call on its UMEM runs concurrently.
pub(crate) unsafe fn socket_delete(xsk: NonNull<xsk_socket>) {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::xsk_socket__delete(xsk.as_ptr()) }
}

/// `xsk_socket__fd`.
///
/// # Safety
/// `xsk` is a live socket.
pub(crate) unsafe fn socket_fd(xsk: NonNull<xsk_socket>) -> RawFd {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::xsk_socket__fd(xsk.as_ptr()) }
}

/// `setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET, budget)`.
pub(crate) fn set_tx_skb_budget(fd: RawFd, budget: u32) -> Result<(), SysError> {
    let v = budget as libc::c_int;
    // SAFETY: `v` is a valid int for the duration of the call; a bad fd only yields EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(SysError::last("setsockopt(XDP_MAX_TX_SKB_BUDGET)"));
    }
    Ok(())
}

/// `getsockopt(SOL_XDP, opt)` into `out`, a plain C struct of libxdp-sys's bindings (integers
/// only, so every byte pattern the kernel writes is a valid value); returns the length the kernel
/// wrote. `call` names the option in the error.
fn getsockopt_xdp<T: Copy>(
    fd: RawFd,
    opt: u32,
    call: &'static str,
    out: &mut T,
) -> Result<usize, SysError> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `out` and `len` are valid for writes of the sizes passed, and any bytes the kernel
    // writes into `out` form a valid `T` (see above).
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_XDP, opt as i32, (out as *mut T).cast(), &mut len)
    };
    if rc != 0 {
        return Err(SysError::last(call));
    }
    Ok(len as usize)
}

/// `getsockopt(SOL_XDP, XDP_OPTIONS)`: whether the bound socket runs in zero-copy mode.
pub(crate) fn is_zero_copy(fd: RawFd) -> Result<bool, SysError> {
    let mut opts = libxdp_sys::xdp_options { flags: 0 };
    getsockopt_xdp(fd, libxdp_sys::XDP_OPTIONS, "getsockopt(XDP_OPTIONS)", &mut opts)?;
    Ok(opts.flags & libxdp_sys::XDP_OPTIONS_ZEROCOPY != 0)
}

/// The kernel's per-socket AF_XDP counters (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    /// Frames dropped for reasons other than an invalid descriptor.
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when the kernel wanted a frame.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty on a kick.
    pub tx_ring_empty_descs: u64,
}

/// `getsockopt(SOL_XDP, XDP_STATISTICS)`.
pub(crate) fn statistics(fd: RawFd) -> Result<XdpStatistics, SysError> {
    let mut s = libxdp_sys::xdp_statistics {
        rx_dropped: 0,
        rx_invalid_descs: 0,
        tx_invalid_descs: 0,
        rx_ring_full: 0,
        rx_fill_ring_empty_descs: 0,
        tx_ring_empty_descs: 0,
    };
    getsockopt_xdp(fd, libxdp_sys::XDP_STATISTICS, "getsockopt(XDP_STATISTICS)", &mut s)?;
    Ok(XdpStatistics {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: s.tx_ring_empty_descs,
    })
}

/// Kicks the kernel to process the TX ring (`sendto(fd, NULL, 0, MSG_DONTWAIT)`). The transient
/// errors the kernel uses to say "busy, kick again later" are not errors here.
pub(crate) fn kick_tx(fd: RawFd) -> Result<(), SysError> {
    // SAFETY: a zero-length send with null buffer and address is valid for an AF_XDP socket.
    let rc = unsafe { libc::sendto(fd, ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN | libc::EINTR) => {}
            _ => return Err(SysError { call: "sendto(AF_XDP kick)", source: err }),
        }
    }
    Ok(())
}

/// Wakes the kernel's RX side when the fill ring asks for it
/// (`recvfrom(fd, NULL, 0, MSG_DONTWAIT)`).
pub(crate) fn kick_rx(fd: RawFd) -> Result<(), SysError> {
    // SAFETY: a zero-length receive with null buffer and address is valid for an AF_XDP socket.
    let rc = unsafe {
        libc::recvfrom(fd, ptr::null_mut(), 0, libc::MSG_DONTWAIT, ptr::null_mut(), ptr::null_mut())
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN | libc::EINTR) => {}
            _ => return Err(SysError { call: "recvfrom(AF_XDP wakeup)", source: err }),
        }
    }
    Ok(())
}

/// `poll()` on a set of fds for `events`, up to `timeout_ms` (-1: forever). Returns how many are
/// ready; `EINTR` counts as zero.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize, SysError> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(SysError { call: "poll", source: err });
    }
    Ok(rc as usize)
}

// ---------------------------------------------------------------------------------------------
// Adopting a bound socket: the rings of a socket and UMEM that an earlier process set up

/// `getsockopt(SOL_XDP, XDP_MMAP_OFFSETS)`: where producer, consumer, flags and descriptors lie
/// in each ring's mapping (kernels since 5.4 report the flags word; older ones are refused).
pub(crate) fn mmap_offsets(fd: RawFd) -> Result<libxdp_sys::xdp_mmap_offsets, SysError> {
    // SAFETY: an all-zero offsets struct is a valid out-buffer.
    let mut off: libxdp_sys::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let len =
        getsockopt_xdp(fd, libxdp_sys::XDP_MMAP_OFFSETS, "getsockopt(XDP_MMAP_OFFSETS)", &mut off)?;
    if len != std::mem::size_of::<libxdp_sys::xdp_mmap_offsets>() {
        return Err(SysError::errno("getsockopt(XDP_MMAP_OFFSETS): pre-5.4 layout", libc::ENOTSUP));
    }
    Ok(off)
}

/// Which ring of a socket to map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingKind {
    Rx,
    Tx,
    Fill,
    Completion,
}

impl RingKind {
    fn pgoff(self) -> u64 {
        match self {
            RingKind::Rx => u64::from(libxdp_sys::XDP_PGOFF_RX_RING),
            RingKind::Tx => u64::from(libxdp_sys::XDP_PGOFF_TX_RING),
            RingKind::Fill => libxdp_sys::XDP_UMEM_PGOFF_FILL_RING,
            RingKind::Completion => libxdp_sys::XDP_UMEM_PGOFF_COMPLETION_RING,
        }
    }

    fn offsets(self, off: &libxdp_sys::xdp_mmap_offsets) -> libxdp_sys::xdp_ring_offset {
        match self {
            RingKind::Rx => off.rx,
            RingKind::Tx => off.tx,
            RingKind::Fill => off.fr,
            RingKind::Completion => off.cr,
        }
    }

    fn entry_size(self) -> usize {
        match self {
            RingKind::Rx | RingKind::Tx => std::mem::size_of::<libxdp_sys::xdp_desc>(),
            RingKind::Fill | RingKind::Completion => std::mem::size_of::<u64>(),
        }
    }
}

/// One ring of an adopted socket: its mapping and the pointers into it.
#[derive(Debug)]
pub(crate) struct RingMap {
    _map: Mmap,
    producer: *mut u32,
    consumer: *mut u32,
    flags: *mut u32,
    ring: *mut c_void,
    size: u32,
    kind: RingKind,
}

// SAFETY: the pointers point into `map`, owned by this value; moving it moves nothing
// thread-bound.
unsafe impl Send for RingMap {}

impl RingMap {
    /// Maps ring `kind` of the bound socket `fd`, which has `size` entries (the size it was set
    /// up with: the kernel does not report it).
    pub(crate) fn map(
        fd: RawFd,
        off: &libxdp_sys::xdp_mmap_offsets,
        kind: RingKind,
        size: u32,
    ) -> Result<RingMap, SysError> {
        if !size.is_power_of_two() {
            return Err(SysError::errno(
                "adopt AF_XDP ring: size not a power of two",
                libc::EINVAL,
            ));
        }
        let o = kind.offsets(off);
        let len = o.desc as usize + size as usize * kind.entry_size();
        // The kernel refuses a mapping longer than the ring it holds (EINVAL): a wrong size in
        // the hand-over shows up here rather than as ring corruption.
        let map = Mmap::shared("mmap(AF_XDP ring)", fd, len, kind.pgoff())?;
        let base = map.as_ptr();
        // SAFETY: the offsets come from the kernel for this socket and lie inside the mapping.
        let at = |x: u64| unsafe { base.add(x as usize) };
        Ok(RingMap {
            producer: at(o.producer).cast(),
            consumer: at(o.consumer).cast(),
            flags: at(o.flags).cast(),
            ring: at(o.desc).cast(),
            size,
            kind,
            _map: map,
        })
    }

    fn load(p: *mut u32) -> u32 {
        // SAFETY: `p` points at an aligned u32 index word of a live ring mapping, which the
        // kernel updates concurrently: read it atomically.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(p) }
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// A producer-ring descriptor (fill, TX) over this mapping, positioned where the kernel's
    /// indices are: everything the earlier process submitted stays submitted.
    pub(crate) fn producer_ring(&self) -> xsk_ring_prod {
        xsk_ring_prod {
            cached_prod: Self::load(self.producer),
            // libxdp keeps the cached consumer one ring size ahead (see xsk_prod_nb_free).
            cached_cons: Self::load(self.consumer).wrapping_add(self.size),
            mask: self.size - 1,
            size: self.size,
            producer: self.producer,
            consumer: self.consumer,
            ring: self.ring,
            flags: self.flags,
        }
    }

    /// A consumer-ring descriptor (RX, completion) over this mapping: entries the kernel
    /// published and the earlier process had not consumed are still there to consume.
    pub(crate) fn consumer_ring(&self) -> xsk_ring_cons {
        xsk_ring_cons {
            cached_prod: Self::load(self.producer),
            cached_cons: Self::load(self.consumer),
            mask: self.size - 1,
            size: self.size,
            producer: self.producer,
            consumer: self.consumer,
            ring: self.ring,
            flags: self.flags,
        }
    }

    /// The frame addresses between the consumer and the producer index: frames the ring holds
    /// (fill: not yet taken by the kernel; RX: received, not yet consumed; TX: not yet sent;
    /// completion: sent, not yet reaped). Appends them to `out`.
    ///
    /// # Errors
    /// `EUCLEAN` when the indices are further apart than the ring is long (a ring this process
    /// must not trust).
    pub(crate) fn held_addrs(&self, out: &mut Vec<u64>) -> Result<(), SysError> {
        let (cons, prod) = (Self::load(self.consumer), Self::load(self.producer));
        let n = prod.wrapping_sub(cons);
        if n > self.size {
            return Err(SysError::errno("adopt AF_XDP ring: indices out of range", libc::EUCLEAN));
        }
        let mask = self.size - 1;
        for i in 0..n {
            let slot = (cons.wrapping_add(i) & mask) as usize;
            // SAFETY: `slot` < size, and the ring area holds `size` entries of the kind's size
            // (mapped above); entries between consumer and producer are published, so reading
            // them races with no writer.
            let addr = unsafe {
                match self.kind {
                    RingKind::Rx | RingKind::Tx => {
                        (*self.ring.cast::<libxdp_sys::xdp_desc>().add(slot)).addr
                    }
                    RingKind::Fill | RingKind::Completion => *self.ring.cast::<u64>().add(slot),
                }
            };
            out.push(addr);
        }
        Ok(())
    }
}

/// Whether `fd` is an AF_XDP socket (`SO_DOMAIN`).
pub(crate) fn is_xdp_socket(fd: RawFd) -> Result<bool, SysError> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `domain` and `len` are valid for writes of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(SysError::last("getsockopt(SO_DOMAIN)"));
    }
    Ok(domain == libc::AF_XDP)
}

// ---------------------------------------------------------------------------------------------
// libxdp: ring access (the fast path)

/// Reserves up to `n` slots on a producer ring; returns how many and the first index.
///
/// # Safety
/// `ring` was set up by libxdp for a live socket/UMEM and is used from one thread only.
#[inline]
pub(crate) unsafe fn prod_reserve(ring: *mut xsk_ring_prod, n: u32) -> (u32, u32) {
    let mut idx = 0;
    // SAFETY: per the contract above; `idx` is a valid out-pointer.
    let got = unsafe { libxdp_sys::xsk_ring_prod__reserve(ring, n, &mut idx) };
    (got, idx)
}

/// Publishes `n` reserved slots of a producer ring to the kernel.
///
/// # Safety
/// As [`prod_reserve`]; exactly `n` slots were reserved and written.
#[inline]
pub(crate) unsafe fn prod_submit(ring: *mut xsk_ring_prod, n: u32) {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::xsk_ring_prod__submit(ring, n) }
}

/// Whether the kernel asked to be woken for this producer ring.
///
/// # Safety
/// As [`prod_reserve`].
#[inline]
pub(crate) unsafe fn prod_needs_wakeup(ring: *const xsk_ring_prod) -> bool {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::xsk_ring_prod__needs_wakeup(ring) != 0 }
}

/// Free slots of a producer ring, refreshing the cached consumer position from the kernel's
/// when fewer than `n` are known free.
///
/// # Safety
/// As [`prod_reserve`].
#[inline]
pub(crate) unsafe fn prod_free(ring: *mut xsk_ring_prod, n: u32) -> u32 {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::xsk_prod_nb_free(ring, n) }
}

/// Entries the kernel has published on a consumer ring (RX or completion) and userspace has not
/// consumed yet, up to `n`; consumes nothing.
///
/// # Safety
/// `ring` was set up by libxdp for a live socket or UMEM, and no other thread uses it.
#[inline]
pub(crate) unsafe fn cons_avail(ring: *mut xsk_ring_cons, n: u32) -> u32 {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::xsk_cons_nb_avail(ring, n) }
}

/// Writes fill-ring slot `idx` (reserved by [`prod_reserve`]).
///
/// # Safety
/// As [`prod_reserve`]; `idx` lies in the reserved range of a fill ring.
#[inline]
pub(crate) unsafe fn fill_write(ring: *mut xsk_ring_prod, idx: u32, addr: u64) {
    // SAFETY: per the contract above the slot is reserved and in bounds (libxdp masks idx).
    unsafe { *libxdp_sys::xsk_ring_prod__fill_addr(ring, idx) = addr }
}

/// Writes TX-ring slot `idx` (reserved by [`prod_reserve`]).
///
/// # Safety
/// As [`prod_reserve`]; `idx` lies in the reserved range of a TX ring.
#[inline]
pub(crate) unsafe fn tx_write(ring: *mut xsk_ring_prod, idx: u32, addr: u64, len: u32) {
    // SAFETY: per the contract above the slot is reserved and in bounds (libxdp masks idx).
    let d = unsafe { &mut *libxdp_sys::xsk_ring_prod__tx_desc(ring, idx) };
    d.addr = addr;
    d.len = len;
    d.options = 0;
}

/// Peeks up to `n` entries of a consumer ring; returns how many and the first index.
///
/// # Safety
/// As [`prod_reserve`], for a consumer ring.
#[inline]
pub(crate) unsafe fn cons_peek(ring: *mut xsk_ring_cons, n: u32) -> (u32, u32) {
    let mut idx = 0;
    // SAFETY: per the contract above; `idx` is a valid out-pointer.
    let got = unsafe { libxdp_sys::xsk_ring_cons__peek(ring, n, &mut idx) };
    (got, idx)
}

/// Hands `n` peeked entries back to the kernel.
///
/// # Safety
/// As [`cons_peek`]; exactly `n` entries were peeked and read.
#[inline]
pub(crate) unsafe fn cons_release(ring: *mut xsk_ring_cons, n: u32) {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::xsk_ring_cons__release(ring, n) }
}

/// Reads RX-ring entry `idx` as (addr, len).
///
/// # Safety
/// As [`cons_peek`]; `idx` lies in the peeked range of an RX ring.
#[inline]
pub(crate) unsafe fn rx_read(ring: *const xsk_ring_cons, idx: u32) -> (u64, u32) {
    // SAFETY: per the contract above the entry is published by the kernel and in bounds.
    let d = unsafe { &*libxdp_sys::xsk_ring_cons__rx_desc(ring, idx) };
    (d.addr, d.len)
}

/// Reads completion-ring entry `idx`.
///
/// # Safety
/// As [`cons_peek`]; `idx` lies in the peeked range of a completion ring.
#[inline]
pub(crate) unsafe fn comp_read(ring: *const xsk_ring_cons, idx: u32) -> u64 {
    // SAFETY: per the contract above the entry is published by the kernel and in bounds.
    unsafe { *libxdp_sys::xsk_ring_cons__comp_addr(ring, idx) }
}

// ---------------------------------------------------------------------------------------------
// libbpf: programs, links, maps

/// `bpf_object__open_mem` on an embedded ELF object.
pub(crate) fn object_open(
    elf: &'static [u8],
    name: &CStr,
) -> Result<NonNull<bpf_object>, SysError> {
    // SAFETY: an all-zero opts struct is valid for libbpf (every field optional).
    let mut opts: libxdp_sys::bpf_object_open_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libxdp_sys::bpf_object_open_opts>();
    opts.object_name = name.as_ptr();
    // SAFETY: `elf` is 'static and `opts` outlives the call (libbpf copies what it keeps).
    let obj = unsafe { libxdp_sys::bpf_object__open_mem(elf.as_ptr().cast(), elf.len(), &opts) };
    if obj.is_null() {
        return Err(SysError::last("bpf_object__open_mem"));
    }
    // SAFETY: checked non-null just above.
    Ok(unsafe { NonNull::new_unchecked(obj) })
}

/// Keeps only program `keep` of `programs` for loading, sets the size of map `resize.0` to
/// `resize.1` entries, and loads the object into the kernel.
///
/// # Safety
/// `obj` is an opened, not yet loaded object that no other thread uses.
pub(crate) unsafe fn object_load(
    obj: NonNull<bpf_object>,
    programs: &[&CStr],
    keep: &CStr,
    resize: (&CStr, u32),
) -> Result<(), SysError> {
    for p in programs {
        // SAFETY: `obj` is a valid object and `p` a NUL-terminated name.
        let prog =
            unsafe { libxdp_sys::bpf_object__find_program_by_name(obj.as_ptr(), p.as_ptr()) };
        if prog.is_null() {
            return Err(SysError::errno("bpf_object__find_program_by_name", libc::ENOENT));
        }
        // SAFETY: `prog` belongs to the not yet loaded `obj`.
        let rc = unsafe { libxdp_sys::bpf_program__set_autoload(prog, *p == keep) };
        if rc != 0 {
            return Err(SysError::errno("bpf_program__set_autoload", rc));
        }
    }
    // SAFETY: `obj` is valid; `resize.0` is NUL-terminated.
    let map = unsafe { libxdp_sys::bpf_object__find_map_by_name(obj.as_ptr(), resize.0.as_ptr()) };
    if map.is_null() {
        return Err(SysError::errno("bpf_object__find_map_by_name", libc::ENOENT));
    }
    // SAFETY: `map` belongs to the not yet loaded `obj`.
    let rc = unsafe { libxdp_sys::bpf_map__set_max_entries(map, resize.1) };
    if rc != 0 {
        return Err(SysError::errno("bpf_map__set_max_entries", rc));
    }
    // SAFETY: `obj` is valid and opened.
    let rc = unsafe { libxdp_sys::bpf_object__load(obj.as_ptr()) };
    if rc != 0 {
        return Err(SysError::errno("bpf_object__load", rc));
    }
    Ok(())
}

/// The fd of map `name` of a loaded object.
///
/// # Safety
/// `obj` is a live, loaded object.
pub(crate) unsafe fn object_map_fd(
    obj: NonNull<bpf_object>,
    name: &CStr,
) -> Result<RawFd, SysError> {
    // SAFETY: `obj` is valid; `name` is NUL-terminated.
    let map = unsafe { libxdp_sys::bpf_object__find_map_by_name(obj.as_ptr(), name.as_ptr()) };
    if map.is_null() {
        return Err(SysError::errno("bpf_object__find_map_by_name", libc::ENOENT));
    }
    // SAFETY: `map` belongs to the loaded `obj`.
    let fd = unsafe { libxdp_sys::bpf_map__fd(map) };
    if fd < 0 {
        return Err(SysError::errno("bpf_map__fd", fd));
    }
    Ok(fd)
}

/// Attaches program `name` of a loaded object to `ifindex` with a bpf_link (`BPF_LINK_CREATE`,
/// native mode where the driver has it, generic otherwise).
///
/// # Safety
/// `obj` is a live, loaded object.
pub(crate) unsafe fn attach_xdp(
    obj: NonNull<bpf_object>,
    name: &CStr,
    ifindex: u32,
) -> Result<NonNull<bpf_link>, SysError> {
    // SAFETY: `obj` is valid; `name` is NUL-terminated.
    let prog = unsafe { libxdp_sys::bpf_object__find_program_by_name(obj.as_ptr(), name.as_ptr()) };
    if prog.is_null() {
        return Err(SysError::errno("bpf_object__find_program_by_name", libc::ENOENT));
    }
    // SAFETY: `prog` is a loaded program of `obj`.
    let link = unsafe { libxdp_sys::bpf_program__attach_xdp(prog, ifindex as i32) };
    if link.is_null() {
        return Err(SysError::last("bpf_program__attach_xdp"));
    }
    // SAFETY: checked non-null just above.
    Ok(unsafe { NonNull::new_unchecked(link) })
}

/// Takes the descriptor of a libbpf link and frees libbpf's own record of it without closing
/// the descriptor (`bpf_link__disconnect`, then `bpf_link__destroy`): the link then lives as
/// long as that descriptor or a duplicate of it (the service manager's store) is open.
///
/// # Safety
/// `link` came from [`attach_xdp`] and is not used again.
pub(crate) unsafe fn link_into_fd(link: NonNull<bpf_link>) -> Result<OwnedFd, SysError> {
    // SAFETY: `link` is live.
    let fd = unsafe { libxdp_sys::bpf_link__fd(link.as_ptr()) };
    // SAFETY: per the contract above; after disconnect, destroy frees the record but leaves
    // the descriptor open.
    unsafe {
        libxdp_sys::bpf_link__disconnect(link.as_ptr());
        libxdp_sys::bpf_link__destroy(link.as_ptr());
    }
    if fd < 0 {
        return Err(SysError::errno("bpf_link__fd", fd));
    }
    // SAFETY: libbpf no longer refers to `fd` (disconnected and destroyed), so this value is its
    // only owner.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// What the kernel says about a link: its id, its program's id, its type and, for an XDP link,
/// the device it is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    pub xdp_ifindex: Option<u32>,
}

/// `bpf_link_get_info_by_fd` on a link descriptor.
pub(crate) fn link_info(fd: RawFd) -> Result<LinkInfo, SysError> {
    // SAFETY: an all-zero bpf_link_info is a valid out-buffer.
    let mut info: libxdp_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libxdp_sys::bpf_link_info>() as u32;
    // SAFETY: `info` and `len` are valid for writes; a descriptor that is no link only errs.
    let rc = unsafe { libxdp_sys::bpf_link_get_info_by_fd(fd, &mut info, &mut len) };
    if rc != 0 {
        return Err(SysError::errno("bpf_link_get_info_by_fd", rc));
    }
    let xdp_ifindex = if info.type_ == libxdp_sys::bpf_link_type_BPF_LINK_TYPE_XDP {
        // SAFETY: for an XDP link the kernel filled the union's `xdp` member.
        Some(unsafe { info.__bindgen_anon_1.xdp.ifindex })
    } else {
        None
    };
    Ok(LinkInfo { id: info.id, prog_id: info.prog_id, xdp_ifindex })
}

/// Replaces the program of a link atomically (`BPF_LINK_UPDATE`): the device runs the old
/// program up to one frame and the new one from the next; no frame sees neither.
pub(crate) fn link_update(link_fd: RawFd, prog_fd: RawFd) -> Result<(), SysError> {
    let opts = libxdp_sys::bpf_link_update_opts {
        sz: std::mem::size_of::<libxdp_sys::bpf_link_update_opts>(),
        flags: 0,
        old_prog_fd: 0,
        old_map_fd: 0,
    };
    // SAFETY: `opts` is a valid options struct that outlives the call.
    let rc = unsafe { libxdp_sys::bpf_link_update(link_fd, prog_fd, &opts) };
    if rc != 0 {
        return Err(SysError::errno("bpf_link_update", rc));
    }
    Ok(())
}

/// Frees an object, its programs and maps (`bpf_object__close`).
///
/// # Safety
/// `obj` came from [`object_open`] and is not used again.
pub(crate) unsafe fn object_close(obj: NonNull<bpf_object>) {
    // SAFETY: per the contract above.
    unsafe { libxdp_sys::bpf_object__close(obj.as_ptr()) };
}

/// `bpf_map_update_elem(fd, key, value, BPF_ANY)` with a `u32` key.
pub(crate) fn map_update<V: Copy>(fd: RawFd, key: u32, value: &V) -> Result<(), SysError> {
    // SAFETY: key and value point to initialised memory of the sizes the map was created with
    // (the callers pair each map with its value type); a wrong fd only yields an error.
    let rc = unsafe {
        libxdp_sys::bpf_map_update_elem(
            fd,
            (&key as *const u32).cast(),
            (value as *const V).cast(),
            0,
        )
    };
    if rc != 0 {
        return Err(SysError::errno("bpf_map_update_elem", rc));
    }
    Ok(())
}

/// `bpf_map_delete_elem(fd, key)` with a `u32` key; a missing key is not an error.
pub(crate) fn map_delete(fd: RawFd, key: u32) -> Result<(), SysError> {
    // SAFETY: `key` points to a u32, the map's key size.
    let rc = unsafe { libxdp_sys::bpf_map_delete_elem(fd, (&key as *const u32).cast()) };
    if rc != 0 && rc != -libc::ENOENT {
        return Err(SysError::errno("bpf_map_delete_elem", rc));
    }
    Ok(())
}

/// The fd of program `name` of a loaded object.
///
/// # Safety
/// `obj` is a live, loaded object.
pub(crate) unsafe fn object_prog_fd(
    obj: NonNull<bpf_object>,
    name: &CStr,
) -> Result<RawFd, SysError> {
    // SAFETY: `obj` is valid; `name` is NUL-terminated.
    let prog = unsafe { libxdp_sys::bpf_object__find_program_by_name(obj.as_ptr(), name.as_ptr()) };
    if prog.is_null() {
        return Err(SysError::errno("bpf_object__find_program_by_name", libc::ENOENT));
    }
    // SAFETY: `prog` belongs to the loaded `obj`.
    let fd = unsafe { libxdp_sys::bpf_program__fd(prog) };
    if fd < 0 {
        return Err(SysError::errno("bpf_program__fd", fd));
    }
    Ok(fd)
}

/// Runs an XDP program once on `frame` (`BPF_PROG_TEST_RUN`); returns its action.
pub(crate) fn prog_test_run(prog_fd: RawFd, frame: &[u8]) -> Result<u32, SysError> {
    // SAFETY: an all-zero opts struct is valid (every field optional).
    let mut opts: libxdp_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libxdp_sys::bpf_test_run_opts>();
    opts.data_in = frame.as_ptr().cast();
    opts.data_size_in = frame.len() as u32;
    opts.repeat = 1;
    // SAFETY: `opts` points to `frame`, which outlives the call; no output buffers are given.
    let rc = unsafe { libxdp_sys::bpf_prog_test_run_opts(prog_fd, &mut opts) };
    if rc != 0 {
        return Err(SysError::errno("bpf_prog_test_run_opts", rc));
    }
    Ok(opts.retval)
}

/// Number of possible CPUs (the value count of a per-CPU map), from
/// `/sys/devices/system/cpu/possible` (e.g. `0-1` or `0,2-3`).
pub(crate) fn possible_cpus() -> Result<usize, SysError> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|e| SysError { call: "read(/sys/devices/system/cpu/possible)", source: e })?;
    let bad = || SysError::errno("parse(/sys/devices/system/cpu/possible)", libc::EINVAL);
    let mut max = 0usize;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next().ok_or_else(bad)?;
        max = max.max(last.parse::<usize>().map_err(|_| bad())?);
    }
    Ok(max + 1)
}

/// Sums the `u64` values of all CPUs for `key` of a per-CPU array map.
pub(crate) fn map_sum_percpu_u64(fd: RawFd, key: u32, cpus: usize) -> Result<u64, SysError> {
    let mut values = vec![0u64; cpus];
    // SAFETY: a per-CPU lookup writes one 8-byte-aligned u64 slot per possible CPU, and `values`
    // has exactly `cpus` (the possible-CPU count) of them.
    let rc = unsafe {
        libxdp_sys::bpf_map_lookup_elem(fd, (&key as *const u32).cast(), values.as_mut_ptr().cast())
    };
    if rc != 0 {
        return Err(SysError::errno("bpf_map_lookup_elem", rc));
    }
    Ok(values.iter().sum())
}

/// Pins the calling thread to CPU `cpu` (`sched_setaffinity`).
///
/// # Errors
/// The kernel's answer, e.g. `EINVAL` for a CPU that does not exist or is not allowed.
pub fn pin_current_thread(cpu: usize) -> Result<(), SysError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(SysError::errno("sched_setaffinity", libc::EINVAL));
    }
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(SysError::last("sched_setaffinity"));
    }
    Ok(())
}

const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;
const ETHTOOL_GGRO: u32 = 0x0000_002b;

/// `struct ethtool_value` (linux/ethtool.h): a command and one value.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// `struct ifreq` with the `ifr_data` member (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// `SIOCETHTOOL` on `dev` with `data`, a live ethtool command structure whose first field is the
/// command; `what` names it in errors.
fn ethtool<T>(dev: &str, data: &mut T, what: &'static str) -> Result<(), SysError> {
    let name = dev.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(SysError::errno("SIOCETHTOOL", libc::EINVAL));
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))
        .map_err(|e| SysError { call: "socket", source: e })?;
    let mut ifr =
        IfreqData { name: [0; libc::IFNAMSIZ], data: (data as *mut T).cast(), _pad: [0; 16] };
    for (d, s) in ifr.name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCETHTOOL reads `ifr` (a NUL-terminated name and a pointer to `data`) and reads
    // and writes `data`, a live ethtool structure of the command's size; both outlive the call.
    let rc =
        unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr as *mut IfreqData) };
    if rc < 0 {
        return Err(SysError::last(what));
    }
    Ok(())
}

/// The number of RX queues `dev` runs (`ethtool -l`: rx, or combined when the driver has no
/// separate RX channels).
///
/// # Errors
/// The ioctl's error (`EOPNOTSUPP` for a driver without channel reporting).
pub fn rx_queue_count(dev: &str) -> Result<u32, SysError> {
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..Default::default() };
    ethtool(dev, &mut ch, "ioctl(SIOCETHTOOL channels)")?;
    Ok(ch.rx_count.max(ch.combined_count))
}

/// Whether the kernel's GRO runs on `dev` (`ethtool -k`: generic-receive-offload). `UDP_GRO`
/// on a socket merges only what arrives through GRO.
///
/// # Errors
/// The ioctl's error.
pub fn gro_enabled(dev: &str) -> Result<bool, SysError> {
    let mut v = EthtoolValue { cmd: ETHTOOL_GGRO, data: 0 };
    ethtool(dev, &mut v, "ioctl(SIOCETHTOOL GGRO)")?;
    Ok(v.data != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `gro_enabled` reads what `ethtool -k` shows for loopback (GRO reads need no privilege).
    #[test]
    fn gro_state_matches_ethtool() {
        let out = std::process::Command::new("ethtool")
            .args(["-k", "lo"])
            .output()
            .expect("ethtool (scripts/deps.sh installs it) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("generic-receive-offload:"))
            .expect("ethtool -k lists generic-receive-offload");
        let expected = line.trim().starts_with("on");
        assert_eq!(gro_enabled("lo").expect("SIOCETHTOOL GGRO on lo"), expected);
        assert!(gro_enabled("no-such-dev0").is_err());
        assert!(gro_enabled("").is_err());
    }
}
