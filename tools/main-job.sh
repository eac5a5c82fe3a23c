#!/usr/bin/env bash
# The main job, end to end on a fresh machine: fetch the teacher (Gemma 3 270M Q4_K_M) and a
# training corpus, build qat-distill for this CPU, quantize the teacher to Q4_0 the way
# llama-quantize does (post-training, PTQ), quantize it again with whole-model QAT by
# self-distillation (models/qat-q4.toml, ~15 min of training on 2 cores), export it, and once more
# the way llama.cpp users do (an importance matrix over 100 chunks of the training corpus,
# `qat-distill imatrix`, then `export-gguf --imatrix`), then print one table: teacher, PTQ Q4_0,
# imatrix-PTQ Q4_0 and QAT Q4_0 side by side — file size, pp512 / tg128 t/s, peak
# RSS, perplexity and bits per byte on the held-out pydoc.txt, KL and same-top-1 against the
# teacher. Rerunning resumes the training where it stopped and reuses what is done.
#
# Environment: STEPS (training steps, default the config's), CHUNKS (perplexity/KL chunks of
# 512 tokens, default 40), REPS (bench repetitions, default 3), OUT (default runs/main-job).
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
BIN="$(tools/native-build.sh)"
OUT="${OUT:-runs/main-job}"
CHUNKS="${CHUNKS:-40}"
TEXT=tests/data/corpora/pydoc.txt
PTQ="$OUT/ptq-q4_0.gguf"
IMX="$OUT/imatrix-q4_0.gguf"
QAT="$OUT/qat-q4_0.gguf"
mkdir -p "$OUT"

echo "main-job: PTQ Q4_0 of the teacher (llama-quantize's recipe)" >&2
[[ -f "$PTQ" ]] || "$BIN" export-gguf --model "$TEACHER" --recipe q4_0 --out "$PTQ"

echo "main-job: imatrix-PTQ Q4_0 (importance matrix from the training corpus)" >&2
if [[ ! -f "$IMX" ]]; then
    [[ -f "$OUT/calibration.txt" ]] || tools/calibration-text.sh > "$OUT/calibration.txt"
    [[ -f "$OUT/imatrix.gguf" ]] || "$BIN" imatrix -m "$TEACHER" -f "$OUT/calibration.txt" -c 512 \
        --chunks 100 -o "$OUT/imatrix.gguf"
    "$BIN" export-gguf --model "$TEACHER" --recipe q4_0 --imatrix "$OUT/imatrix.gguf" --out "$IMX"
fi

echo "main-job: whole-model QAT to Q4_0 on the imatrix's grid (models/qat-q4.toml)" >&2
"$BIN" train --config models/qat-q4.toml --teacher "$TEACHER" --out "$OUT/run" \
    --imatrix "$OUT/imatrix.gguf" ${STEPS:+--steps "$STEPS"} --resume
"$BIN" export-gguf --checkpoint "$OUT/run" --out "$QAT" --force

echo "main-job: bench, perplexity and KL against the teacher" >&2
"$BIN" bench tokens-per-second -m "$TEACHER" -m "$PTQ" -m "$IMX" -m "$QAT" -r "${REPS:-3}" -o json \
    --ppl-file "$TEXT" --ppl-ctx 512 --ppl-chunks "$CHUNKS" > "$OUT/bench.json"
for m in "$PTQ" "$IMX" "$QAT"; do
    "$BIN" eval kl -m "$m" --reference "$TEACHER" -f "$TEXT" --ctx 512 --chunks "$CHUNKS" --json
done > "$OUT/kl.jsonl"

python3 - "$OUT/bench.json" "$OUT/kl.jsonl" "$OUT/run/summary.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
kl = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
run = json.load(open(sys.argv[3]))
names = ["teacher Q4_K_M", "PTQ Q4_0 (llama-quantize's)", "imatrix-PTQ Q4_0 (llama-quantize --imatrix's)",
         "QAT Q4_0 (ours)"]
files = list(dict.fromkeys(r["model_filename"] for r in rows))
print(f"\nQAT: {run['steps']} steps, {run['tokens']:.0f} tokens in {run['seconds'] / 60:.1f} min "
      f"({run['tokens_per_second']:.1f} tokens/s, peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GiB)\n")
print("| model | MiB | pp512 t/s | tg128 t/s | peak RSS MiB | PPL pydoc | bits/byte | KL vs teacher | same top-1 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
ppl = {}
for i, f in enumerate(files):
    mine = [r for r in rows if r["model_filename"] == f]
    t = {r["test"]: r for r in mine}
    r0 = mine[0]
    k = kl[i - 1] if i > 0 else None
    ppl[i] = r0["ppl"]
    print(f"| {names[i] if i < 4 else f} | {r0['model_size'] / 2**20:.1f} "
          f"| {t['pp512']['avg_ts']:.1f} | {t['tg128']['avg_ts']:.1f} "
          f"| {r0['peak_rss_bytes'] / 2**20:.0f} | {r0['ppl']:.4f} | {r0['bpb']:.4f} "
          f"| {k['mean_kl']:.4f} ± {k['kl_stderr']:.4f} | {100 * k['same_top']:.2f} % |" if k else
          f"| {names[i]} | {r0['model_size'] / 2**20:.1f} | {t['pp512']['avg_ts']:.1f} "
          f"| {t['tg128']['avg_ts']:.1f} | {r0['peak_rss_bytes'] / 2**20:.0f} | {r0['ppl']:.4f} "
          f"| {r0['bpb']:.4f} | 0 | 100 % |")
if len(ppl) == 4:
    for j, what in ((1, "PTQ"), (2, "imatrix-PTQ")):
        if ppl[j] != ppl[0]:
            rec = (ppl[j] - ppl[3]) / (ppl[j] - ppl[0])
            print(f"\nQAT's recovery of the {what} perplexity loss: ({what} − QAT) / ({what} − teacher) "
                  f"= {100 * rec:.1f} %")
PY
