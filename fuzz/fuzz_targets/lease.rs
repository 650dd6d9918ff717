//! Fuzz target: see linen_fuzz::control::lease (seeds in fuzz/seeds/lease).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::control::lease(data);
});
