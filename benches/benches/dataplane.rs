//! Criterion micro-benchmarks of the packet path (bench target `dataplane`).
fn main() {}
