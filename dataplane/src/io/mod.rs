//! Packet I/O backends. The only module of the crate allowed to use `unsafe`; every unsafe block
//! carries a `// SAFETY:` comment.

pub mod tap;
#[allow(unsafe_code)]
pub mod xsk;
