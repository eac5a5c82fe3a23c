#!/usr/bin/env bash
# The project's test command: fetches the real teacher (cached), checks formatting, clippy
# (-D warnings) and the minimum Rust version (tools/msrv.sh), runs every test in release mode,
# the GPU check's script on the CPU's device-generic path (tools/gpu-check.sh), then the aarch64
# kernels under qemu (tools/arm-check.sh) and the `cuda` feature's compile and
# lints (tools/build-cuda.sh --check: CUDA toolchain from PyPI wheels, no GPU). Needs cargo (with clippy
# and rustfmt), python3 with pip, and network access to crates.io, PyPI and Debian's apt (the
# cross compiler and qemu, installed once).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "test.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }

QAT_DISTILL_TEACHER="$(tools/fetch-teacher.sh)"
export QAT_DISTILL_TEACHER
echo "test.sh: teacher at $QAT_DISTILL_TEACHER" >&2

# A check whose downloads may be out of reach: its exit 3 (a server unreachable) is reported
# and passed over, any other failure fails the run.
reachable_check() {
    local what=$1 rc=0
    shift
    "$@" || rc=$?
    if [[ $rc -eq 3 ]]; then echo "test.sh: $what not checked (see above)" >&2
    elif [[ $rc -ne 0 ]]; then exit "$rc"; fi
}

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --release -- -D warnings
reachable_check "minimum Rust version" tools/msrv.sh
cargo test --release --workspace --locked
# The GPU check's own script on the CPU's device-generic path (tiny models, ~10 s), so that the
# script a lent GPU runs is exercised by every test run.
DEVICE=cpu-generic OUT=target/gpu-check tools/gpu-check.sh
reachable_check "aarch64 kernels" tools/arm-check.sh
reachable_check "the cuda feature" tools/build-cuda.sh --check
