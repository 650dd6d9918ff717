//! The `linen` CNI plugin binary.
fn main() {}
