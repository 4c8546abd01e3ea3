//! Model files: parameters as safetensors tensors (`layers.N.weight` as
//! `[inputs, outputs]`, `layers.N.bias`, or `centroids` as `[k, dims]`), the
//! model's structure as JSON in the safetensors metadata under `kiln.model`.
//! Readable by any safetensors loader.

use std::collections::HashMap;

use safetensors::tensor::{SafeTensors, TensorView};
use safetensors::Dtype;

use crate::model::Model;
use crate::{MlError, Result};

const MODEL_KEY: &str = "kiln.model";

fn format_error(path: &str, reason: impl ToString) -> MlError {
    MlError::Format {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// The model as safetensors bytes.
pub fn to_bytes(model: &Model) -> Result<Vec<u8>> {
    let structure = serde_json::to_string(model).map_err(|e| format_error("<memory>", e))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    match &model.network {
        Some(network) => {
            for (i, (shape, w, b)) in network.conv_ranges().into_iter().enumerate() {
                tensors.push((
                    format!("conv.{i}.weight"),
                    shape.to_vec(),
                    bytes(&network.params[w]),
                ));
                tensors.push((
                    format!("conv.{i}.bias"),
                    vec![shape[0]],
                    bytes(&network.params[b]),
                ));
            }
            for (i, layer) in network.layers.iter().enumerate() {
                let (w, b) = network.layer_ranges(i);
                tensors.push((
                    format!("layers.{i}.weight"),
                    vec![layer.inputs, layer.outputs],
                    bytes(&network.params[w]),
                ));
                tensors.push((
                    format!("layers.{i}.bias"),
                    vec![layer.outputs],
                    bytes(&network.params[b]),
                ));
            }
        }
        None => tensors.push((
            "centroids".to_string(),
            vec![model.centroids.len() / model.dims.max(1), model.dims],
            bytes(&model.centroids),
        )),
    }
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_error("<memory>", e))?;
    safetensors::serialize(
        views,
        Some(HashMap::from([(MODEL_KEY.to_string(), structure)])),
    )
    .map_err(|e| format_error("<memory>", e))
}

/// A model from safetensors bytes written by [`to_bytes`]; `path` names the
/// file in errors.
pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Model> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| format_error(path, e))?;
    let structure = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MODEL_KEY))
        .ok_or_else(|| {
            format_error(
                path,
                format!("no '{MODEL_KEY}' metadata: not a Kiln model file"),
            )
        })?;
    let mut model: Model = serde_json::from_str(structure).map_err(|e| format_error(path, e))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format_error(path, e))?;
    let read = |name: &str, expected: usize| -> Result<Vec<f32>> {
        let view = tensors.tensor(name).map_err(|e| format_error(path, e))?;
        if view.dtype() != Dtype::F32 || view.data().len() != expected * 4 {
            return Err(format_error(
                path,
                format!("tensor '{name}' has the wrong type or size"),
            ));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    match &mut model.network {
        Some(network) => {
            let mut params = Vec::new();
            for (i, (shape, _, _)) in network.conv_ranges().into_iter().enumerate() {
                params.extend(read(&format!("conv.{i}.weight"), shape.iter().product())?);
                params.extend(read(&format!("conv.{i}.bias"), shape[0])?);
            }
            for (i, layer) in network.layers.iter().enumerate() {
                params.extend(read(
                    &format!("layers.{i}.weight"),
                    layer.inputs * layer.outputs,
                )?);
                params.extend(read(&format!("layers.{i}.bias"), layer.outputs)?);
            }
            network.params = params;
        }
        None => {
            let view = tensors
                .tensor("centroids")
                .map_err(|e| format_error(path, e))?;
            let n = view.shape().iter().product();
            model.centroids = read("centroids", n)?;
        }
    }
    Ok(model)
}
