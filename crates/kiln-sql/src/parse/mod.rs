//! Statements in: one parser turns a statement's text into a
//! [`KilnStatement`]. Kiln's own grammars ([`ml`], [`check`], [`ingest`],
//! [`transform`]) share the token helpers of [`words`]; everything else is
//! DataFusion SQL, parsed by DataFusion after Kiln's query rewrites
//! ([`rewrite`]). Scripts are split into positioned statements by [`script`].
//!
//! Imports only from `catalog` and `functions` below it.

pub mod check;
pub mod errors;
pub mod ingest;
pub mod ml;
pub mod rewrite;
pub mod script;
pub mod transform;
pub mod words;

use datafusion::error::Result;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

pub use check::CheckStatement;
pub use ingest::IngestStatement;
pub use ml::{MlStatement, TrainStatement};

/// One statement, as Kiln executes it.
#[derive(Debug, Clone, PartialEq)]
pub enum KilnStatement {
    /// `TRAIN MODEL`, `EVALUATE MODEL`, `PREDICT MODEL`, `SHOW MODELS`,
    /// `DESCRIBE MODEL`, `DROP MODEL`.
    Ml(MlStatement),
    /// `CREATE CHECK`, `RUN CHECK(S)`, `SHOW CHECKS`, `DROP CHECK`.
    Check(CheckStatement),
    /// `INGEST INTO`.
    Ingest(IngestStatement),
    /// Anything else: DataFusion SQL (queries, DDL, DML, EXPLAIN, ...), kept
    /// as text until the [`rewrite`]s that need the model registry ran.
    Sql(String),
}

/// The statement families Kiln's own grammars own, by their leading words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ml,
    Check,
    Ingest,
}

fn family(words: [&str; 4]) -> Option<Family> {
    Some(match words {
        ["TRAIN", "MODEL", ..]
        | ["EVALUATE", "MODEL", ..]
        | ["PREDICT", "MODEL", ..]
        | ["SHOW", "MODELS", ..]
        | ["DESCRIBE", "MODEL", ..]
        | ["DROP", "MODEL", ..] => Family::Ml,
        ["CREATE", "CHECK", ..]
        | ["CREATE", "OR", "REPLACE", "CHECK"]
        | ["RUN", "CHECK", ..]
        | ["RUN", "CHECKS", ..]
        | ["SHOW", "CHECKS", ..]
        | ["DROP", "CHECK", ..] => Family::Check,
        ["INGEST", ..] => Family::Ingest,
        _ => return None,
    })
}

/// Parses one statement (no trailing `;` needed). Text Kiln's grammars do
/// not own is [`KilnStatement::Sql`]; its syntax errors come from DataFusion.
///
/// ```
/// use kiln_sql::parse::{parse_statement, KilnStatement, MlStatement};
/// let statement = parse_statement("SHOW MODELS").unwrap();
/// assert_eq!(statement, KilnStatement::Ml(MlStatement::ShowModels));
/// let query = parse_statement("SELECT 1").unwrap();
/// assert_eq!(query, KilnStatement::Sql("SELECT 1".to_string()));
/// ```
pub fn parse_statement(sql: &str) -> Result<KilnStatement> {
    let dialect = GenericDialect {};
    // Text that does not even tokenize is DataFusion's to report.
    let Ok(mut parser) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(KilnStatement::Sql(sql.to_string()));
    };
    let leading: Vec<String> = (0..4).map(|n| words::word(&parser, n)).collect();
    let leading = [
        leading[0].as_str(),
        leading[1].as_str(),
        leading[2].as_str(),
        leading[3].as_str(),
    ];
    let statement = match family(leading) {
        Some(Family::Ml) => ml::parse(&mut parser)?.map(KilnStatement::Ml),
        Some(Family::Check) => check::parse(&mut parser)?.map(KilnStatement::Check),
        Some(Family::Ingest) => ingest::parse(&mut parser)?.map(KilnStatement::Ingest),
        None => None,
    };
    Ok(statement.unwrap_or_else(|| KilnStatement::Sql(sql.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_recognised_by_its_leading_words() {
        let kind = |sql: &str| match parse_statement(sql).unwrap() {
            KilnStatement::Ml(_) => "ml",
            KilnStatement::Check(_) => "check",
            KilnStatement::Ingest(_) => "ingest",
            KilnStatement::Sql(_) => "sql",
        };
        assert_eq!(
            kind("TRAIN MODEL m USING linear_regression LABEL y AS SELECT 1 AS x, 2 AS y"),
            "ml"
        );
        assert_eq!(kind("drop model if exists m"), "ml");
        assert_eq!(
            kind("CREATE OR REPLACE CHECK c ON t (EXPECT NOT NULL (a))"),
            "check"
        );
        assert_eq!(kind("RUN CHECKS ON t"), "check");
        assert_eq!(kind("INGEST INTO t FROM 'x/' FORMAT CSV"), "ingest");
        assert_eq!(kind("CREATE OR REPLACE TABLE t AS SELECT 1"), "sql");
        assert_eq!(kind("SHOW TABLES"), "sql");
        assert_eq!(kind("SELECT 'unterminated"), "sql");
    }

    #[test]
    fn a_kiln_statement_with_a_syntax_error_names_the_clause() {
        let err = parse_statement("TRAIN MODEL m AS SELECT 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("USING"), "{err}");
    }
}
