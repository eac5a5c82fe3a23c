#!/usr/bin/env bash
# Builds qat-distill for this CPU (RUSTFLAGS="-C target-cpu=native" into target/native, as every
# speed figure in the README was), with gemm's AVX-512 f32 kernels (feature avx512-gemm), and
# prints the binary's path, relative to the repository root. RUSTFLAGS, CARGO_TARGET_DIR and
# FEATURES (default avx512-gemm; empty for none) override, e.g. for an AVX2-only build.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=native}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/native}"
FEATURES=${FEATURES-avx512-gemm}
cargo build --release --locked -p qat-distill ${FEATURES:+--features "$FEATURES"} >&2
echo "$CARGO_TARGET_DIR/release/qat-distill"
