//! Kernel programming over rtnetlink: the overlay device (`linen.1`), its address, the routes
//! and permanent neighbours per remote subnet, and look-ups of the underlay (interface, IP, MAC,
//! next-hop MAC).
//!
//! Everything here is idempotent: [`Kernel::apply_overlay`] converges the kernel to the wanted
//! state (adds what is missing, replaces what differs, removes stale routes, neighbours and
//! addresses on the overlay device) and may be called again at any time — after a peer change or
//! after the device was recreated. Nothing here shells out to `ip`.
//!
//! This module never touches routes or neighbours on devices other than the overlay device,
//! with one exception: the direct routes of flannel's `DirectRouting` ([`DirectRoute`]), which
//! live on the underlay device. linen recognises its own there by protocol `static`, a gateway,
//! a destination inside the cluster network and linen's metric for it, and leaves every other
//! route alone.

// --ip-masq (nftables source NAT), --can-reach (underlay detection), the derived VtepMAC
pub mod can_reach;
pub mod masq;
pub mod vtep_mac;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use linen_dataplane::wire::MacAddr;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Name of the overlay device, as flannel's `flannel.1` (`.1` is the VNI by convention).
pub const OVERLAY_DEV: &str = "linen.1";
/// Bytes of outer header that VXLAN over IPv4 adds (Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;

/// A failed kernel operation.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Opening the rtnetlink socket failed.
    #[error("cannot open an rtnetlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("netlink {what} failed: {source}")]
    Netlink {
        /// What was being done, in operator terms (`"add route 10.244.2.0/24 via linen.1"`).
        what: String,
        /// The error the kernel returned.
        #[source]
        source: rtnetlink::Error,
    },
    /// A device that must exist does not.
    #[error("network device {0} not found")]
    NoSuchLink(String),
    /// No underlay could be determined.
    #[error("cannot determine the underlay: {0}")]
    Underlay(String),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Netlink { what, source }
}

/// A network device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware (MAC) address; all zero for devices without one.
    pub mac: [u8; 6],
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: [0; 6],
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
                _ => {}
            }
        }
        link
    }
}

/// The underlay a node sends VXLAN over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// The underlay device.
    pub link: Link,
    /// The local VTEP (public) IPv4 address.
    pub ip: Ipv4Addr,
}

/// One remote subnet reachable through the overlay device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayRoute {
    /// The remote node's pod subnet.
    pub subnet: Ipv4Net,
    /// The remote node's VTEP MAC (its overlay device's MAC).
    pub vtep_mac: [u8; 6],
}

/// The wanted state of the overlay device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayState {
    /// The local pod subnet; the device gets `<subnet>.0/32`.
    pub local_subnet: Ipv4Net,
    /// Device MTU (underlay MTU − [`VXLAN_OVERHEAD`] unless overridden).
    pub mtu: u32,
    /// Remote subnets.
    pub routes: Vec<OverlayRoute>,
}

/// A peer subnet the kernel forwards natively over the underlay, without VXLAN (flannel's
/// `DirectRouting`): `<subnet> via <gateway> dev <underlay>`, where the gateway is the peer's
/// public IP on the underlay's own L2 segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirectRoute {
    /// The peer's pod subnet.
    pub subnet: Ipv4Net,
    /// The peer's public IP.
    pub gateway: Ipv4Addr,
}

/// A connection to the kernel's routing netlink family, in the caller's network namespace.
#[derive(Debug, Clone)]
pub struct Kernel {
    handle: Handle,
}

/// A route message for the direct route `r` on the underlay device `index`: destination,
/// gateway and device, to which a caller adds a metric or not.
fn direct_route(r: &DirectRoute, index: u32) -> RouteMessageBuilder<Ipv4Addr> {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.subnet.network(), r.subnet.prefix_len())
        .gateway(r.gateway)
        .output_interface(index)
}

impl Kernel {
    /// Opens an rtnetlink connection; its I/O task runs on the current tokio runtime.
    ///
    /// # Errors
    /// [`KernelError::Connect`] when the socket cannot be opened.
    pub fn connect() -> Result<Kernel, KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Connect)?;
        tokio::spawn(conn);
        Ok(Kernel { handle })
    }

    /// The device named `name`, if it exists.
    ///
    /// # Errors
    /// A netlink failure other than "no such device".
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, KernelError> {
        let mut req = self.handle.link().get().match_name(name.to_string()).execute();
        match req.try_next().await {
            Ok(Some(msg)) => Ok(Some(Link::from_message(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    /// The device with index `index`.
    ///
    /// # Errors
    /// [`KernelError::NoSuchLink`] or a netlink failure.
    pub async fn link_by_index(&self, index: u32) -> Result<Link, KernelError> {
        let mut req = self.handle.link().get().match_index(index).execute();
        match req.try_next().await {
            Ok(Some(msg)) => Ok(Link::from_message(&msg)),
            Ok(None) => Err(KernelError::NoSuchLink(format!("#{index}"))),
            Err(e) => Err(nl(format!("get link #{index}"))(e)),
        }
    }

    /// Deletes the device `name` if it exists (its routes, neighbours and addresses go with it).
    ///
    /// # Errors
    /// A netlink failure.
    pub async fn delete_link(&self, name: &str) -> Result<(), KernelError> {
        if let Some(link) = self.link_by_name(name).await? {
            self.handle
                .link()
                .del(link.index)
                .execute()
                .await
                .map_err(nl(format!("delete link {name}")))?;
        }
        Ok(())
    }

    /// Sets the hardware address of `dev` (the overlay device's VtepMAC).
    ///
    /// # Errors
    /// [`KernelError::NoSuchLink`] or a netlink failure.
    pub async fn set_mac(&self, dev: &str, mac: [u8; 6]) -> Result<(), KernelError> {
        let link =
            self.link_by_name(dev).await?.ok_or_else(|| KernelError::NoSuchLink(dev.into()))?;
        if link.mac == mac {
            return Ok(());
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).address(mac.to_vec()).build())
            .execute()
            .await
            .map_err(nl(format!("set {dev} address {}", MacAddr(mac))))
    }

    /// Sets the MTU (when given) and brings the device up.
    async fn set_link(&self, index: u32, mtu: Option<u32>, up: bool) -> Result<(), KernelError> {
        let mut b = LinkUnspec::new_with_index(index);
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        if up {
            b = b.up();
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(nl(format!("set link #{index} mtu/up")))
    }

    /// Converges the overlay device `dev` to `state`: MTU and up, exactly one IPv4 address
    /// `<subnet>.0/32`, per remote subnet the route `<subnet> via <subnet>.0 dev <dev> onlink`
    /// (metric from [`route_metric`]) and the permanent neighbour `<subnet>.0 lladdr <vtep mac>`;
    /// stale IPv4 routes, neighbours and addresses on `dev` are removed. Safe to call repeatedly.
    /// It lists the device's neighbours and routes once, writes only what is missing or differs
    /// and pipelines the requests, so a converged device costs two listings.
    ///
    /// # Errors
    /// [`KernelError::NoSuchLink`] or the first netlink failure.
    pub async fn apply_overlay(&self, dev: &str, state: &OverlayState) -> Result<(), KernelError> {
        let link =
            self.link_by_name(dev).await?.ok_or_else(|| KernelError::NoSuchLink(dev.into()))?;
        self.set_link(link.index, Some(state.mtu), true).await?;

        // Address: <subnet>.0/32, nothing else (IPv4).
        let own = state.local_subnet.network();
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(nl(format!("list addresses of {dev}")))?;
        let mut have_own = false;
        for msg in addrs {
            if msg.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if ip == Some(IpAddr::V4(own)) && msg.header.prefix_len == 32 {
                have_own = true;
            } else {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("remove stale address {ip:?} from {dev}")))?;
            }
        }
        if !have_own {
            self.handle
                .address()
                .add(link.index, IpAddr::V4(own), 32)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add address {own}/32 to {dev}")))?;
        }

        // Neighbours first, so that no route points at an unresolved next hop. Diff-based:
        // only missing or differing entries are written, only stale ones removed, and the
        // requests are pipelined (see `IN_FLIGHT`).
        let wanted: HashMap<Ipv4Addr, [u8; 6]> =
            state.routes.iter().map(|r| (r.subnet.network(), r.vtep_mac)).collect();
        let neighs = self.list_neighbours().await?;
        let mut correct: HashSet<Ipv4Addr> = HashSet::new();
        let mut stale = Vec::new();
        for msg in neighs.into_iter().filter(|m| m.header.ifindex == link.index) {
            match neighbour_ip(&msg).and_then(|d| wanted.get(&d).map(|mac| (d, mac))) {
                Some((d, mac))
                    if neighbour_mac(&msg) == Some(*mac)
                        && msg.header.state == NeighbourState::Permanent =>
                {
                    correct.insert(d);
                }
                // Differing entries are replaced below.
                Some(_) => {}
                None => stale.push(msg),
            }
        }
        // (Collected first: a lazy iterator of closures held across an await makes the future
        // not `Send`.)
        let removals: Vec<_> = stale
            .into_iter()
            .map(|msg| {
                let req = self.handle.neighbours().del(msg).execute();
                async move {
                    // A stale entry that vanished meanwhile is what we wanted.
                    let _ = req.await;
                    Ok(())
                }
            })
            .collect();
        pipelined(removals).await?;
        let missing: Vec<_> = state
            .routes
            .iter()
            .filter(|r| !correct.contains(&r.subnet.network()))
            .map(|r| self.replace_neighbour(link.index, dev, r))
            .collect();
        pipelined(missing).await?;

        // Routes.
        let mut present: HashSet<Ipv4Net> = HashSet::new();
        let mut stale = Vec::new();
        for msg in self.routes_on(link.index).await? {
            let (dst, len) = route_destination(&msg);
            let gw = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            match Ipv4Net::new(dst, len) {
                Ok(net) if gw == Some(dst) && wanted.contains_key(&dst) => {
                    present.insert(net);
                }
                _ => stale.push((msg, dst, len)),
            }
        }
        let removals: Vec<_> = stale
            .into_iter()
            .map(|(msg, dst, len)| {
                let req = self.handle.route().del(msg).execute();
                let what = format!("remove stale route {dst}/{len} dev {dev}");
                async move { req.await.map_err(nl(what)) }
            })
            .collect();
        pipelined(removals).await?;
        let missing: Vec<_> = state
            .routes
            .iter()
            .filter(|r| !present.contains(&r.subnet))
            .map(|r| self.replace_route(link.index, dev, r))
            .collect();
        pipelined(missing).await
    }

    /// Moves the overlay device `dev` from `old` (what the last successful
    /// [`Kernel::apply_overlay`] or call of this programmed) to `new` by writing only the
    /// difference: neighbours and routes of new or changed peers, removal of those gone. Without
    /// a listing of the kernel's state this is a few requests per changed peer, not a pass over
    /// every peer; a changed local subnet or MTU takes the full [`Kernel::apply_overlay`] path.
    /// Entries that someone else removed or changed meanwhile are only repaired by the next full
    /// apply, so callers run one after every resynchronisation.
    ///
    /// # Errors
    /// [`KernelError::NoSuchLink`] or the first netlink failure (the caller should then fall
    /// back to a full apply).
    pub async fn apply_overlay_changes(
        &self,
        dev: &str,
        old: &OverlayState,
        new: &OverlayState,
    ) -> Result<(), KernelError> {
        if old.local_subnet != new.local_subnet || old.mtu != new.mtu {
            return self.apply_overlay(dev, new).await;
        }
        let before: HashMap<Ipv4Net, [u8; 6]> =
            old.routes.iter().map(|r| (r.subnet, r.vtep_mac)).collect();
        let after: HashSet<Ipv4Net> = new.routes.iter().map(|r| r.subnet).collect();
        let changed: Vec<&OverlayRoute> =
            new.routes.iter().filter(|r| before.get(&r.subnet) != Some(&r.vtep_mac)).collect();
        let gone: Vec<Ipv4Net> =
            old.routes.iter().map(|r| r.subnet).filter(|s| !after.contains(s)).collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let link =
            self.link_by_name(dev).await?.ok_or_else(|| KernelError::NoSuchLink(dev.into()))?;
        let i = link.index;
        let neighbours: Vec<_> =
            changed.iter().map(|r| self.replace_neighbour(i, dev, r)).collect();
        pipelined(neighbours).await?;
        let routes: Vec<_> = changed
            .iter()
            .filter(|r| !before.contains_key(&r.subnet))
            .map(|r| self.replace_route(i, dev, r))
            .collect();
        pipelined(routes).await?;
        let routes: Vec<_> = gone.iter().map(|s| self.remove_route(i, dev, *s)).collect();
        pipelined(routes).await?;
        let neighbours: Vec<_> =
            gone.iter().map(|s| self.remove_neighbour(i, dev, s.network())).collect();
        pipelined(neighbours).await
    }

    fn replace_neighbour(
        &self,
        index: u32,
        dev: &str,
        r: &OverlayRoute,
    ) -> impl Future<Output = Result<(), KernelError>> {
        let (gw, mac) = (r.subnet.network(), r.vtep_mac);
        let req = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(gw))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        let dev = dev.to_string();
        async move {
            req.await
                .map_err(|e| nl(format!("add neighbour {gw} lladdr {} dev {dev}", MacAddr(mac)))(e))
        }
    }

    fn replace_route(
        &self,
        index: u32,
        dev: &str,
        r: &OverlayRoute,
    ) -> impl Future<Output = Result<(), KernelError>> {
        let (subnet, gw) = (r.subnet, r.subnet.network());
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(gw, subnet.prefix_len())
            .gateway(gw)
            .output_interface(index)
            .onlink()
            .priority(route_metric(subnet))
            .build();
        let req = self.handle.route().add(msg).replace().execute();
        let dev = dev.to_string();
        async move {
            req.await.map_err(|e| nl(format!("add route {subnet} via {gw} dev {dev} onlink"))(e))
        }
    }

    fn remove_route(
        &self,
        index: u32,
        dev: &str,
        subnet: Ipv4Net,
    ) -> impl Future<Output = Result<(), KernelError>> {
        let gw = subnet.network();
        // No metric: the kernel then removes the route whatever metric it carries.
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(gw, subnet.prefix_len())
            .gateway(gw)
            .output_interface(index)
            .onlink()
            .build();
        let req = self.handle.route().del(msg).execute();
        let dev = dev.to_string();
        async move {
            match req.await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_esrch() => Ok(()),
                r => r.map_err(|e| nl(format!("remove route {subnet} dev {dev}"))(e)),
            }
        }
    }

    fn remove_neighbour(
        &self,
        index: u32,
        dev: &str,
        ip: Ipv4Addr,
    ) -> impl Future<Output = Result<(), KernelError>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let req = self.handle.neighbours().del(msg).execute();
        let dev = dev.to_string();
        async move {
            match req.await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enoent() => Ok(()),
                r => r.map_err(|e| nl(format!("remove neighbour {ip} dev {dev}"))(e)),
            }
        }
    }

    /// Adds or replaces the direct routes `routes` on the underlay device `index`: `<subnet>
    /// via <gateway> dev <dev>`, protocol static, with the metric of the overlay route to the
    /// same subnet ([`route_metric`]). Same destination and metric make the kernel replace an
    /// overlay route in place (and the overlay route replace a direct one later), so a peer
    /// switching between VXLAN and direct routing is never without a route.
    ///
    /// # Errors
    /// The first netlink failure (e.g. a gateway that is not on-link).
    pub async fn replace_direct_routes(
        &self,
        index: u32,
        dev: &str,
        routes: &[DirectRoute],
    ) -> Result<(), KernelError> {
        let requests: Vec<_> = routes
            .iter()
            .map(|r| {
                let msg = direct_route(r, index).priority(route_metric(r.subnet)).build();
                let req = self.handle.route().add(msg).replace().execute();
                let what = format!("add route {} via {} dev {dev}", r.subnet, r.gateway);
                async move { req.await.map_err(nl(what)) }
            })
            .collect();
        pipelined(requests).await
    }

    /// Removes direct routes from the underlay device `index`, keeping those in `keep`: with
    /// `known` (what was programmed last), the ones in `known` but not in `keep`; without it,
    /// every route on `index` that looks like one of linen's direct routes (protocol static, a
    /// gateway, a destination inside `network` and narrower than it, the metric
    /// [`route_metric`] gives that destination) and is not in `keep` — leftovers of an earlier
    /// run included. A route that is already gone (or was replaced by the overlay route to the
    /// same subnet) is not an error.
    ///
    /// # Errors
    /// The route listing or a removal failed.
    pub async fn remove_direct_routes(
        &self,
        index: u32,
        dev: &str,
        network: Ipv4Net,
        keep: &[DirectRoute],
        known: Option<&[DirectRoute]>,
    ) -> Result<(), KernelError> {
        let keep: HashSet<&DirectRoute> = keep.iter().collect();
        let stale: Vec<DirectRoute> = match known {
            Some(known) => known.iter().filter(|r| !keep.contains(r)).copied().collect(),
            None => self
                .routes_on(index)
                .await?
                .iter()
                .filter(|m| m.header.protocol == RouteProtocol::Static)
                .filter_map(|m| {
                    let (dst, len) = route_destination(m);
                    let subnet = Ipv4Net::new(dst, len).ok()?;
                    let gateway = m.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    let metric = m.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Priority(p) => Some(*p),
                        _ => None,
                    });
                    (len > network.prefix_len()
                        && network.contains(&subnet)
                        && metric == Some(route_metric(subnet)))
                    .then_some(DirectRoute { subnet, gateway })
                })
                .filter(|r| !keep.contains(r))
                .collect(),
        };
        let requests: Vec<_> = stale
            .iter()
            .map(|r| {
                // No metric: the kernel removes the route whatever metric it carries; the
                // gateway and device make sure only the direct route goes.
                let msg = direct_route(r, index).build();
                let req = self.handle.route().del(msg).execute();
                let what = format!("remove route {} via {} dev {dev}", r.subnet, r.gateway);
                async move {
                    match req.await {
                        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_esrch() => {
                            Ok(())
                        }
                        r => r.map_err(nl(what)),
                    }
                }
            })
            .collect();
        pipelined(requests).await
    }

    /// Every IPv4 route the kernel lists (all tables).
    async fn ipv4_routes(&self) -> Result<Vec<RouteMessage>, KernelError> {
        self.handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes"))
    }

    /// IPv4 main-table unicast routes whose output device is `index`, except the kernel's own.
    async fn routes_on(&self, index: u32) -> Result<Vec<RouteMessage>, KernelError> {
        Ok(self
            .ipv4_routes()
            .await?
            .into_iter()
            .filter(|m| {
                m.header.table == 254
                    && m.header.protocol != RouteProtocol::Kernel
                    && m.attributes
                        .iter()
                        .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
            })
            .collect())
    }

    /// Finds the underlay: the device `iface` (or, without it, the device holding `public_ip`,
    /// or else the device of the default route) and its IPv4 address (`public_ip` when given,
    /// else the device's first IPv4 address).
    ///
    /// # Errors
    /// [`KernelError::Underlay`] naming what is missing, or a netlink failure.
    pub async fn underlay(
        &self,
        iface: Option<&str>,
        public_ip: Option<Ipv4Addr>,
    ) -> Result<Underlay, KernelError> {
        let addrs: Vec<(u32, Ipv4Addr)> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(nl("list addresses"))?
            .into_iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some((m.header.index, *ip)),
                    _ => None,
                })
            })
            .collect();
        let index = if let Some(name) = iface {
            self.link_by_name(name)
                .await?
                .ok_or_else(|| KernelError::Underlay(format!("interface {name} does not exist")))?
                .index
        } else if let Some(ip) = public_ip {
            addrs.iter().find(|(_, a)| *a == ip).map(|(i, _)| *i).ok_or_else(|| {
                KernelError::Underlay(format!("no interface holds the public IP {ip}"))
            })?
        } else {
            let routes = self.ipv4_routes().await?;
            routes
                .iter()
                .filter(|m| m.header.table == 254 && m.header.destination_prefix_length == 0)
                .find_map(|m| {
                    m.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    })
                })
                .ok_or_else(|| {
                    KernelError::Underlay(
                        "no default route; pass --iface or --public-ip".to_string(),
                    )
                })?
        };
        let link = self.link_by_index(index).await?;
        let ip = match public_ip {
            Some(ip) => {
                if !addrs.iter().any(|(i, a)| *i == index && *a == ip) {
                    return Err(KernelError::Underlay(format!(
                        "public IP {ip} is not an address of {}",
                        link.name
                    )));
                }
                ip
            }
            None => addrs.iter().find(|(i, _)| *i == index).map(|(_, a)| *a).ok_or_else(|| {
                KernelError::Underlay(format!("{} has no IPv4 address", link.name))
            })?,
        };
        Ok(Underlay { link, ip })
    }

    /// The MAC of the underlay next hop towards `dst` (the gateway of the kernel's route, or
    /// `dst` itself when it is on-link), if the neighbour table has it resolved. `None` means
    /// "not resolved yet": the caller falls back to the kernel path, which also triggers ARP.
    ///
    /// # Errors
    /// A netlink failure (including "no route to `dst`").
    pub async fn next_hop_mac(&self, dst: Ipv4Addr) -> Result<Option<(u32, [u8; 6])>, KernelError> {
        self.next_hop_macs(&[dst]).await?.pop().unwrap_or(Ok(None))
    }

    /// Every IPv4 neighbour entry of every interface.
    async fn list_neighbours(&self) -> Result<Vec<NeighbourMessage>, KernelError> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list neighbours"))
    }

    /// Asks the kernel how it would send to `dst` (`ip route get <dst>`): the output device, the
    /// source address it would pick, the gateway, and whether `dst` is one of this host's own
    /// addresses.
    ///
    /// # Errors
    /// A netlink failure, e.g. "network unreachable" when no route covers `dst`.
    pub async fn route_get(&self, dst: Ipv4Addr) -> Result<RouteLookup, KernelError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, 32).build();
        let route = self
            .handle
            .route()
            .get(msg)
            .execute()
            .try_next()
            .await
            .map_err(nl(format!("route get {dst}")))?
            .ok_or_else(|| KernelError::Underlay(format!("no route to {dst}")))?;
        let mut out = RouteLookup {
            oif: None,
            source: None,
            gateway: None,
            local: route.header.kind == RouteType::Local,
        };
        for a in &route.attributes {
            match a {
                RouteAttribute::Oif(i) => out.oif = Some(*i),
                RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => out.source = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => out.gateway = Some(*ip),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// A change in the kernel's neighbour table, from [`watch_neighbours`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourChange {
    /// A neighbour's address and its MAC, or `None` when the entry was removed or cannot be used
    /// (incomplete, failed).
    Changed(Ipv4Addr, Option<[u8; 6]>),
    /// The socket's buffer overflowed and changes were lost: look every neighbour up again.
    Lost,
}

/// Follows the kernel's neighbour table (the `RTNLGRP_NEIGH` multicast group) on the interface
/// `ifindex`: every added, changed or removed IPv4 neighbour there arrives on the returned
/// channel. Needs a tokio runtime; the channel closes if the netlink socket fails.
///
/// # Errors
/// The netlink socket cannot be opened or joined to the group.
pub fn watch_neighbours(
    ifindex: u32,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<NeighbourChange>, KernelError> {
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::sys::{AsyncSocket, SocketAddr};

    let (mut conn, _handle, mut messages) =
        rtnetlink::new_connection().map_err(KernelError::Connect)?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_NEIGH))
        .map_err(KernelError::Connect)?;
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let (n, removed) = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => (n, false),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => (n, true),
                NetlinkPayload::Overrun(_) => {
                    if tx.send(NeighbourChange::Lost).is_err() {
                        return;
                    }
                    continue;
                }
                _ => continue,
            };
            if n.header.ifindex != ifindex {
                continue;
            }
            let Some(ip) = neighbour_ip(&n) else { continue };
            let mac = (!removed && neighbour_usable(&n)).then(|| neighbour_mac(&n)).flatten();
            if tx.send(NeighbourChange::Changed(ip, mac)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// A neighbour entry's IPv4 address.
fn neighbour_ip(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// Whether a neighbour entry's MAC may be used (not incomplete or failed).
fn neighbour_usable(n: &NeighbourMessage) -> bool {
    !matches!(
        n.header.state,
        NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
    )
}

/// A neighbour entry's link-layer address, when it is a MAC.
fn neighbour_mac(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(l);
            Some(m)
        }
        _ => None,
    })
}

/// The kernel's answer to [`Kernel::route_get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    /// The output device's index.
    pub oif: Option<u32>,
    /// The source address the kernel would use.
    pub source: Option<Ipv4Addr>,
    /// The next hop, when the destination is not on-link.
    pub gateway: Option<Ipv4Addr>,
    /// The destination is an address of this host.
    pub local: bool,
}

impl Kernel {
    /// [`Kernel::next_hop_mac`] for many destinations at once: the route look-ups pipelined
    /// (see `IN_FLIGHT`) and the neighbour table listed once, instead of a round trip and a
    /// whole neighbour listing per destination (which, with thousands of peers, is a listing of
    /// thousands of overlay neighbours each time). One answer per destination, in order.
    ///
    /// # Errors
    /// Listing the neighbours failed; a failed route look-up is that destination's answer.
    pub async fn next_hop_macs(
        &self,
        dsts: &[Ipv4Addr],
    ) -> Result<Vec<Result<Option<(u32, [u8; 6])>, KernelError>>, KernelError> {
        let lookups: Vec<_> = dsts.iter().map(|&d| self.route_hop(d)).collect();
        let hops: Vec<Result<(u32, Ipv4Addr), KernelError>> =
            futures::stream::iter(lookups).buffered(IN_FLIGHT).collect().await;
        if hops.iter().all(Result::is_err) {
            return Ok(hops.into_iter().map(|h| h.map(|_| None)).collect());
        }
        let neighs = self.list_neighbours().await?;
        let mut resolved: HashMap<(u32, Ipv4Addr), [u8; 6]> = HashMap::new();
        for n in neighs.iter().filter(|n| neighbour_usable(n)) {
            if let (Some(ip), Some(mac)) = (neighbour_ip(n), neighbour_mac(n)) {
                resolved.insert((n.header.ifindex, ip), mac);
            }
        }
        Ok(hops
            .into_iter()
            .map(|h| h.map(|(oif, hop)| resolved.get(&(oif, hop)).map(|mac| (oif, *mac))))
            .collect())
    }

    /// [`Kernel::route_get`] for many destinations, pipelined (see `IN_FLIGHT`); one answer per
    /// destination, in order.
    pub async fn route_gets(&self, dsts: &[Ipv4Addr]) -> Vec<Result<RouteLookup, KernelError>> {
        let lookups: Vec<_> = dsts.iter().map(|&d| self.route_get(d)).collect();
        futures::stream::iter(lookups).buffered(IN_FLIGHT).collect().await
    }

    /// The output device and next hop (the gateway, or `dst` itself when on-link) of the
    /// kernel's route to `dst`.
    async fn route_hop(&self, dst: Ipv4Addr) -> Result<(u32, Ipv4Addr), KernelError> {
        let r = self.route_get(dst).await?;
        let oif =
            r.oif.ok_or_else(|| KernelError::Underlay(format!("route to {dst} has no device")))?;
        Ok((oif, r.gateway.unwrap_or(dst)))
    }
}

fn route_destination(msg: &RouteMessage) -> (Ipv4Addr, u8) {
    let dst = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    (dst, msg.header.destination_prefix_length)
}

const fn libc_enodev() -> i32 {
    19
}

const fn libc_enoent() -> i32 {
    2
}

const fn libc_esrch() -> i32 {
    3
}

/// The metric of the route to a peer subnet: the low 8 bits of the subnet's number, 1..=256.
///
/// Each peer route has its own gateway (`<subnet>.0`, as flannel's), so each needs its own
/// `fib_info` in the kernel, and the kernel finds an existing `fib_info` by a hash over
/// protocol, scope, preferred source, *metric* and output device, but not the gateway: with one
/// metric, all peer routes of the overlay device share one hash chain and every insert walks
/// all of them (10,000 routes: 1.7 s of kernel time on the test machine, 10× the 1,000-route
/// cost per route). Spreading the metric over 256 values splits that chain 256 ways (10,000
/// routes: 0.2 s). A metric only orders routes to the same prefix, and there is one route per
/// peer prefix, so forwarding is unchanged.
fn route_metric(subnet: Ipv4Net) -> u32 {
    let number = u32::from(subnet.network()).checked_shr(32 - u32::from(subnet.prefix_len()));
    (number.unwrap_or(0) & 0xff) + 1
}

/// How many netlink requests one convergence keeps in flight. Pipelining turns one round trip
/// per route and neighbour into a stream the kernel answers back to back (10,000 peers: seconds
/// → a fraction of a second); 128 small acknowledgements fit any socket buffer.
const IN_FLIGHT: usize = 128;

/// Runs `requests` with up to [`IN_FLIGHT`] outstanding; all of them run, the first error is
/// returned.
async fn pipelined<F>(requests: impl IntoIterator<Item = F>) -> Result<(), KernelError>
where
    F: Future<Output = Result<(), KernelError>>,
{
    let mut results = futures::stream::iter(requests).buffer_unordered(IN_FLIGHT);
    let mut first = None;
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linen_testbed::Testbed;

    /// Runs `f` on a thread inside `ns` (rtnetlink sockets belong to the opener's namespace).
    fn in_netns<T: Send + 'static>(
        ns: &linen_testbed::Netns,
        f: impl FnOnce(Kernel) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        let path = ns.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let k = Kernel::connect().expect("rtnetlink");
                f(k).await
            })
        })
        .join()
        .expect("netns thread")
    }

    const MAC_2: [u8; 6] = [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c];
    const MAC_3: [u8; 6] = [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x03];

    fn state(routes: &[(&str, [u8; 6])]) -> OverlayState {
        OverlayState {
            local_subnet: "10.244.1.0/24".parse().unwrap(),
            mtu: 1450,
            routes: routes
                .iter()
                .map(|(s, m)| OverlayRoute { subnet: s.parse().unwrap(), vtep_mac: *m })
                .collect(),
        }
    }

    #[test]
    fn overlay_programming_converges_and_is_idempotent() {
        let mut tb = Testbed::new("kern");
        let ns = tb.netns("n");
        ns.sh("ip link add eth0 mtu 1500 type veth peer name eth0p
             ip link set eth0 up && ip link set eth0p up
             ip addr add 192.168.90.1/24 dev eth0
             ip route add default via 192.168.90.254 dev eth0
             ip neigh replace 192.168.90.254 lladdr 02:00:00:00:00:fe dev eth0 nud permanent");

        // linen.1 as linend makes it: a TAP, held open (so it has carrier) for the whole test.
        let (_tap, underlay) = in_netns(&ns, |k| {
            Box::pin(async move {
                let tap = linen_dataplane::io::tun::TunQueue::open(OVERLAY_DEV).unwrap();
                k.set_mac(OVERLAY_DEV, [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8]).await.unwrap();
                let st = state(&[("10.244.2.0/24", MAC_2), ("10.244.3.0/24", MAC_3)]);
                k.apply_overlay(OVERLAY_DEV, &st).await.unwrap();
                k.apply_overlay(OVERLAY_DEV, &st).await.unwrap();
                (tap, k.underlay(None, None).await.unwrap())
            })
        });
        assert_eq!(underlay.link.name, "eth0");
        assert_eq!(underlay.ip, Ipv4Addr::new(192, 168, 90, 1));
        assert_eq!(underlay.link.mtu, 1500);
        let link = ns.sh("ip -o link show linen.1");
        assert!(
            link.contains("mtu 1450") && link.contains(",UP") && link.contains("2a:a9:df:4e:cb:b8"),
            "{link}"
        );
        assert_eq!(ns.sh("ip -4 -o addr show dev linen.1").matches("inet ").count(), 1);
        assert!(ns.sh("ip -4 -o addr show dev linen.1").contains("10.244.1.0/32"));
        let routes = ns.sh("ip route show dev linen.1");
        assert!(
            routes.contains("10.244.2.0/24 via 10.244.2.0 proto static metric 3 onlink"),
            "{routes}"
        );
        assert!(
            routes.contains("10.244.3.0/24 via 10.244.3.0 proto static metric 4 onlink"),
            "{routes}"
        );
        assert_eq!(routes.lines().count(), 2, "{routes}");
        let neigh = ns.sh("ip neigh show dev linen.1");
        assert!(neigh.contains("10.244.2.0 lladdr 26:69:c7:3a:5b:8c PERMANENT"), "{neigh}");
        assert!(neigh.contains("10.244.3.0 lladdr 26:69:c7:3a:5b:03 PERMANENT"), "{neigh}");

        // Stale entries (a leftover route, neighbour and address), a peer gone, a MAC changed.
        ns.sh("ip route add 10.244.9.0/24 via 10.244.9.0 dev linen.1 onlink
             ip neigh replace 10.244.9.0 lladdr 02:00:00:00:00:09 dev linen.1 nud permanent
             ip addr add 10.9.9.9/32 dev linen.1");
        in_netns(&ns, |k| {
            Box::pin(async move {
                let st = state(&[("10.244.2.0/24", MAC_3)]);
                k.apply_overlay(OVERLAY_DEV, &st).await.unwrap();
            })
        });
        let routes = ns.sh("ip route show dev linen.1");
        assert_eq!(
            routes.trim(),
            "10.244.2.0/24 via 10.244.2.0 proto static metric 3 onlink",
            "{routes}"
        );
        let neigh = ns.sh("ip neigh show dev linen.1");
        assert_eq!(neigh.trim(), "10.244.2.0 lladdr 26:69:c7:3a:5b:03 PERMANENT", "{neigh}");
        let addrs = ns.sh("ip -4 -o addr show dev linen.1");
        assert!(addrs.contains("10.244.1.0/32") && !addrs.contains("10.9.9.9"), "{addrs}");

        // Only the difference: a peer added, then one removed and the other's MAC changed.
        in_netns(&ns, |k| {
            Box::pin(async move {
                let old = state(&[("10.244.2.0/24", MAC_3)]);
                let mid = state(&[("10.244.2.0/24", MAC_3), ("10.244.4.0/24", MAC_2)]);
                k.apply_overlay_changes(OVERLAY_DEV, &old, &mid).await.unwrap();
                let new = state(&[("10.244.4.0/24", MAC_3)]);
                k.apply_overlay_changes(OVERLAY_DEV, &mid, &new).await.unwrap();
                // Nothing changed: nothing to do, and still fine.
                k.apply_overlay_changes(OVERLAY_DEV, &new, &new).await.unwrap();
            })
        });
        let routes = ns.sh("ip route show dev linen.1");
        assert_eq!(
            routes.trim(),
            "10.244.4.0/24 via 10.244.4.0 proto static metric 5 onlink",
            "{routes}"
        );
        let neigh = ns.sh("ip neigh show dev linen.1");
        assert_eq!(neigh.trim(), "10.244.4.0 lladdr 26:69:c7:3a:5b:03 PERMANENT", "{neigh}");

        // Next-hop MACs: via the gateway (resolved), on-link and unresolved.
        let (gw, unresolved) = in_netns(&ns, |k| {
            Box::pin(async move {
                let gw = k.next_hop_mac(Ipv4Addr::new(198, 51, 100, 7)).await.unwrap();
                let unresolved = k.next_hop_mac(Ipv4Addr::new(192, 168, 90, 77)).await.unwrap();
                (gw, unresolved)
            })
        });
        assert_eq!(gw.map(|(_, m)| m), Some([2, 0, 0, 0, 0, 0xfe]));
        assert_eq!(unresolved, None);
        // The same answers in one batch, in order.
        let batch = in_netns(&ns, |k| {
            Box::pin(async move {
                let dsts = [
                    Ipv4Addr::new(198, 51, 100, 7),
                    Ipv4Addr::new(192, 168, 90, 77),
                    Ipv4Addr::new(198, 51, 100, 8),
                ];
                let answers = k.next_hop_macs(&dsts).await.unwrap();
                answers.into_iter().map(|a| a.map(|m| m.map(|(_, mac)| mac))).collect::<Vec<_>>()
            })
        });
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].as_ref().ok(), Some(&Some([2, 0, 0, 0, 0, 0xfe])));
        assert_eq!(batch[1].as_ref().ok(), Some(&None));
        assert_eq!(batch[2].as_ref().ok(), Some(&Some([2, 0, 0, 0, 0, 0xfe])));

        // Removing the device (a queue still open), then removing it again, is fine.
        in_netns(&ns, |k| {
            Box::pin(async move {
                k.delete_link(OVERLAY_DEV).await.unwrap();
                assert!(k.link_by_name(OVERLAY_DEV).await.unwrap().is_none());
                k.delete_link(OVERLAY_DEV).await.unwrap();
            })
        });
    }

    /// Direct routes replace overlay routes in place and back, stale ones are found by listing,
    /// and routes that are not linen's are left alone.
    #[test]
    fn direct_routes_replace_overlay_routes_and_back() {
        let mut tb = Testbed::new("kdir");
        let ns = tb.netns("n");
        ns.sh("ip link add eth0 mtu 1500 type veth peer name eth0p
             ip link set eth0 up && ip link set eth0p up
             ip addr add 192.168.91.1/24 dev eth0
             ip route add 10.244.9.0/24 via 192.168.91.9 dev eth0
             ip route add 10.245.0.0/24 via 192.168.91.8 dev eth0 proto static
             ip route add 10.244.7.0/24 via 192.168.91.7 dev eth0 proto static metric 100
             ip route add 10.244.0.0/16 via 192.168.91.6 dev eth0 proto static metric 1");
        let direct = |s: &str, gw: u8| DirectRoute {
            subnet: s.parse().unwrap(),
            gateway: Ipv4Addr::new(192, 168, 91, gw),
        };
        let network: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let (_tap, eth0) = in_netns(&ns, move |k| {
            Box::pin(async move {
                let tap = linen_dataplane::io::tun::TunQueue::open(OVERLAY_DEV).unwrap();
                let st = state(&[("10.244.2.0/24", MAC_2), ("10.244.3.0/24", MAC_3)]);
                k.apply_overlay(OVERLAY_DEV, &st).await.unwrap();
                let eth0 = k.link_by_name("eth0").await.unwrap().unwrap().index;
                k.replace_direct_routes(eth0, "eth0", &[direct("10.244.2.0/24", 2)]).await.unwrap();
                (tap, eth0)
            })
        });
        // The direct route took the overlay route's place: one route to the subnet.
        let r = ns.sh("ip route show 10.244.2.0/24");
        assert_eq!(
            r.trim(),
            "10.244.2.0/24 via 192.168.91.2 dev eth0 proto static metric 3",
            "{r}"
        );
        let r = ns.sh("ip route show 10.244.3.0/24");
        assert!(r.contains("dev linen.1"), "{r}");

        // The overlay route takes it back; removing the (now replaced) direct route is no error
        // and leaves the overlay route.
        in_netns(&ns, move |k| {
            Box::pin(async move {
                let st = state(&[("10.244.2.0/24", MAC_2), ("10.244.3.0/24", MAC_3)]);
                k.apply_overlay(OVERLAY_DEV, &st).await.unwrap();
                let known = [direct("10.244.2.0/24", 2)];
                k.remove_direct_routes(eth0, "eth0", network, &[], Some(&known)).await.unwrap();
            })
        });
        let r = ns.sh("ip route show 10.244.2.0/24");
        assert_eq!(
            r.trim(),
            "10.244.2.0/24 via 10.244.2.0 dev linen.1 proto static metric 3 onlink"
        );

        // Without a record of what was programmed, a listing finds linen's direct routes (also
        // leftovers) and keeps the wanted ones; the operator's routes (protocol boot, or outside
        // the cluster network) stay.
        in_netns(&ns, move |k| {
            Box::pin(async move {
                let routes = [direct("10.244.4.0/24", 4), direct("10.244.5.0/24", 5)];
                k.replace_direct_routes(eth0, "eth0", &routes).await.unwrap();
                let keep = [direct("10.244.5.0/24", 5)];
                k.remove_direct_routes(eth0, "eth0", network, &keep, None).await.unwrap();
            })
        });
        let r = ns.sh("ip route show dev eth0");
        assert!(!r.contains("10.244.4.0/24"), "{r}");
        assert!(r.contains("10.244.5.0/24 via 192.168.91.5 proto static metric 6"), "{r}");
        assert!(r.contains("10.244.9.0/24 via 192.168.91.9"), "{r}");
        assert!(r.contains("10.245.0.0/24 via 192.168.91.8"), "{r}");
        assert!(r.contains("10.244.7.0/24 via 192.168.91.7 proto static metric 100"), "{r}");
        assert!(r.contains("10.244.0.0/16 via 192.168.91.6 proto static metric 1"), "{r}");

        // A gateway that is not on the segment is refused.
        let err = in_netns(&ns, move |k| {
            Box::pin(async move {
                let bad = [DirectRoute {
                    subnet: "10.244.6.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(192, 168, 92, 6),
                }];
                k.replace_direct_routes(eth0, "eth0", &bad).await.err().map(|e| e.to_string())
            })
        });
        let err = err.expect("a gateway off the segment was accepted");
        assert!(err.contains("add route 10.244.6.0/24 via 192.168.92.6 dev eth0"), "{err}");
    }

    #[test]
    fn route_metrics_spread_over_subnets() {
        let m = |s: &str| route_metric(s.parse().unwrap());
        assert_eq!(m("10.244.2.0/24"), 3);
        assert_eq!(m("10.244.255.0/24"), 256);
        assert_eq!(m("10.1.0.0/24"), 1);
        assert_eq!(m("10.244.0.4/30"), 2);
        assert_eq!(m("0.0.0.0/0"), 1);
        let distinct: HashSet<u32> =
            (0..10_000u32).map(|i| m(&format!("10.{}.{}.0/24", i / 256, i % 256))).collect();
        assert_eq!(distinct.len(), 256);
    }
}
