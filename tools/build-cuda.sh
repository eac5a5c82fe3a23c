#!/usr/bin/env bash
# Builds the GPU check with --features cuda, with the CUDA 13.0 toolchain from PyPI wheels that
# tools/cuda-toolchain.sh installs (no GPU needed).
# The binary lands in tools/gpu/qd-gpu-check (ignored by git), ready to carry to the GPU machine.
# nvcc stays at 13.0.x: the GPU machine's driver (580, CUDA 13.0) rejects newer PTX.
set -euo pipefail
cd "$(dirname "$0")/.."
CAP=${CUDA_COMPUTE_CAP:-90}
CH="$(tools/cuda-toolchain.sh)"

export CUDA_HOME="$CH" PATH="$CH/bin:$PATH" CUDA_COMPUTE_CAP="$CAP"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-target/cuda}"
nvcc --version | tail -1
cargo build --release --locked -p qd-quant --features cuda --example gpu_check
mkdir -p tools/gpu
cp "$CARGO_TARGET_DIR/release/examples/gpu_check" tools/gpu/qd-gpu-check
strip tools/gpu/qd-gpu-check
ls -la tools/gpu/qd-gpu-check
