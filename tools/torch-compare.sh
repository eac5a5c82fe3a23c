#!/usr/bin/env bash
# Training speed and peak memory against the seed's own stack, same machine, same run:
# tools/torch_kd_step.py (PyTorch + transformers from PyPI, f32, random weights, a
# Gemma-3-270M-shaped teacher and a 6-block student) and `qat-distill train` on the real teacher
# (Gemma 3 270M Q4_K_M) with the main job's 6-block student, both at B x T tokens per step and
# the same threads. Tokens/s count B x T per step over the steps after the first two (warm-up);
# peak RSS is each process's VmHWM. Prints one markdown table.
#   STEPS=10 SEQ=256 BATCH=1 THREADS=2 tools/torch-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-10}" SEQ="${SEQ:-256}" BATCH="${BATCH:-1}" THREADS="${THREADS:-2}"
WARMUP=2
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/qat-distill/torch-venv"
if ! "$VENV/bin/python" -c 'import torch, transformers' 2>/dev/null; then
    echo "torch-compare: installing torch and transformers from PyPI into $VENV (about 3 GB)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --no-cache-dir torch transformers >&2
fi
TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
BIN="$(tools/native-build.sh)"
OUT=runs/torch-compare
rm -rf "$OUT"
mkdir -p "$OUT"

"$VENV/bin/python" tools/torch_kd_step.py --batch "$BATCH" --seq "$SEQ" --threads "$THREADS" \
    --steps "$STEPS" --warmup "$WARMUP" > "$OUT/torch.json"
for qat in none qat-q4; do
    "$BIN" train --config models/six-block-qat.toml --teacher "$TEACHER" --qat "$qat" \
        --seq-len "$SEQ" --batch-size "$BATCH" --steps $((STEPS + WARMUP)) --eval-every 0 \
        --checkpoint-every 1000000 --threads "$THREADS" --out "$OUT/ours-$qat" \
        > "$OUT/ours-$qat.summary.json"
done

python3 - "$OUT" "$STEPS" "$WARMUP" "$SEQ" "$BATCH" "$THREADS" <<'PY'
import json, sys
out, steps, warmup, seq, batch, threads = sys.argv[1], *map(int, sys.argv[2:])
torch = json.load(open(f"{out}/torch.json"))
rows = [("PyTorch + transformers (f32 teacher and student, random weights)", torch["tokens_per_second"], torch["peak_rss_bytes"])]
for qat in ["none", "qat-q4"]:
    log = [json.loads(l) for l in open(f"{out}/ours-{qat}/log.jsonl")]
    log = [e for e in log if e.get("event") == "step"]
    summary = json.load(open(f"{out}/ours-{qat}.summary.json"))
    per_step = summary["tokens"] / summary["steps"]
    # The log's tokens/s is cumulative from the first step: recover each step's end time.
    t = {e["step"]: e["step"] * per_step / e["tokens_per_second"] for e in log}
    last = max(t)
    tps = (last - warmup) * batch * seq / (t[last] - t[warmup])
    what = "f32 student" if qat == "none" else "QAT student (qat-q4)"
    rows.append((f"qat-distill (Q4_K_M teacher, {what})", tps, summary["peak_rss_bytes"]))
print(f"B={batch}, T={seq}, {threads} threads, {steps} timed steps after {warmup} warm-up\n")
print("| trainer | tokens/s | peak RSS | speed vs PyTorch | memory vs PyTorch |")
print("|---|---:|---:|---:|---:|")
for name, tps, rss in rows:
    print(f"| {name} | {tps:.1f} | {rss / 2**30:.2f} GiB | {tps / rows[0][1]:.2f}x | {rss / rows[0][2]:.2f}x |")
PY
