//! Scripts into statements: `${param}` substitution and statement splitting
//! that keeps every statement's position in the script.
//!
//! Each [`ScriptStatement`] carries its text padded with the newlines and
//! spaces that precede it in the script, so the positions in DataFusion's
//! parse errors ("at Line: 12, Column: 8") point into the script itself.

use std::collections::HashMap;

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::dialect::{dialect_from_str, GenericDialect};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatement {
    /// The statement as written, without the terminating `;`.
    pub text: String,
    /// 1-based line of the statement's first token in the script.
    pub line: u64,
    /// 1-based column of the statement's first token.
    pub column: u64,
}

impl ScriptStatement {
    /// The statement's text preceded by padding, so parser positions are script positions.
    pub fn positioned_sql(&self) -> String {
        let mut sql = "\n".repeat(self.line.saturating_sub(1) as usize);
        sql.push_str(&" ".repeat(self.column.saturating_sub(1) as usize));
        sql.push_str(&self.text);
        sql
    }
}

/// Replaces every `${name}` with its value; an unknown name is an error that
/// names it, its line, and the flag that sets it. `$${` writes a literal `${`.
pub fn substitute_params(script: &str, params: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let line = script[..script.len() - after.len()].matches('\n').count() + 1;
        let Some(end) = body.find('}') else {
            return Err(DataFusionError::Plan(format!(
                "unterminated parameter reference '${{' at line {line}: write ${{name}}"
            )));
        };
        let name = body[..end].trim();
        match params.get(name) {
            Some(value) => out.push_str(value),
            None => {
                let known = if params.is_empty() {
                    "none were given".to_string()
                } else {
                    let mut names: Vec<_> = params.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    format!("given: {}", names.join(", "))
                };
                return Err(DataFusionError::Plan(format!(
                    "unknown parameter '${{{name}}}' at line {line} ({known}); pass it with --param {name}=VALUE"
                )));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `key=value` command-line parameters.
pub fn parse_param(arg: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("invalid parameter '{arg}': expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid parameter name '{key}': use letters, digits and '_'"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Splits a script at top-level `;` (semicolons inside strings, quoted
/// identifiers and comments do not split). Empty statements are skipped.
pub fn split_statements(script: &str, dialect: &str) -> Result<Vec<ScriptStatement>> {
    let dialect = dialect_from_str(dialect).unwrap_or_else(|| Box::new(GenericDialect {}));
    let tokens = Tokenizer::new(dialect.as_ref(), script)
        .tokenize_with_location()
        .map_err(|e| DataFusionError::Plan(format!("syntax error: {e}")))?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(script.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> usize {
        let start = line_starts[(line as usize).saturating_sub(1).min(line_starts.len() - 1)];
        script[start..]
            .char_indices()
            .nth(column.saturating_sub(1) as usize)
            .map(|(i, _)| start + i)
            .unwrap_or(script.len())
    };

    let mut statements = Vec::new();
    let mut current: Option<((u64, u64), (u64, u64))> = None;
    let mut finish = |current: Option<((u64, u64), (u64, u64))>| {
        if let Some((start, end)) = current {
            statements.push(ScriptStatement {
                text: script[offset(start.0, start.1)..offset(end.0, end.1)].to_string(),
                line: start.0,
                column: start.1,
            });
        }
    };
    for token in &tokens {
        let (start, end) = (token.span.start, token.span.end);
        match &token.token {
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon => finish(current.take()),
            _ => {
                let first = current.map_or((start.line, start.column), |c| c.0);
                current = Some((first, (end.line, end.column)));
            }
        }
    }
    finish(current);
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<ScriptStatement> {
        split_statements(s, "generic").unwrap()
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let script = "-- header; comment\nSELECT 'a;b' AS x;\n\n  /* c; */ SELECT \"q;\" FROM t -- tail;\n;\n;SELECT 3";
        let statements = split(script);
        assert_eq!(statements.len(), 3, "{statements:?}");
        assert_eq!(statements[0].text, "SELECT 'a;b' AS x");
        assert_eq!((statements[0].line, statements[0].column), (2, 1));
        assert_eq!(statements[1].text, "SELECT \"q;\" FROM t");
        assert_eq!((statements[1].line, statements[1].column), (4, 12));
        assert_eq!(statements[2].text, "SELECT 3");
        assert_eq!(statements[2].line, 6);
    }

    #[test]
    fn positioned_sql_keeps_script_positions() {
        let statements = split("SELECT 1;\n\n   SELECT 2");
        assert_eq!(statements[1].positioned_sql(), "\n\n   SELECT 2");
    }

    #[test]
    fn multibyte_text_is_sliced_on_char_boundaries() {
        let statements = split("SELECT 'héllo'; SELECT 'ü'");
        assert_eq!(statements[0].text, "SELECT 'héllo'");
        assert_eq!(statements[1].text, "SELECT 'ü'");
    }

    #[test]
    fn comment_only_script_has_no_statements() {
        assert!(split("-- nothing\n/* here */\n;;").is_empty());
    }

    #[test]
    fn unterminated_string_is_a_syntax_error() {
        let err = split_statements("SELECT 'abc", "generic").unwrap_err();
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    #[test]
    fn params_substitute_and_unknown_names_fail_with_line() {
        let params = HashMap::from([("day".to_string(), "2026-11-01".to_string())]);
        assert_eq!(
            substitute_params("SELECT '${day}', '$${day}', $1", &params).unwrap(),
            "SELECT '2026-11-01', '${day}', $1"
        );
        let err = substitute_params("SELECT 1;\nSELECT ${nope}", &params).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'${nope}' at line 2") && msg.contains("--param nope=VALUE"),
            "{msg}"
        );
    }

    #[test]
    fn param_args_parse() {
        assert_eq!(
            parse_param("a=b=c").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("bad name=1").is_err());
    }
}
