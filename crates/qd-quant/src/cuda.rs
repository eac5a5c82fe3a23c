//! CUDA forward of the fake-quant op (feature `cuda`): PTX from kernels/fake_quant.cu.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{CudaStorage, Result};

use qd_gguf::GgmlType;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fake_quant.ptx"));

/// The types with a CUDA kernel.
pub fn has_kernel(ty: GgmlType) -> bool {
    kernel(ty).is_some()
}

fn kernel(ty: GgmlType) -> Option<(&'static str, bool)> {
    // (name, eight lanes of four values per 32-value block?; else one thread per 256-value block)
    match ty {
        GgmlType::Q4_0 => Some(("fq_q4_0", true)),
        GgmlType::Q5_0 => Some(("fq_q5_0", true)),
        GgmlType::Q8_0 => Some(("fq_q8_0", true)),
        GgmlType::Q4K => Some(("fq_q4_k", false)),
        _ => None,
    }
}

/// Forward over `s[o1..o2]`, rows of `row_len`. A NaN or ±Inf fails with the CPU op's error
/// (same row, column and value): the kernel flags the first bad block, the host reads that block.
/// Reading the flag waits for the kernel, one synchronisation per call.
pub fn fake_quant_fwd(
    ty: GgmlType,
    s: &CudaStorage,
    o1: usize,
    o2: usize,
    row_len: usize,
) -> Result<CudaStorage> {
    let dev = s.device().clone();
    let n = o2 - o1;
    // SAFETY: uninitialised device memory; the kernel below writes all `n` values before
    // anything reads them (an empty view returns it unread).
    let mut y = unsafe { dev.alloc::<f32>(n)? };
    if n == 0 {
        kernel_name(ty)?;
        return Ok(CudaStorage::wrap_cuda_slice(y, dev));
    }
    let view = s.as_cuda_slice::<f32>()?.slice(o1..o2);
    // The 16-byte loads need an aligned start; a view that starts mid-vector is copied first.
    let aligned;
    let x = if o1.is_multiple_of(4) {
        view
    } else {
        // SAFETY: the copy on the next line fills all `n` values before any read.
        let mut tmp = unsafe { dev.alloc::<f32>(n)? };
        dev.memcpy_dtod(&view, &mut tmp)?;
        aligned = tmp;
        aligned.slice(0..n)
    };
    let mut bad = dev.alloc_zeros::<u64>(1)?;
    launch(ty, &dev, &x, &mut y, &mut bad)?;
    let flag = dev.clone_dtoh(&bad)?[0];
    if flag != 0 {
        let bs = ty.block_size();
        let start = ((n / bs) as u64 - flag) as usize * bs;
        let block = dev.clone_dtoh(&x.slice(start..start + bs))?;
        let i = block.iter().position(|v| !v.is_finite()).unwrap_or(0);
        let e = crate::QuantError::NonFinite {
            row: (start + i) / row_len,
            col: (start + i) % row_len,
            value: block[i],
        };
        candle_core::bail!("{e}");
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev))
}

fn kernel_name(ty: GgmlType) -> Result<(&'static str, bool)> {
    match kernel(ty) {
        Some(k) => Ok(k),
        None => candle_core::bail!(
            "fake-quant {ty}: no CUDA kernel (available: Q4_0, Q5_0, Q8_0, Q4_K)"
        ),
    }
}

/// Launches the kernel on `x` (16-byte aligned, a whole number of blocks) without waiting for
/// it: `bad` (zeroed by the caller) receives n_blocks − first non-finite block, or stays 0.
/// Public so that the GPU check can time the kernel apart from the op's synchronisation.
pub fn launch(
    ty: GgmlType,
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    y: &mut CudaSlice<f32>,
    bad: &mut CudaSlice<u64>,
) -> Result<()> {
    let (name, vec4) = kernel_name(ty)?;
    let n = x.len();
    if !n.is_multiple_of(ty.block_size()) || y.len() < n {
        candle_core::bail!(
            "fake-quant {ty}: {n} values are not whole blocks, or the output is short"
        );
    }
    let func = dev.get_or_load_custom_func(name, "qd_fake_quant", PTX)?;
    let n_blocks = (n / ty.block_size()) as u64;
    // Eight lanes per 32-value block, each thread one block from each half of the tensor.
    let threads = if vec4 {
        n_blocks.div_ceil(2) * 8
    } else {
        n_blocks
    };
    let cfg = LaunchConfig {
        grid_dim: (threads.div_ceil(256) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = func.builder();
    b.arg(x);
    b.arg(y);
    b.arg(&n_blocks);
    b.arg(bad);
    // SAFETY: the kernel's signature is (const float*, float*, int, unsigned long long*), the
    // arguments above in that order; `x` and `y` hold `n_blocks` whole blocks and the grid
    // covers `threads` threads, which the kernel bounds-checks.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// Lets the device's default memory pool keep freed memory for the next allocation instead of
/// handing it back to the driver at every synchronisation (the pool's default threshold is 0).
/// The fake-quant op synchronises once per call to read its non-finite flag, so without this each
/// call pays for mapping its output afresh: on an H200, Q4_0 on 2^27 weights took 0.34 ms
/// instead of 0.28 ms (the kernel alone 0.26 ms). A per-process pool attribute, as PyTorch's
/// caching allocator behaves; no device setting changes.
pub fn keep_freed_memory(dev: &CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let stream = dev.cuda_stream();
    let mut pool = std::ptr::null_mut();
    let mut keep = u64::MAX;
    // SAFETY: the driver writes one pool handle into `pool` and reads one u64 from `keep`,
    // the size `CU_MEMPOOL_ATTR_RELEASE_THRESHOLD` takes; both live across the calls.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, stream.context().cu_device())
            .result()
            .w()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut keep as *mut u64 as *mut std::ffi::c_void,
        )
        .result()
        .w()?;
    }
    Ok(())
}

/// The device's name (llama-bench's `gpu_info`) and its `(free, total)` memory in bytes.
pub fn device_info(dev: &CudaDevice) -> Result<(String, usize, usize)> {
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    let name = ctx.name().w()?;
    let (free, total) = ctx.mem_get_info().w()?;
    Ok((name, free, total))
}
