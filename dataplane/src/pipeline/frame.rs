//! [`Frame`]: a packet buffer with headroom, as AF_XDP UMEM chunks and TAP reads provide them.

/// A frame inside a larger buffer: `buf[start..start + len]` is the packet, `buf[..start]` is headroom.
///
/// Encapsulation grows the frame into the headroom (the start moves back by the outer header
/// length), decapsulation shrinks it from the front (the start moves forward), and an ICMP error
/// written in reply may do either. After the pipeline returns, [`Frame::start`] and [`Frame::len`]
/// say where the bytes to transmit are; the I/O layer turns them back into a descriptor
/// (UMEM chunk address + start, length).
///
/// The invariant `start + len <= buf.len()` holds for every `Frame` ([`Frame::new`] checks it), so
/// the pipeline never has to trust a length it did not check.
///
/// ```
/// use linen_dataplane::pipeline::Frame;
///
/// // A UMEM chunk or a Vec alike: 256 bytes of headroom, then a 60-byte packet.
/// let mut chunk = vec![0u8; 2048];
/// let frame = Frame::new(&mut chunk, 256, 60).expect("fits in the chunk");
/// assert_eq!(frame.headroom(), 256);
/// assert_eq!(frame.data().len(), 60);
/// ```
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    start: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes starting `start` bytes into `buf`, or `None` if it does not fit.
    #[inline]
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Option<Self> {
        match start.checked_add(len) {
            Some(end) if end <= buf.len() => Some(Frame { buf, start, len }),
            _ => None,
        }
    }

    /// A frame whose packet is everything in `buf` after `headroom` bytes, or `None` if `headroom`
    /// exceeds the buffer.
    #[inline]
    pub fn with_headroom(buf: &'a mut [u8], headroom: usize) -> Option<Self> {
        let len = buf.len().checked_sub(headroom)?;
        Some(Frame { buf, start: headroom, len })
    }

    /// Offset of the first packet byte in the buffer (the headroom in front of the packet).
    #[inline]
    pub fn start(&self) -> usize {
        self.start
    }

    /// Length of the packet in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the packet is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Bytes free behind the packet.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.start - self.len
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The packet bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The whole underlying buffer, headroom included.
    #[inline]
    pub fn buffer(&self) -> &[u8] {
        self.buf
    }

    /// Moves the packet to `buf[start..start + len]`. Returns `false` (and changes nothing) if that
    /// does not fit in the buffer. The bytes are not touched.
    #[inline]
    pub fn set_bounds(&mut self, start: usize, len: usize) -> bool {
        match start.checked_add(len) {
            Some(end) if end <= self.buf.len() => {
                self.start = start;
                self.len = len;
                true
            }
            _ => false,
        }
    }

    /// The buffer, start and length, for code that holds the raw parts (the I/O layer).
    #[inline]
    pub fn into_parts(self) -> (&'a mut [u8], usize, usize) {
        (self.buf, self.start, self.len)
    }

    /// A frame from parts already known to satisfy the invariant (taken from another `Frame`).
    #[inline(always)]
    pub(crate) fn from_valid_parts(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        debug_assert!(start + len <= buf.len());
        Frame { buf, start, len }
    }

    /// Sets bounds already known to fit the buffer (computed from a successful range check).
    #[inline(always)]
    pub(crate) fn set_valid_bounds(&mut self, start: usize, len: usize) {
        debug_assert!(start + len <= self.buf.len());
        self.start = start;
        self.len = len;
    }

    /// The whole buffer, writable, with the current start and length (pipeline internals).
    #[inline]
    pub(crate) fn raw_mut(&mut self) -> (&mut [u8], usize, usize) {
        (self.buf, self.start, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::Frame;

    #[test]
    fn bounds_are_checked() {
        let mut buf = [0u8; 100];
        assert!(Frame::new(&mut buf, 90, 11).is_none());
        assert!(Frame::new(&mut buf, usize::MAX, 2).is_none());
        assert!(Frame::with_headroom(&mut buf, 101).is_none());
        let mut f = Frame::new(&mut buf, 90, 10).unwrap();
        assert_eq!(f.tailroom(), 0);
        assert!(!f.set_bounds(50, 51));
        assert_eq!((f.start(), f.len()), (90, 10));
        assert!(f.set_bounds(40, 60));
        assert_eq!((f.start(), f.len(), f.headroom(), f.tailroom()), (40, 60, 40, 0));
    }
}
