//! Fuzz target: the vxlan view, its checker, getters and Repr (see linen_fuzz::vxlan).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::vxlan(data);
});
