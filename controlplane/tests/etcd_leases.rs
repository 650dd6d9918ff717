//! Lease manager and registry against a real etcd (Debian's etcd-server, started per test on a
//! loopback port).

use std::net::Ipv4Addr;
use std::time::Duration;

use linen_controlplane::config::NetworkConfig;
use linen_controlplane::lease::{decode_lease, LeaseValue};
use linen_controlplane::manager::{LeaseManager, LeaseOptions};
use linen_controlplane::registry::{EtcdOptions, EtcdRegistry, Registry, TlsFiles};
use linen_controlplane::subnet_env::SubnetEnv;
use linen_testbed::etcd::{EtcdCluster, EtcdServer, TlsCerts};

const PREFIX: &str = "/coreos.com/network";
const CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

async fn registry(endpoints: Vec<String>, tls: TlsFiles) -> EtcdRegistry {
    EtcdRegistry::connect(&EtcdOptions { endpoints, prefix: PREFIX.into(), tls })
        .await
        .expect("connect")
}

async fn config(reg: &EtcdRegistry) -> NetworkConfig {
    let raw = reg.get_config().await.expect("get config").expect("config present");
    NetworkConfig::from_json(&raw).expect("valid config")
}

fn opts(ip: [u8; 4], mac: &str, dir: &tempfile::TempDir) -> LeaseOptions {
    let mut o = LeaseOptions::new(Ipv4Addr::from(ip), mac.parse().unwrap(), 1450);
    o.subnet_file = Some(dir.path().join("subnet.env"));
    o.retry_interval = Duration::from_millis(100);
    o
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_is_byte_identical_to_flannel_and_subnet_env_written() {
    let etcd = EtcdServer::start();
    etcd.etcdctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let reg = registry(vec![etcd.endpoint()], TlsFiles::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = LeaseManager::new(
        reg.clone(),
        &config(&reg).await,
        opts([192, 168, 64, 3], "c6:d2:32:6f:8f:44", &dir),
    )
    .unwrap();
    let lease = m.acquire().await.expect("acquire");
    let key = format!("{PREFIX}/subnets/{}-24", lease.subnet.addr());
    let raw = etcd.etcdctl_ok(&["get", "--print-value-only", &key]);
    assert_eq!(
        raw.trim_end_matches('\n'),
        r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
    );
    // Attached to a TTL lease of 24 h.
    let ttl = etcd.etcdctl_ok(&["lease", "timetolive", &format!("{:x}", lease.etcd_lease_id)]);
    assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");
    let env = std::fs::read_to_string(dir.path().join("subnet.env")).unwrap();
    let gw = u32::from(lease.subnet.addr()) + 1;
    assert_eq!(
        env,
        format!("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n", Ipv4Addr::from(gw))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_managers_end_with_distinct_subnets() {
    let etcd = EtcdServer::start();
    etcd.etcdctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let reg = registry(vec![etcd.endpoint()], TlsFiles::default()).await;
    let cfg = config(&reg).await;
    for round in 0..5u8 {
        // Both nodes remember the same subnet, so both go for it first: one must lose the race.
        let same = SubnetEnv {
            network: "10.244.0.0/16".parse().unwrap(),
            // Outside the first 100 subnets, where the loser of a round picks its random one.
            subnet: format!("10.244.{}.0/24", 200 + round).parse().unwrap(),
            mtu: 1450,
            ip_masq: false,
        };
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        same.write(&da.path().join("subnet.env")).unwrap();
        same.write(&db.path().join("subnet.env")).unwrap();
        let a = LeaseManager::new(
            reg.clone(),
            &cfg,
            opts([192, 168, 1, round], "02:00:00:00:01:01", &da),
        )
        .unwrap();
        let b = LeaseManager::new(
            reg.clone(),
            &cfg,
            opts([192, 168, 2, round], "02:00:00:00:02:02", &db),
        )
        .unwrap();
        let (la, lb) = tokio::join!(a.acquire(), b.acquire());
        let (la, lb) = (la.expect("a acquires"), lb.expect("b acquires"));
        assert_ne!(la.subnet, lb.subnet, "round {round}");
        assert!(
            la.subnet == same.subnet || lb.subnet == same.subnet,
            "one of them got the remembered subnet"
        );
        for (l, ip) in
            [(&la, Ipv4Addr::new(192, 168, 1, round)), (&lb, Ipv4Addr::new(192, 168, 2, round))]
        {
            let kv = reg.get_lease(&l.key()).await.unwrap().expect("key present");
            assert!(
                matches!(decode_lease(&kv.value), Ok(LeaseValue::Vxlan(v)) if v.public_ip == ip)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_keeps_a_short_ttl_lease_alive() {
    let etcd = EtcdServer::start();
    etcd.etcdctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let reg = registry(vec![etcd.endpoint()], TlsFiles::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts([192, 168, 0, 1], "02:00:00:00:00:01", &dir);
    o.ttl = Duration::from_secs(3);
    o.renew_margin = Duration::from_secs(2);
    let m = LeaseManager::new(reg.clone(), &config(&reg).await, o).unwrap();
    let lease = m.acquire().await.unwrap();
    let handle = m.spawn(lease.clone());
    // Three TTLs later the key is still there, on the same etcd lease, and renewed.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let kv = reg.get_lease(&lease.key()).await.unwrap().expect("still leased");
    assert_eq!(kv.lease_id, lease.etcd_lease_id);
    assert!(handle.current().unwrap().expires_at > lease.expires_at + Duration::from_secs(4));
    handle.shutdown().await;
    // Without renewal it expires.
    let key = lease.key();
    let r = reg.clone();
    wait_for("expiry after shutdown", || {
        let r = r.clone();
        let key = key.clone();
        async move { r.get_lease(&key).await.unwrap().is_none() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_key_is_reacquired_and_restart_reuses_the_subnet() {
    let etcd = EtcdServer::start();
    etcd.etcdctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let reg = registry(vec![etcd.endpoint()], TlsFiles::default()).await;
    let cfg = config(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    let m = LeaseManager::new(reg.clone(), &cfg, opts([192, 168, 0, 1], "02:00:00:00:00:01", &dir))
        .unwrap();
    let lease = m.acquire().await.unwrap();
    let handle = m.spawn(lease.clone());
    // Let the manager's own-key watch start before the delete.
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.etcdctl_ok(&["del", &format!("{PREFIX}/subnets/{}", lease.key())]);
    wait_for("handle publishes the new lease", || {
        let cur = handle.current();
        async move { cur.is_some_and(|l| l.etcd_lease_id != lease.etcd_lease_id) }
    })
    .await;
    assert_eq!(handle.current().unwrap().subnet, lease.subnet);
    assert!(reg.get_lease(&lease.key()).await.unwrap().is_some());
    handle.shutdown().await;

    // A restart (new process: new MAC, no subnet file) gets the same subnet back by its PublicIP.
    let dir2 = tempfile::tempdir().unwrap();
    let m2 =
        LeaseManager::new(reg.clone(), &cfg, opts([192, 168, 0, 1], "02:00:00:00:00:aa", &dir2))
            .unwrap();
    let again = m2.acquire().await.unwrap();
    assert_eq!(again.subnet, lease.subnet);
    let kv = reg.get_lease(&again.key()).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&kv.value).contains("02:00:00:00:00:aa"));
    assert_eq!(reg.list_leases().await.unwrap().leases.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_client_certificates() {
    let certs = TlsCerts::generate();
    let etcd = EtcdServer::start_tls(&certs);
    etcd.etcdctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let tls = TlsFiles {
        ca_file: Some(certs.ca.clone()),
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
    };
    let reg = registry(vec![format!("127.0.0.1:{}", etcd.client_port)], tls).await;
    let dir = tempfile::tempdir().unwrap();
    let m = LeaseManager::new(
        reg.clone(),
        &config(&reg).await,
        opts([192, 168, 0, 1], "02:00:00:00:00:01", &dir),
    )
    .unwrap();
    let lease = m.acquire().await.expect("acquire over TLS");
    assert_eq!(reg.list_leases().await.unwrap().leases[0].key, lease.key());
    // Without a client certificate the server refuses.
    let no_cert = registry(
        vec![etcd.endpoint()],
        TlsFiles { ca_file: Some(certs.ca.clone()), ..Default::default() },
    )
    .await;
    assert!(no_cert.list_leases().await.is_err());
    // A key without its certificate is a setup error naming the problem.
    let half = EtcdRegistry::connect(&EtcdOptions {
        endpoints: vec![etcd.endpoint()],
        prefix: PREFIX.into(),
        tls: TlsFiles { key_file: Some(certs.client_key.clone()), ..Default::default() },
    })
    .await;
    assert!(half.unwrap_err().to_string().contains("certificate and key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn three_member_cluster_keeps_serving_with_one_member_killed() {
    let mut cluster = EtcdCluster::start();
    cluster.members[1].etcdctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let reg = registry(cluster.endpoints(), TlsFiles::default()).await;
    let cfg = config(&reg).await;
    let dir = tempfile::tempdir().unwrap();
    let first =
        LeaseManager::new(reg.clone(), &cfg, opts([192, 168, 0, 1], "02:00:00:00:00:01", &dir))
            .unwrap()
            .acquire()
            .await
            .unwrap();
    cluster.members[0].stop();
    // The remaining two keep quorum; a leader election may take a moment.
    let dir2 = tempfile::tempdir().unwrap();
    let m2 =
        LeaseManager::new(reg.clone(), &cfg, opts([192, 168, 0, 2], "02:00:00:00:00:02", &dir2))
            .unwrap();
    let mut second = None;
    for _ in 0..40 {
        match m2.acquire().await {
            Ok(l) => {
                second = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let second = second.expect("cluster with two of three members serves");
    assert_ne!(first.subnet, second.subnet);
    assert_eq!(reg.list_leases().await.expect("list with one member down").leases.len(), 2);
    assert!(cluster.members[2].etcdctl(&["endpoint", "health"]).0);
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_survives_an_etcd_outage_longer_than_its_ttl() {
    let mut etcd = EtcdServer::start();
    etcd.etcdctl_ok(&["put", &format!("{PREFIX}/config"), CONFIG]);
    let reg = registry(vec![etcd.endpoint()], TlsFiles::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts([192, 168, 0, 1], "02:00:00:00:00:01", &dir);
    o.ttl = Duration::from_secs(3);
    o.renew_margin = Duration::from_secs(2);
    o.max_retry_interval = Duration::from_millis(500);
    let m = LeaseManager::new(reg.clone(), &config(&reg).await, o).unwrap();
    let lease = m.acquire().await.unwrap();
    let handle = m.spawn(lease.clone());
    etcd.stop();
    // Renewals fail meanwhile and are retried.
    tokio::time::sleep(Duration::from_secs(5)).await;
    etcd.restart();
    // Afterwards the node holds its subnet again, renewed or re-claimed, and the key says so.
    let r = reg.clone();
    wait_for("lease held after the outage", || {
        let r = r.clone();
        let cur = handle.current();
        async move {
            let Some(cur) = cur else { return false };
            matches!(r.get_lease(&cur.key()).await, Ok(Some(kv)) if kv.lease_id == cur.etcd_lease_id)
        }
    })
    .await;
    assert_eq!(handle.current().unwrap().subnet, lease.subnet);
    // And it stays held across several more TTLs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cur = handle.current().unwrap();
    assert_eq!(
        reg.get_lease(&cur.key()).await.unwrap().map(|kv| kv.lease_id),
        Some(cur.etcd_lease_id)
    );
    handle.shutdown().await;
}
