//! AF_XDP packet I/O: linen's XDP programs, a UMEM shared by the underlay NIC and `linen.1x`
//! sockets, and the batch API the worker loop drives.
//!
//! - [`XdpAttachment`]: loads `bpf/linen_xdp.bpf.c` (embedded at build time) and attaches the
//!   underlay or overlay program to a device with a bpf_link; detached on drop or process exit.
//! - [`Umem`], [`Frame`], [`FramePool`]: the shared frame memory and frame ownership tokens.
//! - [`XskSocket`]: one socket per (device, RX queue); receive, stage/flush TX, complete, fill.
//!
//! A worker's loop, per batch (≤ 64):
//!
//! ```no_run
//! use linen_dataplane::io::xsk::*;
//! # fn main() -> Result<(), XskError> {
//! let umem = Umem::new(UmemConfig::default())?;
//! let nic_prog = XdpAttachment::underlay("eth0", UnderlayConfig {
//!     vtep_ipv4: Some("192.168.64.3".parse().unwrap()), vtep_ipv6: None, port: 8472 }, 64)?;
//! let mut nic = XskSocket::bind(&umem, "eth0", 0, &SocketConfig::default())?;
//! let mut ovl = XskSocket::bind(&umem, "linen.1x", 0, &SocketConfig::default())?;
//! nic_prog.register(0, &nic)?;
//! let mut pool = umem.pool(umem.config().frame_count)?;
//! nic.fill(&mut pool, 2048);
//! ovl.fill(&mut pool, 2048);
//! let mut batch = Vec::with_capacity(64);
//! loop {
//!     nic.recv(&mut batch, 64);
//!     for mut frame in batch.drain(..) {
//!         // decap in place: strip the 50-byte outer header, hand the inner frame to linen.1x
//!         if umem.adjust_head(&mut frame, 50).is_ok() {
//!             if let Err(f) = ovl.stage(frame) { pool.free(f) }
//!         } else {
//!             pool.free(frame);
//!         }
//!     }
//!     ovl.flush()?;
//!     ovl.complete(&mut pool, 64);
//!     nic.fill(&mut pool, 64);
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! Every call into the kernel or into libbpf/libxdp goes through the private `sys` module.
//! Nothing here allocates, locks or logs per packet; setup and teardown do.

mod program;
mod queue;
mod socket;
mod sys;
mod umem;

pub use program::{ProgramCounters, ProgramKind, UnderlayConfig, XdpAttachment};
pub use queue::{XskQueue, OVERLAY_TOKEN, UNDERLAY_TOKEN};
pub use socket::{wait_readable, ModePreference, SocketConfig, XskSocket};
pub use sys::{gro_enabled, pin_current_thread, rx_queue_count, SysError, XdpStatistics};
pub use umem::{Frame, FrameError, FramePool, Umem, UmemConfig, MIN_HEADROOM};

/// Headroom the kernel keeps in front of every received frame (`XDP_PACKET_HEADROOM`), on top
/// of [`UmemConfig::headroom`].
pub const KERNEL_HEADROOM: u32 = sys::XDP_PACKET_HEADROOM;

/// How an AF_XDP socket moves frames between the driver and the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The kernel copies each frame (generic path; the only mode veth offers).
    Copy,
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
}

/// Errors of the AF_XDP backend. Messages name the device and the cause.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A kernel or library call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The named device does not exist in this network namespace.
    #[error("network device {name:?} not found: {source}")]
    NoDevice {
        /// Device name.
        name: String,
        /// The lookup error.
        #[source]
        source: SysError,
    },
    /// Attaching the XDP program failed.
    #[error("attaching linen's XDP program to {device} failed (another XDP program attached?): {source}")]
    Attach {
        /// Device name.
        device: String,
        /// The kernel's answer.
        #[source]
        source: SysError,
    },
    /// Binding the AF_XDP socket failed.
    #[error("binding an AF_XDP socket to {device} queue {queue} failed: {source}")]
    Bind {
        /// Device name.
        device: String,
        /// Queue id.
        queue: u32,
        /// The kernel's answer.
        #[source]
        source: SysError,
    },
    /// A setting is out of range or inconsistent.
    #[error("invalid AF_XDP configuration: {0}")]
    Config(&'static str),
}
