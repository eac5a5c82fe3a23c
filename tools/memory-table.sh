#!/usr/bin/env bash
# The memory table of docs/scale.md: whole-model QAT to Q4_0 by self-distillation (every block of
# a Q4_K_M teacher trained, its embedding frozen), seq 512, batch 1, STEPS steps (default 2), for
# each model in $MODELS and each configuration in $CONFIGS; one markdown row per run with the
# process's peak resident set (VmHWM, from the run's summary.json), bytes per trained parameter
# and tokens/s (the log's last figure: all tokens over all steps, the first included).
# Synthetic teachers of the named shapes are made on first use.
#
#   MODELS   270m (the real Gemma 3 270M teacher), 0.5b (Qwen2.5-0.5B shape), 1.1b
#            (TinyLlama-1.1B shape), 3b (Llama-3.2-3B shape); default "270m 0.5b 1.1b"
#   CONFIGS  f32      --checkpoint-blocks --optimizer adamw  --teacher-stored-blocks
#            compact  --checkpoint-blocks --optimizer adamw8 --master-weights bf16 --teacher-stored-blocks
#            adamw8   --checkpoint-blocks --optimizer adamw8 --teacher-stored-blocks (f32 master weights)
#            adamw8-ub, f32-ub, compact-ub   adamw8, f32 or compact with --update-in-backward (each block updated as
#                     backward makes its gradients: no whole-model gradients held)
#            graph    the whole graph kept, f32 AdamW, the teacher's tiles (the main job's way)
#            block-f32, block-compact   block-wise QAT (--schedule block-ap: STEPS steps per block
#                     over 4 cached sequences, 1 held out), f32 AdamW or the compact state
#                     (8-bit moments, bf16 master weights), stored teacher;
#                     the row's tokens/s count each token once through every block
#            default "f32 compact"
#   OUT      run directories and logs (default runs/mem)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-$(tools/native-build.sh)}"
OUT="${OUT:-runs/mem}"
STEPS="${STEPS:-2}"
SHAPES=~/.cache/qat-distill/shapes
mkdir -p "$OUT" "$SHAPES"
tools/prepare-corpus.sh >/dev/null

teacher_of() {
    case "$1" in
        270m) tools/fetch-teacher.sh ;;
        0.5b) echo "$SHAPES/qwen2.5-0.5b-q4_k_m.gguf qwen2.5-0.5b" ;;
        1.1b) echo "$SHAPES/tinyllama-1.1b-q4_k_m.gguf tinyllama-1.1b" ;;
        3b) echo "$SHAPES/llama3.2-3b-q4_k_m.gguf llama3.2-3b" ;;
        *) echo "memory-table: unknown model $1 (270m, 0.5b, 1.1b, 3b)" >&2; exit 2 ;;
    esac
}
flags_of() {
    case "$1" in
        f32) echo "--checkpoint-blocks --optimizer adamw --teacher-stored-blocks" ;;
        compact) echo "--checkpoint-blocks --optimizer adamw8 --master-weights bf16 --teacher-stored-blocks" ;;
        adamw8) echo "--checkpoint-blocks --optimizer adamw8 --teacher-stored-blocks" ;;
        adamw8-ub) echo "--checkpoint-blocks --optimizer adamw8 --update-in-backward --teacher-stored-blocks" ;;
        compact-ub) echo "--checkpoint-blocks --optimizer adamw8 --master-weights bf16 --update-in-backward --teacher-stored-blocks" ;;
        f32-ub) echo "--checkpoint-blocks --optimizer adamw --update-in-backward --teacher-stored-blocks" ;;
        graph) echo "--optimizer adamw" ;;
        block-f32) echo "--schedule block-ap --block-sequences 4 --eval-sequences 1 --optimizer adamw --teacher-stored-blocks" ;;
        block-compact) echo "--schedule block-ap --block-sequences 4 --eval-sequences 1 --optimizer adamw8 --master-weights bf16 --teacher-stored-blocks" ;;
        *) echo "memory-table: unknown configuration $1 (f32, compact, adamw8, adamw8-ub, f32-ub, compact-ub, graph, block-f32, block-compact)" >&2; exit 2 ;;
    esac
}

echo "| model | configuration | peak RSS | bytes / trained param | tokens/s |"
echo "|---|---|---:|---:|---:|"
for m in ${MODELS:-270m 0.5b 1.1b}; do
    read -r teacher shape <<<"$(teacher_of "$m")"
    if [[ -n "${shape:-}" && ! -f "$teacher" ]]; then
        "$BIN" synth --shape "models/shapes/$shape.toml" --out "$teacher" >&2
    fi
    blocks="$("$BIN" inspect "$teacher" --json | python3 -c 'import json,sys; print(",".join(map(str, range(json.load(sys.stdin)["hparams"]["n_layer"]))))')"
    for c in ${CONFIGS:-f32 compact}; do
        run="$OUT/$m-$c"
        rm -rf "$run"
        # shellcheck disable=SC2046
        "$BIN" train --config models/optimizer-curves.toml --teacher "$teacher" --blocks "$blocks" \
            --steps "$STEPS" --eval-every 0 --checkpoint-every 1000 --out "$run" $(flags_of "$c") \
            2> "$run.log" >/dev/null
        python3 - "$run" "$m" "$c" <<'PY'
import json, re, sys
run, model, config = sys.argv[1:]
params = float(re.search(r"student ([0-9.]+) M params", open(run + ".log").read()).group(1)) * 1e6
peak = json.load(open(run + "/summary.json"))["peak_rss_bytes"]
steps = [json.loads(l) for l in open(run + "/log.jsonl") if '"event":"step"' in l]
print(f"| {model} ({params / 1e6:.1f} M trained) | {config} | {peak / 1e9:.2f} GB | "
      f"{peak / params:.1f} | {steps[-1]['tokens_per_second']:.1f} |")
PY
        # A run's final checkpoint is f32 weights and moments (6 GB for the 1.1B shape).
        rm -rf "$run"/step-* "$run"/blocks "$run"/model.gguf
    done
done
