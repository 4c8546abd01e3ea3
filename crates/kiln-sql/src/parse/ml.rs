//! The grammar of the ML statements: `TRAIN MODEL`, `EVALUATE MODEL`,
//! `PREDICT MODEL`, `SHOW MODELS`, `DESCRIBE MODEL`, `DROP MODEL`.

use datafusion::error::Result;
use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator, Value};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use kiln_ml::options::OptionValue;

use crate::parse::transform::{self, TransformSpec};
use crate::parse::words::{expect_word, ident, syntax, take_word};

/// A parsed ML statement.
#[derive(Debug, Clone, PartialEq)]
pub enum MlStatement {
    Train(TrainStatement),
    Evaluate {
        name: String,
        version: Option<u64>,
        query: String,
    },
    Predict {
        name: String,
        version: Option<u64>,
        query: String,
    },
    ShowModels,
    DescribeModel {
        name: String,
        version: Option<u64>,
    },
    DropModel {
        name: String,
        if_exists: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainStatement {
    pub name: String,
    pub if_not_exists: bool,
    pub or_replace: bool,
    pub model_type: String,
    pub options: Vec<(String, OptionValue)>,
    pub label: Option<String>,
    pub features: Option<Vec<String>>,
    /// `TRANSFORM (expr AS name, ...)`, fitted during training.
    pub transform: Vec<TransformSpec>,
    pub query: String,
}

fn version(parser: &mut Parser) -> Result<Option<u64>> {
    if !take_word(parser, "VERSION") {
        return Ok(None);
    }
    match parser.next_token().token {
        Token::Number(n, _) => n
            .parse()
            .map(Some)
            .map_err(|_| syntax(format!("VERSION needs a whole number, found {n}"))),
        other => Err(syntax(format!("VERSION needs a number, found {other}"))),
    }
}

fn rest_as_query(parser: &mut Parser, statement: &str) -> Result<String> {
    expect_word(parser, "AS", statement)?;
    let query = parser.parse_query().map_err(|e| syntax(e.to_string()))?;
    if parser.peek_token().token != Token::EOF {
        return Err(syntax(format!(
            "{statement}: unexpected {} after the query",
            parser.peek_token()
        )));
    }
    Ok(query.to_string())
}

fn option_value(expr: Expr) -> Result<OptionValue> {
    let number = |s: &str| {
        s.parse::<f64>()
            .map_err(|_| syntax(format!("invalid number {s}")))
    };
    Ok(match expr {
        Expr::Value(v) => match v.value {
            Value::Number(n, _) => OptionValue::Number(number(&n)?),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => OptionValue::Text(s),
            Value::Boolean(b) => OptionValue::Bool(b),
            other => return Err(syntax(format!("unsupported option value {other}"))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match option_value(*expr)? {
            OptionValue::Number(n) => OptionValue::Number(-n),
            other => return Err(syntax(format!("cannot negate {other}"))),
        },
        Expr::Identifier(id) => match id.value.to_ascii_lowercase().as_str() {
            "true" => OptionValue::Bool(true),
            "false" => OptionValue::Bool(false),
            _ => OptionValue::Text(id.value),
        },
        Expr::Array(array) => list(array.elem)?,
        Expr::Tuple(items) => list(items)?,
        Expr::Nested(inner) => list(vec![*inner])?,
        other => return Err(syntax(format!("unsupported option value {other}"))),
    })
}

/// `[1, 2]` is a list of numbers; `[[16, 3], [32, 3]]` a list of such lists.
fn list(items: Vec<Expr>) -> Result<OptionValue> {
    let values = items
        .into_iter()
        .map(option_value)
        .collect::<Result<Vec<_>>>()?;
    if let Some(numbers) = values
        .iter()
        .map(|v| match v {
            OptionValue::Number(n) => Some(*n),
            _ => None,
        })
        .collect::<Option<Vec<f64>>>()
    {
        return Ok(OptionValue::List(numbers));
    }
    values
        .into_iter()
        .map(|v| match v {
            OptionValue::List(inner) => Ok(inner),
            other => Err(syntax(format!(
                "lists hold numbers or lists of numbers only, found {other}"
            ))),
        })
        .collect::<Result<Vec<_>>>()
        .map(OptionValue::Lists)
}

/// Parses one of Kiln's ML statements from the start of `parser`; `None` when it is none.
pub(crate) fn parse(parser: &mut Parser) -> Result<Option<MlStatement>> {
    let first = match &parser.peek_token().token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => return Ok(None),
    };
    let second = match &parser.peek_nth_token(1).token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let statement = match (first.as_str(), second.as_str()) {
        ("TRAIN", "MODEL") => {
            parser.next_token();
            parser.next_token();
            let mut train = TrainStatement {
                name: String::new(),
                if_not_exists: false,
                or_replace: false,
                model_type: String::new(),
                options: vec![],
                label: None,
                features: None,
                transform: vec![],
                query: String::new(),
            };
            if take_word(parser, "IF") {
                expect_word(parser, "NOT", "TRAIN MODEL IF NOT EXISTS")?;
                expect_word(parser, "EXISTS", "TRAIN MODEL IF NOT EXISTS")?;
                train.if_not_exists = true;
            } else if take_word(parser, "OR") {
                expect_word(parser, "REPLACE", "TRAIN MODEL OR REPLACE")?;
                train.or_replace = true;
            }
            train.name = ident(parser, "a model name after TRAIN MODEL")?;
            expect_word(parser, "USING", "TRAIN MODEL name USING model_type")?;
            train.model_type = ident(parser, "a model type after USING")?;
            loop {
                if take_word(parser, "OPTIONS") {
                    parser
                        .expect_token(&Token::LParen)
                        .map_err(|e| syntax(e.to_string()))?;
                    loop {
                        let key = ident(parser, "an option name")?;
                        parser
                            .expect_token(&Token::Eq)
                            .map_err(|e| syntax(format!("option '{key}': {e}")))?;
                        let expr = parser
                            .parse_expr()
                            .map_err(|e| syntax(format!("option '{key}': {e}")))?;
                        train.options.push((key, option_value(expr)?));
                        if !parser.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                    parser
                        .expect_token(&Token::RParen)
                        .map_err(|e| syntax(e.to_string()))?;
                } else if take_word(parser, "TRANSFORM") {
                    parser
                        .expect_token(&Token::LParen)
                        .map_err(|e| syntax(format!("TRANSFORM (expr AS name, ...): {e}")))?;
                    loop {
                        let expr = parser
                            .parse_expr()
                            .map_err(|e| syntax(format!("TRANSFORM: {e}")))?;
                        expect_word(parser, "AS", "TRANSFORM (expr AS name, ...)")?;
                        let name = ident(parser, "a column name after AS")?;
                        train.transform.push(transform::spec(&expr, name)?);
                        if !parser.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                    parser
                        .expect_token(&Token::RParen)
                        .map_err(|e| syntax(format!("TRANSFORM (expr AS name, ...): {e}")))?;
                } else if take_word(parser, "LABEL") {
                    train.label = Some(ident(parser, "a label column after LABEL")?);
                } else if take_word(parser, "FEATURES") {
                    parser
                        .expect_token(&Token::LParen)
                        .map_err(|e| syntax(e.to_string()))?;
                    let mut columns = vec![ident(parser, "a feature column")?];
                    while parser.consume_token(&Token::Comma) {
                        columns.push(ident(parser, "a feature column")?);
                    }
                    parser
                        .expect_token(&Token::RParen)
                        .map_err(|e| syntax(e.to_string()))?;
                    train.features = Some(columns);
                } else {
                    break;
                }
            }
            train.query = rest_as_query(parser, "TRAIN MODEL")?;
            MlStatement::Train(train)
        }
        ("EVALUATE" | "PREDICT", "MODEL") => {
            parser.next_token();
            parser.next_token();
            let name = ident(parser, "a model name")?;
            let version = version(parser)?;
            let query = rest_as_query(parser, &format!("{first} MODEL"))?;
            if first == "EVALUATE" {
                MlStatement::Evaluate {
                    name,
                    version,
                    query,
                }
            } else {
                MlStatement::Predict {
                    name,
                    version,
                    query,
                }
            }
        }
        ("SHOW", "MODELS") => MlStatement::ShowModels,
        ("DESCRIBE", "MODEL") => {
            parser.next_token();
            parser.next_token();
            let name = ident(parser, "a model name")?;
            MlStatement::DescribeModel {
                name,
                version: version(parser)?,
            }
        }
        ("DROP", "MODEL") => {
            parser.next_token();
            parser.next_token();
            let if_exists = if take_word(parser, "IF") {
                expect_word(parser, "EXISTS", "DROP MODEL IF EXISTS")?;
                true
            } else {
                false
            };
            MlStatement::DropModel {
                name: ident(parser, "a model name")?,
                if_exists,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(statement))
}
