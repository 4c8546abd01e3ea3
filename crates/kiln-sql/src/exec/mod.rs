//! Statements out: one file per statement family, each a set of plain
//! functions over a [`KilnSession`]: [`ddl`] (lake tables: create, insert,
//! partitions, drop, show, describe), [`sql`] (every other DataFusion
//! statement), [`ml`] (train, evaluate, predict, models; its progress bar
//! in `progress`), [`transform`] (fitting TRANSFORM), [`checks`] (governance
//! checks), [`ingest`] (incremental loads), and [`diagnostics`] (errors that
//! name the fix).
//!
//! Imports from `parse`, `plan`, `functions` and `catalog`, never the reverse.

pub mod checks;
pub mod ddl;
pub mod diagnostics;
pub mod ingest;
pub mod ml;
mod progress;
pub mod sql;
pub mod transform;

use datafusion::error::Result;

use crate::parse::{parse_statement, KilnStatement};
use crate::session::{KilnSession, StatementResult};

/// Parses `sql` into a [`KilnStatement`] and runs it. `tables` collects the
/// tables a DataFusion statement scans (for error diagnostics).
pub(crate) async fn execute(
    session: &KilnSession,
    sql: &str,
    tables: &mut Vec<String>,
) -> Result<StatementResult> {
    match parse_statement(sql)? {
        KilnStatement::Ml(statement) => ml::execute_ml(session, statement).await,
        KilnStatement::Check(statement) => checks::execute_check(session, statement).await,
        KilnStatement::Ingest(statement) => ingest::execute_ingest(session, statement).await,
        KilnStatement::Sql(sql) => sql::execute_sql(session, &sql, tables).await,
    }
}
