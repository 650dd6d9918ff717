//! The per-packet cost breakdown (`netbench --profile DIR`): `perf record -a -g -e cpu-clock`
//! on every CPU during the packet-rate window (and the single-stream TCP window), then every
//! sample of `perf script` is put into one path stage by its call chain, and each stage's CPU
//! time is divided by the packets (for TCP: the KB of payload, [`Unit`]) delivered.
//!
//! How a sample finds its stage ([`classify`]): its kernel frames are walked from the leaf toward
//! the root until a *boundary* — the entry of a softirq (`net_rx_action`), a system call, an
//! interrupt, the idle loop, a TAP read or write (`tun_get_user`, `tun_put_user`), or the
//! hand-over of a received packet to the stack (`netif_receive_skb*`, `gro_normal_*`: what runs
//! below it is the packet's processing, not its caller's). The first frame on the way that names
//! a stage-specific function (XSK TX, XDP/XSK receive, kernel VXLAN, GSO segmentation, GRO,
//! delivery into a socket, the scheduler) decides; without one, the first bridge or IP-routing
//! frame decides; without that, the boundary does (`net_rx_action` and the receive hand-over →
//! veth/netdev core, a TAP read or write → TAP, a system call → whose call it is, idle → idle).
//! Userspace samples go by process: the sender, the receiver (TCP), linend's worker threads,
//! linend's other threads, anything else. Frames of the same function therefore land in
//! different stages depending on who called them: `veth_xmit` under `xsk_generic_xmit` is the
//! XSK TX kick's cost, under `vxlan_xmit` the kernel VXLAN encap's; `skb_segment` under the
//! underlay's transmit is GSO wherever it is called from.
//!
//! The figures are sampled CPU time (one sample per `period_ns` of CPU), so a stage under a few
//! percent of the samples carries a large relative error; `perf record` itself costs a little
//! CPU on every CPU (in "other"). A CPU that sleeps in the idle loop is sampled only partly on
//! these guests, so the idle row undercounts; the per-CPU figures are therefore fractions of
//! wall time (busy with the path, busy with other work), not of a CPU's samples.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde_json::{json, Map, Value};

/// What the per-stage times are divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Delivered packets (the packet-rate window).
    Packet,
    /// KB (10³ bytes) of TCP payload delivered (the TCP window).
    Kb,
}

impl Unit {
    /// The JSON key suffix: `ns_per_pkt`, `ns_per_kb`.
    pub fn key(self) -> &'static str {
        match self {
            Unit::Packet => "pkt",
            Unit::Kb => "kb",
        }
    }

    /// What one unit is, for the table header.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Packet => "delivered packet",
            Unit::Kb => "KB of TCP payload delivered",
        }
    }

    /// The JSON key of the delivered rate while profiling.
    pub fn rate_key(self) -> &'static str {
        match self {
            Unit::Packet => "pps_during_profile",
            Unit::Kb => "kb_per_s_during_profile",
        }
    }

    fn from_key(key: &str) -> Unit {
        if key == "kb" {
            Unit::Kb
        } else {
            Unit::Packet
        }
    }
}

/// Where a sample's CPU time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The sender process: its own code and its send system calls (AF_PACKET up to the device;
    /// TCP `sendmsg` with the copy from user space, and what the kernel runs inline in it that
    /// no other stage claims).
    Sender,
    /// The receiving application (the TCP window's `iperf3 -s`): its code and its receive
    /// system calls (the copy to user space, the ACKs they send).
    Receiver,
    /// Kernel bridge (`cni0`) on either node.
    Bridge,
    /// Kernel IPv4 receive, routing and forwarding, IP output and neighbours on either node.
    Routing,
    /// veth transmit/receive, NAPI, skb handling not claimed by a more specific stage.
    Netdev,
    /// Kernel VXLAN transmit: `vxlan_xmit`, the UDP tunnel and its outer IP output.
    VxlanEncap,
    /// Kernel VXLAN receive: `vxlan_rcv` and GRO cells.
    VxlanDecap,
    /// Software segmentation of a GSO packet (`skb_segment` under TCP, UDP or UDP-tunnel GSO):
    /// the kernel cutting super-packets before a device that cannot take them whole.
    Gso,
    /// Generic receive offload: merging received segments (`napi_gro_receive` down to
    /// `tcp_gro_receive`, UDP and VXLAN GRO).
    Gro,
    /// linend's TAP: reads (`tun_put_user`: the copy of a super-packet to user space, the
    /// virtio-net header), writes (`tun_get_user`: the copy in, the skb) and the kernel's
    /// transmit into the TAP's queue (`tun_net_xmit`).
    Tun,
    /// XDP program, redirect, and the copy into the UMEM (`xsk_rcv`).
    XdpRx,
    /// The XSK TX kick (`sendto`): `xsk_generic_xmit` copies each frame into an skb and
    /// transmits it (veth enqueue), plus completion handling.
    XskTx,
    /// linend's worker threads in userspace (pipeline, rings, the polling loop).
    WorkerUser,
    /// linend's worker threads in system calls other than the TX kick (poll, epoll, recvfrom).
    WorkerSyscall,
    /// linend's other threads (control plane, stats file).
    LinendOther,
    /// Delivery into the destination pod's socket: UDP (`udp_rcv`, socket enqueue) or TCP receive
    /// in softirq (`ip_local_deliver` → `tcp_v4_rcv`, with the ACKs and ACK-clocked sends it
    /// runs).
    Delivery,
    /// Scheduler: context switches, wake-ups, idle entry/exit bookkeeping.
    Sched,
    /// Other kernel work in path processes (timer ticks, interrupts, page faults, RCU).
    KernelOther,
    /// The idle loop.
    Idle,
    /// Processes that are not part of the path (other workloads, perf itself).
    Other,
}

impl Stage {
    /// Every stage, in table order.
    pub const ALL: [Stage; 20] = [
        Stage::Sender,
        Stage::Receiver,
        Stage::Netdev,
        Stage::Bridge,
        Stage::Routing,
        Stage::VxlanEncap,
        Stage::VxlanDecap,
        Stage::Gso,
        Stage::Gro,
        Stage::Tun,
        Stage::XdpRx,
        Stage::WorkerUser,
        Stage::XskTx,
        Stage::WorkerSyscall,
        Stage::LinendOther,
        Stage::Delivery,
        Stage::Sched,
        Stage::KernelOther,
        Stage::Idle,
        Stage::Other,
    ];

    /// Short key (JSON).
    pub fn key(self) -> &'static str {
        match self {
            Stage::Sender => "sender",
            Stage::Receiver => "receiver",
            Stage::Gso => "gso",
            Stage::Gro => "gro",
            Stage::Tun => "tun",
            Stage::Bridge => "bridge",
            Stage::Routing => "routing",
            Stage::Netdev => "netdev",
            Stage::VxlanEncap => "vxlan_encap",
            Stage::VxlanDecap => "vxlan_decap",
            Stage::XdpRx => "xdp_rx",
            Stage::XskTx => "xsk_tx",
            Stage::WorkerUser => "worker_user",
            Stage::WorkerSyscall => "worker_syscall",
            Stage::LinendOther => "linend_other",
            Stage::Delivery => "delivery",
            Stage::Sched => "sched",
            Stage::KernelOther => "kernel_other",
            Stage::Idle => "idle",
            Stage::Other => "other",
        }
    }

    /// Description (Markdown table).
    pub fn label(self) -> &'static str {
        match self {
            Stage::Sender => "sender: app + its send system calls (AF_PACKET; TCP incl. copy)",
            Stage::Receiver => "receiver: app + its receive system calls (TCP copy to user)",
            Stage::Gso => "kernel GSO segmentation (`skb_segment`)",
            Stage::Gro => "GRO (`napi_gro_receive`: TCP, UDP, VXLAN merging)",
            Stage::Tun => "linend's TAP: `tun_put_user` read, `tun_get_user` write, `tun_net_xmit`",
            Stage::Bridge => "bridge (`cni0`), both nodes",
            Stage::Routing => "IP receive/forward/output, neighbours",
            Stage::Netdev => "veth + netdev core (NAPI, skb alloc/free)",
            Stage::VxlanEncap => "kernel VXLAN encap (`vxlan_xmit`, UDP tunnel)",
            Stage::VxlanDecap => "kernel VXLAN decap (`vxlan_rcv`, GRO cells)",
            Stage::XdpRx => "XDP program + redirect + copy into UMEM (`xsk_rcv`)",
            Stage::XskTx => "XSK TX kick: `sendto` → `xsk_generic_xmit` (skb copy, veth xmit)",
            Stage::WorkerUser => "linend worker, userspace",
            Stage::WorkerSyscall => "linend worker, other syscalls (poll/epoll/recvfrom)",
            Stage::LinendOther => "linend, other threads",
            Stage::Delivery => "delivery into the pod's socket (UDP; TCP receive in softirq)",
            Stage::Sched => "scheduler (switches, wake-ups)",
            Stage::KernelOther => "other kernel work in path tasks (ticks, IRQs, faults)",
            Stage::Idle => "idle",
            Stage::Other => "not the path (other processes, perf)",
        }
    }

    /// Whether the stage is work of the forwarding path (everything but idle and other).
    pub fn is_path(self) -> bool {
        !matches!(self, Stage::Idle | Stage::Other)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One frame of a call chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Symbol (`[unknown]` when perf could not name it).
    pub sym: String,
    /// The object it lives in (`[kernel.kallsyms]`, a path, `[vdso]`, `[unknown]`).
    pub dso: String,
}

impl Frame {
    fn is_kernel(&self) -> bool {
        self.dso == "[kernel.kallsyms]" || self.dso.starts_with("[bpf_prog") || self.dso == "[bpf]"
    }
}

/// One `perf script` sample: who was running and the call chain, leaf first.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Thread name.
    pub comm: String,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CPU.
    pub cpu: u32,
    /// Timestamp (seconds).
    pub time: f64,
    /// Frames, leaf first.
    pub frames: Vec<Frame>,
}

/// Parses the output of `perf script -F comm,pid,tid,cpu,time,ip,sym,dso`: a header line per
/// sample (`comm pid/tid [cpu] time:`), then one indented line per frame (`addr sym (dso)`),
/// then a blank line. Lines that fit neither are skipped.
pub fn parse_script(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut cur: Option<Sample> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            out.extend(cur.take());
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let (Some(s), Some(f)) = (cur.as_mut(), parse_frame(line.trim())) {
                s.frames.push(f);
            }
            continue;
        }
        out.extend(cur.take());
        cur = parse_header(line);
    }
    out.extend(cur);
    out
}

fn parse_header(line: &str) -> Option<Sample> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    // Find `pid/tid` followed by `[cpu]`; the comm (which may contain spaces) is before it.
    let at = (0..toks.len().saturating_sub(1)).find(|&i| {
        toks[i]
            .split_once('/')
            .is_some_and(|(p, t)| p.parse::<u32>().is_ok() && t.parse::<u32>().is_ok())
            && toks[i + 1].starts_with('[')
            && toks[i + 1].ends_with(']')
    })?;
    let (pid, tid) = toks[at].split_once('/')?;
    let cpu = toks[at + 1].trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let time = toks.get(at + 2).and_then(|t| t.trim_end_matches(':').parse().ok()).unwrap_or(0.0);
    Some(Sample {
        comm: toks[..at].join(" "),
        pid: pid.parse().ok()?,
        tid: tid.parse().ok()?,
        cpu,
        time,
        frames: Vec::new(),
    })
}

fn parse_frame(line: &str) -> Option<Frame> {
    let (_addr, rest) = line.split_once(char::is_whitespace)?;
    let rest = rest.trim();
    let (sym, dso) = match rest.rsplit_once(" (") {
        Some((s, d)) if d.ends_with(')') => (s.trim(), &d[..d.len() - 1]),
        _ => (rest, "[unknown]"),
    };
    Some(Frame { sym: sym.to_string(), dso: dso.to_string() })
}

/// Who is who among the sampled processes.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// The sender's process id.
    pub sender: HashSet<u32>,
    /// The receiving application's process id (TCP; the packet sink does no work).
    pub receiver: HashSet<u32>,
    /// linend's process ids (both nodes).
    pub linend: HashSet<u32>,
}

impl Roles {
    /// A linend worker thread (named `linen-…` by linend).
    fn is_worker(&self, s: &Sample) -> bool {
        self.linend.contains(&s.pid) && s.comm.starts_with("linen-")
    }
}

fn any_prefix(sym: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| sym.starts_with(p))
}

/// Functions that name a stage outright, wherever they sit in the chain.
fn specific(sym: &str) -> Option<Stage> {
    const XSK_TX: &[&str] = &[
        "xsk_generic_xmit",
        "__xsk_generic_xmit",
        "xsk_build_skb",
        "__xsk_sendmsg",
        "xsk_sendmsg",
        "xsk_destruct_skb",
        "xsk_cq_",
        "xsk_tx_",
        "__dev_direct_xmit",
    ];
    const XDP_RX: &[&str] = &[
        "xsk_rcv",
        "__xsk_rcv",
        "xsk_generic_rcv",
        "__xsk_map_redirect",
        "xsk_map_redirect",
        "xsk_flush",
        "__xsk_map_flush",
        "xdp_do_redirect",
        "xdp_do_generic_redirect",
        "xdp_do_flush",
        "do_xdp_generic",
        "bpf_prog_run_generic_xdp",
        "netif_receive_generic_xdp",
        "veth_convert_skb_to_xdp_buff",
        "skb_pp_cow_data",
        "bpf_prog_",
        "bpf_xdp_redirect_map",
        "xsk_buff_",
        "xp_",
    ];
    const VXLAN_TX: &[&str] =
        &["vxlan_xmit", "vxlan_build_skb", "udp_tunnel_xmit_skb", "iptunnel_xmit", "udp_set_csum"];
    const VXLAN_RX: &[&str] =
        &["vxlan_rcv", "gro_cells_", "gro_cell_poll", "vxlan_ecn_decapsulate"];
    const GSO: &[&str] = &[
        "skb_segment",
        "__skb_gso_segment",
        "skb_mac_gso_segment",
        "inet_gso_segment",
        "tcp_gso_segment",
        "tcp4_gso_segment",
        "__udp_gso_segment",
        "udp4_ufo_fragment",
        "skb_udp_tunnel_segment",
        "__skb_udp_tunnel_segment",
        "udp_rcv_segment",
    ];
    // `vxlan_gro_receive` sits between the UDP and the inner TCP GRO handlers: GRO, like them.
    const GRO: &[&str] = &[
        "napi_gro_",
        "__napi_gro_",
        "dev_gro_receive",
        "gro_receive_skb",
        "gro_flush",
        "gro_complete",
        "gro_pull_from_frag0",
        "napi_skb_finish",
        "inet_gro_",
        "tcp4_gro_",
        "tcp_gro_",
        "udp4_gro_",
        "udp_gro_",
        "skb_gro_",
        "eth_gro_",
        "vxlan_gro_",
    ];
    const DELIVERY: &[&str] = &[
        "udp_rcv",
        "__udp4_lib_rcv",
        "udp_queue_rcv",
        "udp_unicast_rcv_skb",
        "__udp_enqueue_schedule_skb",
        "__udp4_lib_lookup",
        "ip_local_deliver",
        "ip_protocol_deliver_rcu",
    ];
    const SCHED: &[&str] = &[
        "schedule",
        "__schedule",
        "try_to_wake_up",
        "finish_task_switch",
        "pick_next_task",
        "ttwu_",
        "psi_",
        "enqueue_task",
        "dequeue_task",
        "__wake_up",
        "update_curr",
        "update_load_avg",
    ];
    if any_prefix(sym, XSK_TX) {
        Some(Stage::XskTx)
    } else if any_prefix(sym, XDP_RX) {
        Some(Stage::XdpRx)
    } else if any_prefix(sym, VXLAN_TX) {
        Some(Stage::VxlanEncap)
    } else if any_prefix(sym, VXLAN_RX) {
        Some(Stage::VxlanDecap)
    } else if any_prefix(sym, GSO) {
        Some(Stage::Gso)
    } else if any_prefix(sym, GRO) {
        Some(Stage::Gro)
    } else if sym.starts_with("tun_net_xmit") {
        Some(Stage::Tun)
    } else if any_prefix(sym, DELIVERY) {
        Some(Stage::Delivery)
    } else if any_prefix(sym, SCHED) {
        Some(Stage::Sched)
    } else {
        None
    }
}

/// Bridge and routing functions: used when no specific function is on the way to the boundary.
fn generic(sym: &str) -> Option<Stage> {
    if sym.starts_with("br_") || sym.starts_with("nbp_") {
        Some(Stage::Bridge)
    } else if any_prefix(
        sym,
        &[
            "ip_rcv",
            "ip_list_rcv",
            "ip_sublist_rcv",
            "ip_forward",
            "ip_route_",
            "fib_",
            "ip_output",
        ],
    ) || any_prefix(
        sym,
        &["ip_finish_output", "ip_local_out", "__ip_local_out", "neigh_", "ip4_"],
    ) {
        Some(Stage::Routing)
    } else {
        None
    }
}

/// Where the walk from the leaf stops: the context the leaf's work runs in.
enum Boundary {
    Softirq,
    /// A received packet handed to the stack: below is its processing.
    Receive,
    /// linend reading (`true`) or writing the TAP.
    Tun(bool),
    Syscall(String),
    Idle,
    Interrupt,
}

fn boundary(f: &Frame) -> Option<Boundary> {
    let s = f.sym.as_str();
    if s == "net_rx_action" || s == "net_tx_action" {
        Some(Boundary::Softirq)
    } else if any_prefix(
        s,
        &["netif_receive_skb", "__netif_receive_skb", "gro_normal_list", "gro_normal_one"],
    ) {
        Some(Boundary::Receive)
    } else if any_prefix(s, &["tun_put_user", "tun_do_read", "tun_chr_read_iter", "tun_recvmsg"]) {
        Some(Boundary::Tun(true))
    } else if any_prefix(s, &["tun_get_user", "tun_chr_write_iter", "tun_sendmsg"]) {
        Some(Boundary::Tun(false))
    } else if let Some(name) = s.strip_prefix("__x64_sys_").or_else(|| s.strip_prefix("__do_sys_"))
    {
        Some(Boundary::Syscall(name.to_string()))
    } else if s == "do_syscall_64" || s.starts_with("entry_SYSCALL") {
        Some(Boundary::Syscall(String::from("?")))
    } else if any_prefix(s, &["do_idle", "cpu_startup_entry", "default_idle", "cpuidle_"]) {
        Some(Boundary::Idle)
    } else if any_prefix(
        s,
        &[
            "asm_sysvec_",
            "sysvec_",
            "asm_exc_",
            "exc_page_fault",
            "run_timer_softirq",
            "rcu_core",
            "tasklet_",
            "irq_exit",
            "ret_from_fork",
            "kthread",
            "worker_thread",
        ],
    ) {
        Some(Boundary::Interrupt)
    } else {
        None
    }
}

/// What one sample was: its stage, and a detail (the system call, or the worker's userspace
/// symbol) where that helps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// The stage.
    pub stage: Stage,
    /// Finer detail within the stage (`sendto`, `epoll_wait`, a userspace symbol), if any.
    pub detail: Option<String>,
}

/// Puts one sample into its stage (see the module docs).
pub fn classify(s: &Sample, roles: &Roles) -> Class {
    let of = |stage| Class { stage, detail: None };
    let is_sender = roles.sender.contains(&s.pid);
    let is_receiver = roles.receiver.contains(&s.pid);
    let is_linend = roles.linend.contains(&s.pid);
    let worker = roles.is_worker(s);
    let Some(leaf) = s.frames.first() else { return of(Stage::Other) };
    if !leaf.is_kernel() {
        return if is_sender {
            of(Stage::Sender)
        } else if is_receiver {
            of(Stage::Receiver)
        } else if worker {
            Class { stage: Stage::WorkerUser, detail: Some(user_group(&leaf.sym, &leaf.dso)) }
        } else if is_linend {
            of(Stage::LinendOther)
        } else {
            of(Stage::Other)
        };
    }
    let mut first_specific = None;
    let mut first_generic = None;
    let mut stop = None;
    for f in s.frames.iter().take_while(|f| f.is_kernel()) {
        if let Some(b) = boundary(f) {
            stop = Some(b);
            break;
        }
        if first_specific.is_none() {
            first_specific = specific(&f.sym);
        }
        if first_generic.is_none() {
            first_generic = generic(&f.sym);
        }
    }
    let path_task = is_sender || is_receiver || is_linend;
    // Work in the system calls of a process that is not part of the path is that process's own,
    // whatever it calls (another workload's XSK or TAP, and the packets its TAP writes carry
    // into the stack); softirq work counts wherever it ran, since the kernel runs the path's
    // softirqs in whichever task is current. So what decides is the outermost context: the
    // first softirq, system call, interrupt or idle entry above the leaf.
    let context =
        s.frames.iter().take_while(|f| f.is_kernel()).find_map(|f| {
            boundary(f).filter(|b| !matches!(b, Boundary::Receive | Boundary::Tun(_)))
        });
    if !path_task && matches!(context, Some(Boundary::Syscall(_))) {
        return of(Stage::Other);
    }
    if let Some(st) = first_specific.or(first_generic) {
        return of(st);
    }
    // Within the applications' system calls and the TAP: copying or not.
    let copying = if is_copy(&leaf.sym) { "copy" } else { "rest" };
    let copy = || Some(copying.to_string());
    match stop {
        Some(Boundary::Softirq | Boundary::Receive) => of(Stage::Netdev),
        Some(Boundary::Tun(read)) => Class {
            stage: Stage::Tun,
            detail: Some(format!("{} {copying}", if read { "read" } else { "write" })),
        },
        Some(Boundary::Idle) => of(Stage::Idle),
        Some(Boundary::Syscall(name)) if worker => {
            Class { stage: Stage::WorkerSyscall, detail: Some(name) }
        }
        Some(Boundary::Syscall(_)) if is_sender => Class { stage: Stage::Sender, detail: copy() },
        Some(Boundary::Syscall(_)) if is_receiver => {
            Class { stage: Stage::Receiver, detail: copy() }
        }
        Some(Boundary::Syscall(_)) if is_linend => of(Stage::LinendOther),
        _ if path_task => of(Stage::KernelOther),
        _ => of(Stage::Other),
    }
}

/// Kernel functions that copy between user space and a packet (or a packet and a packet).
fn is_copy(sym: &str) -> bool {
    any_prefix(
        sym,
        &[
            "rep_movs_alternative",
            "copy_user_",
            "_copy_to_iter",
            "_copy_from_iter",
            "copy_page_to_iter",
            "copy_page_from_iter",
            "_copy_to_user",
            "_copy_from_user",
            "simple_copy_to_iter",
            "__skb_datagram_iter",
            "skb_copy_datagram_",
            "skb_copy_bits",
            "memcpy",
            "__memcpy",
            "__pi_memcpy",
            "csum_partial_copy",
            "memmove",
        ],
    )
}

/// Groups a worker's userspace leaf symbol (release builds inline much of the pipeline into
/// the loop, so these groups are coarse).
fn user_group(sym: &str, dso: &str) -> String {
    let group = if dso == "[vdso]" || sym.contains("clock_gettime") || sym.contains("Instant") {
        "clock"
    } else if sym.contains("offload::") || sym.contains("segment") || sym.contains("coalesc") {
        "TSO/GRO (offload)"
    } else if sym.contains("decap") {
        "decap"
    } else if sym.contains("encap") || sym.contains("flow_hash") {
        "encap"
    } else if sym.contains("route::") || sym.contains("lookup") || sym.contains("Published") {
        "route lookup"
    } else if sym.contains("xsk::") || sym.contains("Umem") || sym.contains("FramePool") {
        "XSK rings"
    } else if sym.contains("worker::") || sym.contains("begin_short_backtrace") {
        "loop (inlined pipeline)"
    } else if sym.contains("libc") || dso.contains("libc") || dso.contains("libxdp") {
        "libc/libxdp"
    } else {
        "other"
    };
    group.to_string()
}

/// Samples per stage (and per detail within a stage) over one perf window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breakdown {
    /// Samples per stage.
    pub stages: BTreeMap<Stage, u64>,
    /// Samples per (stage, detail).
    pub details: BTreeMap<(Stage, String), u64>,
    /// Samples per (stage, CPU).
    pub per_cpu: BTreeMap<(Stage, u32), u64>,
    /// All samples.
    pub total: u64,
    /// Seconds between the first and the last sample.
    pub span_s: f64,
    /// CPUs that produced samples.
    pub cpus: usize,
}

impl Breakdown {
    /// Classifies every sample.
    pub fn of(samples: &[Sample], roles: &Roles) -> Breakdown {
        let mut b = Breakdown::default();
        let (mut t0, mut t1) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut cpus = HashSet::new();
        for s in samples {
            let c = classify(s, roles);
            *b.stages.entry(c.stage).or_default() += 1;
            *b.per_cpu.entry((c.stage, s.cpu)).or_default() += 1;
            if let Some(d) = c.detail {
                *b.details.entry((c.stage, d)).or_default() += 1;
            }
            b.total += 1;
            t0 = t0.min(s.time);
            t1 = t1.max(s.time);
            cpus.insert(s.cpu);
        }
        b.span_s = if b.total > 1 { t1 - t0 } else { 0.0 };
        b.cpus = cpus.len();
        b
    }

    /// Samples of `stage`.
    pub fn samples(&self, stage: Stage) -> u64 {
        self.stages.get(&stage).copied().unwrap_or(0)
    }

    /// CPU nanoseconds per delivered packet of each stage, for `period_ns` of CPU per sample
    /// and a delivered rate of `pps` over the sampled span.
    pub fn ns_per_packet(&self, period_ns: f64, pps: f64) -> BTreeMap<Stage, f64> {
        let packets = pps * self.span_s;
        self.stages
            .iter()
            .map(|(s, n)| (*s, if packets > 0.0 { *n as f64 * period_ns / packets } else { 0.0 }))
            .collect()
    }

    /// JSON: samples and ns per unit per stage (`ns_per_pkt` or `ns_per_kb`), details, totals,
    /// for `rate` units delivered per second.
    pub fn to_json(&self, period_ns: f64, rate: f64, unit: Unit) -> Value {
        let pps = rate;
        let per = format!("ns_per_{}", unit.key());
        let path_per = format!("path_ns_per_{}", unit.key());
        let ns = self.ns_per_packet(period_ns, pps);
        let mut stages = Map::new();
        for st in Stage::ALL {
            let n = self.samples(st);
            if n > 0 {
                stages.insert(
                    st.key().into(),
                    json!({"samples": n, &per: ns.get(&st).copied().unwrap_or(0.0)}),
                );
            }
        }
        let mut details = Map::new();
        for ((st, d), n) in &self.details {
            details.insert(format!("{}:{d}", st.key()), json!(n));
        }
        let path_ns: f64 = ns.iter().filter(|(s, _)| s.is_path()).map(|(_, v)| v).sum();
        // Where the path's work ran: ns per packet of path stages per CPU, and how much of each
        // CPU's time (not of its samples: an idle CPU in a guest may not be sampled at all) was
        // path work and other processes' work.
        let packets = pps * self.span_s;
        let cpu_s =
            |n: u64| if self.span_s > 0.0 { n as f64 * period_ns / 1e9 / self.span_s } else { 0.0 };
        let mut by_cpu = Map::new();
        let cpus: std::collections::BTreeSet<u32> = self.per_cpu.keys().map(|(_, c)| *c).collect();
        for cpu in cpus {
            let of = |f: &dyn Fn(Stage) -> bool| -> u64 {
                self.per_cpu.iter().filter(|((s, c), _)| *c == cpu && f(*s)).map(|(_, n)| n).sum()
            };
            let path = of(&|s| s.is_path());
            by_cpu.insert(
                cpu.to_string(),
                json!({
                    &path_per: if packets > 0.0 { path as f64 * period_ns / packets } else { 0.0 },
                    "path_busy": cpu_s(path),
                    "other_busy": cpu_s(of(&|s| s == Stage::Other)),
                }),
            );
        }
        json!({
            "unit": unit.key(),
            "period_ns": period_ns,
            "samples": self.total,
            "span_s": self.span_s,
            "cpus": self.cpus,
            unit.rate_key(): pps,
            &path_per: path_ns,
            "by_cpu": by_cpu,
            "stages": stages,
            "details": details,
        })
    }
}

/// A Markdown table of ns per delivered unit per stage, one column per datapath profile
/// (`(name, breakdown json)` as written by [`Breakdown::to_json`], all of one [`Unit`]).
pub fn markdown(cols: &[(String, Value)]) -> String {
    let unit = Unit::from_key(cols.first().and_then(|(_, v)| v["unit"].as_str()).unwrap_or("pkt"));
    let per = format!("ns_per_{}", unit.key());
    let path_per = format!("path_ns_per_{}", unit.key());
    let mut out = format!("| stage (ns per {}) |", unit.label());
    for (name, _) in cols {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(cols.len()));
    out.push('\n');
    let cell = |v: &Value, st: Stage| -> String {
        match v["stages"][st.key()][&per].as_f64() {
            Some(x) => format!("{x:.0}"),
            None => "—".into(),
        }
    };
    for st in Stage::ALL {
        if cols.iter().all(|(_, v)| v["stages"][st.key()].is_null()) {
            continue;
        }
        out.push_str(&format!("| {} |", st.label()));
        for (_, v) in cols {
            out.push_str(&format!(" {} |", cell(v, st)));
        }
        out.push('\n');
    }
    out.push_str("| **path total (all but idle and other)** |");
    for (_, v) in cols {
        out.push_str(&format!(" **{:.0}** |", v[&path_per].as_f64().unwrap_or(0.0)));
    }
    out.push('\n');
    let cpus: std::collections::BTreeSet<String> = cols
        .iter()
        .filter_map(|(_, v)| v["by_cpu"].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    for cpu in &cpus {
        out.push_str(&format!(
            "| of it on CPU {cpu} (CPU {cpu} busy with the path / with other work) |"
        ));
        for (_, v) in cols {
            let c = &v["by_cpu"][cpu.as_str()];
            match c[&path_per].as_f64() {
                Some(ns) => out.push_str(&format!(
                    " {ns:.0} ({:.0} % / {:.0} %) |",
                    c["path_busy"].as_f64().unwrap_or(0.0) * 100.0,
                    c["other_busy"].as_f64().unwrap_or(0.0) * 100.0
                )),
                None => out.push_str(" — |"),
            }
        }
        out.push('\n');
    }
    out.push_str(match unit {
        Unit::Packet => "| delivered packets/s while profiling |",
        Unit::Kb => "| delivered KB/s while profiling |",
    });
    for (_, v) in cols {
        out.push_str(&format!(" {:.0} |", v[unit.rate_key()].as_f64().unwrap_or(0.0)));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real samples of a `netbench --profile` run (kernel and xdp), one per case, each after a
    /// `# case: <name>` line.
    const FIXTURE: &str = include_str!("../../tests/fixtures/perf-script-sample.txt");

    /// The processes of that run: the sender (kernel and xdp runs) and the two linends.
    fn roles() -> Roles {
        Roles {
            sender: [13515, 14621].into_iter().collect(),
            linend: [14409, 14429].into_iter().collect(),
            ..Roles::default()
        }
    }

    fn case(name: &str) -> Sample {
        let start = FIXTURE
            .find(&format!("# case: {name}\n"))
            .unwrap_or_else(|| panic!("no case {name:?} in the fixture"));
        let text = &FIXTURE[start..];
        let text = text.split_once('\n').map_or("", |(_, rest)| rest);
        let end = text.find("# case: ").unwrap_or(text.len());
        let mut s = parse_script(&text[..end]);
        assert_eq!(s.len(), 1, "case {name:?} holds one sample");
        s.remove(0)
    }

    #[test]
    fn parses_headers_and_frames() {
        let all = parse_script(FIXTURE);
        assert_eq!(all.len(), FIXTURE.matches("# case: ").count());
        let s = case("worker epoll");
        assert_eq!((s.comm.as_str(), s.pid, s.tid, s.cpu), ("linen-xdp-0", 14409, 14421, 1));
        assert!((s.time - 10869.542261).abs() < 1e-6);
        assert_eq!(
            s.frames[0],
            Frame { sym: "__put_user_nocheck_4".into(), dso: "[kernel.kallsyms]".into() }
        );
        assert_eq!(s.frames.last().unwrap().sym, "[unknown]");
        // A comm with a space and a frame without a dso.
        let odd = parse_script("opt abc 12/13 [001] 5.5: \n\t1234 foo\n\n");
        assert_eq!(odd[0].comm, "opt abc");
        assert_eq!(odd[0].frames[0], Frame { sym: "foo".into(), dso: "[unknown]".into() });
        // Garbage is skipped, not fatal.
        assert!(parse_script("not a header\n\tdeadbeef x (y)\n").is_empty());
    }

    #[test]
    fn each_captured_case_lands_in_its_stage() {
        let r = roles();
        let expect = [
            ("sender user", Stage::Sender),
            // pod veth transmit inside the sender's sendmmsg, no softirq: the sender's.
            ("sender syscall", Stage::Sender),
            // veth_xmit of the underlay below vxlan_xmit's outer IP output: encap.
            ("vxlan encap (veth_xmit leaf)", Stage::VxlanEncap),
            ("vxlan decap", Stage::VxlanDecap),
            ("bridge", Stage::Bridge),
            ("routing", Stage::Routing),
            ("netdev", Stage::Netdev),
            ("delivery", Stage::Delivery),
            ("other", Stage::Other),
            ("xsk rcv copy", Stage::XdpRx),
            // veth's XDP path copying a locked skb head into a page-pool page (in the sender's
            // softirq): part of getting the frame to the XSK.
            ("veth cow", Stage::XdpRx),
            // veth_xmit below __xsk_generic_xmit: the TX kick's cost, not generic veth.
            ("xsk tx veth", Stage::XskTx),
            ("worker user", Stage::WorkerUser),
            ("worker clock", Stage::WorkerUser),
            ("worker epoll", Stage::WorkerSyscall),
            ("worker sched", Stage::Sched),
            // The peer's receive softirq run at the end of a sendto: XDP receive, not TX.
            ("sendto then softirq xsk rcv", Stage::XdpRx),
            ("linend other", Stage::LinendOther),
            ("idle (hand-written: this capture had no idle CPU)", Stage::Idle),
        ];
        for (name, stage) in expect {
            assert_eq!(classify(&case(name), &r).stage, stage, "case {name:?}");
        }
        assert_eq!(classify(&case("worker epoll"), &r).detail.as_deref(), Some("epoll_wait"));
        assert_eq!(classify(&case("worker clock"), &r).detail.as_deref(), Some("clock"));
        assert_eq!(
            classify(&case("worker user"), &r).detail.as_deref(),
            Some("loop (inlined pipeline)")
        );
    }

    /// Real samples of the single-stream TCP window of a `netbench --profile` run (kernel, xdp and
    /// tap), one per case.
    const TCP_FIXTURE: &str = include_str!("../../tests/fixtures/perf-script-tcp-sample.txt");

    /// The processes of that run: iperf3 clients and servers, the linends (not 28052: another
    /// workload's linend that ran at the same time).
    fn tcp_roles() -> Roles {
        Roles {
            sender: [25389, 29324].into_iter().collect(),
            receiver: [25383, 29313].into_iter().collect(),
            linend: [28840, 28844, 820, 823].into_iter().collect(),
        }
    }

    fn tcp_case(name: &str) -> Sample {
        let start = TCP_FIXTURE
            .find(&format!("# case: {name}\n"))
            .unwrap_or_else(|| panic!("no case {name:?} in the TCP fixture"));
        let text = TCP_FIXTURE[start..].split_once('\n').map_or("", |(_, rest)| rest);
        let end = text.find("# case: ").unwrap_or(text.len());
        let mut s = parse_script(&text[..end]);
        assert_eq!(s.len(), 1, "case {name:?} holds one sample");
        s.remove(0)
    }

    #[test]
    fn tcp_window_cases_land_in_their_stages() {
        let r = tcp_roles();
        let expect = [
            // skb_segment below vxlan_xmit's underlay transmit (tx off): GSO, not encap.
            (
                "kernel: GSO of the VXLAN super-packet before the underlay (tx off)",
                Stage::Gso,
                None,
            ),
            ("kernel: GRO of the decapsulated segments", Stage::Gro, None),
            // The inner packet GRO hands on (gro_complete → netif_receive_skb_list_internal)
            // is routed: its routing, not GRO's and not the VXLAN device's.
            ("kernel: routing of a packet GRO handed on", Stage::Routing, None),
            ("kernel: receiver copy to user", Stage::Receiver, Some("copy")),
            ("kernel: sender copy from user", Stage::Sender, Some("copy")),
            ("kernel: receiver user space", Stage::Receiver, None),
            ("xdp: TAP read copy", Stage::Tun, Some("read copy")),
            ("xdp: TAP write copy", Stage::Tun, Some("write copy")),
            // What runs below the TAP write's netif_receive_skb is the packet's processing.
            ("xdp: TAP write, bridge below", Stage::Bridge, None),
            ("xdp: TAP write, TCP receive in the softirq it runs", Stage::Delivery, None),
            // tun_net_xmit waking linend's reader (sock_def_readable): the TAP's transmit.
            ("xdp: kernel transmit into the TAP (wake-up of the reader)", Stage::Tun, None),
            // Another workload's TAP write, with the stack it runs for its packets: not ours…
            ("foreign TAP write", Stage::Other, None),
            // …but softirq work is the path's wherever it ran (see the module docs).
            ("foreign TAP write, softirq it runs", Stage::Tun, None),
            ("tap: UDP GSO in the worker's sendmmsg", Stage::Gso, None),
            ("tap: worker software TSO", Stage::WorkerUser, Some("TSO/GRO (offload)")),
        ];
        for (name, stage, detail) in expect {
            let c = classify(&tcp_case(name), &r);
            assert_eq!(c.stage, stage, "case {name:?}");
            if let Some(d) = detail {
                assert_eq!(c.detail.as_deref(), Some(d), "case {name:?}");
            }
        }
        // The same TAP read by a process that is not linend is that process's business.
        assert_eq!(classify(&tcp_case("xdp: TAP read copy"), &roles()).stage, Stage::Other);
        assert_eq!(parse_script(TCP_FIXTURE).len(), TCP_FIXTURE.matches("# case: ").count());
    }

    #[test]
    fn tcp_breakdown_is_per_kb() {
        let all = parse_script(TCP_FIXTURE);
        let b = Breakdown::of(&all, &tcp_roles());
        // 100 MB/s = 100,000 KB/s.
        let v = b.to_json(250_000.0, 100_000.0, Unit::Kb);
        assert_eq!(v["unit"], "kb");
        assert_eq!(v["kb_per_s_during_profile"], 100_000.0);
        assert!(v["stages"]["tun"]["ns_per_kb"].as_f64().is_some_and(|x| x > 0.0));
        assert!(v["stages"]["tun"].get("ns_per_pkt").is_none());
        assert!(v["path_ns_per_kb"].as_f64().is_some_and(|x| x > 0.0));
        let md = markdown(&[("xdp".into(), v)]);
        assert!(md.starts_with("| stage (ns per KB of TCP payload delivered) | xdp |"), "{md}");
        assert!(md.contains("| kernel GSO segmentation (`skb_segment`) |"), "{md}");
        assert!(md.contains("| delivered KB/s while profiling | 100000 |"), "{md}");
    }

    #[test]
    fn roles_decide_userspace_samples() {
        let s = case("worker user");
        // The same sample from a process that is not linend is someone else's work.
        assert_eq!(classify(&s, &Roles::default()).stage, Stage::Other);
        let empty = Sample { frames: Vec::new(), ..s };
        assert_eq!(classify(&empty, &roles()).stage, Stage::Other);
    }

    #[test]
    fn breakdown_converts_samples_to_ns_per_packet() {
        let all = parse_script(FIXTURE);
        let b = Breakdown::of(&all, &roles());
        assert_eq!(b.total, all.len() as u64);
        assert_eq!(b.samples(Stage::Sender), 2);
        assert_eq!(b.samples(Stage::XdpRx), 3);
        assert_eq!(b.cpus, 2);
        // Timestamps span 10848.775152 (rustc) .. 10869.542261 (worker epoll).
        assert!((b.span_s - (10869.542261 - 10848.775152)).abs() < 1e-6);
        // 3 samples × 250 µs over span × 1000 packets/s.
        let ns = b.ns_per_packet(250_000.0, 1000.0);
        let want = 3.0 * 250_000.0 / (b.span_s * 1000.0);
        assert!((ns[&Stage::XdpRx] - want).abs() < 1e-9);
        let v = b.to_json(250_000.0, 1000.0, Unit::Packet);
        assert_eq!(v["stages"]["xdp_rx"]["samples"], 3);
        assert!(v["stages"]["idle"]["ns_per_pkt"].as_f64().unwrap() > 0.0);
        let path: f64 = ns.iter().filter(|(s, _)| s.is_path()).map(|(_, v)| v).sum();
        assert!((v["path_ns_per_pkt"].as_f64().unwrap() - path).abs() < 1e-9);
        assert!(markdown(&[("all".into(), v.clone())])
            .contains("| XDP program + redirect + copy into UMEM (`xsk_rcv`) |"));
        // Per CPU: the fixture's path samples ran on CPUs 0 and 1; "other" (rustc) on CPU 1.
        let on = |cpu: &str| v["by_cpu"][cpu]["path_ns_per_pkt"].as_f64().unwrap();
        assert!((on("0") + on("1") - path).abs() < 1e-9);
        // One rustc sample of 250 µs on CPU 1 over the span.
        let other1 = v["by_cpu"]["1"]["other_busy"].as_f64().unwrap();
        assert!((other1 - 250e-6 / b.span_s).abs() < 1e-12);
        assert_eq!(v["by_cpu"]["0"]["other_busy"].as_f64().unwrap(), 0.0);
        let xdp_only = Breakdown::of(&[case("xsk rcv copy"), case("worker user")], &roles());
        let md = markdown(&[("xdp".into(), xdp_only.to_json(250_000.0, 1000.0, Unit::Packet))]);
        assert!(md.contains("| linend worker, userspace |"));
        assert!(md.contains("| of it on CPU 1 (CPU 1 busy with the path / with other work) | "));
        assert!(!md.contains("kernel VXLAN encap"), "stages without samples are left out");
    }
}
