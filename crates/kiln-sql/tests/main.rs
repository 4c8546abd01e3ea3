//! kiln-sql integration tests, one binary: the SQL conformance suite
//! (`sql/slt`), DataFusion's own sqllogictest files replayed, TPC-H SF0.01,
//! lake behaviour across sessions, and model quality against scikit-learn.

mod checks;
mod common;
mod conformance;
#[path = "../../../tests/support/datafusion_replay.rs"]
mod datafusion_replay;
mod lake;
mod layers;
mod ml;
mod quality;
mod replay;
#[path = "../../../tests/support/slt.rs"]
mod slt;
mod tpch;
