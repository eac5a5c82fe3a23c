#!/usr/bin/env bash
# The GPU acceptance in one script, one JSON report: `qat-distill device-check` (ops bit for bit
# against the CPU, 20 QAT steps of training parity per model family, the export evaluated on the
# CPU against the device, training speed and memory of a 6-block and a whole-model student at
# B = 4, T = 512 on random weights of the real teacher's shape, bench pp512/tg128), then the
# fake-quant kernels' throughput.
#
#   On a lent GPU (device tool, carry tools/gpu.tar.xz built by tools/build-cuda.sh):
#       tools/gpu-check.sh                      # writes $OUT/gpu-check.json (+ fake-quant.txt)
#   On the CPU, the same script and the same checks on the device-generic path, small and quick
#   (tools/test.sh runs this, so the script cannot rot while no GPU is lent):
#       DEVICE=cpu-generic tools/gpu-check.sh   # writes ${OUT:-runs/gpu-check}/gpu-check.json
#
# Changes no GPU setting. Exit status: device-check's (1 when a figure is out of tolerance).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
if [[ $DEVICE == cuda* ]]; then
    BIN=${BIN:-tools/gpu/qat-distill}
    if [[ ! -f $BIN && -f tools/gpu.tar.xz ]]; then tar -C tools -xJf tools/gpu.tar.xz; fi
    [[ -f $BIN ]] || { echo "gpu-check: $BIN missing; run tools/build-cuda.sh here and carry tools/gpu.tar.xz" >&2; exit 2; }
    chmod +x "$BIN" tools/gpu/qd-gpu-check 2>/dev/null || true
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>&1 | head -2
    # The CUDA 13 runtime libraries of the machine (the driver's libcuda comes through ldconfig).
    DIRS=""
    for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
        d="$( { ls /usr/local/cuda/lib64/"$so" /usr/local/cuda-13*/lib64/"$so" 2>/dev/null;
                find /usr/local /opt -name "$so" 2>/dev/null; } | head -1)"
        [[ -n $d ]] || { echo "gpu-check: $so not found" >&2; continue; }
        d="$(dirname "$d")"
        case ":$DIRS:" in *":$d:"*) ;; *) DIRS="${DIRS:+$DIRS:}$d";; esac
    done
    export LD_LIBRARY_PATH="$DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    ARGS=(--teacher tools/gpu/teacher.skeleton.gguf)
else
    BIN=${BIN:-target/release/qat-distill}
    [[ -x $BIN ]] || cargo build --release --locked -p qat-distill
    ARGS=(--quick)
fi
rc=0
timeout "${GPU_CHECK_TIMEOUT:-420}" "$BIN" device-check --device "$DEVICE" "${ARGS[@]}" \
    --data tests/data/corpora/pydoc.txt --out "$OUT/gpu-check.json" >/dev/null || rc=$?
if [[ $rc -eq 0 ]] && ! grep -q '"pass": true' "$OUT/gpu-check.json"; then rc=1; fi
echo "gpu-check: $OUT/gpu-check.json ($DEVICE), exit $rc" >&2
if [[ $DEVICE == cuda* && -f tools/gpu/qd-gpu-check ]]; then
    timeout 120 tools/gpu/qd-gpu-check > "$OUT/fake-quant.txt" 2>&1 || echo "gpu-check: fake-quant throughput check failed (see $OUT/fake-quant.txt)" >&2
fi
exit $rc
