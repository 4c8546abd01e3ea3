//! Kiln's SQL layer: a lake of Parquet and raw files, queried, checked,
//! written and trained on with SQL that always runs as Ballista jobs.
//!
//! The folders are the data flow, and each imports only from those below it:
//!
//! ```text
//! statement text ─▶ parse/    KilnStatement: Kiln's grammars (ml, check, ingest,
//!                             transform) and DataFusion SQL, query rewrites
//!                ─▶ exec/     one file per statement family, plain functions
//!                             over KilnSession (ddl, sql, ml, transform, checks, ingest)
//!                ─▶ plan/     the training-round node, its operator, the codecs
//!                ─▶ functions/ predict(), feature functions, PII, Arrow → batches
//!                ─▶ catalog/  lake, snapshots, model registry, stored checks and
//!                             transforms, LakeSchema and the system tables
//! ```
//! [`KilnSession`] (`session.rs`) holds a connection: the lake, the
//! DataFusion context and the [`Cluster`] its jobs run on; [`kiln_state`]
//! (`state.rs`) builds the session state for every role (client, scheduler,
//! executors). Starting clusters lives in the `kiln-cluster` crate, which
//! depends on this one; this crate never depends on Ballista's scheduler or
//! executor, and `kiln-ml` / `kiln-kernels` below it never on DataFusion.
//!
//! Where a change goes: a constraint kind for `CREATE CHECK` is grammar in
//! `parse/check.rs`, the stored form in `catalog/check.rs` and its measure in
//! `exec/checks.rs`; a model type is `kiln-ml` (options, model, loss) plus
//! its label handling in `exec/ml.rs`.
//!
//! ```
//! use kiln_sql::parse::{parse_statement, KilnStatement, MlStatement};
//! match parse_statement("TRAIN MODEL churn USING logistic_regression LABEL y AS SELECT * FROM t")? {
//!     KilnStatement::Ml(MlStatement::Train(train)) => assert_eq!(train.name, "churn"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), datafusion::error::DataFusionError>(())
//! ```

pub mod catalog;
mod error;
pub mod exec;
pub mod functions;
pub mod parse;
pub mod plan;
mod session;
mod state;

pub use catalog::lake::resolve_path;
pub use plan::task_runtime::{task_runtime, KilnRuntimeOptions};
pub use session::{Cluster, KilnSession, ScriptError, SessionOptions, StatementResult};
pub use state::{
    kiln_client_state, kiln_scheduler_state, kiln_session_config, kiln_state,
    one_stage_session_config, planning_runtime, KilnQueryPlanner, Stages,
};
