#!/usr/bin/env bash
# The main job, end to end on a fresh machine: fetch the teacher (Gemma 3 270M Q4_K_M) and a
# training corpus, build qat-distill for this CPU, quantize the teacher to Q4_0 the way
# llama-quantize does (post-training, PTQ), quantize it again with whole-model QAT by
# self-distillation (models/qat-q4.toml: half the pydoc corpus, half 100 samples the teacher writes
# itself (tools/teacher-text.sh, ~15 min), ~16–21 min of training on 2 cores), export it, and once more
# the way llama.cpp users do (an importance matrix over 100 chunks of the training corpus,
# `qat-distill imatrix`, then `export-gguf --imatrix`), then print one table: teacher, PTQ Q4_0,
# imatrix-PTQ Q4_0 and QAT Q4_0 side by side — file size, pp512 / tg128 t/s, peak
# RSS, perplexity and bits per byte on the held-out pydoc.txt, KL and same-top-1 against the
# teacher; then perplexity and KL on a held-out text of another genre (licence texts). Rerunning resumes the training where it stopped and reuses what is done.
#
# Environment: STEPS (training steps, default the config's), CHUNKS (perplexity/KL chunks of
# 512 tokens, default 40), REPS (bench repetitions, default 3), OUT (default runs/main-job).
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
OTHER="$(tools/prepare-licenses.sh)"
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

echo "main-job: text the teacher writes itself (half of QAT's training text; resumable)" >&2
N=100 LEN=256 BIN="$BIN" tools/teacher-text.sh >/dev/null

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
echo "main-job: perplexity and KL on text of another genre ($OTHER, held out)" >&2
for m in "$PTQ" "$IMX" "$QAT"; do
    "$BIN" eval kl -m "$m" --reference "$TEACHER" -f "$OTHER" --ctx 512 --chunks "$CHUNKS" --json
done > "$OUT/kl-other.jsonl"

python3 - "$OUT/bench.json" "$OUT/kl.jsonl" "$OUT/run/summary.json" "$OUT/kl-other.jsonl" <<'PY'
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
other = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
if len(other) == 3:
    print("\nAnother genre, held out (licence texts; no training or calibration text holds them):\n")
    print("| model | PPL licences | KL vs teacher | same top-1 |")
    print("|---|---:|---:|---:|")
    print(f"| {names[0]} | {other[0]['ppl_reference']:.4f} | 0 | 100 % |")
    for i, k in enumerate(other):
        print(f"| {names[i + 1]} | {k['ppl_model']:.4f} | {k['mean_kl']:.4f} ± {k['kl_stderr']:.4f} "
              f"| {100 * k['same_top']:.2f} % |")
    t = other[0]["ppl_reference"]
    for j, what in ((0, "PTQ"), (1, "imatrix-PTQ")):
        p = other[j]["ppl_model"]
        if p != t:
            print(f"\nQAT's recovery of the {what} perplexity loss on licences: "
                  f"{100 * (p - other[2]['ppl_model']) / (p - t):.1f} %")
PY
