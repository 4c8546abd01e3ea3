//! Kiln's logical and physical extension codecs. They wrap Ballista's codecs
//! (which encode shuffles and table formats) and put Kiln's own nodes in an
//! envelope: the magic `KILN`, [`CODEC_VERSION`], a node tag, then the node's
//! bytes. Anything without the magic goes to Ballista's codec unchanged, so
//! decoding never silently falls through to the wrong codec.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{
    AsExecutionPlan, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalPlanNode;

use crate::plan::local_stage::LocalStageExec;
use crate::plan::logical::TrainRoundNode;
use crate::plan::physical::TrainExec;

/// Version of Kiln's envelope; bump on any incompatible change of a node's bytes.
pub const CODEC_VERSION: u8 = 2;
const MAGIC: &[u8; 4] = b"KILN";
const TAG_TRAIN_ROUND: u8 = 1;
const TAG_LOCAL_STAGE: u8 = 2;

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
        self.ballista.try_encode(node, buf, converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;
    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;

    use super::*;

    #[tokio::test]
    async fn a_local_stage_round_trips_with_its_exchanges_and_gives_the_same_rows() {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(3),
        );
        let plan = ctx
            .sql(
                "SELECT k, count(*) AS n FROM (SELECT column1 % 7 AS k FROM \
                 (VALUES (1), (2), (3), (9), (10), (23))) GROUP BY k ORDER BY k",
            )
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
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

        let codec = KilnPhysicalCodec::default();
        let converter = DefaultPhysicalProtoConverter {};
        let mut buf = vec![];
        codec
            .try_encode(Arc::clone(&stage), &mut buf, &converter)
            .unwrap();
        assert_eq!((&buf[..4], buf[5]), (&b"KILN"[..], TAG_LOCAL_STAGE));
        let decoded = codec
            .try_decode(&buf, &[], &ctx.task_ctx(), &converter)
            .unwrap();
        assert_eq!(inner_plan(&decoded), inner);

        let expected = collect(Arc::clone(&stage), ctx.task_ctx()).await.unwrap();
        let got = collect(decoded, ctx.task_ctx()).await.unwrap();
        let text = |b: &[datafusion::arrow::array::RecordBatch]| {
            datafusion::arrow::util::pretty::pretty_format_batches(b)
                .unwrap()
                .to_string()
        };
        assert_eq!(text(&got), text(&expected));
        assert!(text(&got).contains("| 2 | 3 |"), "{}", text(&got));
    }
}
