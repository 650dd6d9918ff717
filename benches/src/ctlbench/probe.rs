//! The traffic pieces of ctlbench, each on a thread inside a testbed namespace: the probe sender
//! in a pod, the VXLAN sink on the underlay, and the sequenced UDP stream of the churn test.
//! Every loop ends on a stop flag or a deadline.

use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use linen_testbed::Netns;

/// Moves the calling thread into `ns` (threads it creates afterwards inherit it).
///
/// # Panics
/// When the namespace file cannot be opened or `setns` fails (the testbed is broken).
pub fn enter(ns: &Netns) {
    let file = File::open(ns.path()).unwrap_or_else(|e| panic!("open {}: {e}", ns.path()));
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {}: {e}", ns.name));
}

/// Spawns `f` on a new thread inside `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.clone();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
}

/// A flanneld-format vxlan lease value.
pub fn lease_value(public_ip: Ipv4Addr, vtep_mac: [u8; 6]) -> String {
    let m = vtep_mac;
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}"}}}}"#,
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The UDP port the probes and the stream are sent to.
pub const PROBE_PORT: u16 = 9;
/// The VXLAN port the sink listens on.
pub const VXLAN_PORT: u16 = 8472;

/// A probe sender: while `target` is non-zero, sends one small UDP datagram to it every
/// `interval` (sleep-paced, so the real interval is somewhat longer; [`Prober::sent`] tells).
pub struct Prober {
    /// The IPv4 address probed now (as `u32`), 0 for none.
    pub target: Arc<AtomicU32>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the sender thread in `pod`.
    pub fn start(pod: &Netns, interval: Duration) -> Prober {
        let target = Arc::new(AtomicU32::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s, st) = (target.clone(), sent.clone(), stop.clone());
        let thread = spawn_in(pod, move || {
            let sock = UdpSocket::bind("0.0.0.0:0").expect("probe socket");
            let payload = [0x5au8; 32];
            while !st.load(Ordering::Relaxed) {
                let dst = t.load(Ordering::Acquire);
                if dst != 0 {
                    // Before the route exists the kernel refuses or drops these; that is the point.
                    let _ = sock.send_to(&payload, (Ipv4Addr::from(dst), PROBE_PORT));
                    s.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(interval);
            }
        });
        Prober { target, sent, stop, thread: Some(thread) }
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The inner IPv4 destination of a VXLAN datagram's payload (VXLAN header, inner Ethernet,
/// inner IPv4), if it carries IPv4.
pub fn inner_ipv4_dst(vxlan: &[u8]) -> Option<Ipv4Addr> {
    const ETH: usize = 8;
    const IP: usize = ETH + 14;
    if vxlan.len() < IP + 20 || vxlan[ETH + 12..ETH + 14] != [0x08, 0x00] {
        return None;
    }
    let d = &vxlan[IP + 16..IP + 20];
    Some(Ipv4Addr::new(d[0], d[1], d[2], d[3]))
}

/// The VXLAN sink: a UDP socket on port 8472 in a namespace that owns every fake VTEP address
/// (a `local` route), reporting `(inner destination, arrival)` of each datagram on a channel.
pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the sink thread in `ns`; arrivals go to `tx`.
    pub fn start(
        ns: &Netns,
        tx: tokio::sync::mpsc::UnboundedSender<(Ipv4Addr, Instant)>,
    ) -> std::io::Result<Sink> {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in(ns, move || {
            let sock = match UdpSocket::bind(("0.0.0.0", VXLAN_PORT)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = ready_tx.send(Ok(()));
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let now = Instant::now();
                    if let Some(dst) = inner_ipv4_dst(&buf[..n]) {
                        let _ = tx.send((dst, now));
                    }
                }
            }
        });
        ready_rx.recv().map_err(|_| std::io::Error::other("sink thread died"))??;
        Ok(Sink { stop, thread: Some(thread) })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the stream receiver saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamResult {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct sequence numbers received.
    pub received: u64,
    /// Datagrams that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Sequence numbers received more than once.
    pub duplicates: u64,
    /// Seconds the sender took for all datagrams.
    pub send_secs: f64,
}

/// Receives the stream on `port` in `pod` until `stop`; returns (distinct, reordered,
/// duplicates) over sequence numbers below `capacity`.
pub fn stream_receiver(
    pod: &Netns,
    port: u16,
    capacity: usize,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<(u64, u64, u64)>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = spawn_in(pod, move || {
        let sock = match UdpSocket::bind(("0.0.0.0", port)) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return (0, 0, 0);
            }
        };
        let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(8 << 20));
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = ready_tx.send(Ok(()));
        let mut seen = vec![false; capacity];
        let (mut distinct, mut reordered, mut dups, mut highest) = (0u64, 0u64, 0u64, None);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            if n < 8 {
                continue;
            }
            let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
            let Some(slot) = seen.get_mut(seq as usize) else { continue };
            if *slot {
                dups += 1;
                continue;
            }
            *slot = true;
            distinct += 1;
            match highest {
                Some(h) if seq < h => reordered += 1,
                _ => highest = Some(seq),
            }
        }
        (distinct, reordered, dups)
    });
    ready_rx.recv().map_err(|_| std::io::Error::other("receiver thread died"))??;
    Ok(h)
}

/// Sends `count` datagrams of 64 bytes (sequence number first) from `pod` to `dst:port`, paced
/// at `pps` in 1 ms bursts; returns the seconds it took.
pub fn stream_sender(
    pod: &Netns,
    dst: Ipv4Addr,
    port: u16,
    count: u64,
    pps: u32,
) -> JoinHandle<f64> {
    spawn_in(pod, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("stream socket");
        let mut buf = [0u8; 64];
        let start = Instant::now();
        let mut seq = 0u64;
        while seq < count {
            let due = ((start.elapsed().as_secs_f64() * f64::from(pps)) as u64 + 1).min(count);
            while seq < due {
                buf[..8].copy_from_slice(&seq.to_be_bytes());
                // A send that fails (full queue) is retried once after a short pause; a second
                // failure counts as a lost datagram at the receiver, which is what it is.
                if sock.send_to(&buf, (dst, port)).is_err() {
                    std::thread::sleep(Duration::from_micros(100));
                    let _ = sock.send_to(&buf, (dst, port));
                }
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        start.elapsed().as_secs_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_destination_of_a_vxlan_payload() {
        let mut p = vec![0u8; 8 + 14 + 20];
        p[8 + 12] = 0x08;
        p[8 + 14 + 16..8 + 14 + 20].copy_from_slice(&[10, 244, 7, 1]);
        assert_eq!(inner_ipv4_dst(&p), Some(Ipv4Addr::new(10, 244, 7, 1)));
        p[8 + 12] = 0x86;
        assert_eq!(inner_ipv4_dst(&p), None);
        assert_eq!(inner_ipv4_dst(&p[..20]), None);
    }

    #[test]
    fn lease_values_are_flannel_format() {
        let v = lease_value(Ipv4Addr::new(172, 16, 0, 9), [2, 0xcb, 0, 0, 1, 0xff]);
        assert_eq!(
            v,
            r#"{"PublicIP":"172.16.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:cb:00:00:01:ff"}}"#
        );
    }
}
