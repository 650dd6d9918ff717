//! The link, address and route requests the plugin makes, on the `rtnetlink` crate.
//!
//! The plugin is a short-lived synchronous program, so each [`Netlink`] owns a current-thread
//! tokio runtime and waits for every request in turn: the connection task is spawned on that
//! runtime and only runs inside `block_on`, on the thread that makes the request; no other
//! thread exists.
//!
//! A netlink socket belongs, for its whole life, to the network namespace of the thread that
//! created it. So the plugin reaches a pod's namespace by creating the socket there
//! ([`Netlink::open_in`]: a short-lived thread enters the namespace, builds the runtime and the
//! connection, and ends) while the process itself stays in the node namespace; the requests
//! then go to the pod's namespace whichever thread sends them. Nothing here shells out to `ip`.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use linen_dataplane::wire::MacAddr;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

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

/// The kernel's errno for a refused request; any other failure as an error without one.
fn io_error(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.code.is_some() => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
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

/// One rtnetlink connection, bound to the namespace it was opened in.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's network namespace.
    ///
    /// # Errors
    /// When the runtime or the socket cannot be created.
    pub fn open() -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| err("start the netlink runtime", e))?;
        // The socket registers with the runtime's I/O driver, so it is made inside the runtime.
        let (connection, handle, _) = {
            let _entered = rt.enter();
            rtnetlink::new_connection().map_err(|e| err("socket", e))?
        };
        rt.spawn(connection);
        Ok(Netlink { rt, handle })
    }

    /// A connection in the network namespace `netns` (an open `/proc/<pid>/ns/net` or
    /// `/var/run/netns/<name>` file). A dedicated thread enters the namespace, opens the
    /// connection and ends; the calling thread never leaves its namespace.
    ///
    /// # Errors
    /// When the namespace cannot be entered or the socket cannot be created.
    pub fn open_in(netns: &File) -> Result<Netlink> {
        in_netns(netns, Netlink::open)?
    }

    /// Runs one request to completion, naming it in the error.
    fn run<T>(
        &self,
        what: impl FnOnce() -> String,
        request: impl Future<Output = std::result::Result<T, rtnetlink::Error>>,
    ) -> Result<T> {
        self.rt.block_on(request).map_err(|e| err(what(), io_error(e)))
    }

    /// Looks a link up by name; `None` when there is none.
    ///
    /// # Errors
    /// Netlink failures other than "no such device".
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let request = self.handle.link().get().match_name(name).execute().try_collect::<Vec<_>>();
        match self.run(|| format!("get link {name}"), request) {
            Ok(links) => Ok(links.into_iter().next().map(link_of)),
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let request = self.handle.link().get().execute().try_collect::<Vec<_>>();
        Ok(self.run(|| "dump links".to_string(), request)?.into_iter().map(link_of).collect())
    }

    /// Creates a veth pair: `host` here, `peer` created directly in the namespace `peer_netns`
    /// (so the pod end never exists in the node namespace), both with `mtu`.
    ///
    /// # Errors
    /// Netlink failures, EEXIST when either name is taken.
    pub fn add_veth(&mut self, host: &str, peer: &str, peer_netns: &File, mtu: u32) -> Result<()> {
        let peer_msg =
            LinkUnspec::new_with_name(peer).mtu(mtu).setns_by_fd(peer_netns.as_raw_fd()).build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.run(
            || format!("create veth {host} (peer {peer} in the pod namespace)"),
            self.handle.link().add(msg).execute(),
        )
    }

    /// Creates a bridge named `name` (EEXIST when it already exists).
    ///
    /// # Errors
    /// Netlink failures.
    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        self.run(
            || format!("create bridge {name}"),
            self.handle.link().add(LinkBridge::new(name).build()).execute(),
        )
    }

    /// Sets a link up.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.run(
            || format!("set link {index} up"),
            self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute(),
        )
    }

    /// Sets a link's hardware address. On a bridge this also pins it: a bridge whose address
    /// was set explicitly no longer follows its ports' lowest MAC.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).address(mac.octets().to_vec()).build();
        self.run(|| format!("set the MAC of link {index}"), self.handle.link().set(msg).execute())
    }

    /// Enslaves link `index` to bridge `master`, with hairpin mode as asked, and sets it up.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn attach_to_bridge(&mut self, index: u32, master: u32, hairpin: bool) -> Result<()> {
        self.run(
            || format!("attach link {index} to bridge {master}"),
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).controller(master).build())
                .execute(),
        )?;
        self.run(
            || format!("set hairpin on bridge port {index}"),
            self.handle
                .link()
                .set_port(LinkBridgePort::new(index).hairpin(hairpin).build())
                .execute(),
        )?;
        self.set_up(index)
    }

    /// Deletes a link (its veth peer goes with it).
    ///
    /// # Errors
    /// Netlink failures, ENODEV when it does not exist.
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        self.run(|| format!("delete link {index}"), self.handle.link().del(index).execute())
    }

    /// Adds `addr/prefix_len` (with its broadcast address) to link `index` (EEXIST when
    /// present).
    ///
    /// # Errors
    /// Netlink failures.
    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.run(
            || format!("add address {addr}/{prefix_len} to link {index}"),
            self.handle.address().add(index, IpAddr::V4(addr), prefix_len).execute(),
        )
    }

    /// The IPv4 addresses (with prefix lengths) on link `index`.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        request.message_mut().header.family = AddressFamily::Inet;
        let answers =
            self.run(|| "dump addresses".to_string(), request.execute().try_collect::<Vec<_>>())?;
        let mut out = Vec::new();
        for a in answers {
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
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .protocol(RouteProtocol::Boot)
            .scope(if gw.is_some() { RouteScope::Universe } else { RouteScope::Link })
            .output_interface(oif);
        if prefix_len > 0 {
            route = route.destination_prefix(dst, prefix_len);
        }
        if let Some(gw) = gw {
            route = route.gateway(gw);
        }
        self.run(
            || match gw {
                Some(gw) => format!("add route {dst}/{prefix_len} via {gw}"),
                None => format!("add route {dst}/{prefix_len} dev {oif}"),
            },
            self.handle.route().add(route.build()).execute(),
        )
    }

    /// The IPv4 routes of the main table leaving through `oif`: (destination, prefix, gateway).
    ///
    /// # Errors
    /// Netlink failures.
    pub fn routes(&mut self, oif: u32) -> Result<Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>> {
        let request = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build());
        let answers =
            self.run(|| "dump routes".to_string(), request.execute().try_collect::<Vec<_>>())?;
        let mut out = Vec::new();
        for r in answers {
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

/// Whether a netlink error is "no such device".
pub fn is_no_device(e: &NetlinkError) -> bool {
    e.errno() == Some(19) // ENODEV
}

/// Whether a netlink error is "already exists".
pub fn is_exists(e: &NetlinkError) -> bool {
    e.errno() == Some(17) // EEXIST
}

fn link_of(m: LinkMessage) -> Link {
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
    link
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
