#!/usr/bin/env bash
# Text the teacher writes itself: $N samples of $LEN tokens from an empty prompt (BOS only),
# sampled from the teacher's whole distribution (temperature 1, no top-k/top-p cut), seeds
# 1..N, one file per sample under ${1:-data/teacher-text}. Distilling on it shows the student the
# teacher's own distribution over every genre the teacher writes (LLM-QAT's "data-free" data), not
# only the training corpus's. Resumable (a sample is written atomically and kept); idempotent;
# prints the directory.
#
# Environment: N (default 100), LEN (default 256), BIN (default: tools/native-build.sh's).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-data/teacher-text}"
N="${N:-100}"
LEN="${LEN:-256}"
TEACHER="$(tools/fetch-teacher.sh)"
BIN="${BIN:-$(tools/native-build.sh)}"
if [[ -f "$OUT/.complete-$N-$LEN" ]]; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT"
for i in $(seq 1 "$N"); do
    f="$OUT/$(printf '%05d' "$i").txt"
    [[ -s "$f" ]] && continue
    printf '\rteacher-text: sample %d/%d' "$i" "$N" >&2
    "$BIN" generate -m "$TEACHER" -p "" -n "$LEN" --temp 1 --top-k 0 --top-p 1 --seed "$i" \
        > "$f.tmp" 2>/dev/null
    mv "$f.tmp" "$f"
done
echo >&2
touch "$OUT/.complete-$N-$LEN"
echo "$OUT"
