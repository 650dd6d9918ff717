//! Fuzz target: the Ethernet view (802.1Q / QinQ), then the whole decap walk below it
//! (IPv4/IPv6 → UDP → VXLAN → inner Ethernet → inner IPv4 → UDP/ICMP) as far as the bytes
//! parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::walk(data);
});
