#!/usr/bin/env bash
# llama.cpp, built one way for every script and test: from the llama.cpp source that the PyPI
# sdist of llama-cpp-python 0.3.36 ships (vendor/llama.cpp), with cmake and ninja from pip, once
# per machine (cached under ${QAT_DISTILL_CACHE:-~/.cache/qat-distill}; concurrent callers wait
# for one build). One build gives llama-bench, llama-perplexity, llama-quantize, llama-imatrix and
# libllama (shared libraries, so that the sdist's own Python bindings load the very same code).
#
#   tools/llama-tools.sh            prints the directory that holds the tools and the libraries
#   tools/llama-tools.sh --python   prints a Python (a small wrapper) that imports llama_cpp from
#                                   the sdist, bound to that build's libllama (tools/llama_ref.py)
#
# Build flags from tools/llama-cpu-flags.sh: the x86 extensions this CPU has (AVX2, AVX-512,
# VNNI), never -march=native or AMX (GCC 12's native build crashes in ggml's AMX kernels on
# Sapphire Rapids); one build per flag set. Weight repacking on.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=tools
case "${1:-}" in
    --python) MODE=python ;;
    "") ;;
    *) echo "llama-tools.sh: unknown argument '$1' (only --python)" >&2; exit 2 ;;
esac
VERSION=0.3.36
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
SRC=$CACHE/llama-src-$VERSION
{ read -r TAG; read -r CPU_FLAGS; } < <(tools/llama-cpu-flags.sh)
BUILD=$CACHE/llama-shared-$VERSION$TAG
VENV=$CACHE/llama-venv
PYWRAP=$BUILD/llama-python
TARGETS=(llama-bench llama-perplexity llama-quantize llama-imatrix llama)

ready() {
    local t
    for t in llama-bench llama-perplexity llama-quantize llama-imatrix; do
        [[ -x "$BUILD/bin/$t" ]] || return 1
    done
    [[ -f "$BUILD/bin/libllama.so" || -f "$BUILD/bin/libllama.dylib" ]] || return 1
    [[ -x "$PYWRAP" ]] && "$PYWRAP" -c "import llama_cpp, numpy, yaml" 2>/dev/null
}
print() { if [[ $MODE == python ]]; then echo "$PYWRAP"; else echo "$BUILD/bin"; fi; }
if ready; then print; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$BUILD.lock"
flock 9
if ready; then print; exit 0; fi

SDIST=$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
    if [ ! -f "$SDIST" ]; then
        # Only this package from source; nothing of it is built by pip.
        python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary llama-cpp-python -d "$CACHE/sdist" "llama-cpp-python==$VERSION" >&2
    fi
    mkdir -p "$SRC"
    tar -xzf "$SDIST" -C "$SRC" --strip-components=1 >&2
fi
# The build tools, and what the bindings import (llama-cpp-python's own dependencies).
if ! "$VENV/bin/python" -c "import numpy, yaml, jinja2, diskcache" 2>/dev/null \
    || [ ! -x "$VENV/bin/cmake" ]; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check cmake ninja numpy pyyaml \
        jinja2 diskcache typing-extensions >&2
fi
if [ ! -x "$BUILD/bin/llama-imatrix" ] || [ ! -f "$BUILD/bin/libllama.so" ]; then
    echo "building llama.cpp (a few minutes, once per machine)..." >&2
    "$VENV/bin/cmake" -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja \
        -DCMAKE_MAKE_PROGRAM="$VENV/bin/ninja" -DCMAKE_BUILD_TYPE=Release \
        $CPU_FLAGS -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF >&2
    "$VENV/bin/cmake" --build "$BUILD" --target "${TARGETS[@]}" -j "$(nproc)" >&2
fi
cat > "$PYWRAP.tmp" <<SH
#!/bin/sh
# Python with the sdist's llama_cpp bound to this build's libllama (made by tools/llama-tools.sh).
PYTHONPATH="$SRC\${PYTHONPATH:+:\$PYTHONPATH}" LLAMA_CPP_LIB_PATH="$BUILD/bin" exec "$VENV/bin/python" "\$@"
SH
chmod +x "$PYWRAP.tmp" && mv "$PYWRAP.tmp" "$PYWRAP"
"$PYWRAP" -c "import llama_cpp" >&2
print
