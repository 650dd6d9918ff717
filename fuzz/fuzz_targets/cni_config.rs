//! Fuzz target: see linen_fuzz::control::cni_config (seeds in fuzz/seeds/cni_config).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::control::cni_config(data);
});
