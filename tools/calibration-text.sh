#!/usr/bin/env bash
# Prints the calibration text the importance matrices here are computed on: the first files of
# the training corpus (data/pydoc-train, tools/prepare-corpus.sh) in name order, whole files up
# to ${BYTES:-600000} bytes (587,262 bytes: 41 files). Never the held-out evaluation text.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$(tools/prepare-corpus.sh)"
python3 - "$DIR" "${BYTES:-600000}" <<'PY'
import os, sys
d, limit, n = sys.argv[1], int(sys.argv[2]), 0
for f in sorted(n for n in os.listdir(d) if n.endswith(".txt")):
    b = open(os.path.join(d, f), "rb").read()
    if n + len(b) > limit:
        break
    sys.stdout.buffer.write(b)
    n += len(b)
PY
