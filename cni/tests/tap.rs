//! TAP mode: the plugin creates a persistent TAP in the pod; a "guest" (this test, holding the
//! TAP open like a hypervisor would) uses the address from the result and reaches the gateway
//! and a bridge-mode pod on the same node.

mod common;

use std::fs::File;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{first_ip, Node};
use serde_json::json;

const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn arp(op: u16, src_mac: [u8; 6], src_ip: Ipv4Addr, dst_mac: [u8; 6], dst_ip: Ipv4Addr) -> Vec<u8> {
    let eth_dst = if op == 1 { [0xff; 6] } else { dst_mac };
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&dst_ip.octets());
    f
}

fn echo_request(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"linen tap guest payload");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = 20 + icmp.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// The guest: resolves `target` by ARP and gets an ICMP echo reply from it, answering ARP for
/// its own address meanwhile. Returns a description of what failed.
fn guest_ping(tap: &tokio_tun::Tun, me: Ipv4Addr, target: Ipv4Addr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    let mut target_mac = None;
    let mut next_send = Instant::now();
    let mut seq = 0u16;
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            let frame = match target_mac {
                None => arp(1, GUEST_MAC, me, [0; 6], target),
                Some(mac) => {
                    seq += 1;
                    echo_request(mac, me, target, seq)
                }
            };
            tap.try_send(&frame).map_err(|e| format!("send on the TAP: {e}"))?;
            next_send = Instant::now() + Duration::from_millis(200);
        }
        let n = match tap.try_recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => return Err(format!("recv on the TAP: {e}")),
        };
        let f = &buf[..n];
        if n < 42 {
            continue;
        }
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        if ethertype == 0x0806 {
            let op = u16::from_be_bytes([f[20], f[21]]);
            let spa = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
            let tpa = Ipv4Addr::new(f[38], f[39], f[40], f[41]);
            let sha: [u8; 6] = f[22..28].try_into().unwrap();
            if op == 2 && spa == target && target_mac.is_none() {
                target_mac = Some(sha);
                next_send = Instant::now();
            } else if op == 1 && tpa == me {
                tap.try_send(&arp(2, GUEST_MAC, me, sha, spa)).map_err(|e| e.to_string())?;
            }
        } else if ethertype == 0x0800 && f[14 + 9] == 1 && n >= 14 + 20 + 8 {
            let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
            if src == target && f[34] == 0 {
                return Ok(());
            }
        }
    }
    Err(format!("no echo reply from {target} (resolved MAC: {target_mac:?})"))
}

#[test]
fn tap_mode_passes_traffic_and_cleans_up() {
    let mut node = Node::new("cnitap");
    let vm = node.pod("vm");
    let peer = node.pod("peer");
    let tap_conf = node.conf("1.1.0", json!({"mode": "tap"}));
    let conf = node.conf("1.1.0", json!({}));
    let r = node.add("vm1", &vm, &tap_conf);
    let peer_ip: Ipv4Addr = first_ip(&node.add("peer1", &peer, &conf)).parse().unwrap();
    let guest_ip: Ipv4Addr = first_ip(&r).parse().unwrap();

    // Result: the TAP in the sandbox, with its MAC, holds the guest's address.
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    assert_eq!(r["interfaces"][2]["sandbox"], vm.path());
    assert_eq!(r["ips"][0]["interface"], 2);
    let link = vm.sh("ip -d -o link show eth0");
    assert!(link.contains("tap") && link.contains("persist"), "a persistent TAP: {link}");
    assert!(link.contains(r["interfaces"][2]["mac"].as_str().unwrap()), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");

    // No hairpin on either bridge: with it the pod bridge learns the guest's MAC from its own
    // reflected broadcasts on the veth port and drops the replies.
    let host_end = r["interfaces"][1]["name"].as_str().unwrap();
    assert!(node.ns.sh(&format!("ip -d link show {host_end}")).contains("hairpin off"));
    assert!(!vm.sh("ip -d link show").contains("hairpin on"));

    // CHECK accepts it.
    let check_conf = node.conf("1.1.0", json!({"mode": "tap", "prevResult": r}));
    let c = node.cmd("CHECK", "vm1", &vm.path(), "eth0", &check_conf);
    assert_eq!(c.status, 0, "{}", c.stdout);

    // The guest, attached to the TAP from inside the pod namespace.
    let netns = File::open(vm.path()).unwrap();
    let outcome = linen_cni::netlink::in_netns(&netns, move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        let _g = rt.enter();
        let taps =
            tokio_tun::Tun::builder().name("eth0").tap().build().map_err(|e| e.to_string())?;
        let tap = &taps[0];
        guest_ping(tap, guest_ip, Ipv4Addr::new(10, 244, 8, 1))?;
        guest_ping(tap, guest_ip, peer_ip)
    })
    .unwrap();
    outcome.unwrap();

    // Removing the TAP is noticed by CHECK.
    vm.sh("ip link del eth0");
    assert!(node.cmd("CHECK", "vm1", &vm.path(), "eth0", &check_conf).err(103).contains("TAP"));

    for (id, ns, c) in [("vm1", &vm, &tap_conf), ("peer1", &peer, &conf)] {
        assert_eq!(node.cmd("DEL", id, &ns.path(), "eth0", c).status, 0);
    }
    assert_eq!(vm.sh("ip -o link show").lines().count(), 1, "only lo in the pod");
    assert!(node.reservations().is_empty());
    assert!(node.bridge_ports().is_empty());
}

#[test]
fn tap_mode_del_removes_the_tap_and_failed_add_leaves_nothing() {
    let mut node = Node::new("cnitd");
    let vm = node.pod("vm");
    let tap_conf = node.conf("1.0.0", json!({"mode": "tap"}));
    node.add("vm1", &vm, &tap_conf);
    assert_eq!(node.cmd("DEL", "vm1", &vm.path(), "eth0", &tap_conf).status, 0);
    assert_eq!(vm.sh("ip -o link show").lines().count(), 1, "only lo in the pod");
    // An interface already named like the TAP: ADD fails and undoes the veth and reservation.
    vm.sh("ip link add eth0 type veth peer name x0");
    node.cmd("ADD", "vm1", &vm.path(), "eth0", &tap_conf).err(7);
    assert!(node.reservations().is_empty());
    assert!(node.bridge_ports().is_empty());
    assert_eq!(vm.sh("ip -o link show").lines().count(), 3, "lo and the two ends of x0 only");
}
