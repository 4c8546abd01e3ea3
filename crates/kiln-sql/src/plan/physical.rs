//! Physical operators: [`TrainExec`], a training round on each partition, and
//! the planner that turns [`TrainRoundNode`] into it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{BinaryArray, RecordBatch, UInt64Array};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;
use kiln_ml::PartitionRound;

use crate::error::ml_error;

use crate::functions::batch::{to_batch, LabelKind};
use crate::plan::logical::{RoundSpec, TrainRoundNode, ROUND_OUTPUT_SCHEMA};
use crate::plan::row_cache;

/// Runs one training round on every partition of its input and emits one row
/// per partition: `(shard, update)`, the shard key of its rows and the update
/// as JSON bytes.
/// Dropping the stream stops the round and frees the local model copy.
#[derive(Debug)]
pub struct TrainExec {
    pub input: Arc<dyn ExecutionPlan>,
    pub spec_bytes: Arc<Vec<u8>>,
    spec: Arc<RoundSpec>,
    properties: Arc<PlanProperties>,
}

impl TrainExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec_bytes: Arc<Vec<u8>>) -> Result<Self> {
        let spec = Arc::new(TrainRoundNode::decode_spec(&spec_bytes)?);
        let partitions = input.output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&ROUND_OUTPUT_SCHEMA)),
            Partitioning::UnknownPartitioning(partitions),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Ok(Self {
            input,
            spec_bytes,
            spec,
            properties,
        })
    }
}

impl DisplayAs for TrainExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "TrainExec: {} round {} ({:?})",
            self.spec.round.model.model_type, self.spec.round.number, self.spec.round.kind
        )
    }
}

impl ExecutionPlan for TrainExec {
    fn name(&self) -> &str {
        "TrainExec"
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
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("TrainExec needs one child".into()))?;
        Ok(Arc::new(TrainExec::try_new(
            input,
            Arc::clone(&self.spec_bytes),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.partitioning.partition_count();
        let cached = self
            .spec
            .cache_run
            .as_deref()
            .and_then(|run| row_cache::cache().rows(run, partition, partitions));
        let input = match cached {
            Some(rows) => RoundInput::Cached(rows),
            None => RoundInput::Stream(self.input.execute(partition, context)?),
        };
        let spec = Arc::clone(&self.spec);
        let future = async move {
            let (shard, update) = run_round(&spec, input, partition).await?;
            log::debug!(
                "TrainExec round {} partition {partition}: shard {shard:016x}, {} update bytes",
                spec.round.number,
                update.len()
            );
            RecordBatch::try_new(
                Arc::clone(&ROUND_OUTPUT_SCHEMA),
                vec![
                    Arc::new(UInt64Array::from(vec![shard])),
                    Arc::new(BinaryArray::from_vec(vec![update.as_slice()])),
                ],
            )
            .map_err(DataFusionError::from)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&ROUND_OUTPUT_SCHEMA),
            futures::stream::once(future),
        )))
    }
}

fn label_kind(spec: &RoundSpec) -> Option<LabelKind> {
    spec.label.as_ref()?;
    Some(match &spec.classes {
        Some(classes) => LabelKind::Classes(
            classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i as u32))
                .collect::<HashMap<_, _>>(),
        ),
        None => LabelKind::Regression,
    })
}

/// A partition's rows for a round: read from the input, or kept from an
/// earlier round of the same run.
enum RoundInput {
    Stream(SendableRecordBatchStream),
    Cached(Arc<Vec<kiln_ml::Batch>>),
}

/// Runs one round over a partition's rows; returns the partition's shard key
/// ([`kiln_ml::data::Batch::shard_key`] of its first batch) and its update.
async fn run_round(
    spec: &RoundSpec,
    input: RoundInput,
    partition_index: usize,
) -> Result<(u64, Vec<u8>)> {
    let backend = kiln_ml::device::backend(spec.options.device)
        .map_err(ml_error("training round: device"))?;
    let backend = backend.as_ref();
    let kind = label_kind(spec);
    let features = spec.features.len();
    let convert = |batch: &RecordBatch| {
        let label = match (&spec.label, &kind) {
            (Some(name), Some(kind)) => Some((name.as_str(), batch.column(features), kind)),
            _ => None,
        };
        to_batch(
            &spec.features,
            &batch.columns()[..features],
            label,
            batch.num_rows(),
        )
    };
    let mut partition = PartitionRound::new(&spec.round, &spec.options);
    match input {
        RoundInput::Cached(rows) => {
            for batch in rows.iter() {
                partition
                    .feed(backend, batch.clone())
                    .map_err(ml_error("training round"))?;
            }
        }
        RoundInput::Stream(mut input) => {
            let cache = row_cache::cache();
            let mut kept = spec.cache_run.as_ref().map(|run| (run, Vec::new()));
            let mut first = true;
            while let Some(batch) = input.next().await {
                let batch = convert(&batch?)?;
                if std::mem::take(&mut first) {
                    log_first_batch(&batch);
                }
                if let Some((run, batches)) = &mut kept {
                    if cache.reserve(run, &batch) {
                        batches.push(batch.clone());
                    } else {
                        kept = None;
                    }
                }
                partition
                    .feed(backend, batch)
                    .map_err(ml_error("training round"))?;
            }
            if let Some((run, batches)) = kept {
                cache.store(run, partition_index, batches);
            }
        }
    }
    let result = partition.finish();
    Ok((result.shard, to_json(&result.outcome)?))
}

fn log_first_batch(batch: &kiln_ml::data::Batch) {
    log::debug!(
        "first batch: {} rows, first row {:?}",
        batch.rows(),
        &batch.features[..batch.dims.min(batch.features.len())]
    );
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| DataFusionError::Internal(e.to_string()))
}

/// DataFusion's physical planner with Kiln's extension nodes, as every role
/// plans with it.
pub fn kiln_physical_planner() -> datafusion::physical_planner::DefaultPhysicalPlanner {
    datafusion::physical_planner::DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(
        KilnExtensionPlanner,
    )])
}

/// Plans [`TrainRoundNode`] into [`TrainExec`].
#[derive(Debug, Default)]
pub struct KilnExtensionPlanner;

#[async_trait]
impl ExtensionPlanner for KilnExtensionPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(round) = node.as_any().downcast_ref::<TrainRoundNode>() else {
            return Ok(None);
        };
        let input = physical_inputs
            .first()
            .ok_or_else(|| DataFusionError::Internal("KilnTrainRound without input".into()))?;
        Ok(Some(Arc::new(TrainExec::try_new(
            Arc::clone(input),
            Arc::clone(&round.spec),
        )?)))
    }
}
