//! The pod-side halves of netbench. The `netbench` binary runs each of these as a small mode
//! inside a pod's namespace (`ip netns exec <pod> netbench send …`), so the traffic really starts
//! and ends in pods. Each one is bounded by a duration and exits on its own.
//!
//! - [`send`]: an AF_PACKET sender that pushes one pre-built frame as fast as `sendmmsg` allows,
//!   or paced at a fixed rate.
//!   The socket is bound to the pod's interface with protocol 0, so it never receives (no copy of
//!   every frame back to it) and costs the path nothing besides its own sends.
//! - [`sink`]: holds a UDP port open without reading it, so the destination answers no "port
//!   unreachable" (no reverse traffic); the socket's queue fills and the kernel drops quietly.
//! - [`rr_server`] / [`rr_client`]: UDP ping-pong; the client times every round trip itself.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, sendmmsg, socket, AddressFamily, LinkAddr, MsgFlags, MultiHeaders, SockFlag, SockType,
};

use super::frame::{udp_frame, Flow};

/// Frames handed to the kernel by one `sendmmsg`.
pub const SEND_BATCH: usize = 64;

/// What [`send`] does.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// The pod's interface (`eth0`).
    pub iface: String,
    /// The next hop's MAC (the node's `cni0`).
    pub dst_mac: [u8; 6],
    /// Source address (the pod's).
    pub src_ip: Ipv4Addr,
    /// The destination pod and UDP port.
    pub dst: SocketAddrV4,
    /// Frame length without FCS (60 for 64-byte frames).
    pub frame_len: usize,
    /// How long to send.
    pub duration: Duration,
    /// Pin the sending thread to this CPU.
    pub cpu: Option<usize>,
    /// Frames per second to offer, evenly paced; `None` (or 0): as fast as `sendmmsg` allows.
    pub rate: Option<u64>,
}

/// What [`send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendReport {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Failed `sendmmsg` calls (e.g. `ENOBUFS`).
    pub errors: u64,
    /// Time spent sending.
    pub elapsed: Duration,
}

/// Errors of the pod-side modes.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// A system call failed.
    #[error("{call}: {source}")]
    Sys {
        /// What was called.
        call: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The interface has no link-layer address here (wrong name or namespace).
    #[error("no interface {0} with a link-layer address in this network namespace")]
    NoInterface(String),
    /// The frame could not be built.
    #[error(transparent)]
    Frame(#[from] super::frame::FrameError),
}

fn sys(call: &'static str) -> impl FnOnce(nix::Error) -> TrafficError {
    move |e| TrafficError::Sys { call, source: io::Error::from(e) }
}

fn io_err(call: &'static str) -> impl FnOnce(io::Error) -> TrafficError {
    move |source| TrafficError::Sys { call, source }
}

/// The link-layer address (ifindex, MAC) of `iface` in the current namespace.
fn link_addr(iface: &str) -> Result<LinkAddr, TrafficError> {
    nix::ifaddrs::getifaddrs()
        .map_err(sys("getifaddrs"))?
        .filter(|a| a.interface_name == iface)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .ok_or_else(|| TrafficError::NoInterface(iface.to_string()))
}

/// Pins the calling thread to `cpu`.
///
/// # Errors
/// `sched_setaffinity` failed (e.g. no such CPU).
pub fn pin_to_cpu(cpu: usize) -> Result<(), TrafficError> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(sys("CpuSet::set"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(sys("sched_setaffinity"))
}

/// Sends `cfg.frame_len`-byte UDP frames out of `cfg.iface` for `cfg.duration`, [`SEND_BATCH`]
/// per `sendmmsg` (paced: about 100 µs worth per call, at most `cfg.rate` per second), with an
/// AF_PACKET socket (needs `CAP_NET_RAW`).
///
/// # Errors
/// Setting up the socket failed. Failed sends during the run are counted, not fatal.
pub fn send(cfg: &SendConfig) -> Result<SendReport, TrafficError> {
    if let Some(cpu) = cfg.cpu {
        pin_to_cpu(cpu)?;
    }
    let link = link_addr(&cfg.iface)?;
    let flow = Flow {
        src_mac: link.addr().unwrap_or_default(),
        dst_mac: cfg.dst_mac,
        src_ip: cfg.src_ip,
        dst_ip: *cfg.dst.ip(),
        src_port: 40000,
        dst_port: cfg.dst.port(),
    };
    let frame = udp_frame(&flow, cfg.frame_len)?;
    // Protocol 0: a send-only packet socket (it joins no receive hook). Binding it to the
    // interface (the address from getifaddrs carries protocol 0 too) lets `sendmmsg` go without
    // per-message addresses.
    let fd = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None)
        .map_err(sys("socket(AF_PACKET)"))?;
    bind(fd.as_raw_fd(), &link).map_err(sys("bind(AF_PACKET)"))?;

    let slices: Vec<[IoSlice<'_>; 1]> = (0..SEND_BATCH).map(|_| [IoSlice::new(&frame)]).collect();
    let addrs: Vec<Option<LinkAddr>> = vec![None; SEND_BATCH];
    let mut headers = MultiHeaders::<LinkAddr>::preallocate(SEND_BATCH, None);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut report = SendReport::default();
    // Paced: batches of about 100 µs worth of frames, each sent when the schedule reaches it.
    let rate = cfg.rate.filter(|r| *r > 0);
    let batch = rate.map_or(SEND_BATCH, |r| (r / 10_000).clamp(1, SEND_BATCH as u64) as usize);
    let mut scheduled = 0u64;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(scheduled as f64 / rate as f64);
            if due > now {
                std::thread::sleep(due - now);
                continue;
            }
            if now - due > Duration::from_millis(10) {
                // Fell behind (descheduled): skip what was missed rather than burst it.
                scheduled = ((now - start).as_secs_f64() * rate as f64) as u64;
            }
            scheduled += batch as u64;
        }
        let (s, a) = (&slices[..batch], &addrs[..batch]);
        match sendmmsg(fd.as_raw_fd(), &mut headers, s, a, [], MsgFlags::empty()) {
            Ok(results) => report.sent += results.count() as u64,
            Err(_) => {
                report.errors += 1;
                std::thread::yield_now();
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Binds UDP `port` on every address and holds it, unread, for `duration`.
///
/// # Errors
/// The port cannot be bound.
pub fn sink(port: u16, duration: Duration) -> Result<(), TrafficError> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .map_err(io_err("bind sink"))?;
    std::thread::sleep(duration);
    drop(s);
    Ok(())
}

/// Echoes every datagram on UDP `port` back to its sender until `duration` has passed.
///
/// # Errors
/// The port cannot be bound.
pub fn rr_server(port: u16, duration: Duration) -> Result<u64, TrafficError> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .map_err(io_err("bind rr server"))?;
    s.set_read_timeout(Some(Duration::from_millis(100))).map_err(io_err("SO_RCVTIMEO"))?;
    let deadline = Instant::now() + duration;
    let mut buf = [0u8; 2048];
    let mut echoed = 0;
    while Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            if s.send_to(&buf[..n], from).is_ok() {
                echoed += 1;
            }
        }
    }
    Ok(echoed)
}

/// Round-trip times of a ping-pong run.
#[derive(Debug, Clone, PartialEq)]
pub struct RrReport {
    /// Round trips timed (after the warm-up).
    pub samples: usize,
    /// Requests that got no answer within the timeout.
    pub lost: u64,
    /// Median round trip, µs.
    pub p50_us: f64,
    /// 99th percentile round trip, µs.
    pub p99_us: f64,
    /// Mean round trip, µs.
    pub mean_us: f64,
}

/// Nearest-rank percentile (`q` in 0..=1) of sorted samples; `None` when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sends 32-byte requests to `server` one at a time and times each answer: `warmup` untimed
/// round trips, then up to `count` timed ones, stopping at `duration`. A request unanswered
/// within 200 ms counts as lost.
///
/// # Errors
/// The socket cannot be set up, or no round trip completed.
pub fn rr_client(
    server: SocketAddrV4,
    warmup: usize,
    count: usize,
    duration: Duration,
) -> Result<RrReport, TrafficError> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .map_err(io_err("bind rr client"))?;
    s.connect(server).map_err(io_err("connect rr client"))?;
    s.set_read_timeout(Some(Duration::from_millis(200))).map_err(io_err("SO_RCVTIMEO"))?;
    let deadline = Instant::now() + duration;
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0u64;
    let mut req = [0u8; 32];
    let mut resp = [0u8; 64];
    let mut seq = 0u64;
    while samples.len() < count && Instant::now() < deadline {
        seq += 1;
        req[..8].copy_from_slice(&seq.to_be_bytes());
        let t = Instant::now();
        if s.send(&req).is_err() {
            lost += 1;
            continue;
        }
        // Skip stale answers to earlier (timed-out) requests.
        let answered = loop {
            match s.recv(&mut resp) {
                Ok(n) if n >= 8 && resp[..8] == req[..8] => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        let rtt = t.elapsed();
        if !answered {
            lost += 1;
        } else if seq as usize > warmup {
            samples.push(rtt.as_secs_f64() * 1e6);
        }
    }
    if samples.is_empty() {
        return Err(TrafficError::Sys {
            call: "rr round trips",
            source: io::Error::new(io::ErrorKind::TimedOut, format!("no answer ({lost} lost)")),
        });
    }
    let mean_us = samples.iter().sum::<f64>() / samples.len() as f64;
    samples.sort_by(f64::total_cmp);
    Ok(RrReport {
        samples: samples.len(),
        lost,
        p50_us: percentile(&samples, 0.50).unwrap_or(0.0),
        p99_us: percentile(&samples, 0.99).unwrap_or(0.0),
        mean_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn rr_over_loopback() {
        let port = {
            let probe = UdpSocket::bind("127.0.0.1:0").expect("probe");
            probe.local_addr().expect("addr").port()
        };
        let server = std::thread::spawn(move || rr_server(port, Duration::from_millis(1500)));
        std::thread::sleep(Duration::from_millis(100));
        let r = rr_client(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            10,
            200,
            Duration::from_secs(1),
        )
        .expect("round trips");
        assert_eq!(r.samples, 200);
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us);
        assert!(server.join().expect("server").expect("bind") >= 210);
    }
}
