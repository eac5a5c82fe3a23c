//! CUDA forward of the fake-quant op (feature `cuda`): PTX from kernels/fake_quant.cu.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Result};

use crate::format::QuantType;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fake_quant.ptx"));

/// The types with a CUDA kernel.
pub fn has_kernel(ty: QuantType) -> bool {
    kernel(ty).is_some()
}

fn kernel(ty: QuantType) -> Option<(&'static str, bool)> {
    // (name, one warp per block?)
    match ty {
        QuantType::Q4_0 => Some(("fq_q4_0", true)),
        QuantType::Q5_0 => Some(("fq_q5_0", true)),
        QuantType::Q8_0 => Some(("fq_q8_0", true)),
        QuantType::Q4K => Some(("fq_q4_k", false)),
        _ => None,
    }
}

pub fn fake_quant_fwd(ty: QuantType, s: &CudaStorage, o1: usize, o2: usize) -> Result<CudaStorage> {
    let Some((name, per_warp)) = kernel(ty) else {
        candle_core::bail!("fake-quant {ty}: no CUDA kernel (available: Q4_0, Q5_0, Q8_0, Q4_K)");
    };
    let dev = s.device().clone();
    let x = s.as_cuda_slice::<f32>()?.slice(o1..o2);
    let n = o2 - o1;
    let mut y = unsafe { dev.alloc::<f32>(n)? };
    if n > 0 {
        let func = dev.get_or_load_custom_func(name, "qd_fake_quant", PTX)?;
        let n_blocks = (n / ty.block_size()) as u64;
        let threads = if per_warp { n as u64 } else { n_blocks };
        let cfg = LaunchConfig {
            grid_dim: (threads.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = func.builder();
        b.arg(&x);
        b.arg(&mut y);
        b.arg(&n_blocks);
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev))
}
