//! linen's XDP programs (`dataplane/bpf/linen_xdp.bpf.c`), embedded in the binary and attached
//! with a bpf_link.
//!
//! An [`XdpAttachment`] owns one loaded copy of the object (its own maps) and the descriptor of
//! the link that holds it on one device. The link lives as long as a descriptor of it is open:
//! dropping the attachment, or the process dying, closes this process's descriptor, and the
//! kernel detaches the program once no other copy is open (the link is never pinned). A copy in
//! the service manager's file-descriptor store ([`XdpAttachment::link_fd`]) keeps the program
//! steering frames into the sockets across a restart; the next process loads the program again
//! and puts it on that link in one step ([`XdpAttachment::underlay_on_link`], `BPF_LINK_UPDATE`),
//! so an upgrade changes the program without a frame passing unsteered. libxdp's
//! multi-program dispatcher is not used: it needs `BPF_PROG_TYPE_EXT`, which the kernels linen
//! targets may lack.

use std::ffi::CStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use super::sys::{self, bpf_object};
use super::{XskError, XskSocket};

/// The compiled object, built by `build.rs` from `bpf/linen_xdp.bpf.c`.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/linen_xdp.bpf.o"));

const PROG_UNDERLAY: &CStr = c"linen_underlay";
const PROG_OVERLAY: &CStr = c"linen_overlay";
const MAP_XSKS: &CStr = c"linen_xsks";
const MAP_CONFIG: &CStr = c"linen_config";
const MAP_STATS: &CStr = c"linen_stats";
const STAT_STEERED: u32 = 0;
const STAT_PASSED: u32 = 1;

const CFG_IPV4: u8 = 0x1;
const CFG_IPV6: u8 = 0x2;

/// What the underlay program steers to AF_XDP: UDP to `port` addressed to one of the VTEP
/// addresses. Everything else goes to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderlayConfig {
    /// Local VTEP IPv4 address, if IPv4 VXLAN is steered.
    pub vtep_ipv4: Option<Ipv4Addr>,
    /// Local VTEP IPv6 address, if IPv6 VXLAN is steered.
    pub vtep_ipv6: Option<Ipv6Addr>,
    /// VXLAN UDP destination port (8472 for flannel compatibility).
    pub port: u16,
}

/// The map value `struct linen_config` of the C program (24 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy)]
struct RawConfig {
    vtep_ip4: [u8; 4],
    vtep_ip6: [u8; 16],
    port: [u8; 2],
    flags: u8,
    reserved: u8,
}

const _: () = assert!(std::mem::size_of::<RawConfig>() == 24);

impl UnderlayConfig {
    fn raw(&self) -> RawConfig {
        let mut flags = 0;
        if self.vtep_ipv4.is_some() {
            flags |= CFG_IPV4;
        }
        if self.vtep_ipv6.is_some() {
            flags |= CFG_IPV6;
        }
        RawConfig {
            vtep_ip4: self.vtep_ipv4.map_or([0; 4], |a| a.octets()),
            vtep_ip6: self.vtep_ipv6.map_or([0; 16], |a| a.octets()),
            port: self.port.to_be_bytes(),
            flags,
            reserved: 0,
        }
    }
}

/// Which of linen's programs an attachment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// On the underlay NIC: steer only VXLAN to the local VTEP.
    Underlay,
    /// On `linen.1x`: every frame to the AF_XDP socket.
    Overlay,
}

/// How many frames the program has seen, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Frames handed to `bpf_redirect_map` (to the queue's socket, or to the kernel when no
    /// socket is registered for the queue).
    pub steered: u64,
    /// Frames the underlay filter left to the kernel (not VXLAN for this VTEP).
    pub passed: u64,
}

/// One of linen's XDP programs loaded and attached to a device with a bpf_link.
#[derive(Debug)]
pub struct XdpAttachment {
    obj: NonNull<bpf_object>,
    link: OwnedFd,
    prog_fd: RawFd,
    xsks_fd: RawFd,
    config_fd: RawFd,
    stats_fd: RawFd,
    cpus: usize,
    ifindex: u32,
    kind: ProgramKind,
    max_queues: u32,
}

// SAFETY: libbpf's object and link are heap structures with no thread affinity; this type gives
// no shared access to them (methods that touch them take `&self` but only issue map syscalls on
// fds, which the kernel synchronises).
unsafe impl Send for XdpAttachment {}
// SAFETY: see `Send`; `&self` methods only make bpf() map syscalls on fds.
unsafe impl Sync for XdpAttachment {}

impl XdpAttachment {
    /// Loads the underlay program, configures it and attaches it to `ifname` (in the calling
    /// thread's network namespace). `max_queues` sizes the XSKMAP (queue ids `0..max_queues`).
    ///
    /// # Errors
    /// [`XskError::NoDevice`] for an unknown device, [`XskError::Sys`] when the kernel refuses to
    /// load or attach (no privilege, another XDP program already attached, ...).
    pub fn underlay(
        ifname: &str,
        config: UnderlayConfig,
        max_queues: u32,
    ) -> Result<XdpAttachment, XskError> {
        if config.vtep_ipv4.is_none() && config.vtep_ipv6.is_none() {
            return Err(XskError::Config("the underlay program needs a VTEP IPv4 or IPv6 address"));
        }
        if config.port == 0 {
            return Err(XskError::Config("the VXLAN port must not be 0"));
        }
        let att = Self::attach(ifname, ProgramKind::Underlay, max_queues, Some(config))?;
        Ok(att)
    }

    /// Loads the overlay program (everything to AF_XDP) and attaches it to `ifname`.
    ///
    /// # Errors
    /// As [`XdpAttachment::underlay`].
    pub fn overlay(ifname: &str, max_queues: u32) -> Result<XdpAttachment, XskError> {
        Self::attach(ifname, ProgramKind::Overlay, max_queues, None)
    }

    /// Loads the underlay program like [`XdpAttachment::underlay`] and puts it on `link`, an XDP
    /// link an earlier process attached to `ifname` (handed over through the service manager's
    /// store), in place of whatever program the link runs (`BPF_LINK_UPDATE`, atomic). The
    /// `sockets` (taken over with [`XskSocket::adopt`]) are registered in the new program's
    /// XSKMAP first, so the new program steers every frame the old one did. The old program
    /// goes away with its last reference.
    ///
    /// # Errors
    /// [`XskError::Config`] when `link` is no XDP link on `ifname` or a socket does not fit;
    /// as [`XdpAttachment::underlay`] otherwise.
    pub fn underlay_on_link(
        link: OwnedFd,
        ifname: &str,
        config: UnderlayConfig,
        max_queues: u32,
        sockets: &[&XskSocket],
    ) -> Result<XdpAttachment, XskError> {
        if config.vtep_ipv4.is_none() && config.vtep_ipv6.is_none() || config.port == 0 {
            return Err(XskError::Config("the underlay program needs a VTEP address and a port"));
        }
        let ifindex = sys::if_nametoindex(ifname)
            .map_err(|e| XskError::NoDevice { name: ifname.to_string(), source: e })?;
        let info = sys::link_info(link.as_raw_fd())?;
        if info.xdp_ifindex != Some(ifindex) {
            return Err(XskError::Config("the handed-over link is no XDP link on the underlay"));
        }
        let att = Loaded::new(ProgramKind::Underlay, max_queues, Some(config))?
            .into_attachment(link, ifindex);
        for s in sockets {
            att.register(s.queue(), s)?;
        }
        sys::link_update(att.link.as_raw_fd(), att.prog_fd)
            .map_err(|e| XskError::Attach { device: ifname.to_string(), source: e })?;
        tracing::info!(
            device = ifname,
            link = info.id,
            old_program = info.prog_id,
            "XDP program loaded and swapped in on the handed-over link"
        );
        Ok(att)
    }

    fn attach(
        ifname: &str,
        kind: ProgramKind,
        max_queues: u32,
        config: Option<UnderlayConfig>,
    ) -> Result<XdpAttachment, XskError> {
        let ifindex = sys::if_nametoindex(ifname)
            .map_err(|e| XskError::NoDevice { name: ifname.to_string(), source: e })?;
        let loaded = Loaded::new(kind, max_queues, config)?;
        // SAFETY: the object is loaded and live (owned by `loaded`).
        let link = unsafe { sys::attach_xdp(loaded.obj, kind.program(), ifindex) }
            .map_err(|e| XskError::Attach { device: ifname.to_string(), source: e })?;
        // SAFETY: `link` was just created and is not used again.
        let link = unsafe { sys::link_into_fd(link) }?;
        tracing::info!(device = ifname, ifindex, ?kind, "XDP program attached with a bpf_link");
        Ok(loaded.into_attachment(link, ifindex))
    }

    /// Replaces the underlay program's configuration (for example after the VTEP address
    /// changed); takes effect for the next frame.
    ///
    /// # Errors
    /// [`XskError::Config`] on the overlay program or an empty configuration.
    pub fn set_underlay_config(&self, config: UnderlayConfig) -> Result<(), XskError> {
        if self.kind != ProgramKind::Underlay {
            return Err(XskError::Config("only the underlay program has a configuration"));
        }
        if config.vtep_ipv4.is_none() && config.vtep_ipv6.is_none() || config.port == 0 {
            return Err(XskError::Config("the underlay program needs a VTEP address and a port"));
        }
        sys::map_update(self.config_fd, 0, &config.raw())?;
        Ok(())
    }

    /// Steers frames of RX queue `queue` to `socket` (inserts it into the XSKMAP).
    ///
    /// # Errors
    /// [`XskError::Config`] when `queue` is outside the map or does not match the queue the
    /// socket is bound to; [`XskError::Sys`] if the kernel refuses (socket bound to another
    /// device).
    pub fn register(&self, queue: u32, socket: &XskSocket) -> Result<(), XskError> {
        if queue >= self.max_queues {
            return Err(XskError::Config("queue id beyond the XSKMAP's size"));
        }
        if socket.ifindex() != self.ifindex || socket.queue() != queue {
            return Err(XskError::Config("the socket is bound to another device or queue"));
        }
        let fd: u32 = socket.as_raw_fd() as u32;
        sys::map_update(self.xsks_fd, queue, &fd)?;
        Ok(())
    }

    /// Stops steering RX queue `queue` to AF_XDP (its frames go to the kernel again).
    ///
    /// # Errors
    /// [`XskError::Sys`] if the kernel refuses.
    pub fn unregister(&self, queue: u32) -> Result<(), XskError> {
        sys::map_delete(self.xsks_fd, queue)?;
        Ok(())
    }

    /// The program's decision counters, summed over CPUs.
    ///
    /// # Errors
    /// [`XskError::Sys`] if the kernel cannot read the map.
    pub fn counters(&self) -> Result<ProgramCounters, XskError> {
        Ok(ProgramCounters {
            steered: sys::map_sum_percpu_u64(self.stats_fd, STAT_STEERED, self.cpus)?,
            passed: sys::map_sum_percpu_u64(self.stats_fd, STAT_PASSED, self.cpus)?,
        })
    }

    /// Runs the attached program once on `frame` in the kernel (`BPF_PROG_TEST_RUN`, no device
    /// involved) and returns its XDP action (`XDP_PASS` = 2, `XDP_REDIRECT` = 4). Counters
    /// change as for a real frame. For tests and diagnostics.
    ///
    /// # Errors
    /// [`XskError::Sys`] if the kernel refuses the run (e.g. `frame` shorter than 14 bytes).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, XskError> {
        Ok(sys::prog_test_run(self.prog_fd, frame)?)
    }

    /// Interface index the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Which program this is.
    pub fn kind(&self) -> ProgramKind {
        self.kind
    }

    /// The kernel's ids of the bpf_link and of the attached program (as `bpftool link list`
    /// and `ip link` show them).
    ///
    /// # Errors
    /// [`XskError::Sys`] if the kernel cannot describe the link.
    pub fn ids(&self) -> Result<(u32, u32), XskError> {
        let info = sys::link_info(self.link.as_raw_fd())?;
        Ok((info.id, info.prog_id))
    }

    /// The link's descriptor: a copy kept elsewhere (the service manager's store) keeps the
    /// program attached after this attachment is dropped.
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        // SAFETY: the object is owned by `self` and not used after this. The link's descriptor
        // closes after this body; the kernel detaches the program if it was the last one.
        unsafe { sys::object_close(self.obj) };
    }
}

impl ProgramKind {
    fn program(self) -> &'static CStr {
        match self {
            ProgramKind::Underlay => PROG_UNDERLAY,
            ProgramKind::Overlay => PROG_OVERLAY,
        }
    }
}

/// A loaded copy of the object with one of its programs, not attached yet: its descriptors
/// looked up and the underlay configuration written. Dropped unused (an error path), it closes
/// the object.
struct Loaded {
    obj: NonNull<bpf_object>,
    kind: ProgramKind,
    max_queues: u32,
    prog_fd: RawFd,
    xsks_fd: RawFd,
    config_fd: RawFd,
    stats_fd: RawFd,
    cpus: usize,
}

impl Loaded {
    fn new(
        kind: ProgramKind,
        max_queues: u32,
        config: Option<UnderlayConfig>,
    ) -> Result<Loaded, XskError> {
        if max_queues == 0 {
            return Err(XskError::Config("max_queues must be at least 1"));
        }
        let obj = sys::object_open(OBJECT, c"linen_xdp")?;
        let mut loaded = Loaded {
            obj,
            kind,
            max_queues,
            prog_fd: -1,
            xsks_fd: -1,
            config_fd: -1,
            stats_fd: -1,
            cpus: 0,
        };
        // SAFETY: `obj` was just opened, is not loaded yet and is used by this thread only.
        unsafe {
            sys::object_load(
                obj,
                &[PROG_UNDERLAY, PROG_OVERLAY],
                kind.program(),
                (MAP_XSKS, max_queues),
            )
        }?;
        // SAFETY: `obj` is loaded and live (owned by `loaded`).
        loaded.xsks_fd = unsafe { sys::object_map_fd(obj, MAP_XSKS) }?;
        // SAFETY: as above.
        loaded.config_fd = unsafe { sys::object_map_fd(obj, MAP_CONFIG) }?;
        // SAFETY: as above.
        loaded.stats_fd = unsafe { sys::object_map_fd(obj, MAP_STATS) }?;
        // SAFETY: as above.
        loaded.prog_fd = unsafe { sys::object_prog_fd(obj, kind.program()) }?;
        loaded.cpus = sys::possible_cpus()?;
        if let Some(cfg) = config {
            sys::map_update(loaded.config_fd, 0, &cfg.raw())?;
        }
        Ok(loaded)
    }

    fn into_attachment(self, link: OwnedFd, ifindex: u32) -> XdpAttachment {
        let this = std::mem::ManuallyDrop::new(self);
        XdpAttachment {
            obj: this.obj,
            link,
            prog_fd: this.prog_fd,
            xsks_fd: this.xsks_fd,
            config_fd: this.config_fd,
            stats_fd: this.stats_fd,
            cpus: this.cpus,
            ifindex,
            kind: this.kind,
            max_queues: this.max_queues,
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: the object was opened by `Loaded::new` and is not handed out (an attachment
        // takes it over with `into_attachment`, which skips this).
        unsafe { sys::object_close(self.obj) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_value_matches_the_c_struct_layout() {
        let cfg = UnderlayConfig {
            vtep_ipv4: Some(Ipv4Addr::new(192, 168, 64, 3)),
            vtep_ipv6: Some("fd00::1".parse().unwrap()),
            port: 8472,
        };
        let raw = cfg.raw();
        assert_eq!(raw.vtep_ip4, [192, 168, 64, 3]);
        assert_eq!(raw.vtep_ip6[0], 0xfd);
        assert_eq!(raw.vtep_ip6[15], 1);
        assert_eq!(raw.port, [0x21, 0x18], "network byte order");
        assert_eq!(raw.flags, CFG_IPV4 | CFG_IPV6);
        let v4_only = UnderlayConfig { vtep_ipv6: None, ..cfg }.raw();
        assert_eq!(v4_only.flags, CFG_IPV4);
        assert_eq!(v4_only.vtep_ip6, [0; 16]);
        assert_eq!(std::mem::offset_of!(RawConfig, port), 20);
        assert_eq!(std::mem::offset_of!(RawConfig, flags), 22);
    }

    #[test]
    fn the_embedded_object_is_a_bpf_elf_with_both_programs() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247, "e_machine EM_BPF");
        let has = |needle: &[u8]| OBJECT.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"linen_underlay") && has(b"linen_overlay") && has(b"linen_xsks"));
    }

    #[test]
    fn bad_configurations_are_refused_before_touching_the_kernel() {
        let none = UnderlayConfig { vtep_ipv4: None, vtep_ipv6: None, port: 8472 };
        assert!(matches!(XdpAttachment::underlay("lo", none, 1), Err(XskError::Config(_))));
        let port0 =
            UnderlayConfig { vtep_ipv4: Some(Ipv4Addr::LOCALHOST), vtep_ipv6: None, port: 0 };
        assert!(matches!(XdpAttachment::underlay("lo", port0, 1), Err(XskError::Config(_))));
    }
}
