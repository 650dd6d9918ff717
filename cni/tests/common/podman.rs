//! Debian's podman 4.3 with `network_backend = "cni"`, run inside a node namespace
//! (`nsenter --net=`) so the bridge and every pod address stay out of the root namespace. Its
//! configuration, storage, state and a busybox root filesystem (for `--rootfs`, no image pull)
//! live in a temp directory; its one network, `linen`, runs the plugin configuration given.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use linen_testbed::Netns;
use serde_json::{json, Value};

use super::TempDir;

/// Longest a single podman command may run before `timeout` kills it.
const PODMAN_TIMEOUT_SECS: &str = "60";

/// One podman setup bound to one node namespace.
pub struct Podman {
    netns: String,
    pub dir: TempDir,
}

impl Podman {
    /// A podman setup for the node namespace `node` whose only network, `linen`, runs the one
    /// plugin `plugin` describes, found in `plugin_dirs`.
    pub fn new(tag: &str, node: &Netns, plugin_dirs: &[&Path], plugin: Value) -> Podman {
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
        let conflist = json!({"cniVersion": "1.0.0", "name": "linen", "plugins": [plugin]});
        std::fs::write(d.join("cni/linen.conflist"), conflist.to_string()).unwrap();
        Podman { netns: node.path(), dir }
    }

    /// Runs `podman args…` in the node namespace, bounded by a timeout.
    pub fn run(&self, args: &[&str]) -> Output {
        let d = &self.dir.0;
        Command::new("timeout")
            .arg(PODMAN_TIMEOUT_SECS)
            .arg("nsenter")
            .arg(format!("--net={}", self.netns))
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .output()
            .expect("spawn podman")
    }

    /// Runs podman and asserts success; returns its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
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
    pub fn start(&self, name: &str, extra: &[&str]) {
        let rootfs = self.dir.0.join("rootfs").display().to_string();
        let mut args = vec!["run", "-d", "--name", name, "--network", "linen"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &rootfs, "sleep", "600"]);
        self.ok(&args);
    }

    /// The container's address on the `linen` network.
    pub fn ip(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.linen.IPAddress}}", name])
    }

    /// The path of the network namespace podman made for the container (`/run/netns/netns-…`).
    pub fn sandbox(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name])
    }

    /// Names of all containers podman knows, running or not.
    pub fn containers(&self) -> Vec<String> {
        let out = self.ok(&["ps", "-a", "--format", "{{.Names}}"]);
        out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// Pings `to` from inside container `name` once a second until an answer arrives or
    /// `timeout` passes: the first packets across nodes may race the overlay's neighbour setup.
    pub fn wait_ping(&self, name: &str, to: &str, timeout: Duration) -> bool {
        linen_testbed::wait_for(timeout, || {
            self.run(&["exec", name, "ping", "-c", "1", "-W", "1", to])
                .status
                .success()
                .then_some(())
        })
        .is_some()
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
