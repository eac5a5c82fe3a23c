#!/usr/bin/env bash
# Keeps the `cuda` feature compiling (no GPU needed): the CUDA toolchain from PyPI wheels
# (tools/cuda-toolchain.sh, once per machine), then clippy -D warnings over the whole CLI built
# with --features cuda (candle's CUDA backend and kernels, our fake-quant kernels, the device
# paths). Its build directory lives in the machine's cache (${QAT_DISTILL_CACHE:-~/.cache/
# qat-distill}/target-cuda), so candle's CUDA kernels are compiled by nvcc once per machine, not
# once per clone (~10 min on 2 cores). Called by tools/test.sh. Exit 3: the wheels could not be
# fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
rc=0; CH="$(tools/cuda-toolchain.sh)" || rc=$?
[[ $rc -eq 0 ]] || exit "$rc"
export CUDA_HOME="$CH" PATH="$CH/bin:$PATH" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$CACHE/target-cuda}"
nvcc --version | tail -1 >&2
cargo clippy --release --locked -p qat-distill --features cuda --all-targets -- -D warnings
echo "cuda-check: the cuda feature compiles and is clippy-clean"
