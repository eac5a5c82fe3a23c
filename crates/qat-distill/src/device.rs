//! `--device` for every command that computes: parsing, opening, and what a report says about
//! the device (llama-bench's `backends` and `gpu_info`, and the GPU memory held).

use candle_core::Device;
use qd_model::DeviceSpec;

/// clap's parser for `--device`.
pub fn parse(s: &str) -> Result<DeviceSpec, String> {
    s.parse::<DeviceSpec>().map_err(|e| e.to_string())
}

/// Opens `spec` (one line naming the fix when CUDA is not built in or no GPU is there); on a GPU,
/// freed memory stays in the pool instead of being mapped afresh at every synchronisation.
pub fn open(spec: DeviceSpec) -> anyhow::Result<Device> {
    let dev = spec.open()?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &dev {
        qd_quant::cuda::keep_freed_memory(d)?;
    }
    Ok(dev)
}

/// llama-bench's backend name for a device.
pub fn backend(spec: DeviceSpec) -> &'static str {
    match spec {
        DeviceSpec::Cpu => "CPU",
        DeviceSpec::CpuGeneric => "CPU (generic)",
        DeviceSpec::Cuda(_) => "CUDA",
    }
}

/// The GPU's name and the device memory in use (total − free; the pool keeps what it reserved,
/// so after a run this is its high-water mark), `None` off a GPU.
pub fn gpu_info(dev: &Device) -> anyhow::Result<Option<(String, u64)>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = dev {
        let (name, free, total) = qd_quant::cuda::device_info(d)?;
        return Ok(Some((name, (total - free) as u64)));
    }
    let _ = dev;
    Ok(None)
}
