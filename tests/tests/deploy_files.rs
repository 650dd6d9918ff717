//! Keeps `deploy/` and the operator docs honest against the binaries they describe:
//!
//! - every `--flag` given to `linend`/`linenctl` in `deploy/`, and in the code blocks of
//!   `docs/operations.md` and `README.md`, is one the built binaries' `--help` lists;
//! - every `LINEN_*` variable named there is one of their environment mirrors, and
//!   `deploy/systemd/linend.env` lists every mirror of `linend`, with its default;
//! - the systemd unit passes `systemd-analyze verify` without a single warning;
//! - the Kubernetes manifest parses (python3's YAML loader), its DaemonSet sets only known
//!   `LINEN_*` variables, probes the node API where `LINEN_METRICS_ADDR` puts it, and ships the
//!   same conflist as `deploy/cni/`;
//! - `deploy/Containerfile` copies workspace binaries and existing files, and installs the
//!   binaries where the manifest runs them from (the image itself is not built);
//! - the conflist from `deploy/cni/` is accepted by the real `linen` plugin in a netns node
//!   (ADD gives the pod an address from the node's subnet; DEL removes it again). Root only.
//!
//! Needs `cargo build -p linen-controlplane -p linen-cni --bins` first (CI builds every binary).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use linen_testbed::{require_root, workspace_bin, TempDir, Testbed};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Runs a built binary with `args` and a clean environment (a set `LINEN_*` variable would show
/// up in clap's `[env: …]` notes) and returns its stdout.
fn help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One option as `--help` describes it.
#[derive(Debug, Default, Clone)]
struct Opt {
    env: Option<String>,
    default: Option<String>,
}

/// Options of a clap `--help` text: long flag → its env mirror and default. An option starts at
/// a line that begins (after blanks) with `--long` or `-s, --long`; its notes run until the next.
fn parse_help(text: &str) -> BTreeMap<String, Opt> {
    let mut opts = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        // `--long …` or `-s, --long …`; not a `- value: …` line of a possible-values list.
        if t.starts_with("--")
            || (t.starts_with('-') && t.get(2..).is_some_and(|r| r.starts_with(", --")))
        {
            current = t
                .split([',', ' '])
                .find(|w| w.starts_with("--"))
                .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string());
            if let Some(c) = &current {
                opts.insert(c.clone(), Opt::default());
            }
        }
        let Some(opt) = current.as_ref().and_then(|c| opts.get_mut(c)) else { continue };
        if let Some(rest) = line.split("[env: ").nth(1) {
            opt.env = rest.split('=').next().map(str::to_string);
        }
        if let Some(rest) = line.split("[default: ").nth(1) {
            opt.default = rest.split(']').next().map(str::to_string);
        }
    }
    opts
}

/// What the built binaries accept.
struct Cli {
    linend: BTreeMap<String, Opt>,
    linenctl: BTreeMap<String, Opt>,
}

impl Cli {
    fn load() -> Cli {
        let linend = parse_help(&help("linend", &["--help"]));
        let mut linenctl = BTreeMap::new();
        for sub in [
            &["--help"][..],
            &["config", "get", "--help"],
            &["config", "set", "--help"],
            &["leases", "--help"],
            &["stats", "--help"],
            &["routes", "--help"],
            &["status", "--help"],
        ] {
            linenctl.extend(parse_help(&help("linenctl", sub)));
        }
        assert!(linend.contains_key("--etcd-endpoints") && linend.contains_key("--datapath"));
        assert!(linenctl.contains_key("--api") && linenctl.contains_key("--network"));
        Cli { linend, linenctl }
    }

    fn envs(&self) -> BTreeSet<String> {
        self.linend.values().chain(self.linenctl.values()).filter_map(|o| o.env.clone()).collect()
    }
}

/// Every `LINEN_*` word in `text`.
fn linen_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("LINEN_") {
        let start = i + pos;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| start + n);
        let name = text[start..end].trim_end_matches('_');
        // `LINEN_*` in prose names no variable.
        if before_ok && name.len() > "LINEN".len() {
            out.insert(name.to_string());
        }
        i = end;
    }
    out
}

/// The fenced code blocks of a Markdown text, with shell line continuations joined.
fn code_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(b) => blocks.push(b.replace("\\\n", " ")),
                None => current = Some(String::new()),
            }
            continue;
        }
        if let Some(b) = current.as_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    assert!(current.is_none(), "unterminated code block");
    blocks
}

/// The `--flags` given to `linend` and to `linenctl` in shell text: from a word whose file name
/// is the binary up to the end of that command (a pipe, `;`, `&&`, `||`, `&`, a redirection or
/// the end of the line).
fn flags_of(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut linend, mut linenctl) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let line = line.split(" #").next().unwrap_or(line);
        let mut target: Option<&mut Vec<String>> = None;
        for word in line.split_whitespace() {
            let word =
                word.trim_matches(|c| c == '"' || c == '\'' || c == '`' || c == '(' || c == ')');
            if ["|", ";", "&&", "||", "&", ">", "<", "2>&1"].contains(&word)
                || word.starts_with('>')
            {
                target = None;
                continue;
            }
            match word.rsplit('/').next().unwrap_or(word) {
                "linend" => target = Some(&mut linend),
                "linenctl" => target = Some(&mut linenctl),
                _ => {
                    if let (Some(t), Some(flag)) = (target.as_mut(), word.strip_prefix("--")) {
                        let name = flag.split('=').next().unwrap_or(flag);
                        if !name.is_empty() {
                            t.push(format!("--{name}"));
                        }
                    }
                }
            }
        }
    }
    (linend, linenctl)
}

fn deploy_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read deploy/").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(repo()).expect("in repo").display().to_string();
                files.push((rel, std::fs::read_to_string(&p).expect("text file")));
            }
        }
    }
    files.sort();
    assert!(files.len() >= 5, "deploy/ is missing files: {files:?}");
    files
}

#[test]
fn flags_and_variables_in_deploy_and_docs_exist() {
    let cli = Cli::load();
    let envs = cli.envs();
    let mut problems = Vec::new();
    let mut check = |source: &str, text: &str, scan_vars: bool| {
        let (linend, linenctl) = flags_of(text);
        for f in linend {
            if !cli.linend.contains_key(&f) {
                problems.push(format!("{source}: linend has no {f}"));
            }
        }
        for f in linenctl {
            if !cli.linenctl.contains_key(&f) {
                problems.push(format!("{source}: linenctl has no {f}"));
            }
        }
        if scan_vars {
            for v in linen_vars(text) {
                if !envs.contains(&v) {
                    problems.push(format!(
                        "{source}: {v} is no environment mirror of linend or linenctl"
                    ));
                }
            }
        }
    };
    for (path, text) in deploy_files() {
        check(&path, &text, true);
    }
    let mut commands = 0;
    for doc in ["docs/operations.md", "README.md"] {
        for block in code_blocks(&read(doc)) {
            let (a, b) = flags_of(&block);
            commands += a.len() + b.len();
            check(doc, &block, true);
        }
    }
    assert!(commands > 20, "found only {commands} linend/linenctl flags in the docs' code blocks");
    assert!(
        problems.is_empty(),
        "deploy/ and docs disagree with the binaries:\n{}",
        problems.join("\n")
    );
}

#[test]
fn env_file_lists_every_linend_variable_with_its_default() {
    let cli = Cli::load();
    let env_file = read("deploy/systemd/linend.env");
    let lines: Vec<&str> = env_file.lines().map(str::trim).collect();
    let mut problems = Vec::new();
    for (flag, opt) in &cli.linend {
        let Some(var) = &opt.env else { continue };
        let named = lines.iter().any(|l| l.trim_start_matches('#').starts_with(&format!("{var}=")));
        if !named {
            problems.push(format!("{var} ({flag}) is not in linend.env"));
            continue;
        }
        if let Some(default) = &opt.default {
            let want = format!("#{var}={default}");
            if !lines.contains(&want.as_str()) {
                problems.push(format!("linend.env lacks the line `{want}` ({flag}'s default)"));
            }
        }
    }
    // Settings that are not commented must parse as KEY=value with a known key.
    for l in lines.iter().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let key = l.split('=').next().unwrap_or("");
        if !l.contains('=') || !(key == "RUST_LOG" || cli.envs().contains(key)) {
            problems.push(format!("linend.env: `{l}` is not KEY=value with a known key"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn systemd_unit_verifies_cleanly() {
    let unit = read("deploy/systemd/linend.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in linend.service")
        .split_whitespace()
        .next()
        .expect("ExecStart has a command")
        .to_string();
    assert!(exec.ends_with("/linend"), "ExecStart runs {exec}, not linend");
    assert!(
        unit.contains("EnvironmentFile=/etc/linen/linend.env"),
        "unit reads no /etc/linen/linend.env"
    );
    // The hand-over across restarts needs systemd's notification socket and a store that holds
    // every descriptor linend keeps there (3 per AF_XDP queue, at most 64 queues, and 3 more),
    // and a crash needs systemd to start linend again.
    let settings: BTreeSet<&str> = unit.lines().map(str::trim).collect();
    for want in ["Type=notify", "NotifyAccess=main", "Restart=always"] {
        assert!(settings.contains(want), "linend.service lacks {want}");
    }
    let store_max: u32 = unit
        .lines()
        .find_map(|l| l.strip_prefix("FileDescriptorStoreMax="))
        .and_then(|v| v.trim().parse().ok())
        .expect("FileDescriptorStoreMax= in linend.service");
    assert!(store_max >= 3 * 64 + 3, "FileDescriptorStoreMax={store_max} is too small");
    let dir = TempDir::new("unit");
    let path = dir.path().join("linend.service");
    let bin = workspace_bin("linend");
    std::fs::write(&path, unit.replace(&exec, &bin.display().to_string())).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", &path.display().to_string()])
        .output()
        .expect("run systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys or bad values ("…, ignoring"): any message is a failure.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

fn load_yaml(rel: &str) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(repo().join(rel))
        .output()
        .expect("run python3 (with PyYAML)");
    assert!(out.status.success(), "{rel} does not parse: {}", String::from_utf8_lossy(&out.stderr));
    let docs: Value = serde_json::from_slice(&out.stdout).expect("python3 printed JSON");
    docs.as_array().expect("a list of documents").clone()
}

#[test]
fn kubernetes_manifest_parses_and_matches_linend() {
    let cli = Cli::load();
    let envs = cli.envs();
    let docs = load_yaml("deploy/kubernetes/linen.yaml");
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in linen.yaml"))
    };
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true, "linend must run in the host network namespace");
    let ns = ds["metadata"]["namespace"].as_str().expect("DaemonSet namespace");
    assert!(docs.iter().any(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == ns));

    let containers = spec["containers"].as_array().expect("containers");
    let linend = containers
        .iter()
        .find(|c| {
            c["command"].as_array().is_some_and(|cmd| {
                cmd.iter().any(|w| w.as_str().is_some_and(|w| w.ends_with("/linend")))
            })
        })
        .expect("a container running linend");
    let mut problems = Vec::new();
    let mut set: BTreeMap<String, Value> = BTreeMap::new();
    for c in containers.iter().chain(spec["initContainers"].as_array().into_iter().flatten()) {
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or("").to_string();
            if !envs.contains(&name) {
                problems
                    .push(format!("container {}: env {name} is not a LINEN_* mirror", c["name"]));
            }
            set.insert(name, e.clone());
        }
        for from in c["envFrom"].as_array().into_iter().flatten() {
            let cm = from["configMapRef"]["name"].as_str().expect("envFrom is a configMapRef");
            for (k, v) in find("ConfigMap", cm)["data"].as_object().expect("ConfigMap data") {
                if !envs.contains(k) {
                    problems.push(format!("ConfigMap {cm}: {k} is not a LINEN_* mirror"));
                }
                set.insert(k.clone(), serde_json::json!({ "name": k, "value": v }));
            }
        }
    }
    for word in linend["args"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if let Some(flag) = word.strip_prefix("--") {
            let flag = format!("--{}", flag.split('=').next().unwrap_or(flag));
            if !cli.linend.contains_key(&flag) {
                problems.push(format!("linend args: no {flag}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The node IP from the downward API is the VTEP.
    assert_eq!(set["LINEN_PUBLIC_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP");
    // Probes go where linend serves its API.
    let addr = set["LINEN_METRICS_ADDR"]["value"].as_str().expect("LINEN_METRICS_ADDR value");
    let port: u64 =
        addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in LINEN_METRICS_ADDR");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &linend[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"].as_u64(), Some(port), "{probe} port vs LINEN_METRICS_ADDR {addr}");
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        if host.starts_with("127.") {
            assert_eq!(
                get["host"].as_str(),
                Some(host),
                "{probe}: the API listens on loopback only"
            );
        }
    }
    // linend writes the subnet file where the host's CNI plugin reads it.
    let mounts: Vec<&str> = linend["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/run/flannel"), "linend does not mount /run/flannel: {mounts:?}");

    // The conflist the init container installs is the one in deploy/cni/.
    let shipped: Value =
        serde_json::from_str(&read("deploy/cni/10-linen.conflist")).expect("conflist JSON");
    let in_yaml = find("ConfigMap", "linen-cni")["data"]["10-linen.conflist"]
        .as_str()
        .expect("conflist in ConfigMap");
    let in_yaml: Value = serde_json::from_str(in_yaml).expect("ConfigMap conflist is JSON");
    assert_eq!(
        in_yaml, shipped,
        "deploy/kubernetes/linen.yaml ships another conflist than deploy/cni/"
    );
}

/// Runs the plugin inside `node` with `CNI_*` variables and `stdin`; returns (status, stdout).
fn cni(plugin: &Path, node: &str, vars: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={node}")).arg(plugin);
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
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("plugin output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn conflist_is_accepted_by_the_linen_plugin() {
    require_root();
    let list: Value =
        serde_json::from_str(&read("deploy/cni/10-linen.conflist")).expect("conflist JSON");
    let plugins = list["plugins"].as_array().expect("plugins");
    let linen = plugins.iter().find(|p| p["type"] == "linen").expect("a plugin of type linen");
    // A runtime hands each plugin its entry plus the list's name and cniVersion.
    let mut conf = linen.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    // The shipped paths are the host's; this test points them into a temp dir, nothing else.
    assert_eq!(
        conf["subnetFile"], "/run/flannel/subnet.env",
        "the subnet file linend writes by default"
    );
    assert_eq!(conf["dataDir"], "/var/lib/cni/networks");
    let dir = TempDir::new("deploycni");
    std::fs::write(
        dir.path().join("subnet.env"),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.8.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
    .expect("write subnet.env");
    conf["subnetFile"] = Value::from(dir.path().join("subnet.env").display().to_string());
    conf["dataDir"] = Value::from(dir.path().join("ipam").display().to_string());
    let conf = conf.to_string();

    let mut tb = Testbed::new("depl");
    let node = tb.netns("node");
    let pod = tb.netns("pod");
    let plugin = workspace_bin("linen");
    let pod_path = pod.path();
    let vars = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "deploy-files"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    };
    let mut add = vars("ADD");
    add.push(("CNI_NETNS", pod_path.as_str()));
    let (status, stdout, stderr) = cni(&plugin, &node.path(), &add, &conf);
    assert_eq!(status, 0, "ADD with deploy/cni/10-linen.conflist failed: {stdout} {stderr}");
    let result: Value = serde_json::from_str(&stdout).expect("ADD result is JSON");
    assert_eq!(result["cniVersion"], list["cniVersion"], "{result}");
    let addr = result["ips"][0]["address"].as_str().expect("an address in the result").to_string();
    assert!(addr.starts_with("10.244.8.") && addr.ends_with("/24"), "{result}");
    let bridge = linen["bridge"].as_str().unwrap_or("cni0");
    assert!(
        node.sh(&format!("ip -o addr show dev {bridge}")).contains("10.244.8.1/24"),
        "node bridge {bridge}"
    );
    assert!(pod.sh("ip -o -4 addr show dev eth0").contains(&addr), "pod lacks {addr}");
    assert!(
        pod.sh("ip -o link show dev eth0").contains("mtu 1450"),
        "pod MTU is not the subnet file's"
    );

    let mut del = vars("DEL");
    del.push(("CNI_NETNS", pod_path.as_str()));
    let (status, stdout, stderr) = cni(&plugin, &node.path(), &del, &conf);
    assert_eq!(status, 0, "DEL failed: {stdout} {stderr}");
    assert!(
        pod.sh_output("ip link show dev eth0").stdout.is_empty(),
        "eth0 still in the pod after DEL"
    );
    assert!(
        node.sh(&format!("ip -o link show master {bridge}")).trim().is_empty(),
        "a port is left on {bridge}"
    );
    let left: Vec<String> =
        std::fs::read_dir(dir.path().join("ipam").join(list["name"].as_str().unwrap_or("linen")))
            .expect("IPAM store")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
            .collect();
    assert!(left.is_empty(), "reservations left after DEL: {left:?}");
}

/// The image `deploy/Containerfile` builds holds the binaries the manifest runs, at the paths it
/// runs them from, and copies only files that exist (the image itself is not built here).
#[test]
fn containerfile_matches_the_manifest() {
    let file = read("deploy/Containerfile");
    let mut installed = BTreeSet::new();
    for line in file.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (dest, sources) = words.split_last().expect("COPY has a destination");
        for src in sources {
            match src.strip_prefix("target/release/") {
                // A binary of this workspace (the debug build of the same name exists).
                Some(bin) => {
                    workspace_bin(bin);
                    installed.insert(format!("{}/{bin}", dest.trim_end_matches('/')));
                }
                None => assert!(repo().join(src).exists(), "Containerfile copies missing {src}"),
            }
        }
    }
    let docs = load_yaml("deploy/kubernetes/linen.yaml");
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    let mut used = Vec::new();
    for c in
        spec["containers"].as_array().into_iter().chain(spec["initContainers"].as_array()).flatten()
    {
        for word in c["command"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            for w in word.split_whitespace().filter(|w| w.starts_with("/usr/local/bin/")) {
                used.push(w.to_string());
            }
        }
    }
    assert!(used.iter().any(|u| u.ends_with("/linend")), "the manifest runs no linend: {used:?}");
    assert!(
        used.iter().any(|u| u.ends_with("/linen")),
        "the init container copies no plugin: {used:?}"
    );
    for u in &used {
        assert!(
            installed.contains(u),
            "the manifest uses {u}, the Containerfile installs {installed:?}"
        );
    }
}
