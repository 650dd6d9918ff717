//! linen's CNI plugin library; the `linen` binary is a thin shell over it.
#![deny(missing_docs)]
