//! A small reader for classic pcap files (not pcapng) with Ethernet link type.
//!
//! Used by tests, benches and fuzz seeding to replay captured frames. It reads from a byte
//! slice, so frames borrow the file's bytes and nothing is copied. Both byte orders and both
//! timestamp resolutions are understood:
//!
//! | magic as written  | byte order    | timestamps   |
//! |-------------------|---------------|--------------|
//! | `d4 c3 b2 a1`     | little-endian | microseconds |
//! | `a1 b2 c3 d4`     | big-endian    | microseconds |
//! | `4d 3c b2 a1`     | little-endian | nanoseconds  |
//! | `a1 b2 3c 4d`     | big-endian    | nanoseconds  |
//!
//! Every malformed input is a typed [`Error`] (never a panic): a file from elsewhere is
//! untrusted input, and the fuzz target `pcap` holds the reader to that.
//!
//! ```
//! let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kernel-vxlan-flannel.pcap"))?;
//! let pcap = linen_dataplane::pcap::Pcap::parse(&bytes)?;
//! for frame in pcap.frames() {
//!     let frame = frame?;
//!     assert!(frame.data.len() >= 14);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

/// Length of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// The largest captured length accepted for one record (libpcap's own limit for Ethernet).
pub const MAX_FRAME_LEN: u32 = 262_144;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

/// What was wrong with a pcap file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read pcap file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Shorter than the 24-byte file header.
    #[error("pcap file header truncated: {len} bytes, need 24")]
    TruncatedFileHeader {
        /// Bytes present.
        len: usize,
    },
    /// Not a classic pcap magic number (pcapng files start with 0x0a0d0d0a).
    #[error("not a classic pcap file: magic {magic:#010x} (pcapng is not supported)")]
    BadMagic {
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// A major version other than 2.
    #[error("unsupported pcap version {major}.{minor} (expected 2.x)")]
    UnsupportedVersion {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// A link type other than Ethernet.
    #[error("unsupported pcap link type {link_type} (only Ethernet, 1, is read)")]
    UnsupportedLinkType {
        /// The link type field (low 16 bits).
        link_type: u16,
    },
    /// A record header runs past the end of the file.
    #[error("pcap record {index} at offset {offset}: record header truncated")]
    TruncatedRecordHeader {
        /// Zero-based record number.
        index: usize,
        /// Byte offset of the record header.
        offset: usize,
    },
    /// A record's captured bytes run past the end of the file.
    #[error("pcap record {index} at offset {offset}: {captured} captured bytes announced, {available} present")]
    TruncatedFrame {
        /// Zero-based record number.
        index: usize,
        /// Byte offset of the record header.
        offset: usize,
        /// The captured length field.
        captured: u32,
        /// Bytes left in the file.
        available: usize,
    },
    /// A record's captured length is above [`MAX_FRAME_LEN`].
    #[error(
        "pcap record {index}: captured length {captured} above the {MAX_FRAME_LEN}-byte limit"
    )]
    FrameTooLarge {
        /// Zero-based record number.
        index: usize,
        /// The captured length field.
        captured: u32,
    },
}

/// A parsed pcap file header over the file's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Pcap<'a> {
    data: &'a [u8],
    big_endian: bool,
    nanos: bool,
    snaplen: u32,
    version: (u16, u16),
}

/// One captured frame, borrowing the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time in nanoseconds since the Unix epoch (microsecond files are scaled).
    pub timestamp_ns: u64,
    /// Length of the frame on the wire (may exceed `data.len()` when the capture was cut).
    pub orig_len: u32,
    /// The captured bytes, starting at the Ethernet header.
    pub data: &'a [u8],
}

impl<'a> Pcap<'a> {
    /// Parses the file header.
    ///
    /// # Errors
    /// [`Error::TruncatedFileHeader`], [`Error::BadMagic`], [`Error::UnsupportedVersion`],
    /// [`Error::UnsupportedLinkType`] (only Ethernet is accepted).
    pub fn parse(data: &'a [u8]) -> Result<Pcap<'a>, Error> {
        let Some(header) = data.get(..FILE_HEADER_LEN) else {
            return Err(Error::TruncatedFileHeader { len: data.len() });
        };
        let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let (big_endian, nanos) = match (magic, magic.swap_bytes()) {
            (MAGIC_MICROS, _) => (true, false),
            (MAGIC_NANOS, _) => (true, true),
            (_, MAGIC_MICROS) => (false, false),
            (_, MAGIC_NANOS) => (false, true),
            _ => return Err(Error::BadMagic { magic }),
        };
        let pcap = Pcap { data, big_endian, nanos, snaplen: 0, version: (0, 0) };
        let major = pcap.u16_at(4);
        let minor = pcap.u16_at(6);
        if major != 2 {
            return Err(Error::UnsupportedVersion { major, minor });
        }
        // The link-type field's upper bits may carry FCS information; the type is the low 16.
        let link_type = pcap.u32_at(20) as u16;
        if link_type != LINKTYPE_ETHERNET {
            return Err(Error::UnsupportedLinkType { link_type });
        }
        Ok(Pcap { snaplen: pcap.u32_at(16), version: (major, minor), ..pcap })
    }

    /// Reads `path` fully and returns every frame's bytes.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, otherwise the errors of [`Pcap::parse`] and
    /// [`Frames`].
    pub fn read_frames(path: impl AsRef<Path>) -> Result<Vec<Vec<u8>>, Error> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Pcap::parse(&bytes)?.frames().map(|f| f.map(|f| f.data.to_vec())).collect()
    }

    /// Whether the file is big-endian.
    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }

    /// Whether timestamps are in nanoseconds (else microseconds).
    pub fn is_nanosecond(&self) -> bool {
        self.nanos
    }

    /// The snapshot length from the file header.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// The (major, minor) version.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// The frames, in file order. The iterator yields one error and then stops.
    pub fn frames(&self) -> Frames<'a> {
        Frames { pcap: *self, offset: FILE_HEADER_LEN, index: 0, done: false }
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.data[at], self.data[at + 1]];
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [self.data[at], self.data[at + 1], self.data[at + 2], self.data[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
}

/// Iterator over the frames of a [`Pcap`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    pcap: Pcap<'a>,
    offset: usize,
    index: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    fn next_frame(&mut self) -> Result<Frame<'a>, Error> {
        let (index, offset) = (self.index, self.offset);
        let data = self.pcap.data;
        if data.len() - offset < RECORD_HEADER_LEN {
            return Err(Error::TruncatedRecordHeader { index, offset });
        }
        let p = &self.pcap;
        let secs = u64::from(p.u32_at(offset));
        let frac = u64::from(p.u32_at(offset + 4));
        let captured = p.u32_at(offset + 8);
        let orig_len = p.u32_at(offset + 12);
        if captured > MAX_FRAME_LEN {
            return Err(Error::FrameTooLarge { index, captured });
        }
        let start = offset + RECORD_HEADER_LEN;
        let available = data.len() - start;
        let len = captured as usize;
        if len > available {
            return Err(Error::TruncatedFrame { index, offset, captured, available });
        }
        let frac_ns = if p.nanos { frac } else { frac * 1_000 };
        self.offset = start + len;
        self.index += 1;
        Ok(Frame {
            timestamp_ns: secs * 1_000_000_000 + frac_ns,
            orig_len,
            data: &data[start..start + len],
        })
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset == self.pcap.data.len() {
            return None;
        }
        let result = self.next_frame();
        self.done = result.is_err();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/kernel-vxlan-flannel.pcap");

    /// Builds a pcap file in the given byte order / resolution from (ts_sec, frac, bytes).
    fn build(big_endian: bool, nanos: bool, frames: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&u32b(if nanos { MAGIC_NANOS } else { MAGIC_MICROS }));
        out.extend_from_slice(&u16b(2));
        out.extend_from_slice(&u16b(4));
        out.extend_from_slice(&u32b(0));
        out.extend_from_slice(&u32b(0));
        out.extend_from_slice(&u32b(65535));
        out.extend_from_slice(&u32b(1));
        for (sec, frac, data) in frames {
            out.extend_from_slice(&u32b(*sec));
            out.extend_from_slice(&u32b(*frac));
            out.extend_from_slice(&u32b(data.len() as u32));
            out.extend_from_slice(&u32b(data.len() as u32 + 4));
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn fixture_has_18_ethernet_frames() {
        let pcap = Pcap::parse(FIXTURE).unwrap();
        assert_eq!(pcap.version(), (2, 4));
        let frames: Vec<_> = pcap.frames().collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 18);
        assert_eq!(frames[0].data.len(), 148);
        assert_eq!(frames[4].data.len(), 1492);
        assert!(frames.iter().all(|f| f.orig_len as usize == f.data.len()));
        assert!(frames.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns));
        // 01:49:55.261917 is the first frame's time of day (tcpdump -r).
        let tod_us = (frames[0].timestamp_ns / 1_000) % 86_400_000_000;
        assert_eq!(tod_us, (3600 + 49 * 60 + 55) * 1_000_000 + 261_917);
    }

    #[test]
    fn read_frames_from_path() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kernel-vxlan-flannel.pcap");
        assert_eq!(Pcap::read_frames(path).unwrap().len(), 18);
        let err = Pcap::read_frames("/nonexistent/linen.pcap").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/linen.pcap"));
    }

    #[test]
    fn every_byte_order_and_resolution() {
        let a = [1u8, 2, 3];
        let b = [9u8; 60];
        for big in [false, true] {
            for nanos in [false, true] {
                let file = build(big, nanos, &[(10, 500, &a), (11, 7, &b)]);
                let pcap = Pcap::parse(&file).unwrap();
                assert_eq!((pcap.is_big_endian(), pcap.is_nanosecond()), (big, nanos));
                assert_eq!(pcap.snaplen(), 65535);
                let frames: Vec<_> = pcap.frames().collect::<Result<_, _>>().unwrap();
                assert_eq!(frames.len(), 2);
                assert_eq!(frames[0].data, &a);
                assert_eq!(frames[1].data, &b);
                assert_eq!(frames[1].orig_len, 64);
                let scale = if nanos { 1 } else { 1_000 };
                assert_eq!(frames[0].timestamp_ns, 10_000_000_000 + 500 * scale);
            }
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(Pcap::parse(&FIXTURE[..23]), Err(Error::TruncatedFileHeader { len: 23 })));
        let mut ng = FIXTURE.to_vec();
        ng[..4].copy_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]);
        assert!(matches!(Pcap::parse(&ng), Err(Error::BadMagic { magic: 0x0a0d_0d0a })));
        let mut v = build(false, false, &[]);
        v[4] = 1;
        assert!(matches!(Pcap::parse(&v), Err(Error::UnsupportedVersion { major: 1, minor: 4 })));
        let mut raw_ip = build(true, false, &[]);
        raw_ip[23] = 101;
        assert!(matches!(Pcap::parse(&raw_ip), Err(Error::UnsupportedLinkType { link_type: 101 })));
        // An empty capture has no frames.
        assert_eq!(Pcap::parse(&build(false, true, &[])).unwrap().frames().count(), 0);

        // Record header cut in the middle: first frame fine, then one error, then the end.
        let cut = &FIXTURE[..24 + 16 + 148 + 10];
        let mut it = Pcap::parse(cut).unwrap().frames();
        assert!(it.next().unwrap().is_ok());
        assert!(matches!(
            it.next(),
            Some(Err(Error::TruncatedRecordHeader { index: 1, offset: 188 }))
        ));
        assert!(it.next().is_none());

        // Frame bytes cut.
        let cut = &FIXTURE[..24 + 16 + 100];
        let mut it = Pcap::parse(cut).unwrap().frames();
        assert!(matches!(
            it.next(),
            Some(Err(Error::TruncatedFrame { index: 0, captured: 148, available: 100, .. }))
        ));
        assert!(it.next().is_none());

        let mut huge = build(false, false, &[(0, 0, &[0u8; 4])]);
        huge[24 + 8..24 + 12].copy_from_slice(&(MAX_FRAME_LEN + 1).to_le_bytes());
        assert!(matches!(
            Pcap::parse(&huge).unwrap().frames().next(),
            Some(Err(Error::FrameTooLarge { index: 0, .. }))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(pcap) = Pcap::parse(&data) {
                for frame in pcap.frames() {
                    let _ = frame;
                }
            }
        }

        #[test]
        fn arbitrary_records_after_a_valid_header_never_panic(
            big in proptest::bool::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let mut data = build(big, false, &[]);
            data.extend_from_slice(&tail);
            let pcap = Pcap::parse(&data).unwrap();
            let n = pcap.frames().count();
            proptest::prop_assert!(n <= tail.len() / RECORD_HEADER_LEN + 1);
        }
    }
}
