//! `linenctl`: operator CLI for linen's etcd state (flannel-compatible).
//!
//! ```text
//! linenctl config get [--json]
//! linenctl config set --network 10.244.0.0/16 [--subnet-len 24] [--vni 1] [--port 8472] …
//! linenctl leases [--json]
//! linenctl stats|routes|status [--api http://127.0.0.1:9472] [--json]
//! ```
//!
//! Every flag has an environment mirror (`LINEN_ETCD_ENDPOINTS`, …), shown in `--help`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ipnet::{Ipv4Net, Ipv6Net};
use linen_controlplane::cli::EtcdFlags;
use linen_controlplane::config::{NetworkConfig, RawBackend, RawConfig};
use linen_controlplane::ctl_node::{self, NodeApiArgs};
use linen_controlplane::lease::{decode_lease, parse_subnet_key, LeaseValue};
use linen_controlplane::registry::{EtcdRegistry, Registry};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "linenctl",
    version,
    about = "Inspect and configure linen's (flannel-compatible) etcd state"
)]
struct Cli {
    #[command(flatten)]
    etcd: EtcdFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read or write the network config (`<prefix>/config`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List every node's lease.
    Leases {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A node's packet counters, from its local API (linend --metrics-addr).
    Stats(NodeApiArgs),
    /// The routes a node forwards by, from its local API.
    Routes(NodeApiArgs),
    /// One screen about a node: readiness, lease, datapath, routes, etcd, drops.
    Status(NodeApiArgs),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Show the stored config and the values nodes derive from it.
    Get {
        /// Print the stored JSON only.
        #[arg(long)]
        json: bool,
    },
    /// Write a flannel-format config (vxlan backend). Unset values keep flannel's defaults.
    Set(SetArgs),
}

#[derive(Args, Debug)]
struct SetArgs {
    /// Cluster pod network (IPv4 CIDR).
    #[arg(long)]
    network: Ipv4Net,
    /// Prefix length of each node's subnet.
    #[arg(long)]
    subnet_len: Option<u8>,
    /// First allocatable subnet.
    #[arg(long)]
    subnet_min: Option<Ipv4Addr>,
    /// Last allocatable subnet.
    #[arg(long)]
    subnet_max: Option<Ipv4Addr>,
    /// VXLAN network identifier (default 1).
    #[arg(long)]
    vni: Option<u32>,
    /// VXLAN UDP port (0 or unset: 8472).
    #[arg(long)]
    port: Option<u16>,
    /// Overlay MTU (unset: underlay MTU − 50 on each node).
    #[arg(long)]
    mtu: Option<u32>,
    /// Also allocate IPv6 subnets from this network.
    #[arg(long)]
    ipv6_network: Option<Ipv6Net>,
    /// IPv6 subnet prefix length.
    #[arg(long, requires = "ipv6_network")]
    ipv6_subnet_len: Option<u8>,
    /// First allocatable IPv6 subnet.
    #[arg(long, requires = "ipv6_network")]
    ipv6_subnet_min: Option<Ipv6Addr>,
    /// Last allocatable IPv6 subnet.
    #[arg(long, requires = "ipv6_network")]
    ipv6_subnet_max: Option<Ipv6Addr>,
    /// flannel's DirectRouting: nodes route to peers on their own underlay segment without VXLAN.
    #[arg(long)]
    direct_routing: bool,
    /// Print the JSON without writing it.
    #[arg(long)]
    dry_run: bool,
}

impl SetArgs {
    fn raw(&self) -> RawConfig {
        RawConfig {
            network: Some(self.network.trunc()),
            subnet_len: self.subnet_len,
            subnet_min: self.subnet_min,
            subnet_max: self.subnet_max,
            enable_ipv6: self.ipv6_network.map(|_| true),
            ipv6_network: self.ipv6_network.map(|n| n.trunc()),
            ipv6_subnet_len: self.ipv6_subnet_len,
            ipv6_subnet_min: self.ipv6_subnet_min,
            ipv6_subnet_max: self.ipv6_subnet_max,
            backend: Some(RawBackend {
                backend_type: Some("vxlan".into()),
                vni: self.vni,
                port: self.port,
                mtu: self.mtu,
                direct_routing: self.direct_routing.then_some(true),
                ..RawBackend::default()
            }),
            ..RawConfig::default()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linenctl: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linenctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(flags: &EtcdFlags) -> Result<EtcdRegistry, String> {
    EtcdRegistry::connect(&flags.options()).await.map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Stats(args) => {
            print!("{}", ctl_node::stats(&args).await?);
            Ok(())
        }
        Command::Routes(args) => {
            print!("{}", ctl_node::routes(&args).await?);
            Ok(())
        }
        Command::Status(args) => {
            print!("{}", ctl_node::status(&args).await?);
            Ok(())
        }
        Command::Config(ConfigCommand::Set(args)) => {
            let raw = args.raw();
            raw.validate().map_err(|e| e.to_string())?;
            let json = raw.to_json();
            if !args.dry_run {
                connect(&cli.etcd)
                    .await?
                    .put_config(json.clone().into_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            println!("{json}");
            Ok(())
        }
        Command::Config(ConfigCommand::Get { json }) => {
            let reg = connect(&cli.etcd).await?;
            let raw = reg.get_config().await.map_err(|e| e.to_string())?.ok_or_else(|| {
                format!(
                    "no config at {}/config; write one with `linenctl config set --network CIDR`",
                    reg.prefix()
                )
            })?;
            if json {
                println!("{}", String::from_utf8_lossy(&raw));
                return Ok(());
            }
            println!("stored:      {}", String::from_utf8_lossy(&raw));
            let cfg = NetworkConfig::from_json(&raw).map_err(|e| e.to_string())?;
            if let Some(v4) = cfg.ipv4 {
                println!("network:     {}", v4.network);
                println!("subnet len:  /{}", v4.subnet_len);
                println!("subnets:     {} .. {}", v4.subnet_min, v4.subnet_max);
            }
            if let Some(v6) = cfg.ipv6 {
                println!(
                    "ipv6:        {} (/{}, {} .. {})",
                    v6.network, v6.subnet_len, v6.subnet_min, v6.subnet_max
                );
            }
            let b = cfg.backend;
            let mtu = b.mtu.map_or("underlay MTU - 50".to_string(), |m| m.to_string());
            println!("backend:     vxlan vni {} port {} mtu {}", b.vni, b.port, mtu);
            if b.direct_routing {
                println!("routing:     DirectRouting (peers on a node's own underlay segment without VXLAN)");
            }
            Ok(())
        }
        Command::Leases { json } => {
            let reg = connect(&cli.etcd).await?;
            let listing = reg.list_leases().await.map_err(|e| e.to_string())?;
            let mut rows = Vec::new();
            let mut leases: Vec<_> = listing.leases.iter().collect();
            // Address order (etcd returns keys in string order: 10.0.10.0 before 10.0.2.0).
            leases.sort_by_key(|kv| {
                (parse_subnet_key(&kv.key).is_none(), parse_subnet_key(&kv.key), kv.key.clone())
            });
            for kv in leases {
                let subnet = parse_subnet_key(&kv.key).map(|s| s.to_string());
                let (backend, ip, mac, vni, error) = match decode_lease(&kv.value) {
                    Ok(LeaseValue::Vxlan(l)) => (
                        "vxlan".to_string(),
                        Some(l.public_ip.to_string()),
                        Some(l.vtep_mac.to_string()),
                        Some(l.vni),
                        None,
                    ),
                    Ok(LeaseValue::OtherBackend(b)) => (b, None, None, None, None),
                    Err(e) => (String::new(), None, None, None, Some(e.to_string())),
                };
                rows.push(json!({
                    "key": kv.key, "subnet": subnet, "backend": backend, "public_ip": ip,
                    "vtep_mac": mac, "vni": vni, "etcd_lease": format!("{:x}", kv.lease_id),
                    "mod_revision": kv.mod_revision, "error": error,
                }));
            }
            if json {
                println!("{}", json!({ "revision": listing.revision, "leases": rows }));
                return Ok(());
            }
            println!(
                "{:<20} {:<16} {:<18} {:<5} {:<8} {:<17}",
                "SUBNET", "PUBLIC IP", "VTEP MAC", "VNI", "BACKEND", "ETCD LEASE"
            );
            let s = |v: &serde_json::Value| {
                v.as_str().map(str::to_string).unwrap_or_else(|| "-".into())
            };
            for r in &rows {
                let vni = r["vni"].as_u64().map_or("-".to_string(), |v| v.to_string());
                let subnet = r["subnet"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("?{}", s(&r["key"])));
                print!(
                    "{:<20} {:<16} {:<18} {:<5} {:<8} {:<17}",
                    subnet,
                    s(&r["public_ip"]),
                    s(&r["vtep_mac"]),
                    vni,
                    s(&r["backend"]),
                    s(&r["etcd_lease"])
                );
                if let Some(e) = r["error"].as_str() {
                    print!(" invalid: {e}");
                }
                println!();
            }
            println!("{} lease(s) at revision {}", rows.len(), listing.revision);
            Ok(())
        }
    }
}
