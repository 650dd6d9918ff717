//! Fuzz target: the ipv4 view, its checker, getters and Repr (see linen_fuzz::ipv4).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::ipv4(data);
});
