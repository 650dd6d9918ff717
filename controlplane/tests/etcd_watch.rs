//! Peer watch against a real etcd: changes, compaction, bad values, flanneld-written leases and
//! an etcd outage.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use linen_controlplane::config::NetworkConfig;
use linen_controlplane::lease::MacAddr;
use linen_controlplane::registry::{EtcdOptions, EtcdRegistry, Registry, TlsFiles};
use linen_controlplane::watch::{Peer, PeerEvent, PeerUpdate, PeerWatcher, WatchUpdate};
use linen_testbed::etcd::EtcdServer;

const PREFIX: &str = "/coreos.com/network";

async fn registry(etcd: &EtcdServer) -> EtcdRegistry {
    EtcdRegistry::connect(&EtcdOptions {
        endpoints: vec![etcd.endpoint()],
        prefix: PREFIX.into(),
        tls: TlsFiles::default(),
    })
    .await
    .expect("connect")
}

fn lease(ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

fn put(etcd: &EtcdServer, subnet_key: &str, value: &str) {
    etcd.etcdctl_ok(&["put", &format!("{PREFIX}/subnets/{subnet_key}"), value]);
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

async fn next(w: &mut PeerWatcher<EtcdRegistry>) -> WatchUpdate {
    tokio::time::timeout(Duration::from_secs(20), w.next()).await.expect("watch update within 20 s")
}

async fn peers(w: &mut PeerWatcher<EtcdRegistry>) -> PeerUpdate {
    match next(w).await {
        WatchUpdate::Peers(u) => u,
        WatchUpdate::Disconnected { error } => panic!("unexpected disconnect: {error}"),
    }
}

fn peer(subnet: &str, ip: [u8; 4], mac: &str) -> Peer {
    Peer {
        subnet: net(subnet),
        public_ip: Ipv4Addr::from(ip),
        vtep_mac: mac.parse::<MacAddr>().unwrap(),
        vni: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sees_add_update_delete_and_skips_malformed_values() {
    let etcd = EtcdServer::start();
    put(&etcd, "10.244.2.0-24", &lease("192.168.0.2", "02:00:00:00:00:02"));
    let mut w = PeerWatcher::new(registry(&etcd).await, None);
    let u = peers(&mut w).await;
    assert!(u.resync);
    assert_eq!(
        u.events,
        vec![PeerEvent::Upsert(peer("10.244.2.0/24", [192, 168, 0, 2], "02:00:00:00:00:02"))]
    );

    put(&etcd, "10.244.3.0-24", &lease("192.168.0.3", "02:00:00:00:00:03"));
    let u = peers(&mut w).await;
    assert!(!u.resync);
    assert_eq!(
        u.events,
        vec![PeerEvent::Upsert(peer("10.244.3.0/24", [192, 168, 0, 3], "02:00:00:00:00:03"))]
    );

    // VtepMAC change on an existing key is an update.
    put(&etcd, "10.244.3.0-24", &lease("192.168.0.3", "02:00:00:00:00:33"));
    assert_eq!(
        peers(&mut w).await.events,
        vec![PeerEvent::Upsert(peer("10.244.3.0/24", [192, 168, 0, 3], "02:00:00:00:00:33"))]
    );

    // A malformed value and a non-vxlan lease are skipped; the stream goes on.
    put(&etcd, "10.244.4.0-24", "{\"PublicIP\": 7");
    put(&etcd, "10.244.5.0-24", r#"{"PublicIP":"192.168.0.5","BackendType":"host-gw"}"#);
    put(&etcd, "10.244.6.0-24", &lease("192.168.0.6", "02:00:00:00:00:06"));
    let u = peers(&mut w).await;
    assert_eq!(
        u.events,
        vec![PeerEvent::Upsert(peer("10.244.6.0/24", [192, 168, 0, 6], "02:00:00:00:00:06"))]
    );

    etcd.etcdctl_ok(&["del", &format!("{PREFIX}/subnets/10.244.2.0-24")]);
    assert_eq!(
        peers(&mut w).await.events,
        vec![PeerEvent::Remove { subnet: net("10.244.2.0/24") }]
    );
    let known: Vec<Ipv4Net> = w.peers().map(|p| p.subnet).collect();
    assert_eq!(known, vec![net("10.244.3.0/24"), net("10.244.6.0/24")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_forces_a_resync_with_a_correct_diff() {
    let etcd = EtcdServer::start();
    put(&etcd, "10.244.2.0-24", &lease("192.168.0.2", "02:00:00:00:00:02"));
    put(&etcd, "10.244.3.0-24", &lease("192.168.0.3", "02:00:00:00:00:03"));
    let reg = registry(&etcd).await;
    let mut w = PeerWatcher::new(reg.clone(), None);
    assert_eq!(peers(&mut w).await.events.len(), 2);
    // The watch opens on the next call, from the snapshot revision + 1. Change things and compact
    // that history away before it does.
    etcd.etcdctl_ok(&["del", &format!("{PREFIX}/subnets/10.244.2.0-24")]);
    put(&etcd, "10.244.3.0-24", &lease("192.168.0.3", "02:00:00:00:00:33"));
    put(&etcd, "10.244.4.0-24", &lease("192.168.0.4", "02:00:00:00:00:04"));
    put(&etcd, "10.244.7.0-24", &lease("192.168.0.7", "02:00:00:00:00:07"));
    etcd.etcdctl_ok(&["del", &format!("{PREFIX}/subnets/10.244.7.0-24")]);
    let rev = reg.list_leases().await.unwrap().revision;
    etcd.etcdctl_ok(&["compact", &rev.to_string(), "--physical"]);
    let u = peers(&mut w).await;
    assert!(u.resync, "compaction must lead to a re-list");
    let mut ev = u.events.clone();
    ev.sort_by_key(|e| match e {
        PeerEvent::Upsert(p) => p.subnet,
        PeerEvent::Remove { subnet } => *subnet,
    });
    assert_eq!(
        ev,
        vec![
            PeerEvent::Remove { subnet: net("10.244.2.0/24") },
            PeerEvent::Upsert(peer("10.244.3.0/24", [192, 168, 0, 3], "02:00:00:00:00:33")),
            PeerEvent::Upsert(peer("10.244.4.0/24", [192, 168, 0, 4], "02:00:00:00:00:04")),
        ]
    );
    put(&etcd, "10.244.8.0-24", &lease("192.168.0.8", "02:00:00:00:00:08"));
    assert_eq!(
        peers(&mut w).await.events,
        vec![PeerEvent::Upsert(peer("10.244.8.0/24", [192, 168, 0, 8], "02:00:00:00:00:08"))]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flanneld_written_config_and_lease_are_honoured() {
    let etcd = EtcdServer::start();
    // Lower-case keys, as some flannel tooling writes them.
    etcd.etcdctl_ok(&[
        "put",
        &format!("{PREFIX}/config"),
        r#"{"network":"10.244.0.0/16","subnetlen":24,"backend":{"type":"vxlan","vni":1,"port":0}}"#,
    ]);
    let reg = registry(&etcd).await;
    let cfg = NetworkConfig::from_json(&reg.get_config().await.unwrap().unwrap()).unwrap();
    assert_eq!((cfg.backend.vni, cfg.backend.port), (1, 8472));
    assert_eq!(cfg.ipv4.unwrap().network, net("10.244.0.0/16"));
    // flanneld attaches its lease value to a 24 h etcd lease.
    let granted = etcd.etcdctl_ok(&["lease", "grant", "86400"]);
    let id = granted.split_whitespace().nth(1).expect("lease id in etcdctl output");
    etcd.etcdctl_ok(&[
        "put",
        "--lease",
        id,
        &format!("{PREFIX}/subnets/10.244.77.0-24"),
        r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
    ]);
    let mut w = PeerWatcher::new(reg, None);
    assert_eq!(
        peers(&mut w).await.events,
        vec![PeerEvent::Upsert(peer("10.244.77.0/24", [192, 168, 64, 3], "c6:d2:32:6f:8f:44"))]
    );
    // Its TTL running out (revoked here) removes the peer.
    etcd.etcdctl_ok(&["lease", "revoke", id]);
    assert_eq!(
        peers(&mut w).await.events,
        vec![PeerEvent::Remove { subnet: net("10.244.77.0/24") }]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_outage_then_reconnect_and_resume() {
    let mut etcd = EtcdServer::start();
    put(&etcd, "10.244.2.0-24", &lease("192.168.0.2", "02:00:00:00:00:02"));
    let mut w = PeerWatcher::new(registry(&etcd).await, None);
    assert_eq!(peers(&mut w).await.events.len(), 1);
    put(&etcd, "10.244.3.0-24", &lease("192.168.0.3", "02:00:00:00:00:03"));
    assert_eq!(peers(&mut w).await.events.len(), 1);
    assert!(w.is_connected());

    etcd.stop();
    match next(&mut w).await {
        WatchUpdate::Disconnected { error } => assert!(!error.to_string().is_empty()),
        other => panic!("expected a disconnect, got {other:?}"),
    }
    assert!(!w.is_connected());
    // Known peers stay while etcd is away.
    assert_eq!(w.peers().count(), 2);
    // ~10 s outage; the watcher keeps retrying inside next().
    let pending = tokio::time::timeout(Duration::from_secs(10), w.next()).await;
    assert!(pending.is_err(), "no update can arrive while etcd is down: {pending:?}");
    etcd.restart();
    put(&etcd, "10.244.4.0-24", &lease("192.168.0.4", "02:00:00:00:00:04"));
    let u = peers(&mut w).await;
    assert!(!u.resync, "resumed from the last revision, no re-list needed");
    assert_eq!(
        u.events,
        vec![PeerEvent::Upsert(peer("10.244.4.0/24", [192, 168, 0, 4], "02:00:00:00:00:04"))]
    );
    assert!(w.is_connected());
    assert_eq!(w.peers().count(), 3);
}
