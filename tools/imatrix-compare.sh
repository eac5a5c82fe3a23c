#!/usr/bin/env bash
# Every llama-quantize file type, with and without an importance matrix, made by llama-quantize
# and by `qat-distill export-gguf` from the teacher, compared tensor by tensor with llama.cpp's
# gguf-py (tools/gguf_same_tensors.py); prints a markdown table. IMATRIX (default: llama-imatrix
# over CALIB, 100 chunks of 512) is the matrix both use; OURS=1 uses `qat-distill imatrix`'s.
# Usage: tools/imatrix-compare.sh [TYPE…]   (default: every type)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
TEACHER="$(tools/fetch-teacher.sh)"
BIN="$(tools/llama-tools.sh)"
QD="${QD:-$(tools/native-build.sh)}"
OUT="${OUT:-runs/imatrix}"
mkdir -p "$OUT"
IMATRIX="${IMATRIX:-$OUT/llama.imatrix.gguf}"
if [[ ! -f "$IMATRIX" ]]; then
    CALIB="${CALIB:-$OUT/calib.txt}"
    [[ -f "$CALIB" ]] || tools/calibration-text.sh > "$CALIB"
    "$BIN/llama-imatrix" -m "$TEACHER" -f "$CALIB" -c 512 --chunks 100 -t "$(nproc)" -o "$IMATRIX" \
        > "$OUT/llama-imatrix.log" 2>&1
fi
same() {
    PYTHONPATH="$CACHE/llama-src-0.3.36/vendor/llama.cpp/gguf-py" "$CACHE/llama-venv/bin/python" \
        tools/gguf_same_tensors.py "$1" "$2" | sed 's/; keys in one file only.*//'
}
TYPES=("$@")
[[ ${#TYPES[@]} -gt 0 ]] || TYPES=(q4_0 q4_1 q5_0 q5_1 q2_k q2_k_s q3_k_s q3_k_m q3_k_l q4_k_s \
    q4_k_m q5_k_s q5_k_m q6_k)
echo "| type | without imatrix | with $(basename "$IMATRIX") |"
echo "|---|---|---|"
for t in "${TYPES[@]}"; do
    up=$(echo "$t" | tr 'a-z' 'A-Z')
    row="| $up |"
    for im in no yes; do
        flag=(); [[ $im == yes ]] && flag=(--imatrix "$IMATRIX")
        if [[ $t == q2_k_s && $im == no ]]; then row+=" needs an imatrix (both refuse) |"; continue; fi
        "$BIN/llama-quantize" --allow-requantize "${flag[@]}" "$TEACHER" "$OUT/l-$t-$im.gguf" "$up" 2 \
            > "$OUT/l-$t-$im.log" 2>&1
        "$QD" export-gguf --model "$TEACHER" --recipe "$t" "${flag[@]}" --out "$OUT/q-$t-$im.gguf" \
            --force > /dev/null
        row+=" $(same "$OUT/l-$t-$im.gguf" "$OUT/q-$t-$im.gguf") |"
        rm -f "$OUT/l-$t-$im.gguf" "$OUT/q-$t-$im.gguf"
    done
    echo "$row"
done
