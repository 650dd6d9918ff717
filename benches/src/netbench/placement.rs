//! Where netbench runs the path's processes (`--pin`), and what it reads back about it.
//!
//! Three roles: the *sender* (the AF_PACKET sender, `iperf3 -c`), the *receiver* (the packet
//! sink, `iperf3 -s`) and linend's threads (both nodes). Every datapath gets the same placement,
//! so the kernel's VXLAN path (which runs in softirq wherever the kernel raises it, mostly on the
//! sender's CPU) and linen's workers are measured under the same rules:
//!
//! - [`Pin::Split`] (default): the sender on CPU 0; the receiver and linend on the other CPUs.
//! - [`Pin::Same`]: everything on CPU 0 — the path's work shares one CPU, so throughput is a
//!   per-core figure.
//! - [`Pin::None`]: nothing pinned; the scheduler decides.
//!
//! The request/response test always runs before anything is pinned (as a latency test of an
//! unpinned node); the TCP and packet-rate windows run with the placement.

use std::collections::BTreeMap;
use std::fmt;
use std::process::Command;
use std::str::FromStr;

use linen_testbed::Netns;
use serde_json::{json, Map, Value};

/// The placement policy (`--pin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pin {
    /// Sender on CPU 0; receiver and linend on the other CPUs.
    #[default]
    Split,
    /// Everything on CPU 0.
    Same,
    /// Nothing pinned.
    None,
}

impl Pin {
    /// Every policy.
    pub const ALL: [Pin; 3] = [Pin::Split, Pin::Same, Pin::None];

    /// The name `--pin` takes.
    pub fn name(self) -> &'static str {
        match self {
            Pin::Split => "split",
            Pin::Same => "same",
            Pin::None => "none",
        }
    }

    /// The CPUs of each role on a machine with `ncpu` CPUs.
    pub fn placement(self, ncpu: usize) -> Placement {
        let ncpu = ncpu.max(1);
        let (sender, rest) = match self {
            Pin::Split if ncpu >= 2 => (Some(vec![0]), Some((1..ncpu).collect::<Vec<_>>())),
            Pin::Split | Pin::Same => (Some(vec![0]), Some(vec![0])),
            Pin::None => (None, None),
        };
        Placement { pin: self, ncpu, sender, receiver: rest.clone(), linend: rest }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pin {
    type Err = String;

    fn from_str(s: &str) -> Result<Pin, String> {
        Pin::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Pin::ALL.iter().map(|p| p.name()).collect();
            format!("unknown placement {s:?}: choose from {}", names.join(", "))
        })
    }
}

/// Which CPUs each role may use (`None`: not pinned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The policy this came from.
    pub pin: Pin,
    /// The machine's CPUs.
    pub ncpu: usize,
    /// The sending application.
    pub sender: Option<Vec<usize>>,
    /// The receiving application.
    pub receiver: Option<Vec<usize>>,
    /// linend's threads, both nodes.
    pub linend: Option<Vec<usize>>,
}

impl Placement {
    /// The CPUs a role may run on: its list, or every CPU when it is not pinned.
    pub fn or_all(&self, cpus: &Option<Vec<usize>>) -> Vec<usize> {
        cpus.clone().unwrap_or_else(|| (0..self.ncpu).collect())
    }

    /// As JSON: the policy and each role's CPU list (`null`: not pinned).
    pub fn to_json(&self) -> Value {
        let list =
            |c: &Option<Vec<usize>>| c.as_deref().map(cpu_list).map_or(Value::Null, Value::from);
        json!({
            "pin": self.pin.name(),
            "sender": list(&self.sender),
            "receiver": list(&self.receiver),
            "linend": list(&self.linend),
        })
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let list = |c: &Option<Vec<usize>>| match c {
            Some(c) => format!("CPU {}", cpu_list(c)),
            None => "any CPU".to_string(),
        };
        format!(
            "`--pin {}`: sender (AF_PACKET sender, `iperf3 -c`) on {}; receiver (sink, `iperf3 -s`) \
             on {}; linend's threads on {}",
            self.pin.name(),
            list(&self.sender),
            list(&self.receiver),
            list(&self.linend)
        )
    }
}

/// A CPU list the way `taskset -c` takes it and `/proc` prints it: `0`, `1-3`, `0,2-3`.
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { v[i].to_string() } else { format!("{}-{}", v[i], v[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// A command running `program` inside `ns`, on `cpus` when given. `taskset` and `ip netns exec`
/// both exec, so the PID of the spawned child is `program`'s.
pub fn command(ns: &Netns, program: &str, cpus: Option<&[usize]>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu_list(cpus), "ip", "netns", "exec", &ns.name, program]);
            c
        }
        None => ns.command(program),
    }
}

/// `Cpus_allowed_list` of a `/proc/…/status` text.
pub fn parse_allowed(status: &str) -> Option<String> {
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_string())
}

/// The CPUs each thread of `pid` may run on, by thread name (threads of one name that differ
/// are listed as `a | b`).
pub fn thread_affinity(pid: u32) -> Value {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Value::Null };
    for entry in dir.flatten() {
        let p = entry.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default().trim().to_string();
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        if let Some(cpus) = parse_allowed(&status) {
            let e = by_name.entry(comm).or_default();
            if !e.contains(&cpus) {
                e.push(cpus);
            }
        }
    }
    let m: Map<String, Value> =
        by_name.into_iter().map(|(k, v)| (k, Value::from(v.join(" | ")))).collect();
    Value::Object(m)
}

/// The CPUs process `pid` may run on (its main thread), or `null` when it is gone.
pub fn process_affinity(pid: u32) -> Value {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .as_deref()
        .and_then(parse_allowed)
        .map_or(Value::Null, Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_place_the_roles() {
        let s = Pin::Split.placement(4);
        assert_eq!(s.sender, Some(vec![0]));
        assert_eq!(s.receiver, Some(vec![1, 2, 3]));
        assert_eq!(s.linend, Some(vec![1, 2, 3]));
        assert_eq!(s.to_json()["linend"], "1-3");
        // One CPU: split cannot split.
        assert_eq!(Pin::Split.placement(1).linend, Some(vec![0]));
        let same = Pin::Same.placement(2);
        assert_eq!((same.sender.clone(), same.linend.clone()), (Some(vec![0]), Some(vec![0])));
        let none = Pin::None.placement(2);
        assert_eq!(none.linend, None);
        assert_eq!(none.or_all(&none.linend), vec![0, 1]);
        assert_eq!(none.to_json()["sender"], Value::Null);
        assert!(none.describe().contains("linend's threads on any CPU"), "{}", none.describe());
        assert!(s.describe().starts_with("`--pin split`: sender"), "{}", s.describe());
    }

    #[test]
    fn names_parse() {
        for p in Pin::ALL {
            assert_eq!(p.name().parse::<Pin>(), Ok(p));
        }
        assert!("both".parse::<Pin>().unwrap_err().contains("split, same, none"));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list(&[0]), "0");
        assert_eq!(cpu_list(&[3, 1, 2]), "1-3");
        assert_eq!(cpu_list(&[0, 2, 3, 5]), "0,2-3,5");
        assert_eq!(cpu_list(&[]), "");
        let status = "Name:\tlinen-xdp-0\nCpus_allowed:\t2\nCpus_allowed_list:\t1\n";
        assert_eq!(parse_allowed(status).as_deref(), Some("1"));
        assert_eq!(parse_allowed("Name: x\n"), None);
        let me = thread_affinity(std::process::id());
        assert!(me.as_object().is_some_and(|m| !m.is_empty()), "{me}");
        assert!(process_affinity(std::process::id()).is_string());
    }
}
