//! Fuzz target: see linen_fuzz::control::flannel_config (seeds in fuzz/seeds/flannel_config).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::control::flannel_config(data);
});
