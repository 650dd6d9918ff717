//! Fuzz target: see linen_fuzz::control::static_peers (seeds in fuzz/seeds/static_peers).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = linen_fuzz::control::static_peers(data);
});
