//! The grammar of the check statements: `CREATE [OR REPLACE] CHECK name ON
//! table [WHERE ...] EXPECT ... [SEVERITY ...] [ON FAILURE ...]`, `RUN CHECK`,
//! `RUN CHECKS ON`, `SHOW CHECKS`, `DROP CHECK`.

use datafusion::error::Result;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::catalog::check::{
    constraint_text, CheckDef, Constraint, Expectation, OnFailure, SchemaColumn, Severity,
};
use crate::parse::words::{
    expect_word as expect, ident as name, syntax, take_word as take, token, word,
};

/// A parsed check statement.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckStatement {
    Create { check: CheckDef, or_replace: bool },
    Run { name: String },
    RunOn { table: String },
    Show,
    Drop { name: String, if_exists: bool },
}

fn column_list(parser: &mut Parser, context: &str) -> Result<Vec<String>> {
    token(parser, Token::LParen, context)?;
    let mut columns = vec![name(parser, "a column")?];
    while parser.consume_token(&Token::Comma) {
        columns.push(name(parser, "a column")?);
    }
    token(parser, Token::RParen, context)?;
    Ok(columns)
}

fn number(parser: &mut Parser, context: &str) -> Result<f64> {
    let negative = parser.consume_token(&Token::Minus);
    match parser.next_token().token {
        Token::Number(n, _) => n
            .parse::<f64>()
            .map(|v| if negative { -v } else { v })
            .map_err(|_| syntax(format!("{context}: invalid number {n}"))),
        other => Err(syntax(format!(
            "{context}: expected a number, found {other}"
        ))),
    }
}

fn severity(parser: &mut Parser) -> Result<Option<Severity>> {
    if !take(parser, "SEVERITY") {
        return Ok(None);
    }
    if take(parser, "ERROR") {
        Ok(Some(Severity::Error))
    } else if take(parser, "WARN") || take(parser, "WARNING") {
        Ok(Some(Severity::Warn))
    } else {
        Err(syntax(format!(
            "SEVERITY must be ERROR or WARN, found {}",
            parser.peek_token()
        )))
    }
}

/// Parses one `EXPECT ...` (the word EXPECT already consumed).
fn expectation(parser: &mut Parser) -> Result<Expectation> {
    let first = word(parser, 0);
    let second = word(parser, 1);
    match (first.as_str(), second.as_str()) {
        ("NOT", "NULL") => {
            parser.next_token();
            parser.next_token();
            let columns = column_list(parser, "EXPECT NOT NULL (columns)")?;
            let mut tolerance = 0.0;
            if take(parser, "TOLERANCE") {
                tolerance = number(parser, "TOLERANCE")?;
                if parser.consume_token(&Token::Mod) {
                    tolerance /= 100.0;
                }
                if !(0.0..=1.0).contains(&tolerance) {
                    return Err(syntax("TOLERANCE must be between 0% and 100%"));
                }
            }
            Ok(Expectation::NotNull { columns, tolerance })
        }
        ("UNIQUE", _) => {
            parser.next_token();
            Ok(Expectation::Unique {
                columns: column_list(parser, "EXPECT UNIQUE (columns)")?,
            })
        }
        ("ROW", _) => {
            parser.next_token();
            token(parser, Token::LParen, "EXPECT ROW (expression)")?;
            let expression = parser.parse_expr().map_err(|e| syntax(e.to_string()))?;
            token(parser, Token::RParen, "EXPECT ROW (expression)")?;
            Ok(Expectation::Row {
                expression: expression.to_string(),
            })
        }
        ("ROW_COUNT", _) => {
            parser.next_token();
            expect(parser, "BETWEEN", "EXPECT ROW_COUNT BETWEEN lo AND hi")?;
            let low = number(parser, "ROW_COUNT")?;
            expect(parser, "AND", "EXPECT ROW_COUNT BETWEEN lo AND hi")?;
            let high = number(parser, "ROW_COUNT")?;
            Ok(Expectation::RowCount { low, high })
        }
        ("NO", "PII") => {
            parser.next_token();
            parser.next_token();
            Ok(Expectation::NoPii {
                columns: column_list(parser, "EXPECT NO PII (columns)")?,
            })
        }
        ("FRESHNESS", _) => {
            parser.next_token();
            let columns = column_list(parser, "EXPECT FRESHNESS (column) < INTERVAL '...'")?;
            let [column] = columns.as_slice() else {
                return Err(syntax("EXPECT FRESHNESS takes one timestamp column"));
            };
            token(
                parser,
                Token::Lt,
                "EXPECT FRESHNESS (column) < INTERVAL '...'",
            )?;
            let interval = parser.parse_expr().map_err(|e| syntax(e.to_string()))?;
            Ok(Expectation::Freshness {
                column: column.clone(),
                interval: interval.to_string(),
                max_age_seconds: f64::NAN,
            })
        }
        ("SCHEMA", _) => {
            parser.next_token();
            token(
                parser,
                Token::LParen,
                "EXPECT SCHEMA (column TYPE [NOT NULL], ...)",
            )?;
            let mut columns = vec![];
            loop {
                let column = name(parser, "a column in EXPECT SCHEMA")?;
                let data_type = parser
                    .parse_data_type()
                    .map_err(|e| syntax(format!("EXPECT SCHEMA column {column}: {e}")))?;
                let not_null = take(parser, "NOT");
                if not_null {
                    expect(parser, "NULL", "EXPECT SCHEMA (column TYPE NOT NULL)")?;
                }
                columns.push(SchemaColumn {
                    name: column,
                    type_sql: data_type.to_string(),
                    arrow_type: String::new(),
                    not_null,
                });
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            token(
                parser,
                Token::RParen,
                "EXPECT SCHEMA (column TYPE [NOT NULL], ...)",
            )?;
            Ok(Expectation::Schema { columns })
        }
        _ => {
            use datafusion::sql::sqlparser::ast::Expr;
            let column_of = |e: &Expr| match e {
                Expr::Identifier(id) => Some(if id.quote_style.is_some() {
                    id.value.clone()
                } else {
                    id.value.to_lowercase()
                }),
                _ => None,
            };
            let parsed = parser.parse_expr().map_err(|e| syntax(e.to_string()))?;
            match &parsed {
                Expr::Between {
                    expr,
                    negated: false,
                    low,
                    high,
                } if column_of(expr).is_some() => Ok(Expectation::Between {
                    column: column_of(expr).expect("checked"),
                    low: low.to_string(),
                    high: high.to_string(),
                }),
                Expr::InList {
                    expr,
                    list,
                    negated: false,
                } if column_of(expr).is_some() => Ok(Expectation::In {
                    column: column_of(expr).expect("checked"),
                    values: list.iter().map(ToString::to_string).collect(),
                }),
                e if column_of(e).is_some() && take(parser, "REFERENCES") => {
                    let column = column_of(e).expect("checked");
                    let other_table = name(parser, "a table after REFERENCES")?;
                    let other = column_list(parser, "EXPECT col REFERENCES table (column)")?;
                    let [other_column] = other.as_slice() else {
                        return Err(syntax("REFERENCES takes one column"));
                    };
                    Ok(Expectation::References {
                        column,
                        other_table,
                        other_column: other_column.clone(),
                    })
                }
                e if column_of(e).is_some() && take(parser, "MATCHES") => {
                    let column = column_of(e).expect("checked");
                    match parser.next_token().token {
                        Token::SingleQuotedString(pattern) => {
                            regex_check(&pattern)?;
                            Ok(Expectation::Matches { column, pattern })
                        }
                        other => Err(syntax(format!(
                            "EXPECT {column} MATCHES needs a quoted regular expression, found {other}"
                        ))),
                    }
                }
                other => Err(syntax(format!(
                    "EXPECT {other}: expected NOT NULL (...), UNIQUE (...), col BETWEEN lo AND hi, \
                     col IN (...), col MATCHES 'regex', ROW (...) or ROW_COUNT BETWEEN lo AND hi"
                ))),
            }
        }
    }
}

/// Rejects patterns the regex engine would refuse at run time.
fn regex_check(pattern: &str) -> Result<()> {
    if pattern.contains('\'') {
        return Err(syntax("MATCHES patterns cannot contain a single quote"));
    }
    Ok(())
}

/// Parses a check statement; `None` when `sql` is not one.
/// Parses a check statement from the start of `parser`; `None` when it is none.
pub(crate) fn parse(parser: &mut Parser) -> Result<Option<CheckStatement>> {
    let (w0, w1, w2) = (word(parser, 0), word(parser, 1), word(parser, 2));
    let statement = match (w0.as_str(), w1.as_str(), w2.as_str()) {
        ("CREATE", "CHECK", _) | ("CREATE", "OR", "REPLACE")
            if w1 == "CHECK" || word(parser, 3) == "CHECK" =>
        {
            parser.next_token();
            let or_replace = take(parser, "OR");
            if or_replace {
                expect(parser, "REPLACE", "CREATE OR REPLACE CHECK")?;
            }
            expect(parser, "CHECK", "CREATE CHECK")?;
            let check_name = name(parser, "a check name")?;
            expect(parser, "ON", "CREATE CHECK name ON table")?;
            let table = name(parser, "a table after ON")?;
            let filter = if take(parser, "WHERE") {
                Some(
                    parser
                        .parse_expr()
                        .map_err(|e| syntax(e.to_string()))?
                        .to_string(),
                )
            } else {
                None
            };
            token(parser, Token::LParen, "CREATE CHECK ... (EXPECT ..., ...)")?;
            let mut constraints = vec![];
            loop {
                expect(parser, "EXPECT", "each constraint of a check")?;
                let expect_kind = expectation(parser)?;
                let text = constraint_text(&expect_kind);
                let severity = severity(parser)?;
                constraints.push(Constraint {
                    expect: expect_kind,
                    severity,
                    text,
                });
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            token(parser, Token::RParen, "CREATE CHECK ... (EXPECT ..., ...)")?;
            let severity = severity(parser)?.unwrap_or(Severity::Error);
            let mut on_failure = OnFailure::Fail;
            if take(parser, "ON") {
                expect(parser, "FAILURE", "ON FAILURE")?;
                on_failure = if take(parser, "FAIL") {
                    OnFailure::Fail
                } else if take(parser, "FILTER") {
                    OnFailure::Filter
                } else if take(parser, "QUARANTINE") {
                    expect(parser, "INTO", "ON FAILURE QUARANTINE INTO table")?;
                    OnFailure::Quarantine {
                        table: name(parser, "a quarantine table")?,
                    }
                } else {
                    return Err(syntax(format!(
                        "ON FAILURE must be FAIL, QUARANTINE INTO table or FILTER, found {}",
                        parser.peek_token()
                    )));
                };
            }
            end(parser, "CREATE CHECK")?;
            CheckStatement::Create {
                check: CheckDef {
                    name: check_name,
                    table,
                    filter,
                    constraints,
                    severity,
                    on_failure,
                },
                or_replace,
            }
        }
        ("RUN", "CHECK", _) => {
            parser.next_token();
            parser.next_token();
            let check_name = name(parser, "a check name after RUN CHECK")?;
            end(parser, "RUN CHECK")?;
            CheckStatement::Run { name: check_name }
        }
        ("RUN", "CHECKS", "ON") => {
            for _ in 0..3 {
                parser.next_token();
            }
            let table = name(parser, "a table after RUN CHECKS ON")?;
            end(parser, "RUN CHECKS ON")?;
            CheckStatement::RunOn { table }
        }
        ("SHOW", "CHECKS", _) => {
            parser.next_token();
            parser.next_token();
            end(parser, "SHOW CHECKS")?;
            CheckStatement::Show
        }
        ("DROP", "CHECK", _) => {
            parser.next_token();
            parser.next_token();
            let if_exists = take(parser, "IF");
            if if_exists {
                expect(parser, "EXISTS", "DROP CHECK IF EXISTS")?;
            }
            let check_name = name(parser, "a check name after DROP CHECK")?;
            end(parser, "DROP CHECK")?;
            CheckStatement::Drop {
                name: check_name,
                if_exists,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(statement))
}

fn end(parser: &Parser, statement: &str) -> Result<()> {
    match parser.peek_token().token {
        Token::EOF | Token::SemiColon => Ok(()),
        other => Err(syntax(format!("{statement}: unexpected {other}"))),
    }
}
