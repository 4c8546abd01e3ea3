//! The ML statements: `TRAIN MODEL` (checks, TRANSFORM fitting, label and
//! feature validation, then kiln-ml's [`Driver`] with each round run as one
//! Ballista job), `EVALUATE MODEL`, `PREDICT MODEL`, `SHOW MODELS`,
//! `DESCRIBE MODEL`, `DROP MODEL`.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt64Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Extension, LogicalPlan};
use kiln_ml::driver::CENTROID_SAMPLE_ROWS;
use kiln_ml::metrics::{self, Metrics};
use kiln_ml::options::{ModelType, Solver, TaskChoice};
use kiln_ml::{Driver, Model, PartitionResult, Task, TrainOptions};

use super::checks::checks_before_training;
use super::progress::TrainingProgress;
use super::transform::fit_transforms;
use crate::catalog::quote::quote_ident as quote;
use crate::catalog::registry::{validate_model_name, FeatureColumn, ModelCard};
use crate::catalog::transform::transformed_query;
use crate::error::ml_error;
use crate::functions::batch::{feature_width, to_batch};
use crate::parse::rewrite::prediction_query;
use crate::parse::{MlStatement, TrainStatement};
use crate::plan::logical::{RoundSpec, TrainRoundNode};
use crate::session::{KilnSession, StatementResult};

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

pub(crate) async fn execute_ml(
    session: &KilnSession,
    statement: MlStatement,
) -> Result<StatementResult> {
    match statement {
        MlStatement::Train(train) => train_model(session, train).await,
        MlStatement::Predict {
            name,
            version,
            query,
        } => {
            let card = session.registry().card_of(&name, version)?;
            check_prediction_columns(session, &card, &query).await?;
            execute_plain(session, &prediction_query(&card, &query, true, &[])).await
        }
        MlStatement::Evaluate {
            name,
            version,
            query,
        } => evaluate_model(session, &name, version, &query).await,
        MlStatement::ShowModels => show_models(session),
        MlStatement::DescribeModel { name, version } => describe_model(session, &name, version),
        MlStatement::DropModel { name, if_exists } => {
            validate_model_name(&name)?;
            if session.registry().drop_model(&name)? {
                Ok(StatementResult::message(format!("dropped model {name}")))
            } else if if_exists {
                Ok(StatementResult::message(format!(
                    "model {name} does not exist, skipped"
                )))
            } else {
                session
                    .registry()
                    .resolve(&name, None)
                    .map(|_| StatementResult::message(""))
            }
        }
    }
}

pub(crate) async fn execute_plain(session: &KilnSession, sql: &str) -> Result<StatementResult> {
    let df = session.context().sql(sql).await?;
    let schema = Arc::clone(df.schema().inner());
    let batches = df.collect().await?;
    Ok(StatementResult::rows(schema, batches))
}

pub(crate) async fn check_prediction_columns(
    session: &KilnSession,
    card: &ModelCard,
    query: &str,
) -> Result<()> {
    let plan = session.context().state().create_logical_plan(query).await?;
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
            crate::functions::predict::expected_schema(card)
        )));
    }
    Ok(())
}

pub(crate) async fn evaluate_model(
    session: &KilnSession,
    name: &str,
    version: Option<u64>,
    query: &str,
) -> Result<StatementResult> {
    let card = session.registry().card_of(name, version)?;
    check_prediction_columns(session, &card, query).await?;
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
        let (model, _) = session.registry().load(name, card.version)?;
        let features: Vec<String> = card.features.iter().map(|f| quote(&f.name)).collect();
        let batches = session
            .context()
            .sql(&format!("SELECT {} FROM ({query}) q", features.join(", ")))
            .await?
            .collect()
            .await?;
        let mut all = vec![];
        for batch in &batches {
            let names: Vec<String> = card.features.iter().map(|f| f.name.clone()).collect();
            let b =
                crate::functions::batch::to_batch(&names, batch.columns(), None, batch.num_rows())?;
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
    let batches = session.context().sql(&sql).await?.collect().await?;
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
                    predicted_values.push(prediction.value(i).parse::<f32>().unwrap_or(f32::NAN));
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
                    let class_of = |t: &str| classes.iter().position(|c| c == t).map(|p| p as u32);
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
        _ => metrics::classification(&predicted_idx, &actual_idx, &probabilities, classes.len()),
    };
    metric_rows(&metrics, Some(&classes))
}

pub(crate) fn show_models(session: &KilnSession) -> Result<StatementResult> {
    let registry = session.registry();
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

pub(crate) fn describe_model(
    session: &KilnSession,
    name: &str,
    version: Option<u64>,
) -> Result<StatementResult> {
    let registry = session.registry();
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
        (
            "features".into(),
            crate::functions::predict::expected_schema(&card),
        ),
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
    let (model, _) = registry.load(name, v)?;
    rows.push((
        "standardized".into(),
        if model.standardization.is_some() {
            "true"
        } else {
            "false"
        }
        .into(),
    ));
    rows.extend(coefficient_rows(&model, &card));
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

/// A linear model's weights and intercepts in the features' own units
/// (standardization folded in), one row each: `coefficient [class.]feature`.
fn coefficient_rows(model: &Model, card: &ModelCard) -> Vec<(String, String)> {
    let Some((weights, intercepts)) = model.linear_coefficients() else {
        return vec![];
    };
    let names: Vec<String> = card
        .features
        .iter()
        .flat_map(|f| match f.width {
            1 => vec![f.name.clone()],
            w => (0..w).map(|i| format!("{}[{i}]", f.name)).collect(),
        })
        .collect();
    let per_class = intercepts.len() > 1;
    let mut rows = vec![];
    for (o, intercept) in intercepts.iter().enumerate() {
        let class = card
            .classes
            .as_ref()
            .filter(|_| per_class)
            .and_then(|c| c.get(o))
            .map(String::as_str);
        for (i, name) in names.iter().enumerate() {
            let property = match class {
                Some(class) => format!("coefficient {class}.{name}"),
                None => format!("coefficient {name}"),
            };
            rows.push((property, format!("{}", weights[o * names.len() + i])));
        }
        let property = match class {
            Some(class) => format!("intercept {class}"),
            None => "intercept".to_string(),
        };
        rows.push((property, format!("{intercept}")));
    }
    rows
}

pub(crate) async fn train_model(
    session: &KilnSession,
    mut train: TrainStatement,
) -> Result<StatementResult> {
    let started = Instant::now();
    validate_model_name(&train.name)?;
    let statement = format!("TRAIN MODEL {}", train.name);
    let model_type = ModelType::parse(&train.model_type).map_err(ml_error(&statement))?;
    let options = TrainOptions::parse(model_type, &train.options).map_err(ml_error(&statement))?;
    if session.is_embedded() {
        // The executors are this process: refuse before any round runs.
        // On a cluster, each executor opens its own device.
        kiln_ml::device::backend(options.device).map_err(ml_error(&statement))?;
    }
    let registry = session.registry();
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

    let state = session.context().state();
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
    let check_outcomes = checks_before_training(session, &train.name, &source_tables).await?;
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
                let before: Vec<&str> = card.transform.iter().map(|t| t.name.as_str()).collect();
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
            _ => fit_transforms(session, &train.query, &train.transform).await?,
        };
        train.query = transformed_query(&train.query, &columns, &fitted);
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
    let counts = session
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
        let batches = session
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
    let (model, warm_from) = match (options.warm_start, existing) {
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
                .map_err(ml_error(&statement))?,
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
    // The round loop is kiln-ml's Driver; each round here is one Ballista job.
    let mut driver = match warm_from {
        Some(_) => Driver::resume(model, options.clone()),
        None => Driver::new(model, options.clone()),
    };
    // `solver = 'auto'` is resolved by the driver for the feature width.
    let options = driver.options().clone();
    if driver.needs_centroids().is_some() {
        let sample = centroid_sample(session, &input, &features).await?;
        driver
            .seed_centroids(sample.iter().flat_map(|b| b.features.chunks(b.dims)))
            .map_err(ml_error(&statement))?;
    }
    let step = driver.method().1;
    let total_epochs = if options.solver == Solver::Normal {
        1
    } else if driver.uses_lbfgs() {
        options.max_iterations
    } else {
        options.epochs
    };
    // On the embedded cluster the rounds' tasks run in this process, which
    // keeps the converted training rows from the first round to the last.
    let cache_run = session
        .is_embedded()
        .then(|| crate::plan::row_cache::RunGuard(uuid::Uuid::new_v4().to_string()));
    let progress = TrainingProgress::new(session.progress(), &train.name, step, total_epochs);
    while let Some(round) = driver.next_round() {
        let spec = RoundSpec {
            round,
            options: options.clone(),
            features: features.clone(),
            label: train.label.clone(),
            classes: classes.clone(),
            cache_run: cache_run.as_ref().map(|guard| guard.0.clone()),
        };
        let results = run_round(session, &input, &spec).await?;
        let finished = driver.absorb(results).map_err(ml_error(&statement))?;
        for record in &finished {
            progress.record(record);
        }
        if driver.stopped_early() {
            let last = finished.last().map_or(0, |r| r.epoch);
            progress.line(format!(
                "model {}: early stop after epoch {last}",
                train.name
            ));
        }
    }
    drop(progress);
    let how = driver.method().0;
    let (model, history) = driver.finish();
    let epochs = history.epochs;
    let rows_seen = history.rows_seen;

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
        "trained model {} v{version} ({model_type}, {how}, {rows} rows, {} {step}(s), {:.1}s)",
        train.name,
        card.epochs.len(),
        started.elapsed().as_secs_f64()
    )))
}

/// Runs one round as a Ballista job: one [`PartitionResult`] per input partition.
async fn run_round(
    session: &KilnSession,
    input: &LogicalPlan,
    spec: &RoundSpec,
) -> Result<Vec<PartitionResult>> {
    let node = TrainRoundNode::new(input.clone(), spec)?;
    let plan = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });
    let batches = session
        .context()
        .execute_logical_plan(plan)
        .await?
        .collect()
        .await?;
    // Partitions finish in any order (on a cluster, on any executor): the
    // driver combines them in shard-key order; ties are broken by content
    // here, so the same data gives the same model however tasks were spread.
    let mut out = vec![];
    for batch in &batches {
        let shards = batch.column(0).as_primitive::<UInt64Type>();
        let outcomes = batch.column(1).as_binary::<i32>();
        for (shard, bytes) in shards.iter().zip(outcomes.iter()) {
            if let (Some(shard), Some(bytes)) = (shard, bytes) {
                out.push((shard, bytes));
            }
        }
    }
    out.sort();
    out.into_iter()
        .map(|(shard, bytes)| {
            let outcome = serde_json::from_slice(bytes).map_err(|e| {
                DataFusionError::Internal(format!("a training round's partition result: {e}"))
            })?;
            Ok(PartitionResult { shard, outcome })
        })
        .collect()
}

/// The leading rows kmeans picks its starting centroids from.
async fn centroid_sample(
    session: &KilnSession,
    input: &LogicalPlan,
    features: &[String],
) -> Result<Vec<kiln_ml::Batch>> {
    let sample = datafusion::prelude::DataFrame::new(session.context().state(), input.clone())
        .limit(0, Some(CENTROID_SAMPLE_ROWS))?
        .collect()
        .await?;
    sample
        .iter()
        .map(|batch| {
            to_batch(
                features,
                &batch.columns()[..features.len()],
                None,
                batch.num_rows(),
            )
        })
        .collect()
}

fn task_name(task: Task) -> String {
    match task {
        Task::Regression => "regression".into(),
        Task::BinaryClassification => "binary_classification".into(),
        Task::MulticlassClassification { classes } => format!("classification ({classes} classes)"),
        Task::Clustering { k } => format!("clustering (k = {k})"),
    }
}

pub(crate) fn now_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
