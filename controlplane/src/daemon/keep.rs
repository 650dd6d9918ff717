//! linend's use of the service manager's descriptor store (see [`crate::handover`]): storing a
//! new datapath, taking a handed-over one, releasing one that does not fit.

use std::time::Duration;

use crate::handover::{Description, Handover, StateFiles, Store};
use crate::kernel::{Kernel, OVERLAY_DEV};
use crate::node::RemoteNode;
use crate::xdp_node::{HandedQueue, XdpNodeConfig};
use linen_dataplane::io::tap::{TapConfig, TapQueue};
use linen_dataplane::io::tun::TunQueue;
use linen_dataplane::io::xsk::XskQueue;
use tracing::{info, warn};

use super::{handover, xdp_node, BoxError};

/// Releases a hand-over that cannot be used: removes every descriptor from the store (the
/// description first, the TAP queues last), closes this process's copies, and waits until the
/// old `linen.1` is gone — the store has then closed its copies too, so the program is off
/// the underlay and the VXLAN port is free again.
pub(super) async fn release(store: Option<&Store>, h: Handover, kernel: &Kernel) {
    let names = h.names();
    drop(h);
    release_names(store, names, kernel).await;
}

/// Removes the descriptors `names` from the store, in reverse order (see [`release`]), and waits
/// for the old `linen.1` to go.
pub(super) async fn release_names(store: Option<&Store>, mut names: Vec<String>, kernel: &Kernel) {
    names.reverse();
    if let Some(s) = store {
        s.remove_all(&names);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        match kernel.link_by_name(OVERLAY_DEV).await {
            Ok(None) | Err(_) => return,
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    warn!("the released {OVERLAY_DEV} is still there after 3 s; it is removed as a stale device");
}

/// Takes the AF_XDP datapath's descriptors out of `h` and takes them over.
pub(super) fn adopt_xdp(
    h: &mut Handover,
    xcfg: &XdpNodeConfig,
) -> Result<(xdp_node::XdpDevices, Vec<XskQueue>), BoxError> {
    let geometry = h.description().umem.ok_or("the hand-over has no UMEM geometry")?;
    let mut queues = Vec::new();
    for i in 0..xcfg.queues {
        queues.push(HandedQueue {
            tap: h.take(&handover::tap_name(i))?,
            xsk: h.take(&handover::xsk_name(i))?,
            umem: h.take(&handover::umem_name(i))?,
        });
    }
    let link = h.take(handover::XDP_LINK)?;
    Ok(xdp_node::adopt(xcfg, link, queues, &geometry)?)
}

/// Takes the TAP datapath's descriptors out of `h` and takes them over.
pub(super) fn adopt_tap(h: &mut Handover, cfg: &TapConfig) -> Result<TapQueue, BoxError> {
    let tun = TunQueue::adopt(h.take(&handover::tap_name(0))?, OVERLAY_DEV)?;
    Ok(TapQueue::adopt(cfg, tun, h.take(handover::UDP)?)?)
}

/// Stores a new datapath's descriptors, then the peer list and the description (last: it
/// makes the hand-over complete). `None` when the state files cannot be made.
pub(super) fn store_datapath(
    store: &mut Store,
    description: &Description,
    fds: &[(String, std::os::fd::BorrowedFd<'_>)],
) -> Option<StateFiles> {
    let state = match StateFiles::new()
        .and_then(|st| st.write_description(description).map(|()| st))
    {
        Ok(st) => st,
        Err(e) => {
            warn!(error = %e, "cannot create the hand-over's memory files; a restart rebuilds the datapath");
            store.set_intact(false);
            return None;
        }
    };
    for (name, fd) in fds {
        store.push(name, *fd);
    }
    store.push(handover::PEERS, state.peers_fd());
    store.push(handover::DESCRIPTION, state.description_fd());
    info!(
        descriptors = fds.len() + 2,
        complete = store.intact(),
        "datapath stored with the service manager for the next start"
    );
    Some(state)
}

/// Rewrites the stored peer list (the next start routes with it until etcd answers).
pub(super) fn store_peers(state: &StateFiles, peers: &[RemoteNode]) {
    if let Err(e) = state.write_peers(peers) {
        warn!(error = %e, "cannot store the peer list; a restart waits for etcd's listing to route");
    }
}
