//! Kiln's logical and physical extension codecs. They wrap Ballista's codecs
//! (which encode shuffles and table formats) and put Kiln's own nodes in an
//! envelope: the magic `KILN`, [`CODEC_VERSION`], a node tag, then the node's
//! bytes. Anything without the magic goes to Ballista's codec unchanged, so
//! decoding never silently falls through to the wrong codec.
//!
//! It also carries the DataFusion nodes datafusion-proto has no message
//! for: recursive CTEs ([`RecursiveQueryExec`] and the [`WorkTableExec`] its
//! recursive term reads the previous iteration from) and the per-partition
//! top K of window queries ([`PartitionedTopKExec`]).

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::TableReference;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::physical_plan::FileSink;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::sorts::partitioned_topk::{PartitionedTopKExec, WindowFnKind};
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_sort_exprs;
use datafusion_proto::physical_plan::to_proto::serialize_physical_sort_exprs;
use datafusion_proto::physical_plan::{
    AsExecutionPlan, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{self as proto, PhysicalPlanNode};
use prost::Message;

use crate::plan::local_stage::LocalStageExec;
use crate::plan::logical::TrainRoundNode;
use crate::plan::physical::TrainExec;
use crate::plan::window_flags::{self, FlaggedWindowExec};

/// Version of Kiln's envelope; bump on any incompatible change of a node's bytes.
pub const CODEC_VERSION: u8 = 2;
const MAGIC: &[u8; 4] = b"KILN";
const TAG_TRAIN_ROUND: u8 = 1;
const TAG_LOCAL_STAGE: u8 = 2;
const TAG_RECURSIVE_QUERY: u8 = 3;
const TAG_WORK_TABLE: u8 = 4;
const TAG_PARTITIONED_TOPK: u8 = 5;
const TAG_FLAGGED_WINDOW: u8 = 6;

/// A [`RecursiveQueryExec`]; its static and recursive terms are its inputs.
#[derive(Clone, PartialEq, Message)]
struct RecursiveQueryBody {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bool, tag = "2")]
    is_distinct: bool,
    #[prost(message, optional, tag = "3")]
    schema: Option<proto::Schema>,
}

/// A [`PartitionedTopKExec`] (`ROW_NUMBER()` / `RANK()` filtered to the top
/// K per window partition); its input is its only input.
#[derive(Clone, PartialEq, Message)]
struct PartitionedTopKBody {
    #[prost(message, repeated, tag = "1")]
    sort: Vec<proto::PhysicalSortExprNode>,
    #[prost(uint64, tag = "2")]
    partition_prefix_len: u64,
    #[prost(uint64, tag = "3")]
    fetch: u64,
    #[prost(bool, tag = "4")]
    rank: bool,
}

/// A [`WorkTableExec`]: its name and its (projected) schema. The projection
/// is restored from the enclosing [`RecursiveQueryExec`]'s schema.
#[derive(Clone, PartialEq, Message)]
struct WorkTableBody {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    schema: Option<proto::Schema>,
}

fn envelope(tag: u8, body: &[u8], buf: &mut Vec<u8>) {
    buf.extend_from_slice(MAGIC);
    buf.push(CODEC_VERSION);
    buf.push(tag);
    buf.extend_from_slice(body);
}

/// `Some((tag, body))` for Kiln's envelope, `None` for anything else.
fn open(buf: &[u8]) -> Result<Option<(u8, &[u8])>> {
    if buf.len() < 6 || &buf[..4] != MAGIC {
        return Ok(None);
    }
    if buf[4] != CODEC_VERSION {
        return Err(DataFusionError::Configuration(format!(
            "a Kiln process sent a plan in Kiln codec version {}, and this process (Kiln {}) \
             reads codec version {CODEC_VERSION}: run the same Kiln version on the client, \
             the scheduler and every executor",
            buf[4],
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(Some((buf[5], &buf[6..])))
}

/// Logical codec: [`TrainRoundNode`], then Ballista's.
#[derive(Debug, Default)]
pub struct KilnLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for KilnLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        match open(buf)? {
            Some((TAG_TRAIN_ROUND, body)) => {
                let input = inputs.first().cloned().ok_or_else(|| {
                    DataFusionError::Internal("KilnTrainRound without input".into())
                })?;
                Ok(Extension {
                    node: Arc::new(TrainRoundNode::from_bytes(input, body.to_vec())?),
                })
            }
            Some((tag, _)) => Err(DataFusionError::Internal(format!(
                "unknown Kiln logical node tag {tag}"
            ))),
            None => self.ballista.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        match node.node.as_any().downcast_ref::<TrainRoundNode>() {
            Some(round) => {
                envelope(TAG_TRAIN_ROUND, &round.spec, buf);
                Ok(())
            }
            None => self.ballista.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }
}

/// Physical codec: [`TrainExec`] and [`LocalStageExec`] (its plan encoded
/// with this codec), then Ballista's.
#[derive(Debug, Default)]
pub struct KilnPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for KilnPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match open(buf)? {
            Some((TAG_TRAIN_ROUND, body)) => {
                let input = inputs
                    .first()
                    .cloned()
                    .ok_or_else(|| DataFusionError::Internal("TrainExec without input".into()))?;
                Ok(Arc::new(TrainExec::try_new(
                    input,
                    Arc::new(body.to_vec()),
                )?))
            }
            Some((TAG_LOCAL_STAGE, body)) => {
                let proto = PhysicalPlanNode::try_decode(body)?;
                let plan = converter
                    .proto_to_execution_plan(&proto, &PhysicalPlanDecodeContext::new(ctx, self))?;
                Ok(Arc::new(LocalStageExec::new(plan)))
            }
            Some((TAG_RECURSIVE_QUERY, body)) => decode_recursive_query(body, inputs),
            Some((TAG_WORK_TABLE, body)) => {
                let body = WorkTableBody::decode(body).map_err(decode_error)?;
                Ok(Arc::new(WorkTableExec::new(
                    body.name,
                    schema_from(body.schema.as_ref())?,
                    None,
                )?))
            }
            Some((TAG_FLAGGED_WINDOW, body)) => {
                let input = inputs.first().cloned().ok_or_else(|| {
                    DataFusionError::Internal("a window operator without input".into())
                })?;
                window_flags::decode(
                    body,
                    input,
                    &PhysicalPlanDecodeContext::new(ctx, self),
                    converter,
                )
            }
            Some((TAG_PARTITIONED_TOPK, body)) => {
                let body = PartitionedTopKBody::decode(body).map_err(decode_error)?;
                let input = inputs.first().cloned().ok_or_else(|| {
                    DataFusionError::Internal("PartitionedTopKExec without input".into())
                })?;
                let sort = parse_physical_sort_exprs(
                    &body.sort,
                    &PhysicalPlanDecodeContext::new(ctx, self),
                    &input.schema(),
                    converter,
                )?;
                let sort = LexOrdering::new(sort).ok_or_else(|| {
                    DataFusionError::Internal("PartitionedTopKExec without sort keys".into())
                })?;
                let kind = if body.rank {
                    WindowFnKind::Rank
                } else {
                    WindowFnKind::RowNumber
                };
                Ok(Arc::new(PartitionedTopKExec::try_new(
                    input,
                    sort,
                    body.partition_prefix_len as usize,
                    body.fetch as usize,
                    kind,
                )?))
            }
            Some((tag, _)) => Err(DataFusionError::Internal(format!(
                "unknown Kiln physical node tag {tag}"
            ))),
            None => self.ballista.try_decode(buf, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(train) = node.downcast_ref::<TrainExec>() {
            envelope(TAG_TRAIN_ROUND, &train.spec_bytes, buf);
            return Ok(());
        }
        if let Some(stage) = node.downcast_ref::<LocalStageExec>() {
            let mut body = Vec::new();
            converter
                .execution_plan_to_proto(stage.plan(), self)?
                .try_encode(&mut body)?;
            envelope(TAG_LOCAL_STAGE, &body, buf);
            return Ok(());
        }
        if let Some(query) = node.downcast_ref::<RecursiveQueryExec>() {
            let body = RecursiveQueryBody {
                name: query.name().to_string(),
                is_distinct: query.is_distinct(),
                schema: Some(proto::Schema::try_from(query.schema().as_ref())?),
            };
            envelope(TAG_RECURSIVE_QUERY, &body.encode_to_vec(), buf);
            return Ok(());
        }
        if let Some(window) = node.downcast_ref::<FlaggedWindowExec>() {
            let body = window_flags::encode(window, self, converter)?;
            envelope(TAG_FLAGGED_WINDOW, &body, buf);
            return Ok(());
        }
        if let Some(topk) = node.downcast_ref::<PartitionedTopKExec>() {
            let body = PartitionedTopKBody {
                sort: serialize_physical_sort_exprs(topk.expr().iter().cloned(), self, converter)?,
                partition_prefix_len: topk.partition_prefix_len() as u64,
                fetch: topk.fetch() as u64,
                rank: topk.fn_kind() == WindowFnKind::Rank,
            };
            envelope(TAG_PARTITIONED_TOPK, &body.encode_to_vec(), buf);
            return Ok(());
        }
        if let Some(work_table) = node.downcast_ref::<WorkTableExec>() {
            let body = WorkTableBody {
                name: work_table.name().to_string(),
                schema: Some(proto::Schema::try_from(work_table.schema().as_ref())?),
            };
            envelope(TAG_WORK_TABLE, &body.encode_to_vec(), buf);
            return Ok(());
        }
        self.ballista.try_encode(node, buf, converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }
}

/// `plan` as the codecs can carry it: the nodes datafusion-proto would
/// encode wrongly rewritten into ones it encodes as they run, in one pass:
/// - window operators get their functions' flags carried
///   ([`window_flags::carrying_window_flags`]);
/// - a CSV sink gets explicit date and time formats
///   ([`csv_sink_with_explicit_formats`]);
/// - a generated source read through a projection gets the projection above
///   it ([`generator_unprojected`]);
/// - `GROUP BY GROUPING SETS (())` alone is refused: its protobuf reads back
///   as an aggregate without grouping, whose schema lacks the grouping id the
///   final aggregate reads (no rows came back).
pub fn encodable(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        refuse_lone_empty_grouping_set(&node)?;
        let rewritten = match window_flags::carrying_window_flags(&node)? {
            Some(rewritten) => Some(rewritten),
            None => match csv_sink_with_explicit_formats(&node)? {
                Some(rewritten) => Some(rewritten),
                None => generator_unprojected(&node)?,
            },
        };
        Ok(match rewritten {
            Some(rewritten) => Transformed::yes(rewritten),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

fn refuse_lone_empty_grouping_set(node: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
        return Ok(());
    };
    let group_by = aggregate.group_expr();
    if group_by.is_empty() && group_by.has_grouping_set() {
        return Err(DataFusionError::NotImplemented(
            "not supported yet on Ballista: GROUP BY GROUPING SETS (()) with only the \
             empty grouping set cannot be sent to executors yet; drop the GROUP BY for \
             one row over all input rows"
                .into(),
        ));
    }
    Ok(())
}

/// A generated source (`generate_series`, `range`) read through a
/// projection, as the unprojected source under a `ProjectionExec`:
/// datafusion-proto encodes the projected schema with a generator of the
/// full one (a `count(*)` over it failed on the executor).
fn generator_unprojected(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(lazy) = node.downcast_ref::<LazyMemoryExec>() else {
        return Ok(None);
    };
    let [generator] = lazy.generators().as_slice() else {
        return Ok(None);
    };
    // The generator makes batches of its full schema: ask a fresh copy.
    let fresh = generator.read().reset_state();
    let Some(sample) = fresh.write().generate_next_batch()? else {
        return Ok(None);
    };
    let full = sample.schema();
    if full.fields() == lazy.schema().fields() {
        return Ok(None);
    }
    let projection = lazy
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let at = full.index_of(f.name())?;
            Ok((
                Arc::new(Column::new(f.name(), at))
                    as Arc<dyn datafusion::physical_plan::PhysicalExpr>,
                f.name().clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut unprojected = LazyMemoryExec::try_new(full, vec![generator.read().reset_state()])?;
    unprojected.try_set_partitioning(lazy.properties().partitioning.clone())?;
    Ok(Some(Arc::new(ProjectionExec::try_new(
        projection,
        Arc::new(unprojected),
    )?)))
}

/// A CSV sink (`COPY ... STORED AS CSV`, CSV external tables) with
/// explicit date and time formats where it has none: datafusion-proto reads
/// an absent format back as the empty format, and the executor wrote every
/// date and timestamp as an empty field. The formats are those the CSV
/// writer uses by default (RFC 3339, fractions of a second only where
/// there are any).
fn csv_sink_with_explicit_formats(
    node: &Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(exec) = node.downcast_ref::<DataSinkExec>() else {
        return Ok(None);
    };
    let sink: &dyn std::any::Any = exec.sink();
    let Some(csv) = sink.downcast_ref::<CsvSink>() else {
        return Ok(None);
    };
    let mut options = csv.writer_options().clone();
    let mut writer = options.writer_options.clone();
    type Get = fn(&WriterBuilder) -> Option<&str>;
    type Set = fn(WriterBuilder, String) -> WriterBuilder;
    let defaults: [(Get, Set, &str); 4] = [
        (
            WriterBuilder::date_format,
            WriterBuilder::with_date_format,
            "%Y-%m-%d",
        ),
        (
            WriterBuilder::datetime_format,
            WriterBuilder::with_datetime_format,
            "%Y-%m-%dT%H:%M:%S%.f",
        ),
        (
            WriterBuilder::timestamp_format,
            WriterBuilder::with_timestamp_format,
            "%Y-%m-%dT%H:%M:%S%.f",
        ),
        (
            WriterBuilder::time_format,
            WriterBuilder::with_time_format,
            "%H:%M:%S%.f",
        ),
    ];
    let mut changed = false;
    for (get, set, format) in defaults {
        if get(&writer).is_none() {
            writer = set(writer, format.to_string());
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    options.writer_options = writer;
    let sink = CsvSink::new(csv.config().clone(), options);
    Ok(Some(Arc::new(DataSinkExec::new(
        Arc::clone(exec.input()),
        Arc::new(sink),
        exec.sort_order().clone(),
    ))))
}

fn decode_error(e: prost::DecodeError) -> DataFusionError {
    DataFusionError::Internal(format!("malformed Kiln plan node: {e}"))
}

fn schema_from(schema: Option<&proto::Schema>) -> Result<SchemaRef> {
    let schema = schema
        .ok_or_else(|| DataFusionError::Internal("Kiln plan node without its schema".into()))?;
    Ok(Arc::new(schema.try_into()?))
}

/// A [`RecursiveQueryExec`] over its decoded terms. Each [`WorkTableExec`]
/// of the recursive term gets back the projection of the query's rows it
/// read (the work table holds rows of the query's schema), before the query
/// hands it the work table.
fn decode_recursive_query(
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let body = RecursiveQueryBody::decode(body).map_err(decode_error)?;
    let schema = schema_from(body.schema.as_ref())?;
    let [static_term, recursive_term] = inputs else {
        return Err(DataFusionError::Internal(format!(
            "RecursiveQueryExec with {} inputs, expected 2",
            inputs.len()
        )));
    };
    let recursive_term = Arc::clone(recursive_term)
        .transform_down(|node| {
            let Some(work_table) = node
                .downcast_ref::<WorkTableExec>()
                .filter(|w| w.name() == body.name)
            else {
                return Ok(Transformed::no(node));
            };
            let read = work_table.schema();
            let mut fields = schema.fields().to_vec();
            let mut projection = Vec::with_capacity(read.fields().len());
            for field in read.fields() {
                let at = schema
                    .fields()
                    .iter()
                    .position(|f| f.name() == field.name())
                    .ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "work table {} reads column {}, which its recursive query {} \
                             does not have",
                            work_table.name(),
                            field.name(),
                            body.name
                        ))
                    })?;
                fields[at] = Arc::clone(field);
                projection.push(at);
            }
            let full = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
                fields,
                read.metadata().clone(),
            ));
            Ok(Transformed::yes(Arc::new(WorkTableExec::new(
                work_table.name().to_string(),
                full,
                Some(projection),
            )?) as Arc<dyn ExecutionPlan>))
        })?
        .data;
    Ok(Arc::new(RecursiveQueryExec::try_new(
        body.name,
        schema,
        Arc::clone(static_term),
        recursive_term,
        body.is_distinct,
    )?))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};
    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;

    use super::*;

    async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        ctx.sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap()
    }

    fn encoded(plan: Arc<dyn ExecutionPlan>) -> Vec<u8> {
        let mut buf = vec![];
        KilnPhysicalCodec::default()
            .try_encode(plan, &mut buf, &DefaultPhysicalProtoConverter {})
            .unwrap();
        buf
    }

    fn decoded(ctx: &SessionContext, buf: &[u8]) -> Arc<dyn ExecutionPlan> {
        KilnPhysicalCodec::default()
            .try_decode(buf, &[], &ctx.task_ctx(), &DefaultPhysicalProtoConverter {})
            .unwrap()
    }

    async fn rows(ctx: &SessionContext, plan: Arc<dyn ExecutionPlan>) -> String {
        let batches: Vec<RecordBatch> = collect(plan, ctx.task_ctx()).await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    /// The rows of `sql` run in this process, and after its plan went
    /// through Kiln's codec as the client sends it, and the plan.
    async fn here_and_sent(ctx: &SessionContext, sql: &str) -> (String, String, String) {
        let plan = physical(ctx, sql).await;
        let sent = encodable(Arc::clone(&plan)).unwrap();
        let received = decoded(ctx, &encoded(Arc::new(LocalStageExec::new(sent))));
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        (rows(ctx, plan).await, rows(ctx, received).await, shown)
    }

    #[tokio::test]
    async fn a_local_stage_round_trips_with_its_exchanges_and_gives_the_same_rows() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        let plan = physical(
            &ctx,
            "SELECT k, count(*) AS n FROM (SELECT column1 % 7 AS k FROM \
             (VALUES (1), (2), (3), (9), (10), (23))) GROUP BY k ORDER BY k",
        )
        .await;
        let stage: Arc<dyn ExecutionPlan> = Arc::new(LocalStageExec::new(plan));
        let inner_plan = |stage: &Arc<dyn ExecutionPlan>| {
            let stage = stage
                .downcast_ref::<LocalStageExec>()
                .expect("a LocalStageExec");
            displayable(stage.plan().as_ref()).indent(true).to_string()
        };
        let inner = inner_plan(&stage);
        assert!(inner.contains("RepartitionExec"), "{inner}");
        assert!(
            stage.children().is_empty(),
            "Ballista's stage planner sees a leaf"
        );

        let buf = encoded(Arc::clone(&stage));
        assert_eq!((&buf[..4], buf[5]), (&b"KILN"[..], TAG_LOCAL_STAGE));
        let decoded = decoded(&ctx, &buf);
        assert_eq!(inner_plan(&decoded), inner);

        let expected = rows(&ctx, Arc::clone(&stage)).await;
        let got = rows(&ctx, decoded).await;
        assert_eq!(got, expected);
        assert!(got.contains("| 2 | 3 |"), "{got}");
    }

    #[tokio::test]
    async fn a_recursive_query_round_trips_with_its_work_table_and_gives_the_same_rows() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        // The recursive term reads one of the work table's two columns, and
        // joins, so the plan has exchanges inside the recursion.
        let plan = physical(
            &ctx,
            "WITH RECURSIVE t(n, label) AS (SELECT 1, 'a' UNION ALL \
             SELECT t.n + s.step, 'b' FROM t JOIN (VALUES (1), (2)) s(step) ON true \
             WHERE t.n < 20) SELECT n, count(*) AS c FROM t GROUP BY n ORDER BY n",
        )
        .await;
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("RecursiveQueryExec"), "{shown}");
        let decoded = decoded(
            &ctx,
            &encoded(Arc::new(LocalStageExec::new(Arc::clone(&plan)))),
        );
        let expected = rows(&ctx, plan).await;
        let got = rows(&ctx, decoded).await;
        assert_eq!(got, expected);
        // Paths to 20 with steps of 1 and 2: Fibonacci numbers.
        assert!(got.contains("| 20 | 6765 |"), "{got}");
    }

    #[tokio::test]
    async fn plans_the_protobuf_would_answer_differently_are_refused() {
        let ctx = SessionContext::new();
        let plan = physical(
            &ctx,
            "SELECT count(*) FILTER (WHERE x > 1) OVER () FROM (VALUES (1), (2)) AS t(x)",
        )
        .await;
        let err = encodable(plan).unwrap_err().to_string();
        assert!(err.contains("has a FILTER (WHERE ...)"), "{err}");
        let plan = physical(
            &ctx,
            "SELECT count(*) OVER () FROM (VALUES (1), (2)) AS t(x)",
        )
        .await;
        assert!(encodable(plan).is_ok());
        let plan = physical(
            &ctx,
            "SELECT count(*) FROM (VALUES (1), (2)) AS t(x) GROUP BY GROUPING SETS (())",
        )
        .await;
        let err = encodable(plan).unwrap_err().to_string();
        assert!(err.contains("GROUPING SETS (())"), "{err}");
    }

    #[tokio::test]
    async fn window_functions_keep_ignore_nulls_and_reversed_evaluation() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS SELECT value AS c, CASE WHEN value % 3 = 0 THEN NULL ELSE value END AS n FROM generate_series(0, 30)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for sql in [
            // One sort serves both windows: the DESC ones run reversed.
            "SELECT c, FIRST_VALUE(c) OVER (ORDER BY c ASC ROWS BETWEEN 1 PRECEDING AND 5 FOLLOWING) AS fv1, \
             FIRST_VALUE(c) OVER (ORDER BY c DESC ROWS BETWEEN 1 PRECEDING AND 5 FOLLOWING) AS fv2, \
             NTH_VALUE(c, 2) OVER (ORDER BY c DESC) AS nv, \
             LAG(c, 2, 10101) OVER (ORDER BY c DESC ROWS BETWEEN 10 PRECEDING AND 1 FOLLOWING) AS lag2 \
             FROM t ORDER BY c LIMIT 8",
            "SELECT c, lag(n) IGNORE NULLS OVER (ORDER BY c) AS l, \
             lead(n, 1, -1) IGNORE NULLS OVER (ORDER BY c) AS ld, \
             last_value(n) IGNORE NULLS OVER (ORDER BY c DESC) AS lv FROM t ORDER BY c",
        ] {
            let (here, sent, plan) = here_and_sent(&ctx, sql).await;
            assert_eq!(sent, here, "{sql}\n{plan}");
        }
    }
}
