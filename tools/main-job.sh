#!/usr/bin/env bash
# The main job, end to end on a fresh machine, and the QAT-against-PTQ experiment (one script):
# fetch the teacher (Gemma 3 270M Q4_K_M) and a training corpus, build qat-distill for this CPU,
# then for each recipe in $RECIPES (default "qat-q4"; run configurations models/<recipe>.toml)
# quantize the teacher three ways:
#   PTQ          post-training, as llama-quantize does (`export-gguf --recipe`)
#   imatrix-PTQ  as llama.cpp users do: an importance matrix over 100 chunks of the training
#                corpus (`qat-distill imatrix`, as llama-imatrix), then `export-gguf --imatrix`
#   QAT          whole-model QAT by self-distillation on the imatrix's grid (qat-q4: half the
#                pydoc corpus, half 100 samples the teacher writes itself — tools/teacher-text.sh,
#                ~15 min — and ~16–21 min of training on 2 cores), exported
# and print one table per recipe — teacher, PTQ, imatrix-PTQ and QAT side by side: file size,
# pp512 / tg128 t/s (`bench`, interleaved rounds), peak RSS, perplexity and bits per byte on the
# held-out pydoc.txt, KL and same-top-1 against the teacher — then perplexity and KL on a held-out
# text of another genre (licence texts), and each recipe's recovery of the PTQ loss. Rerunning
# resumes the training where it stopped and reuses what is done. Tables in $OUT/results.md, raw
# JSON beside them.
#
# Environment: RECIPES (e.g. "qat-q4 q4_0-pure q2_k"), STEPS (override the configs' steps),
# CHUNKS (perplexity/KL chunks of 512 tokens, default 40), REPS (bench repetitions, default 3),
# ROUNDS (bench rounds, default 2), OUT (default runs/main-job), LLAMA=1 (also llama.cpp's own
# llama-perplexity on every file, and its --kl-divergence on the first recipe's QAT file, to
# show `eval` agrees), TEXT_SAMPLES (teacher-written samples, default 100; fewer only for a
# quick trial of the script).
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
OTHER="$(tools/prepare-licenses.sh)"
BIN="$(tools/native-build.sh)"
OUT="${OUT:-runs/main-job}"
CHUNKS="${CHUNKS:-40}"
RECIPES="${RECIPES:-qat-q4}"
LLAMA="${LLAMA:-0}"
TEXT=tests/data/corpora/pydoc.txt
mkdir -p "$OUT"
for r in $RECIPES; do
    [[ -f "models/$r.toml" ]] || { echo "main-job: no run configuration models/$r.toml" >&2; exit 2; }
done
# The file type a recipe's PTQ files use (qat-q4 trains against Q4_0's grid).
ptq_recipe() { case "$1" in qat-q4) echo q4_0 ;; *) echo "$1" ;; esac; }

echo "main-job: importance matrix of the teacher (100 chunks of the training corpus)" >&2
[[ -f "$OUT/calibration.txt" ]] || tools/calibration-text.sh > "$OUT/calibration.txt"
[[ -f "$OUT/imatrix.gguf" ]] || "$BIN" imatrix -m "$TEACHER" -f "$OUT/calibration.txt" -c 512 \
    --chunks 100 -o "$OUT/imatrix.gguf"

echo "main-job: text the teacher writes itself (half of QAT's training text; resumable)" >&2
N="${TEXT_SAMPLES:-100}" LEN=256 BIN="$BIN" tools/teacher-text.sh >/dev/null

FILES=()
for r in $RECIPES; do
    q="$(ptq_recipe "$r")"
    echo "main-job: $r — PTQ $q (llama-quantize's recipe)" >&2
    [[ -f "$OUT/ptq-$r.gguf" ]] || "$BIN" export-gguf --model "$TEACHER" --recipe "$q" \
        --out "$OUT/ptq-$r.gguf"
    echo "main-job: $r — imatrix-PTQ $q" >&2
    [[ -f "$OUT/imatrix-$r.gguf" ]] || "$BIN" export-gguf --model "$TEACHER" --recipe "$q" \
        --imatrix "$OUT/imatrix.gguf" --out "$OUT/imatrix-$r.gguf"
    echo "main-job: $r — whole-model QAT on the imatrix's grid (models/$r.toml)" >&2
    "$BIN" train --config "models/$r.toml" --teacher "$TEACHER" --out "$OUT/run-$r" \
        --imatrix "$OUT/imatrix.gguf" ${STEPS:+--steps "$STEPS"} --resume
    "$BIN" export-gguf --checkpoint "$OUT/run-$r" --out "$OUT/qat-$r.gguf" --force
    FILES+=("$OUT/ptq-$r.gguf" "$OUT/imatrix-$r.gguf" "$OUT/qat-$r.gguf")
done

echo "main-job: bench (interleaved rounds), perplexity and KL against the teacher" >&2
MODELS=(-m "$TEACHER")
for f in "${FILES[@]}"; do MODELS+=(-m "$f"); done
"$BIN" bench tokens-per-second "${MODELS[@]}" -r "${REPS:-3}" --rounds "${ROUNDS:-2}" -o json \
    --ppl-file "$TEXT" --ppl-ctx 512 --ppl-chunks "$CHUNKS" > "$OUT/bench.json"
for f in "${FILES[@]}"; do
    "$BIN" eval kl -m "$f" --reference "$TEACHER" -f "$TEXT" --ctx 512 --chunks "$CHUNKS" --json
done > "$OUT/kl.jsonl"
echo "main-job: perplexity and KL on text of another genre ($OTHER, held out)" >&2
for f in "${FILES[@]}"; do
    "$BIN" eval kl -m "$f" --reference "$TEACHER" -f "$OTHER" --ctx 512 --chunks "$CHUNKS" --json
done > "$OUT/kl-other.jsonl"

: > "$OUT/llama.jsonl"
if [[ "$LLAMA" == 1 ]]; then
    echo "main-job: llama.cpp's own llama-perplexity on every file" >&2
    LP="$(tools/llama-tools.sh)/llama-perplexity"
    for f in "$TEACHER" "${FILES[@]}"; do
        ppl=$("$LP" -m "$f" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$(nproc)" 2>&1 \
            | grep -o 'Final estimate: PPL = [0-9.]*' | grep -o '[0-9.]*$')
        printf '{"file": "%s", "ppl": %s}\n' "$f" "${ppl:-null}" >> "$OUT/llama.jsonl"
    done
    first=$(echo $RECIPES | cut -d' ' -f1)
    "$LP" -m "$TEACHER" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$(nproc)" \
        --kl-divergence-base "$OUT/teacher.kld" >"$OUT/kld-base.log" 2>&1
    "$LP" -m "$OUT/qat-$first.gguf" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$(nproc)" \
        --kl-divergence-base "$OUT/teacher.kld" --kl-divergence >"$OUT/kld-qat-$first.log" 2>&1
    rm -f "$OUT/teacher.kld"
fi

python3 - "$OUT" $RECIPES <<'PY' | tee "$OUT/results.md"
import json, re, sys
out, recipes = sys.argv[1], sys.argv[2:]
rows = json.load(open(f"{out}/bench.json"))
kl = [json.loads(l) for l in open(f"{out}/kl.jsonl") if l.strip()]
other = [json.loads(l) for l in open(f"{out}/kl-other.jsonl") if l.strip()]
llama = {j["file"]: j["ppl"] for j in map(json.loads, open(f"{out}/llama.jsonl")) if j}
files = list(dict.fromkeys(r["model_filename"] for r in rows))
by_file = {f: {r["test"]: r for r in rows if r["model_filename"] == f} for f in files}
first = lambda f: next(iter(by_file[f].values()))
teacher = files[0]
kinds = ["PTQ {} (llama-quantize's)", "imatrix-PTQ {} (llama-quantize --imatrix's)", "QAT {} (ours)"]
# The file type of a recipe's files, as ptq_recipe says (qat-q4 trains against Q4_0's grid).
ftype = lambda r: {"qat-q4": "q4_0"}.get(r, r).upper()
lcol = bool(llama)

def speed(f, test):
    t = by_file[f].get(test)
    if not t:
        return "—"
    s = f"{t['avg_ts']:.1f}"
    if f != teacher and t.get("speedup") is not None:
        s += f" ({t['speedup']:.2f}×)"
    return s

for ri, r in enumerate(recipes):
    run = json.load(open(f"{out}/run-{r}/summary.json"))
    print(f"\n### {r}: QAT {run['steps']} steps, {run['tokens']:.0f} tokens in "
          f"{run['seconds'] / 60:.1f} min ({run['tokens_per_second']:.1f} tokens/s, peak RSS "
          f"{run['peak_rss_bytes'] / 2**30:.2f} GiB)\n")
    print("| model | MiB | pp512 t/s | tg128 t/s | peak RSS MiB | PPL pydoc | bits/byte | KL vs teacher | same top-1 |"
          + (" llama-perplexity |" if lcol else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if lcol else ""))
    ppl = {}
    for i, f in enumerate([teacher] + files[1 + 3 * ri: 4 + 3 * ri]):
        r0 = first(f)
        k = kl[3 * ri + i - 1] if i > 0 else None
        ppl[i] = r0["ppl"]
        name = "teacher Q4_K_M" if i == 0 else kinds[i - 1].format(ftype(r))
        if i == 3:
            name = f"**{name}**"
        klc = f"{k['mean_kl']:.4f} ± {k['kl_stderr']:.4f} | {100 * k['same_top']:.2f} %" if k else "0 | 100 %"
        lp = f" {llama.get(f)} |" if lcol else ""
        print(f"| {name} | {r0['model_size'] / 2**20:.1f} | {speed(f, 'pp512')} | {speed(f, 'tg128')} "
              f"| {r0['peak_rss_bytes'] / 2**20:.0f} | {r0['ppl']:.4f} | {r0['bpb']:.4f} | {klc} |{lp}")
    o = other[3 * ri: 3 * ri + 3]
    print("\nAnother genre, held out (licence texts; no training or calibration text holds them):\n")
    print("| model | PPL licences | KL vs teacher | same top-1 |")
    print("|---|---:|---:|---:|")
    print(f"| teacher Q4_K_M | {o[0]['ppl_reference']:.4f} | 0 | 100 % |")
    for i, k in enumerate(o):
        print(f"| {kinds[i].format(ftype(r))} | {k['ppl_model']:.4f} | {k['mean_kl']:.4f} ± {k['kl_stderr']:.4f} "
              f"| {100 * k['same_top']:.2f} % |")
    print()
    t_other = o[0]["ppl_reference"]
    for j, what in ((1, "PTQ"), (2, "imatrix-PTQ")):
        if ppl[j] != ppl[0]:
            print(f"- QAT's recovery of the {what} perplexity loss, pydoc: ({what} − QAT) / ({what} − teacher) "
                  f"= {100 * (ppl[j] - ppl[3]) / (ppl[j] - ppl[0]):.1f} %")
        p = o[j - 1]["ppl_model"]
        if p != t_other:
            print(f"- QAT's recovery of the {what} perplexity loss, licences: "
                  f"{100 * (p - o[2]['ppl_model']) / (p - t_other):.1f} %")
if lcol:
    log = open(f"{out}/kld-qat-{recipes[0]}.log").read()
    m = re.search(r"Mean\s+KLD:\s+([0-9.]+)\s+±\s+([0-9.]+)", log)
    s = re.search(r"Same top p:\s+([0-9.]+)\s+±\s+([0-9.]+)", log)
    if m and s:
        print(f"- llama-perplexity --kl-divergence, QAT {recipes[0]}: mean KL {m.group(1)} ± {m.group(2)}, "
              f"same top {s.group(1)} ± {s.group(2)} %")
PY
