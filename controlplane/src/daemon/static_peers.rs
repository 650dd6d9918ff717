//! The static-peers file: runs a node without etcd (`linend --static-peers FILE`), for tests,
//! labs and bring-up. It says what a flannel lease would: the cluster network, this node's subnet
//! and public IP, and per peer its subnet, public IP and VtepMAC.
//! This module also builds the mode's routes and applies a re-read file on SIGHUP, with the etcd
//! mode's route and overlay builders.
//!
//! ```json
//! {
//!   "network": "10.244.0.0/16",
//!   "subnet": "10.244.1.0/24",
//!   "public_ip": "192.168.77.1",
//!   "vtep_mac": "2a:a9:df:4e:cb:b8",
//!   "peers": [
//!     { "subnet": "10.244.2.0/24", "public_ip": "192.168.77.2", "vtep_mac": "26:69:c7:3a:5b:8c" }
//!   ]
//! }
//! ```
//!
//! `public_ip` and `vtep_mac` of the node itself are optional: without `public_ip` the underlay
//! address is found from `--iface`/`--public-ip` or the default route; without `vtep_mac` the
//! overlay device keeps the MAC the kernel gave it (logged at start, so peers can be told).
//! Unknown keys are rejected, so a typo is an error instead of a silently ignored setting.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use linen_dataplane::pipeline::{Config, Routes};
use linen_dataplane::route::Published;
use linen_dataplane::wire::MacAddr;
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::kernel::{Kernel, OVERLAY_DEV};
use crate::node;

/// A static peer: one remote node, the same type the etcd mode builds its routes from.
pub use crate::node::RemoteNode as StaticPeer;

/// A parsed and validated static-peers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    /// The cluster network (`FLANNEL_NETWORK`).
    pub network: Ipv4Net,
    /// This node's pod subnet.
    pub subnet: Ipv4Net,
    /// This node's public IP, if the file fixes it.
    pub public_ip: Option<Ipv4Addr>,
    /// The MAC to give the overlay device, if the file fixes it.
    pub vtep_mac: Option<[u8; 6]>,
    /// The other nodes.
    pub peers: Vec<StaticPeer>,
}

/// Why a static-peers file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum StaticPeersError {
    /// The file could not be read.
    #[error("cannot read static-peers file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("static-peers file {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// The content is inconsistent.
    #[error("static-peers file {path}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the entry.
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    subnet: Ipv4Net,
    public_ip: Ipv4Addr,
    vtep_mac: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    network: Ipv4Net,
    subnet: Ipv4Net,
    #[serde(default)]
    public_ip: Option<Ipv4Addr>,
    #[serde(default)]
    vtep_mac: Option<String>,
    #[serde(default)]
    peers: Vec<RawPeer>,
}

impl StaticNode {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`StaticPeersError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<StaticNode, StaticPeersError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| StaticPeersError::Read { path: p.clone(), source })?;
        StaticNode::parse(&text).map_err(|e| match e {
            StaticPeersError::Parse { source, .. } => StaticPeersError::Parse { path: p, source },
            StaticPeersError::Invalid { problem, .. } => {
                StaticPeersError::Invalid { path: p, problem }
            }
            other => other,
        })
    }

    /// Parses and validates the JSON text of a static-peers file.
    ///
    /// # Errors
    /// [`StaticPeersError::Parse`] or [`StaticPeersError::Invalid`] (with an empty path).
    pub fn parse(text: &str) -> Result<StaticNode, StaticPeersError> {
        let raw: RawNode = serde_json::from_str(text)
            .map_err(|source| StaticPeersError::Parse { path: String::new(), source })?;
        let invalid = |problem: String| StaticPeersError::Invalid { path: String::new(), problem };
        let mac = |s: &str, whose: &str| {
            s.parse::<MacAddr>()
                .map(<[u8; 6]>::from)
                .map_err(|e| invalid(format!("{whose}: vtep_mac {s:?} is {e}")))
        };
        let check_subnet = |s: Ipv4Net, whose: &str| {
            if s != s.trunc() {
                return Err(invalid(format!("{whose}: subnet {s} has host bits set")));
            }
            if s.prefix_len() > 30 {
                return Err(invalid(format!("{whose}: subnet {s} is smaller than /30")));
            }
            if !raw.network.contains(&s) {
                return Err(invalid(format!(
                    "{whose}: subnet {s} is outside the network {}",
                    raw.network
                )));
            }
            Ok(())
        };
        check_subnet(raw.subnet, "this node")?;
        let vtep_mac = raw.vtep_mac.as_deref().map(|m| mac(m, "this node")).transpose()?;
        let mut peers: Vec<StaticPeer> = Vec::with_capacity(raw.peers.len());
        for (i, rp) in raw.peers.iter().enumerate() {
            let whose = format!("peer {i} ({})", rp.subnet);
            check_subnet(rp.subnet, &whose)?;
            if rp.subnet.contains(&raw.subnet) || raw.subnet.contains(&rp.subnet) {
                return Err(invalid(format!(
                    "{whose}: overlaps this node's subnet {}",
                    raw.subnet
                )));
            }
            if let Some(other) = peers
                .iter()
                .find(|p| p.subnet.contains(&rp.subnet) || rp.subnet.contains(&p.subnet))
            {
                return Err(invalid(format!("{whose}: overlaps peer subnet {}", other.subnet)));
            }
            if Some(rp.public_ip) == raw.public_ip {
                return Err(invalid(format!(
                    "{whose}: public_ip {} is this node's own",
                    rp.public_ip
                )));
            }
            peers.push(StaticPeer {
                subnet: rp.subnet,
                public_ip: rp.public_ip,
                vtep_mac: mac(&rp.vtep_mac, &whose)?,
            });
        }
        Ok(StaticNode {
            network: raw.network,
            subnet: raw.subnet,
            public_ip: raw.public_ip,
            vtep_mac,
            peers,
        })
    }
}

// The static-peers mode's routes and SIGHUP reload, on the etcd mode's builders.

/// The route snapshot of a static node's peers, built as the etcd mode builds its own.
pub(super) async fn static_routes(
    kernel: &Kernel,
    cfg: &Config,
    ifindex: u32,
    node: &StaticNode,
) -> Routes {
    node::build_routes(kernel, cfg, ifindex, &node.peers, &mut node::NextHopCache::new()).await
}

/// SIGHUP: re-reads the static-peers file and applies peer changes (added, removed, changed
/// VtepMAC or public IP) to the kernel and the route table without restarting. Changes to the
/// node itself (network, subnet, public IP, VtepMAC) need a restart and are refused.
pub(super) async fn reload(
    path: &Path,
    kernel: &Kernel,
    cfg: &Config,
    ifindex: u32,
    mtu: u32,
    node: &mut StaticNode,
    routes: &Published<Routes>,
) {
    let new = match StaticNode::load(path) {
        Ok(n) => n,
        Err(e) => {
            warn!("SIGHUP: {e}; keeping the running peers");
            return;
        }
    };
    let own_changed = new.network != node.network
        || new.subnet != node.subnet
        || (new.public_ip.is_some() && new.public_ip != node.public_ip)
        || (new.vtep_mac.is_some() && new.vtep_mac != node.vtep_mac);
    if own_changed {
        warn!(
            "SIGHUP: {} changes this node's network, subnet, public IP or VtepMAC; that needs a restart. Keeping the running configuration",
            path.display()
        );
        return;
    }
    routes.publish(static_routes(kernel, cfg, ifindex, &new).await);
    match kernel.apply_overlay(OVERLAY_DEV, &node::overlay_state(new.subnet, mtu, &new.peers)).await
    {
        Ok(()) => info!(peers = new.peers.len(), "SIGHUP: peers reloaded"),
        Err(e) => error!("SIGHUP: reprogramming {OVERLAY_DEV} failed: {e}"),
    }
    *node = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "network": "10.244.0.0/16", "subnet": "10.244.1.0/24", "public_ip": "192.168.77.1",
        "vtep_mac": "2a:a9:df:4e:cb:b8",
        "peers": [{"subnet": "10.244.2.0/24", "public_ip": "192.168.77.2", "vtep_mac": "26:69:c7:3a:5b:8c"}]
    }"#;

    #[test]
    fn parses_the_documented_example() {
        let n = StaticNode::parse(GOOD).unwrap();
        assert_eq!(n.subnet, "10.244.1.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(n.public_ip, Some(Ipv4Addr::new(192, 168, 77, 1)));
        assert_eq!(n.vtep_mac, Some([0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8]));
        assert_eq!(n.peers.len(), 1);
        assert_eq!(n.peers[0].vtep_mac, [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c]);
    }

    #[test]
    fn minimal_file() {
        let n = StaticNode::parse(r#"{"network":"10.0.0.0/8","subnet":"10.1.0.0/24"}"#).unwrap();
        assert!(n.peers.is_empty() && n.public_ip.is_none() && n.vtep_mac.is_none());
    }

    #[test]
    fn rejects_bad_files_with_a_reason() {
        let cases = [
            (GOOD.replace("26:69:c7:3a:5b:8c", "26:69:c7:3a:5b"), "not a MAC"),
            (GOOD.replace("26:69:c7:3a:5b:8c", "26:69:c7:3a:5b:+c"), "not a MAC"),
            (GOOD.replace("26:69:c7:3a:5b:8c", "26:69:c7:3a:+b:8c"), "not a MAC"),
            (GOOD.replace("10.244.2.0/24", "10.244.1.0/25"), "overlaps this node"),
            (GOOD.replace("10.244.2.0/24", "10.245.2.0/24"), "outside the network"),
            (GOOD.replace("10.244.2.0/24", "10.244.2.1/24"), "host bits"),
            (GOOD.replace("192.168.77.2", "192.168.77.1"), "this node's own"),
        ];
        for (text, want) in cases {
            let e = StaticNode::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
        assert!(matches!(
            StaticNode::parse(&GOOD.replace("\"peers\"", "\"peerz\"")),
            Err(StaticPeersError::Parse { .. })
        ));
        assert!(matches!(StaticNode::parse("{"), Err(StaticPeersError::Parse { .. })));
    }
}
