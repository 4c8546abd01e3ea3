//! The `kiln` command's argument definitions, shared by the binary and its
//! tests. Everything else of the command lives in the binary.

pub mod args;
