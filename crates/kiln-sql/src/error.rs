//! The SQL boundary's errors: the lake's and the ML library's typed errors
//! become DataFusion error kinds that keep the cause and say which object
//! (statement, table, model, file) is at fault. A user's mistake is a
//! planning error, something not built yet is "not implemented", and only a
//! bug in Kiln is an internal error.

use std::fmt::Display;

use datafusion::error::DataFusionError;
use kiln_ml::MlError;

use crate::catalog::lake::LakeError;

impl From<LakeError> for DataFusionError {
    fn from(e: LakeError) -> Self {
        match e {
            LakeError::InvalidTableName(_) | LakeError::ConcurrentWrite { .. } => {
                DataFusionError::Plan(e.to_string())
            }
            LakeError::Io { .. }
            | LakeError::CorruptCatalog { .. }
            | LakeError::CatalogVersion { .. } => DataFusionError::External(Box::new(e)),
        }
    }
}

/// [`From<LakeError>`], for `map_err`.
pub(crate) fn lake_error(e: LakeError) -> DataFusionError {
    e.into()
}

/// An [`MlError`] of `object` ("TRAIN MODEL m", "model 'm' v3") as a
/// DataFusion error of the matching kind, the cause kept where it is one.
pub(crate) fn ml_error(object: impl Display) -> impl FnOnce(MlError) -> DataFusionError {
    move |e| match e {
        MlError::UnknownModelType(_)
        | MlError::UnknownOption { .. }
        | MlError::InvalidOption { .. }
        | MlError::InvalidData(_)
        | MlError::DeviceUnavailable { .. } => DataFusionError::Plan(format!("{object}: {e}")),
        MlError::NotAvailable { .. } => DataFusionError::NotImplemented(format!("{object}: {e}")),
        MlError::Kernel(_) | MlError::Format { .. } => {
            DataFusionError::External(Box::new(e)).context(object.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_mistakes_are_planning_errors_naming_the_object() {
        let e = ml_error("TRAIN MODEL m")(MlError::UnknownModelType("tree".into()));
        assert!(
            matches!(&e, DataFusionError::Plan(m) if m.starts_with("TRAIN MODEL m: unknown model type 'tree'")),
            "{e}"
        );
        let e: DataFusionError = LakeError::InvalidTableName("1x".into()).into();
        assert!(matches!(e, DataFusionError::Plan(_)));
    }

    #[test]
    fn lake_and_file_failures_keep_their_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e: DataFusionError = LakeError::Io {
            path: "/lake/x".into(),
            source: io,
        }
        .into();
        let DataFusionError::External(cause) = &e else {
            panic!("{e}")
        };
        assert!(cause.downcast_ref::<LakeError>().is_some());
        let e = ml_error("model 'm' v1")(MlError::Format {
            path: "w.safetensors".into(),
            reason: "truncated".into(),
        });
        assert!(
            e.to_string().contains("model 'm' v1") && e.to_string().contains("truncated"),
            "{e}"
        );
        assert!(e.find_root().to_string().contains("truncated"));
    }
}
