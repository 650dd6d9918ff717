//! Real etcd servers for tests: Debian's `etcd` (3.4), on loopback ports picked per test or in
//! testbed namespaces.
//!
//! [`EtcdServer::start`] runs one member with a temporary data directory, waits until
//! `etcdctl endpoint health` passes, and on drop kills it by PID and removes the directory.
//! [`EtcdServer::stop`]/[`EtcdServer::restart`] model an outage of the same server (same ports and
//! data), [`EtcdCluster::start`] a three-member cluster, [`TlsCerts::generate`] a CA with server and
//! client certificates (openssl) for TLS tests. On loopback only 127.0.0.1 is used, never the
//! well-known ports 2379/2380 (a system etcd may be installed there).
//!
//! [`EtcdServer::start_in`] and [`EtcdCluster::start_in`] run members inside testbed namespaces
//! instead, each at its own underlay address on ports 2379 (clients) and 2380 (peers) — the
//! namespace is the member's own host, so those ports are free there. Processes started in a
//! namespace that reach etcd over the underlay (linend in a node namespace) use
//! [`EtcdServer::endpoint`]; `etcdctl` runs inside the member's namespace.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Netns;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A loopback TCP port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if port != 2379 && port != 2380 {
            return port;
        }
    }
}

/// A fresh, empty temporary directory, removed by its owner.
fn temp_dir(tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("linen-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// CA, server and client certificates (EC P-256, PEM) in a temporary directory.
#[derive(Debug)]
pub struct TlsCerts {
    /// The directory holding the files (removed on drop).
    pub dir: PathBuf,
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate (SAN IP 127.0.0.1, `localhost` and the addresses given to
    /// [`TlsCerts::generate_for`]).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate (clientAuth).
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn openssl (install the openssl package)");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsCerts {
    /// Generates a CA and a server and a client certificate signed by it.
    pub fn generate() -> TlsCerts {
        Self::generate_for(&[])
    }

    /// Like [`TlsCerts::generate`], with `ips` added to the server certificate's IP SANs (etcd
    /// members on testbed underlay addresses). Every call makes a new CA, so the client
    /// certificate of one `TlsCerts` is untrusted by a server using another's CA.
    pub fn generate_for(ips: &[Ipv4Addr]) -> TlsCerts {
        let dir = temp_dir("tls");
        let sans: String = ips.iter().map(|ip| format!(",IP:{ip}")).collect();
        let server_ext = format!("subjectAltName=IP:127.0.0.1,DNS:localhost{sans}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n");
        let key = |name: &str| {
            openssl(
                &dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    name,
                ],
            )
        };
        key("ca.key");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=linen-test-ca",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "ca.pem",
            ],
        );
        for (name, ext) in [
            ("server", server_ext.as_str()),
            ("client", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"),
        ] {
            key(&format!("{name}.key"));
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext file");
            openssl(&dir, &["req", "-new", "-key", &format!("{name}.key"), "-subj", &format!("/CN=linen-{name}"), "-out", &format!("{name}.csr")]);
            openssl(
                &dir,
                &[
                    "x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "2", "-extfile", &format!("{name}.ext"),
                    "-out", &format!("{name}.pem"),
                ],
            );
        }
        TlsCerts {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            dir,
        }
    }
}

impl Drop for TlsCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Where a member listens: its namespace, address and ports.
struct Placement {
    netns: Option<Netns>,
    host: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
}

/// One etcd member.
#[derive(Debug)]
pub struct EtcdServer {
    /// Member name.
    pub name: String,
    /// Address the client and peer ports listen on (127.0.0.1, or an underlay address inside
    /// [`EtcdServer::netns`]).
    pub host: Ipv4Addr,
    /// Client port on [`EtcdServer::host`].
    pub client_port: u16,
    /// Peer port on [`EtcdServer::host`].
    pub peer_port: u16,
    /// The testbed namespace the member runs in (`None`: the test's own, on loopback).
    pub netns: Option<Netns>,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl EtcdServer {
    /// Starts a single-member etcd over plain HTTP and waits until it is healthy.
    pub fn start() -> EtcdServer {
        let mut s = Self::configure("single", Self::loopback(), None, None);
        s.spawn();
        s.wait_healthy(Duration::from_secs(20));
        s
    }

    /// Starts a single-member etcd that requires TLS client certificates signed by `certs.ca`.
    pub fn start_tls(certs: &TlsCerts) -> EtcdServer {
        let mut s = Self::configure("tls", Self::loopback(), None, Some(certs));
        s.spawn();
        s.wait_healthy(Duration::from_secs(20));
        s
    }

    /// Starts a single-member etcd inside `ns`, listening on `ip` (ports 2379 and 2380), over
    /// HTTPS with client certificates required when `certs` is given (its server certificate must
    /// name `ip`: [`TlsCerts::generate_for`]); waits until it is healthy.
    pub fn start_in(ns: &Netns, ip: Ipv4Addr, certs: Option<&TlsCerts>) -> EtcdServer {
        let mut s = Self::configure("e0", Self::in_netns(ns, ip), None, certs);
        s.spawn();
        s.wait_healthy(Duration::from_secs(20));
        s
    }

    fn loopback() -> Placement {
        Placement {
            netns: None,
            host: Ipv4Addr::LOCALHOST,
            client_port: free_port(),
            peer_port: free_port(),
        }
    }

    fn in_netns(ns: &Netns, ip: Ipv4Addr) -> Placement {
        Placement { netns: Some(ns.clone()), host: ip, client_port: 2379, peer_port: 2380 }
    }

    fn configure(
        name: &str,
        at: Placement,
        cluster: Option<&str>,
        certs: Option<&TlsCerts>,
    ) -> EtcdServer {
        let Placement { netns, host, client_port, peer_port } = at;
        let dir = temp_dir(&format!("etcd-{name}"));
        let scheme = if certs.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://{host}:{client_port}");
        let peer_url = format!("http://{host}:{peer_port}");
        let initial = cluster.map(str::to_string).unwrap_or_else(|| format!("{name}={peer_url}"));
        let token = format!("linen-test-{:x}", fnv(initial.as_bytes()));
        let mut args: Vec<String> = vec![
            "--name".into(),
            name.into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url,
            "--initial-cluster".into(),
            initial,
            "--initial-cluster-state".into(),
            "new".into(),
            // Members of one cluster must share the token; the initial cluster string is unique per cluster.
            "--initial-cluster-token".into(),
            token,
            "--heartbeat-interval".into(),
            "50".into(),
            "--election-timeout".into(),
            "500".into(),
        ];
        let tls = certs.map(|c| {
            args.extend([
                "--cert-file".into(),
                c.server_cert.display().to_string(),
                "--key-file".into(),
                c.server_key.display().to_string(),
                "--trusted-ca-file".into(),
                c.ca.display().to_string(),
                "--client-cert-auth".into(),
            ]);
            (c.ca.clone(), c.client_cert.clone(), c.client_key.clone())
        });
        EtcdServer {
            name: name.into(),
            host,
            client_port,
            peer_port,
            netns,
            dir,
            args,
            child: None,
            tls,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("open etcd log");
        let mut cmd = match &self.netns {
            Some(ns) => ns.command("etcd"),
            None => Command::new("etcd"),
        };
        // `ip netns exec` execs etcd, so the child's PID is etcd's.
        let child = cmd
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd (install Debian's etcd-server)");
        self.child = Some(child);
    }

    /// The client URL (`http://HOST:PORT` or `https://…`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    /// PID of the running server, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Runs `etcdctl` (API v3) against this server with `args` (inside its namespace, if any);
    /// returns (success, stdout+stderr).
    pub fn etcdctl(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = match &self.netns {
            Some(ns) => ns.command("etcdctl"),
            None => Command::new("etcdctl"),
        };
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=2s");
        if let Some((ca, cert, key)) = &self.tls {
            cmd.arg(format!("--cacert={}", ca.display()))
                .arg(format!("--cert={}", cert.display()))
                .arg(format!("--key={}", key.display()));
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn etcdctl (install etcd-client)");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Runs `etcdctl`, panicking on failure; returns stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.etcdctl(args);
        assert!(ok, "etcdctl {} failed: {out}", args.join(" "));
        out
    }

    /// Waits until `etcdctl endpoint health` passes; panics with the log after `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.etcdctl(&["endpoint", "health"]).0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd {} not healthy after {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (by PID) and waits for it; data and ports are kept for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the stopped server again with the same data and ports and waits until healthy.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running etcd");
        self.spawn();
        self.wait_healthy(Duration::from_secs(20));
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-member etcd cluster on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members.
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts three members on loopback and waits until each is healthy.
    pub fn start() -> EtcdCluster {
        Self::start_at((0..3).map(|_| EtcdServer::loopback()).collect(), None)
    }

    /// Starts one member per `(namespace, address)` — each listening on its address, ports 2379
    /// and 2380 — as one cluster (HTTPS for clients with `certs`, whose server certificate must
    /// name every address), and waits until each is healthy.
    pub fn start_in(members: &[(Netns, Ipv4Addr)], certs: Option<&TlsCerts>) -> EtcdCluster {
        Self::start_at(
            members.iter().map(|(ns, ip)| EtcdServer::in_netns(ns, *ip)).collect(),
            certs,
        )
    }

    fn start_at(at: Vec<Placement>, certs: Option<&TlsCerts>) -> EtcdCluster {
        let initial = at
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://{}:{}", p.host, p.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdServer> = at
            .into_iter()
            .enumerate()
            .map(|(i, p)| EtcdServer::configure(&format!("m{i}"), p, Some(&initial), certs))
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_healthy(Duration::from_secs(30));
        }
        EtcdCluster { members }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// The index of the running member that is the raft leader right now, asked from each
    /// running member itself (`etcdctl endpoint status -w json`: its `member_id` equals `leader`).
    /// `None` when no running member says it leads (an election is under way).
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| m.pid().is_some() && m.is_leader())
    }

    /// Hands raft leadership to member `to` (`etcdctl move-leader`, sent to the current leader)
    /// and waits until `to` reports itself as leader; panics after 10 s.
    pub fn move_leader(&self, to: usize) {
        let moved = crate::wait_for(Duration::from_secs(10), || {
            let from = self.leader()?;
            if from == to {
                return Some(());
            }
            let id = self.members[to].member_id()?;
            self.members[from].etcdctl(&["move-leader", &format!("{id:x}")]);
            self.members[to].is_leader().then_some(())
        });
        assert!(moved.is_some(), "etcd leadership did not move to {}", self.members[to].name);
    }
}

impl EtcdServer {
    /// Whether this member reports itself as the raft leader (`false` when it does not answer).
    pub fn is_leader(&self) -> bool {
        self.status().is_some_and(|(id, leader)| id == leader)
    }

    /// This member's raft ID (`None` when it does not answer).
    pub fn member_id(&self) -> Option<u64> {
        self.status().map(|(id, _)| id)
    }

    /// (own member ID, leader's member ID) from `etcdctl endpoint status -w json`.
    fn status(&self) -> Option<(u64, u64)> {
        let (ok, out) = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        if !ok {
            return None;
        }
        // etcdctl prints warnings on stderr after the JSON on stdout; parse the first line.
        let v: serde_json::Value = serde_json::from_str(out.lines().next()?).ok()?;
        let status = &v[0]["Status"];
        Some((status["header"]["member_id"].as_u64()?, status["leader"].as_u64()?))
    }

    /// The value of an unlabelled metric on the member's `/metrics` (e.g.
    /// `etcd_debugging_mvcc_watcher_total`, the watches open on it), fetched with `curl` from
    /// inside its namespace; `None` when it does not answer or has no such metric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let mut cmd = match &self.netns {
            Some(ns) => ns.command("curl"),
            None => Command::new("curl"),
        };
        cmd.args(["-sf", "--max-time", "2"]);
        if let Some((ca, cert, key)) = &self.tls {
            cmd.arg("--cacert").arg(ca).arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let out = cmd
            .arg(format!("{}/metrics", self.endpoint()))
            .stdin(Stdio::null())
            .output()
            .expect("spawn curl");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}
