//! Choosing the kernels backend for `device = 'cpu' | 'cuda' | 'auto'`.
//!
//! `KILN_DEVICE=cpu` forces the CPU whatever the option says. The CUDA
//! backend is opened once per process (device 0) and shared.

use std::sync::{Arc, OnceLock};

use kiln_kernels::cpu::CpuBackend;
use kiln_kernels::cuda::CudaBackend;
use kiln_kernels::Backend;

use crate::options::DeviceChoice;
use crate::{MlError, Result};

fn cuda() -> std::result::Result<Arc<CudaBackend>, String> {
    static CUDA: OnceLock<std::result::Result<Arc<CudaBackend>, String>> = OnceLock::new();
    CUDA.get_or_init(|| CudaBackend::new(0).map(Arc::new).map_err(|e| e.to_string()))
        .clone()
}

fn forced_cpu() -> bool {
    std::env::var("KILN_DEVICE").is_ok_and(|v| v.eq_ignore_ascii_case("cpu"))
}

/// The backend for `choice`: `cuda` fails clearly when no GPU is usable,
/// `auto` falls back to the CPU.
pub fn backend(choice: DeviceChoice) -> Result<Arc<dyn Backend>> {
    if forced_cpu() {
        return Ok(Arc::new(CpuBackend::default()));
    }
    match choice {
        DeviceChoice::Cpu => Ok(Arc::new(CpuBackend::default())),
        DeviceChoice::Cuda => {
            cuda()
                .map(|b| b as Arc<dyn Backend>)
                .map_err(|reason| MlError::DeviceUnavailable {
                    device: "cuda".to_string(),
                    reason,
                })
        }
        DeviceChoice::Auto => Ok(match cuda() {
            Ok(gpu) => gpu as Arc<dyn Backend>,
            Err(_) => Arc::new(CpuBackend::default()),
        }),
    }
}
