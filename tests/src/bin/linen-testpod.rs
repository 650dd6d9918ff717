//! `linen-testpod`: the processes the Kubernetes-path tests run inside pods.
//!
//! - `serve PORT NAME`: a TCP server that answers every connection with one line,
//!   `NAME PEER-IP`, and closes it — so a client learns which backend it reached and the backend
//!   reports the source address it saw (NAT or not).
//! - `get ADDR:PORT [COUNT] [TIMEOUT-MS]`: COUNT connections one after the other, each printing
//!   the line it got back, or `ERR <reason>` (refused, timed out); it always exits 0 so the
//!   caller can count.
//! - `sidecar INBOUND-PORT OUTBOUND-PORT UID LOG`: a sidecar proxy the way Istio's works behind
//!   its `REDIRECT` rules. It listens on both ports (bound as root), then runs as `UID` (group
//!   `UID` too: Istio's rules exempt the proxy's own traffic by owner). For every connection it
//!   reads the original destination with `getsockopt(SOL_IP, SO_ORIGINAL_DST)`, appends
//!   `inbound|outbound orig=IP:PORT peer=IP:PORT` to LOG, connects to the original destination —
//!   inbound from 127.0.0.6, the address Istio's rules let through to the local application —
//!   and relays bytes both ways.
//! - `stream ADDR:PORT SECONDS [STOP-FILE]`: one TCP connection that sends a known byte pattern
//!   (byte `i` of the stream is `i % 251`) for SECONDS, or until STOP-FILE exists, then closes;
//!   prints the bytes sent.
//! - `sink PORT`: accepts one connection, checks every byte against that pattern until the
//!   sender closes, and prints `bytes=N ok=true|false max_gap_ms=G` — G the longest time between
//!   two reads that returned data, what a restart of a router on the way costs the connection.
//! - `udp-gso-send ADDR:PORT SIZE COUNT`: COUNT datagrams of SIZE bytes to ADDR:PORT in one
//!   `sendmsg` with UDP segmentation offload (`UDP_SEGMENT`), so the kernel hands the whole run to
//!   the next device as one super-packet. Datagram `i` starts with `i` (4 bytes, big-endian) and is
//!   filled with the byte `i`.
//! - `udp-recv PORT COUNT TIMEOUT-MS`: receives datagrams on PORT until COUNT arrived or the time
//!   is up; prints `got N intact M` (M: datagrams whose content is what `udp-gso-send` wrote).
//!
//! Every failure of the process itself (bad arguments, a port in use) ends it with a message and
//! exit status 1.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::unistd::{Gid, Uid};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", port, name] => serve(port, name),
        ["get", to, rest @ ..] if rest.len() <= 2 => {
            get(to, rest.first().copied().unwrap_or("1"), rest.get(1).copied().unwrap_or("3000"))
        }
        ["sidecar", inbound, outbound, uid, log] => sidecar(inbound, outbound, uid, log),
        ["stream", to, secs] => stream(to, secs, None),
        ["stream", to, secs, stop] => stream(to, secs, Some(stop)),
        ["sink", port] => sink(port),
        ["udp-gso-send", to, size, count] => udp_gso_send(to, size, count),
        ["udp-recv", port, count, timeout_ms] => udp_recv(port, count, timeout_ms),
        _ => Err("usage: linen-testpod serve PORT NAME | get ADDR:PORT [COUNT] [TIMEOUT-MS] | \
                  sidecar INBOUND-PORT OUTBOUND-PORT UID LOG | stream ADDR:PORT SECONDS [STOP-FILE] | \
                  sink PORT | udp-gso-send ADDR:PORT SIZE COUNT | udp-recv PORT COUNT TIMEOUT-MS"
            .to_string()),
    };
    if let Err(e) = result {
        eprintln!("linen-testpod: {e}");
        std::process::exit(1);
    }
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad {what}: {s:?}"))
}

fn listen(port: &str) -> Result<TcpListener, String> {
    let port: u16 = parse("port", port)?;
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| format!("listen on {port}: {e}"))
}

fn serve(port: &str, name: &str) -> Result<(), String> {
    let listener = listen(port)?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let peer = conn.peer_addr().map(|a| a.ip().to_string()).unwrap_or_else(|_| "?".into());
        // A client that went away is no concern of the server's.
        let _ = conn.write_all(format!("{name} {peer}\n").as_bytes());
        let _ = conn.shutdown(Shutdown::Both);
    }
    Ok(())
}

fn get(to: &str, count: &str, timeout_ms: &str) -> Result<(), String> {
    let to: SocketAddr = parse("address", to)?;
    let count: usize = parse("count", count)?;
    let timeout = Duration::from_millis(parse("timeout", timeout_ms)?);
    let mut out = std::io::stdout().lock();
    for _ in 0..count {
        let line = match fetch(to, timeout) {
            Ok(line) => line,
            Err(e) => format!("ERR {e}"),
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Byte `i` of the pattern `stream` sends and `sink` checks.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn stream(to: &str, secs: &str, stop: Option<&str>) -> Result<(), String> {
    let to: SocketAddr = parse("address", to)?;
    let secs: f64 = parse("seconds", secs)?;
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .map_err(|e| format!("connect {to}: {e}"))?;
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 64 << 10];
    let stopped = || stop.is_some_and(|p| std::path::Path::new(p).exists());
    while std::time::Instant::now() < end && !stopped() {
        for (k, b) in buf.iter_mut().enumerate() {
            *b = pattern(sent + k as u64);
        }
        conn.write_all(&buf).map_err(|e| format!("send after {sent} bytes: {e}"))?;
        sent += buf.len() as u64;
    }
    conn.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    // Wait for the receiver to close, so every byte was taken.
    let mut rest = [0u8; 16];
    let _ = conn.read(&mut rest);
    println!("sent={sent}");
    Ok(())
}

fn sink(port: &str) -> Result<(), String> {
    let listener = listen(port)?;
    let (mut conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = vec![0u8; 256 << 10];
    let (mut bytes, mut ok, mut max_gap) = (0u64, true, Duration::ZERO);
    let mut last = std::time::Instant::now();
    loop {
        let n = conn.read(&mut buf).map_err(|e| format!("receive after {bytes} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        let now = std::time::Instant::now();
        max_gap = max_gap.max(now - last);
        last = now;
        if ok {
            ok = buf[..n].iter().enumerate().all(|(k, b)| *b == pattern(bytes + k as u64));
        }
        bytes += n as u64;
    }
    let _ = conn.shutdown(Shutdown::Both);
    println!("bytes={bytes} ok={ok} max_gap_ms={}", max_gap.as_millis());
    Ok(())
}

fn fetch(to: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&to, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    match text.trim() {
        "" => Err(std::io::Error::other("closed without an answer")),
        line => Ok(line.to_string()),
    }
}

/// The log of a sidecar, shared by its connection threads.
type Log = Arc<Mutex<File>>;

fn sidecar(inbound: &str, outbound: &str, uid: &str, log: &str) -> Result<(), String> {
    let inbound = listen(inbound)?;
    let outbound = listen(outbound)?;
    let log: Log = Arc::new(Mutex::new(
        File::options().create(true).append(true).open(log).map_err(|e| format!("{log}: {e}"))?,
    ));
    let uid: u32 = parse("uid", uid)?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(uid)).map_err(|e| format!("setgid {uid}: {e}"))?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid {uid}: {e}"))?;
    let log_out = log.clone();
    let out = std::thread::spawn(move || accept_loop(&outbound, "outbound", &log_out));
    accept_loop(&inbound, "inbound", &log);
    let _ = out.join();
    Ok(())
}

fn accept_loop(listener: &TcpListener, direction: &'static str, log: &Log) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let log = log.clone();
        std::thread::spawn(move || {
            if let Err(e) = proxy(conn, direction, &log) {
                note(&log, &format!("{direction} error: {e}"));
            }
        });
    }
}

fn note(log: &Log, line: &str) {
    if let Ok(mut f) = log.lock() {
        let _ = writeln!(f, "{line}");
    }
}

/// Relays one redirected connection to where it was going.
fn proxy(client: TcpStream, direction: &str, log: &Log) -> Result<(), String> {
    let orig = socket::getsockopt(&client, sockopt::OriginalDst)
        .map_err(|e| format!("SO_ORIGINAL_DST: {e}"))?;
    let orig = SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(orig.sin_addr.s_addr)),
        u16::from_be(orig.sin_port),
    );
    let peer = client.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    note(log, &format!("{direction} orig={orig} peer={peer}"));
    let source = (direction == "inbound").then_some(Ipv4Addr::new(127, 0, 0, 6));
    let upstream = connect_from(source, orig).map_err(|e| format!("connect to {orig}: {e}"))?;
    let (mut c_read, mut u_write) = (client.try_clone().map_err(|e| e.to_string())?, upstream);
    let mut u_read = u_write.try_clone().map_err(|e| e.to_string())?;
    let mut c_write = client;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// A TCP connection to `to`, from `source` when given.
fn connect_from(source: Option<Ipv4Addr>, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(to) };
    let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(source, 0)))?;
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Datagram `i` of a `udp-gso-send` run of `size`-byte datagrams.
fn gso_datagram(i: usize, size: usize) -> Vec<u8> {
    let mut d = vec![i as u8; size];
    d[..4].copy_from_slice(&(i as u32).to_be_bytes());
    d
}

fn udp_gso_send(to: &str, size: &str, count: &str) -> Result<(), String> {
    let to: SocketAddr = parse("address", to)?;
    let (size, count): (usize, usize) = (parse("size", size)?, parse("count", count)?);
    if size < 4 || count == 0 {
        return Err("size must be at least 4 and count at least 1".to_string());
    }
    let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
    socket::setsockopt(&sock, sockopt::UdpGsoSegment, &(size as i32))
        .map_err(|e| format!("UDP_SEGMENT: {e}"))?;
    let run: Vec<u8> = (0..count).flat_map(|i| gso_datagram(i, size)).collect();
    let sent = sock.send_to(&run, to).map_err(|e| format!("send to {to}: {e}"))?;
    if sent != run.len() {
        return Err(format!("sent {sent} of {} bytes", run.len()));
    }
    Ok(())
}

fn udp_recv(port: &str, count: &str, timeout_ms: &str) -> Result<(), String> {
    let port: u16 = parse("port", port)?;
    let count: usize = parse("count", count)?;
    let deadline = std::time::Instant::now() + Duration::from_millis(parse("timeout", timeout_ms)?);
    let sock =
        std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| e.to_string())?;
    println!("listening");
    let (mut got, mut intact) = (0, 0);
    let mut buf = vec![0u8; 65_536];
    while got < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let Ok(n) = sock.recv(&mut buf) else { break };
        got += 1;
        if n >= 4 {
            let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            intact += usize::from(buf[..n] == gso_datagram(i, n)[..]);
        }
    }
    println!("got {got} intact {intact}");
    Ok(())
}
