"""How close two importance matrices are (e.g. qat-distill imatrix's and llama-imatrix's on the
same model, text, ctx and chunks): per tensor, the relative L2 difference of the per-token means
(in_sum2 / counts) and the largest per-column relative difference among the columns that carry
99 % of the importance; prints the worst tensors and the spread over all of them.
Usage: python imatrix_agreement.py A.gguf B.gguf   (gguf-py on PYTHONPATH, NumPy)"""
import sys

import numpy as np
from gguf import GGUFReader


def load(path):
    r = GGUFReader(path)
    t = {x.name: np.array(x.data, dtype=np.float64).reshape(-1) for x in r.tensors}
    names = sorted(n[: -len(".in_sum2")] for n in t if n.endswith(".in_sum2"))
    return {n: t[n + ".in_sum2"] / t[n + ".counts"][0] for n in names}


a, b = load(sys.argv[1]), load(sys.argv[2])
assert set(a) == set(b), f"names differ: {sorted(set(a) ^ set(b))[:5]}"
rows = []
for n in sorted(a):
    x, y = a[n], b[n]
    rel = np.linalg.norm(x - y) / np.linalg.norm(y)
    order = np.argsort(-y)
    keep = order[: np.searchsorted(np.cumsum(y[order]) / y.sum(), 0.99) + 1]
    col = np.max(np.abs(x[keep] - y[keep]) / y[keep])
    rows.append((rel, col, n))
rows.sort(reverse=True)
rel = np.array([r[0] for r in rows])
col = np.array([r[1] for r in rows])
print(f"{len(rows)} tensors in both; relative L2 difference: median {np.median(rel):.2e}, "
      f"max {rel.max():.2e}; largest column difference (99 % of the mass): median "
      f"{np.median(col):.2e}, max {col.max():.2e}")
for r, c, n in rows[:5]:
    print(f"  {n}: L2 {r:.2e}, column {c:.2e}")
