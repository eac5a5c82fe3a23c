#!/usr/bin/env bash
# The aarch64 kernels on every submission: cross-compiles qd-kernels' and qd-model's tests (the packed kernels
# at every level against the scalar oracle, the fused decoder and prefill on tiny models of each
# family) for aarch64-unknown-linux-gnu and runs them under qemu-aarch64 on three CPU models:
# cortex-a72 (NEON only: level neon), cortex-a76 (dot product: neondot) and max (dot product and
# i8mm: neondot). Each run checks that its CPU is detected at the expected level, so no level is
# skipped silently. On the Cortex-A72 the four tests that compare with candle's quantized graph
# are skipped, by name: candle 0.11's aarch64 kernels use `sdot` unconditionally (SIGILL there),
# which the graph path now refuses in one line (tested there by
# quantized_graph_runs_or_refuses_in_one_line). The real-teacher test (gemma_reference) is left
# to native runs.
# Lints qd-kernels, qd-model and qd-quant for aarch64 first (clippy -D warnings). Installs Debian's cross gcc and qemu-user (apt) and the Rust target (rustup) when missing;
# builds into the machine's cache (${QAT_DISTILL_CACHE:-~/.cache/qat-distill}/target-aarch64),
# so a clean clone does not rebuild the cross-compiled dependencies. Exit 3: rustup could not reach its server.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "arm-check: installing gcc-aarch64-linux-gnu and qemu-user (apt)" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu \
        g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >&2
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    if ! rustup target add "$TARGET" >&2; then
        echo "arm-check: rustup could not install $TARGET (server unreachable?)" >&2
        exit 3
    fi
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
export CARGO_TARGET_DIR="${ARM_TARGET_DIR:-$CACHE/target-aarch64}"
# The NEON code compiles only for aarch64: lint it there too.
cargo clippy --locked -p qd-kernels -p qd-model -p qd-quant --all-targets --target "$TARGET" -- -D warnings
# Test binaries: qd-kernels' own (every level against the scalar oracle, the level a CPU is
# expected to get) and qd-model's that run the kernels in a model.
test_bins() {
    cargo test --release --locked --target "$TARGET" "$@" --no-run --message-format=json \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}
mapfile -t BINS < <(test_bins -p qd-kernels --lib
    test_bins -p qd-model --lib --test decoder --test decoder_allocations --test linear_kernels \
        --test tiny_models)
[ "${#BINS[@]}" -eq 6 ] || { echo "arm-check: expected 6 test binaries, built ${#BINS[@]}" >&2; exit 1; }
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for cpu in cortex-a72:neon cortex-a76:neondot max:neondot; do
    echo "== qemu-aarch64 -cpu ${cpu%%:*} (expects level ${cpu##*:})"
    for b in "${BINS[@]}"; do
        name=$(basename "${b%-*}")
        rc=0
        skip=()
        [ "${cpu%%:*}" = cortex-a72 ] && skip=(--skip graph_path --skip every_type_equals_dequantize
            --skip quantized_forward_tracks_reference)
        QAT_DISTILL_EXPECT_ISA=${cpu##*:} qemu-aarch64 -cpu "${cpu%%:*}" -L /usr/aarch64-linux-gnu \
            "$b" --test-threads 2 "${skip[@]}" >"$LOG" 2>&1 || rc=$?
        grep -E '^test result' "$LOG" | sed "s|^|  $name: |" || true
        if [ "$rc" -ne 0 ]; then
            tail -40 "$LOG" >&2
            echo "arm-check: $name failed on ${cpu%%:*}" >&2
            exit 1
        fi
    done
done
echo "arm-check: every level passed"
