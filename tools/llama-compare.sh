#!/usr/bin/env bash
# llama.cpp and qat-distill side by side, in one run, on the same GGUF files:
#   1. builds llama-bench, llama-perplexity and llama-quantize (tools/llama-tools.sh, the one llama.cpp build)
#   2. requantizes the teacher to Q4_0 and Q8_0 with llama-quantize and with `export-gguf`
#      (time, size, and whether every tensor is byte-identical)
#   3. llama-bench and `bench tokens-per-second` (-p 512 -n 128 -r 3, 2 threads) on the teacher
#      and its requantizations, interleaved in two rounds, then the ratio ours / llama.cpp per
#      model and test (SPEED_ONLY=1 stops after this)
#   4. perplexity on pydoc.txt (ctx 512, $PPL_CHUNKS chunks) of every file, by both tools
#   5. KL of the Q4_0 requantization to the teacher: llama-perplexity --kl-divergence against
#      `eval kl` on the same $KL_CHUNKS chunks
# Usage: tools/llama-compare.sh        (needs the teacher: tools/fetch-teacher.sh)
#   LEVEL=avx2 compares what a CPU without AVX-512 gets: llama.cpp built for AVX2 only
#   (LLAMA_CPU=avx2 in tools/llama-cpu-flags.sh), qat-distill built for x86-64-v3 (AVX2, FMA,
#   F16C; no AVX-512 anywhere, gemm's AVX-512 kernels off) and run with QAT_DISTILL_ISA=avx2;
#   results under runs/llama-compare-avx2.
set -euo pipefail
cd "$(dirname "$0")/.."
LEVEL=${LEVEL:-}
VERSION=0.3.36
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
SRC=$CACHE/llama-src-$VERSION
TOOLS=$CACHE/llama-venv   # made by tools/llama-tools.sh
OUT=${OUT_DIR:-runs/llama-compare${LEVEL:+-$LEVEL}}
THREADS=${THREADS:-2}
PPL_CHUNKS=${PPL_CHUNKS:-40}
KL_CHUNKS=${KL_CHUNKS:-10}
PYDOC=tests/data/corpora/pydoc.txt
mkdir -p "$OUT"

TEACHER=$(tools/fetch-teacher.sh)

case "$LEVEL" in
    "") BIN="$(tools/llama-tools.sh)" ;;
    avx2) BIN="$(LLAMA_CPU=avx2 tools/llama-tools.sh)" ;;
    *) echo "LEVEL=$LEVEL: only avx2 (or unset: this CPU's best) is known" >&2; exit 2 ;;
esac
LB=$BIN/llama-bench
LP=$BIN/llama-perplexity
LQ=$BIN/llama-quantize

if [ "$LEVEL" = avx2 ]; then
    QD="$(RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=target/x86-64-v3 FEATURES= \
        tools/native-build.sh)"
    export QAT_DISTILL_ISA=avx2
else
    QD="$(tools/native-build.sh)"
fi
echo "llama.cpp: $BIN; qat-distill: $QD${QAT_DISTILL_ISA:+ (QAT_DISTILL_ISA=$QAT_DISTILL_ISA)}"
echo

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

echo "## Requantization of the teacher"
echo
echo "| type | llama-quantize s | export-gguf s | llama MiB | ours MiB | tensors (llama.cpp's gguf-py) |"
echo "|---|---:|---:|---:|---:|---|"
for ty in Q4_0 Q8_0; do
    lc=$(echo "$ty" | tr 'A-Z' 'a-z')
    tl=$(secs "$LQ" --allow-requantize "$TEACHER" "$OUT/llama-$lc.gguf" "$ty" "$THREADS")
    to=$(secs "$QD" export-gguf --model "$TEACHER" --recipe "$lc" --out "$OUT/ours-$lc.gguf" --force)
    sl=$(stat -c %s "$OUT/llama-$lc.gguf"); so=$(stat -c %s "$OUT/ours-$lc.gguf")
    same=$(PYTHONPATH="$SRC/vendor/llama.cpp/gguf-py" "$TOOLS/bin/python" tools/gguf_same_tensors.py \
        "$OUT/llama-$lc.gguf" "$OUT/ours-$lc.gguf")
    printf "| %s | %.2f | %.2f | %.2f | %.2f | %s |\n" "$ty" "$tl" "$to" \
        "$(echo "$sl / 1048576" | bc -l)" "$(echo "$so / 1048576" | bc -l)" "$same"
done
echo

MODELS=("$TEACHER" "$OUT/llama-q4_0.gguf" "$OUT/llama-q8_0.gguf")
echo "## Speed: llama-bench and qat-distill bench, same files, same run ($THREADS threads)"
echo
# Interleaved per model and in two rounds of opposite order (llama.cpp, ours, ours, llama.cpp),
# so that the machine's drift over the minutes this takes falls on both tools alike.
for round in 1 2; do
    for m in "${MODELS[@]}"; do
        b=$(basename "$m" .gguf)
        order=(llama ours); [ "$round" = 2 ] && order=(ours llama)
        for tool in "${order[@]}"; do
            if [ "$tool" = llama ]; then
                "$LB" -m "$m" -p 512 -n 128 -r 3 -t "$THREADS" -o json \
                    > "$OUT/llama-bench-$round-$b.json" 2>>"$OUT/llama-bench.log"
            else
                "$QD" bench tokens-per-second -m "$m" -p 512 -n 128 -r 3 -t "$THREADS" -o json \
                    > "$OUT/ours-bench-$round-$b.json" 2>>"$OUT/ours-bench.log"
            fi
        done
    done
done
python3 - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
def key(r):
    test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
    return os.path.basename(r["model_filename"]), test
runs = {}  # (model, test) -> {tool: [avg_ts per round]}
for tool in ("llama", "ours"):
    for p in sorted(glob.glob(f"{out}/{tool}-bench-[12]-*.json")):
        for r in json.load(open(p)):
            runs.setdefault(key(r), {}).setdefault(tool, []).append(r["avg_ts"])
print("| model | test | llama.cpp t/s (rounds 1, 2) | qat-distill t/s (rounds 1, 2) | ours / llama.cpp |")
print("|---|---|---:|---:|---:|")
for k, v in runs.items():
    if len(v.get("llama", [])) != 2 or len(v.get("ours", [])) != 2:
        continue
    l, o = v["llama"], v["ours"]
    print(f"| {k[0]} | {k[1]} | {sum(l)/2:.2f} ({l[0]:.1f}, {l[1]:.1f}) | "
          f"{sum(o)/2:.2f} ({o[0]:.1f}, {o[1]:.1f}) | {sum(o)/sum(l):.2f}× |")
EOF
echo
[ "${SPEED_ONLY:-0}" = 1 ] && exit 0
echo "## Perplexity, pydoc.txt, ctx 512, $PPL_CHUNKS chunks"
echo
echo "| model | llama-perplexity | qat-distill eval perplexity |"
echo "|---|---:|---:|"
# (export-gguf's requantizations hold the same tensors as llama-quantize's: see the first table)
for m in "${MODELS[@]}"; do
    l=$("$LP" -m "$m" -f "$PYDOC" -c 512 --chunks "$PPL_CHUNKS" -t "$THREADS" 2>&1 \
        | grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' | sed 's/Final estimate: PPL = //')
    o=$("$QD" eval perplexity --model "$m" --file "$PYDOC" --ctx 512 --chunks "$PPL_CHUNKS" \
        -t "$THREADS" --json 2>/dev/null | python3 -c \
        "import json,sys; r=json.load(sys.stdin); print('%.4f +/- %.4f' % (r['ppl'], r['ppl_stderr']))")
    echo "| $(basename "$m") | $l | $o |"
done
echo

echo "## KL(teacher ‖ Q4_0 requantization), $KL_CHUNKS chunks of 512"
echo
"$LP" -m "$TEACHER" -f "$PYDOC" -c 512 --chunks "$KL_CHUNKS" -t "$THREADS" \
    --kl-divergence-base "$OUT/teacher.kld" >"$OUT/kld-base.log" 2>&1
"$LP" -m "$OUT/llama-q4_0.gguf" -f "$PYDOC" -c 512 --chunks "$KL_CHUNKS" -t "$THREADS" \
    --kl-divergence-base "$OUT/teacher.kld" --kl-divergence >"$OUT/kld.log" 2>&1
rm -f "$OUT/teacher.kld"
echo "llama-perplexity --kl-divergence:"
grep -E '^(Mean +KLD|Same top p|Mean +PPL\(Q\)|Mean +PPL\(base\))' "$OUT/kld.log" | sed 's/^/    /'
echo "qat-distill eval kl:"
"$QD" eval kl --model "$OUT/llama-q4_0.gguf" --reference "$TEACHER" --file "$PYDOC" --ctx 512 \
    --chunks "$KL_CHUNKS" -t "$THREADS" 2>/dev/null | sed 's/^/    /'
