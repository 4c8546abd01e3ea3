//! Kiln's tensor kernels behind one device-neutral interface.
//!
//! [`Backend`] is the contract every device implements: GEMM with transposes
//! (the shapes backpropagation needs), fused bias + activation, 2-D
//! convolution and max pooling with their gradients, losses with their
//! gradients, reductions, and optimizer steps as single fused passes.
//! [`cpu::CpuBackend`] implements it with rayon and the `gemm` crate and is
//! the reference every other backend is tested against; [`cuda`] implements
//! it with Kiln's own CUDA kernels (the top-level `kernels/` folder, compiled
//! at run time with NVRTC, loaded through cudarc without a build-time CUDA).
//!
//! Forbidden dependencies: DataFusion, Arrow, Ballista. This crate must build
//! and test in seconds on its own (a test checks `Cargo.lock`).
//!
//! ```
//! use kiln_kernels::{Backend, Gemm, cpu::CpuBackend};
//! let cpu = CpuBackend::default();
//! // C(2x2) = A(2x3) · B(3x2)
//! let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
//! let mut c = [0.0; 4];
//! cpu.gemm(Gemm::new(2, 2, 3), &a, &b, &mut c).unwrap();
//! assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
//! ```

mod backend;
mod conv;
pub mod cpu;
pub mod cuda;
mod error;

pub use backend::{Activation, Backend, Gemm, Optimizer, OptimizerState};
pub use conv::{Conv2d, Pool2d};
pub use error::{KernelError, Result};
