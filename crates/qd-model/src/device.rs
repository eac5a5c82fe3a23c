//! Where a command computes: `--device cpu|cpu-generic|cuda[:N]`.
//!
//! Why three and not two: GPUs are lent to this project rarely and for minutes, so the code a GPU
//! runs must be tested every day without one. `cpu-generic` runs that very path — candle's ops
//! and our ops that have a CUDA body, no CPU-only fused kernel — on the CPU, where every test run
//! exercises it; `cpu` keeps the fused CPU kernels (the fast default).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU with its fused kernels (packed products, the fused loss, the prefill).
    #[default]
    Cpu,
    /// The CPU through the device-generic path a GPU runs.
    CpuGeneric,
    /// CUDA device N through the device-generic path.
    Cuda(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?} (cpu, cpu-generic, cuda or cuda:N)")]
    Unknown(String),
    #[error(
        "--device {0}: this binary was built without CUDA; rebuild it with `cargo build --release \
         --features cuda` (tools/build-cuda.sh installs the CUDA toolchain), or use --device cpu"
    )]
    NotCompiled(DeviceSpec),
    #[error("--device {spec}: no CUDA device could be opened ({why}); use --device cpu")]
    Unavailable { spec: DeviceSpec, why: String },
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::CpuGeneric => f.write_str("cpu-generic"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cpu-generic" => Ok(Self::CpuGeneric),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl DeviceSpec {
    /// Whether this device takes the device-generic path (everything but `cpu`).
    pub fn generic(self) -> bool {
        self != Self::Cpu
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, Self::Cuda(_))
    }

    /// Opens the device: one line naming the fix when CUDA is not compiled in or no GPU is there.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu | Self::CpuGeneric => Ok(Device::Cpu),
            Self::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(DeviceError::NotCompiled(self));
                }
                Device::new_cuda(n).map_err(|e| DeviceError::Unavailable {
                    spec: self,
                    why: e.to_string().lines().next().unwrap_or("").to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_refuses_others() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cpu-generic".parse(), Ok(DeviceSpec::CpuGeneric));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        for bad in ["", "CUDA", "cuda:", "cuda:x", "metal", "cpu "] {
            assert!(matches!(
                bad.parse::<DeviceSpec>(),
                Err(DeviceError::Unknown(_))
            ));
        }
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
        assert!(DeviceSpec::CpuGeneric.generic() && !DeviceSpec::Cpu.generic());
    }

    #[test]
    fn cuda_without_the_feature_or_a_gpu_fails_in_one_line() {
        match DeviceSpec::Cuda(0).open() {
            Ok(d) => assert!(d.is_cuda()),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "{msg}");
                if !candle_core::utils::cuda_is_available() {
                    assert!(msg.contains("--features cuda"), "{msg}");
                }
            }
        }
        assert!(DeviceSpec::CpuGeneric.open().unwrap().is_cpu());
    }
}
