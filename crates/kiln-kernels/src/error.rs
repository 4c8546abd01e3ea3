//! Kernel errors: which operation, and the shapes that did not fit.

/// Errors of the kernels; each names the operation and the sizes involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: label {label} at row {row} is out of range for {classes} classes")]
    LabelOutOfRange {
        op: &'static str,
        row: usize,
        label: u32,
        classes: usize,
    },
    #[error("CUDA is unavailable: {reason}")]
    CudaUnavailable { reason: String },
    #[error("CUDA error in {op}: {message}")]
    Cuda { op: &'static str, message: String },
    #[error("kernel {file} does not compile: {message}")]
    KernelCompile { file: &'static str, message: String },
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

pub(crate) fn expect_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::ShapeMismatch {
            op,
            what,
            expected,
            got,
        })
    }
}

/// Checks that a matrix of `len` elements is made of whole rows of `cols`.
pub(crate) fn check_rows(
    op: &'static str,
    what: &'static str,
    len: usize,
    cols: usize,
) -> Result<()> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(KernelError::ShapeMismatch {
            op,
            what,
            expected: cols.max(1) * (len / cols.max(1)),
            got: len,
        });
    }
    Ok(())
}
