//! A small synchronous rtnetlink client: just the link, address and route requests the plugin
//! needs, over one `NETLINK_ROUTE` socket.
//!
//! A socket belongs to the network namespace it was created in, so the plugin reaches a pod's
//! namespace by opening a socket there ([`Netlink::open_in`]: a short-lived thread enters the
//! namespace, creates the socket and exits) while the process itself stays in the node namespace.
//! Nothing here shells out to `ip`.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use linen_dataplane::wire::MacAddr;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What a netlink request failed with: the kernel's errno (or a socket error) and what was asked.
#[derive(Debug, thiserror::Error)]
#[error("netlink {what}: {source}")]
pub struct NetlinkError {
    /// The request, in words ("add address 10.0.0.2/24 to eth0").
    pub what: String,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

impl NetlinkError {
    /// The errno the kernel answered with, if it was one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn err(what: impl Into<String>, source: io::Error) -> NetlinkError {
    NetlinkError { what: what.into(), source }
}

/// The facts about one link the plugin looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Ethernet address (`None` for devices without a 6-byte hardware address).
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Index of the bridge (or other master) the link is enslaved to.
    pub master: Option<u32>,
    /// Whether the link is administratively up.
    pub up: bool,
    /// `IFLA_INFO_KIND` ("veth", "bridge", "tun", ...).
    pub kind: Option<String>,
}

/// One rtnetlink socket, bound to the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the caller's network namespace.
    ///
    /// # Errors
    /// When the socket cannot be created.
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| err("socket", e))?;
        socket.bind_auto().map_err(|e| err("bind", e))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(|e| err("connect", e))?;
        let _ = socket.set_ext_ack(true);
        Ok(Netlink { socket, seq: 1, buf: vec![0; 64 * 1024] })
    }

    /// A socket in the network namespace `netns` (an open `/proc/<pid>/ns/net` or
    /// `/var/run/netns/<name>` file). A dedicated thread enters the namespace, opens the socket
    /// and ends; the calling thread never leaves its namespace.
    ///
    /// # Errors
    /// When the namespace cannot be entered or the socket cannot be created.
    pub fn open_in(netns: &File) -> Result<Netlink> {
        in_netns(netns, Netlink::open)?
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and collects the answers: for a dump every message up to `Done`, else
    /// the messages before the acknowledgement.
    fn request(
        &mut self,
        what: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.next_seq();
        let seq = header.sequence_number;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(|e| err(what(), e))?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).map_err(|e| err(what(), e))?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|e| {
                        err(what(), io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len.div_ceil(4) * 4;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        if e.code.is_some() {
                            return Err(err(what(), e.to_io()));
                        }
                        return Ok(answers);
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        answers.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(answers);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Looks a link up by name; `None` when there is none.
    ///
    /// # Errors
    /// Netlink failures other than "no such device".
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            &|| format!("get link {name}"),
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_ACK,
        ) {
            Ok(answers) => Ok(answers.into_iter().find_map(link_of)),
            Err(e) if e.errno() == Some(libc_enodev()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let answers = self.request(
            &|| "dump links".to_string(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers.into_iter().filter_map(link_of).collect())
    }

    /// Creates a veth pair: `host` here, `peer` created directly in the namespace `peer_netns`
    /// (so the pod end never exists in the node namespace), both with `mtu`.
    ///
    /// # Errors
    /// Netlink failures, EEXIST when either name is taken.
    pub fn add_veth(&mut self, host: &str, peer: &str, peer_netns: &File, mtu: u32) -> Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            &|| format!("create veth {host} (peer {peer} in the pod namespace)"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates a bridge named `name` (EEXIST when it already exists).
    ///
    /// # Errors
    /// Netlink failures.
    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(
            &|| format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Sets a link up.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(
            &|| format!("set link {index} up"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Sets a link's hardware address. On a bridge this also pins it: a bridge whose address
    /// was set explicitly no longer follows its ports' lowest MAC.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Address(mac.octets().to_vec()));
        self.request(
            &|| format!("set the MAC of link {index}"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Enslaves link `index` to bridge `master`, with hairpin mode as asked, and sets it up.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn attach_to_bridge(&mut self, index: u32, master: u32, hairpin: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(master));
        self.request(
            &|| format!("attach link {index} to bridge {master}"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                hairpin,
            )])),
        ]));
        self.request(
            &|| format!("set hairpin on bridge port {index}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK,
        )?;
        self.set_up(index)
    }

    /// Deletes a link (its veth peer goes with it).
    ///
    /// # Errors
    /// Netlink failures, ENODEV when it does not exist.
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(
            &|| format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Adds `addr/prefix_len` to link `index` (EEXIST when present).
    ///
    /// # Errors
    /// Netlink failures.
    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        if prefix_len < 31 {
            let mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
            let brd = Ipv4Addr::from(u32::from(addr) | mask);
            msg.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.request(
            &|| format!("add address {addr}/{prefix_len} to link {index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The IPv4 addresses (with prefix lengths) on link `index`.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let answers = self.request(
            &|| "dump addresses".to_string(),
            RouteNetlinkMessage::GetAddress(msg),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for a in answers {
            let RouteNetlinkMessage::NewAddress(a) = a else { continue };
            if a.header.index != index {
                continue;
            }
            for attr in &a.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                    out.push((*ip, a.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Adds a route to `dst/prefix_len` in the main table, via `gw` when given, out of `oif`.
    ///
    /// # Errors
    /// Netlink failures, EEXIST when the route is present.
    pub fn add_route(
        &mut self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gw: Option<Ipv4Addr>,
        oif: u32,
    ) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = prefix_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = if gw.is_some() { RouteScope::Universe } else { RouteScope::Link };
        msg.header.kind = RouteType::Unicast;
        if prefix_len > 0 {
            msg.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        if let Some(gw) = gw {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            &|| match gw {
                Some(gw) => format!("add route {dst}/{prefix_len} via {gw}"),
                None => format!("add route {dst}/{prefix_len} dev {oif}"),
            },
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The IPv4 routes of the main table leaving through `oif`: (destination, prefix, gateway).
    ///
    /// # Errors
    /// Netlink failures.
    pub fn routes(&mut self, oif: u32) -> Result<Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let answers = self.request(
            &|| "dump routes".to_string(),
            RouteNetlinkMessage::GetRoute(msg),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for r in answers {
            let RouteNetlinkMessage::NewRoute(r) = r else { continue };
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gw = None;
            let mut out_if = None;
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    RouteAttribute::Oif(i) => out_if = Some(*i),
                    _ => {}
                }
            }
            if out_if == Some(oif) {
                out.push((dst, r.header.destination_prefix_length, gw));
            }
        }
        Ok(out)
    }
}

const ENODEV: i32 = 19;

fn libc_enodev() -> i32 {
    ENODEV
}

/// Whether a netlink error is "no such device".
pub fn is_no_device(e: &NetlinkError) -> bool {
    e.errno() == Some(ENODEV)
}

/// Whether a netlink error is "already exists".
pub fn is_exists(e: &NetlinkError) -> bool {
    e.errno() == Some(17)
}

fn link_of(msg: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(m) = msg else { return None };
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
        kind: None,
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(a) => link.mac = MacAddr::try_from(&a[..]).ok(),
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Controller(c) => link.master = Some(c),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// Runs `f` on a fresh thread that has entered the network namespace `netns`. The thread ends
/// afterwards, so no other code ever runs in the wrong namespace.
///
/// # Errors
/// When the namespace cannot be entered.
pub fn in_netns<T: Send + 'static>(
    netns: &File,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let fd = netns.try_clone().map_err(|e| err("duplicate netns fd", e))?;
    std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| err("enter the pod network namespace (setns)", io::Error::from(e)))?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| Err(err("netns thread", io::Error::other("panicked"))))
}

/// The text a CNI result gives for a link's MAC: `aa:bb:cc:dd:ee:ff`, or empty without one.
pub fn format_mac(mac: Option<MacAddr>) -> String {
    mac.map(|m| m.to_string()).unwrap_or_default()
}
