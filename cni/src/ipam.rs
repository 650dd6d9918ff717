//! The IPAM store: the on-disk layout of the reference `host-local` plugin, so an operator's
//! tools (and host-local itself) read linen's reservations and the other way round.
//!
//! ```text
//! <dataDir>/<network>/lock                 taken with flock(LOCK_EX) around every change
//! <dataDir>/<network>/10.244.8.7           "<containerID>\r\n<ifname>"
//! <dataDir>/<network>/last_reserved_ip.0   the address handed out last (round-robin start)
//! ```
//!
//! The gateway is never handed out. Every operation holds the lock for its whole
//! read-decide-write, so concurrent ADDs and DELs never hand out one address twice.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::Range;
use crate::error::{CniError, Code};

const LAST_RESERVED: &str = "last_reserved_ip.0";
const LOCK: &str = "lock";
const LINE_BREAK: &str = "\r\n";

/// One reservation found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The address.
    pub ip: Ipv4Addr,
    /// Container ID that holds it.
    pub container_id: String,
    /// Interface name inside the container (empty in files written by old host-local versions).
    pub ifname: String,
}

/// A locked view of one network's store; the lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io_err(what: String, e: std::io::Error) -> CniError {
    CniError::new(Code::IoFailure, format!("IPAM store: {what}: {e}"))
}

impl Store {
    /// Opens (creating it if needed) and locks the store in `dir`.
    ///
    /// # Errors
    /// Code 5 when the directory or lock file cannot be created or locked.
    pub fn lock(dir: &Path) -> Result<Store, CniError> {
        fs::create_dir_all(dir).map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        let path = dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(format!("open {}", path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(format!("flock {}", path.display()), e.into()))?;
        Ok(Store { dir: dir.to_path_buf(), _lock: lock })
    }

    /// Every reservation in the store.
    ///
    /// # Errors
    /// Code 5 when the directory cannot be read.
    pub fn reservations(&self) -> Result<Vec<Reservation>, CniError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| io_err(format!("read {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(entry.path()) else { continue };
            let mut lines = text.lines().map(str::trim);
            let container_id = lines.next().unwrap_or("").to_string();
            let ifname = lines.next().unwrap_or("").to_string();
            out.push(Reservation { ip, container_id, ifname });
        }
        out.sort_by_key(|r| u32::from(r.ip));
        Ok(out)
    }

    /// The addresses held by `(container_id, ifname)`.
    ///
    /// # Errors
    /// Code 5 when the directory cannot be read.
    pub fn held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, CniError> {
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|r| {
                r.container_id == container_id && (r.ifname == ifname || r.ifname.is_empty())
            })
            .map(|r| r.ip)
            .collect())
    }

    fn ip_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Writes the reservation file; `false` when the address is already reserved.
    fn try_reserve(
        &self,
        ip: Ipv4Addr,
        container_id: &str,
        ifname: &str,
    ) -> Result<bool, CniError> {
        let path = self.ip_path(ip);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(format!("{container_id}{LINE_BREAK}{ifname}").as_bytes())
                    .map_err(|e| io_err(format!("write {}", path.display()), e))?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(format!("create {}", path.display()), e)),
        }
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED)).ok()?.trim().parse().ok()
    }

    fn set_last_reserved(&self, ip: Ipv4Addr) -> Result<(), CniError> {
        let path = self.dir.join(LAST_RESERVED);
        fs::write(&path, ip.to_string()).map_err(|e| io_err(format!("write {}", path.display()), e))
    }

    /// Reserves an address from `range` for `(container_id, ifname)`: `requested` when given
    /// (it must lie in the range and not be the gateway), else the next free address after the
    /// last one handed out, wrapping round. An attachment that already holds an address gets the
    /// same one back.
    ///
    /// # Errors
    /// Code 7 for a requested address outside the range or equal to the gateway, 102 when it is
    /// held by another container, 101 when the range is full, 5 on I/O failure.
    pub fn allocate(
        &self,
        range: &crate::config::Range,
        container_id: &str,
        ifname: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, CniError> {
        let held = self.held_by(container_id, ifname)?;
        if let Some(ip) = requested {
            check_requested(range, ip)?;
            if held.contains(&ip) {
                return Ok(ip);
            }
            if !self.try_reserve(ip, container_id, ifname)? {
                let holder = self
                    .reservations()?
                    .into_iter()
                    .find(|r| r.ip == ip)
                    .map(|r| format!("{} ({})", r.container_id, r.ifname))
                    .unwrap_or_else(|| "another container".to_string());
                return Err(CniError::new(
                    Code::IpTaken,
                    format!("requested IP {ip} is already allocated to {holder}"),
                ));
            }
            return Ok(ip);
        }
        if let Some(ip) = held.into_iter().find(|ip| in_range(range, *ip)) {
            return Ok(ip);
        }
        // u64: a /0 or /1 range has 2^31 or more addresses.
        let start = u64::from(u32::from(range.start));
        let end = u64::from(u32::from(range.end));
        let size = end - start + 1;
        let first = match self.last_reserved() {
            Some(last) if in_range(range, last) => u64::from(u32::from(last)) - start + 1,
            _ => 0,
        };
        for step in 0..size {
            let offset = start + (first + step) % size;
            let ip = Ipv4Addr::from(u32::try_from(offset).unwrap_or(u32::MAX));
            if ip == range.gateway || ip == range.subnet.network() || ip == range.subnet.broadcast()
            {
                continue;
            }
            if self.try_reserve(ip, container_id, ifname)? {
                self.set_last_reserved(ip)?;
                return Ok(ip);
            }
        }
        Err(CniError::new(
            Code::RangeFull,
            format!(
                "no free address in {}-{} ({} is full); delete unused pods or widen the range",
                range.start, range.end, range.subnet
            ),
        ))
    }

    /// Releases every address held by `(container_id, ifname)`; returns them.
    ///
    /// # Errors
    /// Code 5 on I/O failure.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, CniError> {
        let ips = self.held_by(container_id, ifname)?;
        for ip in &ips {
            self.release_ip(*ip)?;
        }
        Ok(ips)
    }

    /// Removes the reservation of `ip`, whoever holds it.
    ///
    /// # Errors
    /// Code 5 on I/O failure.
    pub fn release_ip(&self, ip: Ipv4Addr) -> Result<(), CniError> {
        let path = self.ip_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", path.display()), e)),
        }
    }
}

fn in_range(range: &Range, ip: Ipv4Addr) -> bool {
    (u32::from(range.start)..=u32::from(range.end)).contains(&u32::from(ip))
}

fn check_requested(range: &Range, ip: Ipv4Addr) -> Result<(), CniError> {
    if !in_range(range, ip) || ip == range.subnet.network() || ip == range.subnet.broadcast() {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "requested IP {ip} is outside this node's range {}-{} ({})",
                range.start, range.end, range.subnet
            ),
        ));
    }
    if ip == range.gateway {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("requested IP {ip} is the gateway of {}", range.subnet),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubnetEnv;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "linen-ipam-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn range() -> Range {
        SubnetEnv::parse("FLANNEL_SUBNET=10.9.0.1/29\n").unwrap().range()
    }

    #[test]
    fn round_robin_skips_gateway_and_reuses_released_addresses_last() {
        let dir = tmpdir("rr");
        let s = Store::lock(&dir).unwrap();
        let r = range();
        let a = s.allocate(&r, "c1", "eth0", None).unwrap();
        let b = s.allocate(&r, "c2", "eth0", None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(fs::read_to_string(dir.join("10.9.0.2")).unwrap(), "c1\r\neth0");
        assert_eq!(fs::read_to_string(dir.join(LAST_RESERVED)).unwrap(), "10.9.0.3");
        s.release("c1", "eth0").unwrap();
        // Round-robin: the next address is .4, not the just-released .2.
        assert_eq!(s.allocate(&r, "c3", "eth0", None).unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        // Same attachment again: same address.
        assert_eq!(s.allocate(&r, "c3", "eth0", None).unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        for c in ["c4", "c5", "c6"] {
            s.allocate(&r, c, "eth0", None).unwrap();
        }
        // .2 was free again; after it the /29 (.2-.6) is full.
        let e = s.allocate(&r, "c8", "eth0", None).unwrap_err();
        assert_eq!(e.code, Code::RangeFull, "{e}");
        let all = s.reservations().unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|r| r.ip != Ipv4Addr::new(10, 9, 0, 1)));
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Any sequence of allocations and releases on a small range matches a model: no address
        /// is held twice, the gateway is never handed out, and the store is full exactly when
        /// the model says so.
        #[test]
        fn store_matches_a_model(ops in proptest::collection::vec((0u8..8, proptest::bool::ANY), 1..40)) {
            let dir = tmpdir("model");
            let s = Store::lock(&dir).unwrap();
            let r = range(); // .2-.6 usable
            let mut model: std::collections::HashMap<u8, Ipv4Addr> = Default::default();
            for (ctr, add) in ops {
                let id = format!("c{ctr}");
                if add {
                    match s.allocate(&r, &id, "eth0", None) {
                        Ok(ip) => {
                            proptest::prop_assert_ne!(ip, r.gateway);
                            if let Some(prev) = model.get(&ctr) {
                                proptest::prop_assert_eq!(*prev, ip);
                            }
                            proptest::prop_assert!(model.iter().all(|(c, i)| *c == ctr || *i != ip));
                            model.insert(ctr, ip);
                        }
                        Err(e) => {
                            proptest::prop_assert_eq!(e.code, Code::RangeFull);
                            proptest::prop_assert_eq!(model.len(), 5);
                        }
                    }
                } else {
                    s.release(&id, "eth0").unwrap();
                    model.remove(&ctr);
                }
                proptest::prop_assert_eq!(s.reservations().unwrap().len(), model.len());
            }
            drop(s);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn fixed_ips_taken_gateway_and_out_of_range_are_errors() {
        let dir = tmpdir("fixed");
        let s = Store::lock(&dir).unwrap();
        let r = range();
        let ip = Ipv4Addr::new(10, 9, 0, 5);
        assert_eq!(s.allocate(&r, "c1", "eth0", Some(ip)).unwrap(), ip);
        assert_eq!(s.allocate(&r, "c2", "eth0", Some(ip)).unwrap_err().code, Code::IpTaken);
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        assert_eq!(s.allocate(&r, "c2", "eth0", Some(gw)).unwrap_err().code, Code::InvalidConfig);
        let out = Ipv4Addr::new(10, 9, 1, 5);
        assert_eq!(s.allocate(&r, "c2", "eth0", Some(out)).unwrap_err().code, Code::InvalidConfig);
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }
}
