#!/usr/bin/env bash
# The packed kernels' levels side by side, in one run: `bench tokens-per-second` (-p 512 -n 128,
# 2 threads) on the given models at every level this CPU runs (`--isa scalar|avx2|avxvnni|avx512`
# or `neon|neondot`: the fused prefill and decoder) and through candle's graph (`--graph`: with
# our packed Q8_0 kernel at the best level; `--graph --isa scalar`: candle's kernels alone),
# interleaved round by round so the machine's drift hits all alike; prints t/s per model, test
# and path, and each path's ratio to candle's graph alone.
# Usage: tools/isa-compare.sh [BINARY] [MODEL...]
#   BINARY defaults to the native build (tools/native-build.sh), MODEL to the teacher.
#   ROUNDS (default 3) rounds of one timed run each; THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-$(tools/native-build.sh)}"
shift || true
MODELS=("$@")
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=("$(tools/fetch-teacher.sh)")
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
has() { grep -qw "$1" /proc/cpuinfo; }
LEVELS=(scalar)
has avx2 && has fma && has f16c && LEVELS+=(avx2)
has avx2 && has fma && has f16c && has avx_vnni && LEVELS+=(avxvnni)
has avx512_vnni && LEVELS+=(avx512)
has asimd && LEVELS+=(neon)
has asimd && has asimddp && LEVELS+=(neondot)
OUT=$(mktemp)
for r in $(seq "$ROUNDS"); do
  for m in "${MODELS[@]}"; do
    for mode in "${LEVELS[@]}" graph graph-scalar; do
      case $mode in
        graph) flags=(--graph) ;;
        graph-scalar) flags=(--graph --isa scalar) ;;
        *) flags=(--isa "$mode") ;;
      esac
      "$BIN" bench tokens-per-second -m "$m" -t "$THREADS" -r 1 -o json "${flags[@]}" \
        | python3 -c 'import json,sys; [print(json.dumps(dict(r, mode=sys.argv[1]))) for r in json.load(sys.stdin)]' "$mode" >> "$OUT"
    done
  done
done
python3 - "$OUT" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
ts = collections.defaultdict(list)
for r in rows:
    ts[(r["model_filename"].split("/")[-1], r["test"], r["mode"], r["isa"])].append(r["avg_ts"])
print("| model | test | path (isa) | t/s per round | mean | × candle's graph |")
print("|---|---|---|---|---:|---:|")
for (m, t, mode, isa), v in sorted(ts.items()):
    g = [x for (mm, tt, md, _), x in ts.items() if mm == m and tt == t and md == "graph-scalar"][0]
    mean, gm = sum(v) / len(v), sum(g) / len(g)
    path = {"graph": f"graph ({isa})", "graph-scalar": "graph (candle alone)"}.get(mode, f"fused ({isa})")
    print(f"| {m} | {t} | {path} | {', '.join(f'{x:.1f}' for x in v)} | {mean:.1f} | {mean / gm:.2f}× |")
PY
rm -f "$OUT"
