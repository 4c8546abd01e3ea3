//! Logical extension nodes: [`TrainRoundNode`], one training round over its
//! input query, planned to [`crate::plan::physical::TrainExec`].

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use kiln_ml::{Round, TrainOptions};
use serde::{Deserialize, Serialize};

/// Everything a partition needs for one round; serialized into the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSpec {
    /// What the driver asks of every partition, and the model to start from.
    pub round: Round,
    pub options: TrainOptions,
    pub features: Vec<String>,
    pub label: Option<String>,
    /// Class values (as text) in index order; `None` for regression / kmeans.
    pub classes: Option<Vec<String>>,
    /// The training run whose rows the executing process may keep between
    /// rounds ([`crate::plan::row_cache`]); `None`: read the input every round.
    #[serde(default)]
    pub cache_run: Option<String>,
}

/// The schema every training round returns: one row per input partition.
pub static ROUND_OUTPUT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::UInt64, false),
        Field::new("update", DataType::Binary, false),
    ]))
});

/// One training round over `input` (the training query projected to the
/// feature and label columns). Partitions in: the input's; partitions out:
/// the same, one row each. Memory per partition: one input batch plus the model.
#[derive(Debug, Clone)]
pub struct TrainRoundNode {
    pub input: LogicalPlan,
    /// The [`RoundSpec`] as JSON: compared, hashed and shipped as bytes.
    pub spec: Arc<Vec<u8>>,
    schema: DFSchemaRef,
}

impl TrainRoundNode {
    pub fn new(input: LogicalPlan, spec: &RoundSpec) -> Result<Self> {
        let bytes =
            serde_json::to_vec(spec).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        Self::from_bytes(input, bytes)
    }

    pub fn from_bytes(input: LogicalPlan, spec: Vec<u8>) -> Result<Self> {
        let schema = Arc::new(DFSchema::try_from(ROUND_OUTPUT_SCHEMA.as_ref().clone())?);
        Ok(Self {
            input,
            spec: Arc::new(spec),
            schema,
        })
    }

    pub fn decode_spec(bytes: &[u8]) -> Result<RoundSpec> {
        serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("corrupt training round spec: {e}")))
    }
}

impl PartialEq for TrainRoundNode {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.input == other.input
    }
}

impl Eq for TrainRoundNode {}

impl Hash for TrainRoundNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.spec.hash(state);
        self.input.hash(state);
    }
}

impl PartialOrd for TrainRoundNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.spec.partial_cmp(&other.spec) {
            Some(Ordering::Equal) => self.input.partial_cmp(&other.input),
            other => other,
        }
    }
}

impl UserDefinedLogicalNodeCore for TrainRoundNode {
    fn name(&self) -> &str {
        "KilnTrainRound"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "KilnTrainRound: spec={} bytes", self.spec.len())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("KilnTrainRound needs one input".into()))?;
        Self::from_bytes(input, self.spec.as_ref().clone())
    }

    fn necessary_children_exprs(&self, _output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        // Every input column is a feature or the label.
        Some(vec![(0..self.input.schema().fields().len()).collect()])
    }
}
