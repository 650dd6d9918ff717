//! Restarts without a gap: what linend keeps in the service manager's file-descriptor store
//! (systemd's `FileDescriptorStoreMax=`, see `linen_dataplane::io::fdstore`) and how the next
//! process takes it back.
//!
//! Right after creating its datapath, linend stores the descriptors that carry the datapath's
//! kernel state, one per name:
//!
//! | name | what | keeps across a restart |
//! |---|---|---|
//! | `tap-<i>` | queue `i` of `linen.1` | the device with its MAC, address, routes and neighbours; packets the kernel queues for it |
//! | `xsk-<i>` | AF_XDP socket on underlay queue `i` (`--datapath xdp`) | its binding, UMEM registration and rings, with frames received meanwhile |
//! | `umem-<i>` | that socket's UMEM frames, a memory file | the frames the rings point at |
//! | `xdp-link` | the underlay program's bpf_link | the program on the NIC, steering VXLAN into the sockets |
//! | `udp-0` | the VXLAN socket bound to the VTEP (`--datapath tap`) | datagrams received meanwhile |
//! | `peers` | a memory file: the peers last routed to | the route table until etcd answers |
//! | `handover` | a memory file: a [`Description`] of the rest | what the next process needs to map the rings |
//!
//! `handover` is stored last: a store without it (a process that died half-way) is not trusted
//! and is cleared. A process that finds a complete hand-over matching its configuration
//! ([`Handover::check`]) takes every descriptor over instead of creating anything; otherwise it
//! removes them all from the store (the kernel then deletes the old `linen.1` and detaches the
//! old program) and builds afresh.
//!
//! While no process runs, the kernel keeps forwarding state and queues: frames for the pods
//! wait in the TAP queues, VXLAN from the underlay waits in the AF_XDP RX rings or the UDP
//! socket, and the next process forwards them. Nothing here needs systemd itself: tests run
//! linend under a small service manager that speaks the same protocol.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ipnet::Ipv4Net;
use linen_dataplane::io::fdstore::{self, Notifier};
use linen_dataplane::wire::MacAddr;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::node::RemoteNode;

/// Name of the stored description (stored last).
pub const DESCRIPTION: &str = "handover";
/// Name of the stored peer list.
pub const PEERS: &str = "peers";
/// Name of the stored bpf_link of the underlay program.
pub const XDP_LINK: &str = "xdp-link";
/// The description's format; a process refuses a hand-over of another format and builds afresh.
pub const FORMAT: u32 = 1;
/// Largest description or peer list read back (a corrupt store must not exhaust memory).
const MAX_FILE: usize = 64 << 20;

/// Name of the stored TAP queue `i`.
pub fn tap_name(i: u32) -> String {
    format!("tap-{i}")
}

/// Name of the stored AF_XDP socket of queue `i`.
pub fn xsk_name(i: u32) -> String {
    format!("xsk-{i}")
}

/// Name of the stored UMEM frames of queue `i`.
pub fn umem_name(i: u32) -> String {
    format!("umem-{i}")
}

/// Name of the stored VXLAN socket of the TAP datapath.
pub const UDP: &str = "udp-0";

/// Which datapath a hand-over carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatapathKind {
    /// AF_XDP on the underlay, `linen.1` a multi-queue TAP.
    Xdp,
    /// The TAP device and a UDP socket.
    Tap,
}

impl DatapathKind {
    /// `xdp` or `tap`.
    pub fn name(self) -> &'static str {
        match self {
            DatapathKind::Xdp => "xdp",
            DatapathKind::Tap => "tap",
        }
    }
}

/// Geometry of each queue's UMEM (the kernel does not report it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UmemGeometry {
    /// Frames.
    pub frame_count: u32,
    /// Bytes per frame.
    pub frame_size: u32,
    /// linen's headroom per frame.
    pub headroom: u32,
    /// Fill ring entries.
    pub fill_size: u32,
    /// Completion ring entries.
    pub comp_size: u32,
    /// RX ring entries.
    pub rx_size: u32,
    /// TX ring entries.
    pub tx_size: u32,
}

/// What a hand-over holds, stored as JSON in the `handover` memory file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// [`FORMAT`].
    pub format: u32,
    /// The linend version that stored it (for logs).
    pub version: String,
    /// The datapath.
    pub datapath: DatapathKind,
    /// The overlay device's name.
    pub device: String,
    /// The underlay device's name and index.
    pub underlay: String,
    /// The underlay device's index.
    pub underlay_ifindex: u32,
    /// The local VTEP address.
    pub vtep: Ipv4Addr,
    /// The VXLAN port.
    pub port: u16,
    /// Queues (workers).
    pub queues: u32,
    /// AF_XDP: the UMEM and ring geometry of every queue.
    #[serde(default)]
    pub umem: Option<UmemGeometry>,
    /// The VNI the datapath ran with (etcd mode takes it from the network config).
    #[serde(default)]
    pub vni: Option<u32>,
    /// The overlay MTU it ran with.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The names of the stored descriptors besides this one, in the order they were stored.
    pub fds: Vec<String>,
}

/// What the starting process wants; a hand-over that differs is not taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `None` for `--datapath auto` (either will do).
    pub datapath: Option<DatapathKind>,
    /// The overlay device's name.
    pub device: String,
    /// The underlay device.
    pub underlay: String,
    /// Its index now.
    pub underlay_ifindex: u32,
    /// The VTEP address.
    pub vtep: Ipv4Addr,
    /// The VXLAN port.
    pub port: u16,
    /// AF_XDP queues (`--queues`); the TAP datapath has one.
    pub queues: u32,
}

impl Description {
    /// The VNI, VXLAN port and overlay MTU the datapath ran with, when the description has them:
    /// what an etcd-mode start forwards with while etcd does not answer.
    pub fn vxlan_settings(&self) -> Option<(u32, u16, u32)> {
        Some((self.vni?, self.port, self.mtu?))
    }

    /// Why this hand-over cannot serve `want`, or `None` when it can.
    pub fn mismatch(&self, want: &Wanted) -> Option<String> {
        if self.format != FORMAT {
            return Some(format!("hand-over format {} (this linend reads {FORMAT})", self.format));
        }
        if want.datapath.is_some_and(|d| d != self.datapath) {
            return Some(format!("datapath {} handed over", self.datapath.name()));
        }
        if self.device != want.device {
            return Some(format!("overlay device {} handed over", self.device));
        }
        if self.underlay != want.underlay || self.underlay_ifindex != want.underlay_ifindex {
            return Some(format!(
                "underlay {} (#{}) handed over, {} (#{}) wanted",
                self.underlay, self.underlay_ifindex, want.underlay, want.underlay_ifindex
            ));
        }
        if self.vtep != want.vtep || self.port != want.port {
            return Some(format!(
                "VTEP {}:{} handed over, {}:{} wanted",
                self.vtep, self.port, want.vtep, want.port
            ));
        }
        let queues = match self.datapath {
            DatapathKind::Xdp => want.queues,
            DatapathKind::Tap => 1,
        };
        if self.queues != queues {
            return Some(format!("{} queue(s) handed over, {queues} wanted", self.queues));
        }
        if self.datapath == DatapathKind::Xdp && self.umem.is_none() {
            return Some("an AF_XDP hand-over without its UMEM geometry".to_string());
        }
        None
    }

    /// The descriptor names a complete hand-over of this datapath holds (without `handover`).
    pub fn expected_fds(datapath: DatapathKind, queues: u32) -> Vec<String> {
        let mut names = Vec::new();
        match datapath {
            DatapathKind::Xdp => {
                for i in 0..queues {
                    names.extend([tap_name(i), xsk_name(i), umem_name(i)]);
                }
                names.push(XDP_LINK.to_string());
            }
            DatapathKind::Tap => names.extend([tap_name(0), UDP.to_string()]),
        }
        names.push(PEERS.to_string());
        names
    }
}

/// One peer in the stored peer list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPeer {
    /// Its pod subnet.
    pub subnet: Ipv4Net,
    /// Its public IP.
    pub public_ip: Ipv4Addr,
    /// Its VtepMAC (`aa:bb:cc:dd:ee:ff`).
    pub vtep_mac: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PeerList {
    peers: Vec<StoredPeer>,
}

/// Why a hand-over could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// Descriptors came without a readable description.
    #[error("{0}")]
    Incomplete(String),
    /// A descriptor the description lists is missing.
    #[error("the hand-over lacks the descriptor {0:?}")]
    Missing(String),
}

/// A hand-over found at start: the description and the descriptors it names.
#[derive(Debug)]
pub struct Handover {
    description: Description,
    fds: HashMap<String, OwnedFd>,
    description_fd: OwnedFd,
    peers_fd: Option<OwnedFd>,
}

/// What [`Handover::receive`] found.
#[derive(Debug)]
pub enum Received {
    /// No descriptors were passed: a first start, or the store was cleared.
    Nothing,
    /// A complete hand-over (it may still not match this configuration: [`Handover::check`]).
    Complete(Handover),
    /// Descriptors that make no complete hand-over; the names to remove from the store. The
    /// descriptors themselves are closed when this is dropped.
    Unusable {
        /// Why.
        reason: String,
        /// Every name that was passed.
        names: Vec<String>,
    },
}

impl Handover {
    /// Sorts the descriptors passed at start (`fdstore::take_listen_fds`) into a hand-over.
    pub fn receive(fds: Vec<(String, OwnedFd)>) -> Received {
        if fds.is_empty() {
            return Received::Nothing;
        }
        let names: Vec<String> = fds.iter().map(|(n, _)| n.clone()).collect();
        let unusable = |reason: String| Received::Unusable { reason, names: names.clone() };
        let mut map = HashMap::new();
        for (name, fd) in fds {
            if map.insert(name.clone(), fd).is_some() {
                return unusable(format!("the descriptor name {name:?} was passed twice"));
            }
        }
        let Some(description_fd) = map.remove(DESCRIPTION) else {
            return unusable(format!(
                "{} descriptor(s) without the {DESCRIPTION:?} description (a start that died half-way)",
                names.len()
            ));
        };
        let description: Description = match fdstore::read_all(description_fd.as_fd(), MAX_FILE)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(e) => return unusable(format!("the stored description is unreadable: {e}")),
        };
        for name in &description.fds {
            if !map.contains_key(name) {
                return unusable(HandoverError::Missing(name.clone()).to_string());
            }
        }
        if let Some(extra) = map.keys().find(|k| !description.fds.contains(k)) {
            return unusable(format!("the descriptor {extra:?} is not in the description"));
        }
        let peers_fd = map.remove(PEERS);
        Received::Complete(Handover { description, fds: map, description_fd, peers_fd })
    }

    /// The description.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Why this hand-over cannot serve `want` (see [`Description::mismatch`]), or `Ok`.
    ///
    /// # Errors
    /// The reason, for the log.
    pub fn check(&self, want: &Wanted) -> Result<(), String> {
        match self.description.mismatch(want) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Every stored name (for removing them all from the store).
    pub fn names(&self) -> Vec<String> {
        let mut n = self.description.fds.clone();
        n.push(DESCRIPTION.to_string());
        n
    }

    /// Takes the descriptor `name` out of the hand-over.
    ///
    /// # Errors
    /// [`HandoverError::Missing`].
    pub fn take(&mut self, name: &str) -> Result<OwnedFd, HandoverError> {
        self.fds.remove(name).ok_or_else(|| HandoverError::Missing(name.to_string()))
    }

    /// The peers stored last, when the list is there and readable (a process killed while
    /// rewriting it leaves one that does not parse: then `None`).
    pub fn peers(&self) -> Option<Vec<RemoteNode>> {
        let fd = self.peers_fd.as_ref()?;
        let bytes = fdstore::read_all(fd.as_fd(), MAX_FILE).ok()?;
        if bytes.is_empty() {
            return None;
        }
        let parsed = serde_json::from_slice::<PeerList>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|list| {
                list.peers
                    .into_iter()
                    .map(|p| {
                        let mac: MacAddr = p
                            .vtep_mac
                            .parse()
                            .map_err(|_| format!("bad VtepMAC {:?}", p.vtep_mac))?;
                        Ok(RemoteNode { subnet: p.subnet, public_ip: p.public_ip, vtep_mac: mac.0 })
                    })
                    .collect::<Result<Vec<_>, String>>()
            });
        match parsed {
            Ok(peers) => Some(peers),
            Err(e) => {
                warn!(error = %e, "the stored peer list is unreadable; routes come from etcd");
                None
            }
        }
    }

    /// The state files, to keep using them (they are in the store already).
    pub fn into_state(self) -> Result<StateFiles, HandoverError> {
        let peers = self.peers_fd.ok_or_else(|| HandoverError::Missing(PEERS.to_string()))?;
        Ok(StateFiles { description: self.description_fd, peers })
    }
}

/// The memory files of a hand-over that change while linend runs: the description (written
/// once the datapath stands) and the peer list (rewritten as peers change).
#[derive(Debug)]
pub struct StateFiles {
    description: OwnedFd,
    peers: OwnedFd,
}

impl StateFiles {
    /// Two new, empty memory files.
    ///
    /// # Errors
    /// `memfd_create` failing.
    pub fn new() -> std::io::Result<StateFiles> {
        Ok(StateFiles {
            description: fdstore::memfd("linen-handover")?,
            peers: fdstore::memfd("linen-peers")?,
        })
    }

    /// Writes the description.
    ///
    /// # Errors
    /// The write failing.
    pub fn write_description(&self, d: &Description) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(d).map_err(std::io::Error::other)?;
        fdstore::memfd_replace(self.description.as_fd(), &bytes)
    }

    /// Rewrites the peer list.
    ///
    /// # Errors
    /// The write failing.
    pub fn write_peers(&self, peers: &[RemoteNode]) -> std::io::Result<()> {
        let list = PeerList {
            peers: peers
                .iter()
                .map(|p| StoredPeer {
                    subnet: p.subnet,
                    public_ip: p.public_ip,
                    vtep_mac: MacAddr(p.vtep_mac).to_string(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&list).map_err(std::io::Error::other)?;
        fdstore::memfd_replace(self.peers.as_fd(), &bytes)
    }

    /// The description file.
    pub fn description_fd(&self) -> BorrowedFd<'_> {
        self.description.as_fd()
    }

    /// The peer list file.
    pub fn peers_fd(&self) -> BorrowedFd<'_> {
        self.peers.as_fd()
    }
}

/// The service manager's store as linend uses it: pushes descriptors and remembers whether
/// every push went out, so that SIGTERM can leave the datapath to the next process only when
/// the store holds all of it.
#[derive(Debug)]
pub struct Store {
    notifier: Notifier,
    intact: bool,
}

impl Store {
    /// A store behind `notifier` (the service manager's socket).
    pub fn new(notifier: Notifier) -> Store {
        Store { notifier, intact: true }
    }

    /// Stores `fd` as `name`; a failure is logged and marks the store incomplete.
    pub fn push(&mut self, name: &str, fd: BorrowedFd<'_>) {
        if let Err(e) = self.notifier.store(name, fd) {
            warn!(name, error = %e, socket = self.notifier.path(), "cannot store a descriptor with the service manager; a restart rebuilds the datapath");
            self.intact = false;
        }
    }

    /// Removes every descriptor named in `names` from the store.
    pub fn remove_all(&self, names: &[String]) {
        for n in names {
            if fdstore::valid_name(n) {
                if let Err(e) = self.notifier.remove(n) {
                    warn!(name = %n, error = %e, "cannot remove a stored descriptor");
                }
            }
        }
    }

    /// Sends a notification (`READY=1`, `STOPPING=1`, `STATUS=…`); failures are logged.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.notifier.notify(state) {
            warn!(error = %e, socket = self.notifier.path(), "cannot notify the service manager");
        }
    }

    /// Whether every push went out (the datapath can be left to the next process).
    pub fn intact(&self) -> bool {
        self.intact
    }

    /// Marks the store as not holding the datapath (nothing was pushed, or it was cleared).
    pub fn set_intact(&mut self, intact: bool) {
        self.intact = intact;
    }
}

/// Logs what a start found in the store, in one line.
pub fn log_received(r: &Received) {
    match r {
        Received::Nothing => {}
        Received::Complete(h) => {
            let d = h.description();
            info!(
                datapath = d.datapath.name(),
                queues = d.queues,
                from_version = %d.version,
                descriptors = d.fds.len() + 1,
                "the service manager handed over a running datapath"
            );
        }
        Received::Unusable { reason, names } => warn!(
            descriptors = names.len(),
            "the service manager passed descriptors that make no usable hand-over ({reason}); clearing them and building afresh"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> Description {
        Description {
            format: FORMAT,
            version: "0.1.0".into(),
            datapath: DatapathKind::Xdp,
            device: "linen.1".into(),
            underlay: "eth0".into(),
            underlay_ifindex: 2,
            vtep: Ipv4Addr::new(192, 168, 77, 1),
            port: 8472,
            queues: 2,
            vni: Some(1),
            mtu: Some(1450),
            umem: Some(UmemGeometry {
                frame_count: 8192,
                frame_size: 2048,
                headroom: 64,
                fill_size: 2048,
                comp_size: 2048,
                rx_size: 2048,
                tx_size: 2048,
            }),
            fds: Description::expected_fds(DatapathKind::Xdp, 2),
        }
    }

    fn wanted() -> Wanted {
        Wanted {
            datapath: Some(DatapathKind::Xdp),
            device: "linen.1".into(),
            underlay: "eth0".into(),
            underlay_ifindex: 2,
            vtep: Ipv4Addr::new(192, 168, 77, 1),
            port: 8472,
            queues: 2,
        }
    }

    #[test]
    fn a_matching_description_is_taken_and_every_difference_named() {
        let d = description();
        assert_eq!(d.mismatch(&wanted()), None);
        assert_eq!(d.mismatch(&Wanted { datapath: None, ..wanted() }), None, "auto takes either");
        let cases = [
            (Wanted { datapath: Some(DatapathKind::Tap), ..wanted() }, "datapath xdp"),
            (Wanted { queues: 4, ..wanted() }, "2 queue(s) handed over, 4 wanted"),
            (Wanted { underlay_ifindex: 7, ..wanted() }, "underlay eth0 (#2)"),
            (Wanted { port: 4789, ..wanted() }, "VTEP 192.168.77.1:8472"),
            (Wanted { vtep: Ipv4Addr::new(10, 0, 0, 1), ..wanted() }, "VTEP"),
        ];
        for (w, needle) in cases {
            let why = d.mismatch(&w).expect("mismatch");
            assert!(why.contains(needle), "{why}");
        }
        let old = Description { format: 0, ..description() };
        assert!(old.mismatch(&wanted()).unwrap().contains("format 0"));
        let tap =
            Description { datapath: DatapathKind::Tap, queues: 1, umem: None, ..description() };
        assert_eq!(tap.mismatch(&Wanted { datapath: None, queues: 4, ..wanted() }), None);
    }

    #[test]
    fn the_description_round_trips_as_json() {
        let d = description();
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.contains(r#""datapath":"xdp""#), "{text}");
        assert_eq!(serde_json::from_str::<Description>(&text).unwrap(), d);
        assert_eq!(d.vxlan_settings(), Some((1, 8472, 1450)));
        // A description of an earlier format 1 writer, without the VXLAN settings: no bridge.
        let older = text.replace(r#","vni":1"#, "").replace(r#","mtu":1450"#, "");
        assert_ne!(older, text);
        assert_eq!(serde_json::from_str::<Description>(&older).unwrap().vxlan_settings(), None);
        assert_eq!(
            Description::expected_fds(DatapathKind::Tap, 1),
            vec!["tap-0", "udp-0", "peers"]
        );
    }

    fn memfd_with(bytes: &[u8]) -> OwnedFd {
        let fd = fdstore::memfd("test").unwrap();
        fdstore::memfd_replace(fd.as_fd(), bytes).unwrap();
        fd
    }

    fn tap_handover() -> (Description, Vec<(String, OwnedFd)>) {
        let d = Description {
            datapath: DatapathKind::Tap,
            queues: 1,
            umem: None,
            fds: Description::expected_fds(DatapathKind::Tap, 1),
            ..description()
        };
        let fds = vec![
            ("tap-0".to_string(), memfd_with(b"")),
            ("udp-0".to_string(), memfd_with(b"")),
            (PEERS.to_string(), memfd_with(br#"{"peers":[{"subnet":"10.244.2.0/24","public_ip":"192.168.77.2","vtep_mac":"26:69:c7:3a:5b:8c"}]}"#)),
            (DESCRIPTION.to_string(), memfd_with(&serde_json::to_vec(&d).unwrap())),
        ];
        (d, fds)
    }

    #[test]
    fn a_complete_store_is_a_handover_with_its_peers() {
        assert!(matches!(Handover::receive(Vec::new()), Received::Nothing));
        let (d, fds) = tap_handover();
        let Received::Complete(mut h) = Handover::receive(fds) else { panic!("not complete") };
        assert_eq!(h.description(), &d);
        let peers = h.peers().expect("peers");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].vtep_mac, [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c]);
        assert!(h.take("tap-0").is_ok());
        assert!(matches!(h.take("tap-0"), Err(HandoverError::Missing(_))));
        assert_eq!(h.names().last().map(String::as_str), Some(DESCRIPTION));
        let state = h.into_state().expect("state files");
        state.write_peers(&[]).unwrap();
        assert_eq!(fdstore::read_all(state.peers_fd(), 100).unwrap(), br#"{"peers":[]}"#);
    }

    #[test]
    fn incomplete_or_corrupt_stores_are_refused_with_every_name() {
        // No description: a start that died before storing it.
        let (_, mut fds) = tap_handover();
        fds.pop();
        let Received::Unusable { reason, names } = Handover::receive(fds) else { panic!() };
        assert!(reason.contains("without"), "{reason}");
        assert_eq!(names, vec!["tap-0", "udp-0", "peers"]);
        // A listed descriptor missing.
        let (_, mut fds) = tap_handover();
        fds.remove(1);
        let Received::Unusable { reason, .. } = Handover::receive(fds) else { panic!() };
        assert!(reason.contains("udp-0"), "{reason}");
        // An unlisted one.
        let (_, mut fds) = tap_handover();
        fds.push(("unknown".into(), memfd_with(b"")));
        let Received::Unusable { reason, .. } = Handover::receive(fds) else { panic!() };
        assert!(reason.contains("unknown"), "{reason}");
        // A torn description.
        let (_, mut fds) = tap_handover();
        fds.pop();
        fds.push((DESCRIPTION.into(), memfd_with(br#"{"format":1,"vers"#)));
        let Received::Unusable { reason, .. } = Handover::receive(fds) else { panic!() };
        assert!(reason.contains("unreadable"), "{reason}");
        // A name twice.
        let (_, mut fds) = tap_handover();
        fds.push(("tap-0".into(), memfd_with(b"")));
        assert!(matches!(Handover::receive(fds), Received::Unusable { .. }));
    }

    #[test]
    fn a_torn_peer_list_is_no_seed() {
        let (_, mut fds) = tap_handover();
        fds[2].1 = memfd_with(br#"{"peers":[{"subnet":"10.244.2.0/24"},]}"#);
        let Received::Complete(h) = Handover::receive(fds) else { panic!() };
        assert_eq!(h.peers(), None);
    }
}
