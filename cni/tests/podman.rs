//! A real runtime: Debian's podman 4.3 with `network_backend = "cni"` running busybox
//! containers (`--rootfs`, no image pull) on one node — with linen, then with the reference
//! bridge + host-local plugins. Podman runs inside the test's node namespace
//! (`nsenter --net=`), so cni0 and every pod address stay out of the root namespace; its
//! configuration, storage and state live in a temp directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Node, TempDir};
use serde_json::{json, Value};

struct Podman {
    node: Node,
    dir: TempDir,
}

impl Podman {
    /// A podman setup on a fresh node whose only network, `linen`, runs the one plugin
    /// `plugin(node)` describes.
    fn new(tag: &str, plugin_dirs: &[&Path], plugin: impl FnOnce(&Node) -> Value) -> Podman {
        let node = Node::new(tag);
        let dir = TempDir::new(&format!("{tag}-podman"));
        let d = &dir.0;
        for sub in [
            "cni",
            "rootfs/bin",
            "rootfs/etc",
            "rootfs/proc",
            "rootfs/sys",
            "rootfs/dev",
            "rootfs/tmp",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // A busybox root filesystem: the static binary and one symlink per applet.
        std::fs::copy("/bin/busybox", d.join("rootfs/bin/busybox"))
            .expect("busybox-static installed");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", d.join("rootfs/bin").join(applet)).unwrap();
            }
        }
        std::fs::write(d.join("rootfs/etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        std::fs::write(d.join("rootfs/etc/group"), "root:x:0:\n").unwrap();
        let dirs: Vec<String> =
            plugin_dirs.iter().map(|p| format!("{:?}", p.display().to_string())).collect();
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [{}]\nnetwork_config_dir = {:?}\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = {:?}\n\
                 runtime = \"runc\"\ntmp_dir = {:?}\nstatic_dir = {:?}\nvolume_path = {:?}\n",
                dirs.join(", "),
                d.join("cni").display().to_string(),
                d.join("events.log").display().to_string(),
                d.join("libpod-tmp").display().to_string(),
                d.join("static").display().to_string(),
                d.join("volumes").display().to_string(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = {:?}\ngraphroot = {:?}\n",
                d.join("runroot").display().to_string(),
                d.join("graphroot").display().to_string()
            ),
        )
        .unwrap();
        let conflist = json!({"cniVersion": "1.0.0", "name": "linen", "plugins": [plugin(&node)]});
        std::fs::write(d.join("cni/linen.conflist"), conflist.to_string()).unwrap();
        Podman { node, dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = &self.dir.0;
        Command::new("timeout")
            .arg("120")
            .arg("nsenter")
            .arg(format!("--net={}", self.node.ns.path()))
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .output()
            .expect("spawn podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts a container on the network; `extra` goes before `--rootfs`.
    fn start(&self, name: &str, extra: &[&str]) {
        let rootfs = self.dir.0.join("rootfs").display().to_string();
        let mut args = vec!["run", "-d", "--name", name, "--network", "linen"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &rootfs, "sleep", "600"]);
        self.ok(&args);
    }

    fn ip(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.linen.IPAddress}}", name])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        // Unmount whatever podman left mounted under the temp dir before it is removed.
        let prefix = self.dir.0.display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&prefix))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
    }
}

/// The single-node scenario: two containers talk, `--ip` gives a fixed IP, removing a container
/// releases its IP (on disk and on the bridge). Returns the IPs handed out.
fn single_node_scenario(pm: &Podman) -> Vec<String> {
    pm.start("a", &[]);
    pm.start("b", &[]);
    let (a, b) = (pm.ip("a"), pm.ip("b"));
    assert!(a.starts_with("10.244.8.") && b.starts_with("10.244.8."), "{a} {b}");
    assert_ne!(a, b);
    pm.ok(&["exec", "a", "ping", "-c", "2", "-W", "2", &b]);
    pm.ok(&["exec", "b", "ping", "-c", "2", "-W", "2", &a]);
    let addr = pm.ok(&["exec", "b", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{b}/24")), "{addr}");

    pm.start("c", &["--ip", "10.244.8.77"]);
    assert_eq!(pm.ip("c"), "10.244.8.77");
    pm.ok(&["exec", "a", "ping", "-c", "1", "-W", "2", "10.244.8.77"]);
    let store = pm.node.data_dir().join("linen");
    assert!(store.join("10.244.8.77").exists());
    let ports = pm.node.bridge_ports().len();
    assert_eq!(ports, 3);

    pm.ok(&["rm", "-f", "-t", "0", "c"]);
    assert!(!store.join("10.244.8.77").exists(), "IP released on disk");
    assert_eq!(pm.node.bridge_ports().len(), 2, "host end removed from the bridge");
    // The released address can be taken again.
    pm.start("d", &["--ip", "10.244.8.77"]);
    pm.ok(&["exec", "d", "ping", "-c", "1", "-W", "2", &a]);
    pm.ok(&["rm", "-a", "-f", "-t", "0"]);
    let left: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    assert!(left.is_empty(), "no reservations left: {left:?}");
    assert!(pm.node.bridge_ports().is_empty());
    vec![a, b]
}

#[test]
fn podman_with_linen() {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_linen"));
    let plugin_dir = plugin.parent().unwrap().to_path_buf();
    let pm = Podman::new("pml", &[&plugin_dir], |node| {
        // The defaults are /run/flannel/subnet.env and /var/lib/cni/networks; point at the test's.
        json!({"type": "linen", "subnetFile": node.subnet_file(), "dataDir": node.data_dir(),
               "capabilities": {"ips": true}})
    });
    let ips = single_node_scenario(&pm);
    assert_eq!(ips, vec!["10.244.8.2", "10.244.8.3"]);
}

#[test]
fn podman_with_reference_bridge_and_host_local() {
    let reference = Path::new("/usr/lib/cni");
    assert!(reference.join("bridge").exists(), "containernetworking-plugins installed");
    let pm = Podman::new("pmr", &[reference], |node| {
        json!({"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
               "hairpinMode": true, "mtu": 1450,
               "ipam": {"type": "host-local",
                        "ranges": [[{"subnet": "10.244.8.0/24", "gateway": "10.244.8.1"}]],
                        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": node.data_dir()}})
    });
    let ips = single_node_scenario(&pm);
    assert_eq!(ips, vec!["10.244.8.2", "10.244.8.3"]);
}
