//! [`LocalStageExec`]: a whole physical plan as one Ballista stage.
//!
//! Ballista cuts a plan into stages at every exchange (hash repartition,
//! coalesce, sort-preserving merge) and moves data between them through
//! shuffle files, because stages may run on different machines. On the
//! embedded cluster there is one executor, in this process: no exchange
//! crosses a machine, and each stage boundary only adds a scheduling round
//! trip and a write and read of its data. The embedded scheduler therefore
//! plans each statement as one stage whose task runs DataFusion's plan,
//! exchanges included, in memory — still a Ballista job, its plan still
//! shipped through Kiln's codecs.
//!
//! The node hides the plan from Ballista's stage planner (it has no
//! children), and carries it as its own encoded bytes.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    displayable, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};

/// Runs `plan` (one output partition) as a single task.
#[derive(Debug)]
pub struct LocalStageExec {
    plan: Arc<dyn ExecutionPlan>,
}

impl LocalStageExec {
    /// Wraps `plan`, merging its partitions first (preserving its order)
    /// when it has more than one.
    pub fn new(plan: Arc<dyn ExecutionPlan>) -> Self {
        let plan: Arc<dyn ExecutionPlan> = if plan.output_partitioning().partition_count() <= 1 {
            plan
        } else if let Some(ordering) = plan.output_ordering() {
            Arc::new(SortPreservingMergeExec::new(ordering.clone(), plan))
        } else {
            Arc::new(CoalescePartitionsExec::new(plan))
        };
        Self { plan }
    }

    /// The plan this stage runs.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }
}

impl DisplayAs for LocalStageExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LocalStageExec: one task runs this plan, its exchanges in memory"
        )?;
        if matches!(t, DisplayFormatType::TreeRender) {
            return Ok(());
        }
        write_inner_plan(f, self.plan.as_ref())
    }
}

/// Writes `plan` below a wrapping node's line, each line prefixed `    | `.
pub(crate) fn write_inner_plan(f: &mut fmt::Formatter, plan: &dyn ExecutionPlan) -> fmt::Result {
    for line in displayable(plan).indent(true).to_string().lines() {
        write!(f, "\n    | {line}")?;
    }
    Ok(())
}

impl ExecutionPlan for LocalStageExec {
    fn name(&self) -> &str {
        "LocalStageExec"
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.plan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.plan.execute(partition, context)
    }
}
