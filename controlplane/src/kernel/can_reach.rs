//! `linend --can-reach IP`: find the underlay by asking the kernel how it would reach `IP` (as
//! Calico's `can-reach=` autodetection does). The kernel's route look-up (`ip route get IP`)
//! names the output device and the source address it would pick; those become `--iface` and
//! `--public-ip`. Point it at something every node reaches over the underlay — etcd, the
//! underlay gateway, another node — and multi-homed nodes pick the right NIC without per-node
//! flags.
//!
//! The answer is refused when `IP` is one of this node's own addresses (the route goes through
//! `lo`, which is no underlay) or when the kernel's source address is not an address of the
//! output device (source routing or an address on a dummy device: then say `--iface` and
//! `--public-ip` explicitly). Nothing here changes the kernel.

use std::net::Ipv4Addr;

use crate::kernel::{Kernel, KernelError, RouteLookup, Underlay};

/// Why `--can-reach` found no underlay.
#[derive(Debug, thiserror::Error)]
pub enum CanReachError {
    /// The kernel has no route to the target, or the look-up failed.
    #[error("--can-reach {target}: the kernel cannot route to it: {source}")]
    Lookup {
        /// The `--can-reach` address.
        target: Ipv4Addr,
        /// The look-up error.
        #[source]
        source: KernelError,
    },
    /// The target is an address of this node.
    #[error("--can-reach {target}: that is an address of this node; give the address of another host on the underlay (etcd, the gateway, another node)")]
    Local {
        /// The `--can-reach` address.
        target: Ipv4Addr,
    },
    /// The kernel's answer lacks the device or the source address.
    #[error(
        "--can-reach {target}: the kernel's route names no {missing}; pass --iface and --public-ip"
    )]
    Incomplete {
        /// The `--can-reach` address.
        target: Ipv4Addr,
        /// `"output device"` or `"source address"`.
        missing: &'static str,
    },
    /// The device and source address the kernel picked do not form an underlay.
    #[error("--can-reach {target}: the kernel would send from {source_ip} on device #{oif}, but {problem}; pass --iface and --public-ip")]
    NotAnUnderlay {
        /// The `--can-reach` address.
        target: Ipv4Addr,
        /// The source address picked.
        source_ip: Ipv4Addr,
        /// The output device's index.
        oif: u32,
        /// What is wrong.
        problem: String,
    },
}

/// The device index and source address to use, from the kernel's route look-up for `target`.
///
/// # Errors
/// [`CanReachError::Local`] for one of our own addresses, [`CanReachError::Incomplete`] when the
/// answer lacks the device or the source.
pub fn choose(target: Ipv4Addr, lookup: &RouteLookup) -> Result<(u32, Ipv4Addr), CanReachError> {
    if lookup.local {
        return Err(CanReachError::Local { target });
    }
    let oif = lookup.oif.ok_or(CanReachError::Incomplete { target, missing: "output device" })?;
    let src =
        lookup.source.ok_or(CanReachError::Incomplete { target, missing: "source address" })?;
    Ok((oif, src))
}

/// The underlay (device and public IP) the kernel would use to reach `target`, and the gateway
/// on the way if `target` is not on-link.
///
/// # Errors
/// A [`CanReachError`] saying what is missing.
pub async fn detect(
    kernel: &Kernel,
    target: Ipv4Addr,
) -> Result<(Underlay, Option<Ipv4Addr>), CanReachError> {
    let lookup = kernel
        .route_get(target)
        .await
        .map_err(|source| CanReachError::Lookup { target, source })?;
    let (oif, source_ip) = choose(target, &lookup)?;
    let not_underlay =
        |problem: String| CanReachError::NotAnUnderlay { target, source_ip, oif, problem };
    let link = kernel.link_by_index(oif).await.map_err(|e| not_underlay(e.to_string()))?;
    if link.name == "lo" {
        return Err(CanReachError::Local { target });
    }
    let underlay = kernel
        .underlay(Some(&link.name), Some(source_ip))
        .await
        .map_err(|e| not_underlay(e.to_string()))?;
    Ok((underlay, lookup.gateway))
}

#[cfg(test)]
mod tests {
    use super::*;
    use linen_testbed::Testbed;

    const T: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 250);

    #[test]
    fn choose_takes_device_and_source() {
        let l = RouteLookup {
            oif: Some(3),
            source: Some(Ipv4Addr::new(192, 168, 77, 1)),
            gateway: None,
            local: false,
        };
        assert_eq!(choose(T, &l).unwrap(), (3, Ipv4Addr::new(192, 168, 77, 1)));
        let err = choose(T, &RouteLookup { local: true, ..l }).unwrap_err();
        assert!(err.to_string().contains("address of this node"), "{err}");
        let err = choose(T, &RouteLookup { source: None, ..l }).unwrap_err();
        assert!(err.to_string().contains("no source address"), "{err}");
        let err = choose(T, &RouteLookup { oif: None, ..l }).unwrap_err();
        assert!(err.to_string().contains("no output device"), "{err}");
    }

    /// A node with two NICs: each target picks the NIC and address it is reached through; a
    /// local address, an unroutable one and a source on another device are clear errors.
    #[test]
    fn detect_picks_the_interface_towards_the_target() {
        let mut tb = Testbed::new("canr");
        let ns = tb.netns("n");
        ns.sh("ip link add eth0 type veth peer name eth0p
             ip link add eth1 type veth peer name eth1p
             for l in eth0 eth0p eth1 eth1p; do ip link set $l up; done
             ip addr add 192.168.77.1/24 dev eth0
             ip addr add 172.31.9.1/24 dev eth1
             ip addr add 172.31.9.7/24 dev eth1
             ip route add 198.51.100.0/24 via 172.31.9.254 dev eth1 onlink
             ip route add 203.0.113.0/24 via 192.168.77.254 dev eth0 src 172.31.9.1 onlink");
        let path = ns.path();
        let results = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let k = Kernel::connect().expect("rtnetlink");
                let mut out = Vec::new();
                for t in
                    ["192.168.77.250", "198.51.100.9", "192.168.77.1", "10.1.2.3", "203.0.113.5"]
                {
                    let t: Ipv4Addr = t.parse().unwrap();
                    out.push(
                        detect(&k, t)
                            .await
                            .map(|(u, gw)| (u.link.name, u.ip, gw))
                            .map_err(|e| e.to_string()),
                    );
                }
                out
            })
        })
        .join()
        .expect("netns thread");
        assert_eq!(results[0], Ok(("eth0".to_string(), Ipv4Addr::new(192, 168, 77, 1), None)));
        assert_eq!(
            results[1],
            Ok((
                "eth1".to_string(),
                Ipv4Addr::new(172, 31, 9, 1),
                Some(Ipv4Addr::new(172, 31, 9, 254))
            ))
        );
        let local = results[2].as_ref().unwrap_err();
        assert!(local.contains("address of this node"), "{local}");
        let unroutable = results[3].as_ref().unwrap_err();
        assert!(unroutable.contains("cannot route"), "{unroutable}");
        let elsewhere = results[4].as_ref().unwrap_err();
        assert!(
            elsewhere.contains("172.31.9.1") && elsewhere.contains("not an address of eth0"),
            "{elsewhere}"
        );
    }
}
