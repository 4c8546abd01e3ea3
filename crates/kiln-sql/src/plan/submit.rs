//! The client's planner: each statement is planned once, in the session
//! that parsed it, into the physical plan the cluster runs, and submitted to
//! the scheduler as that plan ([`SubmittedPlanExec`]).
//!
//! Ballista's own client sends the logical plan instead, which the
//! scheduler decodes and plans again. That round trip loses what DataFusion's
//! logical protobuf cannot say (LIMIT expressions, in-memory and
//! table-function sources, some extracted-expression aliases) and plans every
//! statement twice. The physical protobuf carries the plan as it will run;
//! Ballista's scheduler still cuts it into stages (or, on the embedded
//! cluster, receives it as one [`LocalStageExec`]).
//!
//! EXPLAIN and EXPLAIN ANALYZE still go to the scheduler as logical plans:
//! it answers them with the stages it would run.

use std::fmt;
use std::sync::Arc;

use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use ballista_core::planner::{scans_only_information_schema, BallistaQueryPlanner};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::PhysicalPlanner;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use futures::TryStreamExt;

use crate::plan::codec::encodable;
use crate::plan::local_stage::{write_inner_plan, LocalStageExec};
use crate::plan::physical::kiln_physical_planner;
use crate::plan::task_runtime::with_runtime_limits;
use crate::plan::task_safety::for_separate_tasks;

/// The query planner of a client session connected to `scheduler_url`.
#[derive(Debug)]
pub struct ClientQueryPlanner {
    scheduler_url: String,
    /// Whether the scheduler runs each plan as one stage (embedded cluster).
    one_stage: bool,
    /// Ballista's planner, for the statements the scheduler plans itself.
    logical: BallistaQueryPlanner<LogicalPlanNode>,
}

impl ClientQueryPlanner {
    /// `config` gives Ballista's settings and Kiln's logical codec.
    pub fn new(scheduler_url: String, config: &SessionConfig, one_stage: bool) -> Self {
        Self {
            logical: BallistaQueryPlanner::with_extension(
                scheduler_url.clone(),
                config.ballista_config(),
                config.ballista_logical_extension_codec(),
            ),
            scheduler_url,
            one_stage,
        }
    }
}

#[async_trait::async_trait]
impl QueryPlanner for ClientQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if matches!(
            logical_plan,
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::EmptyRelation(_)
        ) {
            return self
                .logical
                .create_physical_plan(logical_plan, session_state)
                .await;
        }
        // information_schema describes this session's catalog: it runs here.
        let plan = kiln_physical_planner()
            .create_physical_plan(logical_plan, session_state)
            .await?;
        if scans_only_information_schema(logical_plan)? {
            return Ok(plan);
        }
        let plan = encodable(plan)?;
        let plan: Arc<dyn ExecutionPlan> = if self.one_stage {
            Arc::new(LocalStageExec::new(plan))
        } else {
            for_separate_tasks(plan)?
        };
        Ok(Arc::new(SubmittedPlanExec::new(
            plan,
            self.scheduler_url.clone(),
            session_state.session_id().to_string(),
            with_runtime_limits(session_state.config().clone(), session_state.runtime_env()),
        )))
    }
}

/// `plan`, run on the cluster as one Ballista job: executing it submits the
/// plan to the scheduler and streams the job's result back.
#[derive(Debug)]
pub struct SubmittedPlanExec {
    plan: Arc<dyn ExecutionPlan>,
    scheduler_url: String,
    session_id: String,
    config: SessionConfig,
    properties: Arc<PlanProperties>,
}

impl SubmittedPlanExec {
    fn new(
        plan: Arc<dyn ExecutionPlan>,
        scheduler_url: String,
        session_id: String,
        config: SessionConfig,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(plan.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            plan,
            scheduler_url,
            session_id,
            config,
            properties,
        }
    }
}

impl DisplayAs for SubmittedPlanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SubmittedPlanExec: scheduler={}", self.scheduler_url)?;
        write_inner_plan(f, self.plan.as_ref())
    }
}

impl ExecutionPlan for SubmittedPlanExec {
    fn name(&self) -> &str {
        "SubmittedPlanExec"
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let plan = Arc::clone(&self.plan);
        let (url, session_id, config) = (
            self.scheduler_url.clone(),
            self.session_id.clone(),
            self.config.clone(),
        );
        let job = async move {
            let codec = config.ballista_physical_extension_codec();
            execute_physical_plan::<PhysicalPlanNode>(
                url,
                &config.ballista_config(),
                plan,
                codec.as_ref(),
                session_id,
                config,
            )
            .await
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.plan.schema(),
            futures::stream::once(job).try_flatten(),
        )))
    }
}
