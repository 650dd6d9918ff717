//! Fuzz target: the icmp view, its checker, getters and Repr (see linen_fuzz::icmp).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::icmp(data);
});
