//! With the `cuda` feature, compiles kernels/*.cu to PTX with nvcc (`$NVCC`, else
//! `$CUDA_HOME/bin/nvcc`, else `nvcc` on PATH) for `compute_$CUDA_COMPUTE_CAP` (default 90).
//! `--fmad=false` keeps the kernels bit-exact with the CPU reference. Without the feature this
//! does nothing, so the default build never needs CUDA.

use std::{env, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = env::var("NVCC")
        .ok()
        .map(PathBuf::from)
        .or_else(|| {
            env::var("CUDA_HOME")
                .ok()
                .map(|h| PathBuf::from(h).join("bin/nvcc"))
                .filter(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap: String = env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "90".into())
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let ptx = out.join("fake_quant.ptx");
    let status = Command::new(&nvcc)
        .args([
            "--ptx",
            &format!("-arch=compute_{cap}"),
            "-O3",
            "--fmad=false",
            "-std=c++17",
            "-o",
        ])
        .arg(&ptx)
        .arg("kernels/fake_quant.cu")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {} (set NVCC or CUDA_HOME): {e}", nvcc.display()));
    assert!(status.success(), "nvcc failed on kernels/fake_quant.cu");
}
