"""Whether two GGUF files hold the same tensors (names, types, bytes), read with llama.cpp's own
gguf-py; also names the metadata keys that only one of them has.
Usage: python gguf_same_tensors.py A.gguf B.gguf   (gguf-py on PYTHONPATH)"""
import sys

from gguf import GGUFReader

a, b = (GGUFReader(p) for p in sys.argv[1:3])
ta = {t.name: t for t in a.tensors}
tb = {t.name: t for t in b.tensors}
same = set(ta) == set(tb) and all(
    ta[n].tensor_type == tb[n].tensor_type and ta[n].data.tobytes() == tb[n].data.tobytes()
    for n in ta
)
only = sorted(set(a.fields) ^ set(b.fields))
print(
    (f"all {len(ta)} tensors identical" if same else "tensors differ")
    + (f"; keys in one file only: {', '.join(only)}" if only else "")
)
