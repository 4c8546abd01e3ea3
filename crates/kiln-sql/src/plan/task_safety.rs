//! Plans that stay right when each partition of a stage runs as its own task.
//!
//! DataFusion runs all partitions of a plan in one process, and some of its
//! operators rely on that: a join that collects its left input once
//! (`CollectLeft` hash joins, nested-loop joins) emits the left rows no probe
//! partition matched (outer, semi, anti and mark joins) only after every
//! probe partition has finished, from state the partitions share. On a
//! cluster, Ballista runs each partition of a stage as a separate task,
//! possibly on another executor, and rewrites some of these plans on its
//! own: it turns a `CollectLeft` hash join it cannot prove small into a
//! partitioned one after DataFusion has planned the operators around it (a
//! fetch pushed into the join, an ORDER BY the join's order satisfied), and
//! it rebuilds in-memory scans for each task without their fetch. Each gave
//! rows of every partition, or repeated unmatched rows, without an error.
//!
//! For sessions on a real cluster, Kiln therefore plans hash joins as
//! partitioned joins before DataFusion enforces distribution and ordering
//! ([`PartitionedHashJoins`]; Ballista's planner still broadcasts the small
//! side where it can prove it small), and adjusts the finished plan
//! ([`for_separate_tasks`]).

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::JoinType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::plan::local_stage::LocalStageExec;

/// Physical optimizer rule, run right after DataFusion's join selection:
/// every `CollectLeft` hash join becomes a `Partitioned` one, so the rules
/// after it plan distribution, ordering and limits around the join as it
/// will run. Null-aware anti joins (`NOT IN`) stay `CollectLeft`; they need
/// one task ([`for_separate_tasks`]).
#[derive(Debug, Default)]
pub struct PartitionedHashJoins;

impl PartitionedHashJoins {
    /// `rules` with this rule inserted after DataFusion's join selection.
    pub fn inserted_into(
        rules: &[Arc<dyn PhysicalOptimizerRule + Send + Sync>],
    ) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
        let rule: Arc<dyn PhysicalOptimizerRule + Send + Sync> = Arc::new(PartitionedHashJoins);
        let mut with = rules.to_vec();
        // Without DataFusion's join selection, the physical planner's choice stands: go first.
        let at = rules
            .iter()
            .position(|r| r.name() == "join_selection")
            .map_or(0, |i| i + 1);
        with.insert(at, rule);
        with
    }
}

impl PhysicalOptimizerRule for PartitionedHashJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::CollectLeft || join.null_aware {
                return Ok(Transformed::no(node));
            }
            let partitioned = join
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .build_exec()?;
            Ok(Transformed::yes(partitioned))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kiln_partitioned_hash_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The finished plan of a statement for a cluster, changed where a stage's
/// tasks would answer differently from one process:
/// - a join that collects its left input and emits left rows (left, full,
///   semi, anti, mark; nested-loop joins, and the null-aware hash joins
///   [`PartitionedHashJoins`] leaves) runs with its inputs as one task
///   ([`LocalStageExec`]), so it sees every probe row; where its output was
///   hash-partitioned, it is repartitioned the same way again (and sorted
///   again where it was ordered);
/// - an in-memory scan's fetch becomes a per-partition limit above it
///   (Ballista rebuilds the scan for each task without it);
/// - a hash repartition whose output is ordered (order-preserving, or over
///   one ordered partition) becomes a plain one with a sort of each output
///   partition above it: Ballista's shuffle, which it becomes, does not
///   keep the order (a window over it refused to run);
/// - a recursive query runs as one task: each iteration of its recursive
///   term reads the rows of the previous one from memory its work table
///   shares with the query.
pub fn for_separate_tasks(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = plan
        .transform_down(|node| {
            if node.downcast_ref::<RecursiveQueryExec>().is_some() {
                let one_task: Arc<dyn ExecutionPlan> = Arc::new(LocalStageExec::new(node));
                return Ok(Transformed::new(one_task, true, TreeNodeRecursion::Jump));
            }
            Ok(Transformed::no(node))
        })?
        .data;
    plan.transform_up(|node| {
        if let Some(rewritten) = memory_fetch_as_limit(&node)? {
            return Ok(Transformed::yes(rewritten));
        }
        if let Some(rewritten) = join_in_one_task(&node)? {
            return Ok(Transformed::yes(rewritten));
        }
        if let Some(rewritten) = sorted_after_shuffle(&node)? {
            return Ok(Transformed::yes(rewritten));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

fn sorted_after_shuffle(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(repartition) = node.downcast_ref::<RepartitionExec>() else {
        return Ok(None);
    };
    if !matches!(repartition.partitioning(), Partitioning::Hash(..)) {
        return Ok(None);
    }
    // Order-preserving, or ordered because it has one input partition.
    let Some(ordering) = node.output_ordering().cloned() else {
        return Ok(None);
    };
    shuffled_in_order(
        Arc::clone(repartition.input()),
        repartition.partitioning().clone(),
        Some(ordering),
    )
    .map(Some)
}

/// `input` hash-repartitioned as a Ballista shuffle will do it, with each
/// output partition sorted by `ordering` again: the shuffle does not keep
/// the order an order-preserving repartition would.
fn shuffled_in_order(
    input: Arc<dyn ExecutionPlan>,
    partitioning: Partitioning,
    ordering: Option<LexOrdering>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let repartition: Arc<dyn ExecutionPlan> =
        Arc::new(RepartitionExec::try_new(input, partitioning)?);
    Ok(match ordering {
        Some(ordering) => {
            Arc::new(SortExec::new(ordering, repartition).with_preserve_partitioning(true))
        }
        None => repartition,
    })
}

fn memory_fetch_as_limit(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let Some(memory) = scan.data_source().downcast_ref::<MemorySourceConfig>() else {
        return Ok(None);
    };
    let Some(fetch) = memory.fetch() else {
        return Ok(None);
    };
    let scan = DataSourceExec::from_data_source(memory.clone().with_limit(None));
    Ok(Some(Arc::new(LocalLimitExec::new(scan, fetch))))
}

/// Whether a join whose left input is collected emits rows for left rows,
/// which needs every probe partition in the same process.
fn emits_left_rows(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::Full
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
    )
}

fn join_in_one_task(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let needs_one_task = if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
        emits_left_rows(*join.join_type())
    } else if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        *join.partition_mode() == PartitionMode::CollectLeft
            && (join.null_aware || emits_left_rows(*join.join_type()))
    } else {
        false
    };
    let children = node.children();
    if !needs_one_task
        || children
            .get(1)
            .is_none_or(|probe| probe.output_partitioning().partition_count() <= 1)
    {
        return Ok(None);
    }
    // Hidden from Ballista's stage planner, which would otherwise cut the
    // probe side into tasks again (or swap the join's inputs); the coalesce
    // above gives it a stage of its own.
    let one_task: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(Arc::new(
        LocalStageExec::new(Arc::clone(node)),
    )));
    match node.output_partitioning() {
        partitioning @ Partitioning::Hash(_, n) if *n > 1 => Ok(Some(shuffled_in_order(
            one_task,
            partitioning.clone(),
            node.output_ordering().cloned(),
        )?)),
        _ => Ok(Some(one_task)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    async fn plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        ctx.sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap()
    }

    fn names(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        let mut names = vec![];
        plan.apply(|node| {
            names.push(node.name().to_string());
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        names
    }

    #[tokio::test]
    async fn an_in_memory_fetch_becomes_a_limit_and_left_emitting_joins_run_as_one_task() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        let limited = plan(&ctx, "SELECT * FROM (VALUES (1), (2), (3), (4)) LIMIT 2").await;
        assert!(names(&limited).contains(&"DataSourceExec".to_string()));
        let safe = for_separate_tasks(limited).unwrap();
        assert_eq!(names(&safe)[0], "LocalLimitExec", "{:?}", names(&safe));
        let rows = datafusion::physical_plan::collect(safe, ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

        let column = |name: &str, values: &[i32]| {
            let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int32, false)]));
            let array = Arc::new(Int32Array::from(values.to_vec()));
            (
                Arc::clone(&schema),
                RecordBatch::try_new(schema, vec![array]).unwrap(),
            )
        };
        let (a_schema, a) = column("x", &[1, 2, 3]);
        ctx.register_table(
            "a",
            Arc::new(MemTable::try_new(a_schema, vec![vec![a]]).unwrap()),
        )
        .unwrap();
        let b: Vec<_> = [[1, 2], [3, 4], [5, 6]]
            .iter()
            .map(|v| column("y", v))
            .collect();
        let b_table = MemTable::try_new(
            Arc::clone(&b[0].0),
            b.into_iter().map(|(_, batch)| vec![batch]).collect(),
        )
        .unwrap();
        ctx.register_table("b", Arc::new(b_table)).unwrap();
        let left = plan(&ctx, "SELECT * FROM a FULL JOIN b ON a.x > b.y").await;
        let safe = for_separate_tasks(Arc::clone(&left)).unwrap();
        let join = |p: &Arc<dyn ExecutionPlan>| {
            let mut found = None;
            p.apply(|node| {
                if node.name() == "NestedLoopJoinExec" {
                    found = Some(node.children()[1].output_partitioning().partition_count());
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
            found
        };
        assert_eq!(join(&left), Some(3));
        // The join now runs inside one LocalStageExec, hidden from Ballista.
        assert_eq!(join(&safe), None);
        assert_eq!(
            names(&safe)[..2],
            ["CoalescePartitionsExec", "LocalStageExec"]
        );
        // 3 matches, x = 1 and y = 3, 4, 5, 6 unmatched.
        let rows = datafusion::physical_plan::collect(safe, ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 8);
    }
}
