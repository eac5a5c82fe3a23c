#!/usr/bin/env bash
# The main job as far as it is built: fetch the default teacher, build qat-distill for this
# CPU, describe the teacher and measure its held-out perplexity with llama-perplexity's method.
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER="$(tools/fetch-teacher.sh)"
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=native}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/native}"
cargo build --release --locked -p qat-distill
BIN="$CARGO_TARGET_DIR/release/qat-distill"

"$BIN" inspect "$TEACHER"
"$BIN" generate --model "$TEACHER" --prompt "The capital of France is" -n 24
"$BIN" eval perplexity --model "$TEACHER" --file tests/data/corpora/pydoc.txt --ctx 512 --chunks "${CHUNKS:-40}"
