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

/// Operands of a softmax cross-entropy: `labels.len() × classes` logits and
/// gradient, and every label a class index.
pub(crate) fn check_softmax_cross_entropy(
    labels: &[u32],
    classes: usize,
    logits: usize,
    grad: usize,
) -> Result<()> {
    const OP: &str = "softmax_cross_entropy";
    expect_len(OP, "logits", labels.len() * classes, logits)?;
    expect_len(OP, "grad", labels.len() * classes, grad)?;
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(row) => Err(KernelError::LabelOutOfRange {
            op: OP,
            row,
            label: labels[row],
            classes,
        }),
        None => Ok(()),
    }
}

/// Operands of an elementwise loss: prediction, target and gradient of one length.
pub(crate) fn check_pointwise_loss(
    op: &'static str,
    target_name: &'static str,
    pred: usize,
    target: usize,
    grad: usize,
) -> Result<()> {
    expect_len(op, target_name, pred, target)?;
    expect_len(op, "grad", pred, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_operand_checks_name_the_operand_and_the_first_bad_label() {
        assert_eq!(check_softmax_cross_entropy(&[0, 2, 1], 3, 9, 9), Ok(()));
        assert_eq!(
            check_softmax_cross_entropy(&[0, 3, 5], 3, 9, 9),
            Err(KernelError::LabelOutOfRange {
                op: "softmax_cross_entropy",
                row: 1,
                label: 3,
                classes: 3
            })
        );
        let err = check_softmax_cross_entropy(&[0, 1], 3, 5, 6).unwrap_err();
        assert_eq!(
            err.to_string(),
            "softmax_cross_entropy: logits has 5 elements, expected 6"
        );
        let err = check_pointwise_loss("mean_squared_error", "target", 4, 4, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mean_squared_error: grad has 3 elements, expected 4"
        );
    }
}
