//! netbench, linen's macro benchmark: the same pod-to-pod traffic over the kernel's VXLAN device
//! in flannel's configuration and over linen's datapaths (`xdp`, `tap`, and on request `direct`:
//! `DirectRouting`, no encapsulation), measured in one run on fresh two-node network-namespace
//! testbeds, side by side; docs/benchmarks.md has the results and how to read them.
//!
//! Per datapath (module [`harness`]):
//! - **64-byte UDP packets/s**: an AF_PACKET sender ([`traffic::send`], `sendmmsg` of one
//!   pre-built 60-byte frame — 64 on a wire with FCS) in the source pod, pinned to CPU 0; packets
//!   counted at the destination pod's `eth0` (`rx_packets` from `/proc/<pid>/net/dev` of a
//!   process in that pod) over a fixed window after a warm-up. The offered rate (the source pod's
//!   `tx_packets`) is reported beside it. iperf3 is not used here: its receiver, not the path,
//!   bounds it at 70–85 kpps on these machines.
//! - **TCP, one stream and eight** (`iperf3 -P 8`): iperf3's `end.sum_received`, and over a
//!   window inside the transfer the path's CPU time per GB of TCP payload delivered, with and
//!   without iperf3's own time ([`tcp`]).
//! - **Request/response latency**: UDP ping-pong ([`traffic::rr_client`] against
//!   [`traffic::rr_server`]), one request in flight, p50/p99 computed by the client.
//! - **CPU per forwarded packet**: over the packet-rate window, with the sender pinned to CPU 0
//!   and linend's threads to the other CPUs (`--pin split`, the default; [`placement`] has the
//!   others), the path's CPU time is all softirq and hard-irq
//!   time (`/proc/stat`, every CPU) plus linend's threads' time on a CPU (`schedstat`), without
//!   the softirq ticks on linend's CPUs (tick accounting charges a softirq tick to the current
//!   task too, so those are already in linend's time), divided by delivered packets. The
//!   sender's own cost — its time on a CPU minus the softirq time on its CPU, which is path work
//!   the kernel runs inline at the end of its sends — is reported apart per sent packet, and
//!   linend's share per delivered packet. The machine's other (non-network) load is left out by
//!   construction, so the figure holds on a busy shared machine; network softirqs of other
//!   workloads would still count. Resolution: one 10 ms tick per window for the softirq part.
//! - **TCP with the underlay's offloads on**: a second cluster per datapath whose underlay veths
//!   keep their transmit offloads and run GRO ([`underlay`]); TCP with one and eight streams
//!   again. Every datapath gets both underlays, and the JSON says which features each device
//!   had (`underlay`).
//!
//! Where each role ran (`placement`, linend's threads' CPUs in `linend_cpus`) and how busy each
//! CPU was during each window (`per_cpu` in `cpu_detail` and each `tcp_detail` run) are in the
//! JSON, and one line of the Markdown notes.
//!
//! Output ([`report`]): a JSON object per datapath with the keys in [`KEYS`] (numbers, or `null`
//! with `unavailable`/`errors` saying why) plus extra keys; a Markdown table with linen/kernel
//! ratios; an SVG bar chart; all stamped with CPU model, cores, kernel and date.
//!
//! netbench never touches the root namespace's addresses or routes: every address lives in the
//! testbed's namespaces, which are deleted when each datapath's cluster is dropped.

pub mod cpu;
pub mod frame;
pub mod harness;
pub mod placement;
pub mod profile;
pub mod report;
pub mod tcp;
pub mod traffic;
pub mod underlay;

/// The headline keys every datapath object carries, so runs compare over time.
pub const KEYS: [&str; 5] = ["pps_64", "tcp_gbps", "rr_p50_us", "rr_p99_us", "cpu_ns_per_pkt"];

/// The TCP runs per underlay: streams per run (`iperf3 -P`); keys `tcp_…` for one stream,
/// `tcp8_…` for eight ([`tcp::prefix`]).
pub const TCP_STREAMS: [u32; 2] = [1, 8];

/// The datapaths netbench knows, in table order. `direct` is linen with flannel's
/// `DirectRouting` (two nodes on one segment route pod traffic natively, no VXLAN); it is measured
/// only when asked for with `--datapaths`.
pub const DATAPATHS: [&str; 4] = ["kernel", "xdp", "tap", "direct"];

/// The marker lines that delimit netbench's section in `docs/benchmarks.md`.
pub const MD_BEGIN: &str = "<!-- netbench:begin -->";
/// See [`MD_BEGIN`].
pub const MD_END: &str = "<!-- netbench:end -->";
/// Ends the generated part of the section: hand-written notes between this marker and
/// [`MD_END`] survive the next run.
pub const MD_GENERATED_END: &str = "<!-- netbench:generated:end -->";
