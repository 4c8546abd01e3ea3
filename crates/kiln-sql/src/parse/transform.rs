//! The grammar of one `expr AS name` of `TRAIN MODEL ... TRANSFORM (...)`:
//! which transform it is and its arguments, before anything is fitted.

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};

use crate::functions::features::is_feature_function;

/// One `expr AS name` of a TRANSFORM clause, before fitting.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformSpec {
    pub name: String,
    pub kind: TransformKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransformKind {
    StandardScale {
        column: String,
    },
    MinMaxScale {
        column: String,
    },
    /// `(x - median) / IQR`: scaling that outliers do not dominate.
    RobustScale {
        column: String,
    },
    /// Buckets at the training data's n-quantiles.
    QuantileBucketize {
        column: String,
        buckets: usize,
    },
    /// `hash_bucket(x, n)` / `feature_cross(a, b, n)` as a one-hot vector of width n.
    Hashed {
        columns: Vec<String>,
        buckets: usize,
    },
    /// `tfidf(text, n)`: hashed term frequencies weighted by the training
    /// rows' inverse document frequencies, L2-normalized.
    Tfidf {
        column: String,
        buckets: usize,
    },
    /// A stateless feature function (`hashed_tf`, `day_of_week`, ...) whose
    /// column arguments it consumes.
    Stateless {
        expression: String,
        columns: Vec<String>,
    },
    Impute {
        column: String,
        with: ImputeWith,
    },
    OneHot {
        column: String,
        max_categories: usize,
    },
    /// Category index in sorted order; unseen values and NULL get the next index.
    LabelEncode {
        column: String,
    },
    /// `[x, x², …, x^degree]` as a vector.
    Polynomial {
        column: String,
        degree: usize,
    },
    Bucketize {
        column: String,
        bounds: Vec<f64>,
    },
    /// Any other expression, applied as written.
    Sql {
        expression: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImputeWith {
    Mean,
    Median,
    MostFrequent,
    Value(String),
}

fn syntax(message: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("TRANSFORM: {message}"))
}

pub(crate) fn column_arg(function: &str, args: &[Expr]) -> Result<String> {
    match args.first() {
        Some(Expr::Identifier(id)) => Ok(if id.quote_style.is_some() {
            id.value.clone()
        } else {
            id.value.to_lowercase()
        }),
        _ => Err(syntax(format!(
            "{function}(...) takes a column as its first argument"
        ))),
    }
}

/// A function call's positional arguments.
pub(crate) fn unnamed_args(function: &datafusion::sql::sqlparser::ast::Function) -> Vec<Expr> {
    match &function.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// A whole-number argument such as the bucket count `n`.
pub(crate) fn count_arg(
    function: &str,
    arg: Option<&Expr>,
    example: &str,
    min: usize,
    max: usize,
) -> Result<usize> {
    arg.map(ToString::to_string)
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            syntax(format!(
                "{function} needs a whole number from {min} to {max} as its last argument, e.g. {example}"
            ))
        })
}

/// Classifies one `expr AS name` of a TRANSFORM clause.
pub fn spec(expr: &Expr, name: String) -> Result<TransformSpec> {
    let Expr::Function(function) = expr else {
        return Ok(TransformSpec {
            name,
            kind: TransformKind::Sql {
                expression: expr.to_string(),
            },
        });
    };
    let function_name = function.name.to_string().to_lowercase();
    let args = unnamed_args(function);
    let kind = match function_name.as_str() {
        "standard_scale" => TransformKind::StandardScale {
            column: column_arg(&function_name, &args)?,
        },
        "min_max_scale" => TransformKind::MinMaxScale {
            column: column_arg(&function_name, &args)?,
        },
        "impute" => {
            let column = column_arg(&function_name, &args)?;
            let with = match args.get(1) {
                Some(Expr::Value(v)) => match &v.value {
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("mean") => {
                        ImputeWith::Mean
                    }
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("median") => {
                        ImputeWith::Median
                    }
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("most_frequent") => {
                        ImputeWith::MostFrequent
                    }
                    other => ImputeWith::Value(other.to_string()),
                },
                Some(other) => ImputeWith::Value(other.to_string()),
                None => ImputeWith::Mean,
            };
            TransformKind::Impute { column, with }
        }
        "one_hot" => {
            let column = column_arg(&function_name, &args)?;
            let max_categories = match args.get(1) {
                Some(Expr::Value(v)) => match &v.value {
                    Value::Number(n, _) => {
                        n.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                            syntax("one_hot's max_categories must be a positive whole number")
                        })?
                    }
                    _ => return Err(syntax("one_hot's max_categories must be a number")),
                },
                None => 20,
                Some(_) => return Err(syntax("one_hot's max_categories must be a number")),
            };
            TransformKind::OneHot {
                column,
                max_categories,
            }
        }
        "robust_scale" => TransformKind::RobustScale {
            column: column_arg(&function_name, &args)?,
        },
        "quantile_bucketize" => TransformKind::QuantileBucketize {
            column: column_arg(&function_name, &args)?,
            buckets: count_arg(
                &function_name,
                args.get(1),
                "quantile_bucketize(x, 4)",
                2,
                100,
            )?,
        },
        "hash_bucket" => TransformKind::Hashed {
            columns: vec![column_arg(&function_name, &args)?],
            buckets: count_arg(&function_name, args.get(1), "hash_bucket(x, 100)", 1, 65536)?,
        },
        "feature_cross" => {
            let second = column_arg(&function_name, &args[1.min(args.len())..])?;
            TransformKind::Hashed {
                columns: vec![column_arg(&function_name, &args)?, second],
                buckets: count_arg(
                    &function_name,
                    args.get(2),
                    "feature_cross(a, b, 100)",
                    1,
                    65536,
                )?,
            }
        }
        "tfidf" => TransformKind::Tfidf {
            column: column_arg(&function_name, &args)?,
            buckets: count_arg(&function_name, args.get(1), "tfidf(text, 1000)", 1, 65536)?,
        },
        name if is_feature_function(name) => TransformKind::Stateless {
            expression: expr.to_string(),
            columns: args
                .iter()
                .filter_map(|a| match a {
                    Expr::Identifier(id) => Some(if id.quote_style.is_some() {
                        id.value.clone()
                    } else {
                        id.value.to_lowercase()
                    }),
                    _ => None,
                })
                .collect(),
        },
        "label_encode" => TransformKind::LabelEncode {
            column: column_arg(&function_name, &args)?,
        },
        "polynomial" => {
            let column = column_arg(&function_name, &args)?;
            let degree = match args.get(1).map(ToString::to_string) {
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|d| (1..=10).contains(d))
                    .ok_or_else(|| {
                        syntax("polynomial's degree must be a whole number from 1 to 10")
                    })?,
                None => 2,
            };
            TransformKind::Polynomial { column, degree }
        }
        "bucketize" => {
            let column = column_arg(&function_name, &args)?;
            let bounds = match args.get(1) {
                Some(Expr::Array(array)) => array
                    .elem
                    .iter()
                    .map(|e| e.to_string().parse::<f64>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        syntax("bucketize bounds must be numbers, e.g. bucketize(x, [0, 10, 100])")
                    })?,
                _ => {
                    return Err(syntax(
                        "bucketize needs bounds, e.g. bucketize(x, [0, 10, 100])",
                    ))
                }
            };
            if bounds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(syntax("bucketize bounds must increase"));
            }
            TransformKind::Bucketize { column, bounds }
        }
        _ => TransformKind::Sql {
            expression: expr.to_string(),
        },
    };
    Ok(TransformSpec { name, kind })
}
