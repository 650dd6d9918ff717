//! Real etcd servers for tests: Debian's `etcd` (3.4) on loopback ports picked per test.
//!
//! [`EtcdServer::start`] runs one member with a temporary data directory, waits until
//! `etcdctl endpoint health` passes, and on drop kills it by PID and removes the directory.
//! [`EtcdServer::stop`]/[`EtcdServer::restart`] model an outage of the same server (same ports and
//! data), [`EtcdCluster::start`] a three-member cluster, [`TlsCerts::generate`] a CA with server and
//! client certificates (openssl) for TLS tests. Only 127.0.0.1 is used, never the well-known
//! ports 2379/2380 (a system etcd may be installed there).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    /// Server certificate (SAN IP 127.0.0.1).
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
        let dir = temp_dir("tls");
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
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"),
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

/// One etcd member.
#[derive(Debug)]
pub struct EtcdServer {
    /// Member name.
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Peer port on 127.0.0.1.
    pub peer_port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl EtcdServer {
    /// Starts a single-member etcd over plain HTTP and waits until it is healthy.
    pub fn start() -> EtcdServer {
        let mut s = Self::configure("single", free_port(), free_port(), None, None);
        s.spawn();
        s.wait_healthy(Duration::from_secs(20));
        s
    }

    /// Starts a single-member etcd that requires TLS client certificates signed by `certs.ca`.
    pub fn start_tls(certs: &TlsCerts) -> EtcdServer {
        let mut s = Self::configure("tls", free_port(), free_port(), None, Some(certs));
        s.spawn();
        s.wait_healthy(Duration::from_secs(20));
        s
    }

    fn configure(
        name: &str,
        client_port: u16,
        peer_port: u16,
        cluster: Option<&str>,
        certs: Option<&TlsCerts>,
    ) -> EtcdServer {
        let dir = temp_dir(&format!("etcd-{name}"));
        let scheme = if certs.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
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
        EtcdServer { name: name.into(), client_port, peer_port, dir, args, child: None, tls }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("open etcd log");
        let child = Command::new("etcd")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd (install Debian's etcd-server)");
        self.child = Some(child);
    }

    /// The client URL (`http://127.0.0.1:PORT` or `https://…`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// PID of the running server, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Runs `etcdctl` (API v3) against this server with `args`; returns (success, stdout+stderr).
    pub fn etcdctl(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new("etcdctl");
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
    /// Starts three members and waits until each is healthy.
    pub fn start() -> EtcdCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                EtcdServer::configure(&format!("m{i}"), *client, *peer, Some(&initial), None)
            })
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
}
