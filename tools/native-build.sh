#!/usr/bin/env bash
# Builds qat-distill for this CPU (RUSTFLAGS="-C target-cpu=native" into target/native, as every
# speed figure in the README was), with gemm's AVX-512 f32 kernels (feature avx512-gemm), and
# prints the binary's path, relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=native}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/native}"
cargo build --release --locked -p qat-distill --features avx512-gemm >&2
echo "$CARGO_TARGET_DIR/release/qat-distill"
