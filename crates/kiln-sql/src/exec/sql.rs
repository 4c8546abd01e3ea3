//! Every DataFusion statement: queries, EXPLAIN, DDL and DML, after Kiln's
//! rewrites; writes to lake tables go through [`super::ddl`].

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{HiveDistributionStyle, Statement as SQLStatement};

use super::ddl::create_table;
use super::ddl::drop_table;
use super::ddl::insert_managed;
use super::ddl::insert_partition;
use super::ddl::managed_entry;
use super::ddl::show_tables;
use super::ddl::{describe_schema, normalize_ident};
use super::ml::check_prediction_columns;
use crate::catalog::lake::{validate_table_name, ExternalTable, LakeError, TableEntry};
use crate::error::lake_error;
use crate::parse::errors::{absolute_locations, syntax_error, syntax_error_at_end};
use crate::parse::rewrite::{
    expand_predict_subqueries, rewrite_fitted_calls, rewrite_predict_calls,
};
use crate::session::{KilnSession, StatementResult};
/// Runs a DataFusion statement after Kiln's query rewrites: writes to lake
/// tables are staged and published by [`super::ddl`]; the rest runs as
/// Ballista jobs.
pub(crate) async fn execute_sql(
    session: &KilnSession,
    sql: &str,
    tables: &mut Vec<String>,
) -> Result<StatementResult> {
    // predict() calls on TRANSFORM models first: the PREDICT MODEL
    // expansion below generates calls that already carry the transforms.
    let registry = session.registry();
    let rewritten = rewrite_predict_calls(&registry, sql)?;
    let sql = rewritten.as_deref().unwrap_or(sql);
    let expanded = expand_predict_subqueries(&registry, sql)?;
    if let Some(expanded) = &expanded {
        for (card, query) in &expanded.scored {
            check_prediction_columns(session, card, query).await?;
        }
    }
    let sql = expanded.as_ref().map_or(sql, |e| e.sql.as_str());
    let state = session.context().state();
    let mut statement = state
        .sql_to_statement(sql, &state.config_options().sql_parser.dialect)
        .map_err(|e| syntax_error_at_end(syntax_error(e), sql))?;

    if let DFStatement::Statement(s) = &mut statement {
        rewrite_fitted_calls(s)?;
    }
    let mut partition_by = vec![];
    let mut external_ddl = None;
    match &mut statement {
        DFStatement::Statement(s) => match s.as_mut() {
            SQLStatement::ShowTables { .. } => return show_tables(session),
            SQLStatement::Insert(insert) if insert.partitioned.is_some() => {
                return insert_partition(session, insert).await;
            }
            SQLStatement::CreateTable(create) => {
                if let HiveDistributionStyle::PARTITIONED { columns } = &create.hive_distribution {
                    partition_by = columns
                        .iter()
                        .map(|c| normalize_ident(&c.name.value, c.name.quote_style))
                        .collect();
                    create.hive_distribution = HiveDistributionStyle::NONE;
                    if create.query.is_none() {
                        return Err(DataFusionError::NotImplemented(
                            "PARTITIONED BY is supported with CREATE TABLE ... AS SELECT only; \
                             create the table with a query"
                                .to_string(),
                        ));
                    }
                }
            }
            _ => {}
        },
        DFStatement::CreateExternalTable(create) => {
            external_ddl = Some(absolute_locations(sql, &mut create.locations)?);
        }
        _ => {}
    }

    let plan = state.statement_to_plan(statement).await?;
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.push(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    // Writes to lake tables are Kiln's (staged + published); the catalog is read once.
    let managed_target = match &plan {
        LogicalPlan::Dml(dml) => managed_entry(session, &dml.table_name)?,
        _ => None,
    };
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
            create_table(session, create, partition_by).await
        }
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
            let name = create.name.table().to_string();
            for location in &create.locations {
                session
                    .check_allowed_location(&format!("CREATE EXTERNAL TABLE {name}"), location)?;
            }
            let temporary = create.temporary;
            let format = create.file_type.clone();
            let locations = create.locations.clone();
            session
                .context()
                .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)))
                .await?;
            if !temporary {
                validate_table_name(&name)?;
                let entry = TableEntry::External(ExternalTable {
                    ddl: external_ddl.unwrap_or_else(|| sql.trim().to_string()),
                    format,
                    locations,
                });
                session
                    .lake()
                    .update_catalog(|c| {
                        c.tables.insert(name.clone(), entry);
                        Ok::<_, LakeError>(())
                    })
                    .map_err(lake_error)?;
            }
            Ok(StatementResult::message(format!(
                "created external table {name}"
            )))
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(drop)) => drop_table(session, drop).await,
        LogicalPlan::Dml(dml) if managed_target.is_some() => {
            insert_managed(session, dml, managed_target.expect("checked by the guard")).await
        }
        LogicalPlan::DescribeTable(describe) => {
            let schema = describe.schema.as_ref();
            describe_schema(schema)
        }
        plan => {
            let df = session.context().execute_logical_plan(plan).await?;
            let schema: SchemaRef = Arc::clone(df.schema().inner());
            let batches = df.collect().await?;
            Ok(StatementResult::rows(schema, batches))
        }
    }
}
