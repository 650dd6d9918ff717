//! TAP mode: a persistent TAP device named `CNI_IFNAME` in the pod's namespace, for VM-based
//! sandboxes (the hypervisor opens the TAP by name and the guest owns the pod's address).
//!
//! ```text
//!  pod netns:  [guest] ~ TAP <ifname> ──┐
//!                                       ├─ bridge <ifname>-br (no address)
//!              veth <ifname>-ln ────────┘
//!  node netns:   └── veth lnv<hash> ── cni0 (gateway) ── node routing ── overlay
//! ```
//!
//! The guest's frames cross the pod-local bridge and the veth onto the node's `cni0`, so the
//! node routes them exactly like a bridge-mode pod's. No address is put in the pod namespace:
//! the result tells the sandbox which address, gateway and routes the guest must use.

use std::fs::File;

use crate::error::{CniError, Code};
use crate::netlink::{self, Link, Netlink};

/// Name of the veth end inside the pod that carries a TAP attachment's traffic.
pub fn veth_name(ifname: &str) -> String {
    format!("{}-ln", ifname.chars().take(12).collect::<String>())
}

/// Name of the pod-local bridge joining the TAP and the veth end.
pub fn bridge_name(ifname: &str) -> String {
    format!("{}-br", ifname.chars().take(12).collect::<String>())
}

/// Creates the persistent TAP `ifname` inside `netns` with `mtu`. The creating thread enters
/// the namespace (TUNSETIFF creates the device in the caller's namespace) and closes its file
/// descriptor before it ends; the device stays because it is persistent.
fn create_tap(netns: &File, ifname: &str, mtu: u32) -> Result<(), CniError> {
    let name = ifname.to_string();
    let created = netlink::in_netns(netns, move || -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        let _guard = rt.enter();
        let mtu = i32::try_from(mtu).unwrap_or(1500);
        let tuns = tokio_tun::Tun::builder()
            .name(&name)
            .tap()
            .persist()
            .mtu(mtu)
            .build()
            .map_err(std::io::Error::other)?;
        drop(tuns);
        Ok(())
    })?;
    created.map_err(|e| {
        CniError::new(Code::Netlink, format!("cannot create TAP device {ifname} in the pod: {e}"))
    })
}

/// Wires a TAP attachment inside the pod: TAP `ifname`, bridge `<ifname>-br`, and the veth end
/// `veth` (already moved into the pod) enslaved to it. Returns the TAP's link. On failure it
/// removes what it created (and only that).
///
/// # Errors
/// Code 7 when the pod already has an interface named `ifname` or `<ifname>-br`, code 100 on
/// netlink or TUN failures.
pub fn wire(
    pod_nl: &mut Netlink,
    netns: &File,
    ifname: &str,
    veth: &str,
    mtu: u32,
) -> Result<Link, CniError> {
    for name in [ifname.to_string(), bridge_name(ifname)] {
        if pod_nl.link_by_name(&name)?.is_some() {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("cannot wire TAP {ifname}: the pod already has an interface {name}"),
            ));
        }
    }
    let wired = wire_new(pod_nl, netns, ifname, veth, mtu);
    if wired.is_err() {
        unwire(netns, ifname);
    }
    wired
}

fn wire_new(
    pod_nl: &mut Netlink,
    netns: &File,
    ifname: &str,
    veth: &str,
    mtu: u32,
) -> Result<Link, CniError> {
    create_tap(netns, ifname, mtu)?;
    let br_name = bridge_name(ifname);
    pod_nl.add_bridge(&br_name)?;
    let br = pod_nl
        .link_by_name(&br_name)?
        .ok_or_else(|| CniError::new(Code::Netlink, format!("{br_name} vanished")))?;
    pod_nl.set_up(br.index)?;
    for name in [ifname, veth] {
        let l = pod_nl
            .link_by_name(name)?
            .ok_or_else(|| CniError::new(Code::Netlink, format!("{name} not found in the pod")))?;
        // No hairpin inside the pod either: a broadcast would bounce between the two bridges.
        pod_nl.attach_to_bridge(l.index, br.index, false)?;
    }
    pod_nl
        .link_by_name(ifname)?
        .ok_or_else(|| CniError::new(Code::Netlink, format!("TAP {ifname} vanished")))
}

/// Removes the TAP and the pod-local bridge from the pod (best effort: the pod may be gone).
pub fn unwire(netns: &File, ifname: &str) {
    let Ok(mut nl) = Netlink::open_in(netns) else { return };
    for name in [ifname.to_string(), bridge_name(ifname)] {
        if let Ok(Some(l)) = nl.link_by_name(&name) {
            let _ = nl.del_link(l.index);
        }
    }
}

/// CHECK for a TAP attachment: the TAP exists, is a TUN/TAP device and sits on its bridge.
///
/// # Errors
/// Code 103 naming what is wrong.
pub fn check(pod_nl: &mut Netlink, ifname: &str) -> Result<Link, CniError> {
    let failed = |m: String| CniError::new(Code::CheckFailed, m);
    let tap = pod_nl
        .link_by_name(ifname)?
        .ok_or_else(|| failed(format!("TAP {ifname} is missing from the pod")))?;
    if tap.kind.as_deref() != Some("tun") {
        return Err(failed(format!("{ifname} is not a TAP device")));
    }
    let br = pod_nl
        .link_by_name(&bridge_name(ifname))?
        .ok_or_else(|| failed(format!("bridge {} is missing from the pod", bridge_name(ifname))))?;
    if tap.master != Some(br.index) {
        return Err(failed(format!("TAP {ifname} is not on {}", bridge_name(ifname))));
    }
    Ok(tap)
}
