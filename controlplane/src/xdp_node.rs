//! Device setup of the AF_XDP datapath: the `linen.1`/`linen.1x` veth pair, linen's XDP programs
//! on the underlay NIC and on `linen.1x` (bpf_links, detached when [`XdpDevices`] is dropped or
//! the process exits), and per queue one UMEM with two AF_XDP sockets — underlay queue `i` and
//! `linen.1x` queue `i` — registered in the programs' XSKMAPs.
//!
//! The caller (linend) then programs `linen.1` itself like for the TAP datapath (VtepMAC, MTU,
//! offloads off, address, routes, neighbours) and runs one worker per [`XskQueue`].
//!
//! Teardown order matters: [`XdpDevices::detach`] (programs off, nothing steered any more) before
//! the queues (sockets) are dropped, then `linen.1` is deleted (its peer goes with it).

use std::net::Ipv4Addr;

use linen_dataplane::io::xsk::{
    BindMode, ModePreference, SocketConfig, Umem, UmemConfig, UnderlayConfig, XdpAttachment,
    XskError, XskQueue,
};

use crate::kernel::{Kernel, KernelError, OVERLAY_DEV, OVERLAY_PEER_DEV};

/// What the AF_XDP datapath needs to know to set up its devices.
#[derive(Debug, Clone)]
pub struct XdpNodeConfig {
    /// The underlay device (e.g. `eth0`).
    pub underlay: String,
    /// The local VTEP address: the underlay program steers VXLAN addressed to it.
    pub vtep: Ipv4Addr,
    /// The VXLAN UDP port.
    pub port: u16,
    /// Queue pairs (workers): underlay RX queues `0..queues`, and as many on `linen.1x`.
    pub queues: u32,
    /// The overlay MTU `linen.1` gets: its frames must fit a UMEM frame.
    pub overlay_mtu: u32,
}

/// Why the AF_XDP datapath could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpNodeError {
    /// Creating the veth pair failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Loading or attaching a program, or binding a socket, failed.
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
}

/// The attached programs of a running AF_XDP datapath; the queues are handed out separately to
/// the workers.
#[derive(Debug)]
pub struct XdpDevices {
    underlay: Option<XdpAttachment>,
    overlay: Option<XdpAttachment>,
}

impl XdpDevices {
    /// Detaches both programs (the kernel then passes every frame to its own stack). Also done
    /// on drop; call it before dropping the queues.
    pub fn detach(&mut self) {
        self.overlay.take();
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
}

/// Creates (or reuses) the veth pair `linen.1`/`linen.1x`, attaches the overlay program to
/// `linen.1x` and the underlay program to the underlay device, and binds one queue pair per queue
/// on a UMEM of its own. On error everything attached so far is detached again; the veth pair is
/// left for the caller to delete.
///
/// # Errors
/// [`XdpNodeError`] naming the device and the kernel's reason (e.g. another XDP program already
/// attached, AF_XDP not supported).
pub async fn setup(
    kernel: &Kernel,
    cfg: &XdpNodeConfig,
) -> Result<(XdpDevices, Vec<XskQueue>), XdpNodeError> {
    if cfg.queues == 0 || cfg.queues > 64 {
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
    kernel.ensure_veth(OVERLAY_DEV, OVERLAY_PEER_DEV).await?;
    // The underlay must offer the queues; linen.1x is made to (one socket per queue each).
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
    if cfg.queues > 1 {
        linen_dataplane::io::xsk::set_rx_tx_queues(OVERLAY_PEER_DEV, cfg.queues)
            .and_then(|()| linen_dataplane::io::xsk::set_rx_tx_queues(OVERLAY_DEV, cfg.queues))
            .map_err(|e| {
                XdpNodeError::Config(format!(
                    "--queues {}: cannot give {OVERLAY_PEER_DEV} that many queues: {e}",
                    cfg.queues
                ))
            })?;
    }
    let overlay = XdpAttachment::overlay(OVERLAY_PEER_DEV, cfg.queues)?;
    let underlay = XdpAttachment::underlay(
        &cfg.underlay,
        UnderlayConfig { vtep_ipv4: Some(cfg.vtep), vtep_ipv6: None, port: cfg.port },
        cfg.queues,
    )?;
    let mut queues = Vec::with_capacity(cfg.queues as usize);
    for q in 0..cfg.queues {
        let queue = bind_queue(&cfg.underlay, q)?;
        underlay.register(q, queue.underlay_socket())?;
        overlay.register(q, queue.overlay_socket())?;
        tracing::info!(
            queue = q,
            underlay = %cfg.underlay,
            overlay = OVERLAY_PEER_DEV,
            mode = ?queue.underlay_socket().mode(),
            "AF_XDP queue pair bound on one UMEM"
        );
        queues.push(queue);
    }
    Ok((XdpDevices { underlay: Some(underlay), overlay: Some(overlay) }, queues))
}

/// Binds queue pair `q` on a new UMEM. The underlay socket binds first and takes zero-copy when
/// its driver has it; `linen.1x` (a veth: copy mode only) cannot join a zero-copy UMEM, so then
/// the pair is bound again on a fresh UMEM in copy mode (logged).
fn bind_queue(underlay: &str, q: u32) -> Result<XskQueue, XskError> {
    let umem = Umem::new(UmemConfig::default())?;
    match XskQueue::new(&umem, underlay, OVERLAY_PEER_DEV, q, &SocketConfig::default()) {
        Ok(queue) => Ok(queue),
        Err(e) if umem.mode() == Some(BindMode::ZeroCopy) => {
            tracing::info!(
                device = underlay,
                queue = q,
                error = %e,
                "{OVERLAY_PEER_DEV} cannot share a zero-copy UMEM; binding the pair in copy mode"
            );
            drop(umem);
            let umem = Umem::new(UmemConfig::default())?;
            let copy = SocketConfig { mode: ModePreference::Copy, ..SocketConfig::default() };
            XskQueue::new(&umem, underlay, OVERLAY_PEER_DEV, q, &copy)
        }
        Err(e) => Err(e),
    }
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
