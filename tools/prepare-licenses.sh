#!/usr/bin/env bash
# A second held-out text, of another genre than the Python documentation the students train on:
# five licence texts from Debian's base-files (/usr/share/common-licenses): GPL-3, LGPL-2.1,
# GFDL-1.3, MPL-2.0 and Apache-2.0, concatenated in that order into ${1:-data/licenses.txt}
# (~112 kB, ~26k Gemma tokens). Kept out of training: the training corpus
# (tools/prepare-corpus.sh) is checked to contain none of their titles; the BSD/MIT texts are
# left out because Python's own licence page, which the corpus holds, quotes them. Prints the path.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-data/licenses.txt}"
CORPUS="${CORPUS:-data/pydoc-train}"
SRC=/usr/share/common-licenses
die() { echo "prepare-licenses: $*" >&2; exit 1; }
for f in GPL-3 LGPL-2.1 GFDL-1.3 MPL-2.0 Apache-2.0; do
    [[ -f "$SRC/$f" ]] || die "$SRC/$f not found (Debian's base-files package)"
done
if [[ -d "$CORPUS" ]] && grep -rlq -e "GNU GENERAL PUBLIC LICENSE" -e "GNU LESSER GENERAL PUBLIC" \
    -e "GNU Free Documentation License" -e "Mozilla Public License" -e "Apache License" "$CORPUS"; then
    die "the training corpus $CORPUS contains one of the licence texts"
fi
mkdir -p "$(dirname "$OUT")"
cat "$SRC/GPL-3" "$SRC/LGPL-2.1" "$SRC/GFDL-1.3" "$SRC/MPL-2.0" "$SRC/Apache-2.0" > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
