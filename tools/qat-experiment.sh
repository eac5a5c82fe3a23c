#!/usr/bin/env bash
# Whole-model QAT against post-training quantization, for each recipe in $RECIPES (default
# "qat-q4 q4_0-pure q2_k", configs in models/): the teacher quantized with `export-gguf
# --recipe` (PTQ: llama-quantize's bytes for q4_0) and QAT'd with `train --config
# models/<recipe>.toml` (resumable), both exported; then every file measured by llama.cpp's own
# llama-perplexity (pydoc.txt, ctx 512, $CHUNKS chunks) and by qat-distill (perplexity and bits
# per byte on pydoc.txt and on a second held-out text of another genre — tools/prepare-licenses.sh
# — and KL / same-top-1 against the teacher on $KL_CHUNKS chunks), plus `llama-perplexity --kl-divergence` on the
# first QAT file to show `eval kl` agrees. Results in $E (default runs/qat-experiment): one
# table in results.md, the raw JSON beside it.
#
# Environment: RECIPES, STEPS (override the configs' steps), CHUNKS (perplexity, default 40),
# KL_CHUNKS (default 10), E.
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
LICENSES="$(tools/prepare-licenses.sh)"
QD="$(tools/native-build.sh)"
LBIN="$(tools/llama-tools.sh)"
LP="$LBIN/llama-perplexity"
E="${E:-runs/qat-experiment}"
CHUNKS="${CHUNKS:-40}"
KL_CHUNKS="${KL_CHUNKS:-10}"
RECIPES="${RECIPES:-qat-q4 q4_0-pure q2_k}"
PYDOC=tests/data/corpora/pydoc.txt
mkdir -p "$E"

ptq_recipe() { case "$1" in qat-q4) echo q4_0 ;; *) echo "$1" ;; esac; }

for r in $RECIPES; do
    echo "qat-experiment: $r" >&2
    [[ -f "$E/ptq-$r.gguf" ]] || "$QD" export-gguf --model "$TEACHER" --recipe "$(ptq_recipe "$r")" \
        --out "$E/ptq-$r.gguf" >&2
    "$QD" train --config "models/$r.toml" --teacher "$TEACHER" --out "$E/run-$r" \
        ${STEPS:+--steps "$STEPS"} --resume 2>"$E/train-$r.log"
    "$QD" export-gguf --checkpoint "$E/run-$r" --out "$E/qat-$r.gguf" --force 2>&1 | tail -n 20 >&2
done

llama_ppl() {
    "$LP" -m "$1" -f "$2" -c 512 --chunks "$CHUNKS" -t 2 2>&1 \
        | grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' | sed 's/Final estimate: PPL = //'
}
: > "$E/measure.jsonl"
for f in "$TEACHER" $(for r in $RECIPES; do echo "$E/ptq-$r.gguf" "$E/qat-$r.gguf"; done); do
    echo "qat-experiment: measuring $(basename "$f")" >&2
    lp=$(llama_ppl "$f" "$PYDOC")
    ours=$("$QD" eval perplexity -m "$f" -f "$PYDOC" --ctx 512 --chunks "$CHUNKS" --json)
    lic=$("$QD" eval perplexity -m "$f" -f "$LICENSES" --ctx 512 --chunks "$CHUNKS" --json)
    if [[ "$f" == "$TEACHER" ]]; then kl='null'; else
        kl=$("$QD" eval kl -m "$f" --reference "$TEACHER" -f "$PYDOC" --ctx 512 --chunks "$KL_CHUNKS" --json)
    fi
    printf '{"file": "%s", "bytes": %s, "llama_ppl": "%s", "ours": %s, "licenses": %s, "kl": %s}\n' \
        "$f" "$(stat -c %s "$f")" "$lp" "$ours" "$lic" "$kl" >> "$E/measure.jsonl"
done

first=$(echo $RECIPES | cut -d' ' -f1)
"$LP" -m "$TEACHER" -f "$PYDOC" -c 512 --chunks "$KL_CHUNKS" -t 2 \
    --kl-divergence-base "$E/teacher.kld" >"$E/kld-base.log" 2>&1
"$LP" -m "$E/qat-$first.gguf" -f "$PYDOC" -c 512 --chunks "$KL_CHUNKS" -t 2 \
    --kl-divergence-base "$E/teacher.kld" --kl-divergence >"$E/kld-qat-$first.log" 2>&1
rm -f "$E/teacher.kld"

python3 - "$E" "$first" <<'PY' | tee "$E/results.md"
import json, math, re, sys
e, first = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(f"{e}/measure.jsonl")]
def name(f):
    b = f.split("/")[-1]
    return "teacher Q4_K_M" if not b.startswith(("ptq-", "qat-")) else b[:-5]
print("| file | MiB | llama-perplexity pydoc | ours pydoc | bits/byte pydoc | ours licences | bits/byte licences | KL vs teacher | same top-1 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
ppl = {}
for r in rows:
    k = r["kl"]
    lp = r["llama_ppl"]
    ppl[name(r["file"])] = float(lp.split()[0]) if lp else float("nan")
    print(f"| {name(r['file'])} | {r['bytes'] / 2**20:.1f} | {lp} | {r['ours']['ppl']:.4f} | {r['ours']['bpb']:.4f} "
          f"| {r['licenses']['ppl']:.4f} | {r['licenses']['bpb']:.4f} | "
          + (f"{k['mean_kl']:.4f} ± {k['kl_stderr']:.4f} | {100 * k['same_top']:.2f} % |" if k else "0 | 100 % |"))
t = ppl["teacher Q4_K_M"]
print()
for n in ppl:
    if n.startswith("qat-"):
        r = n[4:]
        p = ppl.get(f"ptq-{r}")
        if p and p != t:
            print(f"- {r}: recovery (llama-perplexity) = (PTQ − QAT) / (PTQ − teacher) = "
                  f"({p:.4f} − {ppl[n]:.4f}) / ({p:.4f} − {t:.4f}) = {100 * (p - ppl[n]) / (p - t):.1f} %")
log = open(f"{e}/kld-qat-{first}.log").read()
m = re.search(r"Mean\s+KLD:\s+([0-9.]+)\s+±\s+([0-9.]+)", log)
s = re.search(r"Same top p:\s+([0-9.]+)\s+±\s+([0-9.]+)", log)
if m and s:
    print(f"- llama-perplexity --kl-divergence, qat-{first}: mean KL {m.group(1)} ± {m.group(2)}, same top {s.group(1)} ± {s.group(2)} %")
PY
