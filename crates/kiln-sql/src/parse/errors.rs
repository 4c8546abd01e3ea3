//! Parse errors that point at the fault: syntax errors with their position,
//! and statement text rewritten for the catalog.

use std::path::Path;

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::catalog::lake::resolve_path;

/// Rewrites a parser error as `syntax error: <what>, found: <token> at Line: L, Column: C`.
pub fn syntax_error(e: DataFusionError) -> DataFusionError {
    match e {
        DataFusionError::SQL(err, _) => {
            let message = match *err {
                ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
                ParserError::RecursionLimitExceeded => {
                    "statement nested too deeply (recursion limit exceeded)".to_string()
                }
            };
            DataFusionError::Plan(format!("syntax error: {message}"))
        }
        DataFusionError::Diagnostic(_, inner) | DataFusionError::Context(_, inner) => {
            syntax_error(*inner)
        }
        other => other,
    }
}

/// Parser errors at the end of input say "found: EOF" without a position;
/// give them the position just past the statement's last character.
pub fn syntax_error_at_end(e: DataFusionError, sql: &str) -> DataFusionError {
    match e {
        DataFusionError::Plan(m) if m.ends_with("found: EOF") => {
            let text = sql.trim_end();
            let line = text.lines().count().max(1);
            let column = text.lines().last().map_or(0, |l| l.chars().count()) + 1;
            DataFusionError::Plan(format!(
                "{m} (the statement ended too early) at Line: {line}, Column: {column}"
            ))
        }
        other => other,
    }
}

/// Makes every `LOCATION` of a `CREATE EXTERNAL TABLE` absolute (relative
/// paths are relative to the working directory) and returns the statement's
/// text with the new locations, for the catalog.
pub fn absolute_locations(sql: &str, locations: &mut [String]) -> Result<String> {
    let mut replacements = Vec::new();
    for location in locations.iter_mut() {
        if !location.contains("://") {
            let absolute = resolve_path(Path::new(location.as_str()));
            let mut text = absolute.display().to_string();
            if location.ends_with('/') && !text.ends_with('/') {
                text.push('/');
            }
            replacements.push((location.clone(), text.clone()));
            *location = text;
        }
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| DataFusionError::Plan(format!("syntax error: {e}")))?;
    let mut after_location = false;
    let mut out = String::with_capacity(sql.len());
    for token in tokens {
        let token = match token {
            Token::SingleQuotedString(s) if after_location => {
                let replaced = replacements
                    .iter()
                    .find(|(from, _)| *from == s)
                    .map(|(_, to)| to.clone())
                    .unwrap_or(s);
                Token::SingleQuotedString(replaced)
            }
            other => other,
        };
        match &token {
            Token::Word(w) if w.value.eq_ignore_ascii_case("location") => after_location = true,
            Token::Word(_) => after_location = false,
            _ => {}
        }
        out.push_str(&token.to_string());
    }
    Ok(out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_locations_become_absolute_in_the_stored_ddl() {
        let sql = "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'data/t.csv' OPTIONS ('format.has_header' 'true')";
        let mut locations = vec!["data/t.csv".to_string()];
        let ddl = absolute_locations(sql, &mut locations).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let expected = cwd.join("data/t.csv").display().to_string();
        assert_eq!(locations[0], expected);
        assert!(ddl.contains(&format!("LOCATION '{expected}'")), "{ddl}");
        assert!(ddl.contains("'format.has_header' 'true'"), "{ddl}");
    }
}
