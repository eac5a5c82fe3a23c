#!/usr/bin/env bash
# The main job's training speed and numbers, before and after a change, in one interleaved run:
# A = commit BASE built (tools/native-build.sh) in a git worktree, B = this tree's native build;
# each runs `train --config models/optimizer-curves.toml --imatrix tests/data/gemma3-270m/
# pydoc4.imatrix.gguf --steps STEPS` (the main job's whole-model QAT of the real Gemma 3 270M on
# an imatrix grid, pydoc corpus) in its own process, in rounds of alternating order (A B, B A,
# B A, A B, …) so the machine's drift weighs on both alike. Prints per run the tokens/s over
# steps 2..STEPS, the peak RSS and the losses; whether every run's losses and gradient norms
# are the same bits; and B/A per round with their median (docs/scale.md).
# Usage: tools/train-speed-compare.sh [BASE]   (default 112924f, before issue 30's memory work)
#   ROUNDS (default 4), STEPS (default 8), OUT (default runs/train-speed-compare)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:-112924f}"
ROUNDS="${ROUNDS:-4}"
STEPS="${STEPS:-8}"
OUT="${OUT:-runs/train-speed-compare}"
[[ "$STEPS" -ge 2 ]] || { echo "train-speed-compare: STEPS must be at least 2" >&2; exit 2; }
tools/fetch-teacher.sh >/dev/null
tools/prepare-corpus.sh >/dev/null
WORKTREE="$HOME/.cache/qat-distill/worktree-$BASE"
if [[ ! -d "$WORKTREE" ]]; then
    git worktree add --detach "$WORKTREE" "$BASE" >&2
fi
mkdir -p "$WORKTREE/data"
ln -sfn "$PWD/data/pydoc-train" "$WORKTREE/data/pydoc-train"
A="$WORKTREE/$("$WORKTREE/tools/native-build.sh")"
B="$PWD/$(tools/native-build.sh)"
mkdir -p "$OUT"
order=""
for r in $(seq "$ROUNDS"); do
    if (((r % 4) == 1 || (r % 4) == 0)); then order+="AB"; else order+="BA"; fi
done
i=0
for ((k = 0; k < ${#order}; k++)); do
    w="${order:k:1}"
    i=$((i + 1))
    bin="$A"
    [[ "$w" == B ]] && bin="$B"
    run="$OUT/$i-$w"
    rm -rf "$run"
    echo "train-speed-compare: run $i ($w)" >&2
    "$bin" train --config models/optimizer-curves.toml \
        --imatrix tests/data/gemma3-270m/pydoc4.imatrix.gguf --steps "$STEPS" --eval-every 0 \
        --checkpoint-every 1000 --out "$run" >/dev/null 2>"$run.log"
    rm -rf "$run"/step-*
done
python3 - "$OUT" "$order" "$STEPS" <<'PY'
import json, statistics, sys
out, order, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = []
for i, w in enumerate(order, 1):
    d = f"{out}/{i}-{w}"
    log = [json.loads(l) for l in open(d + "/log.jsonl") if '"event":"step"' in l]
    # The log's tokens/s is cumulative from the first step's start and every step has the same
    # tokens, so step k ended at k / tokens_per_second_k in units of one step's tokens: steps
    # 2..N made N - 1 such units in the time between the first step's end and the last's.
    t = [(k + 1) / s["tokens_per_second"] for k, s in enumerate(log)]
    rate = (steps - 1) / (t[-1] - t[0])
    peak = json.load(open(d + "/summary.json"))["peak_rss_bytes"] / 1e9
    runs.append((w, rate, peak, [s["loss"] for s in log], [s["grad_norm"] for s in log]))
    print(f"run {i} {w}: {rate:.2f} tokens/s (steps 2-{steps}), peak {peak:.2f} GB, "
          f"losses {' '.join(f'{x:.6f}' for x in runs[-1][3])}")
same = all(r[3] == runs[0][3] and r[4] == runs[0][4] for r in runs)
print("losses and gradient norms the same bits in every run:", "yes" if same else "NO")
ratios = []
for k in range(0, len(runs), 2):
    a = next(r[1] for r in runs[k:k + 2] if r[0] == "A")
    b = next(r[1] for r in runs[k:k + 2] if r[0] == "B")
    ratios.append(b / a)
print("B/A per round:", " ".join(f"{x:.3f}" for x in ratios),
      f"| median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
PY
