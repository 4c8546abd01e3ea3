//! The grammar of `INGEST INTO table FROM 'dir/' FORMAT CSV|JSON|PARQUET [OPTIONS (...)]`.

use datafusion::error::Result;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::parse::words::{expect_word, ident as name, syntax, take_word};

/// File formats INGEST reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFormat {
    Csv,
    Json,
    Parquet,
}

impl IngestFormat {
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            IngestFormat::Csv => &["csv", "tsv"],
            IngestFormat::Json => &["json", "jsonl", "ndjson"],
            IngestFormat::Parquet => &["parquet"],
        }
    }
}

/// A parsed `INGEST INTO` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestStatement {
    pub table: String,
    pub location: String,
    pub format: IngestFormat,
    pub has_header: bool,
    pub delimiter: u8,
}

/// Parses `INGEST INTO ...` from the start of `parser`; `None` when it is another statement.
pub(crate) fn parse(parser: &mut Parser) -> Result<Option<IngestStatement>> {
    if !take_word(parser, "INGEST") {
        return Ok(None);
    }
    expect_word(parser, "INTO", "INGEST INTO table FROM 'dir/' FORMAT CSV")?;
    let table = name(parser, "a table after INGEST INTO")?;
    expect_word(parser, "FROM", "INGEST INTO table FROM 'dir/'")?;
    let location = parser
        .parse_literal_string()
        .map_err(|e| syntax(format!("INGEST INTO {table} FROM 'dir/': {e}")))?;
    expect_word(
        parser,
        "FORMAT",
        "INGEST INTO table FROM 'dir/' FORMAT CSV|JSON|PARQUET",
    )?;
    let format = match name(parser, "CSV, JSON or PARQUET after FORMAT")?
        .to_ascii_uppercase()
        .as_str()
    {
        "CSV" => IngestFormat::Csv,
        "JSON" | "NDJSON" => IngestFormat::Json,
        "PARQUET" => IngestFormat::Parquet,
        other => {
            return Err(syntax(format!(
                "INGEST ... FORMAT {other}: the formats are CSV, JSON (one object per line) and PARQUET"
            )))
        }
    };
    let mut statement = IngestStatement {
        table,
        location,
        format,
        has_header: true,
        delimiter: b',',
    };
    if take_word(parser, "OPTIONS") {
        parser
            .expect_token(&Token::LParen)
            .map_err(|e| syntax(format!("INGEST ... OPTIONS (key = value, ...): {e}")))?;
        loop {
            let key = name(parser, "an option name")?;
            parser
                .expect_token(&Token::Eq)
                .map_err(|e| syntax(format!("INGEST option {key}: {e}")))?;
            let value = parser
                .parse_value()
                .map_err(|e| syntax(format!("INGEST option {key}: {e}")))?
                .value;
            let text = value
                .clone()
                .into_string()
                .unwrap_or_else(|| value.to_string());
            match (key.as_str(), format) {
                ("has_header", IngestFormat::Csv) => {
                    statement.has_header = match text.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(syntax(format!("INGEST option has_header must be true or false, not {text}"))),
                    }
                }
                ("delimiter", IngestFormat::Csv) if text.len() == 1 => {
                    statement.delimiter = text.as_bytes()[0]
                }
                ("delimiter", IngestFormat::Csv) => {
                    return Err(syntax(format!(
                        "INGEST option delimiter must be one character, not '{text}'"
                    )))
                }
                (other, _) => {
                    return Err(syntax(format!(
                        "unknown INGEST option '{other}' for this format; CSV takes has_header and delimiter, JSON and PARQUET take none"
                    )))
                }
            }
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser
            .expect_token(&Token::RParen)
            .map_err(|e| syntax(format!("INGEST ... OPTIONS (...): {e}")))?;
    }
    let _ = parser.consume_token(&Token::SemiColon);
    if parser.peek_token().token != Token::EOF {
        return Err(syntax(format!(
            "unexpected {} after INGEST INTO {} ...",
            parser.peek_token(),
            statement.table
        )));
    }
    Ok(Some(statement))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_statement, KilnStatement};

    fn parse(sql: &str) -> Result<Option<IngestStatement>> {
        Ok(match parse_statement(sql)? {
            KilnStatement::Ingest(s) => Some(s),
            _ => None,
        })
    }

    #[test]
    fn statements_parse_and_bad_ones_name_the_fix() {
        let s = parse("INGEST INTO events FROM 'landing/' FORMAT CSV OPTIONS (has_header = false, delimiter = ';')")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                s.table.as_str(),
                s.location.as_str(),
                s.format,
                s.has_header,
                s.delimiter
            ),
            ("events", "landing/", IngestFormat::Csv, false, b';')
        );
        assert!(parse("SELECT 1").unwrap().is_none());
        let err = parse("INGEST INTO t FROM 'x' FORMAT CSV OPTIONS (delimiter = ';;')")
            .unwrap_err()
            .to_string();
        assert!(err.contains("one character"), "{err}");
        let err = parse("INGEST INTO t FROM 'x' FORMAT JSON OPTIONS (has_header = true)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown INGEST option 'has_header'"), "{err}");
        let err = parse("INGEST INTO t 'x'").unwrap_err().to_string();
        assert!(err.contains("expected FROM"), "{err}");
    }
}
