//! Query rewrites applied before DataFusion plans a statement: the fitted
//! TRANSFORM functions as window aggregates, `predict()` calls on models
//! trained with TRANSFORM, and `(PREDICT MODEL m AS query)` subqueries.

use std::collections::HashMap;

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::Token;

use kiln_ml::Task;

use crate::catalog::quote::quote_ident as quote;
use crate::catalog::registry::{ModelCard, ModelRegistry};
use crate::catalog::transform::{bucketize_sql, polynomial_sql};
use crate::parse::ml::{self, MlStatement};
use crate::parse::transform::{spec, unnamed_args, TransformKind};
use crate::parse::words::syntax;

/// The fitted functions in an ordinary query: each becomes window
/// aggregates over the query's rows (`standard_scale(x)` is
/// `(x - avg(x) OVER ()) / stddev_pop(x) OVER ()`), as BigQuery's
/// `ML.STANDARD_SCALER(x) OVER ()` is. Functions whose output width depends
/// on the data (`one_hot`, `quantile_bucketize`, `tfidf`) exist only in
/// TRANSFORM. Returns whether anything changed.
pub fn rewrite_fitted_calls(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
) -> Result<bool> {
    use datafusion::sql::sqlparser::ast::visit_expressions_mut;
    use std::ops::ControlFlow;
    let mut changed = false;
    let flow = visit_expressions_mut(statement, |expr| {
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        if function.over.is_some() {
            return ControlFlow::Continue(());
        }
        let name = function.name.to_string().to_lowercase();
        let args = unnamed_args(function);
        let Some(x) = args.first() else {
            return ControlFlow::Continue(());
        };
        let d = format!("CAST({x} AS DOUBLE)");
        let all = "OVER ()";
        let sql = match name.as_str() {
            "standard_scale" => format!(
                "(({d} - avg({d}) {all}) / coalesce(nullif(stddev_pop({d}) {all}, 0), 1))"
            ),
            "min_max_scale" => format!(
                "(({d} - min({d}) {all}) / coalesce(nullif(max({d}) {all} - min({d}) {all}, 0), 1))"
            ),
            "robust_scale" => format!(
                "(({d} - median({d}) {all}) / coalesce(nullif(approx_percentile_cont({d}, 0.75) {all} \
                 - approx_percentile_cont({d}, 0.25) {all}, 0), 1))"
            ),
            "impute" => match args.get(1).map(|a| a.to_string().to_lowercase()) {
                None => format!("coalesce({d}, avg({d}) {all})"),
                Some(w) if w == "'mean'" => format!("coalesce({d}, avg({d}) {all})"),
                Some(w) if w == "'median'" => format!("coalesce({d}, median({d}) {all})"),
                Some(w) if w == "'most_frequent'" => {
                    return ControlFlow::Break(DataFusionError::NotImplemented(
                        "impute(x, 'most_frequent') outside TRANSFORM is not supported yet; \
                         use it in TRANSFORM (...) or impute with 'mean', 'median' or a value"
                            .to_string(),
                    ))
                }
                Some(_) => format!("coalesce({d}, CAST({} AS DOUBLE))", args[1]),
            },
            "label_encode" => format!(
                "CASE WHEN {x} IS NULL THEN NULL ELSE CAST(dense_rank() OVER (ORDER BY CAST({x} AS VARCHAR)) - 1 AS DOUBLE) END"
            ),
            "polynomial" | "bucketize" => {
                let Ok(spec) = spec(expr, String::new()) else {
                    return ControlFlow::Continue(());
                };
                match spec.kind {
                    TransformKind::Polynomial { degree, .. } => polynomial_sql(&d, degree),
                    TransformKind::Bucketize { bounds, .. } => bucketize_sql(&d, &bounds),
                    _ => return ControlFlow::Continue(()),
                }
            }
            "one_hot" | "quantile_bucketize" => {
                return ControlFlow::Break(DataFusionError::NotImplemented(format!(
                    "{name}(...) works inside TRANSFORM (...) of TRAIN MODEL only: its output width \
                     comes from the training data; in a query use one_hot_index(hash_bucket(x, n), n) \
                     or bucketize(x, [bounds])"
                )))
            }
            _ => return ControlFlow::Continue(()),
        };
        match datafusion::sql::sqlparser::parser::Parser::new(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
        )
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_expr())
        {
            Ok(rewritten) => {
                *expr = rewritten;
                changed = true;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(DataFusionError::Internal(format!(
                "rewriting {name}(...): {e}"
            ))),
        }
    });
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(changed),
    }
}
/// `SELECT [q.*,] predict(...) AS prediction [, predict_proba(...) AS probability] [, extra...]
/// FROM (query) q` for the version `card` describes.
pub(crate) fn prediction_query(
    card: &ModelCard,
    query: &str,
    keep_input: bool,
    extra: &[String],
) -> String {
    let reference = format!("{}@{}", card.name, card.version);
    let args: Vec<String> = card
        .features
        .iter()
        .map(|f| {
            match card.transform.iter().find(|t| t.name == f.name) {
                // The fitted transform, over the query's raw columns.
                Some(t) => format!("({})", t.sql),
                None => format!("q.{}", quote(&f.name)),
            }
        })
        .collect();
    let args = args.join(", ");
    let mut select: Vec<String> = if keep_input {
        vec!["q.*".to_string()]
    } else {
        vec![]
    };
    select.push(format!("predict('{reference}', {args}) AS prediction"));
    if matches!(
        card.task,
        Task::BinaryClassification | Task::MulticlassClassification { .. }
    ) {
        select.push(format!(
            "predict_proba('{reference}', {args}) AS probability"
        ));
    }
    select.extend(extra.iter().cloned());
    format!("SELECT {} FROM ({query}) q", select.join(", "))
}

/// `sql` with its `(PREDICT MODEL ...)` subqueries expanded, and each
/// expanded model version with the query it scores (whose columns the
/// caller checks against the model).
pub(crate) struct ExpandedPredictions {
    pub sql: String,
    pub scored: Vec<(ModelCard, String)>,
}

/// Replaces every parenthesized `(PREDICT MODEL m [VERSION n] AS query)`
/// in `sql` with its prediction query, so predictions can feed
/// `CREATE TABLE ... AS`, `INSERT`, joins and CTEs. `None` when there is none.
pub(crate) fn expand_predict_subqueries(
    registry: &ModelRegistry,
    sql: &str,
) -> Result<Option<ExpandedPredictions>> {
    if !sql.to_ascii_uppercase().contains("PREDICT") {
        return Ok(None);
    }
    let Some(tokens) = tokens(sql) else {
        return Ok(None);
    };
    let is_word = |t: Option<&Token>, w: &str| matches!(t, Some(Token::Word(word)) if word.value.eq_ignore_ascii_case(w));
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut scored = vec![];
    while i < tokens.len() {
        let pos = significant.iter().position(|&s| s == i);
        let next = |k: usize| {
            pos.and_then(|p| significant.get(p + k))
                .map(|&s| &tokens[s])
        };
        if tokens[i] == Token::LParen && is_word(next(1), "PREDICT") && is_word(next(2), "MODEL") {
            let mut depth = 0usize;
            let mut end = None;
            for (j, token) in tokens.iter().enumerate().skip(i) {
                match token {
                    Token::LParen => depth += 1,
                    Token::RParen => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return Err(syntax("unbalanced parentheses around PREDICT MODEL"));
            };
            let inner: String = tokens[i + 1..end].iter().map(|t| t.to_string()).collect();
            let parsed = match datafusion::sql::sqlparser::parser::Parser::new(&GenericDialect {})
                .try_with_sql(&inner)
            {
                Ok(mut parser) => ml::parse(&mut parser)?,
                Err(e) => return Err(syntax(e)),
            };
            let Some(MlStatement::Predict {
                name,
                version,
                query,
            }) = parsed
            else {
                return Err(syntax("expected (PREDICT MODEL name [VERSION n] AS query)"));
            };
            let card = registry.card_of(&name, version)?;
            out.push('(');
            out.push_str(&prediction_query(&card, &query, true, &[]));
            out.push(')');
            scored.push((card, query));
            i = end + 1;
            continue;
        }
        out.push_str(&tokens[i].to_string());
        i += 1;
    }
    Ok((!scored.is_empty()).then_some(ExpandedPredictions { sql: out, scored }))
}

/// `sql` as tokens (whitespace included, so they print back to `sql`).
fn tokens(sql: &str) -> Option<Vec<Token>> {
    datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .ok()
}

/// The raw columns a model trained with TRANSFORM reads, in order: each
/// feature's transform inputs, or the feature itself.
pub(crate) fn raw_inputs(card: &ModelCard) -> Vec<String> {
    let mut raw: Vec<String> = vec![];
    for feature in &card.features {
        let columns: Vec<String> = match card.transform.iter().find(|t| t.name == feature.name) {
            Some(t) => t.input.iter().chain(&t.also_consumes).cloned().collect(),
            None => vec![feature.name.clone()],
        };
        for column in columns {
            if !raw.contains(&column) {
                raw.push(column);
            }
        }
    }
    raw
}

/// `sql` (a fitted transform) with each reference to a raw column replaced by `(argument)`.
fn substitute_columns(sql: &str, arguments: &HashMap<String, String>) -> String {
    let Some(tokens) = tokens(sql) else {
        return sql.to_string();
    };
    let mut out = String::with_capacity(sql.len());
    for (i, token) in tokens.iter().enumerate() {
        let next = tokens[i + 1..]
            .iter()
            .find(|t| !matches!(t, Token::Whitespace(_)));
        let previous = tokens[..i]
            .iter()
            .rev()
            .find(|t| !matches!(t, Token::Whitespace(_)));
        let replacement = match token {
            Token::Word(w) if next != Some(&Token::LParen) && previous != Some(&Token::Period) => {
                let name = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_lowercase()
                };
                arguments.get(&name).map(|a| format!("({a})"))
            }
            _ => None,
        };
        match replacement {
            Some(r) => out.push_str(&r),
            None => out.push_str(&token.to_string()),
        }
    }
    out
}

/// Rewrites `predict('m', raw...)` / `predict_proba(...)` calls on models
/// trained with TRANSFORM so they pass the fitted transforms of the
/// model's raw input columns, pinned to the version resolved now. `None`
/// when nothing changed.
pub(crate) fn rewrite_predict_calls(registry: &ModelRegistry, sql: &str) -> Result<Option<String>> {
    if !sql.to_ascii_lowercase().contains("predict") {
        return Ok(None);
    }
    let Some(tokens) = tokens(sql) else {
        return Ok(None);
    };
    let significant =
        |from: usize| (from..tokens.len()).find(|&j| !matches!(tokens[j], Token::Whitespace(_)));
    let mut out = String::with_capacity(sql.len());
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        let function = match &tokens[i] {
            Token::Word(w)
                if w.quote_style.is_none()
                    && (w.value.eq_ignore_ascii_case("predict")
                        || w.value.eq_ignore_ascii_case("predict_proba")) =>
            {
                Some(w.value.to_lowercase())
            }
            _ => None,
        };
        let open = function.as_ref().and_then(|_| significant(i + 1));
        let reference = open
            .filter(|&o| tokens[o] == Token::LParen)
            .and_then(|o| significant(o + 1))
            .and_then(|r| match &tokens[r] {
                Token::SingleQuotedString(s) => Some((r, s.clone())),
                _ => None,
            });
        let (Some(function), Some(open), Some((reference_at, reference))) =
            (function, open, reference)
        else {
            out.push_str(&tokens[i].to_string());
            i += 1;
            continue;
        };
        let (name, version) = match reference.split_once('@') {
            Some((n, v)) => (n.to_string(), v.parse::<u64>().ok()),
            None => (reference.clone(), None),
        };
        let card = match registry.card_of(&name, version) {
            Ok(card) if !card.transform.is_empty() => card,
            // Unknown models and models without TRANSFORM: the UDF reports.
            _ => {
                out.push_str(&tokens[i].to_string());
                i += 1;
                continue;
            }
        };
        let mut depth = 0usize;
        let mut arguments: Vec<String> = vec![];
        let mut current = String::new();
        let mut close = None;
        for (j, token) in tokens.iter().enumerate().skip(open) {
            match token {
                Token::LParen => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(j);
                        break;
                    }
                }
                Token::Comma if depth == 1 => {
                    arguments.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            if j > reference_at {
                current.push_str(&token.to_string());
            }
        }
        arguments.push(current);
        let Some(close) = close else {
            return Err(syntax(format!("unbalanced parentheses in {function}(...)")));
        };
        let raw = raw_inputs(&card);
        let given: Vec<String> = arguments
            .iter()
            .skip(1)
            .map(|a| a.trim().to_string())
            .collect();
        if given.len() != raw.len() {
            return Err(DataFusionError::Plan(format!(
                    "{function}('{reference}', ...): model '{}' v{} was trained with TRANSFORM (...) and \
                     takes its raw input column(s) ({}), got {} argument(s); the fitted transforms are applied for you",
                    card.name,
                    card.version,
                    raw.join(", "),
                    given.len()
                )));
        }
        let by_column: HashMap<String, String> = raw.iter().cloned().zip(given).collect();
        let features: Vec<String> = card
            .features
            .iter()
            .map(|f| match card.transform.iter().find(|t| t.name == f.name) {
                Some(t) => format!("({})", substitute_columns(&t.sql, &by_column)),
                None => format!("({})", by_column[&f.name]),
            })
            .collect();
        out.push_str(&format!(
            "{function}('{}@{}', {})",
            card.name,
            card.version,
            features.join(", ")
        ));
        changed = true;
        i = close + 1;
    }
    Ok(changed.then_some(out))
}
