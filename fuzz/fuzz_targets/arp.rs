//! Fuzz target: the arp view, its checker, getters and Repr (see linen_fuzz::arp).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::arp(data);
});
