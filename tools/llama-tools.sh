#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-perplexity, llama-quantize and llama-imatrix from the llama.cpp source
# that the PyPI sdist of llama-cpp-python 0.3.36 ships (vendor/llama.cpp), with cmake and ninja
# from pip, once per machine (cached under ${QAT_DISTILL_CACHE:-~/.cache/qat-distill}); prints
# the directory that holds them. Build flags from tools/llama-cpu-flags.sh: the x86 extensions
# this CPU has (AVX2, AVX-512, VNNI), never -march=native or AMX (GCC 12's native build crashes
# in ggml's AMX kernels on Sapphire Rapids); one build per flag set. Weight repacking on.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
CACHE=${QAT_DISTILL_CACHE:-$HOME/.cache/qat-distill}
SRC=$CACHE/llama-src-$VERSION
{ read -r TAG; read -r CPU_FLAGS; } < <(tools/llama-cpu-flags.sh)
BUILD=$CACHE/llama-build-$VERSION$TAG
TOOLS=$CACHE/cmake-venv

SDIST=$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
    if [ ! -f "$SDIST" ]; then
        # Only this package from source; its build backend comes as wheels.
        python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary llama-cpp-python -d "$CACHE/sdist" "llama-cpp-python==$VERSION" >&2
    fi
    mkdir -p "$SRC"
    tar -xzf "$SDIST" -C "$SRC" --strip-components=1 >&2
fi
if ! "$TOOLS/bin/python" -c "import numpy, yaml" 2>/dev/null || [ ! -x "$TOOLS/bin/cmake" ]; then
    python3 -m venv "$TOOLS" >&2
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check cmake ninja numpy pyyaml >&2
fi
if [ ! -x "$BUILD/bin/llama-bench" ] || [ ! -x "$BUILD/bin/llama-perplexity" ] \
    || [ ! -x "$BUILD/bin/llama-quantize" ] || [ ! -x "$BUILD/bin/llama-imatrix" ]; then
    echo "building llama.cpp's tools (a few minutes, once per machine)..." >&2
    "$TOOLS/bin/cmake" -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja \
        -DCMAKE_MAKE_PROGRAM="$TOOLS/bin/ninja" -DCMAKE_BUILD_TYPE=Release \
        $CPU_FLAGS -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF >&2
    "$TOOLS/bin/cmake" --build "$BUILD" --target llama-bench llama-perplexity llama-quantize llama-imatrix \
        -j "$(nproc)" >&2
fi
echo "$BUILD/bin"
