//! Kiln's SQL layer: a lake of Parquet and raw files, queried and written
//! with SQL that always runs as Ballista jobs.
//!
//! ```text
//! script ──parser──▶ statements ──KilnSession──▶ DataFusion logical plan
//!                        │               │
//!                        │  lake catalog ┤  CREATE TABLE AS / INSERT: staged Parquet,
//!                        │               │  published atomically as a new snapshot
//!                        │               ▼
//!                        │   Ballista scheduler + executors (embedded::start)
//!                        ▼
//!   TRAIN MODEL (ml) ──▶ TrainRoundNode ──codec──▶ TrainExec per partition ──▶ updates
//!        ▲                                                                      │
//!        └──────────── combine, next round ◀────────────────────────────────────┘
//!   registry (_models/<name>/vN) ──▶ predict() / PREDICT / EVALUATE
//! ```
//! [`KilnSession`] is the entry point: it opens a [`lake::Lake`], starts an
//! embedded Ballista cluster (or connects to one started with [`cluster`]'s
//! scheduler and executors) with [`kiln_session_config`], registers the lake's
//! tables, and executes statements one by one ([`KilnSession::execute`]) or as
//! a script ([`KilnSession::execute_script`], split by [`parser::split_statements`]).
//! Governance checks ([`checks`], [`pii`]) run as one aggregate query per check.
//! Errors are DataFusion errors, rewritten by [`diagnostics`] to name the
//! statement position, table, file or line at fault.
//!
//! Dependencies point down: this crate uses `kiln-ml` and `kiln-kernels`,
//! which never depend on DataFusion (a test walks `Cargo.lock`).
//!
//! ```no_run
//! # async fn demo() -> datafusion::error::Result<()> {
//! use kiln_sql::{KilnSession, SessionOptions};
//! let session = KilnSession::open(SessionOptions::new("./lake")).await?;
//! session.execute("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b')").await?;
//! let result = session.execute("SELECT count(*) FROM t").await?;
//! assert_eq!(result.row_count(), 1);
//! # Ok(()) }
//! ```

pub mod checks;
pub mod cluster;
pub mod codec;
pub mod diagnostics;
pub mod embedded;
pub mod feature_fns;
pub mod features;
pub mod ingest;
pub mod lake;
pub mod logical;
pub mod ml;
pub mod parser;
pub mod physical;
pub mod pii;
pub mod registry;
mod session;
pub mod transform;
pub mod udf;

pub use session::{
    kiln_session_config, resolve_path, KilnSession, ScriptError, SessionOptions, StatementResult,
};
