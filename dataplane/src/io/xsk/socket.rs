//! One AF_XDP socket bound to one (device, queue), with its RX/TX rings and the fill/completion
//! rings of that (device, queue) — the batch API a worker loop drives.
//!
//! A socket is either bound here ([`XskSocket::bind`], through libxdp) or taken over from an
//! earlier process that bound it ([`XskSocket::adopt`]: its rings are mapped again where the
//! kernel keeps them, with every entry still on them). Both kinds run the same fast path.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::sys::{
    self, xsk_ring_cons, xsk_ring_prod, xsk_socket, RingKind, RingMap, XdpStatistics,
};
use super::umem::{Frame, FramePool, RingPair, Umem, UmemHandle};
use super::{BindMode, XskError};

/// Copy or zero-copy preference for the first socket of a UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModePreference {
    /// Try zero-copy, fall back to copy when the driver says `EOPNOTSUPP` (logged).
    #[default]
    Auto,
    /// Copy mode only.
    Copy,
    /// Zero-copy or fail.
    ZeroCopy,
}

/// Per-socket settings.
#[derive(Debug, Clone, Copy)]
pub struct SocketConfig {
    /// RX ring entries (power of two).
    pub rx_size: u32,
    /// TX ring entries (power of two).
    pub tx_size: u32,
    /// Copy/zero-copy choice for the first socket of the UMEM (later ones inherit its mode).
    pub mode: ModePreference,
    /// `XDP_MAX_TX_SKB_BUDGET`: descriptors one kick transmits in copy mode (kernel default 32).
    /// `None` leaves the kernel's default.
    pub tx_skb_budget: Option<u32>,
    /// How long to retry a bind that returns `EBUSY` (the queue's previous socket still closing).
    pub busy_retry: Duration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            rx_size: 2048,
            tx_size: 2048,
            mode: ModePreference::Auto,
            tx_skb_budget: Some(256),
            busy_retry: Duration::from_secs(2),
        }
    }
}

/// An AF_XDP socket bound to one device queue, sharing a [`Umem`].
///
/// Not `Sync`: one worker thread drives it. Dropping it deletes the socket (take it out of the
/// XSKMAP first with [`super::XdpAttachment::unregister`], or drop the attachment first).
#[derive(Debug)]
pub struct XskSocket {
    handle: SocketHandle,
    fd: RawFd,
    ifindex: u32,
    queue: u32,
    mode: BindMode,
    staged: u32,
    in_flight: u32,
    invalid_rx: u64,
    tx_skb_budget: Option<u32>,
    // Boxed: libxdp keeps pointers to these. Dropped after `xsk` is deleted (see `Drop`).
    rx: Box<xsk_ring_cons>,
    tx: Box<xsk_ring_prod>,
    rings: Box<RingPair>,
    umem: Umem,
}

/// Who set the socket up: libxdp in this process, or an earlier process (then this one owns the
/// descriptor and the RX/TX ring mappings).
#[derive(Debug)]
enum SocketHandle {
    Libxdp(NonNull<xsk_socket>),
    Adopted { _fd: OwnedFd, rx: RingMap, tx: RingMap },
}

// SAFETY: the socket's rings and libxdp handle are used only through `&mut self` (or, for reads
// of the fd, `&self`), and none of it is tied to the creating thread.
unsafe impl Send for XskSocket {}

impl XskSocket {
    /// Creates an AF_XDP socket on `umem` and binds it to `ifname`/`queue` (in the calling
    /// thread's network namespace). Never loads an XDP program: attach one with
    /// [`super::XdpAttachment`] and [`register`](super::XdpAttachment::register) the socket.
    ///
    /// The first socket of a UMEM picks the mode (zero-copy if the driver has it and
    /// `config.mode` allows, else copy; logged); later sockets inherit it and bind with
    /// `XDP_SHARED_UMEM` only. A bind that returns `EBUSY` is retried for `config.busy_retry`.
    ///
    /// # Errors
    /// [`XskError::NoDevice`], [`XskError::Config`] (queue already bound on this UMEM, bad ring
    /// size, every earlier socket of this UMEM already closed), [`XskError::Bind`] with the
    /// kernel's reason.
    pub fn bind(
        umem: &Umem,
        ifname: &str,
        queue: u32,
        config: &SocketConfig,
    ) -> Result<XskSocket, XskError> {
        if !config.rx_size.is_power_of_two() || !config.tx_size.is_power_of_two() {
            return Err(XskError::Config("RX and TX ring sizes must be powers of two"));
        }
        let ifindex = sys::if_nametoindex(ifname)
            .map_err(|e| XskError::NoDevice { name: ifname.to_string(), source: e })?;
        let cname = CString::new(ifname)
            .map_err(|_| XskError::Config("device name contains a NUL byte"))?;

        let mut state = umem.lock();
        let UmemHandle::Libxdp(umem_handle) = state.umem else {
            return Err(XskError::Config(
                "a UMEM taken over from an earlier process takes no new sockets",
            ));
        };
        if state.bound.contains(&(ifindex, queue)) {
            return Err(XskError::Config("this device queue already has a socket on this UMEM"));
        }
        if state.mode.is_some() && state.bound.is_empty() {
            // libxdp would reuse the UMEM's own fd, which is still bound to the first device.
            return Err(XskError::Config(
                "all sockets of this UMEM were closed; bind new sockets on a new UMEM",
            ));
        }
        let first = state.mode.is_none();
        let mut rings = match state.first_rings.take() {
            Some(r) => r,
            None => Box::new(RingPair { fill: sys::empty_prod(), comp: sys::empty_cons() }),
        };
        let mut rx = Box::new(sys::empty_cons());
        let mut tx = Box::new(sys::empty_prod());

        let mut flags = match config.mode {
            ModePreference::Auto | ModePreference::ZeroCopy => sys::XDP_ZEROCOPY,
            ModePreference::Copy => sys::XDP_COPY,
        } | sys::XDP_USE_NEED_WAKEUP;
        let started = Instant::now();
        let result = loop {
            // SAFETY: the UMEM is live (we hold a handle and its lock, which serialises libxdp
            // calls on it); the boxed rings move into the socket, which deletes the libxdp
            // socket before dropping them.
            let r = unsafe {
                sys::socket_create(
                    &cname,
                    queue,
                    umem_handle,
                    &mut *rx,
                    &mut *tx,
                    &mut rings.fill,
                    &mut rings.comp,
                    (config.rx_size, config.tx_size),
                    flags,
                )
            };
            match r {
                Ok(x) => break Ok(x),
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && started.elapsed() < config.busy_retry =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e)
                    if first
                        && e.raw_os_error() == Some(libc::EOPNOTSUPP)
                        && config.mode == ModePreference::Auto
                        && flags & sys::XDP_ZEROCOPY != 0 =>
                {
                    tracing::info!(
                        device = ifname,
                        queue,
                        "AF_XDP zero-copy not supported by the driver; using copy mode"
                    );
                    flags = sys::XDP_COPY | sys::XDP_USE_NEED_WAKEUP;
                }
                Err(e) => break Err(e),
            }
        };
        let xsk = match result {
            Ok(x) => x,
            Err(e) => {
                if first {
                    state.first_rings = Some(rings);
                }
                return Err(XskError::Bind { device: ifname.to_string(), queue, source: e });
            }
        };
        // SAFETY: `xsk` was just created and is live.
        let fd = unsafe { sys::socket_fd(xsk) };
        let mode = bind_mode(fd);
        if first {
            state.mode = Some(mode);
            tracing::info!(device = ifname, queue, ?mode, "first AF_XDP socket of the UMEM bound");
        } else {
            tracing::info!(device = ifname, queue, ?mode, "AF_XDP socket bound on the shared UMEM");
        }
        state.bound.push((ifindex, queue));
        drop(state);

        let tx_skb_budget = match config.tx_skb_budget {
            Some(budget) => match sys::set_tx_skb_budget(fd, budget) {
                Ok(()) => Some(budget),
                Err(e) => {
                    tracing::warn!(
                        device = ifname,
                        error = %e,
                        "kernel does not take XDP_MAX_TX_SKB_BUDGET; copy-mode TX runs its \
                         default of 32 frames per kick"
                    );
                    None
                }
            },
            None => None,
        };
        Ok(XskSocket {
            handle: SocketHandle::Libxdp(xsk),
            fd,
            ifindex,
            queue,
            mode,
            staged: 0,
            in_flight: 0,
            invalid_rx: 0,
            tx_skb_budget,
            rx,
            tx,
            rings,
            umem: umem.clone(),
        })
    }

    /// Takes over the socket `fd` that an earlier process bound to `ifname`/`queue` on the UMEM
    /// now taken over as `umem` ([`Umem::adopt`]; the socket is the one the UMEM was registered
    /// on). `config` must give the RX and TX ring sizes it was bound with. The RX ring keeps the
    /// frames that arrived while no process read it, the TX ring what was submitted and not yet
    /// sent; the next [`XskSocket::flush`] kicks it. The socket stays in whatever XSKMAP it is
    /// in; register it in the current program's map as after a bind.
    ///
    /// # Errors
    /// [`XskError::NoDevice`]; [`XskError::Config`] when `umem` was not taken over or already has
    /// its socket; [`XskError::Sys`] when a ring cannot be mapped (wrong size).
    pub fn adopt(
        umem: &Umem,
        fd: OwnedFd,
        ifname: &str,
        queue: u32,
        config: &SocketConfig,
    ) -> Result<XskSocket, XskError> {
        let ifindex = sys::if_nametoindex(ifname)
            .map_err(|e| XskError::NoDevice { name: ifname.to_string(), source: e })?;
        let mut state = umem.lock();
        if !matches!(state.umem, UmemHandle::Adopted { .. }) {
            return Err(XskError::Config("XskSocket::adopt needs a UMEM from Umem::adopt"));
        }
        let Some(rings) = state.first_rings.take() else {
            return Err(XskError::Config("the taken-over UMEM already has its socket"));
        };
        let raw = fd.as_raw_fd();
        let mapped = sys::mmap_offsets(raw).and_then(|off| {
            Ok((
                RingMap::map(raw, &off, RingKind::Rx, config.rx_size)?,
                RingMap::map(raw, &off, RingKind::Tx, config.tx_size)?,
            ))
        });
        let (rx_map, tx_map) = match mapped {
            Ok(m) => m,
            Err(e) => {
                state.first_rings = Some(rings);
                return Err(e.into());
            }
        };
        let mode = bind_mode(raw);
        state.mode = Some(mode);
        state.bound.push((ifindex, queue));
        drop(state);
        let rx = Box::new(rx_map.consumer_ring());
        let tx = Box::new(tx_map.producer_ring());
        // Descriptors on the TX ring are in flight as far as this process knows.
        let mut pending = Vec::new();
        let in_flight = tx_map.held_addrs(&mut pending).map_or(0, |()| pending.len() as u32);
        let tx_skb_budget =
            config.tx_skb_budget.filter(|&b| sys::set_tx_skb_budget(raw, b).is_ok());
        tracing::info!(device = ifname, queue, ?mode, "AF_XDP socket taken over");
        Ok(XskSocket {
            handle: SocketHandle::Adopted { _fd: fd, rx: rx_map, tx: tx_map },
            fd: raw,
            ifindex,
            queue,
            mode,
            staged: 0,
            in_flight,
            invalid_rx: 0,
            tx_skb_budget,
            rx,
            tx,
            rings,
            umem: umem.clone(),
        })
    }

    /// The addresses of the frames the rings of a taken-over socket and its UMEM hold (fill, RX,
    /// TX, completion; see [`Umem::pool_except`]).
    ///
    /// # Errors
    /// [`XskError::Config`] for a socket bound in this process; [`XskError::Sys`] for a ring
    /// whose indices are out of range.
    pub(crate) fn held_frames(&self) -> Result<Vec<u64>, XskError> {
        let SocketHandle::Adopted { rx, tx, .. } = &self.handle else {
            return Err(XskError::Config("only a taken-over socket reports held frames"));
        };
        let state = self.umem.lock();
        let UmemHandle::Adopted { _fill: fill, _comp: comp } = &state.umem else {
            return Err(XskError::Config("only a taken-over UMEM reports held frames"));
        };
        let mut out = Vec::new();
        fill.held_addrs(&mut out)?;
        rx.held_addrs(&mut out)?;
        tx.held_addrs(&mut out)?;
        comp.held_addrs(&mut out)?;
        Ok(out)
    }

    /// Moves up to `max` received frames into `out` (appending); returns how many. Never
    /// blocks. Keep `out`'s capacity ≥ its length + `max` and this never allocates.
    #[inline]
    pub fn recv(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        // SAFETY: `rx` was set up by libxdp for this live socket; `&mut self` makes this the only
        // user.
        let (n, idx) = unsafe { sys::cons_peek(&mut *self.rx, max as u32) };
        for i in 0..n {
            // SAFETY: `idx + i` is within the peeked range.
            let (addr, len) = unsafe { sys::rx_read(&*self.rx, idx.wrapping_add(i)) };
            match self.umem.frame_from_kernel(addr, len) {
                Some(f) => out.push(f),
                None => self.invalid_rx += 1,
            }
        }
        if n > 0 {
            // SAFETY: exactly `n` entries were peeked and have been read.
            unsafe { sys::cons_release(&mut *self.rx, n) };
        }
        n as usize
    }

    /// Puts a frame on the TX ring without telling the kernel yet; [`XskSocket::flush`] publishes
    /// everything staged in one go. Gives the frame back when the ring is full.
    ///
    /// # Panics
    /// If the frame belongs to another UMEM (a programming error).
    #[inline]
    pub fn stage(&mut self, frame: Frame) -> Result<(), Frame> {
        let (addr, len, umem) = frame.raw();
        assert_eq!(umem, self.umem.id(), "frame of another UMEM");
        // SAFETY: `tx` belongs to this live socket; `&mut self` makes this the only user.
        let (got, idx) = unsafe { sys::prod_reserve(&mut *self.tx, 1) };
        if got == 0 {
            return Err(frame);
        }
        // SAFETY: slot `idx` was just reserved. The frame token is consumed: the kernel owns the
        // frame until it shows up on the completion ring.
        unsafe { sys::tx_write(&mut *self.tx, idx, addr, len) };
        self.staged += 1;
        Ok(())
    }

    /// Stages as many frames of `frames` as the TX ring takes, from the front, removing them;
    /// returns how many. Frames that did not fit stay in `frames`, in order.
    ///
    /// # Panics
    /// If a frame belongs to another UMEM (a programming error).
    #[inline]
    pub fn stage_all(&mut self, frames: &mut Vec<Frame>) -> usize {
        let id = self.umem.id();
        assert!(frames.iter().all(|f| f.raw().2 == id), "frame of another UMEM");
        // SAFETY: `tx` belongs to this live socket; `&mut self` makes this the only user.
        let (got, idx) = unsafe { sys::prod_reserve(&mut *self.tx, frames.len() as u32) };
        for (i, f) in frames.drain(..got as usize).enumerate() {
            let (addr, len, _) = f.raw();
            // SAFETY: slot `idx + i` lies in the reserved range; the token is consumed, the
            // kernel owns the frame until it completes.
            unsafe { sys::tx_write(&mut *self.tx, idx.wrapping_add(i as u32), addr, len) };
        }
        self.staged += got;
        got as usize
    }

    /// Publishes staged frames to the kernel and, when the kernel asks for it (need_wakeup;
    /// always in copy mode) and descriptors are still waiting on the TX ring, kicks it with one
    /// `sendto`. Call once per batch; calling it with nothing staged retries a kick only if the
    /// previous one left descriptors behind (copy mode sends at most the skb budget per kick).
    ///
    /// # Errors
    /// [`XskError::Sys`] for kick errors other than the transient ones (`EAGAIN`, `EBUSY`,
    /// `ENOBUFS`, `ENETDOWN`).
    #[inline]
    pub fn flush(&mut self) -> Result<(), XskError> {
        if self.staged > 0 {
            // SAFETY: exactly `staged` slots were reserved and written by `stage`.
            unsafe { sys::prod_submit(&mut *self.tx, self.staged) };
            self.in_flight += self.staged;
            self.staged = 0;
        }
        // Kick only while descriptors wait on the TX ring: in copy mode a kick transmits up to
        // the skb budget and leaves the rest for the next one.
        // SAFETY: `tx` belongs to this live socket; `&mut self` makes this the only user.
        if unsafe { sys::prod_needs_wakeup(&*self.tx) } {
            let size = self.tx.size;
            // SAFETY: as above.
            if unsafe { sys::prod_free(&mut *self.tx, size) } < size {
                sys::kick_tx(self.fd)?;
            }
        }
        Ok(())
    }

    /// Moves up to `max` completed TX frames back into `pool`; returns how many.
    ///
    /// # Panics
    /// If `pool` belongs to another UMEM.
    #[inline]
    pub fn complete(&mut self, pool: &mut FramePool, max: usize) -> usize {
        assert_eq!(pool.umem_id(), self.umem.id(), "pool of another UMEM");
        // SAFETY: the completion ring belongs to this socket's (device, queue) and `&mut self`
        // makes this the only user.
        let (n, idx) = unsafe { sys::cons_peek(&mut self.rings.comp, max as u32) };
        for i in 0..n {
            // SAFETY: `idx + i` is within the peeked range.
            let addr = unsafe { sys::comp_read(&self.rings.comp, idx.wrapping_add(i)) };
            pool.put_addr(addr);
        }
        if n > 0 {
            // SAFETY: exactly `n` entries were peeked and read.
            unsafe { sys::cons_release(&mut self.rings.comp, n) };
            self.in_flight = self.in_flight.saturating_sub(n);
        }
        n as usize
    }

    /// Gives up to `max` free frames of `pool` to the kernel for reception on this queue;
    /// returns how many.
    ///
    /// # Panics
    /// If `pool` belongs to another UMEM.
    #[inline]
    pub fn fill(&mut self, pool: &mut FramePool, max: usize) -> usize {
        assert_eq!(pool.umem_id(), self.umem.id(), "pool of another UMEM");
        let want = max.min(pool.len()) as u32;
        if want == 0 {
            return 0;
        }
        // SAFETY: the fill ring belongs to this socket's (device, queue); `&mut self` makes this
        // the only user.
        let (got, idx) = unsafe { sys::prod_reserve(&mut self.rings.fill, want) };
        for i in 0..got {
            let Some(chunk) = pool.take_chunk() else {
                // `got <= want <= pool.len()`, so the pool cannot run dry here.
                break;
            };
            // SAFETY: slot `idx + i` was reserved above; the frame leaves the pool, so the
            // kernel is its only owner.
            unsafe { sys::fill_write(&mut self.rings.fill, idx.wrapping_add(i), chunk) };
        }
        if got > 0 {
            // SAFETY: `got` slots were reserved and written.
            unsafe { sys::prod_submit(&mut self.rings.fill, got) };
        }
        got as usize
    }

    /// Whether the kernel wants a wakeup ([`XskSocket::wake_rx`] or a `poll()`) before it
    /// fills the RX ring again (need_wakeup on the fill ring).
    #[inline]
    pub fn rx_needs_wakeup(&self) -> bool {
        // SAFETY: the fill ring belongs to this live socket; reading its flags word is a plain
        // shared read of kernel-written memory.
        unsafe { sys::prod_needs_wakeup(&self.rings.fill) }
    }

    /// Wakes the kernel's RX processing (`recvfrom` with `MSG_DONTWAIT`).
    ///
    /// # Errors
    /// [`XskError::Sys`] for errors other than the transient ones.
    pub fn wake_rx(&self) -> Result<(), XskError> {
        Ok(sys::kick_rx(self.fd)?)
    }

    /// Whether received frames wait on the RX ring (consumes nothing). A worker asks this right
    /// before it blocks, so that a frame that arrived after its last [`XskSocket::recv`] is not
    /// left waiting.
    #[inline]
    pub fn rx_pending(&mut self) -> bool {
        // SAFETY: `rx` was set up by libxdp for this live socket; `&mut self` makes this the only
        // user.
        unsafe { sys::cons_avail(&mut *self.rx, 1) > 0 }
    }

    /// Whether TX descriptors wait on the TX ring for a kick (copy mode transmits at most the skb
    /// budget per kick; [`XskSocket::flush`] kicks again).
    #[inline]
    pub fn tx_pending(&mut self) -> bool {
        let size = self.tx.size;
        // SAFETY: `tx` belongs to this live socket; `&mut self` makes this the only user.
        self.staged > 0 || unsafe { sys::prod_free(&mut *self.tx, size) } < size
    }

    /// Frames handed to the kernel for transmission and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// RX descriptors that pointed outside the UMEM and were skipped (always 0 with a correct
    /// kernel).
    pub fn invalid_rx(&self) -> u64 {
        self.invalid_rx
    }

    /// The `XDP_MAX_TX_SKB_BUDGET` the kernel accepted, or `None` (not asked for, or an older
    /// kernel that does not know the option).
    pub fn tx_skb_budget(&self) -> Option<u32> {
        self.tx_skb_budget
    }

    /// Copy or zero-copy.
    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Interface index of the bound device.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Queue id of the bound device.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The UMEM it shares.
    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    /// The kernel's counters for this socket.
    ///
    /// # Errors
    /// [`XskError::Sys`] if the kernel cannot report them.
    pub fn statistics(&self) -> Result<XdpStatistics, XskError> {
        Ok(sys::statistics(self.fd)?)
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd stays open for as long as `self` (it is closed by libxdp in `Drop`).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        let mut state = self.umem.lock();
        if let SocketHandle::Libxdp(xsk) = self.handle {
            // SAFETY: `xsk` is live and not used after this; its rings are fields of `self`,
            // dropped only after this body; the UMEM lock serialises libxdp calls on the UMEM.
            unsafe { sys::socket_delete(xsk) };
        }
        // An adopted socket's mappings and descriptor go with `handle`, after this body.
        state.bound.retain(|&b| b != (self.ifindex, self.queue));
    }
}

/// Blocks until one of `sockets` has received frames (or `timeout` passes; `None` waits
/// forever). Returns how many are readable. For a worker that has gone idle; mio users can
/// register the sockets' fds instead.
///
/// # Errors
/// [`XskError::Sys`] if `poll()` fails.
pub fn wait_readable(sockets: &[&XskSocket], timeout: Option<Duration>) -> Result<usize, XskError> {
    let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 16];
    if sockets.len() > fds.len() {
        return Err(XskError::Config("wait_readable takes at most 16 sockets"));
    }
    for (p, s) in fds.iter_mut().zip(sockets) {
        *p = libc::pollfd { fd: s.fd, events: libc::POLLIN, revents: 0 };
    }
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    Ok(sys::poll(&mut fds[..sockets.len()], ms)?)
}

/// The mode the kernel bound the AF_XDP socket `fd` in; copy when it cannot be read (logged).
fn bind_mode(fd: RawFd) -> BindMode {
    match sys::is_zero_copy(fd) {
        Ok(true) => BindMode::ZeroCopy,
        Ok(false) => BindMode::Copy,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the AF_XDP socket's mode; assuming copy");
            BindMode::Copy
        }
    }
}
