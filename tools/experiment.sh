#!/usr/bin/env bash
# The distillation and QAT experiments of the README, reproducible: the same student, seed, data
# and steps (models/main-job.toml) trained four ways, then measured on the held-out pydoc.txt
# (ctx 512, 40 chunks):
#   init  the student before training (one step at lr 0)
#   hard  hard labels only (alpha 0), f32
#   kd    distillation (alpha 0.5, T 2, forward KL), f32; exported f32 and, as PTQ, qat-q4
#   qat   distillation with QAT against qat-q4 (the main job's run), exported qat-q4
# Perplexities of the exported files are measured by llama.cpp itself (tools/llama_ref.py) and by
# qat-distill. Prints one markdown table; raw numbers land in runs/experiment/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
BIN="$(tools/native-build.sh)"
PY="$(tools/llama-cpp.sh)"
E=runs/experiment
CHUNKS="${CHUNKS:-40}"
TEXT=tests/data/corpora/pydoc.txt
mkdir -p "$E"
: > "$E/results.jsonl"

train() { # name, extra flags...
    local name=$1; shift
    /usr/bin/time -f '%M' -o "$E/$name.maxrss" \
        "$BIN" train --config models/main-job.toml --teacher "$TEACHER" --out "$E/$name" --resume "$@" \
        > "$E/$name.summary.json"
}
train init --qat none --steps 1 --lr 0 --eval-every 0
train hard --qat none --alpha 0
train kd --qat none
train qat --qat qat-q4

"$BIN" export-gguf --checkpoint "$E/init" --recipe f32 --out "$E/init-f32.gguf" --force
"$BIN" export-gguf --checkpoint "$E/hard" --recipe f32 --out "$E/hard-f32.gguf" --force
"$BIN" export-gguf --checkpoint "$E/kd" --recipe f32 --out "$E/kd-f32.gguf" --force
"$BIN" export-gguf --checkpoint "$E/kd" --recipe qat-q4 --from-f32 --out "$E/kd-ptq-qat-q4.gguf" --force
"$BIN" export-gguf --checkpoint "$E/qat" --out "$E/qat-qat-q4.gguf" --force

for f in "$TEACHER" "$E"/init-f32.gguf "$E"/hard-f32.gguf "$E"/kd-f32.gguf "$E"/kd-ptq-qat-q4.gguf "$E"/qat-qat-q4.gguf; do
    ours=$("$BIN" eval perplexity -m "$f" -f "$TEXT" --ctx 512 --chunks "$CHUNKS" --json)
    llama=$("$PY" tools/llama_ref.py --model "$f" --file "$TEXT" --ctx 512 --chunks "$CHUNKS" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["perplexity"]))')
    size=$(stat -c %s "$f")
    echo "{\"file\": \"$f\", \"bytes\": $size, \"ours\": $ours, \"llama\": $llama}" >> "$E/results.jsonl"
done

python3 - "$E" <<'PY'
import json, sys, os
E = sys.argv[1]
rows = [json.loads(l) for l in open(f"{E}/results.jsonl")]
def run(name):
    s = json.load(open(f"{E}/{name}.summary.json"))
    rss = int(open(f"{E}/{name}.maxrss").read().split()[-1]) * 1024
    return s, rss
print("| model | file | MiB | PPL llama.cpp | PPL qat-distill | train tok/s | train peak RSS |")
print("|---|---|---:|---:|---:|---:|---:|")
names = {"init-f32": "init", "hard-f32": "hard", "kd-f32": "kd", "kd-ptq-qat-q4": "kd", "qat-qat-q4": "qat"}
for r in rows:
    base = os.path.basename(r["file"]).removesuffix(".gguf")
    run_name = names.get(base)
    tps = rss = ""
    if run_name and run_name != "init":
        s, m = run(run_name)
        tps, rss = f"{s['tokens_per_second']:.1f}", f"{m / 2**30:.2f} GiB"
    print(f"| {run_name or 'teacher'} | {base} | {r['bytes'] / 2**20:.1f} | {r['llama']['ppl']:.4f} | {r['ours']['ppl']:.4f} | {tps} | {rss} |")
ppl = {os.path.basename(r["file"]).removesuffix(".gguf"): r["llama"]["ppl"] for r in rows}
f32, ptq, qat = ppl["kd-f32"], ppl["kd-ptq-qat-q4"], ppl["qat-qat-q4"]
print(f"\nQAT recovers {(ptq - qat) / (ptq - f32) * 100:.1f} % of the PTQ loss (llama.cpp PPL: f32 {f32:.4f}, PTQ {ptq:.4f}, QAT {qat:.4f}).")
print(f"KD vs hard labels: {ppl['kd-f32']:.4f} vs {ppl['hard-f32']:.4f} ({(1 - ppl['kd-f32'] / ppl['hard-f32']) * 100:.1f} % lower).")
PY
