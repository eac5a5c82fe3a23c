#!/usr/bin/env bash
# Makes tests/data/quant/imatrix/: ggml's importance-weighted quantizers (ggml_quantize_chunk
# with an imatrix, what `llama-quantize --imatrix` runs) on the 12 reference inputs of
# tests/data/quant, with one seeded importance vector per case (log-normal over four decades,
# one block of zeros where rows are long enough: columns no calibration token touched).
# Links a 40-line C program against the libggml-base that tools/llama-tools.sh built from the
# vendored llama.cpp (llama-cpp-python 0.3.36), NumPy from the venv llama-tools.sh makes. Run once
# by hand; the outputs are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(tools/llama-tools.sh)"
SRC="${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}/llama-src-0.3.36/vendor/llama.cpp"
OUT=tests/data/quant/imatrix
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
cat > "$WORK/vectors.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
/* vectors IN.f32 WEIGHTS.f32 ROWS N TYPE OUT.bin */
int main(int argc, char ** argv) {
    if (argc != 7) return 2;
    int64_t rows = atoll(argv[3]), n = atoll(argv[4]);
    enum ggml_type t = (enum ggml_type) atoi(argv[5]);
    float * x = malloc(sizeof(float) * rows * n), * w = malloc(sizeof(float) * n);
    FILE * f = fopen(argv[1], "rb"); if (fread(x, 4, rows * n, f) != (size_t)(rows * n)) return 3; fclose(f);
    f = fopen(argv[2], "rb"); if (fread(w, 4, n, f) != (size_t) n) return 3; fclose(f);
    size_t bytes = ggml_row_size(t, n) * rows;
    void * y = calloc(1, bytes);
    size_t got = ggml_quantize_chunk(t, x, y, 0, rows, n, w);
    if (got != bytes) return 4;
    f = fopen(argv[6], "wb"); fwrite(y, 1, bytes, f); fclose(f);
    return 0;
}
C
g++ -x c -O2 -I"$SRC/ggml/include" "$WORK/vectors.c" -x none -L"$BIN" -lggml-base -Wl,-rpath,"$BIN" -lm -lpthread -fopenmp \
    -o "$WORK/vectors"
"${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}/llama-venv/bin/python" - "$WORK/vectors" "$OUT" <<'PY'
import hashlib, json, os, subprocess, sys, numpy as np
exe, out = sys.argv[1], sys.argv[2]
src = json.load(open("tests/data/quant/manifest.json"))
types = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10, "q3_k": 11,
         "q4_k": 12, "q5_k": 13, "q6_k": 14}
rng = np.random.default_rng(20261205)
cases = []
for c in src["cases"]:
    name, rows, n = c["case"], c["rows"], c["n_per_row"]
    w = np.exp(rng.normal(0.0, 2.0, n)).astype(np.float32)
    if n >= 512:
        w[32:64] = 0.0
    wfile = f"{name}.imatrix.f32"
    w.tofile(os.path.join(out, wfile))
    outs = {}
    for t in c["outputs"]:
        f = f"{name}.{t}.bin"
        subprocess.run([exe, f"tests/data/quant/{name}.f32", os.path.join(out, wfile), str(rows),
                        str(n), str(types[t]), os.path.join(out, f)], check=True)
        data = open(os.path.join(out, f), "rb").read()
        outs[t] = {"file": f, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    cases.append({"case": name, "rows": rows, "n_per_row": n, "weights": wfile, "outputs": outs})
json.dump({"source": "ggml_quantize_chunk with an importance matrix, from llama.cpp (llama-cpp-python "
           "0.3.36 vendored source); tools/imatrix-vectors.sh",
           "layout": "input: ../<case>.f32; weights: <case>.imatrix.f32, one f32 per column; "
           "output: <case>.<type>.bin", "cases": cases}, open(os.path.join(out, "manifest.json"), "w"), indent=1)
print(sum(len(c["outputs"]) for c in cases), "outputs")
PY
