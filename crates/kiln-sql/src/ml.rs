//! Kiln's ML statements: parsing (`TRAIN MODEL`, `EVALUATE MODEL`,
//! `PREDICT MODEL`, `SHOW MODELS`, `DESCRIBE MODEL`, `DROP MODEL`) and the
//! driver that runs training as one Ballista job per round.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt64Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use kiln_ml::metrics::{self, Metrics};
use kiln_ml::options::{ModelType, OptionValue, Solver, TaskChoice};
use kiln_ml::train::{combine, NormalStats, RoundUpdate};
use kiln_ml::{EpochRecord, Model, Task, TrainOptions};

use crate::features::feature_width;
use crate::logical::{RoundMode, RoundSpec, TrainRoundNode};
use crate::parser::quote_ident as quote;
use crate::registry::{validate_model_name, FeatureColumn, ModelCard, ModelRegistry};
use crate::session::{KilnSession, StatementResult};

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
    pub transform: Vec<crate::transform::TransformSpec>,
    pub query: String,
}

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

/// Parses `sql` if it is one of Kiln's ML statements; `None` otherwise.
pub fn parse(sql: &str) -> Result<Option<MlStatement>> {
    let dialect = GenericDialect {};
    let Ok(parser) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(None);
    };
    let mut parser = parser;
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
            if take_word(&mut parser, "IF") {
                expect_word(&mut parser, "NOT", "TRAIN MODEL IF NOT EXISTS")?;
                expect_word(&mut parser, "EXISTS", "TRAIN MODEL IF NOT EXISTS")?;
                train.if_not_exists = true;
            } else if take_word(&mut parser, "OR") {
                expect_word(&mut parser, "REPLACE", "TRAIN MODEL OR REPLACE")?;
                train.or_replace = true;
            }
            train.name = ident(&mut parser, "a model name after TRAIN MODEL")?;
            expect_word(&mut parser, "USING", "TRAIN MODEL name USING model_type")?;
            train.model_type = ident(&mut parser, "a model type after USING")?;
            loop {
                if take_word(&mut parser, "OPTIONS") {
                    parser
                        .expect_token(&Token::LParen)
                        .map_err(|e| syntax(e.to_string()))?;
                    loop {
                        let key = ident(&mut parser, "an option name")?;
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
                } else if take_word(&mut parser, "TRANSFORM") {
                    parser
                        .expect_token(&Token::LParen)
                        .map_err(|e| syntax(format!("TRANSFORM (expr AS name, ...): {e}")))?;
                    loop {
                        let expr = parser
                            .parse_expr()
                            .map_err(|e| syntax(format!("TRANSFORM: {e}")))?;
                        expect_word(&mut parser, "AS", "TRANSFORM (expr AS name, ...)")?;
                        let name = ident(&mut parser, "a column name after AS")?;
                        train.transform.push(crate::transform::spec(&expr, name)?);
                        if !parser.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                    parser
                        .expect_token(&Token::RParen)
                        .map_err(|e| syntax(format!("TRANSFORM (expr AS name, ...): {e}")))?;
                } else if take_word(&mut parser, "LABEL") {
                    train.label = Some(ident(&mut parser, "a label column after LABEL")?);
                } else if take_word(&mut parser, "FEATURES") {
                    parser
                        .expect_token(&Token::LParen)
                        .map_err(|e| syntax(e.to_string()))?;
                    let mut columns = vec![ident(&mut parser, "a feature column")?];
                    while parser.consume_token(&Token::Comma) {
                        columns.push(ident(&mut parser, "a feature column")?);
                    }
                    parser
                        .expect_token(&Token::RParen)
                        .map_err(|e| syntax(e.to_string()))?;
                    train.features = Some(columns);
                } else {
                    break;
                }
            }
            train.query = rest_as_query(&mut parser, "TRAIN MODEL")?;
            MlStatement::Train(train)
        }
        ("EVALUATE" | "PREDICT", "MODEL") => {
            parser.next_token();
            parser.next_token();
            let name = ident(&mut parser, "a model name")?;
            let version = version(&mut parser)?;
            let query = rest_as_query(&mut parser, &format!("{first} MODEL"))?;
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
            let name = ident(&mut parser, "a model name")?;
            MlStatement::DescribeModel {
                name,
                version: version(&mut parser)?,
            }
        }
        ("DROP", "MODEL") => {
            parser.next_token();
            parser.next_token();
            let if_exists = if take_word(&mut parser, "IF") {
                expect_word(&mut parser, "EXISTS", "DROP MODEL IF EXISTS")?;
                true
            } else {
                false
            };
            MlStatement::DropModel {
                name: ident(&mut parser, "a model name")?,
                if_exists,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(statement))
}

/// `SELECT [q.*,] predict(...) AS prediction [, predict_proba(...) AS probability] [, extra...]
/// FROM (query) q` for the version `card` describes.
fn prediction_query(card: &ModelCard, query: &str, keep_input: bool, extra: &[String]) -> String {
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

fn text_rows(schema: Arc<Schema>, columns: Vec<Vec<String>>) -> Result<StatementResult> {
    let arrays = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as Arc<dyn Array>)
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)?;
    Ok(StatementResult::rows(schema, vec![batch]))
}

fn metric_rows(metrics: &Metrics, classes: Option<&[String]>) -> Result<StatementResult> {
    let mut names = vec![];
    let mut values = vec![];
    for (name, value) in &metrics.values {
        names.push(name.clone());
        values.push(*value);
    }
    if let Some(confusion) = &metrics.confusion {
        for (a, row) in confusion.iter().enumerate() {
            for (p, count) in row.iter().enumerate() {
                let label = |i: usize| {
                    classes
                        .and_then(|c| c.get(i))
                        .cloned()
                        .unwrap_or_else(|| i.to_string())
                };
                names.push(format!(
                    "confusion[actual={}, predicted={}]",
                    label(a),
                    label(p)
                ));
                values.push(*count as f64);
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(names)),
            Arc::new(datafusion::arrow::array::Float64Array::from(values)),
        ],
    )?;
    Ok(StatementResult::rows(schema, vec![batch]))
}

impl KilnSession {
    pub fn registry(&self) -> ModelRegistry {
        ModelRegistry::new(self.lake().root())
    }

    pub(crate) async fn execute_ml(&self, statement: MlStatement) -> Result<StatementResult> {
        match statement {
            MlStatement::Train(train) => self.train_model(train).await,
            MlStatement::Predict {
                name,
                version,
                query,
            } => {
                let card = self.model_card(&name, version)?;
                self.check_prediction_columns(&card, &query).await?;
                self.execute_plain(&prediction_query(&card, &query, true, &[]))
                    .await
            }
            MlStatement::Evaluate {
                name,
                version,
                query,
            } => self.evaluate_model(&name, version, &query).await,
            MlStatement::ShowModels => self.show_models(),
            MlStatement::DescribeModel { name, version } => self.describe_model(&name, version),
            MlStatement::DropModel { name, if_exists } => {
                validate_model_name(&name)?;
                if self.registry().drop_model(&name)? {
                    Ok(StatementResult::message(format!("dropped model {name}")))
                } else if if_exists {
                    Ok(StatementResult::message(format!(
                        "model {name} does not exist, skipped"
                    )))
                } else {
                    self.registry()
                        .resolve(&name, None)
                        .map(|_| StatementResult::message(""))
                }
            }
        }
    }

    async fn execute_plain(&self, sql: &str) -> Result<StatementResult> {
        let df = self.context().sql(sql).await?;
        let schema = Arc::clone(df.schema().inner());
        let batches = df.collect().await?;
        Ok(StatementResult::rows(schema, batches))
    }

    fn model_card(&self, name: &str, version: Option<u64>) -> Result<ModelCard> {
        let registry = self.registry();
        let version = registry.resolve(name, version)?;
        registry.card(name, version)
    }

    async fn check_prediction_columns(&self, card: &ModelCard, query: &str) -> Result<()> {
        let plan = self.context().state().create_logical_plan(query).await?;
        let schema = plan.schema();
        let has = |column: &str| schema.fields().iter().any(|q| q.name() == column);
        // A transformed feature needs its input column; other TRANSFORM
        // expressions are checked when the query is planned.
        let missing: Vec<&str> = card
            .features
            .iter()
            .flat_map(|f| match card.transform.iter().find(|t| t.name == f.name) {
                Some(t) => t
                    .input
                    .iter()
                    .chain(&t.also_consumes)
                    .map(String::as_str)
                    .filter(|input| !has(input))
                    .collect::<Vec<_>>(),
                None => (!has(&f.name))
                    .then_some(f.name.as_str())
                    .into_iter()
                    .collect(),
            })
            .collect();
        if !missing.is_empty() {
            return Err(DataFusionError::Plan(format!(
                "model '{}' needs column(s) {} in the query; it expects {}",
                card.name,
                missing.join(", "),
                crate::udf::expected_schema(card)
            )));
        }
        Ok(())
    }

    async fn evaluate_model(
        &self,
        name: &str,
        version: Option<u64>,
        query: &str,
    ) -> Result<StatementResult> {
        let card = self.model_card(name, version)?;
        self.check_prediction_columns(&card, query).await?;
        let label = match (&card.label, card.task) {
            (Some(label), _) => Some(label.clone()),
            (None, Task::Clustering { .. }) => None,
            (None, _) => {
                return Err(DataFusionError::Internal(
                    "supervised model without label".into(),
                ))
            }
        };
        if let Task::Clustering { k } = card.task {
            let (model, _) = self.registry().load(name, card.version)?;
            let features: Vec<String> = card.features.iter().map(|f| quote(&f.name)).collect();
            let batches = self
                .context()
                .sql(&format!("SELECT {} FROM ({query}) q", features.join(", ")))
                .await?
                .collect()
                .await?;
            let mut all = vec![];
            for batch in &batches {
                let names: Vec<String> = card.features.iter().map(|f| f.name.clone()).collect();
                let b = crate::features::to_batch(&names, batch.columns(), None, batch.num_rows())?;
                all.extend(b.features);
            }
            return metric_rows(
                &metrics::clustering(&all, model.dims, &model.centroids, k),
                None,
            );
        }
        let label = label.expect("supervised");
        let label_column = format!("CAST(q.{} AS VARCHAR) AS kiln_label", quote(&label));
        let sql = prediction_query(&card, query, false, &[label_column]);
        let batches = self.context().sql(&sql).await?.collect().await?;
        let classes = card.classes.clone().unwrap_or_default();
        let mut predicted_idx = vec![];
        let mut actual_idx = vec![];
        let mut probabilities: Vec<f32> = vec![];
        let mut predicted_values = vec![];
        let mut actual_values = vec![];
        for batch in &batches {
            let label_col = batch.column_by_name("kiln_label").expect("selected");
            let label_text = label_col.as_string::<i32>();
            let prediction = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
            let prediction = prediction.as_string::<i32>();
            match card.task {
                Task::Regression => {
                    for i in 0..batch.num_rows() {
                        predicted_values
                            .push(prediction.value(i).parse::<f32>().unwrap_or(f32::NAN));
                        actual_values.push(label_text.value(i).parse::<f32>().map_err(|_| {
                            DataFusionError::Execution(format!(
                                "label '{label}' value '{}' is not a number",
                                label_text.value(i)
                            ))
                        })?);
                    }
                }
                _ => {
                    let proba = batch.column_by_name("probability").expect("selected");
                    for i in 0..batch.num_rows() {
                        let class_of =
                            |t: &str| classes.iter().position(|c| c == t).map(|p| p as u32);
                        let actual = class_of(label_text.value(i)).ok_or_else(|| {
                            DataFusionError::Execution(format!(
                                "label value '{}' is not one of the model's classes ({})",
                                label_text.value(i),
                                classes.join(", ")
                            ))
                        })?;
                        actual_idx.push(actual);
                        predicted_idx.push(class_of(prediction.value(i)).unwrap_or(0));
                    }
                    match proba.data_type() {
                        DataType::FixedSizeList(_, _) => {
                            let list = proba.as_fixed_size_list();
                            let values = list.values().as_primitive::<Float64Type>();
                            probabilities.extend(values.values().iter().map(|v| *v as f32));
                        }
                        _ => probabilities.extend(
                            proba
                                .as_primitive::<Float64Type>()
                                .values()
                                .iter()
                                .map(|v| *v as f32),
                        ),
                    }
                }
            }
        }
        let metrics = match card.task {
            Task::Regression => metrics::regression(&predicted_values, &actual_values),
            _ => {
                metrics::classification(&predicted_idx, &actual_idx, &probabilities, classes.len())
            }
        };
        metric_rows(&metrics, Some(&classes))
    }

    fn show_models(&self) -> Result<StatementResult> {
        let registry = self.registry();
        let mut columns = vec![vec![]; 6];
        for name in registry.names() {
            let Some(latest) = registry.latest(&name) else {
                continue;
            };
            let card = registry.card(&name, latest)?;
            columns[0].push(name);
            columns[1].push(latest.to_string());
            columns[2].push(card.model_type.clone());
            columns[3].push(task_name(card.task));
            columns[4].push(card.rows_seen.to_string());
            columns[5].push(card.trained_at.clone());
        }
        let schema = Arc::new(Schema::new(
            [
                "model_name",
                "latest_version",
                "model_type",
                "task",
                "rows_seen",
                "trained_at",
            ]
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
        ));
        text_rows(schema, columns)
    }

    fn describe_model(&self, name: &str, version: Option<u64>) -> Result<StatementResult> {
        let registry = self.registry();
        let v = registry.resolve(name, version)?;
        let card = registry.card(name, v)?;
        let mut rows: Vec<(String, String)> = vec![
            ("name".into(), card.name.clone()),
            ("version".into(), v.to_string()),
            (
                "versions".into(),
                registry
                    .versions(name)
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("model_type".into(), card.model_type.clone()),
            ("task".into(), task_name(card.task)),
            ("features".into(), crate::udf::expected_schema(&card)),
            ("label".into(), card.label.clone().unwrap_or_default()),
            (
                "classes".into(),
                card.classes
                    .clone()
                    .map(|c| c.join(", "))
                    .unwrap_or_default(),
            ),
            (
                "options".into(),
                serde_json::to_string(&card.options).unwrap_or_default(),
            ),
            ("rows_seen".into(), card.rows_seen.to_string()),
            ("epochs".into(), card.epochs.len().to_string()),
            ("duration_ms".into(), card.duration_ms.to_string()),
            ("trained_at".into(), card.trained_at.clone()),
            ("source_query".into(), card.source_query.clone()),
            ("source_tables".into(), card.source_tables.join(", ")),
            (
                "warm_started_from".into(),
                card.warm_started_from
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ),
            ("kiln_version".into(), card.kiln_version.clone()),
            (
                "checks".into(),
                card.checks
                    .iter()
                    .map(|c| format!("{}: {} = {} ({})", c.check, c.constraint, c.value, c.status))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ];
        for record in &card.epochs {
            let mut text = format!("train_loss={:.6}", record.train_loss);
            if let Some(v) = &record.validation {
                for (k, value) in &v.values {
                    text.push_str(&format!(" validation_{k}={value:.6}"));
                }
            }
            rows.push((format!("epoch {}", record.epoch), text));
        }
        if let Some(metrics) = &card.final_metrics {
            for (k, value) in &metrics.values {
                rows.push((format!("metric {k}"), format!("{value}")));
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("property", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, false),
        ]));
        let (keys, values) = rows.into_iter().unzip();
        text_rows(schema, vec![keys, values])
    }

    async fn train_model(&self, mut train: TrainStatement) -> Result<StatementResult> {
        let started = Instant::now();
        validate_model_name(&train.name)?;
        let model_type = ModelType::parse(&train.model_type)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let options = TrainOptions::parse(model_type, &train.options)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        if self.is_embedded() {
            // The executors are this process: refuse before any round runs.
            // On a cluster, each executor opens its own device.
            kiln_ml::device::backend(options.device)
                .map_err(|e| DataFusionError::Plan(format!("TRAIN MODEL {}: {e}", train.name)))?;
        }
        let registry = self.registry();
        let existing = registry.latest(&train.name);
        if let Some(latest) = existing {
            if train.if_not_exists {
                return Ok(StatementResult::message(format!(
                    "model {} already exists (v{latest}), skipped",
                    train.name
                )));
            }
            if !train.or_replace && !options.warm_start {
                return Err(DataFusionError::Plan(format!(
                    "model '{}' already exists (v{latest}); use TRAIN MODEL OR REPLACE {} to train a new version, \
                     or OPTIONS (warm_start = true) to continue from v{latest}",
                    train.name, train.name
                )));
            }
        }

        let state = self.context().state();
        let plan = state.create_logical_plan(&train.query).await?;
        let mut source_tables = vec![];
        plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                source_tables.push(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        source_tables.sort();
        source_tables.dedup();
        // Governance first: an ERROR check failing on a source table refuses training.
        let check_outcomes = self
            .checks_before_training(&train.name, &source_tables)
            .await?;
        // TRANSFORM: fit on the training rows, then train on the transformed query.
        let source_query = train.query.clone();
        let fitted = if train.transform.is_empty() {
            vec![]
        } else {
            let columns: Vec<String> = plan
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            // warm_start continues from a model whose weights fit the previous
            // version's statistics: keep them rather than refitting.
            let previous = match (options.warm_start, existing) {
                (true, Some(latest)) => Some((latest, registry.load(&train.name, latest)?.1)),
                _ => None,
            };
            let fitted = match previous {
                Some((latest, card)) if !card.transform.is_empty() => {
                    let before: Vec<&str> =
                        card.transform.iter().map(|t| t.name.as_str()).collect();
                    let now: Vec<&str> = train.transform.iter().map(|t| t.name.as_str()).collect();
                    if before != now {
                        return Err(DataFusionError::Plan(format!(
                            "warm_start: v{latest} of '{}' was trained with TRANSFORM outputs ({}), \
                             this statement has ({}); keep the same TRANSFORM or use OR REPLACE without warm_start",
                            train.name,
                            before.join(", "),
                            now.join(", ")
                        )));
                    }
                    card.transform
                }
                _ => self.fit_transforms(&train.query, &train.transform).await?,
            };
            train.query = crate::transform::transformed_query(&train.query, &columns, &fitted);
            fitted
        };
        let plan = if fitted.is_empty() {
            plan
        } else {
            state.create_logical_plan(&train.query).await?
        };
        let schema = plan.schema().as_arrow().clone();
        let column_names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        if model_type.is_supervised() && train.label.is_none() {
            return Err(DataFusionError::Plan(format!(
                "{model_type} needs LABEL column (one of: {})",
                column_names.join(", ")
            )));
        }
        if let Some(label) = &train.label {
            if !column_names.contains(label) {
                return Err(DataFusionError::Plan(format!(
                    "LABEL column '{label}' is not a column of the query; its columns are: {}",
                    column_names.join(", ")
                )));
            }
        }
        let features: Vec<String> = match &train.features {
            Some(f) => f.clone(),
            None => column_names
                .iter()
                .filter(|c| Some(*c) != train.label.as_ref())
                .cloned()
                .collect(),
        };
        if features.is_empty() {
            return Err(DataFusionError::Plan(
                "the model needs at least one feature column".into(),
            ));
        }
        let mut feature_columns = vec![];
        for name in &features {
            let field = schema.field_with_name(name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "FEATURES column '{name}' is not a column of the query; its columns are: {}",
                    column_names.join(", ")
                ))
            })?;
            let width = feature_width(name, field.data_type())?;
            feature_columns.push(FeatureColumn {
                name: name.clone(),
                data_type: field.data_type().to_string(),
                width,
            });
        }
        let label_type = train.label.as_ref().map(|l| {
            schema
                .field_with_name(l)
                .expect("checked")
                .data_type()
                .clone()
        });
        let classification = match (model_type, &label_type, options.task) {
            (ModelType::Kmeans, _, _) | (ModelType::LinearRegression, _, _) => false,
            (ModelType::LogisticRegression | ModelType::SoftmaxRegression, _, _) => true,
            (ModelType::Mlp | ModelType::Cnn, _, Some(task)) => task == TaskChoice::Classification,
            (ModelType::Mlp | ModelType::Cnn, Some(t), None) => {
                !t.is_floating() && !matches!(t, DataType::Decimal128(_, _))
            }
            (ModelType::Mlp | ModelType::Cnn, None, None) => false,
        };
        if let (false, Some(t), Some(label)) = (classification, &label_type, &train.label) {
            if !t.is_numeric() {
                return Err(DataFusionError::Plan(format!(
                    "{model_type} predicts numbers but LABEL '{label}' has type {t}; use a numeric label or a classifier"
                )));
            }
        }

        // One distributed pass for counts, NULLs and NaN/Inf of every column.
        let mut checks = vec!["count(*) AS kiln_rows".to_string()];
        let mut checked: Vec<(String, bool)> = vec![];
        for column in features.iter().chain(train.label.iter()) {
            let t = schema.field_with_name(column).expect("checked").data_type();
            checks.push(format!(
                "sum(CASE WHEN {} IS NULL THEN 1 ELSE 0 END)",
                quote(column)
            ));
            let numeric = t.is_numeric();
            if numeric {
                checks.push(format!(
                    "sum(CASE WHEN isnan(CAST({c} AS DOUBLE)) OR abs(CAST({c} AS DOUBLE)) = CAST('Infinity' AS DOUBLE) THEN 1 ELSE 0 END)",
                    c = quote(column)
                ));
            }
            checked.push((column.clone(), numeric));
        }
        let counts = self
            .context()
            .sql(&format!(
                "SELECT {} FROM ({}) q",
                checks.join(", "),
                train.query
            ))
            .await?
            .collect()
            .await?;
        let count_at = |i: usize| -> i64 {
            counts
                .first()
                .and_then(|b| datafusion::arrow::compute::cast(b.column(i), &DataType::Int64).ok())
                .map(|a| {
                    a.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(0)
                })
                .unwrap_or(0)
        };
        let rows = count_at(0);
        if rows == 0 {
            return Err(DataFusionError::Plan(format!(
                "the training query of model '{}' returned no rows; nothing was trained",
                train.name
            )));
        }
        let mut index = 1;
        for (column, numeric) in &checked {
            let nulls = count_at(index);
            index += 1;
            let non_finite = if *numeric {
                index += 1;
                count_at(index - 1)
            } else {
                0
            };
            let role = if Some(column) == train.label.as_ref() {
                "label"
            } else {
                "feature"
            };
            if nulls > 0 || non_finite > 0 {
                return Err(DataFusionError::Plan(format!(
                    "{role} column '{column}' has {nulls} NULL and {non_finite} NaN/infinite value(s) in {rows} rows; \
                     filter them (WHERE {column} IS NOT NULL) or replace them (coalesce) before training"
                )));
            }
        }

        let classes = if classification {
            let label = train.label.as_ref().expect("classifiers have a label");
            let batches = self
                .context()
                .sql(&format!(
                    "SELECT DISTINCT CAST({} AS VARCHAR) AS c FROM ({}) q ORDER BY c LIMIT 1001",
                    quote(label),
                    train.query
                ))
                .await?
                .collect()
                .await?;
            let mut classes: Vec<String> = vec![];
            for b in &batches {
                classes.extend(
                    b.column(0)
                        .as_string::<i32>()
                        .iter()
                        .flatten()
                        .map(str::to_string),
                );
            }
            if classes.len() > 1000 {
                return Err(DataFusionError::Plan(format!(
                    "LABEL '{label}' has more than 1000 distinct values; use a regression model or group the classes"
                )));
            }
            if classes.len() < 2 {
                return Err(DataFusionError::Plan(format!(
                    "LABEL '{label}' has only {} class ({}); classification needs at least two",
                    classes.len(),
                    classes.join(", ")
                )));
            }
            if model_type == ModelType::LogisticRegression && classes.len() > 2 {
                return Err(DataFusionError::Plan(format!(
                    "logistic_regression is binary but LABEL '{label}' has {} classes; use softmax_regression",
                    classes.len()
                )));
            }
            // Numeric classes sort numerically (so 2 < 10), booleans false < true.
            if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
                classes.sort_by(|a, b| {
                    a.parse::<f64>()
                        .unwrap_or(0.0)
                        .total_cmp(&b.parse::<f64>().unwrap_or(0.0))
                });
            }
            Some(classes)
        } else {
            None
        };

        let dims: usize = feature_columns.iter().map(|f| f.width).sum();
        let (mut model, warm_from) = match (options.warm_start, existing) {
            (true, Some(latest)) => {
                let (model, card) = registry.load(&train.name, latest)?;
                if model.dims != dims
                    || card.model_type != model_type.to_string()
                    || card.classes != classes
                {
                    return Err(DataFusionError::Plan(format!(
                        "warm_start: v{latest} of '{}' is a {} over {} feature values with classes {:?}; \
                         the new query gives {} feature values and classes {:?}; use OR REPLACE without warm_start",
                        train.name, card.model_type, model.dims, card.classes, dims, classes
                    )));
                }
                (model, Some(latest))
            }
            _ => (
                Model::new(model_type, dims, classes.as_ref().map(Vec::len), &options)
                    .map_err(|e| DataFusionError::Plan(e.to_string()))?,
                None,
            ),
        };

        let mut projection: Vec<String> = features.clone();
        projection.extend(train.label.iter().cloned());
        let input = datafusion::logical_expr::LogicalPlanBuilder::from(plan.clone())
            .project(
                projection
                    .iter()
                    .map(|c| datafusion::prelude::col(quote(c))),
            )?
            .build()?;
        let mut spec = RoundSpec {
            mode: RoundMode::Train,
            model: model.clone(),
            params: model.params().to_vec(),
            options: options.clone(),
            features: features.clone(),
            label: train.label.clone(),
            classes: classes.clone(),
            round: 0,
        };

        if let Task::Clustering { k } = model.task {
            if model.centroids.is_empty() {
                model.set_params(
                    self.initial_centroids(&input, &features, k, options.seed)
                        .await?,
                );
            }
        }

        let mut epochs: Vec<EpochRecord> = vec![];
        let mut rows_seen = 0u64;
        if options.solver == Solver::Normal {
            spec.mode = RoundMode::NormalEquations;
            let stats: Vec<NormalStats> = self.run_round(&input, &spec).await?;
            let mut total = NormalStats::new(dims);
            stats.iter().for_each(|s| total.merge(s));
            let w = total
                .solve(options.l2 as f64 * total.rows as f64)
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            model.set_params(w.iter().map(|v| *v as f32).collect());
            rows_seen = total.rows;
            let validation = self.validate(&input, &spec, &model).await?;
            let record = EpochRecord {
                epoch: 1,
                train_loss: total.mean_squared_error(&w),
                validation,
            };
            self.report_epoch(&train.name, &record, 1);
            epochs.push(record);
        } else {
            let mut best: Option<(f64, Vec<f32>)> = None;
            let mut since_best = 0;
            for epoch in 1..=options.epochs {
                spec.mode = RoundMode::Train;
                spec.round = epoch as u64;
                spec.params = model.params().to_vec();
                spec.model = model.clone();
                let updates: Vec<RoundUpdate> = self.run_round(&input, &spec).await?;
                let round_rows: u64 = updates.iter().map(|u| u.rows).sum();
                rows_seen += round_rows;
                let train_loss =
                    updates.iter().map(|u| u.loss_sum).sum::<f64>() / round_rows.max(1) as f64;
                // Held-out rows were scored with this round's starting parameters:
                // they describe the previous epoch.
                if let (Some(previous), Some(v)) =
                    (epochs.last_mut(), validation_of(&updates, &model))
                {
                    previous.validation = Some(v);
                }
                let previous_params = model.params().to_vec();
                model.set_params(
                    combine(&model, &updates)
                        .map_err(|e| DataFusionError::Execution(e.to_string()))?,
                );
                epochs.push(EpochRecord {
                    epoch,
                    train_loss,
                    validation: None,
                });
                if epoch > 1 {
                    let record = &epochs[epochs.len() - 2];
                    self.report_epoch(&train.name, record, options.epochs);
                    if let (Some(patience), Some(loss)) =
                        (options.early_stopping_patience, validation_loss(record))
                    {
                        if best.as_ref().is_none_or(|(b, _)| loss < *b) {
                            best = Some((loss, previous_params.clone()));
                            since_best = 0;
                        } else {
                            since_best += 1;
                            if since_best >= patience {
                                epochs.pop();
                                model.set_params(
                                    best.take().map(|b| b.1).unwrap_or(previous_params),
                                );
                                eprintln_if(
                                    self.progress(),
                                    format!(
                                        "model {}: early stop after epoch {}",
                                        train.name,
                                        epoch - 1
                                    ),
                                );
                                break;
                            }
                        }
                    }
                }
                if matches!(model.task, Task::Clustering { .. })
                    && previous_params == model.params()
                {
                    break;
                }
            }
            if let Some(last) = epochs.last_mut() {
                if last.validation.is_none() {
                    last.validation = self.validate(&input, &spec, &model).await?;
                }
                let last = last.clone();
                self.report_epoch(&train.name, &last, options.epochs);
            }
        }

        let final_metrics = epochs.last().and_then(|e| e.validation.clone());
        let mut card = ModelCard {
            name: train.name.clone(),
            version: 0,
            model_type: model_type.to_string(),
            task: model.task,
            options,
            features: feature_columns,
            label: train.label.clone(),
            label_type: label_type.map(|t| t.to_string()),
            classes,
            epochs,
            final_metrics,
            rows_seen,
            duration_ms: started.elapsed().as_millis() as u64,
            trained_at: now_utc(),
            source_query,
            source_tables,
            warm_started_from: warm_from,
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            checks: check_outcomes,
            transform: fitted,
        };
        let version = registry.publish(&model, &mut card)?;
        Ok(StatementResult::message(format!(
            "trained model {} v{version} ({model_type}, {rows} rows, {} epoch(s), {:.1}s)",
            train.name,
            card.epochs.len(),
            started.elapsed().as_secs_f64()
        )))
    }

    fn report_epoch(&self, name: &str, record: &EpochRecord, epochs: usize) {
        let mut line = format!(
            "model {name}: epoch {}/{epochs} loss {:.6}",
            record.epoch, record.train_loss
        );
        if let Some(v) = &record.validation {
            for (k, value) in v.values.iter().take(2) {
                line.push_str(&format!(" validation_{k} {value:.6}"));
            }
        }
        eprintln_if(self.progress(), line);
    }

    async fn run_round<T: serde::de::DeserializeOwned>(
        &self,
        input: &LogicalPlan,
        spec: &RoundSpec,
    ) -> Result<Vec<T>> {
        let node = TrainRoundNode::new(input.clone(), spec)?;
        let plan = LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        });
        let batches = self
            .context()
            .execute_logical_plan(plan)
            .await?
            .collect()
            .await?;
        // Partitions finish in any order (on a cluster, on any executor):
        // combine them in shard-key order (ties by content) so the same data
        // gives the same model however the tasks were spread.
        let mut out = vec![];
        for batch in &batches {
            let partitions = batch.column(0).as_primitive::<UInt64Type>();
            let updates = batch.column(1).as_binary::<i32>();
            for (partition, bytes) in partitions.iter().zip(updates.iter()) {
                if let (Some(partition), Some(bytes)) = (partition, bytes) {
                    out.push((partition, bytes));
                }
            }
        }
        out.sort();
        out.into_iter()
            .map(|(_, bytes)| {
                serde_json::from_slice(bytes)
                    .map_err(|e| DataFusionError::Internal(format!("round result: {e}")))
            })
            .collect()
    }

    /// Scores the held-out rows with `model` (one job); `None` without validation.
    async fn validate(
        &self,
        input: &LogicalPlan,
        spec: &RoundSpec,
        model: &Model,
    ) -> Result<Option<Metrics>> {
        if spec.options.validation_fraction <= 0.0 {
            return Ok(None);
        }
        let mut spec = spec.clone();
        spec.mode = RoundMode::Validate;
        spec.model = model.clone();
        spec.params = model.params().to_vec();
        let updates: Vec<RoundUpdate> = self.run_round(input, &spec).await?;
        Ok(validation_of(&updates, model))
    }

    async fn initial_centroids(
        &self,
        input: &LogicalPlan,
        features: &[String],
        k: usize,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let sample = datafusion::prelude::DataFrame::new(self.context().state(), input.clone())
            .limit(0, Some(10_000))?
            .collect()
            .await?;
        let mut batches = vec![];
        for batch in &sample {
            batches.push(crate::features::to_batch(
                features,
                &batch.columns()[..features.len()],
                None,
                batch.num_rows(),
            )?);
        }
        let rows = batches.iter().flat_map(|b| b.features.chunks(b.dims));
        kiln_ml::fit::initial_centroids(rows, k, seed)
            .map_err(|e| DataFusionError::Plan(e.to_string()))
    }
}

fn validation_of(updates: &[RoundUpdate], model: &Model) -> Option<Metrics> {
    let rows: u64 = updates.iter().map(|u| u.validation_rows).sum();
    if rows == 0 {
        return None;
    }
    let loss = updates.iter().map(|u| u.validation_loss_sum).sum::<f64>() / rows as f64;
    let correct: u64 = updates.iter().map(|u| u.validation_correct).sum();
    let values = match model.task {
        Task::Regression => vec![("mse".to_string(), loss), ("rmse".to_string(), loss.sqrt())],
        Task::Clustering { .. } => vec![("inertia".to_string(), loss * rows as f64)],
        _ => vec![
            ("log_loss".to_string(), loss),
            ("accuracy".to_string(), correct as f64 / rows as f64),
        ],
    };
    Some(Metrics {
        values,
        confusion: None,
    })
}

fn validation_loss(record: &EpochRecord) -> Option<f64> {
    let v = record.validation.as_ref()?;
    v.get("log_loss").or(v.get("mse")).or(v.get("inertia"))
}

fn task_name(task: Task) -> String {
    match task {
        Task::Regression => "regression".into(),
        Task::BinaryClassification => "binary_classification".into(),
        Task::MulticlassClassification { classes } => format!("classification ({classes} classes)"),
        Task::Clustering { k } => format!("clustering (k = {k})"),
    }
}

fn eprintln_if(enabled: bool, line: String) {
    if enabled {
        eprintln!("{line}");
    }
}

pub(crate) fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    datafusion::arrow::temporal_conversions::timestamp_s_to_datetime(secs)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

impl KilnSession {
    /// Replaces every parenthesized `(PREDICT MODEL m [VERSION n] AS query)`
    /// in `sql` with its prediction query, so predictions can feed
    /// `CREATE TABLE ... AS`, `INSERT`, joins and CTEs. `None` when there is none.
    pub(crate) async fn expand_predict_subqueries(&self, sql: &str) -> Result<Option<String>> {
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
        let mut expanded = false;
        while i < tokens.len() {
            let pos = significant.iter().position(|&s| s == i);
            let next = |k: usize| {
                pos.and_then(|p| significant.get(p + k))
                    .map(|&s| &tokens[s])
            };
            if tokens[i] == Token::LParen
                && is_word(next(1), "PREDICT")
                && is_word(next(2), "MODEL")
            {
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
                let Some(MlStatement::Predict {
                    name,
                    version,
                    query,
                }) = parse(&inner)?
                else {
                    return Err(syntax("expected (PREDICT MODEL name [VERSION n] AS query)"));
                };
                let card = self.model_card(&name, version)?;
                self.check_prediction_columns(&card, &query).await?;
                out.push('(');
                out.push_str(&prediction_query(&card, &query, true, &[]));
                out.push(')');
                expanded = true;
                i = end + 1;
                continue;
            }
            out.push_str(&tokens[i].to_string());
            i += 1;
        }
        Ok(expanded.then_some(out))
    }
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
fn substitute_columns(sql: &str, arguments: &std::collections::HashMap<String, String>) -> String {
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

impl KilnSession {
    /// Rewrites `predict('m', raw...)` / `predict_proba(...)` calls on models
    /// trained with TRANSFORM so they pass the fitted transforms of the
    /// model's raw input columns, pinned to the version resolved now. `None`
    /// when nothing changed.
    pub(crate) fn rewrite_predict_calls(&self, sql: &str) -> Result<Option<String>> {
        if !sql.to_ascii_lowercase().contains("predict") {
            return Ok(None);
        }
        let Some(tokens) = tokens(sql) else {
            return Ok(None);
        };
        let significant = |from: usize| {
            (from..tokens.len()).find(|&j| !matches!(tokens[j], Token::Whitespace(_)))
        };
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
            let card = match self.model_card(&name, version) {
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
            let by_column: std::collections::HashMap<String, String> =
                raw.iter().cloned().zip(given).collect();
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
}
