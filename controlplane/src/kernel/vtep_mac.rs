//! The node's VtepMAC: `linen.1`'s MAC, which every peer puts in its neighbour entry for this
//! node (and flannel peers in their forwarding database), so it must not change when linend
//! restarts, is upgraded or the machine reboots.
//!
//! It is derived, not stored: HMAC-SHA256 keyed with the machine ID (`/etc/machine-id`, 128 bits
//! that systemd and dbus keep for the machine's lifetime) over a fixed linen application tag and
//! the node's public IPv4 address, cut to 6 bytes and made a locally administered unicast MAC.
//! This is how systemd derives its application-specific IDs (`sd_id128_get_machine_app_specific`)
//! and, in spirit, how systemd-networkd gives virtual devices stable MACs. Deriving needs no
//! state directory, survives reinstalling linen, and is the same on every start; the keyed hash
//! does not reveal the machine ID, which is meant to stay on the machine. The public IP is part
//! of the input so that machines cloned with one machine ID (a common image mistake) still get
//! distinct VtepMACs, and so that nodes sharing a machine (network namespaces in tests) do too;
//! a node whose public IP changes claims a new lease anyway.
//!
//! A static-peers file's `vtep_mac` overrides it. Without a machine ID (a minimal container
//! without `/etc/machine-id` mounted) the kernel's random MAC of a new `linen.1` stays: it then
//! survives restarts (the device is handed over) but not a reboot, and linend says so.
//!
//! flannel, for comparison, gives `flannel.1` a random MAC when it creates the device and keeps
//! the device (and so the MAC) across flanneld restarts, not across reboots.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where the machine ID is looked for, in order (systemd's file, then dbus's older copy).
pub const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// linen's application tag in the derivation (fixed forever: changing it changes every
/// VtepMAC).
const APP_TAG: &[u8] = b"linen vtep mac v1";

/// Parses a machine-id file's content: 32 hexadecimal digits, optionally followed by a newline.
/// `None` for anything else, including systemd's `uninitialized` placeholder and all zeros.
pub fn parse_machine_id(text: &str) -> Option<[u8; 16]> {
    let hex = text.strip_suffix('\n').unwrap_or(text);
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    (id != [0; 16]).then_some(id)
}

/// The VtepMAC of the node with machine ID `machine_id` and public IP `public_ip`: a locally
/// administered (bit 1 of the first byte set) unicast (bit 0 clear) MAC.
pub fn derive(machine_id: &[u8; 16], public_ip: Ipv4Addr) -> [u8; 6] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, machine_id);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(APP_TAG);
    ctx.update(&public_ip.octets());
    let tag = ctx.sign();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&tag.as_ref()[..6]);
    mac[0] = (mac[0] & !0x01) | 0x02;
    mac
}

/// The machine ID from the first of `files` that holds a valid one, with its path.
///
/// # Errors
/// A message naming every file and why it was not used.
pub fn read_machine_id(files: &[&str]) -> Result<([u8; 16], PathBuf), String> {
    let mut why = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => match parse_machine_id(&text) {
                Some(id) => return Ok((id, Path::new(f).to_path_buf())),
                None => why.push(format!("{f}: not a machine ID")),
            },
            Err(e) => why.push(format!("{f}: {e}")),
        }
    }
    Err(why.join("; "))
}

/// This node's derived VtepMAC from the system's machine ID ([`MACHINE_ID_FILES`]).
///
/// # Errors
/// No machine ID (the message names the files tried).
pub fn for_node(public_ip: Ipv4Addr) -> Result<[u8; 6], String> {
    read_machine_id(&MACHINE_ID_FILES).map(|(id, _)| derive(&id, public_ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef\n";

    #[test]
    fn machine_ids_parse_as_systemd_writes_them() {
        let id = parse_machine_id(ID).expect("valid");
        assert_eq!(id[0], 0x01);
        assert_eq!(id[15], 0xef);
        assert_eq!(parse_machine_id(ID.trim_end()), Some(id), "newline optional");
        assert_eq!(parse_machine_id("uninitialized\n"), None);
        assert_eq!(parse_machine_id(&"0".repeat(32)), None);
        assert_eq!(parse_machine_id(&"a".repeat(31)), None);
        assert_eq!(parse_machine_id(&"g".repeat(32)), None);
        assert_eq!(parse_machine_id(&format!("{}\n\n", "a".repeat(32))), None);
    }

    #[test]
    fn derived_macs_are_stable_local_unicast_and_distinct() {
        let id = parse_machine_id(ID).unwrap();
        let ip = Ipv4Addr::new(192, 168, 77, 1);
        let mac = derive(&id, ip);
        assert_eq!(mac, derive(&id, ip), "same input, same MAC");
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast: {mac:02x?}");
        // The derivation is fixed: this value may never change (every node's lease carries it).
        // HMAC-SHA256(key = 0123…ef, "linen vtep mac v1" ‖ c0 a8 4d 01), first 6 bytes, bits
        // set; computed independently with Python's hmac module.
        assert_eq!(mac, [0x06, 0xed, 0xf6, 0x5a, 0x35, 0x1b]);
        assert_ne!(mac, derive(&id, Ipv4Addr::new(192, 168, 77, 2)), "other node, other MAC");
        let mut other = id;
        other[0] ^= 1;
        assert_ne!(mac, derive(&other, ip), "other machine, other MAC");
        let macs: std::collections::HashSet<[u8; 6]> =
            (0..=255u8).map(|i| derive(&id, Ipv4Addr::new(10, 0, 0, i))).collect();
        assert_eq!(macs.len(), 256);
    }

    #[test]
    fn the_first_valid_file_wins_and_failures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        let good = dir.path().join("good");
        std::fs::write(&bad, "uninitialized\n").unwrap();
        std::fs::write(&good, ID).unwrap();
        let missing = dir.path().join("missing");
        let (b, g, m) = (bad.to_str().unwrap(), good.to_str().unwrap(), missing.to_str().unwrap());
        let (id, path) = read_machine_id(&[m, b, g]).expect("good one found");
        assert_eq!(id, parse_machine_id(ID).unwrap());
        assert_eq!(path, good);
        let err = read_machine_id(&[m, b]).unwrap_err();
        assert!(err.contains("missing") && err.contains("not a machine ID"), "{err}");
    }
}
