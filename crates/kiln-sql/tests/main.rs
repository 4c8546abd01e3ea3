//! kiln-sql integration tests, one binary: the SQL conformance suite
//! (`sql/slt`), TPC-H SF0.01, and lake behaviour across sessions.

mod checks;
mod common;
mod conformance;
mod lake;
mod layers;
mod ml;
#[path = "../../../tests/support/slt.rs"]
mod slt;
mod tpch;
