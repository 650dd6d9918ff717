//! linen's test harness.
//!
//! A [`Testbed`] builds hosts as network namespaces named `lt-<tag>-<pid>-<n>` and deletes them
//! when it is dropped — also when the test panics. Namespaces left by a test process that was
//! killed are removed by the next [`Testbed::new`]. Nothing here touches the root namespace's
//! addresses or routes: links are created directly inside their namespaces.
//!
//! Tests that use it need root. [`require_root`] fails loudly instead of letting a test pass empty.
#![deny(missing_docs)]

pub mod cluster;
pub mod cni;
pub mod etcd;
pub mod etcd_nodes;
pub mod flannel;
pub mod kube;
pub mod service;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NS_PREFIX: &str = "lt-";

/// Panics unless the process runs as root. Tests that build namespaces call this first so that a
/// missing privilege is a loud failure, never a silently skipped test.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "this test needs root (network namespaces); run it as root, as scripts/test.sh does"
    );
}

/// Path of a binary built by this workspace (`cargo build --workspace --bins` puts them next to
/// the test's `deps/` directory).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("target dir") } else { dir };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// One network namespace of a testbed.
#[derive(Debug, Clone)]
pub struct Netns {
    /// Full namespace name, as `ip netns` knows it.
    pub name: String,
}

impl Netns {
    /// Path of the namespace file, for `nsenter --net=` or `setns`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// A command that runs `program` inside this namespace (through `ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `sh -c script` inside the namespace and returns its output, whatever the exit status.
    pub fn sh_output(&self, script: &str) -> Output {
        self.command("sh").args(["-c", script]).output().expect("spawn ip netns exec")
    }

    /// Runs `sh -c script` inside the namespace; panics with its stderr if it fails. Returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.sh_output(script);
        assert!(
            out.status.success(),
            "in netns {}: `{}` failed ({}): {}{}",
            self.name,
            script,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A set of network namespaces (and the processes started in them) that is torn down on drop.
pub struct Testbed {
    tag: String,
    namespaces: Vec<Netns>,
    children: Mutex<Vec<Child>>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Testbed {
    /// A new, empty testbed. `tag` (a few characters, `[a-z0-9]`) names the test in namespace names.
    pub fn new(tag: &str) -> Testbed {
        require_root();
        remove_stale_namespaces();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Testbed {
            tag: format!("{NS_PREFIX}{tag}-{}-{n}", std::process::id()),
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
        }
    }

    /// Creates namespace `<prefix>-<name>` with its loopback up.
    pub fn netns(&mut self, name: &str) -> Netns {
        let ns = Netns { name: format!("{}-{name}", self.tag) };
        run("ip", &["netns", "add", &ns.name]);
        self.namespaces.push(ns.clone());
        ns.sh("ip link set lo up");
        ns
    }

    /// Creates a veth pair with one end in each namespace, both up. Names are local to their
    /// namespace, so they never collide with the root namespace or other tests.
    pub fn veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
        run(
            "ip",
            &[
                "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if,
                "netns", &b.name,
            ],
        );
        a.sh(&format!("ip link set {a_if} up"));
        b.sh(&format!("ip link set {b_if} up"));
    }

    /// Spawns a long-running process; it is killed (by its PID) when the testbed is dropped.
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn");
        let pid = child.id();
        self.children.lock().unwrap_or_else(|e| e.into_inner()).push(child);
        pid
    }

    /// Kills one process started with [`Testbed::spawn`] and waits for it.
    pub fn kill(&self, pid: u32) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = children.iter().position(|c| c.id() == pid) {
            let mut c = children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Namespaces created so far.
    pub fn namespaces(&self) -> &[Netns] {
        &self.namespaces
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            delete_netns(&ns.name);
        }
    }
}

fn delete_netns(name: &str) {
    // Deleting a namespace destroys the veths inside it (and their peers elsewhere).
    let _ = Command::new("ip").args(["netns", "pids", name]).output().map(|o| {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    });
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Removes `lt-*` namespaces whose creating test process no longer exists.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                delete_netns(name);
            }
        }
    }
}

/// Runs a command in the root namespace's context (used for `ip netns` management only).
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh directory under the system temp dir, removed on drop (also when a test panics).
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `linen-<tag>-<pid>-<n>`, emptied first if a killed run left it behind.
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("linen-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
