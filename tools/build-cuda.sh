#!/usr/bin/env bash
# Builds, here (no GPU needed), everything tools/gpu-check.sh runs on a lent GPU machine, into
# tools/gpu/, packed as tools/gpu.tar.xz (both ignored by git; carry the archive with the device
# tool's `carry: ["tools/gpu.tar.xz"]`: the binaries are 120 MB, mostly PTX text, and a call
# carries at most 64 MiB; packed they are ~16 MB, and gpu-check.sh unpacks them there):
#   qat-distill            the CLI with --features cuda (device-check, train/eval/bench --device cuda)
#   qd-gpu-check           the fake-quant kernels' throughput check (qd-quant's gpu_check example)
#   teacher.skeleton.gguf  the real teacher's metadata, tokenizer and tensor list, no weights
#                          (the 241 MB teacher cannot travel; device-check makes random weights
#                          of its exact shape there)
# The CUDA 13.0 toolchain comes from PyPI wheels (tools/cuda-toolchain.sh). Kernels are PTX for
# compute_${CUDA_COMPUTE_CAP:-80}: the driver compiles it for the GPU it finds, so one binary runs
# on sm_80, sm_86, sm_87, sm_89 and sm_90 (A100, laptop RTX 30/40, Jetson Orin, L4, H100/H200).
# nvcc stays at 13.0.x: the GPU machine's driver (580, CUDA 13.0) rejects newer PTX. The build
# folder lives in the machine's cache, so candle's kernels are compiled once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
CH="$(tools/cuda-toolchain.sh)"
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
export CUDA_HOME="$CH" PATH="$CH/bin:$PATH" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$CACHE/target-cuda-sm$CUDA_COMPUTE_CAP}"
nvcc --version | tail -1
cargo build --release --locked -p qat-distill --features cuda
cargo build --release --locked -p qd-quant --features cuda --example gpu_check
mkdir -p tools/gpu
cp "$CARGO_TARGET_DIR/release/qat-distill" tools/gpu/qat-distill
cp "$CARGO_TARGET_DIR/release/examples/gpu_check" tools/gpu/qd-gpu-check
strip tools/gpu/qat-distill tools/gpu/qd-gpu-check
TEACHER="$(tools/fetch-teacher.sh)"
# The CUDA binary needs the driver's libcuda, which only the GPU machine has: the host build
# writes the skeleton.
unset CARGO_TARGET_DIR
cargo run --release --locked -q -p qat-distill -- \
    synth --like "$TEACHER" --skeleton --out tools/gpu/teacher.skeleton.gguf --force
tar -C tools -cf - gpu | xz -6 -T0 > tools/gpu.tar.xz.tmp && mv tools/gpu.tar.xz.tmp tools/gpu.tar.xz
ls -la tools/gpu tools/gpu.tar.xz
