//! kiln-sql integration tests, one binary: the SQL conformance suite
//! (`sql/slt`), DataFusion's own sqllogictest files replayed, TPC-H SF0.01,
//! and lake behaviour across sessions.

mod checks;
mod common;
mod conformance;
#[path = "../../../tests/support/datafusion_replay.rs"]
mod datafusion_replay;
mod lake;
mod layers;
mod ml;
mod replay;
#[path = "../../../tests/support/slt.rs"]
mod slt;
mod tpch;
