//! Fuzz target: the udp view, its checker, getters and Repr (see linen_fuzz::udp).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::udp(data);
});
