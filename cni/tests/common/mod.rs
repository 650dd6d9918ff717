//! Shared harness of the plugin's integration tests: a "node" network namespace with a temp
//! subnet.env and IPAM directory, pods as namespaces, the plugin run inside the node namespace
//! through `nsenter --net=` exactly as a runtime on that node would run it.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use linen_testbed::{Netns, Testbed};
use serde_json::Value;

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("linen-cni-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one plugin invocation printed and returned.
#[derive(Debug)]
pub struct Reply {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts success and returns the JSON result.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "plugin failed: {} {}", self.stdout, self.stderr);
        self.json()
    }

    /// Asserts failure with `code` and returns the message.
    pub fn err(&self, code: u64) -> String {
        assert_ne!(self.status, 0, "plugin should fail with code {code}: {}", self.stdout);
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong code: {v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "no msg: {v}");
        v["msg"].as_str().unwrap().to_string()
    }
}

/// One node: its namespace, its subnet.env and IPAM directory.
pub struct Node {
    pub tb: Testbed,
    pub ns: Netns,
    pub dir: TempDir,
    pub plugin: PathBuf,
}

pub const SUBNET_ENV: &str =
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.8.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";

impl Node {
    /// A node with subnet 10.244.8.0/24 (gateway .1, MTU 1450).
    pub fn new(tag: &str) -> Node {
        let mut tb = Testbed::new(tag);
        let ns = tb.netns("node");
        let dir = TempDir::new(tag);
        std::fs::write(dir.0.join("subnet.env"), SUBNET_ENV).unwrap();
        Node { tb, ns, dir, plugin: PathBuf::from(env!("CARGO_BIN_EXE_linen")) }
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir.0.join("subnet.env")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.0.join("ipam")
    }

    /// The network's IPAM directory.
    pub fn store(&self) -> PathBuf {
        self.data_dir().join("lt")
    }

    /// The plugin configuration, in `version`, with `extra` keys merged in.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = serde_json::json!({
            "cniVersion": version,
            "name": "lt",
            "type": "linen",
            "subnetFile": self.subnet_file(),
            "dataDir": self.data_dir(),
        });
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// A pod namespace.
    pub fn pod(&mut self, name: &str) -> Netns {
        self.tb.netns(name)
    }

    /// Runs the plugin inside the node namespace with the given `CNI_*` variables.
    pub fn invoke(&self, vars: &[(&str, &str)], stdin: &str) -> Reply {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path())).arg(&self.plugin);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Reply {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `CNI_COMMAND` with a container ID, netns path (may be empty) and ifname.
    pub fn cmd(&self, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Reply {
        self.cmd_args(command, id, netns, ifname, "", conf)
    }

    pub fn cmd_args(
        &self,
        command: &str,
        id: &str,
        netns: &str,
        ifname: &str,
        args: &str,
        conf: &Value,
    ) -> Reply {
        let mut vars = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/nonexistent"),
        ];
        if !netns.is_empty() {
            vars.push(("CNI_NETNS", netns));
        }
        if !args.is_empty() {
            vars.push(("CNI_ARGS", args));
        }
        self.invoke(&vars, &conf.to_string())
    }

    /// ADD for pod `ns` as container `id` on eth0; returns the result.
    pub fn add(&self, id: &str, ns: &Netns, conf: &Value) -> Value {
        self.cmd("ADD", id, &ns.path(), "eth0", conf).ok()
    }

    /// The files of the IPAM store that are address reservations.
    pub fn reservations(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.store()) else { return Vec::new() };
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// Names of the links enslaved to cni0 in the node namespace.
    pub fn bridge_ports(&self) -> Vec<String> {
        let out = self.ns.sh("ip -o link show master cni0 2>/dev/null || true");
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

/// The address (without prefix) of the result's first IP.
pub fn first_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().expect("ips[0].address");
    a.split('/').next().unwrap().to_string()
}
