//! IPv4 prefixes (`10.244.8.0/24`), just what the plugin needs.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with a prefix length. The address need not be the network address
/// (`10.244.8.1/24` is a valid interface address); [`Ipv4Net::trunc`] gives the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Net {
    /// `addr/len`; `len` is clamped to 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Ipv4Net {
        Ipv4Net { addr, len: len.min(32) }
    }

    /// The address part.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    /// The network (host bits cleared).
    pub fn trunc(&self) -> Ipv4Net {
        Ipv4Net { addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()), len: self.len }
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// The `n`th address of the network (0 is the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.addr) & self.mask()).wrapping_add(n))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The last address before the broadcast address.
    pub fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.broadcast()).wrapping_sub(1))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 prefix (a.b.c.d/len)"))?;
        let addr: Ipv4Addr =
            a.parse().map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0-32"))?;
        Ok(Ipv4Net { addr, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_arithmetic() {
        let n: Ipv4Net = "10.244.8.1/24".parse().unwrap();
        assert_eq!(n.trunc().to_string(), "10.244.8.0/24");
        assert_eq!(n.nth(1), Ipv4Addr::new(10, 244, 8, 1));
        assert_eq!(n.last_host(), Ipv4Addr::new(10, 244, 8, 254));
        assert!(n.contains(Ipv4Addr::new(10, 244, 8, 77)));
        assert!(!n.contains(Ipv4Addr::new(10, 244, 9, 1)));
        let z: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(z.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
    }
}
