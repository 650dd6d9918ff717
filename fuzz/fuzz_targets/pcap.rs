//! Fuzz target: the classic pcap reader, and every frame it yields through the decap walk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    linen_fuzz::pcap(data);
});
