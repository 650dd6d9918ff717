//! The UMEM: one memory area of fixed-size frames shared by every AF_XDP socket of a worker set
//! (underlay NIC queues and `linen.1x` queues), so a frame received on one device is transmitted
//! on another by descriptor, without copying its payload.
//!
//! Frame ownership is tracked by value: a [`Frame`] token (not `Clone`) is the only way to reach a
//! frame's bytes, and it exists only while userspace owns the frame — between RX (or completion,
//! or a [`FramePool`]) and the moment it is handed back to the kernel (TX or fill ring). That is
//! what makes [`Umem::data_mut`] sound: two tokens never name the same frame, and the kernel
//! never touches a frame a token names.
//!
//! Frame layout (aligned mode, `frame_size` a power of two):
//!
//! ```text
//! | umem headroom (≥ 64) | XDP_PACKET_HEADROOM (256) | data ...                 |
//! ^ chunk start                                      ^ RX descriptor address
//! ```
//!
//! The encap path grows a frame at the front ([`Umem::adjust_head`] with a negative delta) to
//! prepend the 50-byte outer header in place; decap shrinks it from the front.
//!
//! The frame area is a memory file ([`Umem::memfd`]) mapped shared, not anonymous memory: a
//! process that takes over the UMEM's socket after a restart ([`Umem::adopt`]) maps the same
//! frames the kernel keeps registered, and finds every frame where the earlier process left it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::sys::{
    self, xsk_ring_cons, xsk_ring_prod, xsk_umem, Mmap, RingKind, RingMap, XDP_PACKET_HEADROOM,
};
use super::{BindMode, XskError};

/// Headroom linen reserves in each frame beyond the kernel's `XDP_PACKET_HEADROOM`, at least:
/// room for the 50-byte VXLAN outer header, rounded up.
pub const MIN_HEADROOM: u32 = 64;

/// Size of a UMEM and of its fill/completion rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of frames.
    pub frame_count: u32,
    /// Bytes per frame: 2048 or 4096 (a power of two, aligned mode).
    pub frame_size: u32,
    /// Bytes reserved at the front of each frame beyond the kernel's 256; at least
    /// [`MIN_HEADROOM`].
    pub headroom: u32,
    /// Entries of each fill ring (a power of two).
    pub fill_size: u32,
    /// Entries of each completion ring (a power of two).
    pub comp_size: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frame_count: 8192,
            frame_size: 2048,
            headroom: MIN_HEADROOM,
            fill_size: 2048,
            comp_size: 2048,
        }
    }
}

impl UmemConfig {
    fn validate(&self) -> Result<(), XskError> {
        if !matches!(self.frame_size, 2048 | 4096) {
            return Err(XskError::Config("UMEM frame_size must be 2048 or 4096"));
        }
        if self.headroom < MIN_HEADROOM {
            return Err(XskError::Config("UMEM headroom must be at least 64 bytes"));
        }
        if self.headroom + XDP_PACKET_HEADROOM + 128 > self.frame_size {
            return Err(XskError::Config("UMEM headroom leaves no room for data"));
        }
        if self.frame_count == 0 {
            return Err(XskError::Config("UMEM frame_count must be at least 1"));
        }
        if !self.fill_size.is_power_of_two() || !self.comp_size.is_power_of_two() {
            return Err(XskError::Config("fill and completion ring sizes must be powers of two"));
        }
        Ok(())
    }
}

/// A fill ring and a completion ring, kept at a stable heap address because libxdp holds
/// pointers to them.
#[derive(Debug)]
pub(crate) struct RingPair {
    pub(crate) fill: xsk_ring_prod,
    pub(crate) comp: xsk_ring_cons,
}

/// Who set the UMEM up: libxdp (this process registered it), or an earlier process whose socket
/// this one took over (then the rings are mapped here and the socket owns the descriptor).
#[derive(Debug)]
pub(crate) enum UmemHandle {
    Libxdp(std::ptr::NonNull<xsk_umem>),
    Adopted { _fill: RingMap, _comp: RingMap },
}

#[derive(Debug)]
pub(crate) struct UmemState {
    pub(crate) umem: UmemHandle,
    /// The rings created with the UMEM, for its first socket.
    pub(crate) first_rings: Option<Box<RingPair>>,
    /// Copy or zero-copy, fixed by the first bind; later sockets inherit it.
    pub(crate) mode: Option<BindMode>,
    /// (ifindex, queue) pairs with a socket.
    pub(crate) bound: Vec<(u32, u32)>,
}

#[derive(Debug)]
struct Inner {
    id: u32,
    config: UmemConfig,
    state: Mutex<UmemState>,
    carved: AtomicU32,
    // Dropped after `state`'s UMEM is deleted (see `Drop`).
    area: Mmap,
    memfd: OwnedFd,
}

// SAFETY: `UmemState` holds libxdp pointers used only under the mutex; the area is plain memory
// whose per-frame access is governed by `Frame` ownership.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let UmemHandle::Libxdp(umem) = state.umem else {
            // Adopted: the ring mappings go with the state; the socket closed the descriptor.
            return;
        };
        // SAFETY: every socket holds an `Arc<Inner>`, so all are deleted by now; the UMEM is not
        // used after this, and the rings it may still reference (`first_rings`) and the area
        // are dropped only after this body.
        if let Err(e) = unsafe { sys::umem_delete(umem) } {
            tracing::warn!(error = %e, "deleting the AF_XDP UMEM failed; its memory is leaked");
            std::mem::forget(state.first_rings.take());
        }
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A registered UMEM. Cheap to clone (shared handle); every socket bound to it holds one.
#[derive(Debug, Clone)]
pub struct Umem {
    inner: Arc<Inner>,
}

/// A frame of a [`Umem`] owned by userspace: the address of its first data byte and its length.
/// Hand it back to the kernel with [`super::XskSocket::stage`] (transmit) or return it to a
/// [`FramePool`] (drop); a frame that is simply dropped is lost until the UMEM is freed.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    addr: u64,
    len: u32,
    umem: u32,
}

impl Frame {
    /// Offset of the first data byte in the UMEM.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Data length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn raw(&self) -> (u64, u32, u32) {
        (self.addr, self.len, self.umem)
    }
}

/// Why a frame could not be resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough room in front of the data.
    #[error("not enough headroom in the frame")]
    NoHeadroom,
    /// Not enough room behind the data.
    #[error("not enough tailroom in the frame")]
    NoTailroom,
    /// Shrinking by more than the frame holds.
    #[error("frame shorter than the bytes removed")]
    TooShort,
}

impl Umem {
    /// A UMEM over `area` (backed by `memfd`), registered as `umem`, with the rings of its first
    /// socket in `first`: what [`Umem::new`] and the take-over of a handed-over UMEM share.
    fn assemble(
        config: UmemConfig,
        umem: UmemHandle,
        first: Box<RingPair>,
        area: Mmap,
        memfd: OwnedFd,
    ) -> Umem {
        Umem {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                config,
                state: Mutex::new(UmemState {
                    umem,
                    first_rings: Some(first),
                    mode: None,
                    bound: Vec::new(),
                }),
                carved: AtomicU32::new(0),
                area,
                memfd,
            }),
        }
    }

    /// Maps and registers a UMEM of `config.frame_count` frames. No socket exists yet; bind them
    /// with [`super::XskSocket::bind`].
    ///
    /// # Errors
    /// [`XskError::Config`] for a bad geometry, [`XskError::Sys`] when the memory cannot be
    /// mapped or the kernel refuses the registration (no privilege, RLIMIT_MEMLOCK).
    pub fn new(config: UmemConfig) -> Result<Umem, XskError> {
        config.validate()?;
        let len = config.frame_count as usize * config.frame_size as usize;
        let (memfd, area) = Mmap::memfd(len)?;
        let mut first = Box::new(RingPair { fill: sys::empty_prod(), comp: sys::empty_cons() });
        let geometry = sys::UmemGeometry {
            fill_size: config.fill_size,
            comp_size: config.comp_size,
            frame_size: config.frame_size,
            frame_headroom: config.headroom,
        };
        // SAFETY: `area` and the boxed rings live in `Inner`, which deletes the UMEM before
        // dropping either.
        let umem = unsafe { sys::umem_create(&area, geometry, &mut first.fill, &mut first.comp) }?;
        Ok(Umem::assemble(config, UmemHandle::Libxdp(umem), first, area, memfd))
    }

    /// Takes over a UMEM that an earlier process registered with [`Umem::new`]: `memfd` is its
    /// frame area ([`Umem::memfd`] of that process) and `socket` the AF_XDP socket it was
    /// registered on, still bound. `config` must be the geometry it was made with (the kernel
    /// does not report it; a ring size that does not match is refused by the kernel's mmap).
    /// The fill and completion rings are mapped where the kernel has them, with every entry the
    /// earlier process left; take the socket over next with [`super::XskSocket::adopt`]. No frame
    /// belongs to a pool yet: see [`Umem::pool_except`].
    ///
    /// # Errors
    /// [`XskError::Config`] for a bad geometry or a descriptor that is no AF_XDP socket;
    /// [`XskError::Sys`] when a mapping fails (a frame area of another size, wrong ring sizes).
    pub fn adopt(
        config: UmemConfig,
        memfd: OwnedFd,
        socket: BorrowedFd<'_>,
    ) -> Result<Umem, XskError> {
        config.validate()?;
        if !sys::is_xdp_socket(socket.as_raw_fd())? {
            return Err(XskError::Config("the handed-over UMEM socket is no AF_XDP socket"));
        }
        let len = config.frame_count as usize * config.frame_size as usize;
        let area = Mmap::adopt_memfd(memfd.as_fd(), len)?;
        let off = sys::mmap_offsets(socket.as_raw_fd())?;
        let fill = RingMap::map(socket.as_raw_fd(), &off, RingKind::Fill, config.fill_size)?;
        let comp = RingMap::map(socket.as_raw_fd(), &off, RingKind::Completion, config.comp_size)?;
        let first = Box::new(RingPair { fill: fill.producer_ring(), comp: comp.consumer_ring() });
        Ok(Umem::assemble(
            config,
            UmemHandle::Adopted { _fill: fill, _comp: comp },
            first,
            area,
            memfd,
        ))
    }

    /// The memory file holding the frames: what a later process needs, with the socket, to take
    /// the UMEM over ([`Umem::adopt`]).
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.inner.memfd.as_fd()
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &UmemConfig {
        &self.inner.config
    }

    /// Copy or zero-copy, once the first socket is bound.
    pub fn mode(&self) -> Option<BindMode> {
        self.lock().mode
    }

    /// Takes `count` frames that nobody owns yet into a new pool (for a worker's fill rings).
    ///
    /// # Errors
    /// [`XskError::Config`] when fewer than `count` frames are left.
    pub fn pool(&self, count: u32) -> Result<FramePool, XskError> {
        let total = self.inner.config.frame_count;
        let first = self
            .inner
            .carved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(count).filter(|&n| n <= total)
            })
            .map_err(|_| XskError::Config("not enough UMEM frames left for this pool"))?;
        let fs = u64::from(self.inner.config.frame_size);
        // Capacity for every frame of the UMEM, so frames migrating in from another pool never
        // make the fast path allocate.
        let mut free = Vec::with_capacity(total as usize);
        free.extend((first..first + count).map(|i| u64::from(i) * fs));
        Ok(FramePool {
            umem: self.inner.id,
            frame_mask: !(fs - 1),
            data_offset: u64::from(self.inner.config.headroom + XDP_PACKET_HEADROOM),
            free,
        })
    }

    /// Takes every frame of a UMEM that is on none of its rings — all frames but `held`, the
    /// addresses (any offset inside a frame) the fill, RX, TX and completion rings hold — into a
    /// new pool: after a take-over, that is exactly the frames the earlier process owned, in its
    /// pools or in flight through its code, when it stopped. Frames on the rings come back the
    /// usual way (RX, completion). Addresses outside the area are ignored.
    ///
    /// # Errors
    /// [`XskError::Config`] when frames were already taken into a pool.
    pub fn pool_except(&self, held: &[u64]) -> Result<FramePool, XskError> {
        let total = self.inner.config.frame_count;
        self.inner
            .carved
            .compare_exchange(0, total, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| XskError::Config("frames of this UMEM were already taken into a pool"))?;
        let fs = u64::from(self.inner.config.frame_size);
        let mut busy = vec![false; total as usize];
        for a in held {
            if let Some(b) = busy.get_mut((a / fs) as usize) {
                *b = true;
            }
        }
        let mut free = Vec::with_capacity(total as usize);
        free.extend((0..total).filter(|&i| !busy[i as usize]).map(|i| u64::from(i) * fs));
        Ok(FramePool {
            umem: self.inner.id,
            frame_mask: !(fs - 1),
            data_offset: u64::from(self.inner.config.headroom + XDP_PACKET_HEADROOM),
            free,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, UmemState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn id(&self) -> u32 {
        self.inner.id
    }

    fn layout(&self) -> Layout {
        Layout {
            frame_size: u64::from(self.inner.config.frame_size),
            area_len: self.inner.area.len() as u64,
        }
    }

    fn chunk(&self, addr: u64) -> u64 {
        self.layout().chunk(addr)
    }

    /// Builds a token for a frame the kernel handed back (RX), or `None` if the descriptor
    /// points outside the area or across a frame boundary (which a correct kernel never does).
    #[inline]
    pub(crate) fn frame_from_kernel(&self, addr: u64, len: u32) -> Option<Frame> {
        self.layout().frame(addr, len, self.inner.id)
    }

    #[inline]
    fn check(&self, frame: &Frame) {
        assert_eq!(frame.umem, self.inner.id, "frame of another UMEM");
    }

    /// The data bytes of a frame.
    ///
    /// # Panics
    /// If `frame` belongs to another UMEM (a programming error, never a packet's doing).
    #[inline]
    pub fn data<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        self.check(frame);
        // SAFETY: `frame` is a live token of this UMEM, so its range lies inside the area (checked
        // when the token was made and kept by every resize) and no one else — the kernel or
        // another token — accesses it while `frame` is borrowed.
        unsafe {
            std::slice::from_raw_parts(
                self.inner.area.as_ptr().add(frame.addr as usize),
                frame.len as usize,
            )
        }
    }

    /// Asks the CPU to start loading the first two cache lines of a frame's data — the headers
    /// the pipeline reads — without waiting for them. A hint only: it reads nothing a program
    /// can observe and never faults. A worker calls it for a whole batch before touching any
    /// frame, so that the cache misses on bytes the kernel wrote (often on another CPU) overlap
    /// instead of stalling the pipeline one packet at a time.
    #[inline]
    pub fn prefetch(&self, frame: &Frame) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.inner.area.as_ptr().wrapping_add(frame.addr as usize) as *const i8;
            // SAFETY: a prefetch is a hint that never faults and has no architectural effect, so
            // any address is sound; SSE is part of the x86_64 baseline.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
            }
        }
    }

    /// The data bytes of a frame, writable.
    ///
    /// # Panics
    /// If `frame` belongs to another UMEM.
    #[inline]
    pub fn data_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        self.check(frame);
        // SAFETY: as in `data`; the exclusive borrow of the unique token makes this the only
        // reference to these bytes.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.inner.area.as_ptr().add(frame.addr as usize),
                frame.len as usize,
            )
        }
    }

    /// The whole frame buffer (headroom, data, tailroom) and the offset of the data in it.
    ///
    /// # Panics
    /// If `frame` belongs to another UMEM.
    #[inline]
    pub fn buffer_mut<'a>(&'a self, frame: &'a mut Frame) -> (&'a mut [u8], usize) {
        self.check(frame);
        let chunk = self.chunk(frame.addr);
        // SAFETY: the frame's chunk lies inside the area (token invariant) and is owned by the
        // exclusively borrowed token, so no other reference to it exists.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                self.inner.area.as_ptr().add(chunk as usize),
                self.inner.config.frame_size as usize,
            )
        };
        (buf, (frame.addr - chunk) as usize)
    }

    /// Bytes in front of the data that [`Umem::adjust_head`] can grow into.
    pub fn headroom(&self, frame: &Frame) -> usize {
        self.layout().headroom(frame) as usize
    }

    /// Moves the start of the data by `delta` bytes: negative grows the frame at the front
    /// (prepend a header, then write it through [`Umem::data_mut`]), positive strips bytes.
    ///
    /// # Errors
    /// [`FrameError::NoHeadroom`] / [`FrameError::TooShort`]; the frame is left unchanged.
    #[inline]
    pub fn adjust_head(&self, frame: &mut Frame, delta: isize) -> Result<(), FrameError> {
        self.check(frame);
        self.layout().adjust_head(frame, delta)
    }

    /// Sets the data length (the bytes behind the data start).
    ///
    /// # Errors
    /// [`FrameError::NoTailroom`] when `len` runs past the end of the frame.
    #[inline]
    pub fn set_len(&self, frame: &mut Frame, len: usize) -> Result<(), FrameError> {
        self.check(frame);
        self.layout().set_len(frame, len)
    }
}

/// The frame arithmetic of a UMEM, apart from its memory so it can be tested without one.
///
/// Invariant kept for every [`Frame`] it makes or changes: `chunk(addr)` never changes and
/// `addr + len <= chunk(addr) + frame_size <= area_len`. That is what lets `Umem::data_mut` hand
/// out the bytes without further checks, and what keeps `FramePool::free` returning the frame's
/// own chunk.
#[derive(Debug, Clone, Copy)]
struct Layout {
    frame_size: u64,
    area_len: u64,
}

impl Layout {
    #[inline]
    fn chunk(&self, addr: u64) -> u64 {
        addr & !(self.frame_size - 1)
    }

    #[inline]
    fn frame(&self, addr: u64, len: u32, umem: u32) -> Option<Frame> {
        let end = addr.checked_add(u64::from(len))?;
        let chunk_end = self.chunk(addr) + self.frame_size;
        if end > chunk_end || chunk_end > self.area_len {
            return None;
        }
        Some(Frame { addr, len, umem })
    }

    #[inline]
    fn headroom(&self, frame: &Frame) -> u64 {
        frame.addr - self.chunk(frame.addr)
    }

    #[inline]
    fn adjust_head(&self, frame: &mut Frame, delta: isize) -> Result<(), FrameError> {
        if delta < 0 {
            let grow = delta.unsigned_abs() as u64;
            if grow > self.headroom(frame) {
                return Err(FrameError::NoHeadroom);
            }
            frame.addr -= grow;
            frame.len += grow as u32;
        } else if delta > 0 {
            let cut = delta as u64;
            // Stripping everything up to the very end of the frame would put the start on the
            // next frame's first byte, i.e. hand this token the neighbour frame.
            if cut > u64::from(frame.len) || self.chunk(frame.addr + cut) != self.chunk(frame.addr)
            {
                return Err(FrameError::TooShort);
            }
            frame.addr += cut;
            frame.len -= cut as u32;
        }
        Ok(())
    }

    #[inline]
    fn set_len(&self, frame: &mut Frame, len: usize) -> Result<(), FrameError> {
        let end = self.chunk(frame.addr) + self.frame_size;
        if (len as u64).checked_add(frame.addr).is_none_or(|e| e > end) {
            return Err(FrameError::NoTailroom);
        }
        frame.len = len as u32;
        Ok(())
    }
}

/// Free frames of one UMEM owned by one worker: the supply of its fill rings and the place
/// completed or dropped frames go back to. Never allocates after creation.
#[derive(Debug)]
pub struct FramePool {
    umem: u32,
    frame_mask: u64,
    data_offset: u64,
    free: Vec<u64>,
}

impl FramePool {
    /// Free frames held.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Takes a free frame with empty data placed after the standard headroom (to build a frame
    /// from scratch, e.g. an ICMP error).
    pub fn alloc(&mut self) -> Option<Frame> {
        let chunk = self.free.pop()?;
        Some(Frame { addr: chunk + self.data_offset, len: 0, umem: self.umem })
    }

    /// Returns a frame (dropped packet, completed transmission).
    ///
    /// # Panics
    /// If the frame belongs to another UMEM (a programming error).
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        assert_eq!(frame.umem, self.umem, "frame of another UMEM");
        self.put_addr(frame.addr);
    }

    /// Returns a frame by address, for completions; the capacity was reserved for every frame
    /// of the pool, so this never allocates unless frames migrated between pools.
    #[inline]
    pub(crate) fn put_addr(&mut self, addr: u64) {
        self.free.push(addr & self.frame_mask);
    }

    #[inline]
    pub(crate) fn take_chunk(&mut self) -> Option<u64> {
        self.free.pop()
    }

    pub(crate) fn umem_id(&self) -> u32 {
        self.umem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_validated() {
        assert!(UmemConfig::default().validate().is_ok());
        let bad = [
            UmemConfig { frame_size: 3000, ..UmemConfig::default() },
            UmemConfig { headroom: 32, ..UmemConfig::default() },
            UmemConfig { headroom: 1700, ..UmemConfig::default() },
            UmemConfig { frame_count: 0, ..UmemConfig::default() },
            UmemConfig { fill_size: 1000, ..UmemConfig::default() },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(XskError::Config(_))), "{c:?}");
        }
    }

    const FS: u64 = 2048;
    const LAYOUT: Layout = Layout { frame_size: FS, area_len: 4 * FS };
    const DATA: u64 = (MIN_HEADROOM + XDP_PACKET_HEADROOM) as u64;

    #[test]
    fn kernel_descriptors_outside_the_area_or_across_frames_are_refused() {
        assert!(LAYOUT.frame(FS + DATA, 1500, 1).is_some());
        assert!(LAYOUT.frame(FS + DATA, (FS - DATA) as u32, 1).is_some());
        assert!(LAYOUT.frame(FS + DATA, (FS - DATA) as u32 + 1, 1).is_none(), "crosses a frame");
        assert!(LAYOUT.frame(4 * FS + DATA, 60, 1).is_none(), "beyond the area");
        assert!(LAYOUT.frame(u64::MAX - 10, 60, 1).is_none(), "overflow");
    }

    #[test]
    fn encap_and_decap_move_the_start_within_the_frame() {
        let mut f = LAYOUT.frame(FS + DATA, 100, 1).unwrap();
        LAYOUT.adjust_head(&mut f, -50).unwrap();
        assert_eq!((f.addr, f.len), (FS + DATA - 50, 150));
        LAYOUT.adjust_head(&mut f, 50).unwrap();
        assert_eq!((f.addr, f.len), (FS + DATA, 100));
        assert_eq!(LAYOUT.adjust_head(&mut f, -(DATA as isize) - 1), Err(FrameError::NoHeadroom));
        assert_eq!(LAYOUT.adjust_head(&mut f, 101), Err(FrameError::TooShort));
        assert_eq!((f.addr, f.len), (FS + DATA, 100), "unchanged after errors");
        LAYOUT.adjust_head(&mut f, -(DATA as isize)).unwrap();
        assert_eq!(f.addr, FS, "may grow to the very start of the frame");
    }

    #[test]
    fn stripping_to_the_end_of_the_frame_never_reaches_the_next_one() {
        let mut f = LAYOUT.frame(FS + DATA, (FS - DATA) as u32, 1).unwrap();
        assert_eq!(LAYOUT.adjust_head(&mut f, (FS - DATA) as isize), Err(FrameError::TooShort));
        LAYOUT.adjust_head(&mut f, (FS - DATA) as isize - 1).unwrap();
        assert_eq!(LAYOUT.chunk(f.addr), FS);
        assert_eq!(LAYOUT.set_len(&mut f, 2), Err(FrameError::NoTailroom));
    }

    proptest::proptest! {
        #[test]
        fn no_sequence_of_resizes_leaves_the_frame(
            start in 0u64..4,
            ops in proptest::collection::vec((proptest::bool::ANY, -3000isize..3000), 0..40),
        ) {
            let chunk = start * FS;
            let mut f = LAYOUT.frame(chunk + DATA, 60, 1).unwrap();
            for (set_len, v) in ops {
                let _ = if set_len {
                    LAYOUT.set_len(&mut f, v.unsigned_abs())
                } else {
                    LAYOUT.adjust_head(&mut f, v)
                };
                proptest::prop_assert_eq!(LAYOUT.chunk(f.addr), chunk);
                proptest::prop_assert!(f.addr + u64::from(f.len) <= chunk + FS);
            }
        }
    }

    #[test]
    fn default_layout_leaves_room_for_the_outer_header_in_front() {
        let c = UmemConfig::default();
        // 50-byte VXLAN outer header prepended in place, with the kernel's headroom untouched
        // for its own XDP use.
        assert!(c.headroom >= 50);
        assert!(c.frame_size - c.headroom - XDP_PACKET_HEADROOM >= 1514);
    }
}
