//! The token helpers every Kiln grammar uses: words, identifiers, syntax errors.

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

/// The error of a Kiln statement that does not parse.
pub(crate) fn syntax(message: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("syntax error: {message}"))
}

pub(crate) fn next_word_is(parser: &Parser, word: &str) -> bool {
    matches!(&parser.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

pub(crate) fn take_word(parser: &mut Parser, word: &str) -> bool {
    if next_word_is(parser, word) {
        parser.next_token();
        true
    } else {
        false
    }
}

pub(crate) fn expect_word(parser: &mut Parser, word: &str, context: &str) -> Result<()> {
    if take_word(parser, word) {
        Ok(())
    } else {
        Err(syntax(format!(
            "{context}: expected {word}, found {}",
            parser.peek_token()
        )))
    }
}

pub(crate) fn ident(parser: &mut Parser, what: &str) -> Result<String> {
    let id = parser
        .parse_identifier()
        .map_err(|e| syntax(format!("expected {what}: {e}")))?;
    Ok(if id.quote_style.is_some() {
        id.value
    } else {
        id.value.to_lowercase()
    })
}

pub(crate) fn word(parser: &Parser, n: usize) -> String {
    match &parser.peek_nth_token(n).token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    }
}

pub(crate) fn token(parser: &mut Parser, t: Token, context: &str) -> Result<()> {
    parser
        .expect_token(&t)
        .map(|_| ())
        .map_err(|e| syntax(format!("{context}: {e}")))
}
