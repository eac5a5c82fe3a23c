#!/usr/bin/env bash
# Prepares the English training corpus: the .txt sources of Debian's python3.11-doc, minus the
# files that make up the held-out evaluation text tests/data/corpora/pydoc.txt (the first files
# in LC_ALL=C order, concatenated up to 1,000,000 bytes). Writes one .txt per source file under
# ${1:-data/pydoc-train} (ignored by git) and the package's revision into its .complete marker;
# idempotent; prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-data/pydoc-train}"
HELD_OUT=tests/data/corpora/pydoc.txt
die() { echo "prepare-corpus: $*" >&2; exit 1; }
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi
command -v apt-get >/dev/null || die "apt-get not found (the corpus comes from Debian's python3.11-doc)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
( cd "$WORK" && (apt-get download python3.11-doc >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download python3.11-doc >/dev/null; }) ) \
  || die "apt-get download python3.11-doc failed (is the Debian mirror reachable?)"
dpkg-deb -x "$WORK"/python3.11-doc_*.deb "$WORK/x"
# Debian's mirror serves only the newest revision, and revisions change the training text (the
# held-out pydoc.txt is checked below): the revision is kept in $OUT/.complete and printed.
VERSION="$(dpkg-deb -f "$WORK"/python3.11-doc_*.deb Version)"
SRC="$(find "$WORK/x" -type d -path '*html/_sources' | head -n 1)"
[[ -n "$SRC" ]] || die "no html/_sources in the package"

python3 - "$SRC" "$HELD_OUT" "$OUT.tmp" "$VERSION" <<'PY'
import os, sys
src, held, out, version = sys.argv[1:5]
files = []
for root, _, names in os.walk(src):
    files += [os.path.join(root, n) for n in names if n.endswith(".txt")]
files.sort(key=lambda p: os.path.relpath(p, src).encode())  # LC_ALL=C order of the relative paths
held_text = open(held, "rb").read()
acc, excluded = 0, 0
for f in files:
    if acc >= len(held_text):
        break
    data = open(f, "rb").read()
    take = min(len(data), len(held_text) - acc)
    if held_text[acc:acc + take] != data[:take]:
        sys.exit(f"prepare-corpus: {f} does not match the held-out text at byte {acc}; another python3.11-doc version?")
    acc += len(data)
    excluded += 1
os.makedirs(out, exist_ok=True)
kept = files[excluded:]
for i, f in enumerate(kept):
    with open(f, "rb") as fi, open(os.path.join(out, f"{i:05d}.txt"), "wb") as fo:
        fo.write(fi.read())
print(f"prepare-corpus: python3.11-doc {version}: {len(files)} source files, {excluded} held out (pydoc.txt), {len(kept)} kept, "
      f"{sum(os.path.getsize(f) for f in kept)} bytes", file=sys.stderr)
PY
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "python3.11-doc $VERSION" > "$OUT/.complete"
echo "$OUT"
