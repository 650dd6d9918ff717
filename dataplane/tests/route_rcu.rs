//! Publishing snapshots while readers look up: every batch sees one complete snapshot, and
//! replaced snapshots are freed once readers have moved on (by the writer, not the readers).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use linen_dataplane::route::{Published, Table, TableBuilder};

const SNAPSHOTS: u32 = 3000;
const READERS: usize = 3;

/// Overlapping prefixes of mixed lengths in both families, and one probe address inside each.
fn prefixes() -> Vec<(IpNet, IpAddr)> {
    let mut out = Vec::new();
    for (p, probe) in [
        ("0.0.0.0/0", "203.0.113.9"),
        ("10.0.0.0/8", "10.99.0.1"),
        ("10.244.0.0/16", "10.244.200.1"),
        ("10.244.8.0/24", "10.244.8.200"),
        ("10.244.8.128/25", "10.244.8.129"),
        ("10.244.8.7/32", "10.244.8.7"),
        ("::/0", "2001:db8::1"),
        ("fd00:10:244::/56", "fd00:10:244:ff::1"),
        ("fd00:10:244:8::/64", "fd00:10:244:8::9"),
        ("fd00:10:244:8::7/128", "fd00:10:244:8::7"),
    ] {
        out.push((p.parse().unwrap(), probe.parse().unwrap()));
    }
    for i in 0..200u32 {
        let net = IpNet::V4(ipnet::Ipv4Net::new((0x0af5_0000 + (i << 8)).into(), 24).unwrap());
        out.push((net, std::net::Ipv4Addr::from(0x0af5_0000 + (i << 8) + 5).into()));
    }
    out
}

/// Snapshot `k`: every prefix maps to `k`. One builder is reused, as the control plane does.
fn snapshot(b: &mut TableBuilder<u32>, prefixes: &[(IpNet, IpAddr)], k: u32) -> Table<u32> {
    for &(net, _) in prefixes {
        b.insert(net, k);
    }
    b.build()
}

#[test]
fn readers_see_whole_snapshots_while_a_writer_publishes() {
    let prefixes = Arc::new(prefixes());
    let probes: Arc<Vec<IpAddr>> = Arc::new(prefixes.iter().map(|p| p.1).collect());
    let mut builder = TableBuilder::new();
    let cell = Arc::new(Published::new(snapshot(&mut builder, &prefixes, 0)));
    // Readers and writer start together; the writer only finishes once every reader has seen
    // the final snapshot, so each reader provably overlaps the whole run of publishes.
    let start = Arc::new(Barrier::new(READERS + 1));
    let done = Arc::new(AtomicUsize::new(0));
    // A hang guard only: a correct run takes a few seconds.
    let cap = Instant::now() + Duration::from_secs(300);

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (cell, probes, start, done) =
                (cell.clone(), probes.clone(), start.clone(), done.clone());
            thread::spawn(move || {
                start.wait();
                let mut last = 0u32;
                let mut distinct = 1u32;
                let mut batches = 0u64;
                loop {
                    let table = cell.load();
                    let first = table.lookup(probes[0]).copied();
                    let k = first.expect("every probe has a route in every snapshot");
                    for &probe in probes.iter() {
                        assert_eq!(
                            table.lookup(probe).copied(),
                            Some(k),
                            "lookup of {probe} under one guard left snapshot {k}"
                        );
                    }
                    drop(table);
                    assert!(k >= last, "snapshot went back from {last} to {k}");
                    distinct += u32::from(k != last);
                    last = k;
                    batches += 1;
                    if k == SNAPSHOTS || Instant::now() > cap {
                        break;
                    }
                    // Between batches, as a worker would poll its queues: on a small machine
                    // three spinning readers would otherwise starve the writer.
                    thread::yield_now();
                }
                done.fetch_add(1, Ordering::SeqCst);
                (last, distinct, batches)
            })
        })
        .collect();

    start.wait();
    for k in 1..=SNAPSHOTS {
        if k % 2 == 0 {
            cell.publish(snapshot(&mut builder, &prefixes, k));
        } else {
            cell.publish_with(|| snapshot(&mut builder, &prefixes, k));
        }
        if Instant::now() > cap {
            break;
        }
    }
    for r in readers {
        let (last, distinct, batches) = r.join().expect("reader panicked");
        assert_eq!(last, SNAPSHOTS, "reader stopped before the final snapshot (time cap hit)");
        assert!(distinct >= 2 && batches >= 2);
        eprintln!("reader: {batches} batches over {distinct} distinct snapshots");
    }
    assert_eq!(done.load(Ordering::SeqCst), READERS);
    // Nobody holds a guard any more: every replaced snapshot can go.
    assert_eq!(cell.reclaim(), 0);
}

/// A value that counts how many of its copies were dropped.
#[derive(Clone, Debug)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn replaced_snapshots_are_dropped_after_readers_move_on() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut b = TableBuilder::new();
    b.insert("10.244.0.0/16".parse().unwrap(), Counted(drops.clone()));
    // Each snapshot holds one clone of the value: one drop per freed snapshot.
    let cell = Published::new(b.build());
    assert_eq!(drops.load(Ordering::SeqCst), 0);

    let held = cell.load();
    cell.publish(b.build());
    // The first snapshot is still read: it must stay alive and usable.
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(cell.reclaim(), 1);
    assert!(held.lookup_v4(0x0af4_0101).is_some());
    drop(held);
    // The reader moved on, but freeing is the writer's job: nothing freed until it sweeps.
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(cell.reclaim(), 0);
    assert_eq!(drops.load(Ordering::SeqCst), 1);

    // Without readers, publish frees the snapshot it replaces straight away.
    cell.publish(b.build());
    assert_eq!(drops.load(Ordering::SeqCst), 2);

    // A reader on another thread holding a guard across a publish.
    let cell = Arc::new(cell);
    let (loaded, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let reader = {
        let (cell, loaded, release) = (cell.clone(), loaded.clone(), release.clone());
        thread::spawn(move || {
            let table = cell.load();
            loaded.wait();
            release.wait();
            assert!(table.lookup_v4(0x0af4_0101).is_some());
        })
    };
    loaded.wait();
    cell.publish(b.build());
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert_eq!(cell.reclaim(), 1);
    release.wait();
    reader.join().unwrap();
    assert_eq!(cell.reclaim(), 0);
    assert_eq!(drops.load(Ordering::SeqCst), 3);

    // Dropping the cell frees the current snapshot; the builder still holds the original.
    drop(Arc::into_inner(cell).expect("reader thread ended"));
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    drop(b);
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[test]
fn many_publishes_without_readers_keep_nothing_retired() {
    let cell = Published::new(Table::<u32>::empty());
    let mut b = TableBuilder::new();
    for k in 0..100u32 {
        b.insert(IpNet::V4(ipnet::Ipv4Net::new((k << 24).into(), 8).unwrap()), k);
        cell.publish(b.build());
        assert_eq!(cell.reclaim(), 0);
    }
    assert_eq!(cell.load().len(), 100);
}
