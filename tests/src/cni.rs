//! Pods attached by the `linen` CNI plugin, the way a container runtime attaches them: a network
//! namespace per pod, then the plugin run in the node's namespace with `CNI_COMMAND=ADD` and the
//! network config on stdin. The plugin creates the node bridge (`cni0`), the veth pair and the
//! pod's address from the node's subnet file; the pod's IP is read from the plugin's result.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use crate::{workspace_bin, Netns, Testbed};

/// A pod: its network namespace and the address the plugin gave it.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The pod's name (the namespace is `<testbed prefix>-<name>`).
    pub name: String,
    /// The pod's network namespace (`eth0` inside).
    pub ns: Netns,
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
}

/// The plugin's network config for a node: `subnet_file` (what linend or flanneld writes) and
/// an IPAM store under `data_dir`.
pub fn network_config(subnet_file: &Path, data_dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "linen",
        "type": "linen",
        "subnetFile": subnet_file,
        "dataDir": data_dir,
    })
}

/// Runs the plugin's ADD for `pod` from the node namespace `node` with `config`
/// ([`network_config`]); returns the address of the result's first IP.
///
/// # Errors
/// The plugin failed (its output) or its result has no IPv4 address.
pub fn add(node: &Netns, pod: &Netns, config: &serde_json::Value) -> Result<Ipv4Addr, String> {
    let result = add_result(node, pod, &pod.name, config)?;
    result_ipv4(&result).ok_or_else(|| format!("CNI result without an IPv4 address: {result}"))
}

/// Runs the plugin's ADD for `pod` (container ID `id`) from the node namespace `node` with
/// `config`, as a runtime does; returns the plugin's result.
///
/// # Errors
/// The plugin could not run or failed (its output), or its result is not JSON.
pub fn add_result(
    node: &Netns,
    pod: &Netns,
    id: &str,
    config: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let plugin = workspace_bin("linen");
    let dir = plugin.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut child = node
        .command(&plugin.to_string_lossy())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the CNI plugin {}: {e}", plugin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(config.to_string().as_bytes()).map_err(|e| format!("CNI stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("CNI plugin: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "CNI ADD of {} in {} failed: {text}{}",
            pod.name,
            node.name,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_str(&text).map_err(|e| format!("CNI result ({e}): {text}"))
}

/// The address of a CNI result's first IP, without its prefix length.
pub fn result_ipv4(result: &serde_json::Value) -> Option<Ipv4Addr> {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
}

/// Creates the pod namespace `name` in `tb` and attaches it through the plugin on `node`.
///
/// # Panics
/// When the plugin fails (the test cannot go on without its pod).
pub fn pod(tb: &mut Testbed, node: &Netns, name: &str, config: &serde_json::Value) -> Pod {
    let ns = tb.netns(name);
    let ip = add(node, &ns, config).unwrap_or_else(|e| panic!("{e}"));
    Pod { name: name.to_string(), ns, ip }
}
