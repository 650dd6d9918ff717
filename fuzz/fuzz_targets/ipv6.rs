//! Fuzz target: the ipv6 view, its checker, getters and Repr (see linen_fuzz::ipv6).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::ipv6(data);
});
