//! CPU time from `/proc`: the machine's per-state totals (`/proc/stat`), a process's user and
//! system time (`/proc/<pid>/stat`, all threads) and an interface's packet counters
//! (`/proc/<pid>/net/dev`, which shows the network namespace of process `pid`).
//!
//! All CPU figures are in clock ticks (`USER_HZ`, 100 per second on Linux; [`TICK_NS`]). On a
//! kernel with tick-based accounting (no `CONFIG_IRQ_TIME_ACCOUNTING`, as here) a tick that lands
//! in softirq context counts as `softirq` in `/proc/stat` *and* as system time of whatever task
//! was current: softirq work the kernel runs at the end of a sender's `sendmmsg` shows up in the
//! sender's `stime`. [`super::harness`] untangles that by pinning the sender to one CPU.

use std::fmt;

/// Nanoseconds per `USER_HZ` tick.
pub const TICK_NS: f64 = 1e7;

/// One `cpu` line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuLine {
    /// user + nice.
    pub user: u64,
    /// system (not in interrupt context).
    pub system: u64,
    /// idle + iowait.
    pub idle: u64,
    /// hard interrupts.
    pub irq: u64,
    /// softirqs.
    pub softirq: u64,
    /// steal (time a hypervisor gave to someone else).
    pub steal: u64,
}

impl CpuLine {
    /// Everything but idle and iowait.
    pub fn busy(&self) -> u64 {
        self.user + self.system + self.irq + self.softirq + self.steal
    }

    /// `self - earlier`, field by field (saturating).
    pub fn since(&self, earlier: &CpuLine) -> CpuLine {
        CpuLine {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// `/proc/stat`'s aggregate line and one line per CPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcStat {
    /// All CPUs together.
    pub total: CpuLine,
    /// `cpu0`, `cpu1`, …
    pub cpus: Vec<CpuLine>,
}

/// A `/proc` file did not read or parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcError(pub String);

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProcError {}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|e| ProcError(format!("{path}: {e}")))
}

fn parse_cpu_line(rest: &str) -> Option<CpuLine> {
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    if f.len() < 7 {
        return None;
    }
    Some(CpuLine {
        user: at(0) + at(1),
        system: at(2),
        idle: at(3) + at(4),
        irq: at(5),
        softirq: at(6),
        steal: at(7),
    })
}

/// Parses the text of `/proc/stat`.
///
/// # Errors
/// No aggregate `cpu` line, or a malformed one.
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, ProcError> {
    let mut stat = ProcStat::default();
    let mut seen_total = false;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(' ') else { continue };
        if name == "cpu" {
            stat.total = parse_cpu_line(rest)
                .ok_or_else(|| ProcError(format!("/proc/stat: bad line {line:?}")))?;
            seen_total = true;
        } else if name.starts_with("cpu") && name[3..].parse::<usize>().is_ok() {
            stat.cpus.push(
                parse_cpu_line(rest)
                    .ok_or_else(|| ProcError(format!("/proc/stat: bad line {line:?}")))?,
            );
        }
    }
    if !seen_total {
        return Err(ProcError("/proc/stat: no cpu line".into()));
    }
    Ok(stat)
}

/// Reads `/proc/stat`.
///
/// # Errors
/// See [`parse_proc_stat`].
pub fn proc_stat() -> Result<ProcStat, ProcError> {
    parse_proc_stat(&read("/proc/stat")?)
}

/// A process's CPU time (all threads, children not included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcTimes {
    /// User time, ticks.
    pub utime: u64,
    /// System time, ticks (including softirq ticks that landed while it ran).
    pub stime: u64,
    /// Time on a CPU in nanoseconds, summed over its threads (`/proc/<pid>/task/*/schedstat`,
    /// the scheduler's own clock: finer than ticks; includes softirq run in its context).
    pub runtime_ns: u64,
}

impl ProcTimes {
    /// `self - earlier` (saturating).
    pub fn since(&self, earlier: &ProcTimes) -> ProcTimes {
        ProcTimes {
            utime: self.utime.saturating_sub(earlier.utime),
            stime: self.stime.saturating_sub(earlier.stime),
            runtime_ns: self.runtime_ns.saturating_sub(earlier.runtime_ns),
        }
    }

    /// utime + stime.
    pub fn total(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses `/proc/<pid>/stat` (the command may contain spaces and parentheses: fields are
/// counted after the last `)`).
///
/// # Errors
/// The line is malformed.
pub fn parse_pid_stat(text: &str) -> Result<ProcTimes, ProcError> {
    let after = text.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3 of the line (index 0 here); utime and stime are
    // fields 14 and 15 (indices 11 and 12).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    match (num(11), num(12)) {
        (Some(utime), Some(stime)) => Ok(ProcTimes { utime, stime, runtime_ns: 0 }),
        _ => Err(ProcError(format!("bad /proc/<pid>/stat line {text:?}"))),
    }
}

/// The first field of a `schedstat` file: nanoseconds on a CPU.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Reads `/proc/<pid>/stat` and the `schedstat` of each of its threads.
///
/// # Errors
/// The process is gone, or a file is malformed.
pub fn pid_times(pid: u32) -> Result<ProcTimes, ProcError> {
    let mut t = parse_pid_stat(&read(&format!("/proc/{pid}/stat"))?)?;
    let tasks = format!("/proc/{pid}/task");
    let dir = std::fs::read_dir(&tasks).map_err(|e| ProcError(format!("{tasks}: {e}")))?;
    for entry in dir.flatten() {
        // A thread that exits between listing and reading simply no longer counts.
        let path = entry.path().join("schedstat");
        if let Some(ns) = std::fs::read_to_string(path).ok().as_deref().and_then(parse_schedstat) {
            t.runtime_ns += ns;
        }
    }
    Ok(t)
}

/// Path processes whose time is reported apart (linend, a sender, a receiver), with their CPU
/// time over a window and the CPUs they were allowed to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// What the processes are (`linend`, `sender`, `iperf3 client`, …).
    pub name: String,
    /// The CPUs they may run on (all of the machine's when they are not pinned).
    pub cpus: Vec<usize>,
    /// Their CPU time over the window (a difference of two readings).
    pub times: ProcTimes,
}

/// A [`Group`]'s time split into the softirq work that ran inside it and its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributed {
    /// [`Group::name`].
    pub name: String,
    /// Time on a CPU, ns (scheduler clock, includes softirq run in its context).
    pub runtime_ns: u64,
    /// Softirq and hard-irq ticks taken to have landed inside the group.
    pub inline_ticks: f64,
    /// `runtime_ns` without them: the group's own work, ns.
    pub own_ns: f64,
}

/// Splits the softirq and hard-irq ticks of a window between the groups that ran where they
/// were taken, so that a path's CPU time can be summed without counting them twice.
///
/// Tick accounting charges a softirq tick both to `/proc/stat`'s `softirq` and to the system time
/// of the task that was current. Groups whose CPU sets overlap share one pool: the softirq and
/// irq ticks of those CPUs, taken to have landed inside them up to their system time, in
/// proportion to each group's system time. (Ticks that landed in an idle CPU or a foreign task
/// are thereby charged to the groups instead; the error is bounded by the groups' system time
/// and makes their own time lower, never the path total higher.)
///
/// `per_cpu` holds each CPU's ticks over the window.
pub fn attribute(per_cpu: &[CpuLine], groups: &[Group]) -> Vec<Attributed> {
    // Pools: groups joined while their CPU sets overlap.
    let mut pool_of: Vec<usize> = (0..groups.len()).collect();
    loop {
        let mut merged = false;
        for i in 0..groups.len() {
            for j in 0..groups.len() {
                let overlap = groups[i].cpus.iter().any(|c| groups[j].cpus.contains(c));
                if overlap && pool_of[i] != pool_of[j] {
                    let (keep, drop) = (pool_of[i].min(pool_of[j]), pool_of[i].max(pool_of[j]));
                    pool_of.iter_mut().filter(|p| **p == drop).for_each(|p| *p = keep);
                    merged = true;
                }
            }
        }
        if !merged {
            break;
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        let members: Vec<&Group> = groups
            .iter()
            .zip(&pool_of)
            .filter(|(_, p)| **p == pool_of[i])
            .map(|(g, _)| g)
            .collect();
        let mut cpus: Vec<usize> = members.iter().flat_map(|m| m.cpus.iter().copied()).collect();
        cpus.sort_unstable();
        cpus.dedup();
        let softirq: u64 =
            cpus.iter().filter_map(|c| per_cpu.get(*c)).map(|l| l.softirq + l.irq).sum();
        let stime: u64 = members.iter().map(|m| m.times.stime).sum();
        let inline_pool = softirq.min(stime) as f64;
        let inline_ticks =
            if stime > 0 { inline_pool * g.times.stime as f64 / stime as f64 } else { 0.0 };
        out.push(Attributed {
            name: g.name.clone(),
            runtime_ns: g.times.runtime_ns,
            inline_ticks,
            own_ns: (g.times.runtime_ns as f64 - inline_ticks * TICK_NS).max(0.0),
        });
    }
    out
}

/// Each CPU's share of the window spent busy (anything but idle and iowait) and in softirq
/// and hard-irq context: `(busy, softirq)` as fractions of its ticks.
pub fn shares(per_cpu: &[CpuLine]) -> Vec<(f64, f64)> {
    per_cpu
        .iter()
        .map(|l| {
            let all = (l.busy() + l.idle).max(1) as f64;
            (l.busy() as f64 / all, (l.softirq + l.irq) as f64 / all)
        })
        .collect()
}

/// The per-CPU differences between two readings of `/proc/stat`.
pub fn per_cpu_since(later: &ProcStat, earlier: &ProcStat) -> Vec<CpuLine> {
    later.cpus.iter().zip(&earlier.cpus).map(|(a, b)| a.since(b)).collect()
}

/// Packet counters of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
}

/// Parses `/proc/net/dev` for `iface`.
///
/// # Errors
/// No such interface, or a malformed line.
pub fn parse_net_dev(text: &str, iface: &str) -> Result<IfCounters, ProcError> {
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else { continue };
        if name.trim() != iface {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()
            .ok_or_else(|| ProcError(format!("bad /proc/net/dev line {line:?}")))?;
        if f.len() < 16 {
            return Err(ProcError(format!("short /proc/net/dev line {line:?}")));
        }
        return Ok(IfCounters { rx_packets: f[1], rx_dropped: f[3], tx_packets: f[9] });
    }
    Err(ProcError(format!("no interface {iface} in /proc/net/dev")))
}

/// The counters of `iface` in the network namespace of process `pid`.
///
/// # Errors
/// The process is gone or has no such interface.
pub fn if_counters(pid: u32, iface: &str) -> Result<IfCounters, ProcError> {
    parse_net_dev(&read(&format!("/proc/{pid}/net/dev"))?, iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines() {
        let text = "cpu  261260 5 46931 80079 749 3 4648 127 0 0\n\
                    cpu0 131018 0 22332 41206 159 0 2087 67 0 0\n\
                    cpu1 130242 5 24598 38873 590 3 2561 60 0 0\n\
                    intr 1 2 3\nctxt 99\n";
        let s = parse_proc_stat(text).expect("parse");
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.total.user, 261265);
        assert_eq!(s.total.idle, 80828);
        assert_eq!(s.total.busy(), 261265 + 46931 + 3 + 4648 + 127);
        assert_eq!(s.cpus[1].softirq, 2561);
        assert!(parse_proc_stat("intr 1\n").is_err());
        assert!(parse_proc_stat("cpu 1 x 3\n").is_err());
    }

    #[test]
    fn pid_stat_with_odd_command() {
        let text = "4242 (we ird) cmd) R 1 4242 4242 0 -1 4194560 100 0 0 0 731 29 0 0 20 0 3 0";
        assert_eq!(parse_pid_stat(text), Ok(ProcTimes { utime: 731, stime: 29, runtime_ns: 0 }));
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123456789));
        assert_eq!(parse_schedstat(""), None);
        assert!(parse_pid_stat("4242 (x) R 1").is_err());
    }

    fn line(softirq: u64, irq: u64, busy: u64, idle: u64) -> CpuLine {
        CpuLine { system: busy - softirq - irq, softirq, irq, idle, ..CpuLine::default() }
    }

    fn group(name: &str, cpus: &[usize], stime: u64, runtime_ns: u64) -> Group {
        Group {
            name: name.into(),
            cpus: cpus.to_vec(),
            times: ProcTimes { utime: 0, stime, runtime_ns },
        }
    }

    #[test]
    fn softirq_is_charged_to_the_groups_where_it_ran() {
        // CPU 0: 40 softirq ticks; CPU 1: 30 softirq + 2 irq ticks.
        let cpus = [line(40, 0, 90, 10), line(30, 2, 60, 40)];
        // Split placement: the sender alone on CPU 0, linend and a receiver on CPU 1.
        let a = attribute(
            &cpus,
            &[
                group("sender", &[0], 80, 900_000_000),
                group("linend", &[1], 24, 400_000_000),
                group("receiver", &[1], 8, 100_000_000),
            ],
        );
        assert_eq!(a[0].inline_ticks, 40.0);
        assert_eq!(a[0].own_ns, 900e6 - 40.0 * TICK_NS);
        // CPU 1's 32 ticks, split 24:8.
        assert_eq!(a[1].inline_ticks, 24.0);
        assert_eq!(a[2].inline_ticks, 8.0);
        assert_eq!(a[1].own_ns, 400e6 - 24.0 * TICK_NS);
        // Not more than a group's system time is taken as softirq.
        let b = attribute(&cpus, &[group("sender", &[0], 10, 200_000_000)]);
        assert_eq!(b[0].inline_ticks, 10.0);
        // Unpinned groups (every CPU) share one pool; own time never goes below zero.
        let c = attribute(
            &cpus,
            &[group("linend", &[0, 1], 60, 100_000_000), group("sender", &[0, 1], 20, 0)],
        );
        assert_eq!(c[0].inline_ticks + c[1].inline_ticks, 72.0);
        assert_eq!(c[0].inline_ticks, 54.0);
        assert_eq!(c[0].own_ns, 0.0);
        assert_eq!(c[1].own_ns, 0.0);
        // Overlapping sets join one pool: {0} and {0,1} share both CPUs' ticks.
        let d = attribute(&cpus, &[group("a", &[0], 50, 0), group("b", &[0, 1], 50, 0)]);
        assert_eq!(d[0].inline_ticks, 36.0);
        assert_eq!(d[1].inline_ticks, 36.0);
        // A group without system time takes none.
        let e = attribute(&cpus, &[group("idle", &[1], 0, 5)]);
        assert_eq!((e[0].inline_ticks, e[0].own_ns), (0.0, 5.0));
    }

    #[test]
    fn busy_shares_per_cpu() {
        let s = shares(&[line(40, 0, 90, 10), line(0, 0, 0, 0)]);
        assert_eq!(s[0], (0.9, 0.4));
        assert_eq!(s[1], (0.0, 0.0));
    }

    #[test]
    fn net_dev_counters() {
        let text = "Inter-|   Receive                            |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    \
            lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
            eth0: 6000000  100000    0    7    0     0          0         0     1200      20    0    0    0     0       0          0\n";
        let c = parse_net_dev(text, "eth0").expect("eth0");
        assert_eq!(c, IfCounters { rx_packets: 100000, tx_packets: 20, rx_dropped: 7 });
        assert!(parse_net_dev(text, "eth1").is_err());
    }

    #[test]
    fn this_process_reads() {
        assert!(proc_stat().expect("/proc/stat").total.busy() > 0);
        assert!(pid_times(std::process::id()).expect("own stat").runtime_ns > 0);
        if_counters(std::process::id(), "lo").expect("lo");
    }
}
