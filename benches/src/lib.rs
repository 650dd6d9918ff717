//! Shared helpers for linen's benchmarks.
#![deny(missing_docs)]

pub mod ctlbench;
pub mod netbench;
pub mod tool;
pub mod workload;
