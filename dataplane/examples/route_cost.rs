//! Runs a fixed number of route lookups (or snapshot loads) so that `valgrind --tool=callgrind`
//! can count the instructions each one costs: run once with `0` and once with `N` operations
//! and divide the difference in `Ir` by `N` (setup cost cancels out). See docs/route.md.
//!
//! ```text
//! route_cost <what> <shape> <routes> <operations>
//!   what:  table | table-batch | table-publishing | dir24_8 | dir16_8_8 | dir16_8_4_4 | dir16_4_4_4_4 | dir20_4_4_4
//!          (add -batch for the level-synchronous batch lookup) | v6 | load | epoch-pin | build
//!          | cpu (not for callgrind: prints the reader thread's CPU time per lookup with no
//!          publisher, one publish per 10 ms and back-to-back publishes)
//!   shape: spread | cluster (IPv4 route set; ignored for v6, load and epoch-pin)
//! ```
use std::hint::black_box;
use std::process::ExitCode;

use linen_dataplane::route::synthetic::{self, Shape};
use linen_dataplane::route::trie::{
    Dir16_4_4_4_4, Dir16_8_4_4, Dir16_8_8, Dir20_4_4_4, Dir24_8, Layout, Trie,
};
use linen_dataplane::route::{IpNet, Published, TableBuilder};

const DESTS: usize = 1 << 20;
const BATCH: usize = 64;

fn trie<L: Layout<Key = u32>>(
    entries: &[(u32, u32, u32)],
    dests: &[u32],
    ops: usize,
    batch: bool,
) -> u64 {
    let trie = Trie::<L>::build(entries.iter().copied());
    eprintln!("trie memory: {} bytes", trie.memory_bytes());
    let mut sum = 0u64;
    let mut leaves = [0u32; BATCH];
    let mut done = 0;
    for chunk in dests.chunks(BATCH).cycle() {
        if done >= ops {
            break;
        }
        if batch {
            trie.lookup_batch(black_box(chunk), &mut leaves);
            sum += leaves.iter().map(|&l| u64::from(l)).sum::<u64>();
        } else {
            for &d in black_box(chunk) {
                sum += u64::from(trie.lookup(d));
            }
        }
        done += chunk.len();
    }
    sum
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (nanoseconds, updated at
/// least every scheduler tick: runs of seconds make that granularity negligible).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .expect("/proc/thread-self/schedstat is readable")
}

/// Reader CPU time per lookup (one `load` per 64) without and with a concurrent publisher.
/// CPU time, unlike wall time, does not count the time the reader waits for a core, so what
/// is left is the lookup's own cost, including any cache interference from the publisher.
fn cpu_time_while_publishing(
    v4: &[linen_dataplane::route::Ipv4Net],
    dests: &[u32],
    ops: usize,
) -> u64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let mut b = TableBuilder::new();
    for (i, &n) in v4.iter().enumerate() {
        b.insert(IpNet::V4(n), i as u32);
    }
    let cell = Arc::new(Published::new(b.build()));
    let mut sum = 0u64;
    for (name, pause) in [
        ("no publisher", None),
        ("publish every 10 ms", Some(Duration::from_millis(10))),
        ("publish back to back", Some(Duration::ZERO)),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = pause.map(|pause| {
            let (cell, stop, b) = (cell.clone(), stop.clone(), b.clone());
            std::thread::spawn(move || {
                let mut published = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    cell.publish_with(|| b.build());
                    published += 1;
                    std::thread::sleep(pause);
                }
                published
            })
        });
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        let mut done = 0;
        for chunk in dests.chunks(BATCH).cycle() {
            if done >= ops {
                break;
            }
            let table = cell.load();
            for &d in black_box(chunk) {
                sum += u64::from(table.lookup_v4(d).copied().unwrap_or(0));
            }
            done += chunk.len();
        }
        let (cpu, wall) = (thread_cpu_ns() - cpu0, wall0.elapsed());
        stop.store(true, Ordering::Relaxed);
        let published = publisher.map(|p| p.join().expect("publisher thread")).unwrap_or(0);
        println!(
            "{name:>22}: {:.2} ns CPU/lookup ({:.0} M/s of reader CPU), {:.2} ns wall/lookup, {published} publishes",
            cpu as f64 / done as f64,
            done as f64 / cpu as f64 * 1e3,
            wall.as_nanos() as f64 / done as f64,
        );
    }
    sum
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, what, shape, routes, ops] = &args[..] else {
        eprintln!("usage: route_cost <what> <spread|cluster> <routes> <operations>");
        return ExitCode::FAILURE;
    };
    let shape = if shape == "cluster" { Shape::Cluster } else { Shape::Spread };
    let (Ok(routes), Ok(ops)) = (routes.parse::<usize>(), ops.parse::<usize>()) else {
        eprintln!("routes and operations must be numbers");
        return ExitCode::FAILURE;
    };
    assert!(ops % BATCH == 0, "operations must be a multiple of {BATCH}");
    let v4 = synthetic::v4_routes(shape, routes, 1);
    let dests = synthetic::v4_dests(&v4, DESTS, 2);
    let entries = synthetic::trie_entries(&v4);
    let (what, batch) = match what.strip_suffix("-batch") {
        Some(w) => (w, true),
        None => (what.as_str(), false),
    };
    let sum = match what {
        "dir24_8" => trie::<Dir24_8>(&entries, &dests, ops, batch),
        "dir16_8_8" => trie::<Dir16_8_8>(&entries, &dests, ops, batch),
        "dir16_8_4_4" => trie::<Dir16_8_4_4>(&entries, &dests, ops, batch),
        "dir16_4_4_4_4" => trie::<Dir16_4_4_4_4>(&entries, &dests, ops, batch),
        "dir20_4_4_4" => trie::<Dir20_4_4_4>(&entries, &dests, ops, batch),
        "table" | "table-publishing" => {
            let mut b = TableBuilder::new();
            for (i, &n) in v4.iter().enumerate() {
                b.insert(IpNet::V4(n), i as u32);
            }
            let cell = std::sync::Arc::new(Published::new(b.build()));
            // With `table-publishing`, another thread rebuilds and publishes the table back to
            // back while this one looks up (count this thread alone: --separate-threads=yes).
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let publisher = (what == "table-publishing").then(|| {
                let (cell, stop, b) = (cell.clone(), stop.clone(), b.clone());
                std::thread::spawn(move || {
                    let mut published = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        cell.publish_with(|| b.build());
                        published += 1;
                    }
                    published
                })
            });
            let mut sum = 0u64;
            let mut done = 0;
            for chunk in dests.chunks(BATCH).cycle() {
                if done >= ops {
                    break;
                }
                // One load per batch, as a worker does.
                let table = cell.load();
                if batch {
                    let mut out = [None; BATCH];
                    table.lookup_v4_batch(black_box(chunk), &mut out);
                    sum += out.iter().map(|v| u64::from(v.copied().unwrap_or(0))).sum::<u64>();
                } else {
                    for &d in black_box(chunk) {
                        sum += u64::from(table.lookup_v4(d).copied().unwrap_or(0));
                    }
                }
                done += chunk.len();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(publisher) = publisher {
                let published = publisher.join().expect("publisher thread");
                eprintln!("{published} snapshots published during the lookups");
            }
            sum
        }
        "cpu" => cpu_time_while_publishing(&v4, &dests, ops),
        "v6" => {
            let v6 = synthetic::v6_routes(routes, 3);
            let dests = synthetic::v6_dests(&v6, DESTS, 4);
            let mut b = TableBuilder::new();
            for (i, &n) in v6.iter().enumerate() {
                b.insert(IpNet::V6(n), i as u32);
            }
            let table = b.build();
            eprintln!("table memory: {} bytes", table.memory_bytes());
            let mut sum = 0u64;
            for &d in dests.iter().cycle().take(ops) {
                sum += u64::from(table.lookup_v6(black_box(d)).copied().unwrap_or(0));
            }
            sum
        }
        "build" => {
            let mut b = TableBuilder::new();
            for (i, &n) in v4.iter().enumerate() {
                b.insert(IpNet::V4(n), i as u32);
            }
            let cell = Published::new(b.build());
            let mut sum = 0u64;
            for _ in 0..ops / BATCH {
                let start = std::time::Instant::now();
                let table = b.build();
                let built = start.elapsed();
                sum += table.len() as u64;
                cell.publish(table);
                eprintln!("build {built:?}, build + publish {:?}", start.elapsed());
            }
            sum
        }
        "load" => {
            let cell = Published::new(TableBuilder::<u32>::new().build());
            let mut sum = 0u64;
            for _ in 0..ops {
                sum += black_box(cell.load()).len() as u64;
            }
            sum
        }
        "epoch-pin" => {
            // crossbeam-epoch's read side: pin the thread, load the pointer. (Dereferencing a
            // `Shared` needs `unsafe`, which linen denies outside its I/O module.)
            let atomic = crossbeam_epoch::Atomic::new(0u64);
            let mut sum = 0u64;
            for _ in 0..ops {
                let guard = crossbeam_epoch::pin();
                let shared = atomic.load(std::sync::atomic::Ordering::Acquire, &guard);
                sum += u64::from(!black_box(shared).is_null());
            }
            sum
        }
        other => {
            eprintln!("unknown measurement {other:?}");
            return ExitCode::FAILURE;
        }
    };
    println!("{sum}");
    ExitCode::SUCCESS
}
