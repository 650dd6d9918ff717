//! The underlay settings netbench measures over, the same for every datapath, and the offload
//! features it reads back from each node so the report can say exactly what each side ran with.
//!
//! - [`Underlay::Wire`] (every measurement of the default run): the underlay veths run with
//!   `ethtool -K eth0 tx off`, as a real wire completes no checksums (DESIGN §6); that also turns
//!   TSO and GSO-by-device off. veth's GRO stays as the kernel creates it (off).
//! - [`Underlay::Offloads`] (extra TCP runs): veth's transmit offloads stay on and
//!   `ethtool -K eth0 gro on` turns GRO on at both ends, so large UDP-encapsulated segments can
//!   cross and be merged on receive: the kernel's VXLAN uses UDP-tunnel GSO and GRO, linen's
//!   fallback `UDP_SEGMENT` and `UDP_GRO`.
//! - [`Underlay::Gro`] (extra TCP runs): `tx off` as in `Wire`, and GRO on at both ends. A
//!   physical NIC's driver hands every received packet to the kernel's GRO, on by default
//!   whatever the hardware offloads; veth is the exception (GRO off until asked for). Segments
//!   still cross the wire one by one and with software checksums, but the receiver merges them:
//!   the kernel's VXLAN through UDP-tunnel GRO, linen's fallback through `UDP_GRO`.

use linen_testbed::cluster::{Cluster, Overlay};
use serde_json::{Map, Value};

/// The features read back from each device (`ethtool -k` names).
pub const FEATURES: [&str; 8] = [
    "tx-checksumming",
    "scatter-gather",
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "rx-udp-gro-forwarding",
    "tx-udp_tnl-segmentation",
    "rx-gro-list",
];

/// How the underlay is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// `tx off` on the underlay veths, GRO off.
    Wire,
    /// veth's transmit offloads on, GRO on at both ends.
    Offloads,
    /// `tx off` on the underlay veths, GRO on at both ends.
    Gro,
}

impl Underlay {
    /// Every underlay, the default first.
    pub const ALL: [Underlay; 3] = [Underlay::Wire, Underlay::Offloads, Underlay::Gro];
    /// The underlays of the extra TCP runs, each on a testbed of its own.
    pub const EXTRA: [Underlay; 2] = [Underlay::Offloads, Underlay::Gro];

    /// The suffix of the JSON keys measured over this underlay (`""` for the default).
    pub fn suffix(self) -> &'static str {
        match self {
            Underlay::Wire => "",
            Underlay::Offloads => "_underlay_offloads",
            Underlay::Gro => "_underlay_gro",
        }
    }

    /// The name used in the JSON's `underlay` object.
    pub fn name(self) -> &'static str {
        match self {
            Underlay::Wire => "wire",
            Underlay::Offloads => "offloads",
            Underlay::Gro => "gro",
        }
    }

    /// What the report's row labels add for this underlay (empty for the default).
    pub fn label(self) -> &'static str {
        match self {
            Underlay::Wire => "",
            Underlay::Offloads => ", underlay offloads on",
            Underlay::Gro => ", underlay GRO on",
        }
    }

    /// Whether the cluster builder turns transmit checksum offload off.
    pub fn tx_off(self) -> bool {
        self != Underlay::Offloads
    }

    /// What runs in each node's namespace once the cluster is up.
    pub fn setup_script(self) -> Option<&'static str> {
        match self {
            Underlay::Wire => None,
            Underlay::Offloads | Underlay::Gro => Some("ethtool -K eth0 gro on"),
        }
    }

    /// What the settings are, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Underlay::Wire => "underlay veths with `ethtool -K eth0 tx off` (no checksum, TSO or GSO offload by the device), GRO off (veth's default)",
            Underlay::Offloads => "underlay veths with their transmit offloads on (checksum, TSO, GSO, UDP-tunnel segmentation) and `ethtool -K eth0 gro on` on both",
            Underlay::Gro => "underlay veths with `ethtool -K eth0 tx off` as in `wire`, and `ethtool -K eth0 gro on` on both (a NIC without checksum offload whose driver runs the kernel's GRO, as NIC drivers do by default)",
        }
    }

    /// Applies [`Underlay::setup_script`] on every node.
    ///
    /// # Errors
    /// The command failed on a node (its stderr).
    pub fn apply(self, c: &Cluster) -> Result<(), String> {
        let Some(script) = self.setup_script() else { return Ok(()) };
        for n in c.nodes() {
            let out = n.host.sh_output(script);
            if !out.status.success() {
                return Err(format!(
                    "`{script}` on {}: {}",
                    n.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }
}

/// The overlay device of a node: `flannel.1` for the kernel's VXLAN, else `linen.1`.
pub fn overlay_device(o: &Overlay) -> &'static str {
    match o {
        Overlay::KernelVxlan => "flannel.1",
        Overlay::Linen { .. } => "linen.1",
    }
}

/// The [`FEATURES`] of `ethtool -k` output: `{name: "on" | "off" | "on [fixed]" …}`.
pub fn parse_features(text: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once(':') else { continue };
        if FEATURES.contains(&name) {
            m.insert(name.to_string(), Value::from(value.trim()));
        }
    }
    m
}

/// The features of every node's underlay and overlay device:
/// `{"n1": {"eth0": {…}, "flannel.1": {…}}, …}`.
pub fn read_features(c: &Cluster) -> Value {
    let mut nodes = Map::new();
    for n in c.nodes() {
        let mut devs = Map::new();
        for dev in ["eth0", overlay_device(&n.overlay)] {
            let out = n.host.sh_output(&format!("ethtool -k {dev}"));
            let text = String::from_utf8_lossy(&out.stdout);
            devs.insert(dev.to_string(), Value::Object(parse_features(&text)));
        }
        nodes.insert(n.name.clone(), Value::Object(devs));
    }
    Value::Object(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_parse() {
        let text = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: off\n\
                    \ttx-checksum-ipv4: off [fixed]\nscatter-gather: on\n\
                    tcp-segmentation-offload: off\n\ttx-tcp-segmentation: off [requested on]\n\
                    generic-receive-offload: on\nrx-udp-gro-forwarding: off\n\
                    tx-udp_tnl-segmentation: on [fixed]\n";
        let m = parse_features(text);
        assert_eq!(m["tx-checksumming"], "off");
        assert_eq!(m["generic-receive-offload"], "on");
        assert_eq!(m["tx-udp_tnl-segmentation"], "on [fixed]");
        assert!(!m.contains_key("rx-checksumming") && !m.contains_key("tx-tcp-segmentation"));
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn variants() {
        assert_eq!(Underlay::Wire.suffix(), "");
        assert!(Underlay::Wire.tx_off() && !Underlay::Offloads.tx_off());
        assert_eq!(Underlay::Offloads.setup_script(), Some("ethtool -K eth0 gro on"));
        assert!(Underlay::Gro.tx_off());
        assert_eq!(Underlay::Gro.setup_script(), Some("ethtool -K eth0 gro on"));
        assert_eq!(Underlay::Gro.suffix(), "_underlay_gro");
        assert_eq!(overlay_device(&Overlay::KernelVxlan), "flannel.1");
        assert_eq!(overlay_device(&Overlay::linen("xdp")), "linen.1");
    }
}
