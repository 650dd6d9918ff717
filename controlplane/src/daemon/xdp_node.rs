//! Device setup of the AF_XDP datapath: `linen.1` as a multi-queue TAP device with virtio-net
//! headers and segmentation offload (one queue per worker), linen's XDP program on the underlay
//! NIC (a bpf_link, detached when [`XdpDevices`] is dropped or the process exits), and per queue
//! one UMEM with an AF_XDP socket on underlay queue `i`, registered in the program's XSKMAP.
//!
//! The caller (linend) then programs `linen.1` itself like for the TAP datapath (VtepMAC, MTU,
//! address, routes, neighbours) and runs one worker per [`XskQueue`].
//!
//! Teardown order matters: [`XdpDevices::detach`] (program off, nothing steered any more) before
//! the queues (sockets) are dropped; closing the last TAP queue removes `linen.1` with its routes.
//! When copies of the descriptors are kept in the service manager's store (see
//! [`crate::handover`]), dropping them here closes only this process's copies: the program keeps
//! steering into the sockets, and [`adopt`] takes everything over in the next process.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use linen_dataplane::io::tun::{TunQueue, MAX_QUEUES};
use linen_dataplane::io::xsk::{
    SocketConfig, Umem, UmemConfig, UnderlayConfig, XdpAttachment, XskError, XskQueue, XskSocket,
};

use crate::handover::UmemGeometry;
use crate::kernel::OVERLAY_DEV;

/// What the AF_XDP datapath needs to know to set up its devices.
#[derive(Debug, Clone)]
pub struct XdpNodeConfig {
    /// The underlay device (e.g. `eth0`).
    pub underlay: String,
    /// The local VTEP address: the underlay program steers VXLAN addressed to it.
    pub vtep: Ipv4Addr,
    /// The VXLAN UDP port.
    pub port: u16,
    /// Queues (workers): underlay RX queues `0..queues`, and as many queues of `linen.1`.
    pub queues: u32,
    /// The overlay MTU `linen.1` gets: a segment's frame must fit a UMEM frame.
    pub overlay_mtu: u32,
}

/// Why the AF_XDP datapath could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpNodeError {
    /// Creating the overlay TAP device failed.
    #[error("cannot create the overlay device {OVERLAY_DEV}: {0} (needs CAP_NET_ADMIN and /dev/net/tun)")]
    Tap(#[source] std::io::Error),
    /// Loading or attaching a program, or binding a socket, failed.
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
}

/// The attached program of a running AF_XDP datapath; the queues are handed out separately to
/// the workers.
#[derive(Debug)]
pub struct XdpDevices {
    underlay: Option<XdpAttachment>,
}

impl XdpDevices {
    /// Detaches the program (the kernel then passes every frame to its own stack). Also done
    /// on drop; call it before dropping the queues.
    pub fn detach(&mut self) {
        self.underlay.take();
    }

    /// Frames the underlay program steered to linen and passed to the kernel.
    ///
    /// # Errors
    /// Map reads failing.
    pub fn underlay_counters(&self) -> Result<Option<(u64, u64)>, XskError> {
        match &self.underlay {
            Some(a) => a.counters().map(|c| Some((c.steered, c.passed))),
            None => Ok(None),
        }
    }

    /// The underlay program's bpf_link (to store it for the next process), while attached.
    pub fn link_fd(&self) -> Option<BorrowedFd<'_>> {
        self.underlay.as_ref().map(XdpAttachment::link_fd)
    }
}

/// The UMEM and ring geometry every AF_XDP queue is built with.
pub fn geometry() -> UmemGeometry {
    let (u, s) = (UmemConfig::default(), SocketConfig::default());
    UmemGeometry {
        frame_count: u.frame_count,
        frame_size: u.frame_size,
        headroom: u.headroom,
        fill_size: u.fill_size,
        comp_size: u.comp_size,
        rx_size: s.rx_size,
        tx_size: s.tx_size,
    }
}

/// The descriptors of one AF_XDP queue an earlier process handed over.
#[derive(Debug)]
pub struct HandedQueue {
    /// Its queue of `linen.1`.
    pub tap: OwnedFd,
    /// Its AF_XDP socket on the underlay queue.
    pub xsk: OwnedFd,
    /// Its UMEM's memory file.
    pub umem: OwnedFd,
}

/// The descriptors of an AF_XDP queue to store for the next process: (TAP queue, AF_XDP socket,
/// UMEM memory file).
pub fn queue_fds(q: &XskQueue) -> (BorrowedFd<'_>, BorrowedFd<'_>, BorrowedFd<'_>) {
    (q.overlay_queue().as_fd(), q.underlay_socket().as_fd(), q.umem_memfd())
}

/// Takes over the AF_XDP datapath an earlier process set up with [`setup`]: every queue's TAP
/// queue, socket and UMEM (built with `geometry`), then loads the underlay program afresh and
/// swaps it in on the handed-over `link` (see [`XdpAttachment::underlay_on_link`]), so the
/// program is always the one this binary carries. Frames that arrived while no process ran
/// wait on the sockets' RX rings.
///
/// # Errors
/// [`XdpNodeError`] naming what did not fit; the caller then drops every handed-over
/// descriptor and builds afresh with [`setup`].
pub fn adopt(
    cfg: &XdpNodeConfig,
    link: OwnedFd,
    handed: Vec<HandedQueue>,
    g: &UmemGeometry,
) -> Result<(XdpDevices, Vec<XskQueue>), XdpNodeError> {
    if handed.len() != cfg.queues as usize {
        return Err(XdpNodeError::Config(format!(
            "{} queue(s) handed over, --queues {}",
            handed.len(),
            cfg.queues
        )));
    }
    let umem_cfg = UmemConfig {
        frame_count: g.frame_count,
        frame_size: g.frame_size,
        headroom: g.headroom,
        fill_size: g.fill_size,
        comp_size: g.comp_size,
    };
    let sock_cfg =
        SocketConfig { rx_size: g.rx_size, tx_size: g.tx_size, ..SocketConfig::default() };
    let mut queues = Vec::with_capacity(handed.len());
    for (q, h) in (0..cfg.queues).zip(handed) {
        let tun = TunQueue::adopt(h.tap, OVERLAY_DEV).map_err(XdpNodeError::Tap)?;
        let umem = Umem::adopt(umem_cfg, h.umem, h.xsk.as_fd())?;
        let sock = XskSocket::adopt(&umem, h.xsk, &cfg.underlay, q, &sock_cfg)?;
        queues.push(XskQueue::adopt(&umem, sock, tun)?);
    }
    let sockets: Vec<&XskSocket> = queues.iter().map(XskQueue::underlay_socket).collect();
    let underlay = XdpAttachment::underlay_on_link(
        link,
        &cfg.underlay,
        UnderlayConfig { vtep_ipv4: Some(cfg.vtep), vtep_ipv6: None, port: cfg.port },
        cfg.queues,
        &sockets,
    )?;
    Ok((XdpDevices { underlay: Some(underlay) }, queues))
}

/// Creates `linen.1` with one TAP queue per worker, attaches the underlay program to the
/// underlay device, and binds one AF_XDP socket per queue on a UMEM of its own. On error
/// everything attached so far is detached again and the TAP queues are closed (which removes
/// `linen.1`).
///
/// # Errors
/// [`XdpNodeError`] naming the device and the kernel's reason (e.g. another XDP program already
/// attached, AF_XDP not supported).
pub fn setup(cfg: &XdpNodeConfig) -> Result<(XdpDevices, Vec<XskQueue>), XdpNodeError> {
    if cfg.queues == 0 || cfg.queues > 64.min(MAX_QUEUES) {
        return Err(XdpNodeError::Config(format!("--queues {} is not in 1..=64", cfg.queues)));
    }
    let umem = UmemConfig::default();
    let room = umem.frame_size - umem.headroom - linen_dataplane::io::xsk::KERNEL_HEADROOM;
    // An underlay frame is the inner frame (MTU + 14) plus the 50-byte outer header.
    if cfg.overlay_mtu + 14 + 50 > room {
        return Err(XdpNodeError::Config(format!(
            "overlay MTU {} does not fit linen's {}-byte UMEM frames (at most {} bytes of frame \
             data; jumbo underlays are not supported by the AF_XDP datapath yet)",
            cfg.overlay_mtu, umem.frame_size, room
        )));
    }
    // The underlay must offer the queues.
    match linen_dataplane::io::xsk::rx_queue_count(&cfg.underlay) {
        Ok(n) if n < cfg.queues => {
            return Err(XdpNodeError::Config(format!(
                "--queues {}: {} has {n} RX queue(s) (ethtool -L {} …)",
                cfg.queues, cfg.underlay, cfg.underlay
            )))
        }
        Ok(_) => {}
        Err(e) if cfg.queues > 1 => {
            tracing::warn!(device = %cfg.underlay, error = %e, "cannot read the RX queue count");
        }
        Err(_) => {}
    }
    let mut taps = Vec::with_capacity(cfg.queues as usize);
    for _ in 0..cfg.queues {
        taps.push(TunQueue::open(OVERLAY_DEV).map_err(XdpNodeError::Tap)?);
    }
    if let Some(t) = taps.first() {
        let o = t.offloads();
        tracing::info!(
            dev = OVERLAY_DEV,
            queues = cfg.queues,
            tso = o.tso,
            uso = o.uso,
            "overlay TAP device with virtio-net headers: the kernel hands over and takes back \
             super-packets"
        );
    }
    let underlay = XdpAttachment::underlay(
        &cfg.underlay,
        UnderlayConfig { vtep_ipv4: Some(cfg.vtep), vtep_ipv6: None, port: cfg.port },
        cfg.queues,
    )?;
    let mut queues = Vec::with_capacity(cfg.queues as usize);
    for (q, tap) in (0..cfg.queues).zip(taps) {
        let queue = bind_queue(&cfg.underlay, tap, q)?;
        underlay.register(q, queue.underlay_socket())?;
        tracing::info!(
            queue = q,
            underlay = %cfg.underlay,
            mode = ?queue.underlay_socket().mode(),
            "AF_XDP socket bound"
        );
        queues.push(queue);
    }
    Ok((XdpDevices { underlay: Some(underlay) }, queues))
}

/// Binds underlay queue `q` on a new UMEM, zero-copy where the driver has it, else copy mode.
fn bind_queue(underlay: &str, tap: TunQueue, q: u32) -> Result<XskQueue, XskError> {
    let umem = Umem::new(UmemConfig::default())?;
    XskQueue::new(&umem, underlay, tap, q, &SocketConfig::default())
}

/// Parses a `--cpus` list (`0,2-3`) into CPU numbers, in order.
///
/// # Errors
/// A message naming the part that is not a CPU number or range.
pub fn parse_cpus(list: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpus: {part:?} is not a CPU number or range like 2-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("--cpus: empty CPU list".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_cpus;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0").unwrap(), vec![0]);
        assert_eq!(parse_cpus("1,3-5").unwrap(), vec![1, 3, 4, 5]);
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("a").is_err());
        assert!(parse_cpus("3-1").is_err());
    }
}
