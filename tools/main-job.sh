#!/usr/bin/env bash
# The main job, end to end on a fresh machine: fetch the teacher and a training corpus, build
# qat-distill for this CPU, distil a 6-block student with QAT (models/main-job.toml, ~10 min),
# export it as GGUF with the grid it trained against, then show teacher and student side by
# side: llama-bench-style tokens/s, peak memory and held-out perplexity on pydoc.txt.
# Rerunning resumes the training where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

TEACHER="$(tools/fetch-teacher.sh)"
tools/prepare-corpus.sh >/dev/null
BIN="$(tools/native-build.sh)"
RUN=runs/main-job
STUDENT="$RUN/student-qat-q4.gguf"

"$BIN" train --config models/main-job.toml --teacher "$TEACHER" --out "$RUN" --resume
"$BIN" export-gguf --checkpoint "$RUN" --out "$STUDENT" --force
"$BIN" bench tokens-per-second -m "$TEACHER" -m "$STUDENT" -r "${REPS:-3}" \
    --ppl-file tests/data/corpora/pydoc.txt --ppl-ctx 512 --ppl-chunks "${CHUNKS:-40}"
