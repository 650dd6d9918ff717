//! Cost per 64-byte packet of moving packets across one queue of a TAP device with virtio-net
//! headers (`linen.1`'s mode, [`TunQueue`]): one `readv` / `writev` per packet, as the workers do
//! today, against io_uring batches (many reads or writes in the submission queue, one
//! `io_uring_enter` for all of them, completions taken from the completion queue).
//!
//! Runs as root in a network namespace of its own (`unshare(CLONE_NEWNET)`): the TAP device
//! `tb0` (10.9.0.1/24, a permanent neighbour 10.9.0.2) exists only there and goes with the
//! process.
//!
//! - write: batches of `BATCH` (default 64) 64-byte Ethernet frames (virtio-net header in front) into the
//!   queue. The frames are addressed to another MAC, so the kernel drops them at IP input
//!   (`PACKET_OTHERHOST`): the cost is the TAP write path and the system call, as for linen's
//!   writes, without a socket behind.
//! - read: the kernel queues `FILL` UDP datagrams (64-byte frames) to 10.9.0.2 on the TAP
//!   device while nobody reads (untimed), then the queue is drained (timed): `readv` until
//!   `EAGAIN`, or batches of up to `BATCH` reads per `io_uring_enter`.
//!
//! - a read posted on the empty queue: whether it fails at once or stays posted until a packet
//!   arrives.
//!
//! Per variant: the median over rounds of process CPU time (this thread plus any io_uring
//! worker thread the kernel starts) and wall time, per packet.
//!
//! `cargo run --release -p linen-benches --example tun_batch [-- ROUNDS [BATCH]]`

// Submission entries point at buffers the kernel uses after the call returns: pushing them is
// unsafe in the io_uring API, and each such block says why the buffers outlive the operation.
#![allow(unsafe_code)]

use std::io::IoSlice;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Instant;

use io_uring::{opcode, types, IoUring};
use linen_dataplane::io::tun::TunQueue;
use linen_dataplane::pipeline::VNET_HDR_LEN;

const DEV: &str = "tb0";
/// Most packets per submission (writes) and reads in the submission queue (reads); the second
/// argument picks fewer.
const MAX_BATCH: usize = 64;
/// Datagrams queued on the device before a timed drain (below its queue length of 4096).
const FILL: usize = 4000;
/// Packets written per round.
const WRITE_PACKETS: usize = 12_800;
/// Read buffer: virtio-net header and a 64-byte frame fit many times over.
const SLOT: usize = 2048;

fn ip(args: &str) {
    let ok = Command::new("ip")
        .args(args.split(' '))
        .status()
        .unwrap_or_else(|e| panic!("ip {args}: {e}"))
        .success();
    assert!(ok, "ip {args} failed");
}

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which lives across the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// One timed run: (packets, CPU ns, wall ns).
struct Sample {
    packets: usize,
    cpu: u64,
    wall: u64,
}

fn timed(f: impl FnOnce() -> usize) -> Sample {
    let (c0, w0) = (cpu_ns(), Instant::now());
    let packets = f();
    Sample { packets, cpu: cpu_ns() - c0, wall: w0.elapsed().as_nanos() as u64 }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, samples: &[Sample]) {
    let cpu = median(samples.iter().map(|s| s.cpu as f64 / s.packets.max(1) as f64).collect());
    let wall = median(samples.iter().map(|s| s.wall as f64 / s.packets.max(1) as f64).collect());
    let packets: usize = samples.iter().map(|s| s.packets).sum();
    println!(
        "{name:<44} {cpu:>8.0} ns CPU/pkt {wall:>8.0} ns wall/pkt  ({packets} pkts, {} threads)",
        threads()
    );
}

/// A 64-byte Ethernet frame (IPv4/UDP, 10.9.0.2 → 10.9.0.1) to a MAC that is not the device's.
fn frame() -> [u8; 64] {
    let mut f = [0u8; 64];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 9, 0, 2]);
    ip[16..20].copy_from_slice(&[10, 9, 0, 1]);
    let mut sum = 0u32;
    for w in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&30u16.to_be_bytes());
    f
}

/// Queues `FILL` datagrams on the device; returns how many.
fn fill(sock: &UdpSocket) -> usize {
    let payload = [0u8; 22]; // 14 + 20 + 8 + 22 = a 64-byte frame
    let mut sent = 0;
    for _ in 0..FILL {
        if sock.send(&payload).is_ok() {
            sent += 1;
        }
    }
    sent
}

#[derive(Clone, Copy)]
enum Setup {
    Plain,
    Coop,
    DeferTaskrun,
}

#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    setup: Setup,
    fixed_file: bool,
    fixed_buf: bool,
}

fn ring(v: Variant, fd: i32, bufs: &[libc::iovec]) -> IoUring {
    let mut b = IoUring::builder();
    match v.setup {
        Setup::Plain => {}
        Setup::Coop => {
            b.setup_coop_taskrun();
        }
        Setup::DeferTaskrun => {
            b.setup_single_issuer().setup_defer_taskrun();
        }
    }
    let ring = b.build((2 * MAX_BATCH) as u32).expect("io_uring setup");
    if v.fixed_file {
        ring.submitter().register_files(&[fd]).expect("register_files");
    }
    if v.fixed_buf {
        // SAFETY: the buffers outlive the ring (both live in `main` until the end).
        unsafe { ring.submitter().register_buffers(bufs) }.expect("register_buffers");
    }
    ring
}

/// Waits for and takes `n` completions; returns how many succeeded and how many were EAGAIN.
fn reap(ring: &mut IoUring, n: usize) -> (usize, usize) {
    let (mut ok, mut again, mut seen) = (0, 0, 0);
    while seen < n {
        let ready = ring.completion().len();
        if ready == 0 {
            ring.submit_and_wait(1).expect("io_uring_enter");
            continue;
        }
        for c in ring.completion() {
            seen += 1;
            match c.result() {
                r if r >= 0 => ok += 1,
                r if r == -libc::EAGAIN => again += 1,
                r => panic!("io_uring op failed: {}", std::io::Error::from_raw_os_error(-r)),
            }
        }
    }
    (ok, again)
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(15, |s| s.parse().expect("ROUNDS"));
    let batch: usize = std::env::args().nth(2).map_or(MAX_BATCH, |s| s.parse().expect("BATCH"));
    assert!((1..=MAX_BATCH).contains(&batch), "BATCH is 1 to {MAX_BATCH}");
    let write_batches = WRITE_PACKETS / batch;
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "tun_batch needs root (a network namespace and a TAP device)"
    );
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let tun = TunQueue::open(DEV).expect("open TAP queue");
    ip(&format!("link set {DEV} txqueuelen 4096 up"));
    ip(&format!("addr add 10.9.0.1/24 dev {DEV}"));
    ip(&format!("neigh replace 10.9.0.2 lladdr 02:00:00:00:00:02 dev {DEV} nud permanent"));
    ip("link set lo up");
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{DEV}/disable_ipv6"), "1");
    let sock = UdpSocket::bind("10.9.0.1:4000").expect("bind");
    sock.connect("10.9.0.2:9").expect("connect");
    let fd = tun.as_raw_fd();

    let hdr = [0u8; VNET_HDR_LEN];
    let frame = frame();
    // Header and frame in one buffer, for plain and fixed-buffer writes.
    let mut whole = [0u8; VNET_HDR_LEN + 64];
    whole[VNET_HDR_LEN..].copy_from_slice(&frame);
    let mut slots = vec![0u8; MAX_BATCH * SLOT];
    let mut tail = vec![0u8; 64 * 1024];
    let mut bufs: Vec<libc::iovec> = slots
        .chunks_mut(SLOT)
        .map(|s| libc::iovec { iov_base: s.as_mut_ptr().cast(), iov_len: SLOT })
        .collect();
    bufs.push(libc::iovec { iov_base: whole.as_mut_ptr().cast(), iov_len: whole.len() });
    let write_iov = [
        libc::iovec { iov_base: hdr.as_ptr() as *mut _, iov_len: hdr.len() },
        libc::iovec { iov_base: frame.as_ptr() as *mut _, iov_len: frame.len() },
    ];

    println!("{batch} packets per batch, {rounds} rounds, median per packet");
    println!("-- write: {write_batches} batches of {batch} 64-byte frames per round");
    let mut s = Vec::new();
    for _ in 0..rounds {
        s.push(timed(|| {
            for _ in 0..write_batches * batch {
                tun.write(&hdr, &[IoSlice::new(&frame)]).expect("writev");
            }
            write_batches * batch
        }));
    }
    report("writev, one per packet (today)", &s);

    let variants = [
        Variant { name: "plain", setup: Setup::Plain, fixed_file: false, fixed_buf: false },
        Variant { name: "COOP_TASKRUN", setup: Setup::Coop, fixed_file: false, fixed_buf: false },
        Variant {
            name: "SINGLE_ISSUER|DEFER_TASKRUN",
            setup: Setup::DeferTaskrun,
            fixed_file: false,
            fixed_buf: false,
        },
        Variant {
            name: "DEFER_TASKRUN + fixed file",
            setup: Setup::DeferTaskrun,
            fixed_file: true,
            fixed_buf: false,
        },
        Variant {
            name: "DEFER_TASKRUN + fixed file + fixed buffers",
            setup: Setup::DeferTaskrun,
            fixed_file: true,
            fixed_buf: true,
        },
    ];
    for v in variants {
        let mut r = ring(v, fd, &bufs);
        let mut s = Vec::new();
        for _ in 0..rounds {
            s.push(timed(|| {
                for _ in 0..write_batches {
                    for i in 0..batch {
                        let sqe = match (v.fixed_file, v.fixed_buf) {
                            (true, true) => opcode::WriteFixed::new(
                                types::Fixed(0),
                                whole.as_ptr(),
                                whole.len() as u32,
                                MAX_BATCH as u16,
                            )
                            .build(),
                            (true, false) => {
                                opcode::Writev::new(types::Fixed(0), write_iov.as_ptr(), 2).build()
                            }
                            _ => opcode::Writev::new(types::Fd(fd), write_iov.as_ptr(), 2).build(),
                        };
                        // SAFETY: the iovecs and buffers the entry points at live until its
                        // completion is reaped below.
                        unsafe { r.submission().push(&sqe.user_data(i as u64)) }.expect("sq full");
                    }
                    r.submit().expect("io_uring_enter");
                    let (ok, again) = reap(&mut r, batch);
                    assert_eq!((ok, again), (batch, 0), "writes refused");
                }
                write_batches * batch
            }));
        }
        report(&format!("io_uring {}", v.name), &s);
    }

    println!("-- read: drain {FILL} queued 64-byte frames per round");
    let mut s = Vec::new();
    let mut head = [0u8; SLOT];
    for _ in 0..rounds {
        fill(&sock);
        let mut h = [0u8; VNET_HDR_LEN];
        s.push(timed(|| {
            let mut n = 0;
            while tun.read(&mut h, &mut head, &mut tail).expect("readv").is_some() {
                n += 1;
            }
            n
        }));
    }
    report("readv, one per packet (today)", &s);

    for v in variants {
        let mut r = ring(v, fd, &bufs);
        let mut s = Vec::new();
        for _ in 0..rounds {
            let queued = fill(&sock);
            s.push(timed(|| {
                let mut n = 0;
                while n < queued {
                    // Only as many reads as packets wait: a read of an empty queue stays posted
                    // (the kernel arms a poll for it) and would complete in the next round.
                    let k = batch.min(queued - n);
                    for (i, b) in bufs[..k].iter().enumerate() {
                        let ptr = b.iov_base.cast::<u8>();
                        let sqe = match (v.fixed_file, v.fixed_buf) {
                            (true, true) => {
                                opcode::ReadFixed::new(types::Fixed(0), ptr, SLOT as u32, i as u16)
                                    .build()
                            }
                            (true, false) => {
                                opcode::Read::new(types::Fixed(0), ptr, SLOT as u32).build()
                            }
                            _ => opcode::Read::new(types::Fd(fd), ptr, SLOT as u32).build(),
                        };
                        // SAFETY: each read has its own slot, which lives until its completion
                        // is reaped below.
                        unsafe { r.submission().push(&sqe) }.expect("sq full");
                    }
                    r.submit().expect("io_uring_enter");
                    let (ok, again) = reap(&mut r, k);
                    assert_eq!(again, 0, "read of a queued packet returned EAGAIN");
                    n += ok;
                }
                n
            }));
        }
        report(&format!("io_uring {}", v.name), &s);
    }

    println!("-- a read posted on the empty queue");
    for v in [variants[0], variants[2]] {
        let mut r = ring(v, fd, &bufs);
        let sqe = opcode::Read::new(types::Fd(fd), bufs[0].iov_base.cast(), SLOT as u32).build();
        // SAFETY: the slot lives until the completion is reaped below.
        unsafe { r.submission().push(&sqe) }.expect("sq full");
        r.submit().expect("io_uring_enter");
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.submit_and_wait(0).expect("io_uring_enter");
        let early: Vec<i32> = r.completion().map(|c| c.result()).collect();
        if !early.is_empty() {
            println!("io_uring {}: completed at once with {early:?}", v.name);
            continue;
        }
        sock.send(&[0u8; 22]).expect("send");
        r.submit_and_wait(1).expect("io_uring_enter");
        let late: Vec<i32> = r.completion().map(|c| c.result()).collect();
        println!(
            "io_uring {}: stayed posted, completed when a packet came: {late:?} bytes",
            v.name
        );
    }
}
