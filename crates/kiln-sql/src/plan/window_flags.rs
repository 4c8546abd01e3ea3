//! Window operators whose functions datafusion-proto would send without
//! their flags. A user-defined window function (`lag`, `lead`,
//! `first_value`, `nth_value`, …) carries two flags that its protobuf drops:
//! `IGNORE NULLS`, and whether it evaluates in reverse order (DataFusion's
//! optimizer reverses a window to reuse an existing sort, e.g.
//! `nth_value(c, 2) OVER (ORDER BY c DESC)` over rows sorted ascending).
//! Without them an executor computed other answers, silently.
//!
//! Before a plan leaves the client, [`carrying_window_flags`] wraps each
//! such operator in a [`FlaggedWindowExec`], which runs it unchanged and
//! which Kiln's codec encodes with the flags ([`encode`], [`decode`]). The
//! wrapper stays around the decoded operator, so a scheduler re-encoding a
//! stage for its executors keeps the flags too.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::ReversedUDWF;
use datafusion::physical_expr::window::{
    PlainAggregateWindowExpr, SlidingAggregateWindowExpr, StandardWindowExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::windows::{
    create_udwf_window_expr, BoundedWindowAggExec, WindowAggExec, WindowUDFExpr,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties, WindowExpr,
};
use datafusion_proto::physical_plan::from_proto::parse_physical_window_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_window_expr;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf as proto;
use prost::Message;

/// The flags of a user-defined window function expression, `None` for
/// other window expressions. DataFusion has no accessor for them; its Debug
/// form ends with both fields.
fn udwf_flags(expr: &Arc<dyn WindowExpr>) -> Option<Flags> {
    let standard = expr.as_any().downcast_ref::<StandardWindowExpr>()?;
    let udwf = standard
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()?;
    let debug = format!("{udwf:?}");
    let flag = |name: &str| {
        let at = debug.rfind(&format!("{name}: "))? + name.len() + 2;
        Some(debug[at..].starts_with("true"))
    };
    Some(Flags {
        reversed: flag("is_reversed")?,
        ignore_nulls: flag("ignore_nulls")?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Flags {
    reversed: bool,
    ignore_nulls: bool,
}

fn window_exprs(plan: &dyn ExecutionPlan) -> Option<&[Arc<dyn WindowExpr>]> {
    if let Some(window) = plan.downcast_ref::<BoundedWindowAggExec>() {
        return Some(window.window_expr());
    }
    plan.downcast_ref::<WindowAggExec>()
        .map(|window| window.window_expr())
}

/// Whether `expr` is an aggregate over a window with a `FILTER (WHERE …)`,
/// which datafusion-proto drops and DataFusion gives no access to (its
/// Debug form ends with the field).
fn has_aggregate_filter(expr: &Arc<dyn WindowExpr>) -> bool {
    let any = expr.as_any();
    let debug = if let Some(plain) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        format!("{plain:?}")
    } else if let Some(sliding) = any.downcast_ref::<SlidingAggregateWindowExpr>() {
        format!("{sliding:?}")
    } else {
        return false;
    };
    debug
        .rfind("filter: ")
        .is_some_and(|at| debug[at..].starts_with("filter: Some("))
}

/// `node` wrapped in a [`FlaggedWindowExec`] if it is a window operator
/// whose functions have a flag set; `None` for any other node. A window
/// aggregate with a `FILTER` is refused: it cannot be sent to the executors
/// yet.
pub fn carrying_window_flags(
    node: &Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(exprs) = window_exprs(node.as_ref()) else {
        return Ok(None);
    };
    if let Some(filtered) = exprs.iter().find(|e| has_aggregate_filter(e)) {
        return Err(DataFusionError::NotImplemented(format!(
            "not supported yet on Ballista: the window aggregate {} has a FILTER (WHERE ...), \
             which cannot be sent to executors yet; write the condition into the \
             aggregate's argument instead, e.g. count(CASE WHEN cond THEN 1 END) OVER (...)",
            filtered.name()
        )));
    }
    let flagged = exprs
        .iter()
        .any(|e| udwf_flags(e).is_some_and(|f| f != Flags::default()));
    Ok(flagged.then(|| Arc::new(FlaggedWindowExec::new(Arc::clone(node))) as _))
}

/// A window operator ([`BoundedWindowAggExec`] or [`WindowAggExec`]), run as
/// it is; Kiln's codec sends it with its functions' flags.
#[derive(Debug)]
pub struct FlaggedWindowExec {
    inner: Arc<dyn ExecutionPlan>,
}

impl FlaggedWindowExec {
    fn new(inner: Arc<dyn ExecutionPlan>) -> Self {
        Self { inner }
    }
}

impl DisplayAs for FlaggedWindowExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for FlaggedWindowExec {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.inner.input_distribution_requirements()
    }

    fn required_input_ordering(
        &self,
    ) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.inner.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.inner.maintains_input_order()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.inner.benefits_from_input_partitioning()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inner.children()
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let inner = Arc::clone(&self.inner).replace_children(children, options)?;
        Ok(Arc::new(FlaggedWindowExec::new(inner)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }

    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        self.inner.metrics()
    }
}

/// The body of a [`FlaggedWindowExec`]; its input is its only input.
#[derive(Clone, PartialEq, Message)]
struct FlaggedWindowBody {
    #[prost(message, repeated, tag = "1")]
    exprs: Vec<proto::PhysicalWindowExprNode>,
    #[prost(bool, repeated, tag = "2")]
    reversed: Vec<bool>,
    /// A [`BoundedWindowAggExec`] (else a [`WindowAggExec`]).
    #[prost(bool, tag = "3")]
    bounded: bool,
    /// 0 linear, 1 partially sorted (on `sorted_columns`), 2 sorted.
    #[prost(uint32, tag = "4")]
    order_mode: u32,
    #[prost(uint64, repeated, tag = "5")]
    sorted_columns: Vec<u64>,
    #[prost(bool, tag = "6")]
    can_repartition: bool,
}

/// `window`'s bytes, its functions' flags included.
pub fn encode(
    window: &FlaggedWindowExec,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Vec<u8>> {
    let inner = window.inner.as_ref();
    let exprs = window_exprs(inner).ok_or_else(|| {
        DataFusionError::Internal(format!("FlaggedWindowExec over {}", inner.name()))
    })?;
    let mut body = FlaggedWindowBody {
        can_repartition: !partition_keys(inner).is_empty(),
        ..Default::default()
    };
    for expr in exprs {
        let flags = udwf_flags(expr).unwrap_or_default();
        let mut node = serialize_physical_window_expr(expr, codec, converter)?;
        node.ignore_nulls |= flags.ignore_nulls;
        body.exprs.push(node);
        body.reversed.push(flags.reversed);
    }
    if let Some(bounded) = inner.downcast_ref::<BoundedWindowAggExec>() {
        body.bounded = true;
        body.order_mode = match &bounded.input_order_mode {
            InputOrderMode::Linear => 0,
            InputOrderMode::PartiallySorted(columns) => {
                body.sorted_columns = columns.iter().map(|&c| c as u64).collect();
                1
            }
            InputOrderMode::Sorted => 2,
        };
    }
    Ok(body.encode_to_vec())
}

fn partition_keys(window: &dyn ExecutionPlan) -> Vec<Arc<dyn PhysicalExpr>> {
    if let Some(bounded) = window.downcast_ref::<BoundedWindowAggExec>() {
        return bounded.partition_keys();
    }
    window
        .downcast_ref::<WindowAggExec>()
        .map(|w| w.partition_keys())
        .unwrap_or_default()
}

/// The [`FlaggedWindowExec`] `body` describes, over `input`.
pub fn decode(
    body: &[u8],
    input: Arc<dyn ExecutionPlan>,
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let body = FlaggedWindowBody::decode(body)
        .map_err(|e| DataFusionError::Internal(format!("malformed Kiln window node: {e}")))?;
    let schema = input.schema();
    let exprs = body
        .exprs
        .iter()
        .zip(body.reversed.iter().chain(std::iter::repeat(&false)))
        .map(|(node, &reversed)| {
            let expr = parse_physical_window_expr(node, ctx, &schema, converter)?;
            if reversed {
                reversed_udwf(&expr, &schema, node.ignore_nulls)
            } else {
                Ok(expr)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let window: Arc<dyn ExecutionPlan> = if body.bounded {
        let mode = match body.order_mode {
            0 => InputOrderMode::Linear,
            1 => InputOrderMode::PartiallySorted(
                body.sorted_columns.iter().map(|&c| c as usize).collect(),
            ),
            _ => InputOrderMode::Sorted,
        };
        Arc::new(BoundedWindowAggExec::try_new(
            exprs,
            input,
            mode,
            body.can_repartition,
        )?)
    } else {
        Arc::new(WindowAggExec::try_new(exprs, input, body.can_repartition)?)
    };
    Ok(Arc::new(FlaggedWindowExec::new(window)))
}

/// `expr` (a user-defined window function decoded without its flags)
/// evaluated in reverse, as DataFusion's optimizer had planned it: the
/// reverse of its function's reverse, which flips the flag.
fn reversed_udwf(
    expr: &Arc<dyn WindowExpr>,
    schema: &datafusion::arrow::datatypes::Schema,
    ignore_nulls: bool,
) -> Result<Arc<dyn WindowExpr>> {
    let standard = expr
        .as_any()
        .downcast_ref::<StandardWindowExpr>()
        .ok_or_else(|| DataFusionError::Internal("a reversed window expression".into()))?;
    let function = standard.get_standard_func_expr();
    let udwf = function
        .as_any()
        .downcast_ref::<WindowUDFExpr>()
        .ok_or_else(|| DataFusionError::Internal("a reversed window function".into()))?;
    let opposite = match udwf.fun().reverse_expr() {
        ReversedUDWF::Reversed(opposite) => opposite,
        ReversedUDWF::Identical | ReversedUDWF::NotSupported => {
            return Err(DataFusionError::Internal(format!(
                "window function {} was planned in reverse but cannot be reversed",
                udwf.fun().name()
            )))
        }
    };
    let forward = create_udwf_window_expr(
        &opposite,
        udwf.args(),
        schema,
        function.name().to_string(),
        ignore_nulls,
    )?;
    let reversed = forward.reverse_expr().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "window function {} has no reverse",
            opposite.name()
        ))
    })?;
    let same_function = reversed
        .as_any()
        .downcast_ref::<WindowUDFExpr>()
        .is_some_and(|r| r.fun().name() == udwf.fun().name());
    if !same_function {
        return Err(DataFusionError::Internal(format!(
            "window function {} does not reverse back to itself",
            udwf.fun().name()
        )));
    }
    Ok(Arc::new(StandardWindowExpr::new(
        reversed,
        expr.partition_by(),
        expr.order_by(),
        Arc::clone(expr.get_window_frame()),
    )))
}
