#!/usr/bin/env bash
# The distillation and QAT experiments of the README, reproducible: the same student, seed, data
# and steps (models/six-block-qat.toml) trained four ways, then measured on the held-out pydoc.txt
# (ctx 512, 40 chunks):
#   init  the student before training (one step at lr 0)
#   hard  hard labels only (alpha 0), f32
#   kd    distillation (the config's alpha and T), f32; exported f32 (and, as PTQ, qat-q4 when
#         qat is among the runs)
#   qat   distillation with QAT against qat-q4 (the main job's run), exported qat-q4
# Perplexities of the exported files are measured by llama.cpp itself (tools/llama_ref.py) and by
# qat-distill. Prints one markdown table; raw numbers land in $E/results.jsonl.
#   CONFIG  run configuration (default models/six-block-qat.toml)
#   RUNS    which of "init hard kd qat" to train (default all four)
#   E       output folder (default runs/experiment)
#   LLAMA   1 (default): llama.cpp's perplexity of every file too; 0: qat-distill's only
# The trainer issue's KD vs hard-label experiment (204 000 tokens per run):
#   CONFIG=models/kd-experiment.toml RUNS="init hard kd" E=runs/kd-experiment tools/experiment.sh
# Every run resumes from its newest checkpoint, so an interrupted experiment continues
# bit-identically; a run whose summary is already written is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
BIN="$(tools/native-build.sh)"
LLAMA="${LLAMA:-1}"
if [[ "$LLAMA" == 1 ]]; then PY="$(tools/llama-tools.sh --python)"; fi
CONFIG="${CONFIG:-models/six-block-qat.toml}"
RUNS="${RUNS:-init hard kd qat}"
E="${E:-runs/experiment}"
has() { [[ " $RUNS " == *" $1 "* ]]; }
CHUNKS="${CHUNKS:-40}"
TEXT=tests/data/corpora/pydoc.txt
mkdir -p "$E"
: > "$E/results.jsonl"

train() { # name, extra flags...
    local name=$1; shift
    if [[ -s "$E/$name.summary.json" ]]; then return; fi
    /usr/bin/time -f '%M' -o "$E/$name.maxrss" \
        "$BIN" train --config "$CONFIG" --teacher "$TEACHER" --out "$E/$name" --resume "$@" \
        > "$E/$name.summary.json.tmp"
    mv "$E/$name.summary.json.tmp" "$E/$name.summary.json"
}
files=("$TEACHER")
export_gguf() { # checkpoint, file name, flags...
    local run=$1 name=$2; shift 2
    "$BIN" export-gguf --checkpoint "$E/$run" --out "$E/$name.gguf" --force "$@"
    files+=("$E/$name.gguf")
}
if has init; then train init --qat none --steps 1 --lr 0 --eval-every 0; export_gguf init init-f32 --recipe f32; fi
if has hard; then train hard --qat none --alpha 0; export_gguf hard hard-f32 --recipe f32; fi
if has kd; then
    train kd --qat none
    export_gguf kd kd-f32 --recipe f32
    if has qat; then export_gguf kd kd-ptq-qat-q4 --recipe qat-q4 --from-f32; fi
fi
if has qat; then train qat --qat qat-q4; export_gguf qat qat-qat-q4; fi

for f in "${files[@]}"; do
    ours=$("$BIN" eval perplexity -m "$f" -f "$TEXT" --ctx 512 --chunks "$CHUNKS" --json)
    llama=null
    if [[ "$LLAMA" == 1 ]]; then
        llama=$("$PY" tools/llama_ref.py --model "$f" --file "$TEXT" --ctx 512 --chunks "$CHUNKS" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["perplexity"]))')
    fi
    size=$(stat -c %s "$f")
    params=$("$BIN" inspect --json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["params"])')
    echo "{\"file\": \"$f\", \"bytes\": $size, \"params\": $params, \"ours\": $ours, \"llama\": $llama}" >> "$E/results.jsonl"
done

python3 - "$E" <<'PY'
import json, sys, os
E = sys.argv[1]
rows = [json.loads(l) for l in open(f"{E}/results.jsonl")]
def run(name):
    s = json.load(open(f"{E}/{name}.summary.json"))
    rss = int(open(f"{E}/{name}.maxrss").read().split()[-1]) * 1024
    return s, rss
print("| model | file | params | MiB | PPL llama.cpp | PPL qat-distill | train tokens | train tok/s | train peak RSS |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
names = {"init-f32": "init", "hard-f32": "hard", "kd-f32": "kd", "kd-ptq-qat-q4": "kd", "qat-qat-q4": "qat"}
for r in rows:
    base = os.path.basename(r["file"]).removesuffix(".gguf")
    run_name = names.get(base)
    tps = rss = toks = ""
    if run_name and run_name != "init":
        s, m = run(run_name)
        tps, rss, toks = f"{s['tokens_per_second']:.1f}", f"{m / 2**30:.2f} GiB", f"{s['tokens']:.0f}"
    llama = f"{r['llama']['ppl']:.4f}" if r["llama"] else "—"
    print(f"| {run_name or 'teacher'} | {base} | {r['params'] / 1e6:.1f} M | {r['bytes'] / 2**20:.1f} | {llama} | {r['ours']['ppl']:.4f} | {toks} | {tps} | {rss} |")
ppl = {os.path.basename(r["file"]).removesuffix(".gguf"): (r["llama"] or r["ours"])["ppl"] for r in rows}
if {"kd-f32", "kd-ptq-qat-q4", "qat-qat-q4"} <= ppl.keys():
    f32, ptq, qat = ppl["kd-f32"], ppl["kd-ptq-qat-q4"], ppl["qat-qat-q4"]
    print(f"\nQAT recovers {(ptq - qat) / (ptq - f32) * 100:.1f} % of the PTQ loss (llama.cpp PPL: f32 {f32:.4f}, PTQ {ptq:.4f}, QAT {qat:.4f}).")
if {"kd-f32", "hard-f32"} <= ppl.keys():
    print(f"\nKD vs hard labels: {ppl['kd-f32']:.4f} vs {ppl['hard-f32']:.4f} ({(1 - ppl['kd-f32'] / ppl['hard-f32']) * 100:.1f} % lower).")
PY
